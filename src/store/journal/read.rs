//! Reading the journal tree by sequence number. Entries are stored as
//! records of several entries under the key of the first
//! ([`RecordWriter`](super::stored::RecordWriter)), so an entry is found in the last record
//! whose key is not after its own.

use std::sync::Arc;

use super::key;
use super::stored::Record;
use crate::model::JournalEntry;
use crate::store::{Store, StoreError};

/// Entries from a sequence number on, oldest first, read record by record
/// and decoded one at a time: what comes before the first wanted, or
/// after the last taken, is never decoded.
struct Entries {
    records: sled::Iter,
    /// The record read last, and the index of its next entry.
    current: Option<(Record, usize)>,
    /// The first sequence number wanted.
    from: u64,
}

impl Iterator for Entries {
    type Item = Result<JournalEntry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((record, next)) = &mut self.current
                && *next < record.len()
            {
                *next += 1;
                return Some(record.entry(*next - 1));
            }
            let read = self
                .records
                .next()?
                .map_err(StoreError::from)
                .and_then(|(k, value)| Record::read(&k, &value));
            match read {
                Ok(record) => {
                    let skip = self.from.saturating_sub(record.first_seq());
                    let next = usize::try_from(skip).unwrap_or(usize::MAX);
                    self.current = Some((record, next));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Store {
    /// The entries from `seq` on, oldest first, from the tree.
    fn entries_from(&self, seq: u64) -> Result<Entries, StoreError> {
        // The record holding `seq` starts at it or before.
        let holding = self
            .journal
            .range(key::entry(0)..=key::entry(seq))
            .next_back()
            .transpose()?;
        let start = holding.map_or_else(|| key::entry(seq).to_vec(), |(k, _)| k.to_vec());
        Ok(Entries {
            records: self.journal.range(start..),
            current: None,
            from: seq,
        })
    }

    /// Journal entries after `after` (exclusive), oldest first.
    pub fn journal_after(
        &self,
        after: u64,
        limit: usize,
        mut keep: impl FnMut(&JournalEntry) -> bool,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let mut out = Vec::new();
        for entry in self.entries_from(after.saturating_add(1))? {
            let entry = entry?;
            if keep(&entry) {
                out.push(entry);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` journal entries after `after` (exclusive), oldest
    /// first, for the processors that follow the journal: from memory when
    /// the committer of this process wrote them lately, else from the tree.
    pub fn journal_since(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<JournalEntry>>, StoreError> {
        if let Some(entries) = self.tail.after(after, limit) {
            return Ok(entries);
        }
        self.entries_from(after.saturating_add(1))?
            .take(limit)
            .map(|entry| entry.map(Arc::new))
            .collect()
    }

    /// Deletes journal entries up to `applied` that arrived before
    /// `cutoff`, oldest first, whole records at a time; returns how many.
    /// Only a prefix is removed, so sequence numbers stay contiguous, and
    /// the newest record always stays: it is where the next sequence
    /// number is read from at start.
    pub fn trim_journal(
        &self,
        applied: u64,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, StoreError> {
        let newest = self.last_journal_seq()?.unwrap_or(0);
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for record in self.journal.range(key::entry(0)..) {
            let (k, value) = record?;
            let record = Record::read(&k, &value)?;
            // A record's entries arrived together: its last tells for all.
            let last = record.entry(record.len() - 1)?;
            if last.seq > applied || last.seq >= newest || last.received_at >= cutoff {
                break;
            }
            batch.remove(k);
            removed += record.len();
            if removed >= 10_000 {
                break;
            }
        }
        self.journal.apply_batch(batch)?;
        Ok(removed)
    }

    pub fn journal_entry(&self, seq: u64) -> Result<Option<JournalEntry>, StoreError> {
        match self.entries_from(seq)?.next().transpose()? {
            Some(entry) if entry.seq == seq => Ok(Some(entry)),
            _ => Ok(None),
        }
    }

    /// Number of entries in the journal, without reading every one: sequence
    /// numbers are contiguous (the committer advances them only past
    /// written entries, and trimming only ever removes a prefix).
    pub fn journal_len(&self) -> Result<u64, StoreError> {
        let first = match self.journal.range(key::entry(0)..).next() {
            Some(item) => key::seq(&item?.0),
            None => None,
        };
        Ok(match (first, self.last_journal_seq()?) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        })
    }

    /// The newest journal entry's sequence number, if there is one.
    pub(crate) fn last_journal_seq(&self) -> Result<Option<u64>, StoreError> {
        // Entries sort after the journal's other keys.
        let Some((k, value)) = self.journal.last()? else {
            return Ok(None);
        };
        if key::seq(&k).is_none() {
            return Ok(None);
        }
        let record = Record::read(&k, &value)?;
        Ok(Some(record.first_seq() + record.len() as u64 - 1))
    }
}

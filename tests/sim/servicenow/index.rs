//! The `(sys_updated_on, sys_id)` index: a sorted vector, so a cursor query
//! finds its page and its total by binary search instead of a walk over the
//! table.
//!
//! Appends in timestamp order (the usual insert) keep it sorted for free;
//! a few moves between reads are made in place; anything more marks it
//! stale, and the next read rebuilds it with one sort.

use std::ops::Bound;

use super::query::KeyRange;

/// Moves made in place between two reads before a rebuild is cheaper.
const IN_PLACE_MOVES: usize = 64;

/// How far from the end an out-of-order insert is still made in place.
const NEAR_THE_END: usize = 4096;

type Entry = (String, String, usize);

#[derive(Default)]
pub(crate) struct UpdatedIndex {
    entries: Vec<Entry>,
    /// Whether `entries` holds exactly the table's rows, sorted.
    fresh: bool,
    moves_since_read: usize,
}

impl UpdatedIndex {
    pub fn new() -> UpdatedIndex {
        UpdatedIndex {
            entries: Vec::new(),
            fresh: true,
            moves_since_read: 0,
        }
    }

    pub fn insert(&mut self, updated: &str, sys_id: &str, slot: usize) {
        if !self.fresh {
            return;
        }
        let entry = (updated.to_string(), sys_id.to_string(), slot);
        match self.entries.last() {
            Some(last) if *last > entry => {
                // Records sharing the last timestamp arrive in sys_id
                // order only by chance: slot them in near the end, but
                // leave a load in random order to one sort.
                let at = self.entries.partition_point(|e| *e < entry);
                if self.entries.len() - at <= NEAR_THE_END {
                    self.entries.insert(at, entry);
                } else {
                    self.fresh = false;
                }
            }
            _ => self.entries.push(entry),
        }
    }

    pub fn remove(&mut self, updated: &str, sys_id: &str) {
        if !self.fresh {
            return;
        }
        self.moves_since_read += 1;
        if self.moves_since_read > IN_PLACE_MOVES {
            self.fresh = false;
            return;
        }
        let found = self
            .entries
            .binary_search_by(|(u, id, _)| (u.as_str(), id.as_str()).cmp(&(updated, sys_id)));
        match found {
            Ok(at) => {
                self.entries.remove(at);
            }
            Err(_) => self.fresh = false,
        }
    }

    /// A record's timestamp changed: move its entry.
    pub fn moved(&mut self, old: &str, new: &str, sys_id: &str, slot: usize) {
        self.remove(old, sys_id);
        if !self.fresh {
            return;
        }
        let entry = (new.to_string(), sys_id.to_string(), slot);
        let at = self.entries.partition_point(|e| *e < entry);
        self.entries.insert(at, entry);
    }

    /// The entries, sorted; `rows` yields `(updated, sys_id, slot)` of every
    /// record for a rebuild.
    pub fn sorted<'a>(
        &mut self,
        rows: impl Iterator<Item = (&'a str, &'a str, usize)>,
    ) -> &[Entry] {
        if !self.fresh {
            self.entries = rows
                .map(|(u, id, slot)| (u.to_string(), id.to_string(), slot))
                .collect();
            self.entries.sort_unstable();
            self.fresh = true;
        }
        self.moves_since_read = 0;
        &self.entries
    }
}

/// The positions in `entries` each range covers, merged into disjoint
/// ascending spans.
pub(crate) fn spans(entries: &[Entry], ranges: &[KeyRange<'_>]) -> Vec<(usize, usize)> {
    let mut spans: Vec<(usize, usize)> = ranges
        .iter()
        .map(|range| {
            let start = entries.partition_point(|(u, id, _)| before(range, u, id));
            let end = entries.partition_point(|(u, id, _)| !after(range, u, id));
            (start, end.max(start))
        })
        .filter(|(start, end)| start < end)
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Whether an entry sorts before the range. A `sys_id` bound only applies
/// where the range pins `sys_updated_on` to one value, so "before" is
/// monotone over the sorted entries.
fn before(range: &KeyRange<'_>, updated: &str, sys_id: &str) -> bool {
    below(updated, range.updated.0)
        || (!above(updated, range.updated.1) && below(sys_id, range.sys_id.0))
}

fn after(range: &KeyRange<'_>, updated: &str, sys_id: &str) -> bool {
    above(updated, range.updated.1)
        || (!below(updated, range.updated.0) && above(sys_id, range.sys_id.1))
}

fn below(value: &str, low: Bound<&str>) -> bool {
    match low {
        Bound::Unbounded => false,
        Bound::Included(b) => value < b,
        Bound::Excluded(b) => value <= b,
    }
}

fn above(value: &str, high: Bound<&str>) -> bool {
    match high {
        Bound::Unbounded => false,
        Bound::Included(b) => value > b,
        Bound::Excluded(b) => value >= b,
    }
}

//! The durable ingest journal. Sources append events; an append is answered
//! only after sled has flushed it to disk, so a 2xx to a sender means the
//! event survives `kill -9`.
//!
//! One committer thread owns all writes to the journal: it takes every
//! append waiting in its queue, writes them in one transaction, flushes
//! once, then answers them all (group commit). Under load the queue fills
//! while a flush runs, so groups grow and one fsync serves many events.
//!
//! An append's entries, its delivery id and its poller cursor must be stored
//! atomically. They all live in the one `journal` tree under distinct key
//! prefixes (`key`), so a group is one `sled::Batch`: atomic, and far
//! cheaper than a transaction over three trees, which took half the
//! committer's time in the ingest benchmark (BENCHMARKS.md). The group's
//! entries are stored together, a record of many entries under one key
//! ([`stored`]), and read by sequence number all the same ([`read`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Store, StoreError};
use crate::metrics::{ConnectorLabels, Metrics};
use crate::model::{ConnectorName, Event, JournalEntry};
use stored::EntryRef;

mod read;
mod stored;

pub(super) use stored::exported;

/// The journal's tree.
pub(super) const TREE: &str = "journal";

/// Most appends in one group; bounds the latency of the group's last one.
const MAX_GROUP: usize = 1024;
/// Appends waiting beyond this make senders wait (backpressure).
const QUEUE_DEPTH: usize = 8192;
/// How often delivery ids older than the retention are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How much of the newest entries (counted as their encoded size) the
/// [`Tail`] keeps in memory: enough for an engine that keeps up with a
/// stream of alerts to catch up from a hiccup without reading the tree
/// (half a megabyte was not, in the alert benchmark).
const TAIL_BYTES: usize = 2 * 1024 * 1024;
/// The longest a delivery waits for the engine ([`Journal::paced`]) before
/// it is stored anyway: pacing keeps notices prompt, it never refuses or
/// loses an event, and a sender's timeout is longer.
const PACE_WAIT: Duration = Duration::from_secs(2);

/// Events of one inbound delivery, or one page of a poll.
#[derive(Debug)]
pub struct Append {
    pub connector: ConnectorName,
    /// The sender's delivery id; a second delivery with the same id for the
    /// same connector is not stored again.
    pub delivery_id: Option<String>,
    pub events: Vec<Event>,
    /// A poller's position after these events, stored in the same
    /// transaction so a crash can neither skip nor lose a page.
    pub cursor: Option<CursorUpdate>,
}

/// A source position to store with an append.
#[derive(Debug, Clone)]
pub struct CursorUpdate {
    pub key: String,
    pub value: Vec<u8>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored durably under these journal sequence numbers.
    Stored { first_seq: u64, count: usize },
    /// The delivery id was seen before; nothing was stored.
    Replayed {
        first_seq: u64,
        received_at: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the store is shutting down")]
    Closed,
    #[error("the store could not make the event durable: {0}")]
    Store(String),
}

/// What the journal remembers of a delivery id.
#[derive(Serialize, Deserialize)]
struct DeliveryRecord {
    first_seq: u64,
    received_at: DateTime<Utc>,
}

struct Request {
    append: Append,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// The sending side of the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    queue: mpsc::Sender<Request>,
    healthy: Arc<AtomicBool>,
    durable: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    pace: Option<Pace>,
}

/// How far ahead of the engine deliveries may run ([`Journal::paced`]).
#[derive(Clone)]
struct Pace {
    applied: watch::Receiver<u64>,
    max_unapplied: u64,
}

impl Journal {
    /// Starts the committer thread. It stops, after a last flush, when every
    /// [`Journal`] handle has been dropped; join the returned handle to wait.
    pub fn start(
        store: &Store,
        metrics: Arc<Metrics>,
        delivery_retention: Duration,
    ) -> Result<(Journal, std::thread::JoinHandle<()>), StoreError> {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        let healthy = Arc::new(AtomicBool::new(true));
        let next_seq = store.last_journal_seq()?.map_or(1, |seq| seq + 1);
        let (durable_tx, durable) = watch::channel(next_seq - 1);
        let committer = Committer {
            durable: durable_tx,
            store: store.clone(),
            metrics: metrics.clone(),
            healthy: healthy.clone(),
            next_seq,
            delivery_retention,
            last_sweep: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("csmd-journal".into())
            .spawn(move || committer.run(requests))
            .map_err(|e| {
                StoreError::Transaction(format!("cannot start the journal thread: {e}"))
            })?;
        Ok((
            Journal {
                queue,
                healthy,
                durable,
                metrics,
                pace: None,
            },
            handle,
        ))
    }

    /// Makes deliveries (appends without a poller cursor) wait, before they
    /// are stored, while more than `max_unapplied` durable entries wait for
    /// the engine of `store`; 0 never waits.
    ///
    /// Acknowledging faster than the engine applies only queues events in
    /// the journal: in an alert storm the queue grew for as long as the
    /// storm, and every disruption notice came that much later
    /// (BENCHMARKS.md). Paced, senders feel the engine's speed instead, and
    /// a notice trails its alerts by at most about `max_unapplied` events.
    /// A delivery waits at most `PACE_WAIT` (2 s), then is stored anyway.
    /// Pollers are not paced: a full sync is applied from the tree in any
    /// case, and its records are wanted as soon as possible.
    pub fn paced(mut self, store: &Store, max_unapplied: u64) -> Journal {
        self.pace = (max_unapplied > 0).then(|| Pace {
            applied: store.engine_applied(),
            max_unapplied,
        });
        self
    }

    /// Appends one delivery's events and waits until they are durable.
    pub async fn append(&self, append: Append) -> Result<Appended, AppendError> {
        if append.cursor.is_none() {
            self.wait_for_engine().await;
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { append, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Waits while the engine is too far behind ([`Journal::paced`]).
    async fn wait_for_engine(&self) {
        let Some(pace) = &self.pace else { return };
        let behind =
            |applied: &u64| self.durable.borrow().saturating_sub(*applied) > pace.max_unapplied;
        let mut applied = pace.applied.clone();
        if !behind(&applied.borrow_and_update()) {
            return;
        }
        let started = Instant::now();
        // A timeout, or an engine gone (shutdown): store it all the same.
        let _ = tokio::time::timeout(PACE_WAIT, applied.wait_for(|a| !behind(a))).await;
        self.metrics
            .ingest_paced_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// The sequence number of the last durable entry, updated after each
    /// group commit; processors wait on it.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// False after a failed write or flush, until one succeeds again.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// The newest durable entries, kept in memory by the committer so that the
/// processors following the journal are handed what it just wrote instead
/// of reading and decoding it back from sled. Its entries are contiguous;
/// a reader that fell behind them reads the journal tree instead
/// ([`Store::journal_since`]).
#[derive(Default)]
pub(crate) struct Tail {
    inner: Mutex<TailInner>,
}

#[derive(Default)]
struct TailInner {
    /// Entries with their encoded size, oldest first.
    entries: VecDeque<(Arc<JournalEntry>, usize)>,
    bytes: usize,
}

impl Tail {
    /// Adds entries just made durable; forgets the oldest beyond
    /// [`TAIL_BYTES`], and everything before a gap in the sequence.
    fn push(&self, entries: impl IntoIterator<Item = (JournalEntry, usize)>) {
        let mut tail = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (entry, size) in entries {
            if tail
                .entries
                .back()
                .is_some_and(|(last, _)| last.seq + 1 != entry.seq)
            {
                tail.entries.clear();
                tail.bytes = 0;
            }
            tail.entries.push_back((Arc::new(entry), size));
            tail.bytes += size;
        }
        while tail.bytes > TAIL_BYTES {
            match tail.entries.pop_front() {
                Some((_, size)) => tail.bytes -= size,
                None => break,
            }
        }
    }

    /// Forgets every entry: the next ones may not follow them.
    fn clear(&self) {
        let mut tail = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        tail.entries.clear();
        tail.bytes = 0;
    }

    /// Up to `limit` entries after `after`, oldest first; `None` when the
    /// tail does not hold the one right after `after`, or anything newer.
    pub(crate) fn after(&self, after: u64, limit: usize) -> Option<Vec<Arc<JournalEntry>>> {
        let tail = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let first = tail.entries.front()?.0.seq;
        let skip = usize::try_from(after.checked_add(1)?.checked_sub(first)?).ok()?;
        if skip >= tail.entries.len() {
            return None;
        }
        Some(
            tail.entries
                .iter()
                .skip(skip)
                .take(limit)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }
}

struct Committer {
    durable: watch::Sender<u64>,
    store: Store,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
    next_seq: u64,
    delivery_retention: Duration,
    last_sweep: Instant,
}

impl Committer {
    fn run(mut self, mut requests: mpsc::Receiver<Request>) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = requests.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
            if self.last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep_deliveries();
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "Final journal flush failed");
        }
        tracing::debug!("Journal committer stopped");
    }

    fn commit(&mut self, group: &mut Vec<Request>) {
        let received_at = Utc::now();
        let mut sizes = Vec::new();
        let result = self
            .write(group, received_at, &mut sizes)
            .and_then(|outcomes| {
                let started = Instant::now();
                self.store.flush()?;
                self.metrics
                    .store_flush_seconds
                    .observe(started.elapsed().as_secs_f64());
                Ok(outcomes)
            });
        self.metrics.journal_group_size.observe(group.len() as f64);
        match result {
            Ok(outcomes) => {
                self.healthy.store(true, Ordering::Relaxed);
                self.remember(group, &outcomes, received_at, sizes);
                self.durable.send_replace(self.next_seq - 1);
                for (request, outcome) in group.drain(..).zip(outcomes) {
                    if let Appended::Stored { count, .. } = outcome {
                        self.metrics
                            .events_ingested
                            .get_or_create(&ConnectorLabels {
                                connector: request.append.connector.to_string(),
                            })
                            .inc_by(count as u64);
                    }
                    // The sender may have gone away (client hung up): the
                    // event is stored all the same.
                    let _ = request.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                // The batch may be written without the flush: its entries
                // are read from the tree, and the tail restarts after them.
                self.store.tail.clear();
                tracing::error!(error = %e, appends = group.len(), "Journal write failed");
                for request in group.drain(..) {
                    let _ = request.reply.send(Err(AppendError::Store(e.to_string())));
                }
            }
        }
    }

    /// Hands the entries of a durable group to the [`Tail`], moving the
    /// events out of their requests (whose senders need only the outcome).
    fn remember(
        &self,
        group: &mut [Request],
        outcomes: &[Appended],
        received_at: DateTime<Utc>,
        sizes: Vec<usize>,
    ) {
        // A poller's pages come in bulk (a full sync), faster than the
        // engine applies them: it reads them from the tree anyway, and in
        // memory they would only add to the poller's peak.
        if group.iter().any(|request| request.append.cursor.is_some()) {
            self.store.tail.clear();
            return;
        }
        let mut sizes = sizes.into_iter();
        let entries = group
            .iter_mut()
            .zip(outcomes)
            .filter_map(|(request, outcome)| match outcome {
                Appended::Stored { first_seq, .. } => Some((&mut request.append, *first_seq)),
                Appended::Replayed { .. } => None,
            })
            .flat_map(|(append, first_seq)| {
                let connector = append.connector.clone();
                let delivery_id = append.delivery_id.clone();
                std::mem::take(&mut append.events)
                    .into_iter()
                    .zip(first_seq..)
                    .map(move |(event, seq)| JournalEntry {
                        seq,
                        connector: connector.clone(),
                        received_at,
                        delivery_id: delivery_id.clone(),
                        event,
                    })
            })
            .map(|entry| (entry, sizes.next().unwrap_or_default()));
        self.store.tail.push(entries);
    }

    /// Writes the group in one batch, its entries as records
    /// ([`stored::RecordWriter`]); returns one outcome per request, and
    /// adds each entry's encoded size to `sizes`.
    ///
    /// Only this thread writes the journal tree, so what it reads here is
    /// what the batch applies to.
    fn write(
        &mut self,
        group: &[Request],
        received_at: DateTime<Utc>,
        sizes: &mut Vec<usize>,
    ) -> Result<Vec<Appended>, StoreError> {
        let journal = &self.store.journal;
        let mut batch = sled::Batch::default();
        // Delivery ids first seen in this group, for a replay within it.
        let mut fresh: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut seq = self.next_seq;
        let mut records = stored::RecordWriter::default();
        let mut outcomes = Vec::with_capacity(group.len());
        for Request { append, .. } in group {
            if let Some(id) = &append.delivery_id {
                let delivery = key::delivery(&append.connector, id);
                if let Some(&first_seq) = fresh.get(&delivery) {
                    outcomes.push(Appended::Replayed {
                        first_seq,
                        received_at,
                    });
                    continue;
                }
                if let Some(seen) = journal.get(&delivery)? {
                    let seen: DeliveryRecord =
                        serde_json::from_slice(&seen).map_err(|source| StoreError::Decode {
                            tree: TREE,
                            key: format!("delivery {id}"),
                            source,
                        })?;
                    outcomes.push(Appended::Replayed {
                        first_seq: seen.first_seq,
                        received_at: seen.received_at,
                    });
                    continue;
                }
                let record = DeliveryRecord {
                    first_seq: seq,
                    received_at,
                };
                batch.insert(delivery.as_slice(), encode(&record)?);
                fresh.insert(delivery, seq);
            }
            let first_seq = seq;
            for event in &append.events {
                let entry = EntryRef {
                    seq,
                    connector: &append.connector,
                    received_at,
                    delivery_id: append.delivery_id.as_deref(),
                    event,
                };
                let encoded = stored::encode(&entry)?;
                sizes.push(encoded.len());
                if let Some((key, record)) = records.push(seq, &encoded)? {
                    batch.insert(&key, record);
                }
                seq += 1;
            }
            if let Some(cursor) = &append.cursor {
                batch.insert(key::cursor(&cursor.key), cursor.value.as_slice());
            }
            outcomes.push(Appended::Stored {
                first_seq,
                count: append.events.len(),
            });
        }
        if let Some((key, record)) = records.finish()? {
            batch.insert(&key, record);
        }
        journal.apply_batch(batch)?;
        self.next_seq = seq;
        Ok(outcomes)
    }

    /// Forgets delivery ids older than the retention; by then a replay is
    /// refused on its timestamp anyway.
    fn sweep_deliveries(&mut self) {
        self.last_sweep = Instant::now();
        let cutoff = Utc::now() - self.delivery_retention;
        let mut batch = sled::Batch::default();
        let mut removed = 0usize;
        let journal = &self.store.journal;
        for item in journal.scan_prefix([key::DELIVERY]) {
            let Ok((key, value)) = item else { continue };
            let old = serde_json::from_slice::<DeliveryRecord>(&value)
                .map_or(true, |r| r.received_at < cutoff);
            if old {
                batch.remove(key);
                removed += 1;
            }
        }
        match journal.apply_batch(batch) {
            Ok(()) => tracing::debug!(removed, "Swept old delivery ids"),
            Err(e) => tracing::warn!(error = %e, "Sweeping old delivery ids failed"),
        }
    }
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { tree: TREE, source })
}

/// Keys of the journal tree. Entries sort after the other kinds, so the
/// tree's last key is the newest entry's.
pub(crate) mod key {
    use crate::model::ConnectorName;

    pub const CURSOR: u8 = b'c';
    pub const DELIVERY: u8 = b'd';
    pub const ENTRY: u8 = b'e';

    /// An entry, or the record of entries starting with it: its sequence
    /// number, big-endian so keys sort by it.
    pub fn entry(seq: u64) -> [u8; 9] {
        let mut key = [ENTRY; 9];
        key[1..].copy_from_slice(&seq.to_be_bytes());
        key
    }

    /// The sequence number of an entry's key.
    pub fn seq(key: &[u8]) -> Option<u64> {
        match key {
            [ENTRY, rest @ ..] => <[u8; 8]>::try_from(rest).ok().map(u64::from_be_bytes),
            _ => None,
        }
    }

    /// A delivery id, per connector.
    pub fn delivery(connector: &ConnectorName, id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(2 + connector.as_str().len() + id.len());
        key.push(DELIVERY);
        key.extend_from_slice(connector.as_str().as_bytes());
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        key
    }

    /// A poller's position.
    pub fn cursor(name: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(1 + name.len());
        key.push(CURSOR);
        key.extend_from_slice(name.as_bytes());
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertEvent, AlertStatus, JournalEntry};

    #[test]
    fn an_entry_written_reads_back_exactly_as_the_journal_entry() {
        let entry = JournalEntry {
            delivery_id: Some("msg_1".into()),
            ..entry(7)
        };
        for delivery_id in [entry.delivery_id.clone(), None] {
            let owned = JournalEntry {
                delivery_id,
                ..entry.clone()
            };
            let borrowed = EntryRef {
                seq: owned.seq,
                connector: &owned.connector,
                received_at: owned.received_at,
                delivery_id: owned.delivery_id.as_deref(),
                event: &owned.event,
            };
            let written = stored::encode(&borrowed).unwrap();
            assert_eq!(stored::decode(b"e", &written).unwrap(), owned);
        }
    }

    fn entry(seq: u64) -> JournalEntry {
        JournalEntry {
            seq,
            connector: "monitoring".parse().unwrap(),
            received_at: Utc::now(),
            delivery_id: None,
            event: Event::Alert(firing(seq)),
        }
    }

    /// A bare firing alert `a{id}`.
    pub(super) fn firing(id: impl std::fmt::Display) -> AlertEvent {
        AlertEvent {
            source_id: format!("a{id}"),
            status: AlertStatus::Firing,
            service: None,
            ci: None,
            customer: None,
            severity: None,
            summary: "down".into(),
            starts_at: None,
            ends_at: None,
        }
    }

    fn seqs(entries: Option<Vec<Arc<JournalEntry>>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn the_tail_answers_only_for_what_it_holds_from_the_next_entry_on() {
        let tail = Tail::default();
        assert_eq!(seqs(tail.after(0, 10)), None);
        tail.push((5..=9).map(|seq| (entry(seq), 100)));
        assert_eq!(seqs(tail.after(4, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(seqs(tail.after(6, 2)), Some(vec![7, 8]));
        // Before the tail (a reader behind it) and at its end: the tree.
        assert_eq!(seqs(tail.after(3, 10)), None);
        assert_eq!(seqs(tail.after(9, 10)), None);
        assert_eq!(seqs(tail.after(u64::MAX, 10)), None);
    }

    #[test]
    fn the_tail_restarts_after_a_gap_and_keeps_only_its_size() {
        let tail = Tail::default();
        tail.push((1..=3).map(|seq| (entry(seq), 100)));
        tail.push([(entry(7), 100)]);
        assert_eq!(seqs(tail.after(6, 10)), Some(vec![7]));
        assert_eq!(seqs(tail.after(0, 10)), None);
        let big = TAIL_BYTES / 4;
        tail.push((8..=13).map(|seq| (entry(seq), big)));
        assert_eq!(seqs(tail.after(9, 10)), Some(vec![10, 11, 12, 13]));
        assert_eq!(seqs(tail.after(8, 10)), None);
        tail.clear();
        assert_eq!(seqs(tail.after(12, 10)), None);
    }

    /// A store in a new directory with its journal started.
    fn started() -> (
        tempfile::TempDir,
        Store,
        Journal,
        std::thread::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (journal, committer) =
            Journal::start(&store, Arc::new(Metrics::new()), Duration::from_secs(60)).unwrap();
        (dir, store, journal, committer)
    }

    #[tokio::test]
    async fn the_tail_holds_exactly_what_the_tree_holds() {
        let (dir, store, journal, committer) = started();
        let connector: ConnectorName = "monitoring".parse().unwrap();
        let appends = [(Some("d1"), 3), (None, 2), (Some("d1"), 4), (Some("d2"), 1)];
        for (delivery_id, events) in appends {
            let append = Append {
                connector: connector.clone(),
                delivery_id: delivery_id.map(str::to_owned),
                events: (0..events).map(|i| entry(i).event).collect(),
                cursor: None,
            };
            journal.append(append).await.unwrap();
        }
        let remembered = store.journal_since(0, 100).unwrap();
        // The replayed delivery stored nothing: 3 + 2 + 1 entries.
        assert_eq!(remembered.len(), 6);
        let stored = store.journal_after(0, 100, |_| true).unwrap();
        let remembered: Vec<JournalEntry> = remembered.iter().map(|e| (**e).clone()).collect();
        assert_eq!(remembered, stored);
        assert!(store.tail.after(0, 100).is_some(), "read from memory");
        drop(journal);
        committer.join().unwrap();

        // Another process (a restart) reads them from the tree.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let read: Vec<JournalEntry> = store
            .journal_since(2, 100)
            .unwrap()
            .iter()
            .map(|e| (**e).clone())
            .collect();
        assert_eq!(read, stored[2..]);
    }

    /// The entries the journal returned, owned.
    fn cloned(entries: Vec<Arc<JournalEntry>>) -> Vec<JournalEntry> {
        entries.iter().map(|e| (**e).clone()).collect()
    }

    #[tokio::test]
    async fn entries_are_read_by_sequence_number_across_records_and_trimmed_a_record_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Two entries of an earlier version, one a key: JSON and compact.
        let earlier: Vec<JournalEntry> = (1..=2).map(entry).collect();
        store
            .journal
            .insert(key::entry(1), serde_json::to_vec(&earlier[0]).unwrap())
            .unwrap();
        let e = &earlier[1];
        let compact = stored::encode(&EntryRef {
            seq: e.seq,
            connector: &e.connector,
            received_at: e.received_at,
            delivery_id: None,
            event: &e.event,
        })
        .unwrap();
        store.journal.insert(key::entry(2), compact).unwrap();
        let (journal, committer) =
            Journal::start(&store, Arc::new(Metrics::new()), Duration::from_secs(60)).unwrap();
        // Then records of 3, 1 and 4 entries: 3..=5, 6 and 7..=10.
        let connector: ConnectorName = "monitoring".parse().unwrap();
        for events in [3, 1, 4] {
            let append = Append {
                connector: connector.clone(),
                delivery_id: None,
                events: (0..events).map(|i| entry(i).event).collect(),
                cursor: None,
            };
            journal.append(append).await.unwrap();
        }
        drop(journal);
        committer.join().unwrap();
        let keys: Vec<u64> = store
            .journal
            .range(key::entry(0)..)
            .map(|item| key::seq(&item.unwrap().0).unwrap())
            .collect();
        assert_eq!(keys, [1, 2, 3, 6, 7], "one key a record");

        // Another process reads them from the tree, from any entry on.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let all = store.journal_after(0, 100, |_| true).unwrap();
        assert_eq!(
            all.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(all[..2], earlier);
        for after in 0..=10 {
            for limit in 1..=3 {
                let want: Vec<JournalEntry> = all.iter().skip(after).take(limit).cloned().collect();
                let since = store.journal_since(after as u64, limit).unwrap();
                assert_eq!(cloned(since), want, "after {after}, limit {limit}");
            }
        }
        for seq in 1..=10 {
            assert_eq!(
                store.journal_entry(seq).unwrap().as_ref(),
                all.get(seq as usize - 1)
            );
        }
        assert_eq!(store.journal_entry(11).unwrap(), None);
        let odd = store.journal_after(4, 2, |e| e.seq % 2 == 1).unwrap();
        assert_eq!(odd.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 7]);
        assert_eq!(store.journal_len().unwrap(), 10);
        assert_eq!(store.last_journal_seq().unwrap(), Some(10));

        // Applied up to 6: the records up to 6 go whole, 7..=10 stay.
        let later = Utc::now() + chrono::TimeDelta::days(1);
        assert_eq!(store.trim_journal(6, later).unwrap(), 6);
        assert_eq!(store.journal_len().unwrap(), 4);
        assert_eq!(store.journal_entry(6).unwrap(), None);
        assert_eq!(cloned(store.journal_since(0, 100).unwrap()), all[6..]);
        // Within a record (applied up to 8), or the newest: nothing goes.
        assert_eq!(store.trim_journal(8, later).unwrap(), 0);
        assert_eq!(store.trim_journal(10, later).unwrap(), 0);
        assert_eq!(store.journal_len().unwrap(), 4);
    }

    #[tokio::test]
    async fn a_record_is_exported_one_entry_a_key_and_imported_whole() {
        let (dir, store, journal, committer) = started();
        let append = Append {
            connector: "monitoring".parse().unwrap(),
            delivery_id: None,
            events: (0..3).map(|i| entry(i).event).collect(),
            cursor: None,
        };
        journal.append(append).await.unwrap();
        drop(journal);
        committer.join().unwrap();
        let written = store.journal_after(0, 10, |_| true).unwrap();
        assert_eq!(store.journal.len(), 1, "one record");
        drop(store);

        let mut dump = Vec::new();
        crate::store::dump::StoreExport::open(dir.path())
            .unwrap()
            .write(&mut dump)
            .unwrap();
        let dump = String::from_utf8(dump).unwrap();
        let lines = dump.lines().filter(|l| l.contains(r#""tree":"journal""#));
        assert_eq!(lines.count(), 3, "{dump}");

        let imported = tempfile::tempdir().unwrap();
        crate::store::dump::import(imported.path(), dump.as_bytes(), "dump").unwrap();
        let store = Store::open(imported.path()).unwrap();
        assert_eq!(store.journal_after(0, 10, |_| true).unwrap(), written);
        assert_eq!(store.last_journal_seq().unwrap(), Some(3));
    }

    #[tokio::test]
    async fn a_pollers_page_is_read_from_the_tree_not_kept_in_memory() {
        let (_dir, store, journal, committer) = started();
        let connector: ConnectorName = "itsm".parse().unwrap();
        let append = |cursor: Option<&str>| Append {
            connector: connector.clone(),
            delivery_id: None,
            events: (0..2).map(|i| entry(i).event).collect(),
            cursor: cursor.map(|value| CursorUpdate {
                key: "itsm/incidents".into(),
                value: value.as_bytes().to_vec(),
            }),
        };
        journal.append(append(None)).await.unwrap();
        journal.append(append(Some("page 1"))).await.unwrap();
        assert!(store.tail.after(0, 10).is_none(), "the page left a gap");
        assert!(store.tail.after(2, 10).is_none());
        journal.append(append(None)).await.unwrap();
        assert_eq!(seqs(store.tail.after(4, 10)), Some(vec![5, 6]));
        // The reader gets every entry all the same, the page from the tree.
        let seqs: Vec<u64> = store
            .journal_since(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        assert_eq!(
            store.cursor("itsm/incidents").unwrap().as_deref(),
            Some(&b"page 1"[..])
        );
        drop(journal);
        committer.join().unwrap();
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    fn delivery(id: u32, cursor: Option<CursorUpdate>) -> Append {
        Append {
            connector: "monitoring".parse().unwrap(),
            delivery_id: None,
            events: vec![Event::Alert(super::tests::firing(id))],
            cursor,
        }
    }

    /// Appends and says how long it took on the (paused) clock.
    async fn timed(journal: &Journal, append: Append) -> (u64, Duration) {
        let started = tokio::time::Instant::now();
        match journal.append(append).await.unwrap() {
            Appended::Stored { first_seq, .. } => (first_seq, started.elapsed()),
            Appended::Replayed { .. } => panic!("nothing is replayed here"),
        }
    }

    /// With the clock paused, time moves only when every task waits on it,
    /// so each wait below is exactly what pacing did.
    #[tokio::test(start_paused = true)]
    async fn deliveries_wait_for_the_engine_beyond_the_limit_and_pollers_never() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let (journal, committer) =
            Journal::start(&store, metrics.clone(), Duration::from_secs(60)).unwrap();
        let journal = journal.paced(&store, 3);

        // Up to the limit unapplied, nobody waits (the fourth finds three).
        for id in 1..=4 {
            assert_eq!(
                timed(&journal, delivery(id, None)).await,
                (id.into(), Duration::ZERO)
            );
        }
        // Four wait for an engine that does not come: stored after the
        // longest wait all the same.
        assert_eq!(timed(&journal, delivery(5, None)).await, (5, PACE_WAIT));
        // A poller's page is never held back.
        let cursor = CursorUpdate {
            key: "itsm/incidents".into(),
            value: b"x".to_vec(),
        };
        assert_eq!(
            timed(&journal, delivery(6, Some(cursor))).await,
            (6, Duration::ZERO)
        );

        // The engine applying goes on as soon as it is close enough.
        let waiting = tokio::spawn({
            let journal = journal.clone();
            async move { timed(&journal, delivery(7, None)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.set_engine_position(2).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "4 still unapplied, more than 3");
        store.set_engine_position(3).unwrap();
        assert_eq!(waiting.await.unwrap(), (7, Duration::from_millis(200)));

        // Two deliveries waited, and /metrics says so.
        let text = metrics.encode();
        assert!(text.contains("csmd_ingest_paced_seconds_count 2"), "{text}");

        // Unpaced (the default), the same lag makes nobody wait.
        let unpaced = journal.clone().paced(&store, 0);
        assert_eq!(
            timed(&unpaced, delivery(8, None)).await,
            (8, Duration::ZERO)
        );
        drop((journal, unpaced));
        committer.join().unwrap();
    }
}

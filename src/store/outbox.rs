//! The outbox tree: queued messages, their delivery queue, and the state of
//! the processors that queue them, under key prefixes of one tree so that a
//! state change and the messages it causes are one atomic `sled::Batch`.
//!
//! Keys: `m` + id → message (its JSON packed with LZ4, see
//! `store::compact::pack`); `q` + due time (ms, big-endian) + id → nothing,
//! for every message still to send, so the worker reads only what is due;
//! `f` + finish time (ms, big-endian) + id → nothing, for every message sent
//! or dead, so old ones are found without reading the rest; `t` + id →
//! nothing, for a message deleted after `keep_sent`, so its id is never
//! queued again; `s` + name → a processor's state (opaque bytes).

use std::borrow::Cow;
use std::collections::HashMap;

use bloomfilter::Bloom;
use chrono::{DateTime, Utc};

use super::{Store, StoreError, compact};
use crate::model::outbox::{MessageStatus, OutboxMessage};

pub(super) const TREE: &str = "outbox";
const MESSAGE: u8 = b'm';
const QUEUE: u8 = b'q';
const FINISHED: u8 = b'f';
const TOMBSTONE: u8 = b't';
const STATE: u8 = b's';

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

/// The time and id of a [`timed_key`].
fn split_timed_key(key: &[u8]) -> (Option<DateTime<Utc>>, String) {
    let at = key
        .get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .and_then(|millis| i64::try_from(millis).ok())
        .and_then(DateTime::from_timestamp_millis);
    let id = String::from_utf8_lossy(key.get(9..).unwrap_or_default()).into_owned();
    (at, id)
}

fn queue_key(due: DateTime<Utc>, id: &str) -> Vec<u8> {
    timed_key(QUEUE, due, id)
}

/// `prefix` + time (ms since the epoch, big-endian, so keys sort by time)
/// + id.
fn timed_key(prefix: u8, at: DateTime<Utc>, id: &str) -> Vec<u8> {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    let mut key = Vec::with_capacity(9 + id.len());
    key.push(prefix);
    key.extend_from_slice(&millis.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// A stored value of this tree as JSON, for `csmd store export`: a
/// message unpacked, anything else (processors' states, whatever their
/// first byte, and the empty index entries) as it is.
pub(super) fn exported<'v>(key: &[u8], value: &'v [u8]) -> Result<Cow<'v, [u8]>, StoreError> {
    match key.split_first() {
        Some((&MESSAGE, id)) => compact::unpack(TREE, id, value),
        _ => Ok(Cow::Borrowed(value)),
    }
}

/// The ids of every message queued or deleted (a tombstone), as a Bloom
/// filter: an id it does not hold was never queued, so queuing it reads
/// nothing from the tree. Without it each new message took two reads at
/// random places of the tree, which holds the rendered bodies and does not
/// stay in sled's cache (BENCHMARKS.md). An id it may hold (at most two in
/// a hundred of the new ones) is looked up.
///
/// Ids are only ever added: a deleted message leaves a tombstone under
/// its id. The ids are read from the tree once, at the first queuing;
/// when more are added than the filter was sized for, a filter twice as
/// large (with half the false positives) takes the next ones, so the tree
/// is never read again: reading it means reading every message.
pub(crate) struct KnownIds {
    /// The layer ids are added to.
    current: Layer,
    /// The layers filled before it, oldest first.
    full: Vec<Layer>,
}

struct Layer {
    filter: Bloom<[u8]>,
    len: usize,
    capacity: usize,
    false_positives: f64,
}

impl KnownIds {
    /// The first layer's false positives; each next layer has half its
    /// predecessor's, so that all of them together stay under twice this.
    const FALSE_POSITIVES: f64 = 0.01;
    /// The fewest ids a layer is sized for (a few in tests, to see layers
    /// added).
    const MIN_CAPACITY: usize = if cfg!(test) { 4 } else { 1 << 16 };

    /// Every id of a message or a tombstone in `tree`.
    fn read(tree: &sled::Tree) -> Result<KnownIds, StoreError> {
        let mut keys = Vec::new();
        for prefix in [MESSAGE, TOMBSTONE] {
            for key in tree.scan_prefix([prefix]).keys() {
                keys.push(key?);
            }
        }
        let mut known = KnownIds {
            current: Layer::sized(
                Self::MIN_CAPACITY.max(keys.len() * 2),
                Self::FALSE_POSITIVES,
            )?,
            full: Vec::new(),
        };
        known.add(keys.iter().map(|key| key.get(1..).unwrap_or_default()))?;
        Ok(known)
    }

    fn add<'a>(&mut self, ids: impl IntoIterator<Item = &'a [u8]>) -> Result<(), StoreError> {
        for id in ids {
            let current = &self.current;
            if current.len >= current.capacity {
                let next = Layer::sized(current.capacity * 2, current.false_positives / 2.0)?;
                self.full.push(std::mem::replace(&mut self.current, next));
            }
            self.current.filter.set(id);
            self.current.len += 1;
        }
        Ok(())
    }

    /// False when `id` was certainly never added.
    fn may_hold(&self, id: &[u8]) -> bool {
        self.current.filter.check(id) || self.full.iter().any(|layer| layer.filter.check(id))
    }
}

impl Layer {
    fn sized(capacity: usize, false_positives: f64) -> Result<Layer, StoreError> {
        let filter = Bloom::new_for_fp_rate(capacity, false_positives)
            .map_err(|e| StoreError::Transaction(format!("cannot size the outbox's ids: {e}")))?;
        Ok(Layer {
            filter,
            len: 0,
            capacity,
            false_positives,
        })
    }
}

/// A processor state change to write with the messages it causes.
pub enum StateChange {
    Put { name: String, value: Vec<u8> },
    Remove { name: String },
}

/// Which messages to list.
#[derive(Debug, Default, Clone)]
pub struct OutboxFilter {
    pub status: Option<MessageStatus>,
    pub customer: Option<String>,
}

impl Store {
    fn decode_message(key: &[u8], bytes: &[u8]) -> Result<OutboxMessage, StoreError> {
        let json = compact::unpack(TREE, key.get(1..).unwrap_or_default(), bytes)?;
        serde_json::from_slice(&json).map_err(|source| StoreError::Decode {
            tree: TREE,
            key: String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned(),
            source,
        })
    }

    /// The `f` entry of a sent or dead message: when it was sent, or when
    /// its last attempt was due.
    fn finished_key(message: &OutboxMessage) -> Option<Vec<u8>> {
        matches!(message.status, MessageStatus::Sent | MessageStatus::Dead).then(|| {
            let finished = message.sent_at.unwrap_or(message.next_attempt_at);
            timed_key(FINISHED, finished, &message.id)
        })
    }

    /// Messages are stored packed ([`compact::pack`]): their rendered
    /// bodies are most of the outbox.
    fn encode_message(message: &OutboxMessage) -> Result<Vec<u8>, StoreError> {
        compact::pack(TREE, message)
    }

    /// Writes `changes` and queues every message whose key is new, in one
    /// batch, and makes it durable; returns the messages queued (those
    /// whose key was known are left as they are).
    ///
    /// The ids known are checked in memory first ([`KnownIds`]): a new id,
    /// nearly every one, costs no read of the tree. Queuing is serialised,
    /// so two processors queuing one id at once queue it once.
    pub fn queue_messages(
        &self,
        changes: Vec<StateChange>,
        messages: Vec<OutboxMessage>,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let tree = &self.outbox;
        let mut batch = sled::Batch::default();
        for change in changes {
            match change {
                StateChange::Put { name, value } => {
                    batch.insert(prefixed(STATE, name.as_bytes()), value)
                }
                StateChange::Remove { name } => batch.remove(prefixed(STATE, name.as_bytes())),
            }
        }
        // Taken out while queuing: after an error it is read again.
        let mut slot = self
            .outbox_ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut known = match slot.take() {
            Some(known) => known,
            None => KnownIds::read(tree)?,
        };
        let mut queued = Vec::new();
        for message in messages {
            let id = message.id.as_bytes();
            if queued.iter().any(|q: &OutboxMessage| q.id == message.id)
                || known.may_hold(id)
                    && (tree.contains_key(prefixed(MESSAGE, id))?
                        || tree.contains_key(prefixed(TOMBSTONE, id))?)
            {
                continue;
            }
            batch.insert(prefixed(MESSAGE, id), Self::encode_message(&message)?);
            batch.insert(queue_key(message.next_attempt_at, &message.id), &[]);
            queued.push(message);
        }
        tree.apply_batch(batch)?;
        known.add(queued.iter().map(|m| m.id.as_bytes()))?;
        *slot = Some(known);
        drop(slot);
        self.flush_outbox()?;
        Ok(queued)
    }

    /// Every state whose name starts with `prefix`, by name.
    pub fn outbox_states(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.outbox.scan_prefix(prefixed(STATE, prefix.as_bytes())) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            out.push((name, value.to_vec()));
        }
        Ok(out)
    }

    /// Messages to send by `now`, earliest first, skipping `busy` ids.
    pub fn due_messages(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        busy: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let tree = &self.outbox;
        let end = queue_key(now, "\u{10FFFF}");
        let mut out = Vec::new();
        for item in tree.range(vec![QUEUE]..end) {
            let (key, _) = item?;
            let (_, id) = split_timed_key(&key);
            if busy(&id) {
                continue;
            }
            let message = self.outbox_message_in(tree, &id)?;
            // An entry left behind by a concurrent change (a retry racing
            // the worker) must never send a message again.
            let Some(message) = message.filter(|m| {
                matches!(m.status, MessageStatus::Pending | MessageStatus::Sending)
                    && queue_key(m.next_attempt_at, &m.id) == key.as_ref()
            }) else {
                tree.remove(&key)?;
                continue;
            };
            out.push(message);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// When the next queued message not in `busy` is due, if any is.
    pub fn next_due(
        &self,
        busy: &dyn Fn(&str) -> bool,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        for item in self.outbox.scan_prefix([QUEUE]) {
            let (key, _) = item?;
            let (due, id) = split_timed_key(&key);
            if !busy(&id) {
                return Ok(due);
            }
        }
        Ok(None)
    }

    fn outbox_message_in(
        &self,
        tree: &sled::Tree,
        id: &str,
    ) -> Result<Option<OutboxMessage>, StoreError> {
        let key = prefixed(MESSAGE, id.as_bytes());
        match tree.get(&key)? {
            Some(bytes) => Self::decode_message(&key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn outbox_message(&self, id: &str) -> Result<Option<OutboxMessage>, StoreError> {
        self.outbox_message_in(&self.outbox, id)
    }

    /// Writes new versions of messages (and moves their queue entries: a
    /// message is in the queue while pending or sending), in one batch.
    /// `previous` is each message's `next_attempt_at` before the change.
    /// Not flushed: the caller decides when to pay for durability.
    pub fn update_messages(
        &self,
        updates: &[(OutboxMessage, DateTime<Utc>)],
    ) -> Result<(), StoreError> {
        let tree = &self.outbox;
        let mut batch = sled::Batch::default();
        for (message, previous) in updates {
            batch.remove(queue_key(*previous, &message.id));
            match Self::finished_key(message) {
                Some(finished) => batch.insert(finished, &[]),
                None => batch.insert(queue_key(message.next_attempt_at, &message.id), &[]),
            }
            batch.insert(
                prefixed(MESSAGE, message.id.as_bytes()),
                Self::encode_message(message)?,
            );
        }
        tree.apply_batch(batch)?;
        Ok(())
    }

    /// Messages matching `filter`, newest first, at most `limit`, and how
    /// many messages of every customer are in each status: one scan.
    pub fn outbox_overview(
        &self,
        filter: &OutboxFilter,
        limit: usize,
    ) -> Result<(Vec<OutboxMessage>, HashMap<MessageStatus, u64>), StoreError> {
        let mut out = Vec::new();
        let mut counts = HashMap::new();
        for item in self.outbox.scan_prefix([MESSAGE]) {
            let (key, bytes) = item?;
            let message = Self::decode_message(&key, &bytes)?;
            *counts.entry(message.status).or_default() += 1;
            if limit == 0
                || filter.status.is_some_and(|s| s != message.status)
                || filter
                    .customer
                    .as_deref()
                    .is_some_and(|c| message.customer.as_ref().is_none_or(|m| m.as_str() != c))
            {
                continue;
            }
            out.push(message);
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out.truncate(limit);
        Ok((out, counts))
    }

    /// Makes a dead or pending message due now; returns its status before
    /// and the message, or `None` when there is no such message. A sent or
    /// sending one is returned unchanged.
    pub fn retry_message(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<(MessageStatus, OutboxMessage)>, StoreError> {
        let Some(mut message) = self.outbox_message(id)? else {
            return Ok(None);
        };
        let was = message.status;
        if matches!(message.status, MessageStatus::Dead | MessageStatus::Pending) {
            let previous = message.next_attempt_at;
            message.status = MessageStatus::Pending;
            message.next_attempt_at = now;
            self.update_messages(&[(message.clone(), previous)])?;
            self.flush_outbox()?;
        }
        Ok(Some((was, message)))
    }

    /// Deletes the messages sent or dead before `before`, keeping their ids
    /// so they are never queued again; returns the status of each deleted
    /// message. Not flushed: a deletion lost in a crash is done next time.
    pub fn prune_outbox(&self, before: DateTime<Utc>) -> Result<Vec<MessageStatus>, StoreError> {
        let tree = &self.outbox;
        let mut batch = sled::Batch::default();
        let mut pruned = Vec::new();
        for item in tree.range(vec![FINISHED]..timed_key(FINISHED, before, "")) {
            let (key, _) = item?;
            batch.remove(&key);
            let (_, id) = split_timed_key(&key);
            // An entry of a dead message that was retried since is stale:
            // the message is queued again, or finished later.
            match self.outbox_message_in(tree, &id)? {
                Some(message) if Self::finished_key(&message).as_deref() == Some(&key[..]) => {
                    batch.remove(prefixed(MESSAGE, id.as_bytes()));
                    batch.insert(prefixed(TOMBSTONE, id.as_bytes()), &[]);
                    pruned.push(message.status);
                }
                _ => {}
            }
        }
        tree.apply_batch(batch)?;
        Ok(pruned)
    }

    /// How many messages are in each status (a scan, done at start; the
    /// worker keeps the gauges current after that).
    pub fn outbox_counts(&self) -> Result<HashMap<MessageStatus, u64>, StoreError> {
        Ok(self.outbox_overview(&OutboxFilter::default(), 0)?.1)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::outbox::{MessageKind, message_id_for};

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + minutes * 60, 0).unwrap()
    }

    /// A pending maintenance notice whose idempotency key is `key`.
    pub(in crate::store) fn message(key: &str) -> OutboxMessage {
        OutboxMessage {
            id: message_id_for(key),
            key: key.into(),
            kind: MessageKind::MaintenanceNotice,
            customer: Some("acme".parse().unwrap()),
            to: "ops@acme.example".into(),
            subject: "Planned maintenance".into(),
            text: "text".into(),
            html: "<p>html</p>".into(),
            calendar: None,
            attachments: Vec::new(),
            message_id: format!("<{}@csmd.example>", message_id_for(key)),
            status: MessageStatus::Pending,
            attempts: 0,
            next_attempt_at: at(0),
            last_error: None,
            created_at: at(0),
            sent_at: None,
        }
    }

    /// Moves a queued message to `status` at minute `minute`, as the worker does.
    fn finish(store: &Store, mut message: OutboxMessage, status: MessageStatus, minute: i64) {
        let previous = message.next_attempt_at;
        message.status = status;
        message.attempts += 1;
        match status {
            MessageStatus::Sent => message.sent_at = Some(at(minute)),
            _ => message.next_attempt_at = at(minute),
        }
        store.update_messages(&[(message, previous)]).unwrap();
    }

    #[test]
    fn old_finished_messages_are_pruned_and_never_queued_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let [sent, dead, retried, pending] = ["sent", "dead", "retried", "pending"].map(message);
        let all = vec![sent.clone(), dead.clone(), retried.clone(), pending.clone()];
        assert_eq!(store.queue_messages(vec![], all.clone()).unwrap().len(), 4);
        finish(&store, sent.clone(), MessageStatus::Sent, 10);
        finish(&store, dead.clone(), MessageStatus::Dead, 20);
        // Dead at minute 5, retried by an operator, sent at minute 100.
        finish(&store, retried.clone(), MessageStatus::Dead, 5);
        let (_, retried) = store.retry_message(&retried.id, at(90)).unwrap().unwrap();
        finish(&store, retried.clone(), MessageStatus::Sent, 100);

        // Nothing finished before minute 10 is left, except the stale entry.
        assert!(store.prune_outbox(at(10)).unwrap().is_empty());
        assert!(store.outbox_message(&retried.id).unwrap().is_some());

        let pruned = store.prune_outbox(at(21)).unwrap();
        assert_eq!(pruned, [MessageStatus::Sent, MessageStatus::Dead]);
        assert!(store.outbox_message(&sent.id).unwrap().is_none());
        assert!(store.outbox_message(&dead.id).unwrap().is_none());
        assert!(store.outbox_message(&retried.id).unwrap().is_some());
        assert!(store.outbox_message(&pending.id).unwrap().is_some());
        let counts = store.outbox_counts().unwrap();
        assert_eq!(counts.get(&MessageStatus::Sent), Some(&1));
        assert_eq!(counts.get(&MessageStatus::Pending), Some(&1));

        // Queued again by a processor that forgot: refused, as before.
        let again = store.queue_messages(vec![], all).unwrap();
        assert!(again.is_empty(), "{again:?}");

        assert_eq!(store.prune_outbox(at(1000)).unwrap(), [MessageStatus::Sent]);
        assert!(store.outbox_message(&pending.id).unwrap().is_some());
        assert!(store.due_messages(at(1000), 10, &|_| false).unwrap().len() == 1);
    }

    #[test]
    fn an_id_queued_or_deleted_is_refused_however_many_came_since_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let deleted = message("deleted");
        store.queue_messages(vec![], vec![deleted.clone()]).unwrap();
        finish(&store, deleted.clone(), MessageStatus::Sent, 1);
        assert_eq!(store.prune_outbox(at(2)).unwrap(), [MessageStatus::Sent]);
        // Ten times what the first layer was sized for, queued in threes:
        // layers are added.
        let many: Vec<OutboxMessage> = (0..10 * KnownIds::MIN_CAPACITY)
            .map(|i| message(&format!("notice-{i}")))
            .collect();
        for three in many.chunks(3) {
            assert_eq!(
                store.queue_messages(vec![], three.to_vec()).unwrap().len(),
                three.len()
            );
        }
        let refused = |store: &Store| {
            let again = [
                deleted.clone(),
                many[0].clone(),
                many[many.len() - 1].clone(),
            ];
            store.queue_messages(vec![], again.to_vec()).unwrap()
        };
        assert!(refused(&store).is_empty());
        let layers = |store: &Store| {
            let known = store.outbox_ids.lock().unwrap();
            known.as_ref().map_or(0, |k| k.full.len() + 1)
        };
        // Sized for 4, then 8, 16 and 32 ids.
        assert_eq!(layers(&store), 4);
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        assert!(refused(&store).is_empty());
        // Read again at the restart: one layer, sized for twice the ids.
        assert_eq!(layers(&store), 1);
        let fresh = store
            .queue_messages(vec![], vec![message("fresh")])
            .unwrap();
        assert_eq!(fresh.len(), 1);
        assert!(store.outbox_message(&deleted.id).unwrap().is_none());
        let pending = store.outbox_counts().unwrap()[&MessageStatus::Pending];
        assert_eq!(pending, many.len() as u64 + 1);
    }

    /// A notice as the disruption planner renders it: mostly long HTML.
    fn rendered(key: &str) -> OutboxMessage {
        let row = "<tr><td style=\"padding:4px 8px;border-bottom:1px solid #e5e7eb;\">\
                   InstanceDown on svc-00041-node-7</td></tr>\n";
        OutboxMessage {
            text: "Our monitoring detected a disruption.\n".repeat(20),
            html: row.repeat(40),
            ..message(key)
        }
    }

    #[test]
    fn a_message_is_stored_packed_in_a_fraction_of_its_json_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let notice = rendered("packed");
        let json = serde_json::to_vec(&notice).unwrap();
        store.queue_messages(vec![], vec![notice.clone()]).unwrap();

        let key = prefixed(MESSAGE, notice.id.as_bytes());
        let stored = store.outbox.get(&key).unwrap().unwrap();
        assert_eq!(stored.first(), Some(&compact::PACKED));
        assert!(
            stored.len() * 4 < json.len(),
            "{} bytes stored for {} of JSON",
            stored.len(),
            json.len()
        );
        assert_eq!(
            store.outbox_message(&notice.id).unwrap(),
            Some(notice.clone())
        );
        let (listed, _) = store.outbox_overview(&OutboxFilter::default(), 10).unwrap();
        assert_eq!(listed, std::slice::from_ref(&notice));

        // The export holds it as JSON.
        let exported = exported(&key, &stored).unwrap();
        assert_eq!(exported.as_ref(), json.as_slice());
    }

    #[test]
    fn a_message_stored_as_json_by_an_earlier_version_is_read_and_rewritten_packed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = rendered("json");
        let key = prefixed(MESSAGE, old.id.as_bytes());
        store
            .outbox
            .insert(&key, serde_json::to_vec(&old).unwrap())
            .unwrap();
        store
            .outbox
            .insert(queue_key(old.next_attempt_at, &old.id), &[])
            .unwrap();
        assert_eq!(store.outbox_message(&old.id).unwrap(), Some(old.clone()));
        assert_eq!(
            store.due_messages(at(1), 10, &|_| false).unwrap(),
            std::slice::from_ref(&old)
        );
        // Not queued a second time.
        assert!(
            store
                .queue_messages(vec![], vec![old.clone()])
                .unwrap()
                .is_empty()
        );

        finish(&store, old.clone(), MessageStatus::Sent, 3);
        let stored = store.outbox.get(&key).unwrap().unwrap();
        assert_eq!(stored.first(), Some(&compact::PACKED));
        let sent = store.outbox_message(&old.id).unwrap().unwrap();
        assert_eq!(sent.status, MessageStatus::Sent);
        assert_eq!(sent.html, old.html);
    }

    #[test]
    fn a_corrupt_packed_message_is_an_error_naming_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let notice = rendered("corrupt");
        let key = prefixed(MESSAGE, notice.id.as_bytes());
        let packed = compact::pack(TREE, &notice).unwrap();
        let mut wrong_length = packed.clone();
        wrong_length[1..5].copy_from_slice(&7u32.to_le_bytes());
        let mut huge = packed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        for (value, says) in [
            (vec![compact::PACKED, 1], "without its length"),
            (packed[..packed.len() / 2].to_vec(), "cannot unpack"),
            (wrong_length, "cannot unpack"),
            (huge, "unpacks to 4294967295 bytes"),
        ] {
            store.outbox.insert(&key, value).unwrap();
            let message = store.outbox_message(&notice.id).unwrap_err().to_string();
            assert!(
                message.contains(&notice.id) && message.contains(says),
                "{message}"
            );
        }
    }

    #[test]
    fn only_messages_are_unpacked_for_the_export() {
        let state = [compact::PACKED, 0xff];
        let key = prefixed(STATE, b"disruption/acme");
        assert_eq!(exported(&key, &state).unwrap().as_ref(), state.as_slice());
        let key = prefixed(MESSAGE, b"m-1");
        let message = exported(&key, &state).unwrap_err().to_string();
        assert!(message.contains("m-1"), "{message}");
    }
}

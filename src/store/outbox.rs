//! The outbox tree: queued messages, their delivery queue, and the state of
//! the processors that queue them, under key prefixes of one tree so that a
//! state change and the messages it causes are one atomic `sled::Batch`.
//!
//! Keys: `m` + id → message; `q` + due time (ms, big-endian) + id → nothing,
//! for every message still to send, so the worker reads only what is due;
//! `s` + name → a processor's state (opaque bytes).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};
use crate::model::outbox::{MessageStatus, OutboxMessage};

const TREE: &str = "outbox";
const MESSAGE: u8 = b'm';
const QUEUE: u8 = b'q';
const STATE: u8 = b's';

/// The short id of the message with this idempotency key.
pub fn message_id_for(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

fn prefixed(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

fn queue_key(due: DateTime<Utc>, id: &str) -> Vec<u8> {
    let millis = u64::try_from(due.timestamp_millis()).unwrap_or(0);
    let mut key = Vec::with_capacity(9 + id.len());
    key.push(QUEUE);
    key.extend_from_slice(&millis.to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
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
    fn outbox_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(TREE)?)
    }

    fn decode_message(key: &[u8], bytes: &[u8]) -> Result<OutboxMessage, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            tree: TREE,
            key: String::from_utf8_lossy(key.get(1..).unwrap_or_default()).into_owned(),
            source,
        })
    }

    fn encode_message(message: &OutboxMessage) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(message).map_err(|source| StoreError::Encode { tree: TREE, source })
    }

    /// Writes `changes` and queues every message whose key is new, in one
    /// batch, and makes it durable; returns the messages queued (those
    /// whose key was known are left as they are).
    pub fn queue_messages(
        &self,
        changes: Vec<StateChange>,
        messages: Vec<OutboxMessage>,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let tree = self.outbox_tree()?;
        let mut batch = sled::Batch::default();
        for change in changes {
            match change {
                StateChange::Put { name, value } => {
                    batch.insert(prefixed(STATE, name.as_bytes()), value)
                }
                StateChange::Remove { name } => batch.remove(prefixed(STATE, name.as_bytes())),
            }
        }
        let mut queued = Vec::new();
        for message in messages {
            let key = prefixed(MESSAGE, message.id.as_bytes());
            if tree.contains_key(&key)? || queued.iter().any(|q: &OutboxMessage| q.id == message.id)
            {
                continue;
            }
            batch.insert(key, Self::encode_message(&message)?);
            batch.insert(queue_key(message.next_attempt_at, &message.id), &[]);
            queued.push(message);
        }
        tree.apply_batch(batch)?;
        self.flush()?;
        Ok(queued)
    }

    /// Every state whose name starts with `prefix`, by name.
    pub fn outbox_states(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .outbox_tree()?
            .scan_prefix(prefixed(STATE, prefix.as_bytes()))
        {
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
        let tree = self.outbox_tree()?;
        let end = queue_key(now, "\u{10FFFF}");
        let mut out = Vec::new();
        for item in tree.range(vec![QUEUE]..end) {
            let (key, _) = item?;
            let id = String::from_utf8_lossy(&key[9..]).into_owned();
            if busy(&id) {
                continue;
            }
            let message = self.outbox_message_in(&tree, &id)?;
            // An entry left behind by a concurrent change (a retry racing
            // the worker) must never send a message again.
            let Some(message) = message.filter(|m| {
                matches!(m.status, MessageStatus::Pending | MessageStatus::Sending)
                    && queue_key(m.next_attempt_at, &m.id) == key.as_ref()
            }) else {
                tree.remove(&key)?;
                continue;
            };
            {
                out.push(message);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// When the next queued message is due, if any is.
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let tree = self.outbox_tree()?;
        let Some(item) = tree.scan_prefix([QUEUE]).next() else {
            return Ok(None);
        };
        let (key, _) = item?;
        let millis = key
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .and_then(|m| i64::try_from(m).ok())
            .unwrap_or(0);
        Ok(DateTime::from_timestamp_millis(millis))
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
        self.outbox_message_in(&self.outbox_tree()?, id)
    }

    /// Writes new versions of messages (and moves their queue entries: a
    /// message is in the queue while pending or sending), in one batch.
    /// `previous` is each message's `next_attempt_at` before the change.
    /// Not flushed: the caller decides when to pay for durability.
    pub fn update_messages(
        &self,
        updates: &[(OutboxMessage, DateTime<Utc>)],
    ) -> Result<(), StoreError> {
        let tree = self.outbox_tree()?;
        let mut batch = sled::Batch::default();
        for (message, previous) in updates {
            batch.remove(queue_key(*previous, &message.id));
            if matches!(
                message.status,
                MessageStatus::Pending | MessageStatus::Sending
            ) {
                batch.insert(queue_key(message.next_attempt_at, &message.id), &[]);
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
        for item in self.outbox_tree()?.scan_prefix([MESSAGE]) {
            let (key, bytes) = item?;
            let message = Self::decode_message(&key, &bytes)?;
            *counts.entry(message.status).or_default() += 1;
            if limit == 0
                || filter.status.is_some_and(|s| s != message.status)
                || filter
                    .customer
                    .as_deref()
                    .is_some_and(|c| c != message.customer.as_str())
            {
                continue;
            }
            out.push(message);
        }
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        out.truncate(limit);
        Ok((out, counts))
    }

    /// Makes a dead or pending message due now; returns it, or `None`
    /// when there is no such message. A sent or sending one is returned
    /// unchanged.
    pub fn retry_message(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<OutboxMessage>, StoreError> {
        let Some(mut message) = self.outbox_message(id)? else {
            return Ok(None);
        };
        if matches!(message.status, MessageStatus::Dead | MessageStatus::Pending) {
            let previous = message.next_attempt_at;
            message.status = MessageStatus::Pending;
            message.next_attempt_at = now;
            self.update_messages(&[(message.clone(), previous)])?;
            self.flush()?;
        }
        Ok(Some(message))
    }

    /// How many messages are in each status (a scan, done at start; the
    /// worker keeps the gauges current after that).
    pub fn outbox_counts(&self) -> Result<HashMap<MessageStatus, u64>, StoreError> {
        Ok(self.outbox_overview(&OutboxFilter::default(), 0)?.1)
    }
}

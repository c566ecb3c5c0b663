//! Tickets csmd opens by itself: the state that decided them and their
//! queued writes change in one transaction, so a crash can neither queue a
//! ticket twice nor lose its resolution.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::outbox::StateChange;
use super::{Store, StoreError, writes};
use crate::model::ConnectorName;
use crate::model::itsm::{ItsmWrite, WriteStatus};

pub(super) const TREE: &str = "tickets";

/// One change of the write-back queue.
#[derive(Debug, Clone)]
pub enum TicketWrite {
    /// Create the record, unless a write with this key is queued already.
    Create(ItsmWrite),
    /// Update the record queued under `key` after its earlier writes.
    Update {
        connector: ConnectorName,
        key: String,
        fields: Map<String, Value>,
    },
}

impl Store {
    /// Every ticket state whose name starts with `prefix`, by name.
    pub fn ticket_states(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.open_tree(TREE)?.scan_prefix(prefix.as_bytes()) {
            let (key, value) = item?;
            out.push((String::from_utf8_lossy(&key).into_owned(), value.to_vec()));
        }
        Ok(out)
    }

    /// Applies `states` and `writes` in one transaction, then flushes; says
    /// how many creates and updates were queued (a create whose key is
    /// queued already is skipped, an update of an unknown key too).
    pub fn commit_tickets(
        &self,
        states: &[StateChange],
        writes: &[TicketWrite],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.commit_with_writes(TREE, states, writes, now)
    }

    /// [`Store::commit_tickets`] with the states in `tree`.
    pub(super) fn commit_with_writes(
        &self,
        tree: &str,
        states: &[StateChange],
        writes: &[TicketWrite],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if states.is_empty() && writes.is_empty() {
            return Ok(0);
        }
        let tickets = self.db.open_tree(tree)?;
        let queue = self.db.open_tree(writes::TREE)?;
        let encode = |write: &ItsmWrite| {
            serde_json::to_vec(write).map_err(|source| StoreError::Encode {
                tree: writes::TREE,
                source,
            })
        };
        let queued = (&tickets, &queue)
            .transaction(|(tickets, queue)| {
                for change in states {
                    match change {
                        StateChange::Put { name, value } => {
                            tickets.insert(name.as_bytes(), value.as_slice())?;
                        }
                        StateChange::Remove { name } => {
                            tickets.remove(name.as_bytes())?;
                        }
                    }
                }
                let mut queued = 0;
                for write in writes {
                    match write {
                        TicketWrite::Create(write) => {
                            let key = writes::key(&write.connector, &write.key);
                            if queue.get(&key)?.is_none() {
                                let bytes =
                                    encode(write).map_err(ConflictableTransactionError::Abort)?;
                                queue.insert(key, bytes)?;
                                queued += 1;
                            }
                        }
                        TicketWrite::Update {
                            connector,
                            key,
                            fields,
                        } => {
                            let key = writes::key(connector, key);
                            let Some(bytes) = queue.get(&key)? else {
                                continue;
                            };
                            let mut write = Self::decode_write(&bytes)
                                .map_err(ConflictableTransactionError::Abort)?;
                            write.updates.push(fields.clone());
                            write.status = WriteStatus::Pending;
                            write.next_attempt_at = now;
                            write.updated_at = now;
                            let bytes =
                                encode(&write).map_err(ConflictableTransactionError::Abort)?;
                            queue.insert(key, bytes)?;
                            queued += 1;
                        }
                    }
                }
                Ok(queued)
            })
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Io(e),
            })?;
        self.flush()?;
        Ok(queued)
    }
}

//! Data-integrity issues, by key, in the `integrity` tree; they change
//! together with the tickets they cause ([`Store::commit_integrity`]).

use chrono::{DateTime, Utc};

use super::outbox::StateChange;
use super::tickets::TicketWrite;
use super::{Store, StoreError};
use crate::model::integrity::IntegrityIssue;

pub(super) const TREE: &str = "integrity";

impl Store {
    fn decode_issue(key: &[u8], bytes: &[u8]) -> Result<IntegrityIssue, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            tree: TREE,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        })
    }

    /// Every issue, by key.
    pub fn integrity_issues(&self) -> Result<Vec<IntegrityIssue>, StoreError> {
        self.db
            .open_tree(TREE)?
            .iter()
            .map(|item| {
                let (key, bytes) = item?;
                Self::decode_issue(&key, &bytes)
            })
            .collect()
    }

    pub fn integrity_issue(&self, key: &str) -> Result<Option<IntegrityIssue>, StoreError> {
        self.db
            .open_tree(TREE)?
            .get(key.as_bytes())?
            .map(|bytes| Self::decode_issue(key.as_bytes(), &bytes))
            .transpose()
    }

    /// Stores issues (named by key) and queues their ticket writes in one
    /// transaction; says how many writes were queued.
    pub fn commit_integrity(
        &self,
        issues: &[StateChange],
        writes: &[TicketWrite],
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.commit_with_writes(TREE, issues, writes, now)
    }
}

//! ITSM records in the store: one tree per kind, keyed by the upstream's
//! record id. Applying keeps the newest copy by its update time, so a
//! replayed or out-of-order copy changes nothing.

use super::{Store, StoreError};
use crate::model::itsm::ItsmRecord;

/// What applying a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Records stored because they were new or newer.
    pub changed: usize,
    /// Records ignored because the store already had them or a newer copy.
    pub unchanged: usize,
}

impl Store {
    fn itsm_tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Stores each record unless the store has the same or a newer copy.
    ///
    /// Records are written one by one, not as one `sled::Batch`: sled
    /// applies a batch (and a transaction) under a process-wide exclusive
    /// lock, so a large batch here would stall the journal's commits, and
    /// with them every source's acknowledgements, for its whole duration.
    /// Atomicity is not needed: the engine stores its position after the
    /// batch, and applying a record again is a no-op.
    pub fn apply_itsm<'a>(
        &self,
        records: impl IntoIterator<Item = &'a ItsmRecord>,
    ) -> Result<Applied, StoreError> {
        let mut trees: Vec<(&'static str, sled::Tree)> = Vec::new();
        let mut applied = Applied::default();
        for record in records {
            let name = record.tree();
            let tree = match trees.iter().find(|(n, _)| *n == name) {
                Some((_, tree)) => tree,
                None => {
                    trees.push((name, self.itsm_tree(name)?));
                    &trees[trees.len() - 1].1
                }
            };
            // Newer wins. An equal update time is a second version written
            // within the same second (the upstream's resolution): the copy
            // read later is the later one, so it wins too, unless it is the
            // very same record. A copy earlier in this batch is already in
            // the tree.
            let newer = match tree.get(record.id().as_bytes())? {
                Some(bytes) => {
                    let stored: ItsmRecord =
                        serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
                            tree: name,
                            key: record.id().to_string(),
                            source,
                        })?;
                    record.updated_at() >= stored.updated_at() && *record != stored
                }
                None => true,
            };
            if newer {
                let bytes = serde_json::to_vec(record)
                    .map_err(|source| StoreError::Encode { tree: name, source })?;
                tree.insert(record.id().as_bytes(), bytes)?;
                applied.changed += 1;
            } else {
                applied.unchanged += 1;
            }
        }
        Ok(applied)
    }

    /// One ITSM record by tree (`"incidents"`, …) and id.
    pub fn itsm_record(
        &self,
        tree: &'static str,
        id: &str,
    ) -> Result<Option<ItsmRecord>, StoreError> {
        match self.itsm_tree(tree)?.get(id.as_bytes())? {
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Decode {
                        tree,
                        key: id.to_string(),
                        source,
                    })
            }
            None => Ok(None),
        }
    }

    /// Every record of an ITSM tree, by id (a scan).
    pub fn itsm_records(&self, tree: &'static str) -> Result<Vec<ItsmRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.itsm_tree(tree)?.iter() {
            let (key, bytes) = item?;
            out.push(
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Decode {
                    tree,
                    key: String::from_utf8_lossy(&key).into_owned(),
                    source,
                })?,
            );
        }
        Ok(out)
    }

    /// Number of records in an ITSM tree (a scan: for tests and tools).
    pub fn itsm_count(&self, tree: &'static str) -> Result<usize, StoreError> {
        Ok(self.itsm_tree(tree)?.len())
    }

    /// A poller's stored position, by key.
    pub fn cursor(&self, key: &str) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.journal.raw().get(super::journal::key::cursor(key))?)
    }

    /// How far the engine has applied the journal.
    pub fn engine_position(&self) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(ENGINE_POSITION)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    pub fn set_engine_position(&self, seq: u64) -> Result<(), StoreError> {
        self.meta.insert(ENGINE_POSITION, &seq.to_be_bytes())?;
        Ok(())
    }
}

const ENGINE_POSITION: &[u8] = b"engine_position";

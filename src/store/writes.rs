//! The ITSM write-back queue: one record per key and connector.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{Store, StoreError};
use crate::model::ConnectorName;
use crate::model::itsm::{ItsmWrite, WriteStatus};

pub(super) const TREE: &str = "itsm_writes";

pub(super) fn key(connector: &ConnectorName, key: &str) -> Vec<u8> {
    format!("{connector}\0{key}").into_bytes()
}

impl Store {
    fn writes_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(TREE)?)
    }

    pub(super) fn decode_write(bytes: &[u8]) -> Result<ItsmWrite, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            tree: TREE,
            key: String::new(),
            source,
        })
    }

    /// Queues the creation of a record, unless this key is queued already;
    /// returns the queued write (the existing one for a known key). Durable
    /// on return.
    pub fn queue_write(
        &self,
        connector: &ConnectorName,
        write_key: &str,
        table: &str,
        fields: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<(ItsmWrite, bool), StoreError> {
        let tree = self.writes_tree()?;
        let k = key(connector, write_key);
        let write = ItsmWrite::new(connector.clone(), write_key, table, fields, now);
        let bytes = serde_json::to_vec(&write)
            .map_err(|source| StoreError::Encode { tree: TREE, source })?;
        match tree.compare_and_swap(&k, None as Option<&[u8]>, Some(bytes))? {
            Ok(()) => {
                self.flush()?;
                Ok((write, true))
            }
            Err(existing) => {
                let current = existing
                    .current
                    .ok_or_else(|| StoreError::Transaction("write vanished".into()))?;
                Ok((Self::decode_write(&current)?, false))
            }
        }
    }

    /// Queues an update of a queued record; it is applied after the
    /// creation and earlier updates.
    pub fn queue_update(
        &self,
        connector: &ConnectorName,
        write_key: &str,
        fields: Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<Option<ItsmWrite>, StoreError> {
        let tree = self.writes_tree()?;
        let k = key(connector, write_key);
        let updated = tree.update_and_fetch(&k, |old| {
            let mut write: ItsmWrite = serde_json::from_slice(old?).ok()?;
            write.updates.push(fields.clone());
            write.status = WriteStatus::Pending;
            write.next_attempt_at = now;
            write.updated_at = now;
            serde_json::to_vec(&write).ok()
        })?;
        self.flush()?;
        updated.map(|b| Self::decode_write(&b)).transpose()
    }

    pub fn save_write(&self, write: &ItsmWrite) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(write)
            .map_err(|source| StoreError::Encode { tree: TREE, source })?;
        self.writes_tree()?
            .insert(key(&write.connector, &write.key), bytes)?;
        self.flush()
    }

    pub fn write(
        &self,
        connector: &ConnectorName,
        write_key: &str,
    ) -> Result<Option<ItsmWrite>, StoreError> {
        self.writes_tree()?
            .get(key(connector, write_key))?
            .map(|b| Self::decode_write(&b))
            .transpose()
    }

    /// Every queued write of a connector (all connectors with `None`).
    pub fn writes(&self, connector: Option<&ConnectorName>) -> Result<Vec<ItsmWrite>, StoreError> {
        let tree = self.writes_tree()?;
        let prefix = connector
            .map(|c| format!("{c}\0").into_bytes())
            .unwrap_or_default();
        tree.scan_prefix(prefix)
            .values()
            .map(|v| Self::decode_write(&v?))
            .collect()
    }

    /// Pending writes of a connector whose next attempt is due.
    pub fn due_writes(
        &self,
        connector: &ConnectorName,
        now: DateTime<Utc>,
    ) -> Result<Vec<ItsmWrite>, StoreError> {
        Ok(self
            .writes(Some(connector))?
            .into_iter()
            .filter(|w| w.status == WriteStatus::Pending && w.next_attempt_at <= now)
            .collect())
    }
}

//! Data-integrity issues, by key, in the `integrity` tree; they change
//! together with the tickets they cause ([`Store::commit_integrity`]).

use chrono::{DateTime, Utc};

use super::outbox::StateChange;
use super::tickets::TicketWrite;
use super::{Store, StoreError};
use crate::model::integrity::IntegrityIssue;

pub(super) const TREE: &str = "integrity";

/// Where the alerts themselves are in the `alerts` tree (see
/// [`super::alerts`]).
const ALERT_PREFIX: &[u8] = b"a/";

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

    /// Calls `each` with every stored alert as stored (its key and JSON
    /// bytes), in the order of [`Store::alerts`]: for the data-integrity
    /// index, which reads two fields of each.
    pub fn alerts_scan_raw<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        // The alerts' own key prefix in the `alerts` tree (an earlier
        // version's firing index may be under "f/"); a test checks this
        // reads what `Store::alerts` reads.
        for item in self.alerts.scan_prefix(ALERT_PREFIX) {
            let (key, bytes) = item.map_err(StoreError::from)?;
            each(&key, &bytes)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::model::{AlertEvent, AlertStatus, ConnectorName};

    #[test]
    fn the_raw_alert_scan_reads_every_alert_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let connector: ConnectorName = "monitoring".parse().unwrap();
        let at = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        let events: Vec<AlertEvent> = (0..3)
            .map(|n| AlertEvent {
                source_id: format!("fp-{n}"),
                status: if n == 1 {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Firing
                },
                service: None,
                ci: Some(format!("host-{n}")),
                customer: None,
                severity: None,
                summary: "down".into(),
                starts_at: None,
                ends_at: None,
            })
            .collect();
        store
            .apply_alerts(events.iter().map(|e| (&connector, at, e)))
            .unwrap();
        let mut raw = Vec::new();
        store
            .alerts_scan_raw(|key, bytes| {
                let source = crate::store::alerts::Source::read(key, bytes)?;
                raw.push((source.connector.into_owned(), source.ci.map(Into::into)));
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let alerts: Vec<(String, Option<String>)> = store
            .alerts(None, None)
            .unwrap()
            .into_iter()
            .map(|a| (a.connector.to_string(), a.ci))
            .collect();
        assert_eq!(raw, alerts);
        assert!(!raw.is_empty());
    }
}

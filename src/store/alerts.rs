//! Alerts in the store: one record per connector and source id, the
//! latest state of each alert, in the `alerts` tree under key prefixes:
//! - `a/<connector>\0<source id>`: the alert;
//! - `f/<connector>\0<source id>`: present while it fires, so the
//!   processors read the firing alerts without scanning every alert ever
//!   received. Both are written in one batch.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::model::alert::{AlertChange, AlertState};
use crate::model::{AlertEvent, AlertStatus, ConnectorName};

pub const TREE: &str = "alerts";

const ALERT: &str = "a/";
const FIRING: &str = "f/";

fn key(connector: &ConnectorName, source_id: &str) -> Vec<u8> {
    format!("{ALERT}{connector}\0{source_id}").into_bytes()
}

/// The firing-index key of an alert key.
fn firing_key(key: &[u8]) -> Vec<u8> {
    let mut out = FIRING.as_bytes().to_vec();
    out.extend_from_slice(&key[ALERT.len()..]);
    out
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<AlertState, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        tree: TREE,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// What applying a batch of deliveries did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AlertsApplied {
    /// Alerts whose status changed, with what happened, in order.
    pub changes: Vec<(AlertState, AlertChange)>,
    /// The state after the batch of each alert that fired or resolved in
    /// it, or whose summary or severity changed: everything a notice says
    /// about an alert.
    pub noticeable: Vec<AlertState>,
    /// Deliveries that repeated a known state or were older than it.
    pub unchanged: usize,
}

impl Store {
    /// The alerts firing now (through the firing index).
    pub fn firing_alerts(&self) -> Result<Vec<AlertState>, StoreError> {
        let tree = &self.alerts;
        let mut out = Vec::new();
        for item in tree.scan_prefix(FIRING) {
            let (k, _) = item?;
            let mut alert_key = ALERT.as_bytes().to_vec();
            alert_key.extend_from_slice(&k[FIRING.len()..]);
            if let Some(bytes) = tree.get(&alert_key)? {
                out.push(decode(&alert_key, &bytes)?);
            }
        }
        Ok(out)
    }

    /// One alert by connector and source id.
    pub fn alert(
        &self,
        connector: &ConnectorName,
        source_id: &str,
    ) -> Result<Option<AlertState>, StoreError> {
        let tree = &self.alerts;
        let k = key(connector, source_id);
        tree.get(&k)?.map(|b| decode(&k, &b)).transpose()
    }

    /// Applies deliveries in order, in one batch: each alert's state after
    /// all of them is written once. Idempotent: applying the same
    /// deliveries again changes no status.
    pub fn apply_alerts<'a>(
        &self,
        deliveries: impl IntoIterator<Item = (&'a ConnectorName, DateTime<Utc>, &'a AlertEvent)>,
    ) -> Result<AlertsApplied, StoreError> {
        let tree = &self.alerts;
        let mut states: HashMap<Vec<u8>, AlertState> = HashMap::new();
        let mut noticeable = HashSet::new();
        let mut applied = AlertsApplied::default();
        for (connector, received, event) in deliveries {
            let k = key(connector, &event.source_id);
            if !states.contains_key(&k)
                && let Some(bytes) = tree.get(&k)?
            {
                states.insert(k.clone(), decode(&k, &bytes)?);
            }
            let (next, change) = AlertState::apply(states.get(&k), connector, event, received);
            match change {
                AlertChange::Fired | AlertChange::Resolved => {
                    applied.changes.push((next.clone(), change));
                    noticeable.insert(k.clone());
                }
                AlertChange::Repeated => {
                    applied.unchanged += 1;
                    if states.get(&k).is_some_and(|before| {
                        before.summary != next.summary || before.severity != next.severity
                    }) {
                        noticeable.insert(k.clone());
                    }
                }
                AlertChange::Ignored => applied.unchanged += 1,
            }
            states.insert(k, next);
        }
        // Most journal batches hold no alert: no batch, which sled would
        // apply under its process-wide lock.
        if states.is_empty() {
            return Ok(applied);
        }
        applied.noticeable = noticeable
            .iter()
            .filter_map(|k| states.get(k).cloned())
            .collect();
        let mut batch = sled::Batch::default();
        for (k, state) in states {
            let bytes = serde_json::to_vec(&state)
                .map_err(|source| StoreError::Encode { tree: TREE, source })?;
            match state.status {
                AlertStatus::Firing => batch.insert(firing_key(&k), &[]),
                AlertStatus::Resolved => batch.remove(firing_key(&k)),
            }
            batch.insert(k, bytes);
        }
        tree.apply_batch(batch)?;
        Ok(applied)
    }

    /// Stored alerts, optionally of one connector and status (a scan).
    pub fn alerts(
        &self,
        connector: Option<&ConnectorName>,
        status: Option<AlertStatus>,
    ) -> Result<Vec<AlertState>, StoreError> {
        let tree = &self.alerts;
        let prefix = match connector {
            Some(c) => format!("{ALERT}{c}\0").into_bytes(),
            None => ALERT.as_bytes().to_vec(),
        };
        let mut out = Vec::new();
        for item in tree.scan_prefix(prefix) {
            let (k, bytes) = item?;
            let state = decode(&k, &bytes)?;
            if status.is_none_or(|s| s == state.status) {
                out.push(state);
            }
        }
        Ok(out)
    }
}

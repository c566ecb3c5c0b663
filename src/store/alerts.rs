//! Alerts in the store: one record per connector and source id, the
//! latest state of each alert, in the `alerts` tree under the key
//! `a/<connector>\0<source id>`.
//!
//! The processors read the alerts firing now without a scan of every
//! alert: the store keeps their keys in memory ([`Live`]), read from the
//! tree once, at first use, and kept up to date as deliveries are applied.
//! Earlier versions kept them in the tree as an index under `f/`, one more
//! key written at a random place of the tree each time an alert fired or
//! resolved: about a fifth of applying an alert storm (BENCHMARKS.md).
//! What is left of that index is removed when the firing alerts are read.
//!
//! An alert's value is compact (`Stored`): the engine rewrites it on
//! every change of status, and as JSON (about 400 bytes, a quarter of them
//! field names, four RFC 3339 timestamps) the tree outgrew sled's page
//! cache in an alert storm. Values written as JSON by earlier versions, or
//! by `csmd store import`, are read all the same; `csmd store export`
//! writes every alert as JSON.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::compact::{self, Instant, Value, borrowed, instant, owned};
use super::{Store, StoreError};
use crate::model::alert::{AlertChange, AlertState};
use crate::model::{AlertEvent, AlertStatus, ConnectorName};

pub const TREE: &str = "alerts";

const ALERT: &str = "a/";
/// The firing index of earlier versions.
const FIRING: &str = "f/";

fn key(connector: &ConnectorName, source_id: &str) -> Vec<u8> {
    format!("{ALERT}{connector}\0{source_id}").into_bytes()
}

/// An alert as stored: [`AlertState`] in postcard after the [`COMPACT`](compact::COMPACT)
/// byte, without field names, its instants as seconds and nanoseconds.
/// Fields are only ever added at the end, as postcard has no names.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    connector: Cow<'a, str>,
    #[serde(borrow)]
    source_id: Cow<'a, str>,
    status: AlertStatus,
    #[serde(borrow)]
    summary: Cow<'a, str>,
    #[serde(borrow)]
    ci: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    customer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    severity: Option<Cow<'a, str>>,
    starts_at: Option<Instant>,
    ends_at: Option<Instant>,
    first_seen: Instant,
    last_seen: Instant,
    deliveries: u64,
}

fn encode(state: &AlertState) -> Result<Vec<u8>, StoreError> {
    let stored = Stored {
        connector: Cow::Borrowed(state.connector.as_str()),
        source_id: Cow::Borrowed(&state.source_id),
        status: state.status,
        summary: Cow::Borrowed(&state.summary),
        ci: borrowed(&state.ci),
        service: borrowed(&state.service),
        customer: borrowed(&state.customer),
        severity: borrowed(&state.severity),
        starts_at: state.starts_at.map(instant),
        ends_at: state.ends_at.map(instant),
        first_seen: instant(state.first_seen),
        last_seen: instant(state.last_seen),
        deliveries: state.deliveries,
    };
    compact::encode(TREE, &stored)
}

fn corrupt(key: &[u8], message: String) -> StoreError {
    compact::corrupt(TREE, key, message)
}

/// A stored alert: [`Stored`] when compact, else `T` from JSON.
fn read<'a, T: Deserialize<'a>>(
    key: &[u8],
    bytes: &'a [u8],
) -> Result<Value<Stored<'a>, T>, StoreError> {
    compact::read(TREE, key, bytes)
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<AlertState, StoreError> {
    let stored = match read(key, bytes)? {
        Value::Compact(stored) => stored,
        Value::Json(state) => return Ok(state),
    };
    let at = |instant| compact::date_time(TREE, key, instant);
    Ok(AlertState {
        connector: stored
            .connector
            .parse()
            .map_err(|e: crate::model::IdError| corrupt(key, e.to_string()))?,
        source_id: stored.source_id.into_owned(),
        status: stored.status,
        summary: stored.summary.into_owned(),
        ci: owned(stored.ci),
        service: owned(stored.service),
        customer: owned(stored.customer),
        severity: owned(stored.severity),
        starts_at: stored.starts_at.map(at).transpose()?,
        ends_at: stored.ends_at.map(at).transpose()?,
        first_seen: at(stored.first_seen)?,
        last_seen: at(stored.last_seen)?,
        deliveries: stored.deliveries,
    })
}

/// Who alerted and on which CI, borrowed from a stored value of either
/// encoding without decoding the rest: what the data-integrity index
/// reads of every alert.
#[derive(Debug, Deserialize)]
pub struct Source<'a> {
    #[serde(borrow)]
    pub connector: Cow<'a, str>,
    #[serde(borrow, default)]
    pub ci: Option<Cow<'a, str>>,
}

impl<'a> Source<'a> {
    pub fn read(key: &[u8], bytes: &'a [u8]) -> Result<Source<'a>, StoreError> {
        Ok(match read(key, bytes)? {
            Value::Compact(stored) => Source {
                connector: stored.connector,
                ci: stored.ci,
            },
            Value::Json(source) => source,
        })
    }
}

/// A stored value as JSON, for `csmd store export`: JSON values, and the
/// empty values of an earlier version's firing index, as they are.
pub(super) fn exported<'v>(key: &[u8], value: &'v [u8]) -> Result<Cow<'v, [u8]>, StoreError> {
    compact::exported(TREE, value, || decode(key, value))
}

/// What the store keeps of its alerts in memory, shared by every clone,
/// under the one lock that applying deliveries holds throughout.
#[derive(Debug, Default)]
pub struct Live {
    recent: Recent,
    /// The keys of the alerts firing now, in key order; read from the tree
    /// at first use.
    firing: Option<BTreeSet<Vec<u8>>>,
}

/// The states of the alerts applied last, so an alert delivered again
/// soon (sources repeat firing alerts, and a resolution follows its
/// firing) is not read and decoded from the tree again: most of applying
/// an alert was that read, a page of the tree pulled back from disk when
/// the sled cache holds other trees. Two generations bound the memory:
/// when the newer is full it replaces the older, so alerts used since
/// stay.
#[derive(Debug, Default)]
struct Recent {
    newer: HashMap<Vec<u8>, AlertState>,
    older: HashMap<Vec<u8>, AlertState>,
}

impl Recent {
    /// Alerts in one generation (a few in tests, to see them roll over).
    const GENERATION: usize = if cfg!(test) { 64 } else { 16_384 };

    fn get(&mut self, key: &[u8]) -> Option<AlertState> {
        if let Some(state) = self.newer.get(key) {
            return Some(state.clone());
        }
        let state = self.older.remove(key)?;
        self.put(key.to_vec(), state.clone());
        Some(state)
    }

    fn remove(&mut self, key: &[u8]) {
        self.newer.remove(key);
        self.older.remove(key);
    }

    fn put(&mut self, key: Vec<u8>, state: AlertState) {
        self.newer.insert(key, state);
        if self.newer.len() >= Self::GENERATION {
            self.older = std::mem::take(&mut self.newer);
        }
    }
}

/// A stored alert's status and last delivery, read without building its
/// [`AlertState`] when compact.
fn status_and_last_seen(key: &[u8], bytes: &[u8]) -> Result<(AlertStatus, Instant), StoreError> {
    Ok(match read::<AlertState>(key, bytes)? {
        Value::Compact(stored) => (stored.status, stored.last_seen),
        Value::Json(state) => (state.status, instant(state.last_seen)),
    })
}

/// Whether a stored alert is resolved and was last delivered before
/// `cutoff`.
fn resolved_before(key: &[u8], bytes: &[u8], cutoff: Instant) -> Result<bool, StoreError> {
    let (status, last_seen) = status_and_last_seen(key, bytes)?;
    Ok(status == AlertStatus::Resolved && last_seen < cutoff)
}

/// Alerts removed in one batch when purging.
const PURGE_BATCH: usize = if cfg!(test) { 7 } else { 1000 };

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
    /// The lock on the alerts kept in memory.
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live_alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The keys of the firing alerts in the tree; removes the firing index
    /// of an earlier version.
    fn read_firing_keys(&self) -> Result<BTreeSet<Vec<u8>>, StoreError> {
        let tree = &self.alerts;
        let mut firing = BTreeSet::new();
        for item in tree.scan_prefix(ALERT) {
            let (k, bytes) = item?;
            if status_and_last_seen(&k, &bytes)?.0 == AlertStatus::Firing {
                firing.insert(k.to_vec());
            }
        }
        let mut index = sled::Batch::default();
        for item in tree.scan_prefix(FIRING) {
            index.remove(item?.0);
        }
        tree.apply_batch(index)?;
        Ok(firing)
    }

    /// The alerts firing now. Their keys are read from the tree the first
    /// time, with the lock held so that no delivery is applied meanwhile.
    pub fn firing_alerts(&self) -> Result<Vec<AlertState>, StoreError> {
        let keys: Vec<Vec<u8>> = {
            let mut live = self.live();
            if live.firing.is_none() {
                live.firing = Some(self.read_firing_keys()?);
            }
            live.firing.iter().flatten().cloned().collect()
        };
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(bytes) = self.alerts.get(&k)? {
                let state = decode(&k, &bytes)?;
                // Unless it resolved since the keys were taken.
                if state.status == AlertStatus::Firing {
                    out.push(state);
                }
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
        let mut live = self.live();
        let mut states: HashMap<Vec<u8>, AlertState> = HashMap::new();
        // Alerts whose state the batch changed; an ignored delivery (older
        // than the stored state) writes nothing.
        let mut written = HashSet::new();
        let mut noticeable = HashSet::new();
        let mut applied = AlertsApplied::default();
        for (connector, received, event) in deliveries {
            let k = key(connector, &event.source_id);
            if !states.contains_key(&k) {
                let known = match live.recent.get(&k) {
                    Some(state) => Some(state),
                    None => tree.get(&k)?.map(|bytes| decode(&k, &bytes)).transpose()?,
                };
                if let Some(state) = known {
                    states.insert(k.clone(), state);
                }
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
                AlertChange::Ignored => {
                    applied.unchanged += 1;
                    // A resolution of an alert never seen is recorded.
                    if states.contains_key(&k) {
                        continue;
                    }
                }
            }
            written.insert(k.clone());
            states.insert(k, next);
        }
        // Most journal batches hold no alert: no batch, which sled would
        // apply under its process-wide lock.
        if written.is_empty() {
            return Ok(applied);
        }
        applied.noticeable = noticeable
            .iter()
            .filter_map(|k| states.get(k).cloned())
            .collect();
        let mut batch = sled::Batch::default();
        for k in &written {
            let Some(state) = states.get(k) else { continue };
            batch.insert(k.as_slice(), encode(state)?);
        }
        tree.apply_batch(batch)?;
        // Only what the tree now holds. Firing keys not read yet will be
        // read with this batch in the tree.
        let Live { recent, firing } = &mut *live;
        for (k, state) in states {
            if !written.contains(&k) {
                continue;
            }
            if let Some(firing) = firing {
                match state.status {
                    AlertStatus::Firing => firing.insert(k.clone()),
                    AlertStatus::Resolved => firing.remove(&k),
                };
            }
            recent.put(k, state);
        }
        Ok(applied)
    }

    /// Removes the resolved alerts last delivered before `cutoff`, in
    /// batches; returns how many. Each batch is checked again, and removed,
    /// while deliveries are not applied, so an alert that fires again
    /// meanwhile is kept.
    pub fn purge_resolved_alerts(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let tree = &self.alerts;
        let cutoff = instant(cutoff);
        let mut removed = 0;
        let mut stale = Vec::with_capacity(PURGE_BATCH);
        let mut scan = tree.scan_prefix(ALERT);
        loop {
            let next = scan.next().transpose()?;
            if let Some((k, bytes)) = &next
                && resolved_before(k, bytes, cutoff)?
            {
                stale.push(k.clone());
            }
            if stale.len() < PURGE_BATCH && next.is_some() {
                continue;
            }
            let mut live = self.live();
            let mut batch = sled::Batch::default();
            for k in stale.drain(..) {
                if let Some(bytes) = tree.get(&k)?
                    && resolved_before(&k, &bytes, cutoff)?
                {
                    live.recent.remove(&k);
                    batch.remove(k);
                    removed += 1;
                }
            }
            tree.apply_batch(batch)?;
            if next.is_none() {
                return Ok(removed);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::compact::COMPACT;

    fn event(id: &str, status: AlertStatus) -> AlertEvent {
        AlertEvent {
            source_id: id.into(),
            status,
            service: Some("vpn".into()),
            ci: None,
            customer: None,
            severity: None,
            summary: format!("{id} down"),
            starts_at: Some("2026-11-22T10:00:00Z".parse().unwrap()),
            ends_at: None,
        }
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    /// Applies `events` of connector `mon`, received now, in one batch.
    fn apply(store: &Store, events: &[AlertEvent]) -> AlertsApplied {
        apply_at(store, Utc::now(), events)
    }

    /// Applies `events` of connector `mon`, received `at`, in one batch.
    fn apply_at(store: &Store, at: DateTime<Utc>, events: &[AlertEvent]) -> AlertsApplied {
        let connector: ConnectorName = "mon".parse().unwrap();
        store
            .apply_alerts(events.iter().map(|e| (&connector, at, e)))
            .unwrap()
    }

    #[test]
    fn resolved_alerts_last_delivered_before_the_cutoff_are_purged_and_others_kept() {
        let (_dir, store) = temp_store();
        let connector: ConnectorName = "mon".parse().unwrap();
        let now = Utc::now();
        let long_ago = now - chrono::Duration::days(40);
        // More stale alerts than one purge batch, fired and resolved long
        // ago; one firing since long ago; one resolved long ago but
        // delivered again since.
        let stale: Vec<String> = (0..3 * PURGE_BATCH).map(|i| format!("old-{i}")).collect();
        let firing = |id: &String| event(id, AlertStatus::Firing);
        let resolved = |id: &String| event(id, AlertStatus::Resolved);
        apply_at(
            &store,
            long_ago,
            &stale.iter().map(firing).collect::<Vec<_>>(),
        );
        apply_at(
            &store,
            long_ago,
            &stale.iter().map(resolved).collect::<Vec<_>>(),
        );
        apply_at(
            &store,
            long_ago,
            &[
                event("still-firing", AlertStatus::Firing),
                event("repeated", AlertStatus::Firing),
                event("repeated", AlertStatus::Resolved),
            ],
        );
        apply(&store, &[event("repeated", AlertStatus::Resolved)]);

        let removed = store
            .purge_resolved_alerts(now - chrono::Duration::days(30))
            .unwrap();
        assert_eq!(removed, stale.len());
        let mut left: Vec<String> = store
            .alerts(None, None)
            .unwrap()
            .into_iter()
            .map(|a| a.source_id)
            .collect();
        left.sort();
        assert_eq!(left, ["repeated", "still-firing"]);
        assert_eq!(store.firing_alerts().unwrap().len(), 1);
        assert_eq!(
            store
                .purge_resolved_alerts(now - chrono::Duration::days(30))
                .unwrap(),
            0
        );
        // A purged alert delivered again is a new alert, even though it was
        // among the recent states when it went.
        let applied = apply(&store, &[event("old-0", AlertStatus::Firing)]);
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(applied.changes[0].1, AlertChange::Fired);
        assert_eq!(
            store
                .alert(&connector, "old-0")
                .unwrap()
                .unwrap()
                .deliveries,
            1
        );
    }

    #[test]
    fn the_recent_states_keep_the_alerts_used_since_the_older_generation_went() {
        let mut recent = Recent::default();
        let state = |id: &str| {
            AlertState::apply(
                None,
                &"mon".parse().unwrap(),
                &event(id, AlertStatus::Firing),
                Utc::now(),
            )
            .0
        };
        recent.put(b"kept".to_vec(), state("kept"));
        recent.put(b"dropped".to_vec(), state("dropped"));
        // Two generations roll over; "kept" is used once in each.
        for i in 0..2 * Recent::GENERATION {
            recent.put(format!("a{i}").into_bytes(), state("a"));
            if i % Recent::GENERATION == Recent::GENERATION - 10 {
                assert!(recent.get(b"kept").is_some(), "at {i}");
            }
        }
        assert!(recent.get(b"kept").is_some());
        assert!(recent.get(b"dropped").is_none());
    }

    #[test]
    fn an_alert_no_longer_among_the_recent_states_is_read_from_the_tree() {
        let (_dir, store) = temp_store();
        let apply = |events: &[AlertEvent]| apply(&store, events);
        apply(&[event("first", AlertStatus::Firing)]);
        let others: Vec<AlertEvent> = (0..2 * Recent::GENERATION)
            .map(|i| event(&format!("other-{i}"), AlertStatus::Firing))
            .collect();
        apply(&others);
        let applied = apply(&[event("first", AlertStatus::Resolved)]);
        assert_eq!(applied.changes.len(), 1);
        assert_eq!(applied.changes[0].1, AlertChange::Resolved);
        // And one just applied is read from the recent states alike.
        let applied = apply(&[event("other-7", AlertStatus::Resolved)]);
        assert_eq!(applied.changes[0].1, AlertChange::Resolved);
        assert_eq!(
            store.firing_alerts().unwrap().len(),
            2 * Recent::GENERATION - 1
        );
    }

    #[test]
    fn the_firing_alerts_follow_each_alert_through_repeats_and_resolutions() {
        let (_dir, store) = temp_store();
        let connector: ConnectorName = "mon".parse().unwrap();
        let apply = |events: &[AlertEvent]| apply(&store, events);
        let firing = |ids: &[&str]| {
            let mut found: Vec<String> = store
                .firing_alerts()
                .unwrap()
                .into_iter()
                .map(|a| a.source_id)
                .collect();
            found.sort();
            assert_eq!(found, ids);
        };
        let later = |id: &str, status| AlertEvent {
            starts_at: Some("2026-11-22T11:00:00Z".parse().unwrap()),
            ..event(id, status)
        };
        // Read before any alert is applied, and kept up to date since.
        firing(&[]);
        // Fired, repeated and resolved within one batch; fired and
        // repeated; resolved unseen.
        apply(&[
            event("a", AlertStatus::Firing),
            event("a", AlertStatus::Firing),
            event("a", AlertStatus::Resolved),
            event("b", AlertStatus::Firing),
            event("b", AlertStatus::Firing),
            event("c", AlertStatus::Resolved),
        ]);
        firing(&["b"]);
        assert_eq!(store.alert(&connector, "b").unwrap().unwrap().deliveries, 2);
        assert_eq!(
            store.alert(&connector, "c").unwrap().unwrap().status,
            AlertStatus::Resolved
        );
        // Repeated in later batches, then a new occurrence of "a".
        apply(&[event("b", AlertStatus::Firing)]);
        apply(&[later("a", AlertStatus::Firing)]);
        firing(&["a", "b"]);
        // A late delivery of an older occurrence changes nothing.
        let applied = apply(&[event("a", AlertStatus::Resolved)]);
        assert_eq!(applied.unchanged, 1);
        firing(&["a", "b"]);
        assert_eq!(store.alert(&connector, "a").unwrap().unwrap().deliveries, 1);
        apply(&[
            later("a", AlertStatus::Resolved),
            event("b", AlertStatus::Resolved),
        ]);
        firing(&[]);
        assert_eq!(store.alert(&connector, "b").unwrap().unwrap().deliveries, 4);
    }

    #[test]
    fn the_firing_alerts_are_read_again_from_the_tree_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let ids = |alerts: Vec<AlertState>| -> Vec<String> {
            alerts.into_iter().map(|a| a.source_id).collect()
        };
        {
            let store = Store::open(dir.path()).unwrap();
            apply(
                &store,
                &[
                    event("a", AlertStatus::Firing),
                    event("b", AlertStatus::Firing),
                    event("c", AlertStatus::Firing),
                ],
            );
            apply(&store, &[event("b", AlertStatus::Resolved)]);
            assert_eq!(ids(store.firing_alerts().unwrap()), ["a", "c"]);
        }
        let store = Store::open(dir.path()).unwrap();
        // Applied before the firing alerts are first read: read with them.
        apply(
            &store,
            &[
                event("c", AlertStatus::Resolved),
                event("d", AlertStatus::Firing),
            ],
        );
        assert_eq!(ids(store.firing_alerts().unwrap()), ["a", "d"]);
    }

    /// An alert with every field set, its instants with nanoseconds, and
    /// Alertmanager's "zero" end (year 1).
    fn full_state() -> AlertState {
        AlertState {
            connector: "alertmanager".parse().unwrap(),
            source_id: "5c1f7e2a9b3d4e6f".into(),
            status: AlertStatus::Resolved,
            summary: "Instance par-edge-01 down: no scrape for 5 minutes".into(),
            ci: Some("par-edge-01".into()),
            service: Some("svc-backbone-paris".into()),
            customer: Some("acme".into()),
            severity: Some("critical".into()),
            starts_at: Some("2026-11-22T10:00:00.123456789Z".parse().unwrap()),
            ends_at: Some("0001-01-01T00:00:00Z".parse().unwrap()),
            first_seen: "2026-11-22T10:00:01.5Z".parse().unwrap(),
            last_seen: "2026-11-22T10:05:01.000000001Z".parse().unwrap(),
            deliveries: 7,
        }
    }

    #[test]
    fn a_compact_value_decodes_to_exactly_the_alert_and_is_less_than_half_its_json() {
        let state = full_state();
        let bytes = encode(&state).unwrap();
        assert_eq!(decode(b"a/k", &bytes).unwrap(), state);
        let json = serde_json::to_vec(&state).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
        let none = AlertState {
            ci: None,
            service: None,
            customer: None,
            severity: None,
            starts_at: None,
            ends_at: None,
            ..state
        };
        assert_eq!(decode(b"a/k", &encode(&none).unwrap()).unwrap(), none);
        // Damage is an error naming the record, not a panic.
        let err = decode(b"a/k", &bytes[..bytes.len() / 2]).unwrap_err();
        assert!(
            err.to_string().starts_with("record a/k in tree alerts"),
            "{err}"
        );
    }

    #[test]
    fn an_alert_stored_as_json_by_an_earlier_version_is_read_and_rewritten_compact() {
        let (_dir, store) = temp_store();
        let connector: ConnectorName = "mon".parse().unwrap();
        let mut old = full_state();
        old.connector = connector.clone();
        old.source_id = "a1".into();
        old.status = AlertStatus::Firing;
        old.ends_at = None;
        let k = key(&connector, "a1");
        let json = serde_json::to_vec(&old).unwrap();
        store.alerts.insert(&k, json.as_slice()).unwrap();
        // And in the firing index of that version, which goes once the
        // firing alerts are read.
        let indexed = [FIRING.as_bytes(), &k[ALERT.len()..]].concat();
        store.alerts.insert(&indexed, &[]).unwrap();
        assert_eq!(store.firing_alerts().unwrap(), [old.clone()]);
        assert_eq!(store.alerts.scan_prefix(FIRING).count(), 0);
        assert_eq!(store.alert(&connector, "a1").unwrap(), Some(old.clone()));
        let source = Source::read(&k, &json).unwrap();
        assert_eq!(
            (&*source.connector, source.ci.as_deref()),
            ("mon", Some("par-edge-01"))
        );
        // Exported as it is.
        assert_eq!(exported(&k, &json).unwrap().as_ref(), json.as_slice());

        let applied = apply(
            &store,
            &[AlertEvent {
                starts_at: old.starts_at,
                ..event("a1", AlertStatus::Resolved)
            }],
        );
        assert_eq!(applied.changes.len(), 1);
        let now = store.alerts.get(&k).unwrap().unwrap();
        assert_eq!(now.first(), Some(&COMPACT));
        let state = store.alert(&connector, "a1").unwrap().unwrap();
        assert_eq!(state.status, AlertStatus::Resolved);
        assert_eq!(state.first_seen, old.first_seen);
        // The integrity index and the dump read the compact value too.
        let source = Source::read(&k, &now).unwrap();
        assert_eq!(&*source.connector, "mon");
        assert_eq!(
            exported(&k, &now).unwrap().as_ref(),
            serde_json::to_vec(&state).unwrap().as_slice()
        );
        assert!(store.firing_alerts().unwrap().is_empty());
    }
}

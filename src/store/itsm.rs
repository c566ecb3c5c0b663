//! ITSM records in the store: one tree per kind, keyed by the upstream's
//! record id. Applying keeps the newest copy by its update time, so a
//! replayed or out-of-order copy changes nothing.
//! Incidents are stored compact, every other kind as JSON ([`stored`]).
//!
//! Change requests also get a history (`change_history`): one entry per
//! stored version whose state or planned window differs from the copy it
//! replaces. It holds the versions csmd received: polling reads only the
//! version current at poll time, so states a change passed through between
//! two polls are seen only when the ITSM pushes each update (webhook).

use chrono::{DateTime, Utc};

use super::{Store, StoreError, TypedTree};
use crate::model::itsm::{Change, ChangeTransition, ItsmRecord, Rescheduled};

mod stored;
pub(super) use stored::{INCIDENTS, exported};

/// The tree of change request histories.
pub(super) const CHANGE_HISTORY: &str = "change_history";

/// What applying a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Records stored because they were new or newer.
    pub changed: usize,
    /// Records ignored because the store already had them or a newer copy.
    pub unchanged: usize,
    /// The kinds of the changed records ([`ItsmRecord::kind_bit`]).
    pub kinds: u16,
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
        let mut history: Option<sled::Tree> = None;
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
            let stored = match tree.get(record.id().as_bytes())? {
                Some(bytes) => Some(stored::decode(name, record.id().as_bytes(), &bytes)?),
                None => None,
            };
            let newer = stored.as_ref().is_none_or(|stored| {
                record.updated_at() >= stored.updated_at() && record != stored
            });
            if newer {
                // The history entry goes first: if the record's write is
                // lost, the replay finds the entry under the same key and
                // writes only the record.
                if let ItsmRecord::Change(change) = record {
                    let previous = match &stored {
                        Some(ItsmRecord::Change(previous)) => Some(previous),
                        _ => None,
                    };
                    if let Some(transition) = change_transition(change, previous, Utc::now()) {
                        let history = match &history {
                            Some(tree) => tree,
                            None => history.insert(self.db.open_tree(CHANGE_HISTORY)?),
                        };
                        record_transition(history, &transition)?;
                    }
                }
                let bytes = stored::encode(name, record)?;
                tree.insert(record.id().as_bytes(), bytes)?;
                applied.changed += 1;
                applied.kinds |= record.kind_bit();
            } else {
                applied.unchanged += 1;
            }
        }
        Ok(applied)
    }

    /// A change request's history, oldest first (by the ITSM's time of
    /// each version).
    pub fn change_history(&self, id: &str) -> Result<Vec<ChangeTransition>, StoreError> {
        let history =
            TypedTree::<ChangeTransition>::new(CHANGE_HISTORY, self.db.open_tree(CHANGE_HISTORY)?);
        history
            .raw()
            .scan_prefix(history_prefix(id))
            .map(|item| {
                let (key, bytes) = item?;
                history.decode(&key, &bytes)
            })
            .collect()
    }

    /// One ITSM record by tree (`"incidents"`, …) and id.
    pub fn itsm_record(
        &self,
        tree: &'static str,
        id: &str,
    ) -> Result<Option<ItsmRecord>, StoreError> {
        match self.itsm_tree(tree)?.get(id.as_bytes())? {
            Some(bytes) => stored::decode(tree, id.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of an ITSM tree, by id (a scan).
    pub fn itsm_records(&self, tree: &'static str) -> Result<Vec<ItsmRecord>, StoreError> {
        self.itsm_scan(tree)?.collect()
    }

    /// Every record of an ITSM tree, by id, decoded one at a time: for a
    /// scan that keeps few of them (the incidents tree can be large).
    pub fn itsm_scan(
        &self,
        tree: &'static str,
    ) -> Result<impl Iterator<Item = Result<ItsmRecord, StoreError>>, StoreError> {
        Ok(self.itsm_tree(tree)?.iter().map(move |item| {
            let (key, bytes) = item?;
            stored::decode(tree, &key, &bytes)
        }))
    }

    /// Calls `each` with every record of an ITSM tree as stored (its key
    /// and JSON bytes), by id: for a scan that decodes only a few fields
    /// of each record (the data-integrity index), which costs a fraction of
    /// decoding the whole [`ItsmRecord`]. Not for incidents, which are
    /// stored compact.
    pub fn itsm_scan_raw<E: From<StoreError>>(
        &self,
        tree: &'static str,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for item in self.itsm_tree(tree)?.iter() {
            let (key, bytes) = item.map_err(StoreError::from)?;
            each(&key, &bytes)?;
        }
        Ok(())
    }

    /// Number of records in an ITSM tree (a scan: for tests and tools).
    pub fn itsm_count(&self, tree: &'static str) -> Result<usize, StoreError> {
        Ok(self.itsm_tree(tree)?.len())
    }

    /// A poller's stored position, by key.
    pub fn cursor(&self, key: &str) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.journal.get(super::journal::key::cursor(key))?)
    }

    /// How far the engine has applied the journal: as last stored, kept
    /// in memory since the store opened, so reading it costs no lookup.
    pub fn engine_position(&self) -> u64 {
        *self.engine_applied.borrow()
    }

    /// Stores the engine's position and tells [`Store::engine_applied`].
    pub fn set_engine_position(&self, seq: u64) -> Result<(), StoreError> {
        self.meta.insert(ENGINE_POSITION, &seq.to_be_bytes())?;
        self.engine_applied.send_replace(seq);
        Ok(())
    }

    /// The engine's position, updated each time it is stored: what the
    /// journal waits on to pace its senders to the engine.
    pub fn engine_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.engine_applied.subscribe()
    }
}

const ENGINE_POSITION: &[u8] = b"engine_position";

pub(super) fn stored_engine_position(meta: &sled::Tree) -> Result<u64, StoreError> {
    Ok(meta
        .get(ENGINE_POSITION)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// What `change` changed against the `previous` copy stored, if it moved
/// to another state or another planned window.
fn change_transition(
    change: &Change,
    previous: Option<&Change>,
    now: DateTime<Utc>,
) -> Option<ChangeTransition> {
    let rescheduled = previous
        .map(|p| Rescheduled {
            before: p.planned_window(),
            after: change.planned_window(),
        })
        .filter(|r| r.before != r.after);
    let from = previous.map(|p| p.state);
    if from == Some(change.state) && rescheduled.is_none() {
        return None;
    }
    Some(ChangeTransition {
        change: change.id.clone(),
        number: change.number.clone(),
        from,
        to: change.state,
        rescheduled,
        at: change.updated_at,
        recorded_at: now,
    })
}

/// The key of a history entry: the change's id, then the version's time
/// and its state code, each in an order-preserving big-endian encoding, so
/// entries sort by change then time, and two versions stamped within the
/// same second (the upstream's resolution) sort along the lifecycle, whose
/// state codes ascend. The same version always gets the same key.
fn history_key(transition: &ChangeTransition) -> Vec<u8> {
    let sortable = |n: i64| ((n as u64) ^ (1 << 63)).to_be_bytes();
    let mut key = history_prefix(&transition.change);
    key.extend_from_slice(&sortable(transition.at.timestamp_millis()));
    key.extend_from_slice(&sortable(transition.to.code()));
    key
}

/// What every history key of the change `id` begins with: the id and a
/// zero byte, so that the entries of `c1` are not among those of `c`.
fn history_prefix(id: &str) -> Vec<u8> {
    // Room for the time and state code `history_key` appends.
    let mut prefix = Vec::with_capacity(id.len() + 17);
    prefix.extend_from_slice(id.as_bytes());
    prefix.push(0);
    prefix
}

/// Writes an entry unless its key is taken: the first time a version was
/// applied is what it changed. A replay (after a crash, or of an equally
/// stamped copy) compares against a later stored copy and would otherwise
/// rewrite the entry with the wrong `from`.
fn record_transition(tree: &sled::Tree, transition: &ChangeTransition) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(transition).map_err(|source| StoreError::Encode {
        tree: CHANGE_HISTORY,
        source,
    })?;
    // Err(CompareAndSwapError) only says the key was taken.
    let _ = tree.compare_and_swap(history_key(transition), None::<&[u8]>, Some(bytes))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::model::itsm::{ChangeState, PlannedWindow};

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + seconds, 0).unwrap()
    }

    fn version(state: ChangeState, updated: i64, start: i64) -> ItsmRecord {
        ItsmRecord::Change(Change {
            id: "c1".into(),
            number: "CHG0000001".into(),
            state,
            change_type: None,
            short_description: None,
            planned_start: Some(at(start)),
            planned_end: Some(at(start + 3600)),
            work_start: None,
            work_end: None,
            close_code: None,
            ci: None,
            billable: false,
            customer_requested: false,
            closed_at: None,
            updated_at: at(updated),
        })
    }

    fn steps(store: &Store) -> Vec<(Option<ChangeState>, ChangeState, DateTime<Utc>, bool)> {
        store
            .change_history("c1")
            .unwrap()
            .into_iter()
            .map(|t| (t.from, t.to, t.at, t.rescheduled.is_some()))
            .collect()
    }

    #[test]
    fn each_new_state_or_window_is_recorded_once_in_the_itsms_order() {
        use ChangeState::*;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .apply_itsm(&[version(New, 10, 1000), version(Scheduled, 20, 1000)])
            .unwrap();
        // Another field changed: stored, but no transition.
        let mut described = version(Scheduled, 30, 1000);
        if let ItsmRecord::Change(c) = &mut described {
            c.short_description = Some("reworded".into());
        }
        assert_eq!(store.apply_itsm(&[described]).unwrap().changed, 1);
        // Rescheduled, then a replay and an older copy: nothing more.
        store.apply_itsm(&[version(Scheduled, 40, 5000)]).unwrap();
        let replay = store
            .apply_itsm(&[version(Scheduled, 40, 5000), version(Implement, 15, 1000)])
            .unwrap();
        assert_eq!(replay.changed, 0);
        // Two versions within the same second keep the lifecycle's order.
        store
            .apply_itsm(&[version(Implement, 50, 5000), version(Review, 50, 5000)])
            .unwrap();
        assert_eq!(
            steps(&store),
            [
                (None, New, at(10), false),
                (Some(New), Scheduled, at(20), false),
                (Some(Scheduled), Scheduled, at(40), true),
                (Some(Scheduled), Implement, at(50), false),
                (Some(Implement), Review, at(50), false),
            ]
        );
        let moved = store.change_history("c1").unwrap()[2].rescheduled.unwrap();
        assert_eq!(
            (moved.before, moved.after),
            (
                PlannedWindow {
                    start: Some(at(1000)),
                    end: Some(at(4600))
                },
                PlannedWindow {
                    start: Some(at(5000)),
                    end: Some(at(8600))
                }
            )
        );
        assert!(
            store.change_history("c").unwrap().is_empty(),
            "by id, not prefix"
        );
    }

    #[test]
    fn a_replay_after_a_crash_between_history_and_record_keeps_the_first_entry() {
        use ChangeState::*;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.apply_itsm(&[version(New, 10, 1000)]).unwrap();
        // The entry of the Scheduled version was written, its record not.
        let ItsmRecord::Change(scheduled) = version(Scheduled, 20, 1000) else {
            unreachable!()
        };
        let ItsmRecord::Change(new) = version(New, 10, 1000) else {
            unreachable!()
        };
        let tree = store.db.open_tree(CHANGE_HISTORY).unwrap();
        let entry = change_transition(&scheduled, Some(&new), at(21)).unwrap();
        record_transition(&tree, &entry).unwrap();
        store.apply_itsm(&[version(Scheduled, 20, 1000)]).unwrap();
        let history = store.change_history("c1").unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1], entry, "written once, not rewritten");
    }
}

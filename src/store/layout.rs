//! Where the trees live. Every tree is in the store's sled database but
//! the outbox, which has one of its own in the store's `outbox`
//! directory, with a small page cache.
//!
//! The outbox is written as fast as notices are queued (their rendered
//! bodies, packed) and read back once, when they are sent. In the one page
//! cache it pushed out what the engine and the planners read over and over
//! (the alerts, the ITSM records): in an alert storm, a third of applying
//! an alert was reading its page back from disk (BENCHMARKS.md). Queuing
//! makes the outbox durable alone, without waiting for the rest.
//!
//! Nothing needs the outbox and another tree to change together: a
//! processor keeps its state in the outbox, beside the messages it queues
//! (`store::outbox`), and whatever else it reads comes back from the
//! journal after a crash.

use std::path::{Path, PathBuf};

use super::{StoreError, outbox};

/// The outbox's database, inside the store's directory (so that a copy or
/// a rename of the store takes it along).
pub const OUTBOX_DIR: &str = "outbox";

/// The outbox database's page cache: its messages are read once.
pub const OUTBOX_CACHE_MIB: u64 = 4;

/// The directory of the outbox's database of the store in `store`.
pub fn outbox_dir(store: &Path) -> PathBuf {
    store.join(OUTBOX_DIR)
}

/// The schema version from which the outbox has a database of its own.
pub const OWN_DB_SINCE: u32 = 3;

/// Whether the tree named `name` lives in the outbox's database (from
/// schema version [`OWN_DB_SINCE`] on).
pub fn in_outbox_db(name: &[u8]) -> bool {
    name == outbox::TREE.as_bytes()
}

/// Records copied per batch when moving the outbox.
const MOVE_BATCH: usize = 10_000;

/// Moves the outbox tree of a schema 2 store from `main` into its own
/// database: copied whole and flushed there first, then the schema says 3
/// (`mark`), then the old tree goes. Interrupted before `mark`, the store
/// is still at version 2 and the copy starts over; after it, what is left
/// of the old tree is removed by [`drop_moved`] at the next open.
pub(super) fn move_outbox(
    main: &sled::Db,
    outbox_db: &sled::Db,
    mark: impl FnOnce() -> Result<(), StoreError>,
) -> Result<usize, StoreError> {
    let to = outbox_db.open_tree(outbox::TREE)?;
    to.clear()?;
    let mut moved = 0;
    if main.tree_names().iter().any(|n| in_outbox_db(n)) {
        let mut batch = sled::Batch::default();
        let mut batched = 0;
        for item in main.open_tree(outbox::TREE)?.iter() {
            let (key, value) = item?;
            batch.insert(key, value);
            batched += 1;
            moved += 1;
            if batched == MOVE_BATCH {
                to.apply_batch(std::mem::take(&mut batch))?;
                batched = 0;
            }
        }
        to.apply_batch(batch)?;
    }
    outbox_db.flush()?;
    mark()?;
    drop_moved(main)?;
    Ok(moved)
}

/// Removes the outbox tree of the main database, if one is left of a
/// move.
pub(super) fn drop_moved(main: &sled::Db) -> Result<(), StoreError> {
    if main.tree_names().iter().any(|n| in_outbox_db(n)) {
        main.drop_tree(outbox::TREE)?;
        main.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::outbox::MessageStatus;
    use crate::store::outbox::tests::message;
    use crate::store::{SCHEMA_KEY, SCHEMA_VERSION, Store, open_db, stored_schema_version};

    fn schema_of(main: &sled::Db) -> Option<u32> {
        stored_schema_version(&main.open_tree("meta").unwrap()).unwrap()
    }

    fn set_schema(main: &sled::Db, schema: u32) {
        let meta = main.open_tree("meta").unwrap();
        meta.insert(SCHEMA_KEY, &schema.to_be_bytes()).unwrap();
    }

    /// A store at schema 2 as the earlier csmd left it: a queued message
    /// and a processor's state in the outbox tree of its one database.
    /// Returns the outbox's records.
    fn store_at_schema_2(dir: &Path) -> Vec<(sled::IVec, sled::IVec)> {
        let store = Store::open(dir).unwrap();
        let state = crate::store::outbox::StateChange::Put {
            name: "disruption/acme".into(),
            value: b"{}".to_vec(),
        };
        store
            .queue_messages(vec![state], vec![message("notice")])
            .unwrap();
        drop(store);
        let outbox_db = open_db(&outbox_dir(dir)).unwrap();
        let records: Vec<_> = outbox_db
            .open_tree(outbox::TREE)
            .unwrap()
            .iter()
            .map(Result::unwrap)
            .collect();
        drop(outbox_db);
        std::fs::remove_dir_all(outbox_dir(dir)).unwrap();
        let main = open_db(dir).unwrap();
        let tree = main.open_tree(outbox::TREE).unwrap();
        for (key, value) in &records {
            tree.insert(key, value).unwrap();
        }
        set_schema(&main, 2);
        main.flush().unwrap();
        assert_eq!(records.len(), 3, "a message, its queue entry, a state");
        records
    }

    /// Writes `records` into the outbox's database, as a move would.
    fn write_outbox(dir: &Path, records: &[(sled::IVec, sled::IVec)]) {
        let outbox_db = open_db(&outbox_dir(dir)).unwrap();
        let tree = outbox_db.open_tree(outbox::TREE).unwrap();
        for (key, value) in records {
            tree.insert(key, value).unwrap();
        }
        outbox_db.flush().unwrap();
    }

    fn outbox_records(dir: &Path) -> Vec<(sled::IVec, sled::IVec)> {
        let outbox_db = open_db(&outbox_dir(dir)).unwrap();
        let tree = outbox_db.open_tree(outbox::TREE).unwrap();
        tree.iter().map(Result::unwrap).collect()
    }

    fn main_has_an_outbox(dir: &Path) -> bool {
        let main = open_db(dir).unwrap();
        main.tree_names().iter().any(|n| in_outbox_db(n))
    }

    #[test]
    fn a_store_at_schema_2_has_its_outbox_moved_whole_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let records = store_at_schema_2(dir.path());

        let store = Store::open(dir.path()).unwrap();
        let queued = store.outbox_message(&message("notice").id).unwrap();
        assert_eq!(queued.map(|m| m.status), Some(MessageStatus::Pending));
        assert_eq!(store.outbox_states("disruption/").unwrap().len(), 1);
        // Known: not queued twice.
        assert!(
            store
                .queue_messages(vec![], vec![message("notice")])
                .unwrap()
                .is_empty()
        );
        drop(store);

        assert_eq!(outbox_records(dir.path()), records);
        assert!(!main_has_an_outbox(dir.path()));
        let main = open_db(dir.path()).unwrap();
        assert_eq!(schema_of(&main), Some(SCHEMA_VERSION));
    }

    #[test]
    fn a_store_of_another_schema_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        for schema in [1, SCHEMA_VERSION + 1] {
            let main = open_db(dir.path()).unwrap();
            set_schema(&main, schema);
            main.flush().unwrap();
            drop(main);
            match Store::open(dir.path()) {
                Err(crate::store::StoreError::Schema { found, .. }) => assert_eq!(found, schema),
                Err(other) => panic!("not a schema error: {other}"),
                Ok(_) => panic!("a store at schema {schema} was opened"),
            }
            assert!(!outbox_dir(dir.path()).exists());
            assert_eq!(schema_of(&open_db(dir.path()).unwrap()), Some(schema));
        }
    }

    #[test]
    fn a_move_interrupted_before_the_schema_changed_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let records = store_at_schema_2(dir.path());
        // A partial copy, and a key the old tree does not have.
        let half = [records[0].clone(), (b"mhalf-written".into(), b"{}".into())];
        write_outbox(dir.path(), &half);

        drop(Store::open(dir.path()).unwrap());
        assert_eq!(outbox_records(dir.path()), records);
        assert!(!main_has_an_outbox(dir.path()));
    }

    #[test]
    fn what_is_left_of_a_move_after_the_schema_changed_is_removed_and_the_outbox_kept() {
        let dir = tempfile::tempdir().unwrap();
        let records = store_at_schema_2(dir.path());
        // Copied and marked, the old tree not yet dropped; and a message
        // queued since.
        write_outbox(dir.path(), &records);
        write_outbox(dir.path(), &[(b"mlater".into(), b"{}".into())]);
        let main = open_db(dir.path()).unwrap();
        set_schema(&main, SCHEMA_VERSION);
        main.flush().unwrap();
        drop(main);

        drop(Store::open(dir.path()).unwrap());
        let kept = outbox_records(dir.path());
        assert_eq!(kept.len(), records.len() + 1);
        assert!(kept.iter().any(|(k, _)| k.as_ref() == b"mlater"));
        assert!(!main_has_an_outbox(dir.path()));
    }
}

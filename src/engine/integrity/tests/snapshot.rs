//! The index saved beside the store: read back, it finds what a rebuilt
//! index finds and follows the journal from where it was saved; a file
//! that is corrupt, truncated, of another configuration or store, or
//! behind a trimmed journal is refused, and the index is built from the
//! store with the same findings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::engine::integrity::index::snapshot::{self, FILE_NAME, Fingerprint, Origin};
use crate::engine::integrity::index::{Changed, Thing, Touched};
use crate::metrics::Metrics;
use crate::model::Event;
use crate::store::SCHEMA_VERSION;
use crate::store::journal::{Append, Journal};

/// acme's customer file lists one CI of its own.
fn customers_with_own_install_base() -> Vec<Customer> {
    let mut customers = customers();
    customers[0].install_base = toml::from_str::<Customer>(
        "id = \"acme\"\nname = \"acme corp\"\n\n[[install_base]]\nci = \"own-ce\"\nservice = \"PE2\"\n",
    )
    .unwrap()
    .install_base;
    customers
}

fn origin(store: &Store, customers: &[Customer]) -> Origin {
    Origin {
        store: store.id().unwrap(),
        schema: SCHEMA_VERSION,
        configuration: Fingerprint::of(customers),
    }
}

fn things(index: &Index) -> Vec<(String, Thing)> {
    index
        .things()
        .map(|(key, thing)| (key.to_string(), thing.clone()))
        .collect()
}

/// `record`, an hour newer.
fn later(mut record: ItsmRecord) -> ItsmRecord {
    let at = now() + Duration::hours(1);
    match &mut record {
        ItsmRecord::InstallBaseItem(r) => r.updated_at = at,
        ItsmRecord::Subscription(r) => r.updated_at = at,
        ItsmRecord::Ci(r) => r.updated_at = at,
        _ => {}
    }
    record
}

/// An install-base item under its CI and a service.
fn item_with_service(id: &str, ci: &str, service: Option<&str>) -> ItsmRecord {
    let mut record = item(id, "acc-1", ci, "installed");
    if let ItsmRecord::InstallBaseItem(i) = &mut record {
        i.service = service.map(Into::into);
    }
    record
}

#[test]
fn an_index_read_back_from_its_snapshot_is_the_index_that_was_saved() {
    let mut records = estate();
    records.push(item_with_service("ib-both", "ci-pe2", Some("VPN Gold")));
    let world = World::new(&records);
    world.alert("mystery-host");
    world.alert("PE1");
    let customers = customers_with_own_install_base();
    let mut saved = Index::build(&world.store, &customers).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let origin = origin(&world.store, &customers);
    let size = snapshot::write(&path, &saved, origin, 7).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);

    let (mut read, position) = snapshot::read(&path, &origin).unwrap();
    assert_eq!(position, 7);
    assert_eq!(things(&read), things(&saved));
    assert_eq!(read.changes, saved.changes);
    assert_eq!(read.charged, saved.charged);
    let found = described(everything_found(&read));
    assert_eq!(found, described(everything_found(&saved)));
    assert!(
        found.iter().any(|f| f.contains("mystery-host")),
        "{found:?}"
    );

    // Both follow the same updates alike: the index read back knows where
    // each record was placed (an item under its CI and a service too), and
    // that PE1 is monitored.
    let updates = [
        later(item_with_service("ib-both", "ci-pe2", None)),
        later(item("ib-pe3", "acc-1", "ci-pe1", "installed")),
        later(subscription("sub-ghost", "ba-1", "pe3", "cancelled")),
        later(subscription("sub-pe1", "ba-1", "pe1", "cancelled")),
    ];
    world.store.apply_itsm(&updates).unwrap();
    for index in [&mut read, &mut saved] {
        let mut touched = Touched::default();
        for record in updates.iter().cloned() {
            index.update(Changed::Record(record), &mut touched);
        }
        assert!(!index.needs_rebuild());
        let mut touched: Vec<String> = touched.things.into_iter().map(Into::into).collect();
        touched.sort();
        assert_eq!(touched, ["ghost", "pe1", "pe2", "pe3", "vpn gold"]);
    }
    assert_eq!(things(&read), things(&saved));
    assert_eq!(
        described(everything_found(&read)),
        described(everything_found(&saved))
    );
    assert!(read.monitors("monitoring", "pe1"));
}

#[test]
fn a_snapshot_is_read_only_with_its_store_schema_and_configuration() {
    let world = World::new(&estate());
    let customers = customers();
    let index = Index::build(&world.store, &customers).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let origin = origin(&world.store, &customers);
    snapshot::write(&path, &index, origin, 0).unwrap();
    let refused = |other: Origin| snapshot::read(&path, &other).err().map(|e| e.to_string());

    let schema = Origin {
        schema: SCHEMA_VERSION + 1,
        ..origin
    };
    assert!(refused(schema).unwrap().contains("schema version"));
    let store = Origin {
        store: World::new(&[]).store.id().unwrap(),
        ..origin
    };
    assert!(refused(store).unwrap().contains("another store"));
    let configuration = Origin {
        configuration: Fingerprint::of(&customers_with_own_install_base()),
        ..origin
    };
    assert!(refused(configuration).unwrap().contains("install base"));
    assert_eq!(refused(origin), None);
}

/// Appends `events` to the store's journal as a connector would, and lets
/// the engine apply them.
async fn through_the_journal(store: &Store, events: Vec<Event>) {
    let (journal, committer) = Journal::start(
        store,
        Arc::new(Metrics::new()),
        std::time::Duration::from_secs(60),
    )
    .unwrap();
    journal
        .append(Append {
            connector: "itsm".parse().unwrap(),
            delivery_id: None,
            events,
            cursor: None,
        })
        .await
        .unwrap();
    crate::engine::catch_up(store, Default::default())
        .await
        .unwrap();
    drop(journal);
    committer.join().unwrap();
}

/// A reconciliation at start from the snapshot at `path`; checks that it
/// finds what one over an index built from the store finds.
/// Saves the index afterwards, as the daemon does.
fn restart(world: &World, config: &Config, path: &Path) -> Reconciled {
    let mut reconciler = Reconciler::with_snapshot(path.to_path_buf());
    let done = reconciler.resume(&world.store, config, now()).unwrap();
    reconciler.save(&world.store);
    let rebuilt = Reconciler::new().full(&world.store, config, now()).unwrap();
    assert_eq!(
        (rebuilt.findings, rebuilt.raised, rebuilt.resolved),
        (done.findings, 0, 0),
        "a rebuilt index finds something else"
    );
    done
}

fn is_open(store: &Store, key: &str) -> bool {
    store
        .integrity_issue(key)
        .unwrap()
        .is_some_and(|i| i.status != IssueStatus::Resolved)
}

/// A store with the estate, a configuration, and the snapshot the first
/// start saved.
fn started() -> (World, tempfile::TempDir, Config, PathBuf) {
    let world = World::new(&estate());
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let path = dir.path().join(FILE_NAME);
    let mut first = Reconciler::with_snapshot(path.clone());
    assert!(
        first.resume(&world.store, &config, now()).unwrap().rebuilt,
        "no snapshot yet: built from the store"
    );
    first.save(&world.store);
    assert!(path.exists());
    (world, dir, config, path)
}

#[tokio::test]
async fn a_restart_reads_the_snapshot_and_follows_the_journal_from_there() {
    let (world, _dir, config, path) = started();
    assert!(is_open(&world.store, "ci-not-billed/pe2"));
    let again = restart(&world, &config, &path);
    assert!(!again.rebuilt, "read from the snapshot");
    assert!(again.full);

    // While csmd was stopped (or after its last save): pe1's subscription
    // was cancelled, PE2 got one, and an unknown host alerted.
    through_the_journal(
        &world.store,
        vec![
            Event::Itsm(later(subscription("sub-pe1", "ba-1", "pe1", "cancelled"))),
            Event::Itsm(later(subscription("sub-pe2", "ba-1", "PE2", "active"))),
            Event::Alert(alert_on("new-host")),
        ],
    )
    .await;
    let done = restart(&world, &config, &path);
    assert!(!done.rebuilt, "read from the snapshot");
    assert_eq!((done.raised, done.resolved), (2, 1));
    assert!(is_open(&world.store, "ci-not-billed/pe1"));
    assert!(!is_open(&world.store, "ci-not-billed/pe2"));
    assert!(is_open(&world.store, "monitored-unknown-ci/new-host"));
}

#[test]
fn a_corrupt_or_truncated_snapshot_is_rebuilt_from_the_store() {
    let (world, _dir, config, path) = started();
    let good = std::fs::read(&path).unwrap();
    let mut flipped = good.clone();
    let middle = flipped.len() - 20;
    flipped[middle] ^= 0x40;
    let header_only = good[..good.len().min(100)].to_vec();
    for broken in [
        flipped,
        good[..good.len() - 1].to_vec(),
        header_only,
        good[..10].to_vec(),
        b"not a snapshot at all, but long enough to hold a header of one and more".repeat(2),
        Vec::new(),
    ] {
        std::fs::write(&path, &broken).unwrap();
        let done = restart(&world, &config, &path);
        assert!(done.rebuilt, "{} bytes read back", broken.len());
        // The rebuild saved a good one again.
        assert_eq!(std::fs::read(&path).unwrap().len(), good.len());
    }
    std::fs::remove_file(&path).unwrap();
    assert!(restart(&world, &config, &path).rebuilt);
}

#[test]
fn a_snapshot_of_other_customer_accounts_is_rebuilt_from_the_store() {
    let (world, dir, _, path) = started();
    let mut moved = config(dir.path(), "");
    moved.customers[1].billing_account = Some("B-ACME".into());
    assert!(restart(&world, &moved, &path).rebuilt);
}

#[tokio::test]
async fn a_snapshot_behind_a_trimmed_journal_is_rebuilt_from_the_store() {
    let (world, _dir, config, path) = started();
    through_the_journal(
        &world.store,
        vec![Event::Itsm(later(subscription(
            "sub-pe1",
            "ba-1",
            "pe1",
            "cancelled",
        )))],
    )
    .await;
    through_the_journal(&world.store, vec![Event::Alert(alert_on("new-host"))]).await;
    // Entry 1, which the snapshot did not read, is gone.
    let trimmed = world
        .store
        .trim_journal(2, Utc::now() + Duration::seconds(1))
        .unwrap();
    assert_eq!(trimmed, 1);
    let done = restart(&world, &config, &path);
    assert!(done.rebuilt);
    assert!(is_open(&world.store, "ci-not-billed/pe1"));
    assert!(is_open(&world.store, "monitored-unknown-ci/new-host"));
}

#[tokio::test]
async fn a_snapshot_ahead_of_its_store_is_rebuilt_from_the_store() {
    let (world, _dir, config, path) = started();
    through_the_journal(&world.store, vec![Event::Alert(alert_on("new-host"))]).await;
    // Read back, followed to entry 1 and saved there.
    assert!(!restart(&world, &config, &path).rebuilt);
    // The store is put back to before that entry was applied.
    world.store.set_engine_position(0).unwrap();
    assert!(restart(&world, &config, &path).rebuilt);
}

#[test]
fn a_snapshot_damaged_behind_its_checksum_never_panics() {
    let world = World::new(&estate());
    world.alert("mystery-host");
    let customers = customers_with_own_install_base();
    let index = Index::build(&world.store, &customers).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let origin = origin(&world.store, &customers);
    snapshot::write(&path, &index, origin, 0).unwrap();
    let good = std::fs::read(&path).unwrap();
    assert!(snapshot::read(&path, &origin).is_ok());
    for at in 0..good.len() {
        let mut bad = good.clone();
        bad[at] ^= 0x81;
        std::fs::write(&path, snapshot::resealed(bad)).unwrap();
        // Refused, or read as some other index: either way, no panic.
        let _ = snapshot::read(&path, &origin);
    }
}

#[test]
fn a_reload_keeps_the_index_unless_the_customers_accounts_changed() {
    let world = World::new(&estate());
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut reconciler = Reconciler::new();
    assert!(
        reconciler
            .resume(&world.store, &config, now())
            .unwrap()
            .rebuilt
    );
    let reloaded = reconciler.resume(&world.store, &config, now()).unwrap();
    assert!(reloaded.full && !reloaded.rebuilt);
    let mut moved = super::config(dir.path(), "");
    moved.customers[1].itsm_account = Some("ACC1".into());
    assert!(
        reconciler
            .resume(&world.store, &moved, now())
            .unwrap()
            .rebuilt
    );
}

//! Each rule with cases that must and must not find an issue, and the
//! issue lifecycle (grace, resolution, reopening) with an injected clock.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};

mod snapshot;

use super::index::Index;
use super::rules::{self, Checking};
use super::*;
use crate::config::Customer;
use crate::model::itsm::{
    Account, BillingAccount, Change, ChangeState, Charge, Ci, InstallBaseItem, ItsmRecord,
};
use crate::model::{AlertEvent, AlertStatus, ConnectorName};

fn now() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn customer(id: &str, itsm: &str, billing: &str, roles: &str) -> Customer {
    toml::from_str(&format!(
        "id = \"{id}\"\nname = \"{id} corp\"\nitsm_account = \"{itsm}\"\nbilling_account = \"{billing}\"\n\n\
         [[contact]]\nname = \"Ops\"\nemail = \"ops@{id}.example\"\nroles = [{roles}]\n"
    ))
    .unwrap()
}

fn customers() -> Vec<Customer> {
    vec![
        customer("acme", "ACC1", "B-ACME", "\"maintenance\", \"reports\""),
        customer("globex", "ACC2", "B-GLOBEX", "\"maintenance\", \"reports\""),
    ]
}

fn ci(id: &str, name: &str, status: i64) -> ItsmRecord {
    ItsmRecord::Ci(Ci {
        id: id.into(),
        name: name.into(),
        class: None,
        install_status: Some(status),
        operational_status: None,
        account: None,
        updated_at: now(),
    })
}

fn account(id: &str, number: &str) -> ItsmRecord {
    ItsmRecord::Account(Account {
        id: id.into(),
        number: Some(number.into()),
        name: number.into(),
        updated_at: now(),
    })
}

fn item(id: &str, account: &str, ci: &str, state: &str) -> ItsmRecord {
    ItsmRecord::InstallBaseItem(InstallBaseItem {
        id: id.into(),
        account: Some(account.into()),
        ci: Some(ci.into()),
        service: None,
        state: Some(state.into()),
        uninstall_date: None,
        updated_at: now(),
    })
}

fn subscription(id: &str, account: &str, ci: &str, status: &str) -> ItsmRecord {
    ItsmRecord::Subscription(crate::model::itsm::Subscription {
        id: id.into(),
        account: Some(account.into()),
        product: Some("VPN-100M".into()),
        ci: Some(ci.into()),
        service: None,
        quantity: Some(1.0),
        start: Some(now() - Duration::days(100)),
        end: None,
        status: Some(status.into()),
        updated_at: now(),
    })
}

fn change(number: &str, billable: bool, closed_days_ago: i64) -> ItsmRecord {
    ItsmRecord::Change(Change {
        id: format!("id-{number}"),
        number: number.into(),
        state: ChangeState::Closed,
        change_type: Some("normal".into()),
        short_description: None,
        planned_start: None,
        planned_end: None,
        work_start: None,
        work_end: None,
        close_code: Some("successful".into()),
        ci: Some("ci-pe1".into()),
        billable,
        customer_requested: false,
        closed_at: Some(now() - Duration::days(closed_days_ago)),
        updated_at: now(),
    })
}

fn charge(id: &str, change: &str) -> ItsmRecord {
    ItsmRecord::Charge(Charge {
        id: id.into(),
        account: Some("B-ACME".into()),
        change: Some(change.into()),
        description: None,
        amount: Some(450.0),
        charged_at: Some(now()),
        updated_at: now(),
    })
}

/// A store holding the CMDB's pe1 (acme's, billed to acme) and `records`.
struct World {
    _dir: tempfile::TempDir,
    store: Store,
}

impl World {
    fn new(records: &[ItsmRecord]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut all = vec![
            account("acc-1", "ACC1"),
            account("acc-2", "ACC2"),
            ItsmRecord::BillingAccount(BillingAccount {
                id: "ba-1".into(),
                number: Some("B-ACME".into()),
                name: None,
                updated_at: now(),
            }),
            ci("ci-pe1", "PE1", 1),
            item("ib-pe1", "acc-1", "ci-pe1", "installed"),
            subscription("sub-pe1", "ba-1", "pe1", "active"),
        ];
        all.extend(records.iter().cloned());
        store.apply_itsm(&all).unwrap();
        World { _dir: dir, store }
    }

    fn alert(&self, ci: &str) {
        let connector: ConnectorName = "monitoring".parse().unwrap();
        let event = alert_on(ci);
        self.store
            .apply_alerts([(&connector, now(), &event)])
            .unwrap();
    }

    /// The keys every rule finds.
    fn findings(&self) -> BTreeSet<String> {
        let index = Index::build(&self.store, &customers()).unwrap();
        everything_found(&index)
            .into_iter()
            .map(|f| f.key)
            .collect()
    }
}

/// Every finding of every rule over `index`.
fn everything_found(index: &Index) -> Vec<crate::model::integrity::Finding> {
    let checking = Checking {
        index,
        now: now(),
        charge_within: Duration::days(30),
    };
    let mut found: Vec<_> = index
        .things()
        .flat_map(|(key, thing)| checking.thing(key, thing))
        .collect();
    found.extend(index.changes.keys().filter_map(|n| checking.change(n)));
    found
}

fn keys(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn systems_that_agree_have_no_issue() {
    assert_eq!(World::new(&[]).findings(), keys(&[]));
}

#[test]
fn an_installed_ci_without_an_active_subscription_is_not_billed() {
    let world = World::new(&[
        ci("ci-pe2", "pe2", 1),
        item("ib-pe2", "acc-1", "ci-pe2", "installed"),
        // Cancelled: does not bill.
        subscription("sub-pe2", "ba-1", "pe2", "cancelled"),
    ]);
    assert_eq!(world.findings(), keys(&["ci-not-billed/pe2"]));
    // An uninstalled item is not in use.
    let world = World::new(&[
        ci("ci-pe2", "pe2", 1),
        item("ib-pe2", "acc-1", "ci-pe2", "retired"),
    ]);
    assert_eq!(world.findings(), keys(&[]));
}

#[test]
fn a_subscription_for_something_no_install_base_item_names_is_billed_for_nothing() {
    let world = World::new(&[subscription("sub-x", "ba-1", "ghost-router", "active")]);
    assert_eq!(
        world.findings(),
        keys(&["billed-not-in-install-base/ghost-router"])
    );
}

#[test]
fn billing_a_retired_ci_or_uninstalled_items_is_billing_after_decommission() {
    let world = World::new(&[
        ci("ci-old", "old-fw", 7),
        item("ib-old", "acc-1", "ci-old", "installed"),
        subscription("sub-old", "ba-1", "old-fw", "active"),
    ]);
    assert_eq!(
        world.findings(),
        keys(&["billed-after-decommission/old-fw"])
    );
    let world = World::new(&[
        ci("ci-gone", "gone-sw", 1),
        item("ib-gone", "acc-1", "ci-gone", "retired"),
        subscription("sub-gone", "ba-1", "gone-sw", "active"),
    ]);
    assert_eq!(
        world.findings(),
        keys(&["billed-after-decommission/gone-sw"])
    );
    // Its subscription ended: nothing billed, nothing wrong.
    let world = World::new(&[
        ci("ci-old", "old-fw", 7),
        subscription("sub-old", "ba-1", "old-fw", "terminated"),
    ]);
    assert_eq!(world.findings(), keys(&[]));
}

#[test]
fn a_ci_used_by_one_customer_and_billed_to_another_is_a_customer_mismatch() {
    let world = World::new(&[
        ci("ci-pe3", "pe3", 1),
        item("ib-pe3", "acc-1", "ci-pe3", "installed"),
        // Billed to globex's account number (from its customer file).
        subscription("sub-pe3", "B-GLOBEX", "pe3", "active"),
    ]);
    assert_eq!(world.findings(), keys(&["customer-mismatch/pe3"]));
}

#[test]
fn an_alerting_host_the_cmdb_does_not_know_is_monitored_but_unknown() {
    let world = World::new(&[]);
    world.alert("mystery-host");
    world.alert("PE1");
    assert_eq!(
        world.findings(),
        keys(&["monitored-unknown-ci/mystery-host"])
    );
}

#[test]
fn a_billable_change_closed_beyond_the_delay_without_a_charge_is_not_billed() {
    let world = World::new(&[
        change("CHG001", true, 40),
        change("CHG002", true, 40),
        charge("ch-2", "CHG002"),
        change("CHG003", true, 10),
        change("CHG004", false, 40),
    ]);
    assert_eq!(
        world.findings(),
        keys(&["billable-change-not-billed/CHG001"])
    );
}

#[test]
fn a_customer_without_maintenance_or_reports_contacts_misses_them() {
    let found: Vec<String> = rules::contacts(&customer("initech", "A", "B", "\"primary\""))
        .into_iter()
        .map(|f| f.key)
        .collect();
    assert_eq!(
        found,
        [
            "contact-missing/initech/maintenance",
            "contact-missing/initech/reports"
        ]
    );
    assert!(rules::contacts(&customers()[0]).is_empty());
}

/// A configuration directory with `integrity` as its `[integrity]` body.
fn config(dir: &Path, integrity: &str) -> Config {
    let connectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    std::fs::create_dir_all(dir.join("customers")).unwrap();
    for (id, itsm, billing) in [("acme", "ACC1", "B-ACME"), ("globex", "ACC2", "B-GLOBEX")] {
        std::fs::write(
            dir.join(format!("customers/{id}.toml")),
            format!(
                "id = \"{id}\"\nname = \"{id} corp\"\nitsm_account = \"{itsm}\"\nbilling_account = \"{billing}\"\n\n\
                 [[contact]]\nname = \"Ops\"\nemail = \"ops@{id}.example\"\nroles = [\"maintenance\", \"reports\"]\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("csmd.toml"),
        format!(
            "[daemon]\ndata_dir = \"data\"\nconnector_dirs = [\"{}\"]\n\n\
             [email]\nfrom = \"CSM <csm@example.net>\"\n\n[integrity]\n{integrity}\n",
            connectors.display()
        ),
    )
    .unwrap();
    crate::config::load(&dir.join("csmd.toml")).unwrap()
}

#[test]
fn an_issue_is_raised_after_its_grace_resolved_when_fixed_and_reopened_when_back() {
    let world = World::new(&[
        ci("ci-pe2", "pe2", 1),
        item("ib-pe2", "acc-1", "ci-pe2", "installed"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[integrity.rules.ci-not-billed]\ngrace = \"1h\"\n",
    );
    let store = &world.store;
    let status = || {
        store
            .integrity_issue("ci-not-billed/pe2")
            .unwrap()
            .map(|i| (i.status, i.occurrences))
    };
    let mut reconciler = Reconciler::new();

    let done = reconciler.full(store, &config, now()).unwrap();
    assert_eq!((done.raised, done.resolved), (0, 0));
    assert_eq!(status(), Some((IssueStatus::Pending, 0)));
    // Still there at the end of its grace: raised.
    let done = reconciler
        .incremental(store, &config, now() + Duration::hours(1))
        .unwrap();
    assert_eq!(done.raised, 1);
    assert_eq!(status(), Some((IssueStatus::Open, 1)));
    let issue = store.integrity_issue("ci-not-billed/pe2").unwrap().unwrap();
    assert_eq!(issue.customer.as_ref().map(|c| c.as_str()), Some("acme"));
    assert!(
        issue.evidence["billing"].contains("no active subscription"),
        "{issue:?}"
    );

    // Billed at last: resolved.
    store
        .apply_itsm(&[subscription("sub-pe2", "ba-1", "pe2", "active")])
        .unwrap();
    let done = reconciler
        .full(store, &config, now() + Duration::hours(2))
        .unwrap();
    assert_eq!(done.resolved, 1);
    assert_eq!(status(), Some((IssueStatus::Resolved, 1)));

    // Cancelled again: the same issue is raised again, without a new grace.
    let mut cancelled = subscription("sub-pe2", "ba-1", "pe2", "cancelled");
    if let ItsmRecord::Subscription(s) = &mut cancelled {
        s.updated_at = now() + Duration::hours(3);
    }
    store.apply_itsm(&[cancelled]).unwrap();
    let done = reconciler
        .full(store, &config, now() + Duration::hours(3))
        .unwrap();
    assert_eq!(done.raised, 1);
    assert_eq!(status(), Some((IssueStatus::Open, 2)));
}

#[test]
fn a_finding_gone_within_its_grace_is_never_raised() {
    let world = World::new(&[subscription("sub-x", "ba-1", "ghost", "active")]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[integrity.rules.billed-not-in-install-base]\ngrace = \"1d\"\n",
    );
    let mut reconciler = Reconciler::new();
    reconciler.full(&world.store, &config, now()).unwrap();
    let key = "billed-not-in-install-base/ghost";
    assert_eq!(
        world.store.integrity_issue(key).unwrap().map(|i| i.status),
        Some(IssueStatus::Pending)
    );
    let mut ended = subscription("sub-x", "ba-1", "ghost", "cancelled");
    if let ItsmRecord::Subscription(s) = &mut ended {
        s.updated_at = now() + Duration::hours(1);
    }
    world.store.apply_itsm(&[ended]).unwrap();
    let done = reconciler
        .full(&world.store, &config, now() + Duration::hours(2))
        .unwrap();
    assert_eq!((done.raised, done.resolved), (0, 0));
    assert_eq!(world.store.integrity_issue(key).unwrap(), None);
}

#[test]
fn a_rule_switched_off_finds_nothing() {
    let world = World::new(&[subscription("sub-x", "ba-1", "ghost", "active")]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[integrity.rules.billed-not-in-install-base]\nenabled = false\n",
    );
    let done = Reconciler::new()
        .full(&world.store, &config, now())
        .unwrap();
    assert_eq!(done.findings, 0);
    assert!(world.store.integrity_issues().unwrap().is_empty());
}

/// `[integrity]` with tickets through an ITSM connector that reads nothing.
fn ticketing(reopen: &str) -> String {
    let disabled: String = [
        "accounts",
        "contacts",
        "cis",
        "install_base",
        "incidents",
        "changes",
        "change_cis",
        "problems",
        "problem_tasks",
    ]
    .iter()
    .map(|s| format!("{s} = {{ enabled = false }}\n"))
    .collect();
    format!(
        "writeback = \"itsm\"\nreopen = \"{reopen}\"\n\n\
         [[connector]]\nname = \"itsm\"\nprofile = \"servicenow\"\nbase_url = \"http://127.0.0.1:9\"\n\
         [connector.auth]\nkind = \"bearer\"\ntoken = {{ env = \"PATH\" }}\n[connector.streams]\n{disabled}"
    )
}

/// Raises, resolves and raises again the issue of a CI that is billed,
/// then not; returns the queued ticket writes.
fn flap(reopen: &str) -> Vec<crate::model::itsm::ItsmWrite> {
    let world = World::new(&[
        ci("ci-pe2", "pe2", 1),
        item("ib-pe2", "acc-1", "ci-pe2", "installed"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &ticketing(reopen));
    let mut reconciler = Reconciler::new();
    reconciler.full(&world.store, &config, now()).unwrap();
    for (hour, status) in [(1, "active"), (2, "cancelled")] {
        let mut sub = subscription("sub-pe2", "ba-1", "pe2", status);
        if let ItsmRecord::Subscription(s) = &mut sub {
            s.updated_at = now() + Duration::hours(hour);
        }
        world.store.apply_itsm(&[sub]).unwrap();
        reconciler
            .full(&world.store, &config, now() + Duration::hours(hour))
            .unwrap();
    }
    let issue = world
        .store
        .integrity_issue("ci-not-billed/pe2")
        .unwrap()
        .unwrap();
    assert_eq!(
        (issue.status, issue.occurrences),
        (IssueStatus::Ticketed, 2)
    );
    world
        .store
        .writes(None)
        .unwrap()
        .into_iter()
        .filter(|w| {
            w.fields["short_description"]
                .as_str()
                .is_some_and(|t| t.contains("pe2"))
        })
        .collect()
}

#[test]
fn a_resolved_issue_seen_again_reopens_its_ticket_or_opens_another() {
    let same = flap("same");
    assert_eq!(same.len(), 1, "one ticket: {same:?}");
    let notes: Vec<&str> = same[0]
        .updates
        .iter()
        .map(|u| u["work_notes"].as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].starts_with("Resolved by csmd"), "{notes:?}");
    assert!(notes[1].starts_with("Reopened by csmd"), "{notes:?}");
    assert_eq!(same[0].updates[0]["state"], "6");
    assert_eq!(same[0].updates[1]["state"], "2");

    let new = flap("new");
    assert_eq!(new.len(), 2, "a second ticket: {new:?}");
    assert!(new[1].key.ends_with("-2"), "{:?}", new[1].key);
    assert_eq!(new[0].updates.len(), 1, "the first ticket was resolved");
}

/// The records of `tree` as stored.
fn stored(store: &Store, tree: &'static str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    store
        .itsm_scan_raw(tree, |_, bytes| {
            out.push(bytes.to_vec());
            Ok::<_, StoreError>(())
        })
        .unwrap();
    out
}

#[test]
fn the_lite_decoding_reads_what_the_full_decoding_reads() {
    use super::lite;
    let named = |mut record: ItsmRecord, name: &str| {
        if let ItsmRecord::Ci(c) = &mut record {
            c.name = name.into();
            c.install_status = None;
        }
        record
    };
    let mut uninstalled = item("ib-2", "acc-\"2\"", "ci-pe1", "retired");
    if let ItsmRecord::InstallBaseItem(i) = &mut uninstalled {
        i.uninstall_date = Some(now());
        i.service = Some("VPN Gold\\n".into());
    }
    let mut bare = item("ib-3", "acc-1", "x", "installed");
    if let ItsmRecord::InstallBaseItem(i) = &mut bare {
        (i.account, i.ci, i.state) = (None, None, None);
    }
    let mut ended = subscription("sub-2", "ba-1", "Été \u{1F600}", "Active");
    if let ItsmRecord::Subscription(s) = &mut ended {
        s.end = Some(now() - Duration::days(1));
        s.status = None;
        s.product = Some("tab\there".into());
    }
    let world = World::new(&[
        ci("ci-2", "  Router \"East\" ", 7),
        named(ci("ci-3", "x", 1), "\u{00C9}t\u{00E9} \u{1F600}"),
        uninstalled,
        bare,
        ended,
        subscription("sub-3", "ba-1", "pe1", "cancelled"),
    ]);
    let store = &world.store;
    let mut seen = 0;
    for bytes in stored(store, "cis") {
        let ItsmRecord::Ci(full) = serde_json::from_slice(&bytes).unwrap() else {
            panic!("not a CI")
        };
        let lite: lite::Ci<'_> = serde_json::from_slice(&bytes).unwrap();
        let of = lite::Ci::of(&full);
        assert_eq!(
            (&*lite.kind, &*lite.id, &*lite.name, lite.install_status),
            (&*of.kind, &*of.id, &*of.name, of.install_status)
        );
        assert_eq!(
            (&*lite.name, lite.install_status),
            (&*full.name, full.install_status)
        );
        seen += 1;
    }
    for bytes in stored(store, "install_base") {
        let ItsmRecord::InstallBaseItem(full) = serde_json::from_slice(&bytes).unwrap() else {
            panic!("not an item")
        };
        let lite: lite::InstallBaseItem<'_> = serde_json::from_slice(&bytes).unwrap();
        let of = lite::InstallBaseItem::of(&full);
        let fields = |i: &lite::InstallBaseItem<'_>| {
            (
                i.kind.to_string(),
                i.id.to_string(),
                i.account.as_deref().map(str::to_owned),
                i.ci.as_deref().map(str::to_owned),
                i.service.as_deref().map(str::to_owned),
                i.state.as_deref().map(str::to_owned),
                i.in_use(),
            )
        };
        assert_eq!(fields(&lite), fields(&of));
        assert_eq!(lite.account.as_deref(), full.account.as_deref());
        assert_eq!(lite.service.as_deref(), full.service.as_deref());
        seen += 1;
    }
    for bytes in stored(store, "subscriptions") {
        let ItsmRecord::Subscription(full) = serde_json::from_slice(&bytes).unwrap() else {
            panic!("not a subscription")
        };
        let lite: lite::Sub<'_> = serde_json::from_slice(&bytes).unwrap();
        let of = lite::Sub::of(&full);
        let fields = |s: &lite::Sub<'_>| {
            (
                s.kind.to_string(),
                s.id.to_string(),
                s.account.as_deref().map(str::to_owned),
                s.product.as_deref().map(str::to_owned),
                s.ci.as_deref().map(str::to_owned),
                s.service.as_deref().map(str::to_owned),
                s.start,
                s.end,
                s.status.as_deref().map(str::to_owned),
            )
        };
        assert_eq!(fields(&lite), fields(&of));
        assert_eq!(lite.product.as_deref(), full.product.as_deref());
        assert_eq!(lite.ci.as_deref(), full.ci.as_deref());
        let whenever = [
            now(),
            now() - Duration::days(400),
            now() + Duration::days(400),
        ];
        for at in whenever {
            let lite_active = lite::status_active(lite.status.as_deref())
                && lite.start.is_none_or(|s| s <= at)
                && lite.end.is_none_or(|e| e > at);
            assert_eq!(lite_active, full.is_active(at), "{full:?} at {at}");
        }
        seen += 1;
    }
    assert_eq!(seen, 3 + 3 + 3);
}

/// The records of a small estate with one of each disagreement.
fn estate() -> Vec<ItsmRecord> {
    vec![
        ci("ci-pe2", "PE2", 1),
        item("ib-pe2", "acc-1", "ci-pe2", "installed"),
        ci("ci-pe3", "pe3", 7),
        item("ib-pe3", "acc-2", "ci-pe3", "installed"),
        subscription("sub-pe3", "ba-1", "pe3", "active"),
        subscription("sub-ghost", "ba-1", "ghost", "active"),
        change("CHG0001", true, 40),
        change("CHG0002", true, 40),
        charge("chg-1", "CHG0002"),
    ]
}

fn described(found: Vec<crate::model::integrity::Finding>) -> BTreeSet<String> {
    found.into_iter().map(|f| format!("{f:?}")).collect()
}

#[test]
fn an_index_kept_up_to_date_finds_what_a_rebuilt_one_finds() {
    let world = World::new(&estate());
    world.alert("mystery-host");
    let mut kept = Index::build(&world.store, &customers()).unwrap();
    let later = |mut record: ItsmRecord| {
        match &mut record {
            ItsmRecord::InstallBaseItem(r) => r.updated_at = now() + Duration::hours(1),
            ItsmRecord::Subscription(r) => r.updated_at = now() + Duration::hours(1),
            ItsmRecord::Ci(r) => r.updated_at = now() + Duration::hours(1),
            _ => {}
        }
        record
    };
    let changes = [
        later(subscription("sub-pe1", "ba-1", "pe1", "cancelled")),
        later(item("ib-pe3", "acc-2", "ci-pe3", "retired")),
        later(subscription("sub-pe2", "ba-1", "PE2", "active")),
        item("ib-new", "acc-2", "ci-new", "installed"),
        ci("ci-new", "New-CI", 1),
        charge("chg-2", "CHG0001"),
    ];
    world.store.apply_itsm(&changes).unwrap();
    let mut touched = super::index::Touched::default();
    for record in changes {
        kept.update(super::index::Changed::Record(record), &mut touched);
    }
    // The item named ci-new by sys_id before the CI arrived: a rebuild
    // would put it under the CI's name.
    assert!(kept.needs_rebuild());
    let rebuilt = Index::build(&world.store, &customers()).unwrap();
    assert!(!rebuilt.needs_rebuild());
    let (kept, rebuilt) = (everything_found(&kept), everything_found(&rebuilt));
    assert_eq!(
        described(kept.clone())
            .into_iter()
            .filter(|f| !f.contains("ci-new"))
            .collect::<BTreeSet<_>>(),
        described(rebuilt.clone())
            .into_iter()
            .filter(|f| !f.contains("new-ci") && !f.contains("ci-new"))
            .collect::<BTreeSet<_>>()
    );
    assert!(kept.iter().any(|f| f.key == "ci-not-billed/pe1"));
    assert!(!kept.iter().any(|f| f.key == "ci-not-billed/pe2"));
    assert!(
        !kept
            .iter()
            .any(|f| f.key == "billable-change-not-billed/CHG0001")
    );
}

#[test]
fn updates_that_a_rebuild_would_read_the_same_way_keep_the_index() {
    let world = World::new(&estate());
    let mut kept = Index::build(&world.store, &customers()).unwrap();
    let mut touched = super::index::Touched::default();
    let mut cancelled = subscription("sub-pe1", "ba-1", "pe1", "cancelled");
    if let ItsmRecord::Subscription(s) = &mut cancelled {
        s.updated_at = now() + Duration::hours(1);
    }
    world
        .store
        .apply_itsm(std::slice::from_ref(&cancelled))
        .unwrap();
    kept.update(super::index::Changed::Record(cancelled), &mut touched);
    assert!(!kept.needs_rebuild());
    let rebuilt = Index::build(&world.store, &customers()).unwrap();
    assert_eq!(
        described(everything_found(&kept)),
        described(everything_found(&rebuilt))
    );
    // A CI renamed leaves its items under the old name until they change.
    let mut renamed = ci("ci-pe1", "pe1-new", 1);
    if let ItsmRecord::Ci(c) = &mut renamed {
        c.updated_at = now() + Duration::hours(1);
    }
    kept.update(super::index::Changed::Record(renamed), &mut touched);
    assert!(kept.needs_rebuild());
}

#[test]
fn the_scheduled_full_run_finds_what_a_full_run_from_the_store_finds() {
    let world = World::new(&estate());
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut reconciler = Reconciler::new();
    // Without an index yet, it builds one.
    let first = reconciler.review(&world.store, &config, now()).unwrap();
    assert!(first.full);
    assert!(first.findings > 0);
    let cold = reconciler.full(&world.store, &config, now()).unwrap();
    let warm = reconciler.review(&world.store, &config, now()).unwrap();
    assert_eq!(warm.findings, cold.findings);
    assert_eq!((warm.raised, warm.resolved, warm.writes), (0, 0, 0));
    assert_eq!(first.findings, cold.findings);
}

/// A firing alert on host `ci`.
fn alert_on(ci: &str) -> AlertEvent {
    AlertEvent {
        source_id: format!("fp-{ci}"),
        status: AlertStatus::Firing,
        service: None,
        ci: Some(ci.into()),
        customer: None,
        severity: None,
        summary: "down".into(),
        starts_at: None,
        ends_at: None,
    }
}

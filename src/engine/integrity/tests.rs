//! Each rule with cases that must and must not find an issue, and the
//! issue lifecycle (grace, resolution, reopening) with an injected clock.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};

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
        let event = AlertEvent {
            source_id: format!("fp-{ci}"),
            status: AlertStatus::Firing,
            service: None,
            ci: Some(ci.into()),
            customer: None,
            severity: None,
            summary: "down".into(),
            starts_at: None,
            ends_at: None,
        };
        self.store
            .apply_alerts([(&connector, now(), &event)])
            .unwrap();
    }

    /// The keys every rule finds.
    fn findings(&self) -> BTreeSet<String> {
        let customers = customers();
        let index = Index::build(&self.store, &customers).unwrap();
        let checking = Checking {
            index: &index,
            now: now(),
            charge_within: Duration::days(30),
        };
        let mut keys: BTreeSet<String> = index
            .things()
            .flat_map(|(key, thing)| checking.thing(key, thing))
            .map(|f| f.key)
            .collect();
        keys.extend(
            index
                .changes
                .keys()
                .filter_map(|n| checking.change(n))
                .map(|f| f.key),
        );
        keys
    }
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

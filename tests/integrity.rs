//! Data-integrity reconciliation end to end, against the ServiceNow
//! simulator: an alerting host the CMDB does not know becomes an issue with
//! one "Data Integrity" ticket; once the CI is in the CMDB the issue is
//! resolved and its ticket noted and resolved. The ticket is created once,
//! even when the daemon is killed between the instance creating it and csmd
//! storing its id. A restarted daemon reads back the index it saved instead
//! of building it from the store, and follows what arrived since.

mod common;
mod itsm;
mod sim;

use std::time::Duration;

use common::{
    ConfigDir, Daemon, MONITORING_TOKEN, PATIENCE, TestApp, add_monitoring_connector, bearer,
};
use serde_json::{Value, json};
use sim::servicenow::{Fault, Simulator};

const INCIDENT_FIELDS: &[&str] = &[
    "number",
    "short_description",
    "description",
    "category",
    "impact",
    "urgency",
    "assignment_group",
    "state",
    "close_code",
    "close_notes",
    "correlation_id",
    "work_notes",
];

async fn instance() -> Simulator {
    let sn = Simulator::builder()
        .table(
            "cmdb_ci",
            &[
                "name",
                "sys_class_name",
                "install_status",
                "operational_status",
                "company",
            ],
        )
        .table("incident", INCIDENT_FIELDS)
        .basic_user(itsm::USER, itsm::PASSWORD)
        .now(itsm::EPOCH)
        .start()
        .await;
    sn.insert(
        "cmdb_ci",
        json!({"name": "pe1.par", "install_status": "1", "sys_updated_on": itsm::at(1)}),
    );
    sn
}

/// The ITSM connector reading the CMDB, monitoring, and tickets for every
/// issue through the ITSM.
fn config(sn: &Simulator) -> ConfigDir {
    let mut config = itsm::Connector::new(sn).streams(&["cis"]).config();
    add_monitoring_connector(&mut config);
    config.extra += "\n[integrity]\nwriteback = \"itsm\"\nassignment_group = \"CMDB Quality\"\n";
    config
}

async fn alert(api: &common::Api, host: &str) {
    let body = json!({"version": "4", "status": "firing", "receiver": "csmd", "groupKey": "g",
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [{"status": "firing", "fingerprint": format!("fp-{host}"),
                    "labels": {"alertname": "Down", "instance": format!("{host}:9100")},
                    "annotations": {"summary": "down"},
                    "startsAt": "2026-11-22T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}]});
    let reply = api
        .post_webhook("monitoring", &bearer(MONITORING_TOKEN), body.to_string())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

async fn issue(api: &common::Api, key: &str) -> Option<Value> {
    let reply = api.admin_get("/api/v1/integrity").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["issues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key)
        .cloned()
}

/// Starts csmd against `sn`, lets it sync and alert on the unknown host
/// "mystery-01"; returns its configuration, the daemon and the issue once
/// it is ticketed.
async fn ticketed(sn: &Simulator) -> (ConfigDir, Daemon, Value) {
    let mut config = config(sn).on_free_port();
    config.write();
    let daemon = Daemon::start(&mut config, &[]).await;
    itsm::first_sync(&daemon.api).await;
    alert(&daemon.api, "mystery-01").await;
    let raised = wait_for_status(&daemon.api, KEY, "ticketed").await;
    (config, daemon, raised)
}

async fn wait_for_status(api: &common::Api, key: &str, status: &str) -> Value {
    common::wait_until(&format!("{key} {status}"), PATIENCE, || async {
        issue(api, key).await.is_some_and(|i| i["status"] == status)
    })
    .await;
    issue(api, key).await.unwrap()
}

fn tickets(sn: &Simulator, correlation: &str) -> Vec<Value> {
    sn.records("incident")
        .into_iter()
        .filter(|r| r["correlation_id"] == correlation)
        .collect()
}

const KEY: &str = "monitored-unknown-ci/mystery-01";

#[tokio::test]
async fn an_issue_gets_one_ticket_which_is_resolved_when_the_systems_agree() {
    let sn = instance().await;
    let app = TestApp::start(config(&sn)).await;
    itsm::first_sync(&app.api).await;

    alert(&app.api, "mystery-01").await;
    alert(&app.api, "pe1.par").await;
    let raised = wait_for_status(&app.api, KEY, "ticketed").await;
    let ticket = raised["ticket"].as_str().unwrap().to_string();
    assert!(ticket.starts_with("csmd-di-"), "{raised}");
    assert!(
        raised["evidence"]["monitoring"]
            .as_str()
            .unwrap()
            .contains("monitoring alerted on mystery-01"),
        "{raised}"
    );
    // The CMDB knows pe1.par: no issue for it.
    assert!(
        issue(&app.api, "monitored-unknown-ci/pe1.par")
            .await
            .is_none()
    );
    // acme's customer file has no `reports` contact.
    assert_eq!(
        issue(&app.api, "contact-missing/acme/reports")
            .await
            .unwrap()["status"],
        "ticketed"
    );

    common::wait_until("the ticket in the ITSM", PATIENCE, || async {
        tickets(&sn, &ticket).len() == 1
    })
    .await;
    let created = &tickets(&sn, &ticket)[0];
    assert_eq!(created["category"], "Data Integrity");
    assert_eq!(created["assignment_group"], "CMDB Quality");
    assert!(
        created["short_description"]
            .as_str()
            .unwrap()
            .contains("mystery-01 monitored but unknown to the CMDB"),
        "{created}"
    );

    // The same alert again changes nothing.
    alert(&app.api, "mystery-01").await;

    // Fixed upstream: the host is registered in the CMDB.
    sn.insert(
        "cmdb_ci",
        json!({"name": "mystery-01", "install_status": "1", "sys_updated_on": itsm::at(2)}),
    );
    itsm::sync_now(&app.api).await;
    let resolved = wait_for_status(&app.api, KEY, "resolved").await;
    assert_eq!(resolved["ticket"], ticket.as_str());
    common::wait_until("the ticket resolved in the ITSM", PATIENCE, || async {
        tickets(&sn, &ticket)
            .first()
            .is_some_and(|t| t["state"] == "6")
    })
    .await;
    let closed = &tickets(&sn, &ticket)[0];
    assert!(
        closed["work_notes"]
            .as_str()
            .unwrap()
            .starts_with("Resolved by csmd"),
        "{closed}"
    );
    assert_eq!(tickets(&sn, &ticket).len(), 1, "one ticket for the issue");

    // The CLI lists it.
    let output = itsm::cli(
        &app.api,
        &["integrity", "list", "--rule", "monitored-unknown-ci"],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        listed.contains("mystery-01") && listed.contains("resolved"),
        "{listed}"
    );
    let metrics = app.api.metrics().await;
    assert_eq!(
        common::metric(
            &metrics,
            "csmd_integrity_open_issues",
            &[("rule", "monitored-unknown-ci")]
        ),
        0.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_bad_filter_is_refused_with_a_message() {
    let sn = instance().await;
    let app = TestApp::start(config(&sn)).await;
    let reply = app
        .api
        .admin_get("/api/v1/integrity?rule=ci-not-bild")
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(
        reply.error().contains("unknown rule `ci-not-bild`"),
        "{}",
        reply.text
    );
    app.stop().await;
}

#[tokio::test]
async fn killing_the_daemon_between_ticket_create_and_store_never_opens_a_second_ticket() {
    common::install_crypto();
    let sn = instance().await;
    // The instance creates the first ticket at once but answers much later:
    // csmd is killed while it waits, so it never stores the ticket's id.
    sn.fail_next(
        Fault::ForMethod(
            "POST".into(),
            Box::new(Fault::AnswerLate(Duration::from_secs(60))),
        ),
        1,
    );
    let (mut config, mut daemon, raised) = ticketed(&sn).await;
    let ticket = raised["ticket"].as_str().unwrap().to_string();
    common::wait_until("a ticket created upstream", PATIENCE, || async {
        !sn.records("incident").is_empty()
    })
    .await;
    daemon.kill9();

    let mut daemon = Daemon::start(&mut config, &[]).await;
    common::wait_until("every ticket written", PATIENCE, || async {
        let writes = daemon.api.admin_get("/api/v1/writes?connector=itsm").await;
        writes.json["writes"]
            .as_array()
            .is_some_and(|w| !w.is_empty() && w.iter().all(|w| w["status"] == "done"))
    })
    .await;
    assert_eq!(
        tickets(&sn, &ticket).len(),
        1,
        "exactly one ticket for the issue"
    );
    // Whichever ticket was the slow one: no correlation id twice.
    let mut ids: Vec<String> = sn
        .records("incident")
        .iter()
        .map(|r| r["correlation_id"].as_str().unwrap().to_string())
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), all, "a ticket created twice: {ids:?}");
    assert!(
        all >= 2,
        "the unknown host's and acme's missing contact: {ids:?}"
    );
    let issue = issue(&daemon.api, KEY).await.unwrap();
    assert_eq!(
        issue["ticket"],
        ticket.as_str(),
        "the same ticket after the restart"
    );
    assert_eq!(issue["occurrences"], 1);
    daemon.kill9();
}

#[tokio::test]
async fn a_restarted_daemon_reads_the_index_it_saved_and_follows_what_changed_since() {
    common::install_crypto();
    let sn = instance().await;
    let (mut config, mut daemon, raised) = ticketed(&sn).await;
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status}:\n{}", daemon.log());
    let snapshot = config
        .data_dir()
        .join(csmd::engine::integrity::index::snapshot::FILE_NAME);
    let log = daemon.log();
    assert!(snapshot.exists(), "{log}");
    assert_eq!(
        log.matches("Saved the data-integrity index").count(),
        2,
        "saved after the first full run and at shutdown:\n{log}"
    );

    // While csmd is stopped, the host is registered in the CMDB.
    sn.insert(
        "cmdb_ci",
        json!({"name": "mystery-01", "install_status": "1", "sys_updated_on": itsm::at(2)}),
    );
    let mut daemon = Daemon::start(&mut config, &[]).await;
    let log = daemon
        .wait_for_log("Read the data-integrity index from its snapshot")
        .await;
    assert!(
        !log.contains("Building the data-integrity index from the store"),
        "{log}"
    );
    itsm::sync_now(&daemon.api).await;
    let resolved = wait_for_status(&daemon.api, KEY, "resolved").await;
    assert_eq!(resolved["ticket"], raised["ticket"]);
    assert_eq!(resolved["occurrences"], 1);
    daemon.kill9();
}

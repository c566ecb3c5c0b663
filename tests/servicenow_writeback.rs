//! Write-back: records csmd creates and updates in the ITSM, once per key,
//! against the ServiceNow Table API simulator.

mod common;
mod sim;

use std::time::Duration;

use common::{ConfigDir, TestApp};
use serde_json::{Value, json};
use sim::servicenow::{Fault, Simulator};

const CASE_FIELDS: &[&str] = &[
    "number",
    "short_description",
    "account",
    "state",
    "correlation_id",
    "work_notes",
];

async fn simulator() -> Simulator {
    Simulator::builder()
        .table("incident", &["number", "state"])
        .table("sn_customerservice_case", CASE_FIELDS)
        .basic_user("csmd", "sn-password")
        .start()
        .await
}

/// A ServiceNow connector that polls nothing but can write.
fn config_for(sn: &Simulator) -> ConfigDir {
    let mut config = ConfigDir::new();
    std::fs::write(config.dir().join("sn_password"), "sn-password\n").expect("secret");
    let disabled = [
        "accounts",
        "contacts",
        "cis",
        "install_base",
        "changes",
        "change_cis",
        "problems",
        "problem_tasks",
    ]
    .map(|s| format!("{s} = {{ enabled = false }}\n"))
    .concat();
    config.extra = format!(
        "\n[[connector]]\nname = \"itsm\"\nprofile = \"servicenow\"\nbase_url = \"{}\"\npoll_interval = \"1h\"\n\
         rate_limit = \"off\"\n[connector.auth]\nkind = \"basic\"\nusername = \"csmd\"\npassword = {{ file = \"sn_password\" }}\n\
         [connector.streams]\n{disabled}",
        sn.url()
    );
    config.write();
    config
}

async fn queue(app: &TestApp, key: &str) -> common::Reply {
    let body = json!({
        "key": key,
        "table": "sn_customerservice_case",
        "fields": { "short_description": "Proactive: packet loss on the Paris core", "account": "acme" }
    });
    app.api
        .admin_post_json("/api/v1/connectors/itsm/writes", &body)
        .await
}

async fn wait_for_status(app: &TestApp, key: &str, status: &str) -> Value {
    let path = format!("/api/v1/connectors/itsm/writes/{key}");
    common::wait_until(
        &format!("write {key} {status}"),
        Duration::from_secs(20),
        || async { app.api.admin_get(&path).await.json["status"] == status },
    )
    .await;
    app.api.admin_get(&path).await.json
}

fn cases_with(sn: &Simulator, key: &str) -> Vec<Value> {
    sn.records("sn_customerservice_case")
        .into_iter()
        .filter(|r| r["correlation_id"] == key)
        .collect()
}

#[tokio::test]
async fn a_record_is_created_once_per_key_with_the_key_as_correlation_id() {
    let sn = simulator().await;
    let app = TestApp::start(config_for(&sn)).await;

    let reply = queue(&app, "csmd-case-1").await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    let write = wait_for_status(&app, "csmd-case-1", "done").await;
    let cases = cases_with(&sn, "csmd-case-1");
    assert_eq!(cases.len(), 1);
    assert_eq!(write["record_id"], cases[0]["sys_id"]);
    assert_eq!(
        cases[0]["short_description"],
        "Proactive: packet loss on the Paris core"
    );

    // Asked again (a processor replaying, an operator retrying): no second record.
    let reply = queue(&app, "csmd-case-1").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["queued"], false);
    assert_eq!(cases_with(&sn, "csmd-case-1").len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_existing_record_with_the_key_is_adopted_not_duplicated() {
    // As after a crash between the ITSM creating the record and csmd storing
    // its id: the record is already there when csmd (re)tries.
    let sn = simulator().await;
    let existing = sn.insert(
        "sn_customerservice_case",
        json!({"correlation_id": "csmd-case-2", "short_description": "x"}),
    );
    let app = TestApp::start(config_for(&sn)).await;

    queue(&app, "csmd-case-2").await;
    let write = wait_for_status(&app, "csmd-case-2", "done").await;
    assert_eq!(write["record_id"], existing.as_str());
    assert_eq!(cases_with(&sn, "csmd-case-2").len(), 1);
    let posts = sn.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 0, "nothing is created when the key is found");
    app.stop().await;
}

#[tokio::test]
async fn updates_are_applied_in_order_after_the_creation() {
    let sn = simulator().await;
    let app = TestApp::start(config_for(&sn)).await;
    queue(&app, "csmd-case-3").await;
    for (state, note) in [("2", "Investigating"), ("6", "Resolved: link restored")] {
        let body = json!({ "fields": { "state": state, "work_notes": note } });
        let reply = app
            .api
            .admin_post_json("/api/v1/connectors/itsm/writes/csmd-case-3/updates", &body)
            .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    wait_for_status(&app, "csmd-case-3", "done").await;
    common::wait_until("both updates applied", Duration::from_secs(20), || async {
        app.api
            .admin_get("/api/v1/connectors/itsm/writes/csmd-case-3")
            .await
            .json["updates"]
            == json!([])
    })
    .await;
    let case = &cases_with(&sn, "csmd-case-3")[0];
    assert_eq!(case["state"], "6");
    assert_eq!(case["work_notes"], "Resolved: link restored");
    app.stop().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_a_refusal_is_final() {
    let sn = simulator().await;
    let app = TestApp::start(config_for(&sn)).await;

    sn.fail_next(Fault::ServerError(503), 2);
    queue(&app, "csmd-case-4").await;
    wait_for_status(&app, "csmd-case-4", "done").await;
    assert_eq!(cases_with(&sn, "csmd-case-4").len(), 1);

    // A table the instance does not have: the ITSM refuses, csmd gives up
    // and says why.
    let body = json!({ "key": "csmd-case-5", "table": "u_no_such_table", "fields": {} });
    app.api
        .admin_post_json("/api/v1/connectors/itsm/writes", &body)
        .await;
    let write = wait_for_status(&app, "csmd-case-5", "failed").await;
    assert!(
        write["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("400"),
        "{write}"
    );
    app.stop().await;
}

#[tokio::test]
async fn keys_that_could_change_the_lookup_query_are_refused() {
    let sn = simulator().await;
    let app = TestApp::start(config_for(&sn)).await;
    for key in ["a^ORactive=true", "a=b", "", "with space"] {
        let reply = queue(&app, key).await;
        assert_eq!(reply.status, 400, "{key:?}: {}", reply.text);
        assert!(reply.error().contains("key must be"), "{}", reply.text);
    }
    assert!(sn.records("sn_customerservice_case").is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_lost_answer_to_the_create_is_recovered_by_looking_the_key_up() {
    let sn = simulator().await;
    let app = TestApp::start(config_for(&sn)).await;
    // The instance creates the record, then the connection drops.
    sn.fail_next(
        Fault::ForMethod("POST".into(), Box::new(Fault::AnswerLost)),
        1,
    );

    queue(&app, "csmd-case-6").await;
    let write = wait_for_status(&app, "csmd-case-6", "done").await;
    let cases = cases_with(&sn, "csmd-case-6");
    assert_eq!(
        cases.len(),
        1,
        "the retry found the record instead of creating a second"
    );
    assert_eq!(write["record_id"], cases[0]["sys_id"]);
    app.stop().await;
}

#[tokio::test]
async fn killing_the_daemon_between_create_and_store_never_duplicates_the_record() {
    common::install_crypto();
    let sn = simulator().await;
    let mut config = config_for(&sn).on_free_port();
    config.write();
    // The instance creates the record at once but answers only much later:
    // csmd is killed while it waits, so it never stores the record's id.
    sn.fail_next(
        Fault::ForMethod(
            "POST".into(),
            Box::new(Fault::AnswerLate(Duration::from_secs(60))),
        ),
        1,
    );

    let mut daemon = common::Daemon::start(&mut config, &[]).await;
    let body = json!({ "key": "csmd-case-7", "table": "sn_customerservice_case", "fields": { "short_description": "x" } });
    let reply = daemon
        .api
        .admin_post_json("/api/v1/connectors/itsm/writes", &body)
        .await;
    assert_eq!(reply.status, 202, "{}", reply.text);
    common::wait_until(
        "the instance created the record",
        Duration::from_secs(20),
        || async { cases_with(&sn, "csmd-case-7").len() == 1 },
    )
    .await;
    daemon.kill9();

    let mut daemon = common::Daemon::start(&mut config, &[]).await;
    let path = "/api/v1/connectors/itsm/writes/csmd-case-7";
    common::wait_until(
        "the write completed after the restart",
        Duration::from_secs(30),
        || async { daemon.api.admin_get(path).await.json["status"] == "done" },
    )
    .await;
    let cases = cases_with(&sn, "csmd-case-7");
    assert_eq!(cases.len(), 1, "exactly one record for the key");
    assert_eq!(
        daemon.api.admin_get(path).await.json["record_id"],
        cases[0]["sys_id"]
    );
    daemon.kill9();
}

//! ServiceNow pushing records to csmd (an outbound REST message from a
//! business rule, `POST /webhooks/itsm`) while csmd also polls the same
//! instance: pushed and polled copies of a record meet in the store, and
//! the newest by `sys_updated_on` wins whichever arrives last.

mod common;
mod itsm;
mod sim;

use common::{TestApp, bearer};
use itsm::{
    Connector, at, first_sync, incident, instance, rfc3339_at, stored, sync_now, wait_stored,
};
use serde_json::{Value, json};
use sim::servicenow::Simulator;

const TOKEN: &str = "token-of-the-business-rule";

async fn app(sn: &Simulator) -> TestApp {
    let app = TestApp::start(
        Connector::new(sn)
            .secret("sn_push_token", TOKEN)
            .with("[connector.webhook]\nauth = \"bearer\"\ntoken = { file = \"sn_push_token\" }")
            .config(),
    )
    .await;
    first_sync(&app.api).await;
    app
}

/// Incident `n` as a business rule sends it: the record's raw values with
/// its sys_id and `sys_updated_on` (`EPOCH + seconds`).
fn pushed(n: usize, seconds: i64, state: &str) -> Value {
    let mut record = incident(n);
    record["sys_id"] = json!(sys_id(n));
    record["sys_updated_on"] = json!(at(seconds));
    record["state"] = json!(state);
    record
}

fn sys_id(n: usize) -> String {
    format!("{n:032x}")
}

async fn push(app: &TestApp, body: Value) -> common::Reply {
    app.api
        .post_webhook("itsm", &bearer(TOKEN), body.to_string())
        .await
}

async fn state_of(app: &TestApp, n: usize) -> (Value, Value) {
    let record = stored(&app.api, "incidents", &sys_id(n))
        .await
        .unwrap_or_else(|| panic!("incident {n} is not stored"));
    (record["state"].clone(), record["updated_at"].clone())
}

#[tokio::test]
async fn pushed_records_are_stored_and_the_newest_copy_wins_over_polled_and_late_ones() {
    let sn = instance().await;
    let app = app(&sn).await;

    // One record, then a batch of three.
    let one = push(
        &app,
        json!({"table": "incident", "record": pushed(1, 100, "6")}),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.text);
    assert_eq!(one.json["stored"], 1, "{}", one.text);
    let batch = json!({"table": "incident", "records": [
        pushed(2, 100, "2"), pushed(3, 100, "2"), pushed(4, 100, "3"),
    ]});
    let three = push(&app, batch).await;
    assert_eq!(three.status, 200, "{}", three.text);
    assert_eq!(three.json["stored"], 3, "{}", three.text);
    for n in 1..=4 {
        wait_stored(&app.api, "incidents", &sys_id(n)).await;
    }
    assert_eq!(
        state_of(&app, 1).await,
        (json!("resolved"), json!(rfc3339_at(100)))
    );
    assert_eq!(
        state_of(&app, 4).await,
        (json!("on_hold"), json!(rfc3339_at(100)))
    );

    // The poll then reads incident 1 as it was before the push, incident 2
    // as pushed, and a new incident 5.
    sn.insert("incident", pushed(1, 50, "2"));
    sn.insert("incident", pushed(2, 100, "2"));
    sn.insert("incident", pushed(5, 200, "1"));
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["incidents"]["records"], 3, "{report}");
    wait_stored(&app.api, "incidents", &sys_id(5)).await;
    assert_eq!(
        state_of(&app, 1).await,
        (json!("resolved"), json!(rfc3339_at(100))),
        "the older polled copy did not replace the pushed one"
    );
    assert_eq!(
        state_of(&app, 2).await,
        (json!("in_progress"), json!(rfc3339_at(100)))
    );

    // A retried delivery of an old version arrives last.
    let late = push(
        &app,
        json!({"table": "incident", "record": pushed(1, 10, "1")}),
    )
    .await;
    assert_eq!(late.status, 200, "{}", late.text);
    let barrier = push(
        &app,
        json!({"table": "incident", "record": pushed(6, 300, "1")}),
    )
    .await;
    assert_eq!(barrier.status, 200, "{}", barrier.text);
    wait_stored(&app.api, "incidents", &sys_id(6)).await;
    assert_eq!(
        state_of(&app, 1).await,
        (json!("resolved"), json!(rfc3339_at(100))),
        "the late old copy changed nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_push_is_refused_with_what_is_wrong() {
    let sn = instance().await;
    let app = app(&sn).await;
    let mut bad_time = pushed(1, 0, "2");
    bad_time["sys_updated_on"] = json!("20/11/2026 08:00");
    let cases = [
        (
            json!({"table": "change_task", "record": pushed(1, 0, "2")}),
            "table \"change_task\" is not read by this connector; it reads incident",
        ),
        (
            json!({"table": "incident"}),
            "give either `record` (an object) or `records` (an array)",
        ),
        (
            json!({"table": "incident", "records": []}),
            "`records` is empty",
        ),
        (json!({"record": pushed(1, 0, "2")}), "missing `table`"),
        (
            json!({"table": "incident", "record": bad_time}),
            "record 0: `sys_updated_on`: \"20/11/2026 08:00\" is not a time",
        ),
        (
            json!({"table": "incident", "records": [pushed(1, 0, "2"), "INC0000002"]}),
            "record 1: not a JSON object",
        ),
    ];
    for (body, message) in cases {
        let reply = push(&app, body.clone()).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.text);
        assert!(
            reply.error().contains(message),
            "{body}: expected {message:?} in {:?}",
            reply.error()
        );
    }
    let unauthenticated = app
        .api
        .post_webhook(
            "itsm",
            &bearer("wrong"),
            json!({"table": "incident", "record": pushed(1, 0, "2")}).to_string(),
        )
        .await;
    assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.text);
    assert_eq!(
        app.api.journal_total().await,
        0,
        "nothing refused was stored"
    );
    app.stop().await;
}

//! The billing REST connector (`connectors/billing-rest`) reading the
//! billing API simulator (a real HTTP server on loopback) through the same
//! engine as the ITSM connector: cursor pagination, `updated_since`
//! incremental syncs, records sharing a timestamp, records updated during
//! a sync, the API's failures (429 with `Retry-After`, 5xx, 401), and a
//! `kill -9` of the real binary in the middle of a sync.

mod common;
mod sim;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Api, ConfigDir, Daemon, PATIENCE, TestApp, metric, run_cli, wait_until};
use serde_json::{Value, json};
use sim::billing::{Fault, Simulator, format_time, parse_time};

const TOKEN: &str = "sk_test_billing_4f8a";
/// When the records of a test were last updated, unless it says otherwise.
const EPOCH: &str = "2026-11-20T08:00:00Z";
/// The API's clock: a day after [`EPOCH`], so every `at(n)` lies in its past.
const API_NOW: &str = "2026-11-21T08:00:00Z";
const PAGE: usize = 500;

fn at(seconds: i64) -> String {
    format_time(parse_time(EPOCH) + chrono::Duration::seconds(seconds))
}

async fn billing_api() -> Simulator {
    Simulator::builder()
        .bearer_token(TOKEN)
        .basic_user("csmd", "billing-pw")
        .now(API_NOW)
        .start()
        .await
}

/// Subscription `n`: ids in order, updated `EPOCH + n` s.
fn subscription(n: usize) -> Value {
    json!({
        "id": format!("sub_{n:08}"),
        "account_id": format!("acc_{:04}", n % 7),
        "sku": "MPLS-VPN-100M",
        "quantity": 1 + n % 3,
        "start_date": "2026-01-01",
        "end_date": null,
        "status": "active",
        "metadata": {"ci": format!("rtr-{n}"), "service": "MPLS VPN"},
        "created_at": "2025-12-01T00:00:00Z",
        "updated_at": at(n as i64),
    })
}

/// The `billing` connector's section: bearer auth unless `auth` says
/// otherwise, every stream, syncs only at start and when asked.
fn config(billing: &Simulator, auth: &str) -> ConfigDir {
    let mut config = ConfigDir::new();
    std::fs::write(config.dir().join("billing_token"), format!("{TOKEN}\n")).expect("secret");
    std::fs::write(config.dir().join("billing_password"), "billing-pw\n").expect("secret");
    std::fs::write(config.dir().join("wrong_token"), "sk_test_revoked\n").expect("secret");
    config.extra = format!(
        r#"
[[connector]]
name = "billing"
profile = "billing-rest"
base_url = "{url}"
poll_interval = "1h"
rate_limit = "off"
timeout = "5s"
[connector.auth]
{auth}
"#,
        url = billing.url(),
    );
    config
}

const BEARER: &str = "kind = \"bearer\"\ntoken = { file = \"billing_token\" }";

async fn connector(api: &Api) -> Value {
    let reply = api.admin_get("/api/v1/connectors").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["connectors"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "billing"))
        .unwrap_or_else(|| panic!("no connector billing in {}", reply.text))
        .clone()
}

async fn first_sync(api: &Api) -> Value {
    wait_until("the sync at start", PATIENCE, || async {
        let health = &connector(api).await["health"];
        !health["last_success"].is_null() || !health["last_error"].is_null()
    })
    .await;
    connector(api).await["health"].clone()
}

async fn sync_now(api: &Api) -> Value {
    let reply = api.admin_post("/api/v1/connectors/billing/sync").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

async fn stored(api: &Api, kind: &str, id: &str) -> Option<Value> {
    let reply = api.admin_get(&format!("/api/v1/records/{kind}/{id}")).await;
    match reply.status {
        200 => Some(reply.json),
        404 => None,
        other => panic!("GET record {kind}/{id}: {other} {}", reply.text),
    }
}

async fn wait_stored(api: &Api, kind: &str, id: &str) -> Value {
    wait_until(&format!("{kind} {id} in the store"), PATIENCE, || async {
        stored(api, kind, id).await.is_some()
    })
    .await;
    stored(api, kind, id).await.expect("just seen")
}

/// Waits until `id` holds `updated_at`, then checks `count` records.
async fn assert_all_stored(api: &Api, kind: &str, id: &str, updated: &str, count: u64) {
    wait_until(
        &format!("{kind} {id} updated {updated}"),
        PATIENCE,
        || async {
            stored(api, kind, id)
                .await
                .is_some_and(|r| r["updated_at"] == rfc3339(updated))
        },
    )
    .await;
    let reply = api.admin_get(&format!("/api/v1/records/{kind}")).await;
    assert_eq!(reply.json["count"], count, "{kind} in the store");
}

/// csmd's own spelling of a time.
fn rfc3339(at: &str) -> String {
    let at: DateTime<Utc> = parse_time(at);
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `(updated_since, cursor)` of each page request of a resource.
fn pages(billing: &Simulator, resource: &str) -> Vec<(Option<String>, bool)> {
    billing
        .list_requests(resource)
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            (
                r.param("updated_since").map(str::to_string),
                r.param("cursor").is_some(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_follows_the_cursor_through_every_page_and_maps_the_records() {
    let billing = billing_api().await;
    billing.insert_many("subscriptions", (0..1_234).map(subscription));
    billing.insert(
        "accounts",
        json!({"id": "acc_0001", "number": "ACC-1001", "name": "ACME Corp", "updated_at": at(0)}),
    );
    billing.insert(
        "charges",
        json!({"id": "ch_1", "account_id": "acc_0001", "description": "Firmware upgrade",
               "amount": "450.00", "metadata": {"change_number": "CHG0030001"},
               "created_at": "2026-11-18T16:00:00Z", "updated_at": at(5)}),
    );

    let app = TestApp::start(config(&billing, BEARER)).await;
    let health = first_sync(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["subscriptions"]["records_total"], 1_234);
    assert_eq!(
        pages(&billing, "subscriptions"),
        [(None, false), (None, true), (None, true)],
        "a first sync reads everything: a page without cursor, then two by cursor"
    );
    assert!(
        billing
            .list_requests("subscriptions")
            .iter()
            .all(|r| r.param("limit") == Some("500")),
        "pages of {PAGE}"
    );
    assert_all_stored(&app.api, "subscriptions", "sub_00001233", &at(1_233), 1_234).await;
    let sub = stored(&app.api, "subscriptions", "sub_00000004")
        .await
        .expect("stored");
    assert_eq!(sub["account"], "acc_0004");
    assert_eq!(sub["product"], "MPLS-VPN-100M");
    assert_eq!(
        sub["ci"], "rtr-4",
        "read through the JSON pointer /metadata/ci"
    );
    assert_eq!(sub["service"], "MPLS VPN");
    assert_eq!(sub["quantity"], 2.0);
    assert_eq!(sub["start"], "2026-01-01T00:00:00Z");
    assert_eq!(sub["end"], Value::Null);
    assert_eq!(sub["status"], "active");
    let charge = wait_stored(&app.api, "charges", "ch_1").await;
    assert_eq!(charge["change"], "CHG0030001");
    assert_eq!(charge["amount"], 450.0);
    assert_eq!(charge["charged_at"], "2026-11-18T16:00:00Z");
    let account = wait_stored(&app.api, "billing_accounts", "acc_0001").await;
    assert_eq!(account["number"], "ACC-1001");

    let metrics = app.api.metrics().await;
    assert_eq!(
        metric(&metrics, "csmd_connector_up", &[("connector", "billing")]),
        1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn an_api_giving_the_next_page_only_in_a_link_header_is_followed_too() {
    let billing = Simulator::builder()
        .bearer_token(TOKEN)
        .now(API_NOW)
        .link_only()
        .start()
        .await;
    billing.insert_many("subscriptions", (0..1_100).map(subscription));
    let app = TestApp::start(config(&billing, BEARER)).await;
    let health = first_sync(&app.api).await;
    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["subscriptions"]["records_total"], 1_100);
    assert_eq!(pages(&billing, "subscriptions").len(), 3);
    assert_all_stored(&app.api, "subscriptions", "sub_00001099", &at(1_099), 1_100).await;
    app.stop().await;
}

#[tokio::test]
async fn the_next_sync_asks_for_records_updated_since_the_last_one_stored() {
    let billing = billing_api().await;
    billing.insert_many("subscriptions", (0..700).map(subscription));
    let app = TestApp::start(config(&billing, BEARER)).await;
    let health = first_sync(&app.api).await;
    let cursor = &health["streams"]["subscriptions"]["cursor"];
    assert_eq!(cursor["updated"], at(699), "{health}");
    assert_eq!(cursor["id"], "sub_00000699");

    billing.set_now(&at(2_000));
    for n in [3, 400, 650] {
        billing.update(
            "subscriptions",
            &format!("sub_{n:08}"),
            json!({"status": "suspended"}),
        );
    }
    billing.clear_requests();
    let report = sync_now(&app.api).await;

    let subs = &report["streams"]["subscriptions"];
    assert_eq!(subs["status"], "synced", "{report}");
    assert_eq!(subs["records"], 3, "{report}");
    assert_eq!(
        pages(&billing, "subscriptions"),
        [(Some(at(699)), false)],
        "one page, of the records updated since the last one stored"
    );
    assert_all_stored(&app.api, "subscriptions", "sub_00000650", &at(2_000), 700).await;
    for n in [3, 400] {
        let record = stored(&app.api, "subscriptions", &format!("sub_{n:08}"))
            .await
            .expect("stored");
        assert_eq!(record["status"], "suspended");
    }
    assert_eq!(app.api.journal_total().await, 703, "each version read once");
    app.stop().await;
}

#[tokio::test]
async fn records_sharing_the_last_timestamp_are_neither_lost_nor_read_twice() {
    let billing = billing_api().await;
    // 1,200 subscriptions updated in one second (a bulk price change):
    // more than two pages share the cursor's timestamp.
    let same = at(100);
    billing.insert_many(
        "subscriptions",
        (0..1_200).map(|n| {
            let mut s = subscription(n);
            s["updated_at"] = json!(same);
            s
        }),
    );
    let app = TestApp::start(config(&billing, BEARER)).await;
    let health = first_sync(&app.api).await;
    assert_eq!(health["streams"]["subscriptions"]["records_total"], 1_200);
    assert_eq!(
        health["streams"]["subscriptions"]["cursor"]["id"],
        "sub_00001199"
    );

    // Two more in that same second, after the last one in (updated_at, id)
    // order, and one later.
    billing.insert_many(
        "subscriptions",
        (1_200..1_202).map(|n| {
            let mut s = subscription(n);
            s["updated_at"] = json!(same);
            s
        }),
    );
    billing.insert("subscriptions", subscription(1_500));
    billing.clear_requests();
    let report = sync_now(&app.api).await;

    assert_eq!(
        report["streams"]["subscriptions"]["records"], 3,
        "only the three new records: the 1,200 already stored at that second are skipped: {report}"
    );
    assert_eq!(
        pages(&billing, "subscriptions"),
        [
            (Some(same.clone()), false),
            (Some(same.clone()), true),
            (Some(same), true)
        ],
        "the sync starts at the stored timestamp, inclusive, and pages through it"
    );
    assert_all_stored(&app.api, "subscriptions", "sub_00001500", &at(1_500), 1_203).await;
    assert_eq!(app.api.journal_total().await, 1_203, "no record read twice");
    app.stop().await;
}

#[tokio::test]
async fn records_of_the_apis_current_second_are_read_again_once_it_is_over() {
    let billing = billing_api().await;
    billing.set_now(&at(10));
    billing.insert_many("subscriptions", (0..5).map(subscription));
    billing.insert("subscriptions", {
        let mut s = subscription(9);
        s["updated_at"] = json!(at(10));
        s
    });
    let app = TestApp::start(config(&billing, BEARER)).await;
    let health = first_sync(&app.api).await;
    assert_eq!(
        health["streams"]["subscriptions"]["cursor"]["id"], "sub_00000004",
        "the stored position stays before the API's current second: {health}"
    );

    // Later in that second, a record with a smaller id: after a cursor at
    // (at(10), sub_00000009) it would be skipped forever.
    billing.insert("subscriptions", {
        let mut s = subscription(7);
        s["updated_at"] = json!(at(10));
        s
    });
    billing.set_now(&at(20));
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["subscriptions"]["records"], 2, "{report}");
    assert_all_stored(&app.api, "subscriptions", "sub_00000007", &at(10), 7).await;
    let health = connector(&app.api).await["health"].clone();
    assert_eq!(
        health["streams"]["subscriptions"]["cursor"]["id"],
        "sub_00000009"
    );
    app.stop().await;
}

#[tokio::test]
async fn records_updated_during_a_sync_are_neither_lost_nor_counted_twice() {
    let billing = billing_api().await;
    billing.insert_many("subscriptions", (0..1_500).map(subscription));
    // While the first page is served, one record it holds and one of a later
    // page change: both move to the end of the (updated_at, id) order.
    billing.on_page(|page, billing| {
        if page.resource == "subscriptions" && page.index == 0 {
            billing.set_now(&at(5_000));
            billing.update("subscriptions", "sub_00000010", json!({"quantity": 9}));
            billing.update(
                "subscriptions",
                "sub_00001200",
                json!({"status": "cancelled"}),
            );
        }
    });
    let app = TestApp::start(config(&billing, BEARER)).await;
    let health = first_sync(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(
        health["streams"]["subscriptions"]["records_total"], 1_501,
        "the record read before its change is read again, the other once: {health}"
    );
    assert_all_stored(&app.api, "subscriptions", "sub_00001200", &at(5_000), 1_500).await;
    let changed = stored(&app.api, "subscriptions", "sub_00000010")
        .await
        .expect("stored");
    assert_eq!(changed["quantity"], 9.0);
    assert_eq!(changed["updated_at"], rfc3339(&at(5_000)));
    let moved = stored(&app.api, "subscriptions", "sub_00001200")
        .await
        .expect("stored");
    assert_eq!(moved["status"], "cancelled");
    assert_eq!(app.api.journal_total().await, 1_501);
    app.stop().await;
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after_and_5xx_with_backoff() {
    let billing = billing_api().await;
    billing.insert_many("subscriptions", (0..600).map(subscription));
    billing.fail_next(Fault::TooManyRequests { retry_after: 1 }, 1);
    billing.fail_next(Fault::ServerError(503), 1);
    billing.fail_next(Fault::ServerError(500), 1);
    billing.fail_next(Fault::DropConnection, 1);
    let app = TestApp::start(config(&billing, BEARER)).await;
    let health = first_sync(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["subscriptions"]["records_total"], 600);
    let requests = billing.requests();
    let statuses: Vec<u16> = requests.iter().take(5).map(|r| r.status).collect();
    assert_eq!(statuses, [429, 503, 500, 0, 200], "{requests:?}");
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "the retry waited for Retry-After (1 s), not {waited:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_refused_token_turns_the_connector_red_without_retrying_and_basic_auth_works() {
    let billing = billing_api().await;
    billing.insert_many("subscriptions", (0..3).map(subscription));
    let wrong = "kind = \"bearer\"\ntoken = { file = \"wrong_token\" }";
    let app = TestApp::start(config(&billing, wrong)).await;
    let health = first_sync(&app.api).await;

    let error = health["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("authentication") && error.contains("Invalid API key provided"),
        "{health}"
    );
    assert_eq!(
        billing.requests().len(),
        1,
        "a 401 is not retried, and the other streams are not tried"
    );
    assert!(!error.contains(TOKEN) && !error.contains("sk_test_revoked"));
    let metrics = app.api.metrics().await;
    assert_eq!(
        metric(&metrics, "csmd_connector_up", &[("connector", "billing")]),
        0.0
    );
    app.stop().await;

    let basic = "kind = \"basic\"\nusername = \"csmd\"\npassword = { file = \"billing_password\" }";
    let app = TestApp::start(config(&billing, basic)).await;
    let health = first_sync(&app.api).await;
    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["subscriptions"]["records_total"], 3);
    app.stop().await;
}

#[tokio::test]
async fn after_kill_9_mid_sync_the_binary_resumes_after_the_last_stored_page() {
    let billing = billing_api().await;
    billing.insert_many("subscriptions", (0..3_000).map(subscription));
    // Once the second page is served, the API holds the next request long
    // enough for the daemon to be killed while it waits.
    billing.on_page(|page, billing| {
        if page.resource == "subscriptions" && page.index == 1 {
            billing.fail_next(Fault::Delay(Duration::from_secs(60)), 1);
        }
    });
    let mut config = config(&billing, BEARER).on_free_port();
    let mut daemon = Daemon::start(&mut config, &[]).await;
    wait_until("the request for the third page", PATIENCE, || async {
        billing.list_requests("subscriptions").len() == 2 && billing.pending_faults() == 0
    })
    .await;
    wait_until("the second page durable", PATIENCE, || async {
        let metrics = daemon.api.metrics().await;
        metric(
            &metrics,
            "csmd_events_ingested_total",
            &[("connector", "billing")],
        ) == 1_000.0
    })
    .await;
    daemon.kill9();

    billing.clear_page_hook();
    billing.clear_requests();
    let daemon = Daemon::start(&mut config, &[]).await;
    let health = first_sync(&daemon.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(
        pages(&billing, "subscriptions").first(),
        Some(&(Some(at(999)), false)),
        "the first page after the restart starts at the last stored record"
    );
    assert_eq!(
        health["streams"]["subscriptions"]["records_total"], 2_000,
        "only what was not stored before is read: {health}"
    );
    assert_all_stored(
        &daemon.api,
        "subscriptions",
        "sub_00002999",
        &at(2_999),
        3_000,
    )
    .await;
    assert_eq!(daemon.api.journal_total().await, 3_000, "every record once");

    // What an operator sees.
    let path = config.path();
    let path = path.to_str().expect("a UTF-8 path");
    billing.insert("subscriptions", subscription(4_000));
    let synced = run_cli(&["sync", "--connector", "billing", "--config", path]).await;
    let table = String::from_utf8_lossy(&synced.stdout);
    assert!(synced.status.success(), "{synced:?}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains("subscriptions"))
        .unwrap_or_else(|| panic!("no subscriptions row in\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["subscriptions", "synced", "1", "0", "1", "0"],
        "{table}"
    );
    let listed = run_cli(&["connectors", "--config", path]).await;
    let table = String::from_utf8_lossy(&listed.stdout);
    let row = table
        .lines()
        .find(|l| l.contains("billing"))
        .unwrap_or_else(|| panic!("no billing row in\n{table}"));
    assert!(
        row.contains("billing-rest") && row.contains(" ok "),
        "{table}"
    );
}

//! The ITSM connector when the ServiceNow instance misbehaves: rate limits,
//! server errors, dropped connections, slow answers, refused credentials,
//! expiring OAuth tokens. What is transient is retried within the sync (at
//! the pace the instance asks for); what is not is reported once, clearly,
//! and not hammered.

mod common;
mod itsm;
mod sim;

use std::time::Duration;

use common::{PATIENCE, TestApp, metric, wait_until};
use itsm::{
    Connector, assert_all_stored, at, cli, connector, first_sync, incident, instance, sync_now,
    wait_stored,
};
use sim::servicenow::{DROPPED, Fault, Simulator};

/// An app that has synced `sn` once; the instance's request log is cleared.
async fn synced_app(sn: &Simulator, connector: Connector) -> TestApp {
    new_incident(sn, 0, 0);
    let app = TestApp::start(connector.config()).await;
    let health = first_sync(&app.api).await;
    assert!(health["last_error"].is_null(), "{health}");
    sn.clear_requests();
    app
}

/// A new incident upstream, updated `seconds` after the epoch; then the
/// instance's clock moves on, so that second is over when csmd reads it.
fn new_incident(sn: &Simulator, n: usize, seconds: i64) -> String {
    sn.set_now(&at(seconds));
    let id = sn.insert("incident", incident(n));
    sn.set_now(&at(seconds + 1));
    id
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let sn = instance().await;
    let app = synced_app(&sn, Connector::new(&sn)).await;
    let id = new_incident(&sn, 1, 60);

    sn.fail_next(
        Fault::TooManyRequests {
            retry_after: Duration::from_secs(2),
        },
        1,
    );
    let report = sync_now(&app.api).await;

    assert_eq!(
        report["streams"]["incidents"]["status"], "synced",
        "{report}"
    );
    assert_eq!(report["streams"]["incidents"]["records"], 1, "{report}");
    let requests = sn.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200], "one refusal, then the page");
    assert_eq!(requests[0].query, requests[1].query, "the same page again");
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(8),
        "Retry-After: 2 was honoured, waited {waited:?}"
    );
    wait_stored(&app.api, "incidents", &id).await;
    app.stop().await;
}

#[tokio::test]
async fn server_errors_and_a_dropped_connection_are_retried_within_the_sync() {
    let sn = instance().await;
    let app = synced_app(&sn, Connector::new(&sn)).await;
    let id = new_incident(&sn, 1, 60);

    sn.fail_next(Fault::ServerError(500), 1);
    // A load balancer's HTML page, not the instance's JSON error.
    sn.fail_next(Fault::HtmlError(503), 1);
    sn.fail_next(Fault::DropConnection, 1);
    let report = sync_now(&app.api).await;

    assert_eq!(
        report["streams"]["incidents"]["status"], "synced",
        "{report}"
    );
    assert_eq!(report["streams"]["incidents"]["records"], 1, "{report}");
    let requests = sn.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 503, DROPPED, 200]);
    assert!(
        requests.iter().all(|r| r.query == requests[0].query),
        "each retry asks for the same page"
    );
    let health = connector(&app.api).await["health"].clone();
    assert!(health["last_error"].is_null(), "{health}");
    wait_stored(&app.api, "incidents", &id).await;
    app.stop().await;
}

#[tokio::test]
async fn a_request_that_times_out_is_retried() {
    let sn = instance().await;
    let app = synced_app(&sn, Connector::new(&sn).timeout("500ms")).await;
    let id = new_incident(&sn, 1, 60);

    // The instance would answer, but only after 5 s.
    sn.fail_next(Fault::Delay(Duration::from_secs(5)), 1);
    let started = std::time::Instant::now();
    let report = sync_now(&app.api).await;
    let took = started.elapsed();

    assert_eq!(
        report["streams"]["incidents"]["status"], "synced",
        "{report}"
    );
    assert_eq!(report["streams"]["incidents"]["records"], 1, "{report}");
    assert!(
        took < Duration::from_secs(4),
        "the slow answer was given up after the 500 ms timeout, not awaited: {took:?}"
    );
    wait_stored(&app.api, "incidents", &id).await;
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_reported_once_per_interval_not_hammered() {
    let sn = instance().await;
    sn.insert("incident", incident(0));
    let app = TestApp::start(
        Connector::new(&sn)
            .password("not-the-password")
            .poll_interval("1s")
            .config(),
    )
    .await;

    let health = first_sync(&app.api).await;
    let error = health["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("authentication") && error.contains("401"),
        "the error says what failed: {health}"
    );
    assert!(health["last_success"].is_null(), "{health}");
    assert_eq!(
        sn.requests().len(),
        1,
        "a refused password is not retried within the sync"
    );

    // The next attempt waits for the poll interval.
    wait_until("the second sync", PATIENCE, || async {
        sn.requests().len() >= 2
    })
    .await;
    let requests = sn.requests();
    assert_eq!(requests.len(), 2, "one request per sync");
    assert!(requests.iter().all(|r| r.status == 401));
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");

    // The operator sees it everywhere, and the daemon keeps serving.
    let listed = connector(&app.api).await;
    assert_eq!(listed["ok"], false, "{listed}");
    let metrics = app.api.metrics().await;
    let labels = [("connector", "itsm")];
    assert_eq!(metric(&metrics, "csmd_connector_up", &labels), 0.0);
    assert!(metric(&metrics, "csmd_connector_sync_errors_total", &labels) >= 1.0);
    let ready = app.api.get("/readyz").await;
    assert_eq!(ready.status, 200, "the daemon is up: {}", ready.text);
    assert_eq!(ready.json["connectors"][0]["ok"], false, "{}", ready.text);
    let shown = cli(&app.api, &["connectors"]).await;
    let table = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{shown:?}");
    assert!(
        table.contains("FAILING") && table.contains("401"),
        "csmd connectors shows the failure:\n{table}"
    );
    let synced = cli(&app.api, &["sync", "--connector", "itsm"]).await;
    let table = String::from_utf8_lossy(&synced.stdout);
    assert_eq!(synced.status.code(), Some(1), "{synced:?}");
    assert!(
        table.contains("incidents") && table.contains("failed") && table.contains("401"),
        "csmd sync shows the failure:\n{table}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_oauth_token_is_reused_across_pages_and_refreshed_once_when_it_expires() {
    let sn = Simulator::builder()
        .table("incident", itsm::INCIDENT_FIELDS)
        .basic_user(itsm::USER, itsm::PASSWORD)
        .oauth_client("csmd-client", "client-secret", Duration::from_secs(1800))
        .now(itsm::EPOCH)
        .start()
        .await;
    let ids = sn.insert_many("incident", (0..2_500).map(itsm::incident_updated_in_turn));
    // The instance expires the token after the second page is served.
    let mut pages = 0;
    sn.on_page(move |page, sn| {
        if page.limit == 1000 {
            pages += 1;
            if pages == 2 {
                sn.expire_tokens();
            }
        }
    });

    let app = TestApp::start(
        Connector::new(&sn)
            .oauth2("csmd-client", "client-secret")
            .config(),
    )
    .await;
    let health = first_sync(&app.api).await;

    assert!(health["last_error"].is_null(), "{health}");
    assert_eq!(health["streams"]["incidents"]["records_total"], 2_500);
    assert_all_stored(&app.api, "incidents", &ids[2_499], 2_500).await;
    assert_eq!(
        sn.token_requests(),
        2,
        "one token for the first pages, one more after it expired"
    );
    let statuses: Vec<u16> = sn
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/"))
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 401, 200],
        "the probe and two pages with the first token; the third page once refused, then with the new one"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_retry_after_longer_than_the_longest_backoff_ends_the_sync_instead_of_stalling_it() {
    let sn = instance().await;
    let app = synced_app(&sn, Connector::new(&sn)).await;
    new_incident(&sn, 1, 60);
    sn.fail_next(
        Fault::TooManyRequests {
            retry_after: Duration::from_secs(3_600),
        },
        1,
    );
    let started = std::time::Instant::now();
    let report = sync_now(&app.api).await;

    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the sync did not wait an hour"
    );
    let incidents = &report["streams"]["incidents"];
    assert_eq!(incidents["status"], "failed", "{report}");
    assert!(
        incidents["error"]
            .as_str()
            .unwrap_or_default()
            .contains("429"),
        "{report}"
    );
    // The next poll reads it.
    let report = sync_now(&app.api).await;
    assert_eq!(report["streams"]["incidents"]["records"], 1, "{report}");
    app.stop().await;
}

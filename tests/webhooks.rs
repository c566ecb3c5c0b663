//! The HTTP listener as a webhook sender and an operator see it: what is
//! accepted and stored, what is refused with which status and message, and
//! that a refused request leaves nothing behind (admin API) but a counted
//! rejection (metrics).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    ADMIN_TOKEN, Api, Auth, ConfigDir, RawConnection, Reply, SigningKey, TestApp, alert_body,
    bearer, metric, signed_headers, two_alerts_fixture, unix_now, wait_until,
};
use serde_json::json;

const TOKEN: &str = "monitoring-bearer-token";

async fn app_with(name: &str, auth: Auth) -> TestApp {
    TestApp::start(ConfigDir::new().with_connector(name, auth)).await
}

/// A refusal as the product brief promises it: the status, a JSON error
/// saying what is wrong, and nothing stored.
async fn assert_refused(api: &Api, reply: &Reply, status: u16, message: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.headers["content-type"], "application/json",
        "{}",
        reply.text
    );
    assert!(
        reply.error().contains(message),
        "expected {message:?} in the error, got {:?}",
        reply.error()
    );
    assert_eq!(
        api.journal_total().await,
        0,
        "a refused webhook stored something"
    );
}

async fn rejections(api: &Api, connector: &str, reason: &str) -> f64 {
    metric(
        &api.metrics().await,
        "csmd_webhook_rejections_total",
        &[("connector", connector), ("reason", reason)],
    )
}

#[tokio::test]
async fn a_sender_with_the_right_bearer_token_gets_its_events_stored() {
    let app = app_with("monitoring", Auth::Bearer(TOKEN.into())).await;

    let reply = app
        .api
        .post_webhook("monitoring", &bearer(TOKEN), two_alerts_fixture())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json, json!({ "stored": 2, "first_seq": 1 }));

    let events = app.api.all_events().await;
    assert_eq!(events.len(), 2);
    let first = &events[0];
    assert_eq!(first["seq"], 1);
    assert_eq!(first["connector"], "monitoring");
    assert!(first["received_at"].is_string());
    assert!(first.get("delivery_id").is_none(), "{first}");
    assert_eq!(
        first["event"],
        json!({
            "type": "alert",
            "source_id": "7f3c2a91d4e0b6a1",
            "status": "firing",
            "summary": "Packet loss above 5% on the Paris core switch",
            "service": "ip-vpn",
            "ci": "core-sw-par-01",
            "severity": "critical",
            "starts_at": "2026-11-20T08:14:03Z",
        })
    );
    let second = &events[1];
    assert_eq!(second["seq"], 2);
    assert_eq!(second["event"]["source_id"], "0b9e11c5aa42f7d3");
    assert_eq!(second["event"]["status"], "resolved");
    assert_eq!(second["event"]["ends_at"], "2026-11-20T08:02:41Z");

    // One event can be looked up by its sequence number too.
    let one = app.api.admin_get("/api/v1/events/2").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json, *second);
    let metrics = app.api.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "csmd_events_ingested_total",
            &[("connector", "monitoring")]
        ),
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_bearer_token_is_refused_and_nothing_is_stored() {
    let app = app_with("monitoring", Auth::Bearer(TOKEN.into())).await;
    let body = two_alerts_fixture();

    let missing = app.api.post_webhook("monitoring", &[], body.clone()).await;
    assert_refused(&app.api, &missing, 401, "missing Authorization header").await;

    let wrong = app
        .api
        .post_webhook("monitoring", &bearer("not-the-token"), body.clone())
        .await;
    assert_refused(&app.api, &wrong, 401, "wrong bearer token").await;

    let basic = vec![(
        "authorization".to_string(),
        "Basic dXNlcjpwYXNz".to_string(),
    )];
    let not_bearer = app.api.post_webhook("monitoring", &basic, body).await;
    assert_refused(&app.api, &not_bearer, 401, "not a bearer token").await;

    assert_eq!(
        rejections(&app.api, "monitoring", "unauthorized").await,
        3.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_signed_webhook_is_stored_under_its_webhook_id() {
    let key = SigningKey::random();
    let app = app_with("grafana", Auth::StandardWebhooks(vec![key.clone()])).await;
    let body = alert_body("a-1", "Disk almost full on db-01");

    let headers = key.headers("msg_2Lk9fXv1", unix_now(), body.as_bytes());
    let reply = app.api.post_webhook("grafana", &headers, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json, json!({ "stored": 1, "first_seq": 1 }));

    let events = app.api.all_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["connector"], "grafana");
    assert_eq!(events[0]["delivery_id"], "msg_2Lk9fXv1");
    assert_eq!(events[0]["event"]["source_id"], "a-1");
    assert_eq!(events[0]["event"]["summary"], "Disk almost full on db-01");
    app.stop().await;
}

#[tokio::test]
async fn a_bad_or_missing_signature_is_refused() {
    let key = SigningKey::random();
    let app = app_with("grafana", Auth::StandardWebhooks(vec![key.clone()])).await;
    let body = alert_body("a-1", "Disk almost full on db-01");
    let now = unix_now();

    // Signed, then changed on the way.
    let headers = key.headers("msg_1", now, body.as_bytes());
    let tampered = body.replace("almost full", "fine");
    let reply = app.api.post_webhook("grafana", &headers, tampered).await;
    assert_refused(&app.api, &reply, 401, "no webhook-signature matches").await;

    // Signed with a key the daemon does not know.
    let stranger = SigningKey::random().headers("msg_2", now, body.as_bytes());
    let reply = app
        .api
        .post_webhook("grafana", &stranger, body.clone())
        .await;
    assert_refused(&app.api, &reply, 401, "no webhook-signature matches").await;

    // Not signed at all.
    let reply = app.api.post_webhook("grafana", &[], body.clone()).await;
    assert_refused(&app.api, &reply, 401, "missing webhook-id header").await;
    let unsigned = vec![
        ("webhook-id".to_string(), "msg_3".to_string()),
        ("webhook-timestamp".to_string(), now.to_string()),
    ];
    let reply = app.api.post_webhook("grafana", &unsigned, body).await;
    assert_refused(&app.api, &reply, 401, "missing webhook-signature header").await;

    assert_eq!(rejections(&app.api, "grafana", "bad_signature").await, 2.0);
    assert_eq!(rejections(&app.api, "grafana", "unsigned").await, 2.0);
    app.stop().await;
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let key = SigningKey::random();
    let app = app_with("grafana", Auth::StandardWebhooks(vec![key.clone()])).await;
    let body = alert_body("a-1", "Disk almost full on db-01");

    // Ten minutes old, then ten minutes ahead: the tolerance is five.
    for (id, timestamp) in [("msg_old", unix_now() - 600), ("msg_new", unix_now() + 600)] {
        let headers = key.headers(id, timestamp, body.as_bytes());
        let reply = app
            .api
            .post_webhook("grafana", &headers, body.clone())
            .await;
        assert_refused(&app.api, &reply, 401, "away from this server's clock").await;
        assert!(reply.error().contains("at most 300s"), "{}", reply.error());
    }
    assert_eq!(
        rejections(&app.api, "grafana", "stale_timestamp").await,
        2.0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_webhook_id_gets_409_and_is_not_stored_twice() {
    let key = SigningKey::random();
    let app = app_with("grafana", Auth::StandardWebhooks(vec![key.clone()])).await;
    let body = alert_body("a-1", "Disk almost full on db-01");
    let headers = key.headers("msg_once", unix_now(), body.as_bytes());

    let first = app
        .api
        .post_webhook("grafana", &headers, body.clone())
        .await;
    assert_eq!(first.status, 200, "{}", first.text);

    let again = app.api.post_webhook("grafana", &headers, body).await;
    assert_eq!(again.status, 409, "{}", again.text);
    assert!(
        again
            .error()
            .contains("\"msg_once\" was already received at"),
        "{}",
        again.error()
    );
    assert!(
        again.error().contains("stored as event 1"),
        "{}",
        again.error()
    );

    let events = app.api.all_events().await;
    assert_eq!(events.len(), 1, "the replay was stored: {events:?}");
    assert_eq!(rejections(&app.api, "grafana", "replayed").await, 1.0);
    app.stop().await;
}

#[tokio::test]
async fn during_a_key_rotation_messages_signed_with_either_key_are_accepted() {
    let old = SigningKey::random();
    let new = SigningKey::random();
    let app = app_with(
        "grafana",
        Auth::StandardWebhooks(vec![old.clone(), new.clone()]),
    )
    .await;
    let now = unix_now();

    let body = alert_body("a-1", "signed with the old key");
    let reply = app
        .api
        .post_webhook(
            "grafana",
            &old.headers("msg_old", now, body.as_bytes()),
            body,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let body = alert_body("a-2", "signed with the new key");
    let reply = app
        .api
        .post_webhook(
            "grafana",
            &new.headers("msg_new", now, body.as_bytes()),
            body,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // A sender mid-rotation sends several signatures; one matching is enough.
    let body = alert_body("a-3", "signed with a stranger's key and the new key");
    let stranger = SigningKey::random().signature("msg_both", now, body.as_bytes());
    let good = new.signature("msg_both", now, body.as_bytes());
    let headers = signed_headers("msg_both", now, &format!("{stranger} {good}"));
    let reply = app.api.post_webhook("grafana", &headers, body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    let summaries: Vec<_> = app
        .api
        .all_events()
        .await
        .iter()
        .map(|e| e["event"]["summary"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        summaries,
        [
            "signed with the old key",
            "signed with the new key",
            "signed with a stranger's key and the new key"
        ]
    );
    app.stop().await;
}

/// A body of `len` bytes that would otherwise be accepted.
fn body_of_len(len: usize) -> String {
    let skeleton = alert_body("big", "");
    let padding = "x".repeat(len - skeleton.len());
    let body = alert_body("big", &padding);
    assert_eq!(body.len(), len);
    body
}

fn chunked_request(body: &str) -> Vec<u8> {
    let mut request = b"POST /webhooks/monitoring HTTP/1.1\r\nHost: localhost\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for chunk in body.as_bytes().chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

#[tokio::test]
async fn a_body_over_max_body_bytes_gets_413_whether_or_not_it_declares_its_length() {
    let app = app_with("monitoring", Auth::None).await;
    assert_eq!(app.config.max_body_bytes, 4096);
    let too_big = body_of_len(6000);

    // Declared up front with Content-Length.
    let reply = app
        .api
        .post_webhook("monitoring", &[], too_big.clone())
        .await;
    assert_refused(&app.api, &reply, 413, "larger than the 4096 bytes accepted").await;

    // Streamed in chunks without a Content-Length: refused once it grows
    // past the limit.
    let mut connection = RawConnection::open(app.api.addr).await;
    connection.send(&chunked_request(&too_big)).await;
    let reply = connection.response().await;
    assert!(reply.headers.get("content-length").is_some());
    assert_refused(&app.api, &reply, 413, "larger than the 4096 bytes accepted").await;

    assert_eq!(rejections(&app.api, "monitoring", "too_large").await, 2.0);

    // The same chunked framing just under the limit is stored.
    let mut connection = RawConnection::open(app.api.addr).await;
    connection.send(&chunked_request(&body_of_len(4096))).await;
    let reply = connection.response().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(app.api.journal_total().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn malformed_json_gets_400_with_the_parsers_message() {
    let app = app_with("monitoring", Auth::None).await;

    let reply = app.api.post_webhook("monitoring", &[], "{not json").await;
    assert_refused(
        &app.api,
        &reply,
        400,
        "body is not valid JSON: key must be a string at line 1 column 2",
    )
    .await;
    assert_eq!(rejections(&app.api, "monitoring", "malformed").await, 1.0);
    app.stop().await;
}

#[tokio::test]
async fn a_record_missing_a_required_field_gets_400_naming_the_record_and_nothing_is_stored() {
    let app = app_with("monitoring", Auth::None).await;

    // Record 0 is fine; record 1 has no summary. Neither is stored.
    let body = json!({ "alerts": [
        { "id": "ok", "status": "firing", "summary": "Fine" },
        { "id": "bad", "status": "firing" },
    ]});
    let reply = app
        .api
        .post_webhook("monitoring", &[], body.to_string())
        .await;
    assert_refused(
        &app.api,
        &reply,
        400,
        "record 1: missing `summary` at /summary",
    )
    .await;
    assert_eq!(rejections(&app.api, "monitoring", "malformed").await, 1.0);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_connector_gets_404() {
    let app = app_with("monitoring", Auth::None).await;

    let reply = app
        .api
        .post_webhook("nagios", &[], alert_body("a", "b"))
        .await;
    assert_refused(&app.api, &reply, 404, "no connector named \"nagios\"").await;
    assert_eq!(rejections(&app.api, "", "unknown_connector").await, 1.0);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_wants_its_bearer_token() {
    let app = app_with("monitoring", Auth::Bearer(TOKEN.into())).await;

    let anonymous = app.api.get("/api/v1/events").await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.error().contains("missing Authorization header"));

    let wrong = app
        .api
        .send_get_with_token("/api/v1/customers", "not-the-admin-token")
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error(), "wrong bearer token");
    // A webhook connector's token does not open the admin API either.
    let connector_token = app.api.send_get_with_token("/api/v1/events", TOKEN).await;
    assert_eq!(connector_token.status, 401);

    let right = app.api.admin_get("/api/v1/customers").await;
    assert_eq!(right.status, 200);
    assert_eq!(right.json["customers"][0]["id"], "acme");
    app.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_the_admin_api_is_switched_off() {
    let mut config = ConfigDir::new().with_connector("monitoring", Auth::None);
    config.admin_token = None;
    let app = TestApp::start(config).await;

    for token in [None, Some(ADMIN_TOKEN)] {
        let reply = match token {
            None => app.api.get("/api/v1/events").await,
            Some(t) => app.api.send_get_with_token("/api/v1/events", t).await,
        };
        assert_eq!(reply.status, 403, "{}", reply.text);
        assert_eq!(
            reply.error(),
            "the admin API is disabled: set daemon.admin_token"
        );
    }
    // Webhooks still work.
    let reply = app
        .api
        .post_webhook("monitoring", &[], alert_body("a", "b"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_without_a_token() {
    let config = ConfigDir::new()
        .with_connector("monitoring", Auth::None)
        .with_connector("grafana", Auth::Bearer(TOKEN.into()));
    let app = TestApp::start(config).await;

    let health = app.api.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json, json!({ "status": "alive" }));

    let ready = app.api.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json["status"], "ready");
    assert_eq!(ready.json["store"], "ok");
    assert_eq!(ready.json["customers"], 1);
    assert_eq!(
        ready.json["connectors"],
        json!([
            { "name": "monitoring", "kind": "webhook-json" },
            { "name": "grafana", "kind": "webhook-json" },
        ])
    );

    let reply = app
        .api
        .post_webhook("monitoring", &[], two_alerts_fixture())
        .await;
    assert_eq!(reply.status, 200);
    let metrics = app.api.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    let content_type = metrics.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    let text = &metrics.text;
    assert_eq!(
        metric(
            text,
            "csmd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            text,
            "csmd_events_ingested_total",
            &[("connector", "monitoring")]
        ),
        2.0,
        "{text}"
    );
    assert!(
        metric(text, "csmd_store_flush_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("# TYPE csmd_store_flush_seconds histogram"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    // The engine applies both alerts soon after; until then they count.
    assert!(
        metric(text, "csmd_journal_unapplied_entries", &[]) <= 2.0,
        "{text}"
    );
    wait_until(
        "the engine to apply the alerts",
        Duration::from_secs(10),
        || async {
            metric(
                &app.api.metrics().await,
                "csmd_journal_unapplied_entries",
                &[],
            ) == 0.0
        },
    )
    .await;

    let unknown = app.api.get("/nope").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error(), "no such endpoint");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_webhooks_are_all_stored_once_in_order() {
    const SENDERS: usize = 200;
    let app = app_with("monitoring", Auth::Bearer(TOKEN.into())).await;

    let posts: Vec<_> = (0..SENDERS)
        .map(|i| {
            let api = app.api.clone();
            tokio::spawn(async move {
                let body = alert_body(&format!("alert-{i}"), "concurrent");
                let reply = api.post_webhook("monitoring", &bearer(TOKEN), body).await;
                assert_eq!(reply.status, 200, "{}", reply.text);
                (
                    format!("alert-{i}"),
                    reply.json["first_seq"].as_u64().expect("first_seq"),
                )
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for post in posts {
        acknowledged.push(post.await.expect("sender task"));
    }

    let events = app.api.all_events().await;
    assert_eq!(events.len(), SENDERS);
    assert_eq!(app.api.journal_total().await, SENDERS as u64);
    let seqs: BTreeSet<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=SENDERS as u64).collect(), "sequence numbers");
    // Each sender's acknowledgement names the event it stored.
    for (id, seq) in acknowledged {
        let event = &events[seq as usize - 1];
        assert_eq!(event["seq"], seq);
        assert_eq!(event["event"]["source_id"], id.as_str());
    }
    app.stop().await;
}

//! Grafana unified alerting end to end: the `grafana` profile's fixtures
//! (Grafana's documented webhook body, payload version 1) posted to a
//! running csmd, signed the way a Grafana contact point with an HMAC secret
//! signs them: the hex HMAC-SHA256 of the body, or of `{timestamp}:{body}`
//! when a timestamp header is configured.

mod common;

use common::{ConfigDir, PATIENCE, TestApp, metric, unix_now, wait_until};
use csmd::http::auth::sign_hmac_sha256;

/// The contact point's HMAC secret, as Grafana holds it.
const SECRET: &str = "grafana-hmac-secret-for-the-tests-0123";
const SIGNATURE: &str = "X-Grafana-Alerting-Signature";
const TIMESTAMP: &str = "X-Grafana-Alerting-Timestamp";

/// csmd with two `grafana` connectors sharing one secret file: `grafana`
/// signs the body alone, `grafana-ts` also sends a timestamp.
async fn app() -> TestApp {
    let mut config = ConfigDir::new();
    // Grafana's default message makes bodies larger than the tests' usual
    // limit.
    config.max_body_bytes = 1 << 20;
    std::fs::write(config.dir().join("grafana_hmac"), format!("{SECRET}\n")).expect("secret file");
    config.extra = format!(
        r#"
[[connector]]
name = "grafana"
profile = "grafana"
[connector.webhook]
auth = "hmac-sha256"
secret = {{ file = "grafana_hmac" }}

[[connector]]
name = "grafana-ts"
profile = "grafana"
[connector.webhook]
auth = "hmac-sha256"
secret = {{ file = "grafana_hmac" }}
header = "{SIGNATURE}"
timestamp_header = "{TIMESTAMP}"
tolerance = "2m"
"#
    );
    TestApp::start(config).await
}

/// The hex HMAC-SHA256 Grafana sends (grafana/alerting, `http/hmac.go`);
/// csmd's unit tests check the scheme against openssl.
fn signature(secret: &str, timestamp: Option<i64>, body: &[u8]) -> String {
    let timestamp = timestamp.map(|ts| ts.to_string());
    hex::encode(sign_hmac_sha256(
        secret.as_bytes(),
        timestamp.as_deref(),
        body,
    ))
}

fn signed(body: &[u8]) -> Vec<(String, String)> {
    vec![(SIGNATURE.into(), signature(SECRET, None, body))]
}

fn signed_at(ts: i64, body: &[u8]) -> Vec<(String, String)> {
    vec![
        (SIGNATURE.into(), signature(SECRET, Some(ts), body)),
        (TIMESTAMP.into(), ts.to_string()),
    ]
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(common::repo_path(&format!(
        "connectors/grafana/fixtures/{name}"
    )))
    .expect("fixture")
}

const PAR: &str = "c6eadffa33fcdf37";
const LYO: &str = "bc97ff14869b13e3";

#[tokio::test]
async fn a_signed_grafana_notification_fires_then_resolves_its_alerts() {
    let app = app().await;
    let firing = fixture("firing.json");
    let reply = app
        .api
        .post_webhook("grafana", &signed(&firing), firing.clone())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["stored"], 2, "{}", reply.text);
    wait_until("both firing alerts in csmd", PATIENCE, || async {
        app.api
            .alerts()
            .await
            .iter()
            .filter(|a| a["status"] == "firing")
            .count()
            == 2
    })
    .await;
    let par = app.api.alert(PAR).await.expect("the Paris alert");
    assert_eq!(par["connector"], "grafana");
    assert_eq!(par["ci"], "core-sw-par-01");
    assert_eq!(par["service"], "vpn");
    assert_eq!(par["severity"], "critical");
    assert_eq!(par["summary"], "Packet loss above 5% on core-sw-par-01");
    // Grafana writes local times with an offset; csmd keeps them in UTC.
    assert_eq!(par["starts_at"], "2026-11-23T09:51:00Z");
    assert!(par["ends_at"].is_null(), "{par}");
    let lyo = app.api.alert(LYO).await.expect("the Lyon alert");
    assert_eq!(lyo["ci"], "edge-rtr-lyo-02");
    // No `service` label: the job is the service.
    assert_eq!(lyo["service"], "node");

    let resolved = fixture("resolved.json");
    let reply = app
        .api
        .post_webhook("grafana", &signed(&resolved), resolved.clone())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    wait_until("both alerts resolved", PATIENCE, || async {
        app.api
            .alerts()
            .await
            .iter()
            .all(|a| a["status"] == "resolved")
    })
    .await;
    let par = app.api.alert(PAR).await.unwrap();
    assert_eq!(par["ends_at"], "2026-11-23T10:07:00Z");
    assert_eq!(par["starts_at"], "2026-11-23T09:51:00Z");
    assert_eq!(app.api.alerts().await.len(), 2);

    // With a timestamp header, `{timestamp}:{body}` is what is signed.
    let now = unix_now();
    let reply = app
        .api
        .post_webhook("grafana-ts", &signed_at(now, &firing), firing.clone())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    app.stop().await;
}

#[tokio::test]
async fn wrong_missing_or_stale_signatures_get_401_and_store_nothing() {
    let app = app().await;
    let firing = fixture("firing.json");
    let before = app.api.journal_total().await;
    let refused = |connector: &'static str, headers: Vec<(String, String)>| {
        let api = app.api.clone();
        let body = firing.clone();
        async move {
            let reply = api.post_webhook(connector, &headers, body).await;
            assert_eq!(reply.status, 401, "{}", reply.text);
            reply.error().to_string()
        }
    };

    assert_eq!(
        refused("grafana", vec![]).await,
        "missing X-Grafana-Alerting-Signature header (hex HMAC-SHA256 of the body)"
    );
    let wrong_secret = vec![(
        SIGNATURE.to_string(),
        signature("another-secret-entirely-0123", None, &firing),
    )];
    assert_eq!(
        refused("grafana", wrong_secret).await,
        "X-Grafana-Alerting-Signature is not the hex HMAC-SHA256 of the body with the configured secret"
    );
    // A signature of another body (the resolution) does not sign this one.
    let other_body = signed(&fixture("resolved.json"));
    assert_eq!(
        refused("grafana", other_body).await,
        "X-Grafana-Alerting-Signature is not the hex HMAC-SHA256 of the body with the configured secret"
    );

    // With a timestamp header: it must be there, recent, and signed.
    assert_eq!(
        refused("grafana-ts", signed(&firing)).await,
        "missing X-Grafana-Alerting-Timestamp header"
    );
    let stale = unix_now() - 600;
    let message = refused("grafana-ts", signed_at(stale, &firing)).await;
    assert!(
        message.starts_with("X-Grafana-Alerting-Timestamp is ")
            && message.ends_with("s away from this server's clock; at most 120s is accepted"),
        "{message}"
    );
    let now = unix_now();
    let mut moved = signed_at(now, &firing);
    moved[1].1 = (now + 1).to_string();
    assert_eq!(
        refused("grafana-ts", moved).await,
        "X-Grafana-Alerting-Signature is not the hex HMAC-SHA256 of X-Grafana-Alerting-Timestamp, \":\" and the body with the configured secret"
    );

    assert_eq!(app.api.journal_total().await, before);
    assert!(app.api.alerts().await.is_empty());
    let metrics = app.api.metrics().await;
    let rejected = |connector: &str, reason: &str| {
        metric(
            &metrics,
            "csmd_webhook_rejections_total",
            &[("connector", connector), ("reason", reason)],
        )
    };
    assert_eq!(rejected("grafana", "unsigned"), 1.0);
    assert_eq!(rejected("grafana", "bad_signature"), 2.0);
    assert_eq!(rejected("grafana-ts", "unsigned"), 1.0);
    assert_eq!(rejected("grafana-ts", "stale_timestamp"), 1.0);
    assert_eq!(rejected("grafana-ts", "bad_signature"), 1.0);
    app.stop().await;
}

//! Monitoring alerts end to end: a real Prometheus Alertmanager delivering
//! to csmd's `alertmanager` connector, and recorded deliveries replayed,
//! repeated and reordered to check that each alert's state in the store
//! only ever moves forward.

mod common;

use common::{
    Alertmanager, ConfigDir, MONITORING_TOKEN, PATIENCE, TestApp, add_monitoring_connector, bearer,
    metric, wait_until,
};
use serde_json::{Value, json};

/// csmd with one `alertmanager` connector, `monitoring`, behind a bearer
/// token.
async fn app() -> TestApp {
    let mut config = ConfigDir::new();
    add_monitoring_connector(&mut config);
    // acme uses the VPN service; its notices go out a second after the
    // first alert.
    std::fs::write(
        config.customers_dir().join("acme.toml"),
        "id = \"acme\"\nname = \"ACME Logistics SAS\"\ntime_zone = \"Europe/Paris\"\n\n\
         [[contact]]\nname = \"Claire Martin\"\nemail = \"claire@acme.example\"\n\
         roles = [\"primary\"]\n\n[[install_base]]\nservice = \"vpn\"\n",
    )
    .expect("customer file");
    TestApp::start(config).await
}

fn fixture(name: &str) -> Value {
    let path = common::repo_path(&format!("connectors/alertmanager/fixtures/{name}"));
    serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture is JSON")
}

#[tokio::test]
async fn a_real_alertmanager_fires_and_resolves_an_alert_in_csmd() {
    let app = app().await;
    let am = Alertmanager::start(&app.api.url("/webhooks/monitoring"), MONITORING_TOKEN).await;
    let labels = json!({"alertname": "InstanceDown", "instance": "core-sw-par-01:9100",
                        "job": "node", "service": "vpn", "severity": "critical"});
    am.fire(&[json!({"labels": labels, "annotations": {"summary": "core-sw-par-01 is down"}})])
        .await;
    wait_until("the firing alert in csmd", PATIENCE, || async {
        app.api
            .alerts()
            .await
            .iter()
            .any(|a| a["status"] == "firing")
    })
    .await;
    let firing = app.api.alerts().await.remove(0);
    assert_eq!(firing["connector"], "monitoring");
    assert_eq!(firing["ci"], "core-sw-par-01");
    assert_eq!(firing["service"], "vpn");
    assert_eq!(firing["severity"], "critical");
    assert_eq!(firing["summary"], "core-sw-par-01 is down");
    assert!(firing["starts_at"].is_string(), "{firing}");
    // ... and queued acme's disruption notice.
    wait_until("acme's notice", PATIENCE, || async {
        outbox_kinds(&app).await == ["disruption"]
    })
    .await;

    am.resolve(&labels).await;
    let fingerprint = firing["source_id"].as_str().unwrap().to_string();
    wait_until("the resolution in csmd", PATIENCE, || async {
        app.api
            .alert(&fingerprint)
            .await
            .is_some_and(|a| a["status"] == "resolved")
    })
    .await;
    let resolved = app.api.alert(&fingerprint).await.unwrap();
    assert!(resolved["ends_at"].is_string(), "{resolved}");
    assert_eq!(resolved["starts_at"], firing["starts_at"]);
    assert_eq!(app.api.alerts().await.len(), 1);
    wait_until("acme's resolution", PATIENCE, || async {
        outbox_kinds(&app).await == ["disruption", "disruption_resolved"]
    })
    .await;
    app.stop().await;
}

/// The kinds of acme's outbox messages, oldest first.
async fn outbox_kinds(app: &TestApp) -> Vec<String> {
    let reply = app.api.admin_get("/api/v1/outbox?customer=acme").await;
    let mut messages = reply.json["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    messages.sort_by_key(|m| m["created_at"].as_str().unwrap_or_default().to_string());
    messages
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn repeated_and_late_deliveries_never_move_an_alert_backwards() {
    let app = app().await;
    let post = |body: Value| {
        let api = app.api.clone();
        async move {
            api.post_webhook("monitoring", &bearer(MONITORING_TOKEN), body.to_string())
                .await
        }
    };
    let firing = fixture("firing.json");
    let fingerprint = firing["alerts"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        let reply = post(firing.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    wait_until("the alert", PATIENCE, || async {
        app.api
            .alert(&fingerprint)
            .await
            .is_some_and(|a| a["deliveries"] == 2)
    })
    .await;
    assert_eq!(
        app.api.alert(&fingerprint).await.unwrap()["status"],
        "firing"
    );

    let reply = post(fixture("resolved.json")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    // A retry of the firing delivery arrives after the resolution, then a
    // new alert as a barrier: once it is stored, the retry was applied.
    assert_eq!(post(firing.clone()).await.status, 200);
    let mut barrier = firing.clone();
    barrier["alerts"][0]["fingerprint"] = json!("barrier0000000001");
    barrier["truncatedAlerts"] = json!(3);
    assert_eq!(post(barrier).await.status, 200);
    wait_until("the barrier", PATIENCE, || async {
        app.api.alert("barrier0000000001").await.is_some()
    })
    .await;
    let after = app.api.alert(&fingerprint).await.unwrap();
    assert_eq!(after["status"], "resolved", "{after}");
    assert!(after["ends_at"].is_string());

    // truncatedAlerts is counted; refused bodies store nothing.
    let metrics = app.api.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "csmd_alerts_truncated_total",
            &[("connector", "monitoring")]
        ),
        3.0
    );
    let events = app.api.journal_total().await;
    let mut old = firing.clone();
    old["version"] = json!("3");
    let reply = post(old).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.error(),
        "payload version \"3\" is not supported; this profile reads version 4"
    );
    let reply = app
        .api
        .post_webhook("monitoring", &bearer("wrong"), firing.to_string())
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(app.api.journal_total().await, events);
    app.stop().await;
}

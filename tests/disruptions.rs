//! Proactive disruption notices end to end: alerts delivered by
//! Alertmanager's webhook reach, through the install base, the customers
//! using the alerting CI or service, who get one grouped notice, an update
//! when more alerts join, and a resolution with the duration; never when
//! their contract opts out, below their severity threshold, or while a
//! change they were told about is under way on that CI.

mod common;
mod itsm;
mod sim;

use common::{
    ConfigDir, MONITORING_TOKEN, PATIENCE, TestApp, add_monitoring_connector, bearer, wait_until,
};
use serde_json::{Value, json};

/// A customer file: a primary contact, the install base and contract lines.
fn customer(id: &str, install_base: &str, contract: &str) -> String {
    format!(
        "id = \"{id}\"\nname = \"{id} corp\"\ntime_zone = \"Europe/Paris\"\n\n\
         [[contact]]\nname = \"Ops {id}\"\nemail = \"ops@{id}.example\"\nroles = [\"primary\"]\n\n\
         {install_base}\n[contract]\n{contract}\n"
    )
}

/// The alertmanager connector, short disruption timers and four customers,
/// in `config`: acme on its own switch, the others on a shared VPN gateway.
fn monitoring(config: &mut ConfigDir) {
    add_monitoring_connector(config);
    let customers = config.customers_dir();
    let write = |id: &str, text: String| {
        std::fs::write(customers.join(format!("{id}.toml")), text).expect("customer file")
    };
    write(
        "acme",
        customer(
            "acme",
            "[[install_base]]\nci = \"core-sw-par-01\"\nservice = \"vpn\"\n",
            "",
        ),
    );
    write(
        "globex",
        customer(
            "globex",
            "[[install_base]]\nci = \"vpn-gw-1\"\nservice = \"vpn\"\n",
            "",
        ),
    );
    write(
        "initech",
        customer(
            "initech",
            "[[install_base]]\nci = \"vpn-gw-1\"\n",
            "proactive_notices = false",
        ),
    );
    write(
        "hooli",
        customer(
            "hooli",
            "[[install_base]]\nci = \"vpn-gw-1\"\n",
            "notice_min_severity = \"critical\"",
        ),
    );
}

/// An Alertmanager webhook body with these alerts.
fn delivery(alerts: &[(&str, &str, &str, &str)]) -> String {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fingerprint, status, ci, summary)| {
            let ends = if *status == "resolved" {
                chrono::Utc::now().to_rfc3339()
            } else {
                "0001-01-01T00:00:00Z".into()
            };
            json!({"status": status, "fingerprint": fingerprint,
                   "labels": {"alertname": "Down", "instance": format!("{ci}:9100"), "severity": "major"},
                   "annotations": {"summary": summary},
                   "startsAt": "2026-11-22T10:00:00Z", "endsAt": ends})
        })
        .collect();
    json!({"version": "4", "status": "firing", "receiver": "csmd", "groupKey": "g",
           "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts})
    .to_string()
}

/// The outbox's disruption messages of a customer, oldest first.
async fn notices(app: &TestApp, customer: &str) -> Vec<Value> {
    let reply = app
        .api
        .admin_get(&format!("/api/v1/outbox?customer={customer}"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut found: Vec<Value> = reply.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"].as_str().unwrap().starts_with("disruption"))
        .cloned()
        .collect();
    found.sort_by_key(|m| m["created_at"].as_str().unwrap().to_string());
    found
}

async fn kinds(app: &TestApp, customer: &str) -> Vec<String> {
    notices(app, customer)
        .await
        .iter()
        .map(|m| m["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn post(app: &TestApp, body: String) {
    let reply = app
        .api
        .post_webhook("monitoring", &bearer(MONITORING_TOKEN), body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[tokio::test]
async fn customers_of_an_alerting_ci_get_one_grouped_notice_an_update_and_a_resolution() {
    let mut config = ConfigDir::new();
    monitoring(&mut config);
    let app = TestApp::start(config).await;

    // Two alerts at once: acme's switch, and the shared VPN gateway.
    post(
        &app,
        delivery(&[
            ("fp-switch", "firing", "core-sw-par-01", "Core switch down"),
            ("fp-gw", "firing", "vpn-gw-1", "VPN gateway down"),
        ]),
    )
    .await;
    wait_until("the notices", PATIENCE, || async {
        kinds(&app, "acme").await.len() == 1 && kinds(&app, "globex").await.len() == 1
    })
    .await;
    let acme = &notices(&app, "acme").await[0];
    assert_eq!(acme["kind"], "disruption");
    assert_eq!(acme["to"], "Ops acme <ops@acme.example>");
    let subject = acme["subject"].as_str().unwrap();
    assert_eq!(
        subject,
        "Service disruption since Sun 22 Nov 2026, 11:00 CET"
    );
    let text = app.api.outbox_text(acme).await;
    // acme uses the switch only: its notice names it, not the gateway.
    assert!(text.contains("Core switch down"), "{text}");
    assert!(!text.contains("VPN gateway down"), "{text}");
    assert!(
        text.contains("Reference:  DIS-acme-20261122-1100"),
        "{text}"
    );
    let globex = &notices(&app, "globex").await[0];
    let text = app.api.outbox_text(globex).await;
    assert!(text.contains("VPN gateway down"), "{text}");

    // Another alert on acme's switch joins the open disruption: an update.
    post(
        &app,
        delivery(&[(
            "fp-switch-2",
            "firing",
            "core-sw-par-01",
            "Switch port errors",
        )]),
    )
    .await;
    wait_until("acme's update", PATIENCE, || async {
        kinds(&app, "acme").await.len() == 2
    })
    .await;
    assert_eq!(kinds(&app, "acme").await[1], "disruption_update");

    // Everything clears: one resolution each, with the duration.
    post(
        &app,
        delivery(&[
            (
                "fp-switch",
                "resolved",
                "core-sw-par-01",
                "Core switch down",
            ),
            (
                "fp-switch-2",
                "resolved",
                "core-sw-par-01",
                "Switch port errors",
            ),
            ("fp-gw", "resolved", "vpn-gw-1", "VPN gateway down"),
        ]),
    )
    .await;
    wait_until("the resolutions", PATIENCE, || async {
        kinds(&app, "acme").await.len() == 3 && kinds(&app, "globex").await.len() == 2
    })
    .await;
    let resolved = &notices(&app, "acme").await[2];
    assert_eq!(resolved["kind"], "disruption_resolved");
    assert!(
        resolved["subject"]
            .as_str()
            .unwrap()
            .starts_with("Resolved: Service disruption since"),
        "{resolved}"
    );
    let text = app.api.outbox_text(resolved).await;
    assert!(text.contains("Duration:"), "{text}");

    // A repeated delivery sends nothing more. A new alert on acme's switch,
    // starting now, is the barrier: once its notice is queued, the planner
    // has seen the repeat.
    post(
        &app,
        delivery(&[("fp-gw", "resolved", "vpn-gw-1", "VPN gateway down")]),
    )
    .await;
    let mut barrier: Value = serde_json::from_str(&delivery(&[(
        "fp-switch-3",
        "firing",
        "core-sw-par-01",
        "Switch rebooted",
    )]))
    .unwrap();
    barrier["alerts"][0]["startsAt"] = json!(chrono::Utc::now().to_rfc3339());
    post(&app, barrier.to_string()).await;
    wait_until("acme's new disruption", PATIENCE, || async {
        kinds(&app, "acme").await.len() == 4
    })
    .await;
    assert_eq!(kinds(&app, "acme").await[3], "disruption");
    assert_eq!(
        kinds(&app, "globex").await,
        ["disruption", "disruption_resolved"]
    );
    // The customer that opted out and the one that wants only critical
    // alerts heard nothing.
    assert!(kinds(&app, "initech").await.is_empty());
    assert!(kinds(&app, "hooli").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_alert_inside_a_change_under_way_is_not_a_disruption() {
    let sn = sim::servicenow::Simulator::builder()
        .table("change_request", itsm::CHANGE_FIELDS)
        .basic_user(itsm::USER, itsm::PASSWORD)
        .now(itsm::INSTANCE_NOW)
        .start()
        .await;
    let hour = |h: i64| {
        (chrono::Utc::now() + chrono::Duration::hours(h))
            .format(sim::servicenow::DATETIME_FORMAT)
            .to_string()
    };
    // A normal change being implemented on acme's switch now.
    sn.insert(
        "change_request",
        json!({"number": "CHG0000042", "state": "-1", "type": "normal",
               "start_date": hour(-1), "end_date": hour(1), "cmdb_ci": "core-sw-par-01",
               "sys_updated_on": itsm::at(1)}),
    );
    let mut config = itsm::Connector::new(&sn).streams(&["changes"]).config();
    monitoring(&mut config);
    let app = TestApp::start(config).await;
    let health = itsm::first_sync(&app.api).await;
    assert_eq!(health["field_errors"], json!([]), "{health}");
    itsm::wait_stored(
        &app.api,
        "changes",
        sn.records("change_request")[0]["sys_id"].as_str().unwrap(),
    )
    .await;

    // The switch alerts (under the change), and the shared gateway too: the
    // gateway's notices are the barrier.
    post(
        &app,
        delivery(&[
            ("fp-switch", "firing", "core-sw-par-01", "Core switch down"),
            ("fp-gw", "firing", "vpn-gw-1", "VPN gateway down"),
        ]),
    )
    .await;
    wait_until("globex's notice", PATIENCE, || async {
        kinds(&app, "globex").await.len() == 1
    })
    .await;
    // acme got nothing for its switch, under maintenance.
    assert!(
        kinds(&app, "acme").await.is_empty(),
        "{:?}",
        notices(&app, "acme").await
    );
    // The alert is shown as held back by the change.
    let told = app.api.admin_get("/api/v1/disruptions").await;
    assert_eq!(told.status, 200, "{}", told.text);
    let acme = told.json["customers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["customer"] == "acme")
        .cloned()
        .unwrap_or_else(|| panic!("acme in {}", told.text));
    assert_eq!(acme["open"], Value::Null);
    let held: Vec<_> = acme["during_maintenance"]
        .as_object()
        .unwrap()
        .values()
        .collect();
    assert_eq!(held, [&json!("CHG0000042")]);
    app.stop().await;
}

//! Proactive ITSM tickets: a monitoring connector with `[connector.itsm]`
//! opens, through the ITSM connector's write-back (against the ServiceNow
//! simulator), one major incident per outage and one proactive case per
//! customer it reaches, linked by correlation id; both get a work note and
//! are resolved when the alerts clear. Never twice, even across a kill -9.

mod common;
mod itsm;
mod sim;

use std::time::Duration;

use std::sync::LazyLock;

use chrono::{DateTime, Timelike, Utc};
use common::{
    ConfigDir, Daemon, MONITORING_TOKEN, PATIENCE, TestApp, add_monitoring_connector, bearer,
};
use serde_json::{Value, json};
use sim::servicenow::Simulator;

/// The incident columns csmd writes a major incident into.
const INCIDENT_FIELDS: &[&str] = &[
    "number",
    "short_description",
    "description",
    "cmdb_ci",
    "business_service",
    "assignment_group",
    "impact",
    "urgency",
    "major_incident_state",
    "state",
    "close_code",
    "close_notes",
    "correlation_id",
    "work_notes",
];

const CASE_FIELDS: &[&str] = &[
    "number",
    "short_description",
    "description",
    "account",
    "business_service",
    "assignment_group",
    "priority",
    "proactive",
    "state",
    "close_notes",
    "correlation_id",
    "work_notes",
];

async fn instance() -> Simulator {
    Simulator::builder()
        .table("change_request", itsm::CHANGE_FIELDS)
        .table("incident", INCIDENT_FIELDS)
        .table("sn_customerservice_case", CASE_FIELDS)
        .basic_user(itsm::USER, itsm::PASSWORD)
        .start()
        .await
}

fn customer(id: &str, account: &str, ci: &str, service: &str) -> String {
    format!(
        "id = \"{id}\"\nname = \"{id} corp\"\nitsm_account = \"{account}\"\n\n\
         [[contact]]\nname = \"Ops {id}\"\nemail = \"ops@{id}.example\"\nroles = [\"primary\"]\n\n\
         [[install_base]]\nci = \"{ci}\"\nservice = \"{service}\"\n"
    )
}

/// The ITSM connector `itsm` (reading nothing, writing tickets), the
/// `monitoring` connector opening tickets through it, three customers on
/// the shared VPN and one elsewhere.
fn config(sn: &Simulator) -> ConfigDir {
    config_reading(sn, &[])
}

/// [`config`], with the ITSM connector reading `streams`.
fn config_reading(sn: &Simulator, streams: &[&'static str]) -> ConfigDir {
    let mut config = itsm::Connector::new(sn).streams(streams).config();
    add_monitoring_connector(&mut config);
    config.extra += "[connector.itsm]\nwriteback = \"itsm\"\nmin_severity = \"major\"\n\
                     assignment_group = \"Network Operations\"\n";
    let customers = config.customers_dir();
    for (id, account, ci, service) in [
        ("acme", "ACC001", "vpn-gw-1", "ip-vpn"),
        ("globex", "ACC002", "vpn-gw-2", "ip-vpn"),
        ("initech", "ACC003", "vpn-gw-1", "ip-vpn"),
        ("hooli", "ACC004", "dc-sw-9", "colocation"),
    ] {
        std::fs::write(
            customers.join(format!("{id}.toml")),
            customer(id, account, ci, service),
        )
        .expect("customer file");
    }
    config
}

/// When the test alerts started: an hour ago, on the minute.
static STARTED: LazyLock<DateTime<Utc>> = LazyLock::new(|| {
    let now = Utc::now() - chrono::Duration::hours(1);
    now.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("on the minute")
});

/// An Alertmanager webhook body: (fingerprint, status, instance, severity);
/// the alerts started at [`STARTED`], and resolved ones ended 42 minutes
/// later.
fn delivery(alerts: &[(&str, &str, &str, &str)]) -> String {
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|(fingerprint, status, instance, severity)| {
            let ends = if *status == "resolved" {
                (*STARTED + chrono::Duration::minutes(42)).to_rfc3339()
            } else {
                "0001-01-01T00:00:00Z".to_string()
            };
            json!({"status": status, "fingerprint": fingerprint,
                   "labels": {"alertname": "LinkDown", "instance": format!("{instance}:9100"),
                              "service": "ip-vpn", "severity": severity},
                   "annotations": {"summary": format!("Link down on {instance}")},
                   "startsAt": STARTED.to_rfc3339(), "endsAt": ends})
        })
        .collect();
    json!({"version": "4", "status": "firing", "receiver": "csmd", "groupKey": "g",
           "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "http://am", "alerts": alerts})
    .to_string()
}

async fn post(api: &common::Api, body: String) {
    let reply = api
        .post_webhook("monitoring", &bearer(MONITORING_TOKEN), body)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

fn incidents(sn: &Simulator) -> Vec<Value> {
    sn.records("incident")
        .into_iter()
        .filter(|r| {
            r["correlation_id"]
                .as_str()
                .is_some_and(|c| c.starts_with("csmd-mi-"))
        })
        .collect()
}

fn cases(sn: &Simulator) -> Vec<Value> {
    sn.records("sn_customerservice_case")
}

async fn wait_for_tickets(sn: &Simulator, incidents_n: usize, cases_n: usize) {
    common::wait_until(
        &format!("{incidents_n} major incident(s) and {cases_n} case(s)"),
        PATIENCE,
        || async { incidents(sn).len() == incidents_n && cases(sn).len() == cases_n },
    )
    .await;
}

#[tokio::test]
async fn an_outage_opens_one_major_incident_and_a_case_per_customer_then_resolves_them() {
    common::install_crypto();
    let sn = instance().await;
    let app = TestApp::start(config(&sn)).await;

    // Two critical alerts and one warning on the shared VPN service.
    post(
        &app.api,
        delivery(&[
            ("f1", "firing", "vpn-gw-1", "critical"),
            ("f2", "firing", "vpn-gw-2", "critical"),
            ("f3", "firing", "vpn-gw-2", "warning"),
        ]),
    )
    .await;
    wait_for_tickets(&sn, 1, 3).await;
    let open = app.api.admin_get("/api/v1/outages").await;
    assert_eq!(open.status, 200, "{}", open.text);
    assert_eq!(open.json["outages"][0]["target"], "ip-vpn", "{}", open.text);
    assert_eq!(
        open.json["outages"][0]["cases"]
            .as_object()
            .map(|c| c.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["acme".to_string(), "globex".into(), "initech".into()])
    );

    let incident = &incidents(&sn)[0];
    let key = incident["correlation_id"].as_str().unwrap().to_string();
    assert!(
        incident["short_description"]
            .as_str()
            .unwrap()
            .starts_with("Outage of ip-vpn"),
        "{incident}"
    );
    assert_eq!(incident["assignment_group"], "Network Operations");
    assert_eq!(incident["major_incident_state"], "accepted");
    assert_eq!(incident["business_service"], "ip-vpn");
    let description = incident["description"].as_str().unwrap();
    assert!(
        description.contains("acme corp, globex corp, initech corp"),
        "{description}"
    );
    assert!(!description.contains("hooli"), "{description}");
    assert!(
        !description.contains("[warning]"),
        "below min_severity: {description}"
    );

    let mut accounts: Vec<String> = cases(&sn)
        .iter()
        .map(|c| {
            let correlation = c["correlation_id"].as_str().unwrap();
            assert!(
                correlation.starts_with(&format!("{key}-")),
                "a case names its major incident: {correlation}"
            );
            assert_eq!(c["proactive"], "true");
            assert_eq!(c["assignment_group"], "Network Operations");
            assert!(c["description"].as_str().unwrap().contains(&key), "{c}");
            c["account"].as_str().unwrap().to_string()
        })
        .collect();
    accounts.sort();
    assert_eq!(accounts, ["ACC001", "ACC002", "ACC003"]);

    // Alertmanager repeats the delivery: nothing new is opened.
    post(
        &app.api,
        delivery(&[
            ("f1", "firing", "vpn-gw-1", "critical"),
            ("f2", "firing", "vpn-gw-2", "critical"),
        ]),
    )
    .await;

    // One alert clears: the outage goes on.
    post(
        &app.api,
        delivery(&[("f1", "resolved", "vpn-gw-1", "critical")]),
    )
    .await;
    // The last one clears: every ticket gets the note and is resolved.
    post(
        &app.api,
        delivery(&[("f2", "resolved", "vpn-gw-2", "critical")]),
    )
    .await;
    common::wait_until("every ticket resolved", PATIENCE, || async {
        incidents(&sn)
            .iter()
            .chain(&cases(&sn))
            .all(|t| t["state"] == "6")
    })
    .await;
    assert_eq!(incidents(&sn).len(), 1);
    assert_eq!(cases(&sn).len(), 3);
    assert_eq!(
        app.api.admin_get("/api/v1/outages").await.json["outages"],
        json!([])
    );
    for ticket in incidents(&sn).iter().chain(&cases(&sn)) {
        let note = ticket["work_notes"].as_str().unwrap_or_default();
        assert!(
            note.starts_with("Resolved: every alert of the outage of ip-vpn"),
            "{ticket}"
        );
        assert!(note.contains("it lasted 42 min"), "{note}");
    }
    app.stop().await;
}

#[tokio::test]
async fn customers_reached_later_get_their_case_and_the_incident_a_note() {
    common::install_crypto();
    let sn = instance().await;
    let app = TestApp::start(config(&sn)).await;

    // A probe of globex's own (its `customer` label) on the shared VPN.
    let mut probe: Value =
        serde_json::from_str(&delivery(&[("g1", "firing", "vpn-gw-2", "critical")])).unwrap();
    probe["alerts"][0]["labels"]["customer"] = json!("globex");
    post(&app.api, probe.to_string()).await;
    wait_for_tickets(&sn, 1, 1).await;
    assert_eq!(cases(&sn)[0]["account"], "ACC002");

    // Then the gateway itself alerts: the same outage reaches everyone on
    // the service.
    post(
        &app.api,
        delivery(&[("g2", "firing", "vpn-gw-1", "critical")]),
    )
    .await;
    wait_for_tickets(&sn, 1, 3).await;
    common::wait_until(
        "the incident noted the alert and the customers",
        PATIENCE,
        || async {
            incidents(&sn)[0]["work_notes"].as_str().is_some_and(|n| {
                n.contains("Alerts joined the outage")
                    && n.contains("vpn-gw-1")
                    && n.contains("Now also reaching: acme corp, initech corp")
            })
        },
    )
    .await;
    let incident_key = incidents(&sn)[0]["correlation_id"]
        .as_str()
        .unwrap()
        .to_string();
    for case in cases(&sn) {
        assert!(
            case["correlation_id"]
                .as_str()
                .unwrap()
                .starts_with(&incident_key),
            "{case}"
        );
    }
    assert_eq!(incidents(&sn).len(), 1, "one outage, one major incident");
    app.stop().await;
}

#[tokio::test]
async fn killing_the_daemon_while_tickets_are_written_never_opens_them_twice() {
    common::install_crypto();
    let sn = instance().await;
    // The instance is slow to answer the first creates: csmd is killed
    // while it waits, with some tickets created and their ids not stored.
    sn.fail_next(
        sim::servicenow::Fault::ForMethod(
            "POST".into(),
            Box::new(sim::servicenow::Fault::AnswerLate(Duration::from_secs(60))),
        ),
        1,
    );
    let mut config = config(&sn).on_free_port();
    config.write();
    let mut daemon = Daemon::start(&mut config, &[]).await;
    post(
        &daemon.api,
        delivery(&[("k1", "firing", "vpn-gw-1", "critical")]),
    )
    .await;
    common::wait_until("the first ticket created upstream", PATIENCE, || async {
        incidents(&sn).len() + cases(&sn).len() >= 1
    })
    .await;
    daemon.kill9();

    let mut daemon = Daemon::start(&mut config, &[]).await;
    wait_for_tickets(&sn, 1, 3).await;
    common::wait_until("every write done", PATIENCE, || async {
        let writes = daemon.api.admin_get("/api/v1/writes?connector=itsm").await;
        writes.json["writes"]
            .as_array()
            .is_some_and(|w| w.len() == 4 && w.iter().all(|w| w["status"] == "done"))
    })
    .await;
    assert_eq!(incidents(&sn).len(), 1);
    assert_eq!(cases(&sn).len(), 3, "one case per customer of the service");
    daemon.kill9();
}

#[tokio::test]
async fn customers_told_of_a_change_under_way_on_the_alerting_ci_get_no_case() {
    let sn = instance().await;
    let hour = |h: i64| {
        (Utc::now() + chrono::Duration::hours(h))
            .format(sim::servicenow::DATETIME_FORMAT)
            .to_string()
    };
    // A change being implemented on vpn-gw-1, which acme and initech use.
    sn.insert(
        "change_request",
        json!({"number": "CHG0000042", "state": "-1", "type": "normal",
               "start_date": hour(-1), "end_date": hour(1), "cmdb_ci": "vpn-gw-1",
               "sys_updated_on": itsm::at(1)}),
    );
    let app = TestApp::start(config_reading(&sn, &["changes"])).await;
    itsm::first_sync(&app.api).await;
    itsm::wait_stored(
        &app.api,
        "changes",
        sn.records("change_request")[0]["sys_id"].as_str().unwrap(),
    )
    .await;

    post(
        &app.api,
        delivery(&[("m1", "firing", "vpn-gw-1", "critical")]),
    )
    .await;
    // globex, on the same service through another gateway, was not told.
    wait_for_tickets(&sn, 1, 1).await;
    assert_eq!(cases(&sn)[0]["account"], "ACC002");
    let description = incidents(&sn)[0]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        description.contains("Customers reached (1): globex corp"),
        "{description}"
    );
    app.stop().await;
}

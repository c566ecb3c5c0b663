//! Customer e-mail end to end: changes read from the ITSM (the simulator)
//! become maintenance notices in the outbox, delivered over SMTP to a real
//! server (aiosmtpd) on loopback, with their iCalendar parts.

mod common;
mod itsm;
mod sim;

use common::{ConfigDir, PATIENCE, SmtpServer, TestApp, wait_until};
use itsm::{Connector, first_sync, sync_now};
use serde_json::{Value, json};
use sim::servicenow::Simulator;

const CHANGE_FIELDS: &[&str] = &[
    "number",
    "state",
    "type",
    "short_description",
    "start_date",
    "end_date",
    "work_start",
    "work_end",
    "close_code",
    "cmdb_ci",
];

/// The CI the example customers use, by sys_id.
const CORE_SWITCH: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

async fn instance() -> Simulator {
    let sn = Simulator::builder()
        .table("change_request", CHANGE_FIELDS)
        .basic_user("csmd", "sn-password")
        .start()
        .await;
    sn.use_wall_clock();
    sn
}

fn sn_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A scheduled change on the core switch, starting in `hours`, two hours long.
fn change(number: &str, hours: i64) -> Value {
    let start = chrono::Utc::now() + chrono::Duration::hours(hours);
    json!({
        "number": number,
        "state": "-2",
        "type": "normal",
        "short_description": "Core switch firmware upgrade",
        "start_date": sn_time(start),
        "end_date": sn_time(start + chrono::Duration::hours(2)),
        "cmdb_ci": CORE_SWITCH,
    })
}

/// Customers using the core switch, each with one maintenance contact, and
/// a customer that does not.
fn customers(config: &ConfigDir, using: &[(&str, &str)]) {
    for (id, name) in using {
        let text = format!(
            "id = \"{id}\"\nname = {name:?}\ntime_zone = \"Europe/Paris\"\n\n\
             [[contact]]\nname = \"Ops {id}\"\nemail = \"ops@{id}.example\"\nroles = [\"maintenance\"]\n\n\
             [contract]\nmaintenance_notice_lead_time = \"5d\"\n\n\
             [[install_base]]\nci = \"{CORE_SWITCH}\"\nservice = \"ip-vpn\"\n"
        );
        std::fs::write(config.customers_dir().join(format!("{id}.toml")), text)
            .expect("write customer");
    }
}

fn smtp_config(config: &mut ConfigDir, smtp: &SmtpServer) {
    config.email = format!(
        "transport = \"smtp\"\nrate = \"off\"\nretry_backoff = \"100ms\"\nretry_backoff_max = \"300ms\"\n\
         [email.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout = \"5s\"\n",
        smtp.port()
    );
}

async fn app(sn: &Simulator, smtp: &SmtpServer, using: &[(&str, &str)]) -> TestApp {
    let mut config = Connector::new(sn).streams(&["changes"]).config();
    smtp_config(&mut config, smtp);
    customers(&config, using);
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;
    app
}

fn calendar(message: &common::Received) -> (String, String) {
    let (content_type, bytes) = message
        .attachment_or_part("text/calendar")
        .unwrap_or_else(|| {
            panic!(
                "no calendar part in\n{}",
                String::from_utf8_lossy(&message.raw)
            )
        });
    (
        content_type,
        String::from_utf8(bytes).expect("UTF-8 calendar"),
    )
}

fn ics_value(ics: &str, name: &str) -> Option<String> {
    ics.lines()
        .find(|l| l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name};")))
        .map(|l| {
            l.split_once(':')
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        })
}

async fn outbox(app: &TestApp, query: &str) -> Value {
    let reply = app.api.admin_get(&format!("/api/v1/outbox{query}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

#[tokio::test]
async fn a_change_on_a_shared_ci_notifies_its_customers_then_updates_and_cancels() {
    let smtp = SmtpServer::start();
    let sn = instance().await;
    let id = sn.insert("change_request", change("CHG0030001", 48));
    let app = app(
        &sn,
        &smtp,
        &[("acme", "ACME Logistics SAS"), ("globex", "Globex")],
    )
    .await;

    // One advance notice per customer using the CI; it is inside the lead
    // time (5 days), so it goes at once and says short notice.
    let notices = smtp.wait_for_messages_async(2, PATIENCE).await;
    let mut to: Vec<_> = notices.iter().map(|m| m.rcpt_tos.join(",")).collect();
    to.sort();
    assert_eq!(to, ["ops@acme.example", "ops@globex.example"]);
    let acme = notices
        .iter()
        .find(|m| m.rcpt_tos == ["ops@acme.example"])
        .expect("acme's notice");
    let subject = acme.subject().unwrap_or_default();
    assert!(subject.contains("CHG0030001"), "{subject}");
    assert!(subject.to_lowercase().contains("short notice"), "{subject}");
    let text = acme.text_body().expect("plain text part");
    assert!(text.contains("Europe/Paris"), "{text}");
    assert!(text.contains("ip-vpn"), "{text}");
    assert!(acme.html_body().is_some_and(|h| h.contains("CHG0030001")));
    let (content_type, ics) = calendar(acme);
    assert!(content_type.contains("method=REQUEST"), "{content_type}");
    assert_eq!(ics_value(&ics, "METHOD").as_deref(), Some("REQUEST"));
    assert_eq!(ics_value(&ics, "SEQUENCE").as_deref(), Some("0"));
    let uid = ics_value(&ics, "UID").expect("UID");
    assert!(uid.starts_with("CHG0030001.acme@"), "{uid}");
    let first_id = acme.message_id.clone().expect("Message-ID");

    // The window moves: an update with the same UID and the next SEQUENCE.
    sn.update("change_request", &id, change("CHG0030001", 72));
    sync_now(&app.api).await;
    let all = smtp.wait_for_messages_async(4, PATIENCE).await;
    let update = all[2..]
        .iter()
        .find(|m| m.rcpt_tos == ["ops@acme.example"])
        .expect("acme's update");
    let (_, ics) = calendar(update);
    assert_eq!(ics_value(&ics, "UID"), Some(uid.clone()));
    assert_eq!(ics_value(&ics, "SEQUENCE").as_deref(), Some("1"));
    assert_ne!(update.message_id.as_ref(), Some(&first_id));

    // Cancelled: METHOD:CANCEL, STATUS:CANCELLED, same UID, SEQUENCE 2.
    sn.update("change_request", &id, json!({ "state": "4" }));
    sync_now(&app.api).await;
    let all = smtp.wait_for_messages_async(6, PATIENCE).await;
    let cancel = all[4..]
        .iter()
        .find(|m| m.rcpt_tos == ["ops@acme.example"])
        .expect("acme's cancellation");
    let (content_type, ics) = calendar(cancel);
    assert!(content_type.contains("method=CANCEL"), "{content_type}");
    assert_eq!(ics_value(&ics, "METHOD").as_deref(), Some("CANCEL"));
    assert_eq!(ics_value(&ics, "STATUS").as_deref(), Some("CANCELLED"));
    assert_eq!(ics_value(&ics, "UID"), Some(uid));
    assert_eq!(ics_value(&ics, "SEQUENCE").as_deref(), Some("2"));

    // Nothing more, and each Message-ID once.
    sync_now(&app.api).await;
    let counts = outbox(&app, "").await["counts"].clone();
    assert_eq!(counts["sent"], 6, "{counts}");
    let mut ids: Vec<_> = smtp
        .messages()
        .into_iter()
        .filter_map(|m| m.message_id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
}

#[tokio::test]
async fn smtp_down_then_up_delivers_every_notice_exactly_once_and_a_550_goes_dead() {
    let mut smtp = SmtpServer::start();
    smtp.set_rules(json!({ "reject_rcpt": { "ops@globex.example": "550 5.1.1 No such user" } }));
    smtp.stop();
    let sn = instance().await;
    for n in 0..3 {
        sn.insert("change_request", change(&format!("CHG00400{n:02}"), 24 + n));
    }
    let app = app(
        &sn,
        &smtp,
        &[
            ("acme", "ACME Logistics SAS"),
            ("globex", "Globex"),
            ("initech", "Initech"),
        ],
    )
    .await;

    // Nine messages queued; none can leave while the server is down.
    wait_until("nine messages retried", PATIENCE, || async {
        let body = outbox(&app, "?status=pending").await;
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        messages.len() == 9 && messages.iter().all(|m| m["attempts"].as_u64() >= Some(1))
    })
    .await;

    smtp.restart();
    let delivered = smtp.wait_for_messages_async(6, PATIENCE).await;
    wait_until("three dead messages", PATIENCE, || async {
        outbox(&app, "").await["counts"]["dead"] == 3
    })
    .await;
    let dead = outbox(&app, "?status=dead").await;
    for message in dead["messages"].as_array().into_iter().flatten() {
        assert_eq!(message["customer"], "globex");
        let error = message["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("550"), "{error}");
    }
    // Nothing is left to send, so what the server holds is final.
    let counts = outbox(&app, "").await["counts"].clone();
    assert_eq!(counts["sent"], 6, "{counts}");
    assert_eq!(
        (counts["pending"].clone(), counts["sending"].clone()),
        (json!(0), json!(0)),
        "{counts}"
    );
    let received = smtp.messages();
    assert_eq!(received.len(), delivered.len(), "no message twice");
    assert_eq!(received.len(), 6, "no message twice");
    let mut ids: Vec<_> = received
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
}

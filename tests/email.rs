//! Customer e-mail end to end: changes read from the ITSM (the simulator)
//! become maintenance notices in the outbox, delivered over SMTP to a real
//! server (aiosmtpd) on loopback, with their iCalendar parts.

mod common;
mod itsm;
mod sim;

use common::{ConfigDir, Daemon, PATIENCE, SmtpServer, TestApp, metric, wait_until};
use icalendar::Component as _;
use itsm::{Connector, first_sync, sync_now};
use serde_json::{Value, json};
use sim::servicenow::Simulator;

/// The CI the example customers use, by sys_id.
const CORE_SWITCH: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

async fn instance() -> Simulator {
    let sn = Simulator::builder()
        .table("change_request", itsm::CHANGE_FIELDS)
        .basic_user(itsm::USER, itsm::PASSWORD)
        .start()
        .await;
    sn.use_wall_clock();
    sn
}

fn sn_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format(sim::servicenow::DATETIME_FORMAT).to_string()
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
    // Parsed, so folded lines are unfolded and values unescaped.
    let calendar: icalendar::Calendar = ics.parse().expect("the .ics parses");
    calendar
        .property_value(name)
        .or_else(|| calendar.events().next()?.property_value(name))
        .map(str::to_owned)
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
    let parsed: icalendar::Calendar = ics.parse().expect("the .ics parses");
    let event = parsed.events().next().expect("a VEVENT");
    let attendees: Vec<_> = event
        .get_attendees()
        .into_iter()
        .map(|a| a.cal_address)
        .collect();
    assert_eq!(attendees, ["mailto:ops@acme.example"], "{ics}");
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
    // The gauges agree with the store: queued messages were counted in.
    let metrics = app.api.metrics().await;
    let depth = |status| metric(&metrics, "csmd_outbox_messages", &[("status", status)]);
    assert_eq!(
        (depth("sent"), depth("pending"), depth("sending")),
        (6.0, 0.0, 0.0)
    );
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

#[tokio::test]
async fn a_completed_change_tells_its_customers_the_outcome_without_a_calendar_part() {
    let smtp = SmtpServer::start();
    let sn = instance().await;
    let id = sn.insert("change_request", change("CHG0050001", 30));
    let app = app(&sn, &smtp, &[("acme", "ACME Logistics SAS")]).await;
    let notice = smtp.wait_for_messages_async(1, PATIENCE).await;
    let notice_id = notice[0].message_id.clone().expect("Message-ID");

    // Implemented, then in review with its close code.
    sn.update(
        "change_request",
        &id,
        json!({ "state": "0", "close_code": "successful" }),
    );
    sync_now(&app.api).await;
    let all = smtp.wait_for_messages_async(2, PATIENCE).await;
    let completion = &all[1];
    assert_eq!(completion.rcpt_tos, ["ops@acme.example"]);
    assert_ne!(completion.message_id.as_ref(), Some(&notice_id));
    let subject = completion.subject().unwrap_or_default();
    assert!(
        subject.starts_with("Completed: Planned maintenance CHG0050001"),
        "{subject}"
    );
    assert!(
        !subject.to_lowercase().contains("short notice"),
        "{subject}"
    );
    for body in [completion.text_body(), completion.html_body()] {
        let body = body.expect("text and HTML parts");
        assert!(body.contains("completed successfully"), "{body}");
    }
    // Nothing for a calendar to do: the window stays as announced.
    assert!(completion.attachment_or_part("text/calendar").is_none());

    // Closing the change later changes nothing more.
    sn.update("change_request", &id, json!({ "state": "3" }));
    sync_now(&app.api).await;
    let counts = outbox(&app, "").await["counts"].clone();
    assert_eq!(counts["sent"], 2, "{counts}");
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test]
async fn line_breaks_and_markup_in_names_create_no_header_and_no_html() {
    let smtp = SmtpServer::start();
    let sn = instance().await;
    let mut evil = change("CHG0060001", 30);
    evil["short_description"] =
        json!("Upgrade\r\nBcc: victim@evil.example\r\n<img src=x onerror=alert(1)>");
    sn.insert("change_request", evil);
    let mut config = Connector::new(&sn).streams(&["changes"]).config();
    smtp_config(&mut config, &smtp);
    // TOML basic strings carry the CR/LF as escapes. A contact name with a
    // line break is refused when the file loads; quotes, commas and angle
    // brackets are not, and must not turn into more recipients.
    let text = format!(
        "id = \"acme\"\nname = \"ACME\\r\\nX-Injected: 1\\r\\n<script>alert('name')</script> & Co\"\n\
         time_zone = \"Europe/Paris\"\n\n\
         [[contact]]\nname = \"Jane \\\"The Boss\\\" <b>Doe</b>, Ops; <x@evil.example>\"\n\
         email = \"jane@acme.example\"\nroles = [\"maintenance\"]\n\n\
         [[install_base]]\nci = \"{CORE_SWITCH}\"\nservice = \"<i>ip-vpn</i>\"\n"
    );
    std::fs::write(config.customers_dir().join("acme.toml"), text).expect("write customer");
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;

    let received = smtp.wait_for_messages_async(1, PATIENCE).await;
    let message = &received[0];
    // Only the contact's address was a recipient, and no header was made
    // from the names.
    assert_eq!(message.rcpt_tos, ["jane@acme.example"]);
    let names: Vec<String> = message
        .headers()
        .into_iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    for forged in ["bcc", "x-injected"] {
        assert!(!names.contains(&forged.to_owned()), "{message:?}");
    }
    let parsed = message.parsed();
    let to: Vec<_> = parsed
        .to()
        .into_iter()
        .flat_map(|to| to.iter())
        .filter_map(|addr| addr.address())
        .collect();
    assert_eq!(to, ["jane@acme.example"], "{message:?}");
    let subject = message.subject().unwrap_or_default();
    assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    // The headers as written are CRLF-terminated lines and nothing else.
    let raw = String::from_utf8_lossy(&message.raw);
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(!head.replace("\r\n", "").contains(['\r', '\n']), "{head}");

    // The HTML shows the markup as text; the text part keeps the words.
    let html = message.html_body().expect("HTML part");
    for markup in ["<script>", "<b>Doe", "<i>ip-vpn", "<img src=x"] {
        assert!(!html.contains(markup), "{markup} in\n{html}");
    }
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(html.contains("&amp; Co"), "{html}");
    let text = message.text_body().expect("text part");
    assert!(text.contains("<i>ip-vpn</i>"), "{text}");

    // The calendar event is still one well-formed VEVENT.
    let (_, ics) = calendar(message);
    let parsed: icalendar::Calendar = ics.parse().expect("the .ics parses");
    assert_eq!(parsed.events().count(), 1);
    for line in ics.split_terminator("\r\n") {
        assert!(
            !line.starts_with("Bcc") && !line.starts_with("X-Injected"),
            "{ics}"
        );
    }
}

#[tokio::test]
async fn a_421_greeting_and_451_at_data_are_retried_until_delivered_once() {
    let smtp = SmtpServer::start();
    smtp.set_rules(json!({ "greeting_421": true }));
    let sn = instance().await;
    sn.insert("change_request", change("CHG0070001", 30));
    let app = app(&sn, &smtp, &[("acme", "ACME Logistics SAS")]).await;

    // Refused at the greeting: pending, with the server's reason.
    wait_until("a retry after the 421 greeting", PATIENCE, || async {
        let body = outbox(&app, "?status=pending").await;
        body["messages"][0]["attempts"].as_u64() >= Some(2)
            && body["messages"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("421"))
    })
    .await;
    assert!(smtp.messages().is_empty());

    // Then twice a temporary failure at the end of DATA, then accepted.
    smtp.set_rules(json!({
        "tempfail_data": { "count": 2, "reply": "451 4.3.0 Try again later" }
    }));
    let received = smtp.wait_for_messages_async(1, PATIENCE).await;
    wait_until("the message marked sent", PATIENCE, || async {
        outbox(&app, "").await["counts"]["sent"] == 1
    })
    .await;
    let sent = outbox(&app, "?status=sent").await["messages"][0].clone();
    let attempts = sent["attempts"].as_u64().unwrap_or_default();
    assert!(
        attempts >= 4,
        "421 at least twice, 451 twice, then 250: {sent}"
    );
    assert_eq!(sent["last_error"], Value::Null, "{sent}");
    assert_eq!(received.len(), 1);
    assert_eq!(smtp.messages().len(), 1, "delivered once");
}

#[tokio::test]
async fn the_send_rate_is_held() {
    const CUSTOMERS: usize = 8;
    const PER_SECOND: f64 = 20.0;
    let smtp = SmtpServer::start();
    let sn = instance().await;
    sn.insert("change_request", change("CHG0080001", 30));
    let mut config = Connector::new(&sn).streams(&["changes"]).config();
    smtp_config(&mut config, &smtp);
    config.email = config.email.replace("rate = \"off\"", "rate = \"20/s\"");
    let names: Vec<(String, String)> = (0..CUSTOMERS)
        .map(|n| (format!("c{n}"), format!("Customer {n}")))
        .collect();
    let using: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    customers(&config, &using);
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;

    let received = smtp.wait_for_messages_async(CUSTOMERS, PATIENCE).await;
    let mut at: Vec<f64> = received.iter().map(|m| m.received_at).collect();
    at.sort_by(f64::total_cmp);
    let span = at[CUSTOMERS - 1] - at[0];
    // n messages at r/s take at least (n - 1) / r seconds; a little slack
    // for when the server stamps them.
    let least = (CUSTOMERS - 1) as f64 / PER_SECOND;
    assert!(
        span >= least * 0.9,
        "{CUSTOMERS} messages in {span:.3}s, faster than 20/s"
    );
    wait_until("every message marked sent", PATIENCE, || async {
        outbox(&app, "").await["counts"]["sent"] == CUSTOMERS
    })
    .await;
}

/// The acceptance test of the crash guarantee in the README: the real
/// binary, killed with SIGKILL while it is sending, loses no notice and
/// sends none twice, except that a message the server accepted in the last
/// instant before the kill, not yet marked sent, goes once more with the
/// same Message-ID; at most `[email] concurrency` of them.
#[tokio::test]
async fn kill_9_while_sending_loses_nothing_and_duplicates_at_most_the_messages_in_flight() {
    const CHANGES: usize = 20;
    const CUSTOMERS: usize = 3;
    const TOTAL: usize = CHANGES * CUSTOMERS;
    const CONCURRENCY: usize = 4;
    let smtp = SmtpServer::start();
    // Slow enough that the kill lands while messages are in flight.
    smtp.set_rules(json!({ "delay_data_ms": 40 }));
    let sn = instance().await;
    for n in 0..CHANGES {
        sn.insert(
            "change_request",
            change(&format!("CHG009{n:04}"), 24 + n as i64),
        );
    }
    let mut config = Connector::new(&sn)
        .streams(&["changes"])
        .config()
        .on_free_port();
    smtp_config(&mut config, &smtp);
    // `concurrency` belongs to [email], before its [email.smtp] table.
    config.email = config.email.replace(
        "[email.smtp]\n",
        &format!("concurrency = {CONCURRENCY}\n[email.smtp]\n"),
    );
    customers(
        &config,
        &[
            ("acme", "ACME"),
            ("globex", "Globex"),
            ("initech", "Initech"),
        ],
    );

    let mut daemon = Daemon::start(&mut config, &[]).await;
    first_sync(&daemon.api).await;
    smtp.wait_for_messages_async(TOTAL / 4, PATIENCE).await;
    daemon.kill9();
    let before_restart = smtp.messages().len();
    assert!(
        before_restart < TOTAL,
        "the kill came too late to test anything"
    );

    let daemon = Daemon::start(&mut config, &[]).await;
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    wait_until("every notice at the server", PATIENCE * 2, || {
        counts.clear();
        for message in smtp.messages() {
            let id = message.message_id.expect("a Message-ID");
            *counts.entry(id).or_default() += 1;
        }
        let all = counts.len() == TOTAL;
        async move { all }
    })
    .await;
    wait_until("every notice marked sent", PATIENCE, || async {
        let reply = daemon.api.admin_get("/api/v1/outbox").await;
        reply.json["counts"]["sent"] == TOTAL
    })
    .await;
    let reply = daemon.api.admin_get("/api/v1/outbox").await;
    let counts_by_status = &reply.json["counts"];
    assert_eq!(counts_by_status["dead"], 0, "{counts_by_status}");
    assert_eq!(counts_by_status["pending"], 0, "{counts_by_status}");

    // Each Message-ID at most twice, and at most CONCURRENCY twice.
    let messages = smtp.messages();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(counts.values().all(|n| *n <= 2), "{twice:?}");
    assert!(twice.len() <= CONCURRENCY, "{twice:?}");
    assert_eq!(messages.len(), TOTAL + twice.len());
}

#[tokio::test]
async fn smtp_auth_a_refused_login_waits_and_idle_pooled_connections_are_replaced() {
    let smtp = SmtpServer::start();
    let rules = |password: &str| {
        json!({
            "auth": { "user": "csmd", "password": password },
            "close_idle_after_ms": 300,
        })
    };
    smtp.set_rules(rules("the-old-password"));
    let sn = instance().await;
    sn.insert("change_request", change("CHG0100001", 30));
    let mut config = Connector::new(&sn).streams(&["changes"]).config();
    smtp_config(&mut config, &smtp);
    config.email += "username = \"csmd\"\npassword = { file = \"smtp_password\" }\n";
    std::fs::write(config.dir().join("smtp_password"), "the-new-password\n")
        .expect("write the SMTP password");
    customers(&config, &[("acme", "ACME Logistics SAS")]);
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;

    // The server refuses the login: the message waits, it does not die.
    wait_until("a retry after the refused login", PATIENCE, || async {
        let body = outbox(&app, "?status=pending").await;
        body["messages"][0]["attempts"].as_u64() >= Some(2)
            && body["messages"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("535") && e.contains("login"))
    })
    .await;
    let body = outbox(&app, "?status=pending").await;
    let error = body["messages"][0]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(!error.contains("the-new-password"), "{error}");

    // The mail server is given the new password: it goes.
    smtp.set_rules(rules("the-new-password"));
    smtp.wait_for_messages_async(1, PATIENCE).await;

    // The pooled connection idles until the server hangs up on it.
    wait_until("the server closing the idle connection", PATIENCE, || {
        let (opened, closed) = smtp.connections();
        async move { opened > 0 && closed == opened }
    })
    .await;
    let (opened, _) = smtp.connections();

    // The next message goes at the first attempt, on a new connection.
    sn.insert("change_request", change("CHG0100002", 31));
    sync_now(&app.api).await;
    let received = smtp.wait_for_messages_async(2, PATIENCE).await;
    assert_eq!(received.len(), 2);
    wait_until("both marked sent", PATIENCE, || async {
        outbox(&app, "").await["counts"]["sent"] == 2
    })
    .await;
    let sent = outbox(&app, "?status=sent").await;
    let second = sent["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.contains("CHG0100002"))
        })
        .cloned()
        .expect("the second notice");
    assert_eq!(second["attempts"], 1, "{second}");
    assert!(
        smtp.connections().0 > opened,
        "no new connection was opened"
    );
}

/// An app sending over TLS (`"starttls"` or `"tls"`) to `localhost`,
/// trusting the server's private CA when `trust` is set.
async fn tls_app(sn: &Simulator, smtp: &SmtpServer, tls: &str, trust: bool) -> TestApp {
    let mut config = Connector::new(sn).streams(&["changes"]).config();
    let ca_file = if trust {
        format!("ca_file = {:?}\n", smtp.ca_file().display().to_string())
    } else {
        String::new()
    };
    config.email = format!(
        "transport = \"smtp\"\nrate = \"off\"\nretry_backoff = \"100ms\"\nretry_backoff_max = \"300ms\"\n\
         [email.smtp]\nhost = \"localhost\"\nport = {}\ntls = \"{tls}\"\ntimeout = \"5s\"\n{ca_file}",
        smtp.port()
    );
    customers(&config, &[("acme", "ACME Logistics SAS")]);
    let app = TestApp::start(config).await;
    first_sync(&app.api).await;
    app
}

#[tokio::test]
async fn starttls_and_implicit_tls_deliver_to_a_relay_with_a_private_ca() {
    for (server_mode, tls) in [("starttls", "starttls"), ("implicit", "tls")] {
        // The STARTTLS server refuses mail before the upgrade.
        let smtp = SmtpServer::start_tls(server_mode);
        let sn = instance().await;
        sn.insert("change_request", change("CHG0110001", 30));
        let app = tls_app(&sn, &smtp, tls, true).await;
        let received = smtp.wait_for_messages_async(1, PATIENCE).await;
        assert_eq!(received[0].rcpt_tos, ["ops@acme.example"], "{tls}");
        wait_until("the message marked sent", PATIENCE, || async {
            outbox(&app, "").await["counts"]["sent"] == 1
        })
        .await;
        let sent = outbox(&app, "?status=sent").await;
        assert_eq!(sent["messages"][0]["attempts"], 1, "{tls}: {sent}");
    }
}

#[tokio::test]
async fn a_certificate_csmd_does_not_trust_keeps_the_message_waiting() {
    let smtp = SmtpServer::start_tls("implicit");
    let sn = instance().await;
    sn.insert("change_request", change("CHG0120001", 30));
    let app = tls_app(&sn, &smtp, "tls", false).await;
    wait_until(
        "a retry after the refused certificate",
        PATIENCE,
        || async {
            let body = outbox(&app, "?status=pending").await;
            body["messages"][0]["attempts"].as_u64() >= Some(2)
                && body["messages"][0]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("certificate"))
        },
    )
    .await;
    assert!(smtp.messages().is_empty());
}

//! The SMTP test server itself, driven by an independent client (lettre's
//! blocking transport): what it stores, and the failures it answers with
//! on demand.

mod common;

use std::error::Error as _;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, MultiPart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{Message, SmtpTransport, Transport};
use serde_json::json;

use common::SmtpServer;

const WAIT: Duration = Duration::from_secs(5);

fn transport(server: &SmtpServer) -> SmtpTransport {
    SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.port())
        .timeout(Some(WAIT))
        .build()
}

fn notice(to: &str, message_id: &str) -> Message {
    Message::builder()
        .from("csmd <noc@provider.test>".parse().unwrap())
        .to(to.parse().unwrap())
        .subject("Planned maintenance on your link")
        .message_id(Some(message_id.into()))
        .body("The link will be down on Sunday.".to_owned())
        .unwrap()
}

fn is_connection_refused(error: &SmtpError) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

#[test]
fn stores_a_message_with_its_envelope_headers_and_parts() {
    let server = SmtpServer::start();
    let calendar = "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n";
    let message = Message::builder()
        .from("csmd <noc@provider.test>".parse().unwrap())
        .to("ops@customer.test".parse().unwrap())
        .subject("Planned maintenance: Sunday 02:00–04:00")
        .message_id(Some("<chg-42@csmd.test>".into()))
        .multipart(
            MultiPart::mixed()
                .multipart(MultiPart::alternative_plain_html(
                    "Maintenance on Sunday.".to_owned(),
                    "<p>Maintenance on Sunday.</p>".to_owned(),
                ))
                .singlepart(Attachment::new("invite.ics".into()).body(
                    calendar.to_owned(),
                    ContentType::parse("text/calendar; method=REQUEST; charset=utf-8").unwrap(),
                )),
        )
        .unwrap();

    transport(&server).send(&message).expect("delivered");

    let received = server.wait_for_messages(1, WAIT);
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert_eq!(mail.mail_from, "noc@provider.test");
    assert_eq!(mail.rcpt_tos, ["ops@customer.test"]);
    assert_eq!(mail.message_id.as_deref(), Some("<chg-42@csmd.test>"));
    // Header names are matched in any case.
    assert_eq!(
        mail.header("message-id").as_deref(),
        Some("<chg-42@csmd.test>")
    );
    assert_eq!(
        mail.subject().as_deref(),
        Some("Planned maintenance: Sunday 02:00–04:00")
    );
    assert_eq!(mail.text_body().as_deref(), Some("Maintenance on Sunday."));
    assert_eq!(
        mail.html_body().as_deref(),
        Some("<p>Maintenance on Sunday.</p>")
    );
    let (content_type, ics) = mail
        .attachment_or_part("text/calendar")
        .expect("the calendar part");
    assert!(content_type.contains("method=REQUEST"), "{content_type}");
    assert_eq!(ics, calendar.as_bytes());
    assert!(mail.attachment_or_part("application/pdf").is_none());
}

#[test]
fn a_rejected_recipient_is_a_permanent_error() {
    let server = SmtpServer::start();
    server.set_rules(json!({"reject_rcpt": {"dead@example.net": "550 5.1.1 No such user"}}));

    let error = transport(&server)
        .send(&notice("dead@example.net", "<dead@csmd.test>"))
        .expect_err("rejected at RCPT TO");

    assert!(error.is_permanent(), "{error}");
    assert!(error.to_string().contains("No such user"), "{error}");
    assert!(server.messages().is_empty());
}

#[test]
fn temporary_failures_at_data_are_counted_down_then_delivery_works() {
    let server = SmtpServer::start();
    server.set_rules(json!({"tempfail_data": {"count": 2, "reply": "451 4.3.0 Try again later"}}));
    let smtp = transport(&server);
    let message = notice("ops@customer.test", "<retry@csmd.test>");

    for attempt in 1..=2 {
        let error = smtp.send(&message).expect_err("a temporary failure");
        assert!(error.is_transient(), "attempt {attempt}: {error}");
    }
    smtp.send(&message).expect("the third attempt is accepted");

    let received = server.wait_for_messages(1, WAIT);
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].message_id.as_deref(), Some("<retry@csmd.test>"));
}

#[test]
fn a_421_greeting_is_a_transient_error() {
    let server = SmtpServer::start();
    server.set_rules(json!({"greeting_421": true}));

    let error = transport(&server)
        .send(&notice("ops@customer.test", "<busy@csmd.test>"))
        .expect_err("refused at the greeting");

    assert!(error.is_transient(), "{error}");
    assert!(server.messages().is_empty());
}

#[test]
fn a_stopped_server_refuses_connections_and_restarts_on_the_same_port() {
    let mut server = SmtpServer::start();
    let smtp = transport(&server);
    smtp.send(&notice("ops@customer.test", "<before@csmd.test>"))
        .expect("delivered before the stop");

    server.stop();
    let error = smtp
        .send(&notice("ops@customer.test", "<down@csmd.test>"))
        .expect_err("nothing listens");
    assert!(is_connection_refused(&error), "{error:?}");

    // restart() itself fails the test unless the port is the same.
    server.restart();
    smtp.send(&notice("ops@customer.test", "<after@csmd.test>"))
        .expect("delivered after the restart");

    let ids: Vec<_> = server
        .wait_for_messages(2, WAIT)
        .into_iter()
        .map(|mail| mail.message_id.unwrap_or_default())
        .collect();
    assert_eq!(ids, ["<before@csmd.test>", "<after@csmd.test>"]);
}

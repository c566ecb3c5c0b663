//! Messages to customers, as the outbox keeps them: rendered once when
//! queued, then delivered (and retried) by the outbox worker.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::CustomerId;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    MaintenanceNotice,
    MaintenanceUpdate,
    MaintenanceCancellation,
    MaintenanceCompletion,
    Disruption,
    DisruptionUpdate,
    DisruptionResolved,
    SipDigest,
    MonthlyReport,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::MaintenanceNotice => "maintenance_notice",
            MessageKind::MaintenanceUpdate => "maintenance_update",
            MessageKind::MaintenanceCancellation => "maintenance_cancellation",
            MessageKind::MaintenanceCompletion => "maintenance_completion",
            MessageKind::Disruption => "disruption",
            MessageKind::DisruptionUpdate => "disruption_update",
            MessageKind::DisruptionResolved => "disruption_resolved",
            MessageKind::SipDigest => "sip_digest",
            MessageKind::MonthlyReport => "monthly_report",
        }
    }
}

/// Where a message is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Waiting for its next attempt (`next_attempt_at`).
    Pending,
    /// Handed to the transport; not yet known to be accepted. A message
    /// found in this state at start was in flight when csmd stopped, and
    /// is sent again (with the same Message-ID).
    Sending,
    /// Accepted by the transport.
    Sent,
    /// Refused for good, or given up; `last_error` says why.
    Dead,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 4] = [
        MessageStatus::Pending,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Pending => "pending",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Dead => "dead",
        }
    }
}

impl std::str::FromStr for MessageStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}; expected pending, sending, sent or dead"))
    }
}

/// An iCalendar part: its METHOD (also in the MIME type) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarPart {
    pub method: String,
    pub ics: String,
}

/// A file carried by a message: shown inline in the HTML body when it has
/// a `content_id` (an image the HTML names as `cid:<content_id>`), else an
/// attachment the reader can save (a CSV export, say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The file name the reader sees (`incidents-2026-11.csv`).
    pub filename: String,
    /// The MIME type, e.g. `image/png` or `text/csv; charset=utf-8`.
    pub content_type: String,
    /// For an inline part: its Content-ID without angle brackets
    /// (`availability.acme.2026-11@example.net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    /// The bytes, stored as base64.
    #[serde(with = "base64_bytes")]
    pub data: Vec<u8>,
}

impl Attachment {
    /// Whether the part is shown inside the HTML body.
    pub fn is_inline(&self) -> bool {
        self.content_id.is_some()
    }
}

/// Bytes as one standard base64 string in JSON.
mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The short id of the message with this idempotency key.
pub fn message_id_for(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(&digest[..8])
}

/// What a processor queues for one recipient; [`Draft::queue`] makes it an
/// [`OutboxMessage`].
#[derive(Debug, Clone)]
pub struct Draft {
    /// The idempotency key (see [`OutboxMessage::key`]).
    pub key: String,
    pub kind: MessageKind,
    /// The customer it is for; none for the provider's own staff (the SIP
    /// digest).
    pub customer: Option<CustomerId>,
    /// The recipient, as `Name <address>`.
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub calendar: Option<CalendarPart>,
}

impl Draft {
    /// The message, due `now`: its id derived from the key, and its
    /// Message-ID from the id, the customer and the sender's `domain`.
    pub fn queue(self, domain: &str, now: DateTime<Utc>) -> OutboxMessage {
        let id = message_id_for(&self.key);
        OutboxMessage {
            message_id: match &self.customer {
                Some(customer) => format!("<{id}.{customer}@{domain}>"),
                None => format!("<{id}@{domain}>"),
            },
            id,
            key: self.key,
            kind: self.kind,
            customer: self.customer,
            to: self.to,
            subject: self.subject,
            text: self.text,
            html: self.html,
            calendar: self.calendar,
            attachments: Vec::new(),
            status: MessageStatus::Pending,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
            created_at: now,
            sent_at: None,
        }
    }
}

/// One message to one recipient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Short id for the CLI and API, derived from `key`.
    pub id: String,
    /// What the message is about, e.g.
    /// `maintenance/CHG0030001/acme/notice/0/claire@acme.example`: the
    /// idempotency key. Queuing a key that exists changes nothing.
    pub key: String,
    pub kind: MessageKind,
    /// The customer it is for; none for the provider's own staff.
    #[serde(default)]
    pub customer: Option<CustomerId>,
    /// The recipient, as `Name <address>`.
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<CalendarPart>,
    /// Inline images and file attachments; none in messages stored before
    /// csmd had them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// The Message-ID header, derived from `key`: a message sent twice
    /// (after a crash) carries the same one both times.
    pub message_id: String,
    pub status: MessageStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
}

impl OutboxMessage {
    /// The message carrying `attachments` too.
    pub fn with_attachments(mut self, attachments: Vec<Attachment>) -> OutboxMessage {
        self.attachments = attachments;
        self
    }

    /// The customer's id, or `-` for a message to the provider's staff.
    pub fn customer_label(&self) -> &str {
        self.customer.as_ref().map_or("-", CustomerId::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_stored_before_attachments_existed_still_decodes() {
        let stored = r#"{"id":"0123456789abcdef","key":"maintenance/CHG1/acme/notice/0/a@acme.example",
            "kind":"maintenance_notice","customer":"acme","to":"A <a@acme.example>",
            "subject":"s","text":"t","html":"<p>h</p>",
            "calendar":{"method":"REQUEST","ics":"BEGIN:VCALENDAR"},
            "message_id":"<0123456789abcdef.acme@example.net>","status":"pending","attempts":0,
            "next_attempt_at":"2026-11-01T06:00:00Z","created_at":"2026-11-01T06:00:00Z"}"#;
        let message: OutboxMessage = serde_json::from_str(stored).unwrap();
        assert!(message.attachments.is_empty());
        assert_eq!(message.calendar.unwrap().method, "REQUEST");
    }

    #[test]
    fn attachments_round_trip_as_base64() {
        let message = Draft {
            key: "report/acme/2026-11/a@acme.example".into(),
            kind: MessageKind::MonthlyReport,
            customer: Some("acme".parse().unwrap()),
            to: "A <a@acme.example>".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "h".into(),
            calendar: None,
        }
        .queue("example.net", DateTime::UNIX_EPOCH)
        .with_attachments(vec![Attachment {
            filename: "chart.png".into(),
            content_type: "image/png".into(),
            content_id: Some("chart@example.net".into()),
            data: vec![0, 159, 146, 150, 255],
        }]);
        let json = serde_json::to_string(&message).unwrap();
        assert!(json.contains(r#""data":"AJ+Slv8=""#), "{json}");
        let back: OutboxMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, message);
        assert!(back.attachments[0].is_inline());
    }
}

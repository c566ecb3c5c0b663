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
    /// The customer's id, or `-` for a message to the provider's staff.
    pub fn customer_label(&self) -> &str {
        self.customer.as_ref().map_or("-", CustomerId::as_str)
    }
}

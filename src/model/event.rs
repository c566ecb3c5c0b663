//! Events as the sources hand them to the store's journal.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::ConnectorName;
use super::itsm::ItsmRecord;
use super::tagged::{self, Tagged};

/// One normalised inbound event. Each source kind adds its own variant.
/// Read tag first (`model::tagged`), which must name the same variants.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Alert(AlertEvent),
    /// A record read from (or pushed by) the ITSM.
    Itsm(ItsmRecord),
    /// A survey answer or a complaint.
    Feedback(FeedbackEvent),
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

impl Tagged for Event {
    const TAG: &'static str = "type";
    const VARIANTS: &'static [&'static str] = &["alert", "itsm", "feedback"];
    const EXPECTING: &'static str = "an event";

    fn variant<'de, D: Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        match tag {
            "alert" => AlertEvent::deserialize(rest).map(Event::Alert),
            "itsm" => ItsmRecord::deserialize(rest).map(Event::Itsm),
            "feedback" => FeedbackEvent::deserialize(rest).map(Event::Feedback),
            other => Err(Self::unknown(other)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// An alert from monitoring, mapped onto csmd's identifiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The source's id of the alert (a fingerprint), stable across deliveries.
    pub source_id: String,
    pub status: AlertStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    /// A customer-satisfaction score (the scale is the survey's; the
    /// threshold in `[sip]` is on the same scale).
    Csat,
    /// A Net Promoter Score answer, 0 to 10.
    Nps,
    Complaint,
}

impl FeedbackKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Csat => "csat",
            FeedbackKind::Nps => "nps",
            FeedbackKind::Complaint => "complaint",
        }
    }
}

/// What a customer said: a survey answer or a complaint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    /// The source's id of the answer, stable across deliveries.
    pub source_id: String,
    /// csmd's customer id, or the customer's ITSM or billing account.
    pub customer: String,
    pub kind: FeedbackKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub respondent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted_at: Option<DateTime<Utc>>,
}

/// An event as stored in the journal, with where and when it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the journal; strictly increasing, never reused.
    pub seq: u64,
    pub connector: ConnectorName,
    pub received_at: DateTime<Utc>,
    /// The sender's delivery id (`webhook-id`), when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub event: Event,
}

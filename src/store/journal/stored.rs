//! Journal entries as stored. An alert's entry, by far the most common
//! (every alert of every delivery is one), is compact: postcard after the
//! [`COMPACT`](compact::COMPACT) byte, its instants as seconds and
//! nanoseconds, in less than half its JSON. An alert storm writes the
//! journal faster than anything else, and sled keeps each page it writes
//! in its page cache: as JSON (330 bytes an entry in the alert benchmark,
//! 134 compact), 22,000 alerts a second put some 7 MB of journal a second
//! through a cache of 16 MiB, pushing out the alerts and messages the
//! engine and planners read (BENCHMARKS.md). Every other entry
//! (ITSM records, feedback) stays JSON, as do entries written by earlier
//! versions or by `csmd store import`; both are read.
//!
//! Postcard has no names: fields are only ever added at the end.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{TREE, key};
use crate::model::{AlertEvent, AlertStatus, ConnectorName, Event, JournalEntry};
use crate::store::StoreError;
use crate::store::compact::{self, Instant, Value, borrowed, instant, owned};

/// An alert's journal entry as stored.
#[derive(Serialize, Deserialize)]
struct StoredAlert<'a> {
    seq: u64,
    #[serde(borrow)]
    connector: Cow<'a, str>,
    received_at: Instant,
    #[serde(borrow)]
    delivery_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source_id: Cow<'a, str>,
    status: AlertStatus,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ci: Option<Cow<'a, str>>,
    #[serde(borrow)]
    customer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    severity: Option<Cow<'a, str>>,
    #[serde(borrow)]
    summary: Cow<'a, str>,
    starts_at: Option<Instant>,
    ends_at: Option<Instant>,
}

/// What the committer stores of one event: the fields of a
/// [`JournalEntry`], borrowed.
#[derive(Serialize)]
pub(super) struct EntryRef<'a> {
    pub seq: u64,
    pub connector: &'a ConnectorName,
    pub received_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<&'a str>,
    pub event: &'a Event,
}

/// The value stored for `entry`: compact for an alert, JSON otherwise.
pub(super) fn encode(entry: &EntryRef<'_>) -> Result<Vec<u8>, StoreError> {
    let Event::Alert(alert) = entry.event else {
        return serde_json::to_vec(entry)
            .map_err(|source| StoreError::Encode { tree: TREE, source });
    };
    let stored = StoredAlert {
        seq: entry.seq,
        connector: Cow::Borrowed(entry.connector.as_str()),
        received_at: instant(entry.received_at),
        delivery_id: entry.delivery_id.map(Cow::Borrowed),
        source_id: Cow::Borrowed(&alert.source_id),
        status: alert.status,
        service: borrowed(&alert.service),
        ci: borrowed(&alert.ci),
        customer: borrowed(&alert.customer),
        severity: borrowed(&alert.severity),
        summary: Cow::Borrowed(&alert.summary),
        starts_at: alert.starts_at.map(instant),
        ends_at: alert.ends_at.map(instant),
    };
    compact::encode(TREE, &stored)
}

/// The entry stored under `key`, of either encoding.
pub(in crate::store) fn decode(key: &[u8], bytes: &[u8]) -> Result<JournalEntry, StoreError> {
    let stored: StoredAlert<'_> = match compact::read(TREE, key, bytes)? {
        Value::Compact(stored) => stored,
        Value::Json(entry) => return Ok(entry),
    };
    let at = |instant| compact::date_time(TREE, key, instant);
    Ok(JournalEntry {
        seq: stored.seq,
        connector: stored
            .connector
            .parse()
            .map_err(|e: crate::model::IdError| compact::corrupt(TREE, key, e.to_string()))?,
        received_at: at(stored.received_at)?,
        delivery_id: owned(stored.delivery_id),
        event: Event::Alert(AlertEvent {
            source_id: stored.source_id.into_owned(),
            status: stored.status,
            service: owned(stored.service),
            ci: owned(stored.ci),
            customer: owned(stored.customer),
            severity: owned(stored.severity),
            summary: stored.summary.into_owned(),
            starts_at: stored.starts_at.map(at).transpose()?,
            ends_at: stored.ends_at.map(at).transpose()?,
        }),
    })
}

/// A stored value of the journal tree as JSON, for `csmd store export`:
/// a compact entry decoded, anything else (JSON entries, and delivery ids
/// and cursors, whatever their first byte) as it is.
pub(in crate::store) fn exported<'v>(
    stored_key: &[u8],
    value: &'v [u8],
) -> Result<Cow<'v, [u8]>, StoreError> {
    if key::seq(stored_key).is_none() {
        return Ok(Cow::Borrowed(value));
    }
    compact::exported(TREE, value, || decode(stored_key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FeedbackEvent, FeedbackKind};

    fn at(seconds: i64, nanos: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + seconds, nanos).unwrap()
    }

    fn alert_entry(full: bool) -> JournalEntry {
        let some = |s: &str| full.then(|| s.to_string());
        JournalEntry {
            seq: 4_242,
            connector: "alertmanager".parse().unwrap(),
            received_at: at(0, 123_456_789),
            delivery_id: some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
            event: Event::Alert(AlertEvent {
                source_id: "5692161d100b05e5".into(),
                status: if full {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Firing
                },
                service: some("svc-00041"),
                ci: some("svc-00041-node-7"),
                customer: some("c00041"),
                severity: some("critical"),
                summary: "DiskFull on svc-00041-node-7".into(),
                starts_at: full.then(|| at(-60, 15_000_000)),
                ends_at: full.then(|| at(-1, 0)),
            }),
        }
    }

    fn stored(entry: &JournalEntry) -> Vec<u8> {
        encode(&EntryRef {
            seq: entry.seq,
            connector: &entry.connector,
            received_at: entry.received_at,
            delivery_id: entry.delivery_id.as_deref(),
            event: &entry.event,
        })
        .unwrap()
    }

    #[test]
    fn an_alert_entry_is_stored_compact_in_less_than_half_its_json_and_read_back_exactly() {
        for full in [true, false] {
            let entry = alert_entry(full);
            let value = stored(&entry);
            assert_eq!(value.first(), Some(&compact::COMPACT));
            assert_eq!(decode(b"e", &value).unwrap(), entry);
            let json = serde_json::to_vec(&entry).unwrap();
            assert!(
                value.len() * 2 < json.len(),
                "{} bytes stored for {} of JSON",
                value.len(),
                json.len()
            );
            // The export holds it as JSON.
            let exported = exported(&key::entry(entry.seq), &value).unwrap();
            let back: JournalEntry = serde_json::from_slice(&exported).unwrap();
            assert_eq!(back, entry);
        }
    }

    /// Moving a field, or a variant of `AlertStatus`, would make entries
    /// already stored read wrong: this fails first.
    #[test]
    fn the_compact_encoding_of_an_alert_entry_does_not_change() {
        assert_eq!(
            hex::encode(stored(&alert_entry(false))),
            "0192210c616c6572746d616e6167657280ee89ab0d959aef3a0010353639323136316431303062\
             3035653500000000001c4469736b46756c6c206f6e207376632d30303034312d6e6f64652d370000"
        );
    }

    #[test]
    fn other_entries_and_entries_of_earlier_versions_are_json() {
        let feedback = JournalEntry {
            event: Event::Feedback(FeedbackEvent {
                source_id: "survey-1".into(),
                customer: "acme".into(),
                kind: FeedbackKind::Csat,
                score: Some(2.0),
                comment: Some("Slow answers".into()),
                respondent: None,
                submitted_at: None,
            }),
            ..alert_entry(true)
        };
        let value = stored(&feedback);
        assert_eq!(value.first(), Some(&b'{'));
        assert_eq!(decode(b"e", &value).unwrap(), feedback);
        assert_eq!(
            exported(&key::entry(feedback.seq), &value)
                .unwrap()
                .as_ref(),
            value.as_slice()
        );

        let alert = alert_entry(true);
        let json = serde_json::to_vec(&alert).unwrap();
        assert_eq!(decode(b"e", &json).unwrap(), alert);
    }

    #[test]
    fn a_corrupt_entry_is_an_error_naming_its_key() {
        let value = stored(&alert_entry(true));
        for corrupt in [&value[..value.len() / 2], &[compact::COMPACT, 0xff][..]] {
            let message = decode(b"e-corrupt", corrupt).unwrap_err().to_string();
            assert!(
                message.contains("e-corrupt") && message.contains("journal"),
                "{message}"
            );
        }
    }

    #[test]
    fn only_entries_are_decoded_for_the_export() {
        let cursor = [compact::COMPACT, 0xff, 0x00];
        for stored_key in [key::cursor("itsm/incidents"), b"dmon\0msg_1".to_vec()] {
            assert_eq!(
                exported(&stored_key, &cursor).unwrap().as_ref(),
                cursor.as_slice()
            );
        }
        assert!(exported(&key::entry(1), &cursor).is_err());
    }
}

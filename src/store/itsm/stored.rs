//! ITSM records as stored. Incidents are compact ([`StoredIncident`]):
//! theirs is the largest tree, a full sync writes it at random places (the
//! keys are `sys_id`s), and as JSON (field names, RFC 3339 timestamps:
//! 425 bytes for the incident of the tests below, 124 compact) it outgrew
//! sled's page cache by far, so most writes first read a page back from
//! disk. Every other kind
//! stays JSON: the data-integrity index reads CIs, install-base items and
//! subscriptions partly, without decoding whole records
//! ([`Store::itsm_scan_raw`](super::Store::itsm_scan_raw)).
//!
//! Incidents written as JSON by earlier versions, or by
//! `csmd store import`, are read all the same and are rewritten compact on
//! their next change; `csmd store export` writes them as JSON.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::model::itsm::{Incident, IncidentState, ItsmRecord};
use crate::store::StoreError;
use crate::store::compact::{self, Instant, Value, borrowed, instant, owned};

/// The tree of incidents, the one stored compact.
pub(in crate::store) const INCIDENTS: &str = "incidents";

/// An [`Incident`] as stored, after the [`COMPACT`](compact::COMPACT) byte. Fields are only
/// ever added at the end.
#[derive(Serialize, Deserialize)]
struct StoredIncident<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    number: Cow<'a, str>,
    priority: Option<u8>,
    state: IncidentState,
    #[serde(borrow)]
    short_description: Option<Cow<'a, str>>,
    opened_at: Option<Instant>,
    responded_at: Option<Instant>,
    resolved_at: Option<Instant>,
    closed_at: Option<Instant>,
    on_hold_seconds: Option<i64>,
    #[serde(borrow)]
    ci: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    company: Option<Cow<'a, str>>,
    major: bool,
    updated_at: Instant,
}

/// The value stored for `record` in `tree`.
pub(super) fn encode(tree: &'static str, record: &ItsmRecord) -> Result<Vec<u8>, StoreError> {
    let ItsmRecord::Incident(incident) = record else {
        return serde_json::to_vec(record).map_err(|source| StoreError::Encode { tree, source });
    };
    let stored = StoredIncident {
        id: Cow::Borrowed(&incident.id),
        number: Cow::Borrowed(&incident.number),
        priority: incident.priority,
        state: incident.state,
        short_description: borrowed(&incident.short_description),
        opened_at: incident.opened_at.map(instant),
        responded_at: incident.responded_at.map(instant),
        resolved_at: incident.resolved_at.map(instant),
        closed_at: incident.closed_at.map(instant),
        on_hold_seconds: incident.on_hold_seconds,
        ci: borrowed(&incident.ci),
        service: borrowed(&incident.service),
        account: borrowed(&incident.account),
        company: borrowed(&incident.company),
        major: incident.major,
        updated_at: instant(incident.updated_at),
    };
    compact::encode(tree, &stored)
}

/// The record stored under `key` in `tree`, of either encoding.
pub(super) fn decode(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<ItsmRecord, StoreError> {
    let stored: StoredIncident<'_> = match compact::read(tree, key, bytes)? {
        Value::Json(record) => return Ok(record),
        Value::Compact(_) if tree != INCIDENTS => {
            return Err(compact::corrupt(
                tree,
                key,
                "a compact value outside the incidents".into(),
            ));
        }
        Value::Compact(stored) => stored,
    };
    let at = |instant| compact::date_time(tree, key, instant);
    Ok(ItsmRecord::Incident(Incident {
        id: stored.id.into_owned(),
        number: stored.number.into_owned(),
        priority: stored.priority,
        state: stored.state,
        short_description: owned(stored.short_description),
        opened_at: stored.opened_at.map(at).transpose()?,
        responded_at: stored.responded_at.map(at).transpose()?,
        resolved_at: stored.resolved_at.map(at).transpose()?,
        closed_at: stored.closed_at.map(at).transpose()?,
        on_hold_seconds: stored.on_hold_seconds,
        ci: owned(stored.ci),
        service: owned(stored.service),
        account: owned(stored.account),
        company: owned(stored.company),
        major: stored.major,
        updated_at: at(stored.updated_at)?,
    }))
}

/// A stored incident as JSON, for `csmd store export`.
pub(in crate::store) fn exported<'v>(
    key: &[u8],
    value: &'v [u8],
) -> Result<Cow<'v, [u8]>, StoreError> {
    compact::exported(INCIDENTS, value, || decode(INCIDENTS, key, value))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone as _, Utc};

    use super::*;
    use crate::store::Store;
    use crate::store::compact::COMPACT;

    fn at(seconds: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + seconds, nanos).unwrap()
    }

    fn incident(updated: i64) -> Incident {
        Incident {
            id: "9d385017c611228701d22104cc95c371".into(),
            number: "INC0010042".into(),
            priority: Some(2),
            state: IncidentState::OnHold,
            short_description: Some("Émail relay slow for «ACME»".into()),
            opened_at: Some(at(0, 123_456_789)),
            responded_at: None,
            resolved_at: Some(at(600, 0)),
            closed_at: None,
            on_hold_seconds: Some(-5),
            ci: Some("ci-1".into()),
            service: None,
            account: Some("acct-1".into()),
            company: None,
            major: true,
            updated_at: at(updated, 1),
        }
    }

    #[test]
    fn an_incident_reads_back_as_written_in_less_than_half_its_json() {
        let record = ItsmRecord::Incident(incident(700));
        let bytes = encode(INCIDENTS, &record).unwrap();
        assert_eq!(bytes.first(), Some(&COMPACT));
        assert_eq!(decode(INCIDENTS, b"k", &bytes).unwrap(), record);
        let json = serde_json::to_vec(&record).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} against {}",
            bytes.len(),
            json.len()
        );
        let other = ItsmRecord::Incident(Incident {
            priority: None,
            state: IncidentState::Other(-7),
            short_description: None,
            opened_at: None,
            resolved_at: None,
            on_hold_seconds: None,
            ci: None,
            account: None,
            company: Some("co".into()),
            major: false,
            ..incident(1)
        });
        let bytes = encode(INCIDENTS, &other).unwrap();
        assert_eq!(decode(INCIDENTS, b"k", &bytes).unwrap(), other);
    }

    /// Postcard has no names: moving a field of [`StoredIncident`] or a
    /// variant of [`IncidentState`] would read every stored incident
    /// wrong. This pins the encoding.
    #[test]
    fn the_compact_encoding_does_not_move() {
        let bytes = encode(INCIDENTS, &ItsmRecord::Incident(incident(700))).unwrap();
        assert_eq!(
            hex::encode(&bytes),
            "01203964333835303137633631313232383730316432323130346363393563333731\
             0a494e4330303130303432010202011ec3896d61696c2072656c617920736c6f7720\
             666f7220c2ab41434d45c2bb0180ee89ab0d959aef3a0001b0f789ab0d0000010901\
             0463692d31000106616363742d310001f8f889ab0d01"
        );
    }

    #[test]
    fn a_corrupt_value_is_an_error_naming_its_key() {
        let error = decode(INCIDENTS, b"inc-9", &[COMPACT, 0xff]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("inc-9"), "{message}");
        let compact = encode(INCIDENTS, &ItsmRecord::Incident(incident(1))).unwrap();
        let error = decode("changes", b"chg-1", &compact).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("chg-1") && message.contains("changes"),
            "{message}"
        );
    }

    #[test]
    fn an_incident_stored_as_json_is_read_and_rewritten_compact_on_its_next_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = ItsmRecord::Incident(incident(700));
        let tree = store.db.open_tree(INCIDENTS).unwrap();
        tree.insert(old.id(), serde_json::to_vec(&old).unwrap())
            .unwrap();
        assert_eq!(
            store.itsm_record(INCIDENTS, old.id()).unwrap(),
            Some(old.clone())
        );
        assert_eq!(store.itsm_records(INCIDENTS).unwrap(), vec![old.clone()]);

        // The same copy again changes nothing; a newer one is stored compact.
        assert_eq!(store.apply_itsm([&old]).unwrap().changed, 0);
        let newer = ItsmRecord::Incident(incident(800));
        assert_eq!(store.apply_itsm([&newer]).unwrap().changed, 1);
        let value = tree.get(newer.id()).unwrap().unwrap();
        assert_eq!(value.first(), Some(&COMPACT));
        assert_eq!(
            store.itsm_record(INCIDENTS, newer.id()).unwrap(),
            Some(newer.clone())
        );
        // An older copy arriving late is still refused.
        assert_eq!(store.apply_itsm([&old]).unwrap().changed, 0);

        // The export holds it as JSON.
        let exported = exported(newer.id().as_bytes(), &value).unwrap();
        let json: ItsmRecord = serde_json::from_slice(&exported).unwrap();
        assert_eq!(json, newer);
    }
}

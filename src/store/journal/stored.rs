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
//!
//! The entries of one group commit are stored together, as one record
//! under the key of its first entry ([`RecordWriter`]): after the
//! [`RECORD`](compact::RECORD) byte, each entry as [`encode`] writes it,
//! after its length (4 bytes, little-endian). sled's cost is per key, and
//! written one key an entry, an alert storm's journal took the global
//! write lock of sled (which every `apply_batch` takes, on any tree) for
//! as long as a few hundred inserts, every group, while the engine and the
//! planner waited to read (BENCHMARKS.md). A record is cut at
//! [`RECORD_BYTES`] and stored packed with LZ4 ([`compact::pack_bytes`]):
//! an alert storm's records take a third of their size (24.1 MB of
//! records in 7.8 MB in the alert benchmark), and so push that much less
//! of what the engine reads out of sled's page cache. Entries of earlier
//! versions, and those `csmd store import` writes, are one per key; both
//! are read ([`Record`]).

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

/// Encoded entries past this size start a new record.
const RECORD_BYTES: usize = 128 * 1024;

/// A finished record: its key (its first entry's) and value.
pub(super) type Written = ([u8; 9], Vec<u8>);

/// Gathers the encoded entries of a group commit into records, packed.
#[derive(Default)]
pub(super) struct RecordWriter {
    /// The first entry's sequence number and the record so far.
    current: Option<(u64, Vec<u8>)>,
}

impl RecordWriter {
    /// Adds the entry `seq`, which follows the last one added; returns the
    /// record it completed, if any, as its key and value.
    pub fn push(&mut self, seq: u64, encoded: &[u8]) -> Result<Option<Written>, StoreError> {
        let len = u32::try_from(encoded.len()).map_err(|_| StoreError::Encoding {
            tree: TREE,
            message: format!("entry {seq} is {} bytes, over 4 GiB", encoded.len()),
        })?;
        let full = self
            .current
            .as_ref()
            .is_some_and(|(_, value)| value.len() + encoded.len() > RECORD_BYTES);
        let done = if full { self.finish()? } else { None };
        let (_, value) = self
            .current
            .get_or_insert_with(|| (seq, vec![compact::RECORD]));
        value.extend_from_slice(&len.to_le_bytes());
        value.extend_from_slice(encoded);
        Ok(done)
    }

    /// The record being written, packed, if it holds any entry.
    pub fn finish(&mut self) -> Result<Option<Written>, StoreError> {
        self.current
            .take()
            .map(|(first_seq, value)| {
                Ok((key::entry(first_seq), compact::pack_bytes(TREE, &value)?))
            })
            .transpose()
    }
}

/// A record as read from the tree: its entries found, not yet decoded, so
/// that a reader decodes only the entries it wants.
pub(in crate::store) struct Record {
    key: Vec<u8>,
    first_seq: u64,
    /// The record unpacked, or the one entry of an earlier version.
    body: Vec<u8>,
    /// Where each entry lies in `body`, oldest first.
    spans: Vec<std::ops::Range<usize>>,
}

impl Record {
    /// The record stored under `stored_key`: a record, or the one entry of
    /// an earlier version.
    pub fn read(stored_key: &[u8], value: &[u8]) -> Result<Record, StoreError> {
        let corrupt = |message: &str| compact::corrupt(TREE, stored_key, message.to_owned());
        let first_seq = key::seq(stored_key).ok_or_else(|| corrupt("not an entry's key"))?;
        let body = compact::unpack(TREE, stored_key, value)?.into_owned();
        let spans = match body.strip_prefix(&[compact::RECORD]) {
            None => std::iter::once(0..body.len()).collect(),
            Some(mut rest) => {
                let mut spans = Vec::new();
                while !rest.is_empty() {
                    let (len, tail) = rest
                        .split_first_chunk::<4>()
                        .ok_or_else(|| corrupt("a record ends inside an entry's length"))?;
                    let len = usize::try_from(u32::from_le_bytes(*len)).unwrap_or(usize::MAX);
                    if len > tail.len() {
                        return Err(corrupt("a record ends inside an entry"));
                    }
                    let start = body.len() - tail.len();
                    spans.push(start..start + len);
                    rest = &tail[len..];
                }
                if spans.is_empty() {
                    return Err(corrupt("a record holds no entry"));
                }
                spans
            }
        };
        Ok(Record {
            key: stored_key.to_vec(),
            first_seq,
            body,
            spans,
        })
    }

    /// How many entries the record holds; never 0.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// The sequence number of its first entry.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Its `index`th entry, checked to be the one that belongs there.
    pub fn entry(&self, index: usize) -> Result<JournalEntry, StoreError> {
        let seq = self.first_seq + index as u64;
        let span = self.spans.get(index).cloned().ok_or_else(|| {
            compact::corrupt(TREE, &self.key, format!("no entry {seq} in the record"))
        })?;
        let entry = decode(&self.key, &self.body[span])?;
        if entry.seq != seq {
            return Err(compact::corrupt(
                TREE,
                &self.key,
                format!("entry {} where entry {seq} belongs", entry.seq),
            ));
        }
        Ok(entry)
    }
}

/// The entries stored under `stored_key`, oldest first, checked to be the
/// key's entry and those right after it.
#[cfg(test)]
fn entries(stored_key: &[u8], value: &[u8]) -> Result<Vec<JournalEntry>, StoreError> {
    let record = Record::read(stored_key, value)?;
    (0..record.len()).map(|index| record.entry(index)).collect()
}

/// A key and value of `csmd store export`: borrowed when stored as they
/// are exported.
pub(in crate::store) type Exported<'v> = (Cow<'v, [u8]>, Cow<'v, [u8]>);

/// A stored value of the journal tree as JSON records, for `csmd store
/// export`: each entry under its own key (as earlier versions stored
/// them, and as `csmd store import` writes them back), a compact one
/// decoded; anything else (delivery ids and cursors, whatever their first
/// byte) as it is.
pub(in crate::store) fn exported<'v>(
    stored_key: &'v [u8],
    value: &'v [u8],
) -> Result<Vec<Exported<'v>>, StoreError> {
    let Some(first_seq) = key::seq(stored_key) else {
        return Ok(vec![(Cow::Borrowed(stored_key), Cow::Borrowed(value))]);
    };
    let record = Record::read(stored_key, value)?;
    record
        .spans
        .iter()
        .zip(first_seq..)
        .map(|(span, seq)| {
            let bytes = &record.body[span.clone()];
            let json = compact::exported(TREE, bytes, || decode(stored_key, bytes))?;
            Ok((
                Cow::Owned(key::entry(seq).to_vec()),
                Cow::Owned(json.into_owned()),
            ))
        })
        .collect()
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
            let exported = exported_one(&key::entry(entry.seq), &value);
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
        assert_eq!(exported_one(&key::entry(feedback.seq), &value), value);

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
            assert_eq!(exported_one(&stored_key, &cursor), cursor);
        }
        assert!(exported(&key::entry(1), &cursor).is_err());
    }

    /// The one record `exported` makes of a value, which keeps its key.
    fn exported_one(stored_key: &[u8], value: &[u8]) -> Vec<u8> {
        let records = exported(stored_key, value).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].0.as_ref(), stored_key);
        records[0].1.to_vec()
    }

    /// Entries `seqs`, alerts and feedback in turn.
    fn mixed(seqs: std::ops::RangeInclusive<u64>) -> Vec<JournalEntry> {
        seqs.map(|seq| {
            let entry = JournalEntry {
                seq,
                ..alert_entry(seq % 3 == 0)
            };
            if seq % 2 == 0 {
                return entry;
            }
            JournalEntry {
                event: Event::Feedback(FeedbackEvent {
                    source_id: format!("survey-{seq}"),
                    customer: "acme".into(),
                    kind: FeedbackKind::Csat,
                    score: Some(4.0),
                    comment: None,
                    respondent: None,
                    submitted_at: None,
                }),
                ..entry
            }
        })
        .collect()
    }

    /// The records `entries` are written as, with their keys.
    fn records(entries: &[JournalEntry]) -> Vec<Written> {
        let mut writer = RecordWriter::default();
        let mut out: Vec<_> = entries
            .iter()
            .filter_map(|entry| writer.push(entry.seq, &stored(entry)).unwrap())
            .collect();
        out.extend(writer.finish().unwrap());
        out
    }

    #[test]
    fn a_group_is_one_record_read_back_entry_by_entry_and_exported_one_entry_a_key() {
        let entries = mixed(7..=9);
        let written = records(&entries);
        assert_eq!(written.len(), 1, "three small entries, one record");
        let (stored_key, value) = &written[0];
        assert_eq!(stored_key, &key::entry(7));
        assert_eq!(value.first(), Some(&compact::PACKED));
        assert_eq!(self::entries(stored_key, value).unwrap(), entries);
        assert_eq!(Record::read(stored_key, value).unwrap().len(), 3);

        let exported = exported(stored_key, value).unwrap();
        let keys: Vec<&[u8]> = exported.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, [&key::entry(7)[..], &key::entry(8), &key::entry(9)]);
        for ((_, json), entry) in exported.iter().zip(&entries) {
            let back: JournalEntry = serde_json::from_slice(json).unwrap();
            assert_eq!(&back, entry);
        }
    }

    #[test]
    fn a_record_is_cut_at_its_size_and_the_records_hold_every_entry_in_order() {
        let entries = mixed(1..=3_000);
        let written = records(&entries);
        assert!(written.len() > 2, "{} records", written.len());
        let mut read = Vec::new();
        let (mut packed, mut unpacked) = (0, 0);
        for (stored_key, value) in &written {
            let plain = compact::unpack(TREE, stored_key, value).unwrap();
            assert!(plain.len() <= RECORD_BYTES + 1, "{} bytes", plain.len());
            (packed, unpacked) = (packed + value.len(), unpacked + plain.len());
            let held = self::entries(stored_key, value).unwrap();
            assert_eq!(key::seq(stored_key), Some(held[0].seq));
            read.extend(held);
        }
        assert_eq!(read, entries);
        // Entries of one source are alike: LZ4 packs them to a fraction.
        assert!(packed * 3 < unpacked, "{packed} bytes packed of {unpacked}");
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_key() {
        let (_, whole) = records(&mixed(5..=6)).remove(0);
        let plain = compact::unpack(TREE, b"e", &whole).unwrap().into_owned();
        let mut too_long = whole.clone();
        too_long[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let cases: [(&[u8], &[u8], &str); 7] = [
            (&key::entry(5), &too_long, "unpacks to 4294967295 bytes"),
            (&key::entry(5), &whole[..whole.len() - 1], "cannot unpack"),
            (&key::entry(5), &[compact::RECORD], "holds no entry"),
            (
                &key::entry(5),
                &[compact::RECORD, 9, 0],
                "inside an entry's length",
            ),
            (
                &key::entry(5),
                &plain[..plain.len() - 1],
                "ends inside an entry",
            ),
            (&key::entry(4), &whole, "entry 5 where entry 4 belongs"),
            (b"c-cursor", &whole, "not an entry's key"),
        ];
        for (stored_key, value, expected) in cases {
            let message = entries(stored_key, value).unwrap_err().to_string();
            let named = String::from_utf8_lossy(stored_key);
            assert!(
                message.contains(expected)
                    && message.contains(&*named)
                    && message.contains("journal"),
                "{message}"
            );
        }
    }
}

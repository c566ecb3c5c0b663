//! Reading csmd's internally tagged enums ([`Event`](super::Event),
//! [`ItsmRecord`](super::itsm::ItsmRecord)) as they are parsed.
//!
//! serde's derive for `#[serde(tag = "…")]` reads the whole object into a
//! tree of its own first, to find the tag wherever it is, then reads the
//! variant from that tree: every key and string is allocated and copied
//! twice, and a journal entry holding an ITSM record (tagged twice) three
//! times. Decoding journal entries was a tenth of csmd's CPU in a full
//! ITSM sync, and the buffering about a quarter of each decode
//! (BENCHMARKS.md).
//!
//! serde's derive writes the tag first, so here the tag is read first and
//! the variant from the rest of the object as it comes. An object whose
//! tag comes later (written by hand) takes the slow road through a
//! [`serde_json::Value`], and reads the same.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess};
use serde_json::Value;

/// An enum stored as an object whose field `TAG` names the variant, the
/// variant's own fields beside it.
pub(super) trait Tagged: Sized {
    const TAG: &'static str;
    const VARIANTS: &'static [&'static str];
    const EXPECTING: &'static str;

    /// The variant named `tag`, read from the rest of the object.
    fn variant<'de, D: Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error>;

    /// The error for a tag that names no variant.
    fn unknown<E: de::Error>(tag: &str) -> E {
        E::unknown_variant(tag, Self::VARIANTS)
    }
}

/// `Deserialize::deserialize` of a [`Tagged`] enum.
pub(super) fn deserialize<'de, T: Tagged, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    deserializer.deserialize_map(Visitor(PhantomData))
}

struct Visitor<T>(PhantomData<T>);

impl<'de, T: Tagged> de::Visitor<'de> for Visitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field(T::TAG));
        };
        if first == T::TAG {
            let tag: String = map.next_value()?;
            return T::variant(&tag, MapAccessDeserializer::new(map));
        }
        let mut object = serde_json::Map::new();
        object.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            object.insert(key, value);
        }
        let tag = match object.remove(T::TAG) {
            Some(Value::String(tag)) => tag,
            Some(other) => {
                return Err(de::Error::invalid_type(
                    de::Unexpected::Other(&other.to_string()),
                    &"a string",
                ));
            }
            None => return Err(de::Error::missing_field(T::TAG)),
        };
        T::variant(&tag, Value::Object(object)).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::Tagged;
    use crate::model::itsm::ItsmRecord;
    use crate::model::{AlertEvent, AlertStatus, Event, FeedbackEvent, FeedbackKind};

    const AT: &str = r#""updated_at":"2026-11-02T03:04:05.123456789Z""#;

    /// One record of each kind, its tag first, as serde writes it.
    fn records() -> Vec<(&'static str, String)> {
        [
            ("account", r#""id":"a","name":"ACME""#),
            ("contact", r#""id":"c","name":"Jo","email":"jo@acme.example""#),
            ("ci", r#""id":"ci","name":"srv1","install_status":1"#),
            ("install_base_item", r#""id":"ib","ci":"ci","service":null"#),
            ("incident", r#""id":"i","number":"INC1","state":"new","major":true"#),
            (
                "change",
                r#""id":"ch","number":"CHG1","state":{"other":9},"billable":false,"customer_requested":true"#,
            ),
            ("change_ci", r#""id":"cc","change":"ch","ci":"ci""#),
            ("problem", r#""id":"p","number":"PRB1","cause_notes":"a \"quoted\" cause""#),
            ("problem_task", r#""id":"pt","number":"PTASK1","problem":"p""#),
            ("billing_account", r#""id":"ba","name":"ACME SAS""#),
            ("subscription", r#""id":"s","quantity":2.5"#),
            ("charge", r#""id":"x","amount":-12.0"#),
        ]
        .into_iter()
        .map(|(tag, fields)| (tag, format!(r#"{{"kind":"{tag}",{fields},{AT}}}"#)))
        .collect()
    }

    #[test]
    fn every_kind_reads_back_as_written_whatever_the_place_of_its_tag() {
        let records = records();
        assert_eq!(records.len(), ItsmRecord::VARIANTS.len());
        for (tag, json) in records {
            let record: ItsmRecord = serde_json::from_str(&json).unwrap();
            // The tag read is the one serde's derive writes for the variant.
            assert_eq!(serde_json::to_value(&record).unwrap()["kind"], tag);
            let written = serde_json::to_string(&record).unwrap();
            assert!(
                written.starts_with(&format!(r#"{{"kind":"{tag}","#)),
                "{written}"
            );
            assert_eq!(
                serde_json::from_str::<ItsmRecord>(&written).unwrap(),
                record
            );

            let untagged = json.replacen(&format!(r#""kind":"{tag}","#), "", 1);
            let tag_last = format!(r#"{},"kind":"{tag}"}}"#, untagged.trim_end_matches('}'));
            assert_eq!(
                serde_json::from_str::<ItsmRecord>(&tag_last).unwrap(),
                record
            );
            let value: serde_json::Value = serde_json::from_str(&tag_last).unwrap();
            assert_eq!(serde_json::from_value::<ItsmRecord>(value).unwrap(), record);

            let event = Event::Itsm(record);
            let written = serde_json::to_string(&event).unwrap();
            assert!(
                written.starts_with(r#"{"type":"itsm","kind":"#),
                "{written}"
            );
            assert_eq!(serde_json::from_str::<Event>(&written).unwrap(), event);
            let type_last = format!(r#"{},"type":"itsm"}}"#, json.trim_end_matches('}'));
            assert_eq!(serde_json::from_str::<Event>(&type_last).unwrap(), event);
        }
    }

    #[test]
    fn alerts_and_feedback_read_back_as_written() {
        let events = [
            Event::Alert(AlertEvent {
                source_id: "fp1".into(),
                status: AlertStatus::Firing,
                service: Some("voice".into()),
                ci: None,
                customer: None,
                severity: Some("critical".into()),
                summary: "SIP trunk down".into(),
                starts_at: None,
                ends_at: None,
            }),
            Event::Feedback(FeedbackEvent {
                source_id: "s1".into(),
                customer: "acme".into(),
                kind: FeedbackKind::Nps,
                score: Some(3.0),
                comment: None,
                respondent: None,
                submitted_at: None,
            }),
        ];
        for event in events {
            let written = serde_json::to_string(&event).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&written).unwrap(), event);
        }
    }

    #[test]
    fn a_missing_or_unknown_tag_is_an_error_that_says_so() {
        let error = serde_json::from_str::<Event>(r#"{"source_id":"x"}"#).unwrap_err();
        assert!(
            error.to_string().contains("missing field `type`"),
            "{error}"
        );
        let error = serde_json::from_str::<Event>("{}").unwrap_err();
        assert!(
            error.to_string().contains("missing field `type`"),
            "{error}"
        );
        let error = serde_json::from_str::<Event>(r#"{"type":"page"}"#).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown variant `page`, expected one of `alert`, `itsm`, `feedback`"),
            "{error}"
        );
        let error = serde_json::from_str::<ItsmRecord>(r#"{"id":"x","kind":7}"#).unwrap_err();
        assert!(error.to_string().contains("expected a string"), "{error}");
        let error =
            serde_json::from_str::<ItsmRecord>(r#"{"kind":"incident","id":"x"}"#).unwrap_err();
        assert!(error.to_string().contains("missing field"), "{error}");
        let error = serde_json::from_str::<ItsmRecord>("[1]").unwrap_err();
        assert!(error.to_string().contains("an ITSM record"), "{error}");
    }
}

//! Customer feedback over a generic JSON webhook: survey answers (CSAT,
//! NPS) and complaints, from a survey tool, a web form or the service
//! desk. Like the alert webhook, the profile maps csmd's fields with JSON
//! pointers; the SIP processor decides which answers become actions.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::pointer::{Fields, Pointers};
use super::{MappingError, ParseError};
use crate::model::{Event, FeedbackEvent, FeedbackKind};

/// `connectors/feedback-json/profile.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Always `feedback-json`.
    pub kind: String,
    pub description: String,
    /// JSON pointer to the array of records; empty when the body is itself
    /// a record or an array of records.
    #[serde(default)]
    pub records: String,
    /// csmd field → JSON pointer inside one record.
    pub fields: BTreeMap<String, String>,
    /// Source values of `type` (compared case-insensitively) meaning each
    /// kind of feedback.
    pub types: TypeValues,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeValues {
    pub csat: Vec<String>,
    pub nps: Vec<String>,
    pub complaint: Vec<String>,
}

const FIELDS: Fields = Fields {
    kind: "feedback-json",
    required: &["id", "customer", "type"],
    optional: &["score", "comment", "respondent", "submitted_at"],
};

/// A profile with a connector's overrides applied.
#[derive(Debug, Clone)]
pub struct Mapping {
    pointers: Pointers,
    types: TypeValues,
}

impl Profile {
    pub fn mapping(&self, overrides: &toml::Table) -> Result<Mapping, Vec<MappingError>> {
        Ok(Mapping {
            pointers: FIELDS.pointers(&self.records, &self.fields, overrides)?,
            types: self.types.clone(),
        })
    }
}

impl Mapping {
    pub fn parse(&self, body: &[u8]) -> Result<Vec<Event>, ParseError> {
        self.pointers.parse(body, |r| self.record(r))
    }

    fn record(&self, record: &Value) -> Result<Event, String> {
        let p = &self.pointers;
        let type_text = p.required_text(record, "type")?;
        let is = |values: &[String]| values.iter().any(|v| v.eq_ignore_ascii_case(&type_text));
        let kind = if is(&self.types.csat) {
            FeedbackKind::Csat
        } else if is(&self.types.nps) {
            FeedbackKind::Nps
        } else if is(&self.types.complaint) {
            FeedbackKind::Complaint
        } else {
            return Err(format!(
                "type {type_text:?} at {} is none of csat ({}), nps ({}), complaint ({})",
                p.pointer("type"),
                self.types.csat.join(", "),
                self.types.nps.join(", "),
                self.types.complaint.join(", ")
            ));
        };
        let score = p.number(record, "score")?;
        let comment = p.text(record, "comment")?;
        match (kind, score) {
            (FeedbackKind::Csat | FeedbackKind::Nps, None) => {
                return Err(format!(
                    "a {} answer needs `score` at {}",
                    kind.as_str(),
                    p.pointer("score")
                ));
            }
            (FeedbackKind::Nps, Some(s)) if !(0.0..=10.0).contains(&s) => {
                return Err(format!("an NPS score is 0 to 10, found {s}"));
            }
            (FeedbackKind::Csat, Some(s)) if s < 0.0 => {
                return Err(format!("a CSAT score is not negative, found {s}"));
            }
            (FeedbackKind::Complaint, _) if comment.is_none() => {
                return Err(format!(
                    "a complaint needs its text in `comment` at {}",
                    p.pointer("comment")
                ));
            }
            _ => {}
        }
        Ok(Event::Feedback(FeedbackEvent {
            source_id: p.required_text(record, "id")?,
            customer: p.required_text(record, "customer")?,
            kind,
            score,
            comment,
            respondent: p.text(record, "respondent")?,
            submitted_at: p.time(record, "submitted_at")?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        let profile: Profile = crate::connector::pointer::shipped_profile("feedback-json");
        profile
            .mapping(&toml::Table::new())
            .expect("shipped profile maps")
    }

    #[test]
    fn parses_the_recorded_samples() {
        let body = include_bytes!("../../connectors/feedback-json/fixtures/survey-answers.json");
        let events = mapping().parse(body).expect("fixture parses");
        let kinds: Vec<_> = events
            .iter()
            .map(|e| match e {
                Event::Feedback(f) => (f.kind, f.score),
                other => panic!("not feedback: {other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (FeedbackKind::Csat, Some(2.0)),
                (FeedbackKind::Nps, Some(9.0)),
                (FeedbackKind::Complaint, None)
            ]
        );
        let Event::Feedback(first) = &events[0] else {
            unreachable!()
        };
        assert_eq!(first.customer, "acme");
        assert!(first.submitted_at.is_some());
    }

    #[test]
    fn says_what_is_missing_or_out_of_range() {
        let m = mapping();
        let err = m
            .parse(br#"{"id":"1","customer":"acme","type":"nps","score":11}"#)
            .unwrap_err();
        assert_eq!(err.0, "an NPS score is 0 to 10, found 11");
        let err = m
            .parse(br#"{"id":"1","customer":"acme","type":"csat"}"#)
            .unwrap_err();
        assert_eq!(err.0, "a csat answer needs `score` at /score");
        let err = m
            .parse(br#"[{"id":"1","customer":"acme","type":"complaint","comment":"x"},{"id":"2","customer":"acme","type":"complaint"}]"#)
            .unwrap_err();
        assert_eq!(
            err.0,
            "record 1: a complaint needs its text in `comment` at /comment"
        );
        let err = m
            .parse(br#"{"id":"1","customer":"acme","type":"praise"}"#)
            .unwrap_err();
        assert!(
            err.0.starts_with("type \"praise\" at /type is none of"),
            "{err}"
        );
        let err = m
            .parse(br#"{"id":"1","customer":"acme","type":"csat","score":"good"}"#)
            .unwrap_err();
        assert_eq!(err.0, "`score` at /score must be a number, found a string");
        // A numeric string is a number.
        assert!(
            m.parse(br#"{"id":"1","customer":"acme","type":"csat","score":"4"}"#)
                .is_ok()
        );
    }
}

//! The generic JSON webhook: any monitoring tool that can POST JSON. The
//! profile names, as JSON pointers, where each of csmd's alert fields is in
//! a record; a body is one record, an array of them, or an object holding
//! the array at `records`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::pointer::{Fields, Pointers};
use super::{MappingError, ParseError};
use crate::model::{AlertEvent, AlertStatus, Event};

/// `connectors/webhook-json/profile.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Always `webhook-json`.
    pub kind: String,
    pub description: String,
    /// JSON pointer to the array of records in the body; empty when the body
    /// is itself a record or an array of records.
    #[serde(default)]
    pub records: String,
    /// csmd field → JSON pointer inside one record.
    pub fields: BTreeMap<String, String>,
    /// Source status values (compared case-insensitively) meaning each status.
    pub status: StatusValues,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusValues {
    pub firing: Vec<String>,
    pub resolved: Vec<String>,
}

/// The fields an alert record maps onto.
const FIELDS: Fields = Fields {
    kind: "webhook-json",
    required: &["id", "status", "summary"],
    optional: &[
        "service",
        "ci",
        "customer",
        "severity",
        "starts_at",
        "ends_at",
    ],
};

/// A profile with a connector's overrides applied, ready to parse bodies.
#[derive(Debug, Clone)]
pub struct Mapping {
    pointers: Pointers,
    status: StatusValues,
}

impl Profile {
    pub fn mapping(&self, overrides: &toml::Table) -> Result<Mapping, Vec<MappingError>> {
        Ok(Mapping {
            pointers: FIELDS.pointers(&self.records, &self.fields, overrides)?,
            status: self.status.clone(),
        })
    }
}

impl Mapping {
    pub fn parse(&self, body: &[u8]) -> Result<Vec<Event>, ParseError> {
        self.pointers.parse(body, |r| self.record(r))
    }

    fn record(&self, record: &Value) -> Result<Event, String> {
        let p = &self.pointers;
        let status_text = p.required_text(record, "status")?;
        let status = if self
            .status
            .firing
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&status_text))
        {
            AlertStatus::Firing
        } else if self
            .status
            .resolved
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&status_text))
        {
            AlertStatus::Resolved
        } else {
            return Err(format!(
                "status {status_text:?} at {} is neither firing ({}) nor resolved ({})",
                p.pointer("status"),
                self.status.firing.join(", "),
                self.status.resolved.join(", ")
            ));
        };
        Ok(Event::Alert(AlertEvent {
            source_id: p.required_text(record, "id")?,
            status,
            summary: p.required_text(record, "summary")?,
            service: p.text(record, "service")?,
            ci: p.text(record, "ci")?,
            customer: p.text(record, "customer")?,
            severity: p.text(record, "severity")?,
            starts_at: p.time(record, "starts_at")?,
            ends_at: p.time(record, "ends_at")?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        crate::connector::pointer::shipped_profile("webhook-json")
    }

    fn mapping() -> Mapping {
        profile()
            .mapping(&toml::Table::new())
            .expect("shipped profile maps")
    }

    #[test]
    fn parses_the_recorded_sample() {
        let body = include_bytes!("../../connectors/webhook-json/fixtures/two-alerts.json");
        let events = mapping().parse(body).expect("fixture parses");
        assert_eq!(events.len(), 2);
        let Event::Alert(first) = &events[0] else {
            panic!("not an alert")
        };
        assert_eq!(first.status, AlertStatus::Firing);
        assert_eq!(first.ci.as_deref(), Some("core-sw-par-01"));
        assert!(first.starts_at.is_some());
        let Event::Alert(second) = &events[1] else {
            panic!("not an alert")
        };
        assert_eq!(second.status, AlertStatus::Resolved);
    }

    #[test]
    fn says_which_record_is_wrong_and_why() {
        let body = br#"{"alerts":[{"id":"a","status":"firing","summary":"x"},{"id":"b","status":"weird","summary":"y"}]}"#;
        let err = mapping().parse(body).unwrap_err();
        assert!(err.0.starts_with("record 1: status \"weird\""), "{err}");
        let err = mapping()
            .parse(br#"{"alerts":[{"status":"firing","summary":"x"}]}"#)
            .unwrap_err();
        assert_eq!(err.0, "record 0: missing `id` at /id");
        let err = mapping().parse(b"{not json").unwrap_err();
        assert!(
            err.0
                .starts_with("body is not valid JSON: key must be a string at line 1 column 2"),
            "{err}"
        );
    }

    #[test]
    fn overrides_replace_pointers_and_unknown_fields_are_refused() {
        let mut overrides = toml::Table::new();
        overrides.insert("ci".into(), toml::Value::String("/labels/u_host".into()));
        let m = mapping();
        let profile = profile();
        let custom = profile.mapping(&overrides).unwrap();
        let body = br#"{"alerts":[{"id":"a","status":"firing","summary":"x","ci":"old","labels":{"u_host":"new"}}]}"#;
        let Event::Alert(a) = &custom.parse(body).unwrap()[0] else {
            panic!("not an alert")
        };
        assert_eq!(a.ci.as_deref(), Some("new"));
        let Event::Alert(a) = &m.parse(body).unwrap()[0] else {
            panic!("not an alert")
        };
        assert_eq!(a.ci.as_deref(), Some("old"));
        overrides.insert("hostname".into(), toml::Value::String("/h".into()));
        assert!(
            profile.mapping(&overrides).unwrap_err()[0]
                .message
                .starts_with("unknown field `hostname`")
        );
    }
}

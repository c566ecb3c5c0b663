//! The generic JSON webhook: any monitoring tool that can POST JSON. The
//! profile names, as JSON pointers, where each of csmd's alert fields is in
//! a record; a body is one record, an array of them, or an object holding
//! the array at `records`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

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

/// The fields a record maps onto; the first three are required.
const REQUIRED: &[&str] = &["id", "status", "summary"];
const OPTIONAL: &[&str] = &[
    "service",
    "ci",
    "customer",
    "severity",
    "starts_at",
    "ends_at",
];

/// A profile with a connector's overrides applied, ready to parse bodies.
#[derive(Debug, Clone)]
pub struct Mapping {
    records: String,
    fields: BTreeMap<&'static str, String>,
    status: StatusValues,
}

impl Profile {
    pub fn mapping(&self, overrides: &toml::Table) -> Result<Mapping, Vec<MappingError>> {
        let mut errors = Vec::new();
        let of_profile = |message| MappingError {
            field: None,
            message,
        };
        let of_override = |name: &str, message| MappingError {
            field: Some(name.to_string()),
            message,
        };
        let mut fields = BTreeMap::new();
        let known = || REQUIRED.iter().chain(OPTIONAL).copied();
        for (name, pointer) in &self.fields {
            match known().find(|k| k == name) {
                Some(k) => {
                    fields.insert(k, pointer.clone());
                }
                None => errors.push(of_profile(format!("profile maps unknown field `{name}`"))),
            }
        }
        for (name, value) in overrides {
            let Some(k) = known().find(|k| k == name) else {
                let all: Vec<_> = known().collect();
                errors.push(of_override(
                    name,
                    format!(
                        "unknown field `{name}`; webhook-json fields are {}",
                        all.join(", ")
                    ),
                ));
                continue;
            };
            match value.as_str() {
                Some(p) if p.is_empty() || p.starts_with('/') => {
                    fields.insert(k, p.to_string());
                }
                _ => errors.push(of_override(
                    name,
                    format!(
                        "field `{name}` must be a JSON pointer string like \"/labels/instance\""
                    ),
                )),
            }
        }
        for required in REQUIRED {
            if !fields.contains_key(required) {
                errors.push(of_profile(format!("field `{required}` has no mapping")));
            }
        }
        if errors.is_empty() {
            Ok(Mapping {
                records: self.records.clone(),
                fields,
                status: self.status.clone(),
            })
        } else {
            Err(errors)
        }
    }
}

impl Mapping {
    pub fn parse(&self, body: &[u8]) -> Result<Vec<Event>, ParseError> {
        let root: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError(format!("body is not valid JSON: {e}")))?;
        let records = if self.records.is_empty() {
            &root
        } else {
            root.pointer(&self.records).ok_or_else(|| {
                ParseError(format!("no records at {:?} in the body", self.records))
            })?
        };
        let events = match records {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    self.record(r)
                        .map_err(|e| ParseError(format!("record {i}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Value::Object(_) => vec![self.record(records).map_err(ParseError)?],
            _ => {
                return Err(ParseError(
                    "body must be a JSON object or an array of objects".into(),
                ));
            }
        };
        if events.is_empty() {
            return Err(ParseError("body holds no records".into()));
        }
        Ok(events)
    }

    fn record(&self, record: &Value) -> Result<Event, String> {
        if !record.is_object() {
            return Err("a record must be a JSON object".into());
        }
        let status_text = self.required_text(record, "status")?;
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
                self.fields["status"],
                self.status.firing.join(", "),
                self.status.resolved.join(", ")
            ));
        };
        Ok(Event::Alert(AlertEvent {
            source_id: self.required_text(record, "id")?,
            status,
            summary: self.required_text(record, "summary")?,
            service: self.text(record, "service")?,
            ci: self.text(record, "ci")?,
            customer: self.text(record, "customer")?,
            severity: self.text(record, "severity")?,
            starts_at: self.time(record, "starts_at")?,
            ends_at: self.time(record, "ends_at")?,
        }))
    }

    /// The field as text; numbers are accepted as ids often are numeric.
    fn text(&self, record: &Value, field: &str) -> Result<Option<String>, String> {
        let Some(pointer) = self.fields.get(field) else {
            return Ok(None);
        };
        match record.pointer(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!(
                "`{field}` at {pointer} must be a string, found {}",
                json_type(other)
            )),
        }
    }

    fn required_text(&self, record: &Value, field: &str) -> Result<String, String> {
        self.text(record, field)?
            .ok_or_else(|| format!("missing `{field}` at {}", self.fields[field]))
    }

    fn time(&self, record: &Value, field: &str) -> Result<Option<DateTime<Utc>>, String> {
        let Some(text) = self.text(record, field)? else {
            return Ok(None);
        };
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|e| format!("`{field}` {text:?} is not an RFC 3339 time: {e}"))?
            .with_timezone(&Utc);
        // Alertmanager-style tools write the zero time for "unset".
        Ok((time.timestamp() > 0).then_some(time))
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> Mapping {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/connectors/webhook-json/profile.toml"
        ))
        .expect("shipped profile");
        let profile: Profile = toml::from_str(&text).expect("shipped profile parses");
        profile
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
        let profile_text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/connectors/webhook-json/profile.toml"
        ))
        .unwrap();
        let profile: Profile = toml::from_str(&profile_text).unwrap();
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

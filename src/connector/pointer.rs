//! Field mappings by JSON pointer (RFC 6901), shared by the profiles of
//! generic JSON webhooks: a profile names where each of csmd's fields is in
//! a record, a connector may override any of them, and a body is one
//! record, an array of them, or an object holding the array at `records`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{MappingError, ParseError};

/// A profile's pointers with a connector's overrides applied.
#[derive(Debug, Clone)]
pub struct Pointers {
    records: String,
    fields: BTreeMap<&'static str, String>,
}

/// The fields a kind of record has.
pub struct Fields {
    /// The profile kind, for messages.
    pub kind: &'static str,
    pub required: &'static [&'static str],
    pub optional: &'static [&'static str],
}

impl Fields {
    /// Checks a profile's `[fields]` and a connector's overrides against
    /// the known fields; every problem is reported, at its override when
    /// it is one.
    pub fn pointers(
        &self,
        records: &str,
        profile: &BTreeMap<String, String>,
        overrides: &toml::Table,
    ) -> Result<Pointers, Vec<MappingError>> {
        let mut errors = Vec::new();
        let known = || self.required.iter().chain(self.optional).copied();
        let mut fields = BTreeMap::new();
        for (name, pointer) in profile {
            match known().find(|k| k == name) {
                Some(k) => {
                    fields.insert(k, pointer.clone());
                }
                None => errors.push(MappingError {
                    field: None,
                    message: format!("profile maps unknown field `{name}`"),
                }),
            }
        }
        for (name, value) in overrides {
            let of_override = |message| MappingError {
                field: Some(name.to_string()),
                message,
            };
            let Some(k) = known().find(|k| k == name) else {
                let all: Vec<_> = known().collect();
                errors.push(of_override(format!(
                    "unknown field `{name}`; {} fields are {}",
                    self.kind,
                    all.join(", ")
                )));
                continue;
            };
            match value.as_str() {
                Some(p) if p.is_empty() || p.starts_with('/') => {
                    fields.insert(k, p.to_string());
                }
                _ => errors.push(of_override(format!(
                    "field `{name}` must be a JSON pointer string like \"/labels/instance\""
                ))),
            }
        }
        for required in self.required {
            if !fields.contains_key(required) {
                errors.push(MappingError {
                    field: None,
                    message: format!("field `{required}` has no mapping"),
                });
            }
        }
        if errors.is_empty() {
            Ok(Pointers {
                records: records.to_string(),
                fields,
            })
        } else {
            Err(errors)
        }
    }
}

impl Pointers {
    /// Parses a body into records with `record`, or says which record is
    /// wrong and why.
    pub fn parse<T>(
        &self,
        body: &[u8],
        record: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Vec<T>, ParseError> {
        let root: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError(format!("body is not valid JSON: {e}")))?;
        let records = if self.records.is_empty() {
            &root
        } else {
            root.pointer(&self.records).ok_or_else(|| {
                ParseError(format!("no records at {:?} in the body", self.records))
            })?
        };
        let checked = |r: &Value| {
            if r.is_object() {
                record(r)
            } else {
                Err("a record must be a JSON object".into())
            }
        };
        let parsed = match records {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, r)| checked(r).map_err(|e| ParseError(format!("record {i}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?,
            Value::Object(_) => vec![checked(records).map_err(ParseError)?],
            _ => {
                return Err(ParseError(
                    "body must be a JSON object or an array of objects".into(),
                ));
            }
        };
        if parsed.is_empty() {
            return Err(ParseError("body holds no records".into()));
        }
        Ok(parsed)
    }

    /// Where `field` is read from (for messages).
    pub fn pointer(&self, field: &str) -> &str {
        self.fields.get(field).map_or("", String::as_str)
    }

    /// The field as text; numbers are accepted as ids often are numeric.
    pub fn text(&self, record: &Value, field: &str) -> Result<Option<String>, String> {
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

    pub fn required_text(&self, record: &Value, field: &str) -> Result<String, String> {
        self.text(record, field)?
            .ok_or_else(|| format!("missing `{field}` at {}", self.pointer(field)))
    }

    /// The field as a number; a numeric string is accepted, as form tools
    /// often send them.
    pub fn number(&self, record: &Value, field: &str) -> Result<Option<f64>, String> {
        let Some(pointer) = self.fields.get(field) else {
            return Ok(None);
        };
        let number = match record.pointer(pointer) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        match number {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(format!(
                "`{field}` at {pointer} must be a number, found {}",
                record.pointer(pointer).map_or("nothing", json_type)
            )),
        }
    }

    pub fn time(&self, record: &Value, field: &str) -> Result<Option<DateTime<Utc>>, String> {
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

/// A profile shipped in `connectors/<kind>/profile.toml`, for unit tests.
#[cfg(test)]
pub fn shipped_profile<P: serde::de::DeserializeOwned>(kind: &str) -> P {
    let path = format!(
        "{}/connectors/{kind}/profile.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("shipped profile");
    toml::from_str(&text).expect("shipped profile parses")
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

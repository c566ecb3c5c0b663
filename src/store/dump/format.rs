//! The dump's lines, as [`super`] describes them: the header, a record
//! line per key and the trailer written on export, and read and checked
//! line by line on import.

use std::io::{BufRead, Write};

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{DumpError, Record};

/// The version of the dump format itself: header, record and trailer lines.
pub const FORMAT_VERSION: u64 = 1;

#[derive(Serialize)]
struct Header {
    csmd_dump: u64,
    schema_version: u32,
    csmd_version: &'static str,
    created_at: String,
}

#[derive(Serialize)]
struct Trailer {
    end: bool,
    records: u64,
}

#[derive(Debug, Serialize)]
struct RecordLine<'a> {
    tree: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
}

fn record_line<'a>(tree: &'a str, key: &'a [u8], value: &[u8]) -> RecordLine<'a> {
    let text_key = std::str::from_utf8(key)
        .ok()
        .filter(|k| !k.chars().any(char::is_control));
    let json_value = serde_json::from_slice::<Value>(value).ok();
    RecordLine {
        tree,
        key: text_key,
        key_hex: text_key.is_none().then(|| hex::encode(key)),
        value_b64: json_value
            .is_none()
            .then(|| base64::engine::general_purpose::STANDARD.encode(value)),
        value: json_value,
    }
}

/// Writes the header line of a dump of a store at `schema_version`.
pub(super) fn write_header(out: &mut impl Write, schema_version: u32) -> std::io::Result<()> {
    let header = Header {
        csmd_dump: FORMAT_VERSION,
        schema_version,
        csmd_version: env!("CARGO_PKG_VERSION"),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    write_line(out, &header)
}

pub(super) fn write_record(
    out: &mut impl Write,
    tree: &str,
    key: &[u8],
    value: &[u8],
) -> std::io::Result<()> {
    write_line(out, &record_line(tree, key, value))
}

/// Writes the trailer line, which counts the record lines before it.
pub(super) fn write_trailer(out: &mut impl Write, records: u64) -> std::io::Result<()> {
    write_line(out, &Trailer { end: true, records })
}

fn write_line(out: &mut impl Write, line: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// A line after the header.
enum Line {
    Record(Record),
    End { records: u64 },
}

/// Decodes a line after the header; the error says what is wrong with it.
fn parse_line(mut fields: Map<String, Value>) -> Result<Line, String> {
    let line = if let Some(end) = fields.remove("end") {
        if end != Value::Bool(true) {
            return Err("`end` must be true".into());
        }
        let records = fields
            .remove("records")
            .ok_or("the trailer has no `records` count")?;
        let records = records
            .as_u64()
            .ok_or("`records` must be a non-negative integer")?;
        Line::End { records }
    } else {
        let tree = match fields.remove("tree") {
            Some(Value::String(tree)) if !tree.is_empty() => tree,
            Some(_) => return Err("`tree` must be a non-empty string".into()),
            None => return Err("the record has no `tree`".into()),
        };
        let key = match (fields.remove("key"), fields.remove("key_hex")) {
            (Some(Value::String(key)), None) => key.into_bytes(),
            (None, Some(Value::String(hex))) => {
                hex::decode(&hex).map_err(|e| format!("`key_hex` is not hexadecimal: {e}"))?
            }
            (Some(_), Some(_)) => return Err("the record has both `key` and `key_hex`".into()),
            (None, None) => return Err("the record has no `key` or `key_hex`".into()),
            _ => return Err("`key` and `key_hex` must be strings".into()),
        };
        let value = match (fields.remove("value"), fields.remove("value_b64")) {
            (Some(value), None) => serde_json::to_vec(&value).map_err(|e| e.to_string())?,
            (None, Some(Value::String(b64))) => base64::engine::general_purpose::STANDARD
                .decode(&b64)
                .map_err(|e| format!("`value_b64` is not base64: {e}"))?,
            (Some(_), Some(_)) => {
                return Err("the record has both `value` and `value_b64`".into());
            }
            (None, None) => return Err("the record has no `value` or `value_b64`".into()),
            (None, Some(_)) => return Err("`value_b64` must be a string".into()),
        };
        Line::Record(Record { tree, key, value })
    };
    match fields.keys().next() {
        Some(unknown) => Err(format!("unknown field `{unknown}`")),
        None => Ok(line),
    }
}

/// Reads a dump line by line, counting lines for errors and records for
/// the trailer's check.
pub(super) struct DumpReader<R> {
    input: R,
    source_name: String,
    line: u64,
    records: u64,
    buf: String,
}

impl<R: BufRead> DumpReader<R> {
    pub(super) fn new(input: R, source_name: &str) -> Self {
        DumpReader {
            input,
            source_name: source_name.to_owned(),
            line: 0,
            records: 0,
            buf: String::new(),
        }
    }

    pub(super) fn error_at(&self, line: u64, message: impl Into<String>) -> DumpError {
        DumpError::Line {
            source_name: self.source_name.clone(),
            line,
            message: message.into(),
        }
    }

    /// An error at the line read last.
    pub(super) fn error(&self, message: impl Into<String>) -> DumpError {
        self.error_at(self.line.max(1), message)
    }

    /// The next line as a JSON object; `None` at the end of the input.
    fn next_object(&mut self) -> Result<Option<Map<String, Value>>, DumpError> {
        self.buf.clear();
        let read = self.input.read_line(&mut self.buf);
        self.line += 1;
        match read {
            Ok(0) => {
                self.line -= 1;
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) => return Err(self.error(format!("cannot read: {e}"))),
        }
        let text = self.buf.strip_suffix('\n').unwrap_or(&self.buf);
        let text = text.strip_suffix('\r').unwrap_or(text);
        if text.is_empty() {
            return Err(self.error("empty line"));
        }
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(fields) => Ok(Some(fields)),
            Err(e) => {
                // serde_json's position is within the line: keep the column.
                let message = e.to_string();
                let message = message
                    .rsplit_once(" at line ")
                    .map_or(message.as_str(), |(m, _)| m);
                Err(self.error(format!(
                    "not a JSON object (column {}): {message}",
                    e.column()
                )))
            }
        }
    }

    /// Reads the header line; returns the dump's schema version.
    pub(super) fn header(&mut self) -> Result<u32, DumpError> {
        let Some(mut fields) = self.next_object()? else {
            return Err(self.error_at(1, "the input is empty, not a csmd dump"));
        };
        let format = match fields.remove("csmd_dump") {
            Some(v) => v.as_u64().ok_or_else(|| {
                self.error("`csmd_dump` must be the dump format's version number")
            })?,
            None => {
                return Err(self.error("not a csmd dump: the first line has no `csmd_dump` header"));
            }
        };
        if format != FORMAT_VERSION {
            return Err(self.error(format!(
                "dump format {format} is not one this csmd reads (format {FORMAT_VERSION}); \
                 import it with the csmd that exported it, or a newer one"
            )));
        }
        fields
            .remove("schema_version")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| self.error("the header has no valid `schema_version`"))
    }

    /// The next record; `None` after the trailer, once it is checked
    /// against the records read and nothing follows it.
    pub(super) fn next_record(&mut self) -> Result<Option<Record>, DumpError> {
        let Some(fields) = self.next_object()? else {
            return Err(self.error(
                "the dump ends here, without its trailer line (`{\"end\":true,…}`): \
                 it is incomplete",
            ));
        };
        match parse_line(fields).map_err(|m| self.error(m))? {
            Line::Record(record) => {
                self.records += 1;
                Ok(Some(record))
            }
            Line::End { records } => {
                if records != self.records {
                    return Err(self.error(format!(
                        "the trailer counts {records} records, the dump holds {}",
                        self.records
                    )));
                }
                if self.next_object()?.is_some() {
                    return Err(self.error("a line after the trailer line"));
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(tree: &str, key: &[u8], value: &[u8]) -> (String, Record) {
        let line = serde_json::to_string(&record_line(tree, key, value)).unwrap();
        let fields = serde_json::from_str(&line).unwrap();
        match parse_line(fields).unwrap() {
            Line::Record(record) => (line, record),
            Line::End { .. } => panic!("{line} read as a trailer"),
        }
    }

    #[test]
    fn text_keys_and_json_values_are_written_inline() {
        let (line, record) = round_trip("customers", b"acme", br#"{"name":"ACME","id":"acme"}"#);
        assert_eq!(
            line,
            r#"{"tree":"customers","key":"acme","value":{"id":"acme","name":"ACME"}}"#
        );
        assert_eq!(record.tree, "customers");
        assert_eq!(record.key, b"acme");
        // Re-encoded: the same JSON, not necessarily the same bytes.
        let value: Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(value, serde_json::json!({ "id": "acme", "name": "ACME" }));
    }

    #[test]
    fn binary_keys_and_values_are_hex_and_base64() {
        let key = [b'e', 0, 0, 0, 0, 0, 0, 0, 7];
        let value = 2u32.to_be_bytes();
        let (line, record) = round_trip("journal", &key, &value);
        assert_eq!(
            line,
            r#"{"tree":"journal","key_hex":"650000000000000007","value_b64":"AAAAAg=="}"#
        );
        assert_eq!(record.key, key);
        assert_eq!(record.value, value);
    }

    #[test]
    fn a_utf8_key_with_a_control_character_is_hex() {
        let key = b"delivery\0monitoring\0abc";
        let (line, record) = round_trip("journal", key, b"null");
        assert!(line.contains(r#""key_hex":"#), "{line}");
        assert!(line.contains(r#""value":null"#), "{line}");
        assert_eq!(record.key, key);
        assert_eq!(record.value, b"null");
    }

    #[test]
    fn malformed_records_say_what_is_wrong() {
        let cases = [
            (r#"{"key":"a","value":1}"#, "no `tree`"),
            (r#"{"tree":"t","value":1}"#, "no `key` or `key_hex`"),
            (
                r#"{"tree":"t","key":"a","key_hex":"61","value":1}"#,
                "both `key`",
            ),
            (
                r#"{"tree":"t","key_hex":"zz","value":1}"#,
                "not hexadecimal",
            ),
            (r#"{"tree":"t","key":"a"}"#, "no `value` or `value_b64`"),
            (r#"{"tree":"t","key":"a","value_b64":"***"}"#, "not base64"),
            (
                r#"{"tree":"t","key":"a","value":1,"extra":2}"#,
                "unknown field `extra`",
            ),
            (r#"{"end":false,"records":1}"#, "`end` must be true"),
            (r#"{"end":true}"#, "no `records`"),
        ];
        for (line, expected) in cases {
            let fields = serde_json::from_str(line).unwrap();
            match parse_line(fields) {
                Err(message) => assert!(message.contains(expected), "{line}: {message}"),
                Ok(_) => panic!("{line} was accepted"),
            }
        }
    }
}

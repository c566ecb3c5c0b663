//! ServiceNow records pushed by an outbound REST message from a business
//! rule (`POST /webhooks/{connector}`). They are mapped through the same
//! stream mappings as polled records, so the engine keeps whichever copy
//! is newer and a record both pushed and polled is stored once.
//!
//! The body names the table and carries one record or several, with raw
//! values as the Table API returns them:
//!
//! ```json
//! {"table": "incident", "record": {"sys_id": "…", "sys_updated_on": "2026-11-20 08:14:03", …}}
//! {"table": "incident", "records": [{…}, {…}]}
//! ```

use serde_json::Value;

use super::ParseError;
use super::rest::profile::Stream;
use super::rest::records::Fields;
use crate::model::Event;

#[derive(Debug, Clone)]
pub struct Push {
    streams: Vec<Stream>,
    time_format: String,
}

impl Push {
    pub fn new(streams: Vec<Stream>, time_format: String) -> Push {
        Push {
            streams,
            time_format,
        }
    }

    pub fn parse(&self, body: &[u8]) -> Result<Vec<Event>, ParseError> {
        let body: Value = serde_json::from_slice(body)
            .map_err(|e| ParseError(format!("body is not valid JSON: {e}")))?;
        let table = body.get("table").and_then(Value::as_str).ok_or_else(|| {
            ParseError("missing `table`: say which table the records come from".into())
        })?;
        let stream = self
            .streams
            .iter()
            .find(|s| s.table == table)
            .ok_or_else(|| {
                let tables: Vec<_> = self.streams.iter().map(|s| s.table.as_str()).collect();
                ParseError(format!(
                    "table {table:?} is not read by this connector; it reads {}",
                    tables.join(", ")
                ))
            })?;
        let records: Vec<&Value> = match (body.get("record"), body.get("records")) {
            (Some(record), None) => vec![record],
            (None, Some(Value::Array(records))) => records.iter().collect(),
            _ => {
                return Err(ParseError(
                    "give either `record` (an object) or `records` (an array)".into(),
                ));
            }
        };
        if records.is_empty() {
            return Err(ParseError("`records` is empty".into()));
        }
        records
            .iter()
            .enumerate()
            .map(|(i, record)| {
                let record = record
                    .as_object()
                    .ok_or_else(|| ParseError(format!("record {i}: not a JSON object")))?;
                let fields = Fields {
                    record,
                    mapping: &stream.fields,
                    time_format: &self.time_format,
                };
                stream
                    .record
                    .build(&fields)
                    .map(Event::Itsm)
                    .map_err(|e| ParseError(format!("record {i}: {e}")))
            })
            .collect()
    }
}

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::Push;
    use crate::connector::rest::profile::RestProfile;
    use crate::connector::rest::records::Fields;
    use crate::model::Event;
    use crate::model::itsm::{ChangeState, IncidentState, ItsmRecord};

    fn profile() -> RestProfile {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/connectors/servicenow/profile.toml"
        ))
        .expect("shipped profile");
        toml::from_str(&text).expect("shipped profile parses")
    }

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/connectors/servicenow/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture"))
            .expect("fixture is JSON")
    }

    fn read_page(stream: &str, page: &Value) -> Vec<ItsmRecord> {
        let profile = profile();
        let streams = profile
            .streams(&BTreeMap::new())
            .expect("shipped streams map");
        let stream = streams.iter().find(|s| s.name == stream).expect("stream");
        page["result"]
            .as_array()
            .expect("result array")
            .iter()
            .map(|r| {
                let fields = Fields {
                    record: r.as_object().unwrap(),
                    mapping: &stream.fields,
                    time_format: &profile.api.time_format,
                };
                stream.record.build(&fields).expect("record maps")
            })
            .collect()
    }

    #[test]
    fn a_recorded_incident_page_maps_onto_incidents() {
        let records = read_page("incidents", &fixture("incident-page.json"));
        let [ItsmRecord::Incident(major), ItsmRecord::Incident(resolved)] = records.as_slice()
        else {
            panic!("two incidents expected: {records:?}")
        };
        assert_eq!(major.number, "INC0010231");
        assert_eq!(major.priority, Some(1));
        assert_eq!(major.state, IncidentState::InProgress);
        assert!(major.major);
        assert_eq!(
            major.ci.as_deref(),
            Some("b0c25d1bc0a800090168be1bfcdcd759")
        );
        assert_eq!(major.resolved_at, None);
        assert_eq!(resolved.state, IncidentState::Resolved);
        assert!(!resolved.major);
        assert_eq!(resolved.ci, None);
        assert_eq!(
            resolved.resolved_at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-20T08:14:03+00:00")
        );
    }

    #[test]
    fn a_recorded_change_page_maps_with_its_reference_link() {
        let records = read_page("changes", &fixture("change_request-page.json"));
        let [ItsmRecord::Change(change)] = records.as_slice() else {
            panic!("one change expected")
        };
        assert_eq!(change.state, ChangeState::Scheduled);
        assert_eq!(change.change_type.as_deref(), Some("normal"));
        assert_eq!(
            change.ci.as_deref(),
            Some("b0c25d1bc0a800090168be1bfcdcd759")
        );
        assert_eq!(
            change.planned_start.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-11-28T22:00:00+00:00")
        );
        assert!(!change.billable, "unmapped flags are false");
    }

    #[test]
    fn a_pushed_record_maps_like_a_polled_one() {
        let profile = profile();
        let push = Push::new(
            profile.streams(&BTreeMap::new()).unwrap(),
            profile.api.time_format.clone(),
        );
        let body = serde_json::to_vec(&fixture("push-incident.json")).unwrap();
        let events = push.parse(&body).expect("push parses");
        let [Event::Itsm(ItsmRecord::Incident(incident))] = events.as_slice() else {
            panic!("one incident")
        };
        assert_eq!(incident.state, IncidentState::Resolved);

        let err = push
            .parse(br#"{"table":"sys_user","record":{}}"#)
            .unwrap_err();
        assert!(
            err.0
                .starts_with("table \"sys_user\" is not read by this connector"),
            "{err}"
        );
        let err = push.parse(br#"{"table":"incident","records":[{"sys_id":"a","sys_updated_on":"yesterday","number":"INC1"}]}"#).unwrap_err();
        assert!(err.0.starts_with("record 0: `sys_updated_on`"), "{err}");
    }
}

//! From one upstream record (a JSON object) to one of csmd's ITSM records,
//! through a stream's field mapping. Values arrive as the upstream writes
//! them raw: strings for numbers, booleans and datetimes; references as a
//! plain id or as `{"link", "value"}`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::itsm::{
    Account, Change, ChangeCi, ChangeState, Ci, Contact, Incident, IncidentState, InstallBaseItem,
    ItsmRecord, Problem, ProblemTask,
};

/// The kinds of record a stream can produce, each with its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Account,
    Contact,
    Ci,
    InstallBaseItem,
    Incident,
    Change,
    ChangeCi,
    Problem,
    ProblemTask,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Account => "account",
            RecordKind::Contact => "contact",
            RecordKind::Ci => "ci",
            RecordKind::InstallBaseItem => "install_base_item",
            RecordKind::Incident => "incident",
            RecordKind::Change => "change",
            RecordKind::ChangeCi => "change_ci",
            RecordKind::Problem => "problem",
            RecordKind::ProblemTask => "problem_task",
        }
    }

    /// Fields that must be mapped.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            RecordKind::Account | RecordKind::Contact | RecordKind::Ci => {
                &["id", "updated_at", "name"]
            }
            RecordKind::InstallBaseItem => &["id", "updated_at"],
            RecordKind::Incident | RecordKind::Problem => &["id", "updated_at", "number"],
            RecordKind::Change => &["id", "updated_at", "number", "state"],
            RecordKind::ChangeCi => &["id", "updated_at", "change", "ci"],
            RecordKind::ProblemTask => &["id", "updated_at", "number", "problem"],
        }
    }

    /// Every field csmd reads for this kind.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            RecordKind::Account => &["id", "updated_at", "number", "name"],
            RecordKind::Contact => &["id", "updated_at", "account", "name", "email"],
            RecordKind::Ci => &[
                "id",
                "updated_at",
                "name",
                "class",
                "install_status",
                "operational_status",
                "account",
            ],
            RecordKind::InstallBaseItem => &[
                "id",
                "updated_at",
                "account",
                "ci",
                "service",
                "state",
                "uninstall_date",
            ],
            RecordKind::Incident => &[
                "id",
                "updated_at",
                "number",
                "priority",
                "state",
                "short_description",
                "opened_at",
                "responded_at",
                "resolved_at",
                "closed_at",
                "on_hold_seconds",
                "ci",
                "service",
                "account",
                "company",
                "major",
            ],
            RecordKind::Change => &[
                "id",
                "updated_at",
                "number",
                "state",
                "change_type",
                "short_description",
                "planned_start",
                "planned_end",
                "work_start",
                "work_end",
                "close_code",
                "ci",
                "billable",
                "customer_requested",
            ],
            RecordKind::ChangeCi => &["id", "updated_at", "change", "ci"],
            RecordKind::Problem => &[
                "id",
                "updated_at",
                "number",
                "state",
                "short_description",
                "cause_notes",
                "fix_notes",
                "ci",
                "service",
                "account",
            ],
            RecordKind::ProblemTask => &[
                "id",
                "updated_at",
                "number",
                "problem",
                "state",
                "short_description",
                "assigned_to",
                "due_date",
                "closed_at",
            ],
        }
    }

    /// The `'static` name of a known field.
    pub fn field(self, name: &str) -> Option<&'static str> {
        self.fields().iter().copied().find(|f| *f == name)
    }

    pub fn build(self, f: &Fields) -> Result<ItsmRecord, String> {
        let id = f.required("id")?;
        let updated_at = f.time("updated_at")?.ok_or("missing `updated_at`")?;
        Ok(match self {
            RecordKind::Account => ItsmRecord::Account(Account {
                id,
                updated_at,
                number: f.text("number"),
                name: f.required("name")?,
            }),
            RecordKind::Contact => ItsmRecord::Contact(Contact {
                id,
                updated_at,
                account: f.text("account"),
                name: f.required("name")?,
                email: f.text("email"),
            }),
            RecordKind::Ci => ItsmRecord::Ci(Ci {
                id,
                updated_at,
                name: f.required("name")?,
                class: f.text("class"),
                install_status: f.int("install_status")?,
                operational_status: f.int("operational_status")?,
                account: f.text("account"),
            }),
            RecordKind::InstallBaseItem => ItsmRecord::InstallBaseItem(InstallBaseItem {
                id,
                updated_at,
                account: f.text("account"),
                ci: f.text("ci"),
                service: f.text("service"),
                state: f.text("state"),
                uninstall_date: f.time("uninstall_date")?,
            }),
            RecordKind::Incident => ItsmRecord::Incident(Incident {
                id,
                updated_at,
                number: f.required("number")?,
                priority: f.int("priority")?.and_then(|p| u8::try_from(p).ok()),
                state: f
                    .int("state")?
                    .map_or(IncidentState::New, IncidentState::from_code),
                short_description: f.text("short_description"),
                opened_at: f.time("opened_at")?,
                responded_at: f.time("responded_at")?,
                resolved_at: f.time("resolved_at")?,
                closed_at: f.time("closed_at")?,
                on_hold_seconds: f.duration_seconds("on_hold_seconds")?,
                ci: f.text("ci"),
                service: f.text("service"),
                account: f.text("account"),
                company: f.text("company"),
                major: f.flag("major")?,
            }),
            RecordKind::Change => ItsmRecord::Change(Change {
                id,
                updated_at,
                number: f.required("number")?,
                state: ChangeState::from_code(f.int("state")?.ok_or("missing `state`")?),
                change_type: f.text("change_type"),
                short_description: f.text("short_description"),
                planned_start: f.time("planned_start")?,
                planned_end: f.time("planned_end")?,
                work_start: f.time("work_start")?,
                work_end: f.time("work_end")?,
                close_code: f.text("close_code"),
                ci: f.text("ci"),
                billable: f.flag("billable")?,
                customer_requested: f.flag("customer_requested")?,
                closed_at: None,
            }),
            RecordKind::ChangeCi => ItsmRecord::ChangeCi(ChangeCi {
                id,
                updated_at,
                change: f.required("change")?,
                ci: f.required("ci")?,
            }),
            RecordKind::Problem => ItsmRecord::Problem(Problem {
                id,
                updated_at,
                number: f.required("number")?,
                state: f.int("state")?,
                short_description: f.text("short_description"),
                cause_notes: f.text("cause_notes"),
                fix_notes: f.text("fix_notes"),
                ci: f.text("ci"),
                service: f.text("service"),
                account: f.text("account"),
            }),
            RecordKind::ProblemTask => ItsmRecord::ProblemTask(ProblemTask {
                id,
                updated_at,
                number: f.required("number")?,
                problem: f.required("problem")?,
                state: f.int("state")?,
                short_description: f.text("short_description"),
                assigned_to: f.text("assigned_to"),
                due_date: f.time("due_date")?,
                closed_at: f.time("closed_at")?,
            }),
        })
    }
}

/// One upstream record read through a field mapping.
pub struct Fields<'a> {
    pub record: &'a Map<String, Value>,
    pub mapping: &'a BTreeMap<&'static str, String>,
    pub time_format: &'a str,
}

impl Fields<'_> {
    /// The raw text of a mapped field; empty and unmapped are `None`.
    pub fn text(&self, field: &str) -> Option<String> {
        let column = self.mapping.get(field)?;
        let value = match self.record.get(column)? {
            // A reference rendered with its link.
            Value::Object(reference) => reference.get("value")?,
            other => other,
        };
        match value {
            Value::String(s) if s.is_empty() => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn column<'f>(&'f self, field: &'f str) -> &'f str {
        self.mapping.get(field).map_or(field, String::as_str)
    }

    pub fn required(&self, field: &str) -> Result<String, String> {
        self.text(field)
            .ok_or_else(|| format!("missing `{}` (csmd's `{field}`)", self.column(field)))
    }

    pub fn int(&self, field: &str) -> Result<Option<i64>, String> {
        self.text(field)
            .map(|t| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("`{}` {t:?} is not a number", self.column(field)))
            })
            .transpose()
    }

    pub fn time(&self, field: &str) -> Result<Option<DateTime<Utc>>, String> {
        self.text(field)
            .map(|t| {
                parse_time(&t, self.time_format)
                    .map_err(|e| format!("`{}`: {e}", self.column(field)))
            })
            .transpose()
    }

    /// A boolean, or a choice that means yes (ServiceNow's
    /// `major_incident_state` is `accepted` for a major incident).
    pub fn flag(&self, field: &str) -> Result<bool, String> {
        match self.text(field).map(|t| t.to_ascii_lowercase()) {
            None => Ok(false),
            Some(t) => match t.as_str() {
                "true" | "1" | "yes" | "accepted" => Ok(true),
                "false" | "0" | "no" | "proposed" | "rejected" | "canceled" | "cancelled" => {
                    Ok(false)
                }
                _ => Err(format!(
                    "`{}` {t:?} is not a yes/no value",
                    self.column(field)
                )),
            },
        }
    }

    /// A duration as seconds, or as ServiceNow writes durations: a datetime
    /// counted from 1970-01-01 00:00:00.
    pub fn duration_seconds(&self, field: &str) -> Result<Option<i64>, String> {
        let Some(text) = self.text(field) else {
            return Ok(None);
        };
        if let Ok(seconds) = text.trim().parse::<i64>() {
            return Ok(Some(seconds));
        }
        parse_time(&text, self.time_format)
            .map(|t| Some(t.timestamp()))
            .map_err(|e| format!("`{}`: {e}", self.column(field)))
    }
}

pub fn parse_time(text: &str, format: &str) -> Result<DateTime<Utc>, String> {
    NaiveDateTime::parse_from_str(text.trim(), format)
        .map(|t| t.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(text.trim()).map(|t| t.with_timezone(&Utc)))
        .map_err(|_| format!("{text:?} is not a time like {format:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(record: &Value, mapping: &[(&'static str, &str)]) -> ItsmRecord {
        let mapping: BTreeMap<&'static str, String> =
            mapping.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let f = Fields {
            record: record.as_object().unwrap(),
            mapping: &mapping,
            time_format: "%Y-%m-%d %H:%M:%S",
        };
        RecordKind::Incident.build(&f).unwrap()
    }

    #[test]
    fn raw_servicenow_values_become_typed_fields() {
        let record = json!({
            "sys_id": "a1", "sys_updated_on": "2026-11-20 08:14:03", "number": "INC0010001",
            "priority": "1", "state": "3", "cmdb_ci": {"link": "https://x/api/now/table/cmdb_ci/c9", "value": "c9"},
            "major_incident_state": "accepted", "u_hold": "1970-01-01 01:30:00", "opened_at": ""
        });
        let ItsmRecord::Incident(i) = fields(
            &record,
            &[
                ("id", "sys_id"),
                ("updated_at", "sys_updated_on"),
                ("number", "number"),
                ("priority", "priority"),
                ("state", "state"),
                ("ci", "cmdb_ci"),
                ("major", "major_incident_state"),
                ("on_hold_seconds", "u_hold"),
                ("opened_at", "opened_at"),
            ],
        ) else {
            panic!("not an incident")
        };
        assert_eq!(i.priority, Some(1));
        assert_eq!(i.state, IncidentState::OnHold);
        assert_eq!(i.ci.as_deref(), Some("c9"));
        assert!(i.major);
        assert_eq!(i.on_hold_seconds, Some(5400));
        assert_eq!(i.opened_at, None);
        assert_eq!(i.updated_at.to_rfc3339(), "2026-11-20T08:14:03+00:00");
    }
}

//! From one upstream record (a JSON object) to one of csmd's ITSM records,
//! through a stream's field mapping. Values arrive as the upstream writes
//! them raw: strings for numbers, booleans and datetimes; references as a
//! plain id or as `{"link", "value"}`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::itsm::{
    Account, BillingAccount, Change, ChangeCi, ChangeState, Charge, Ci, Contact, Incident,
    IncidentState, InstallBaseItem, ItsmRecord, Problem, ProblemTask, Subscription,
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
    /// From billing: a customer account.
    BillingAccount,
    /// From billing: a recurring line item (subscription).
    Subscription,
    /// From billing: a one-off charge.
    Charge,
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
            RecordKind::BillingAccount => "billing_account",
            RecordKind::Subscription => "subscription",
            RecordKind::Charge => "charge",
        }
    }

    /// Fields that must be mapped.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            RecordKind::Account | RecordKind::Contact | RecordKind::Ci => {
                &["id", "updated_at", "name"]
            }
            RecordKind::InstallBaseItem
            | RecordKind::BillingAccount
            | RecordKind::Subscription
            | RecordKind::Charge => &["id", "updated_at"],
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
                "closed_at",
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
            RecordKind::BillingAccount => &["id", "updated_at", "number", "name"],
            RecordKind::Subscription => &[
                "id",
                "updated_at",
                "account",
                "product",
                "ci",
                "service",
                "quantity",
                "start",
                "end",
                "status",
            ],
            RecordKind::Charge => &[
                "id",
                "updated_at",
                "account",
                "change",
                "description",
                "amount",
                "charged_at",
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
                closed_at: f.time("closed_at")?,
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
            RecordKind::BillingAccount => ItsmRecord::BillingAccount(BillingAccount {
                id,
                updated_at,
                number: f.text("number"),
                name: f.text("name"),
            }),
            RecordKind::Subscription => ItsmRecord::Subscription(Subscription {
                id,
                updated_at,
                account: f.text("account"),
                product: f.text("product"),
                ci: f.text("ci"),
                service: f.text("service"),
                quantity: f.number("quantity")?,
                start: f.time("start")?,
                end: f.time("end")?,
                status: f.text("status"),
            }),
            RecordKind::Charge => ItsmRecord::Charge(Charge {
                id,
                updated_at,
                account: f.text("account"),
                change: f.text("change"),
                description: f.text("description"),
                amount: f.number("amount")?,
                charged_at: f.time("charged_at")?,
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
    /// The raw text of a mapped field; empty and unmapped are `None`. A
    /// column starting with `/` is a JSON pointer into the record
    /// (`/metadata/ci`).
    pub fn text(&self, field: &str) -> Option<String> {
        let column = self.mapping.get(field)?;
        let value = match column.strip_prefix('/') {
            Some(_) => pointer(self.record, column)?,
            None => self.record.get(column)?,
        };
        let value = match value {
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

    /// A decimal number (a quantity, an amount), finite.
    pub fn number(&self, field: &str) -> Result<Option<f64>, String> {
        self.text(field)
            .map(|t| {
                t.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| format!("`{}` {t:?} is not a number", self.column(field)))
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

/// `pointer` (`/a/b`) inside an object.
fn pointer<'v>(record: &'v Map<String, Value>, pointer: &str) -> Option<&'v Value> {
    let mut parts = pointer.strip_prefix('/')?.split('/');
    let first = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    let value = record.get(&first.replace("~1", "/").replace("~0", "~"))?;
    if rest.is_empty() {
        Some(value)
    } else {
        value.pointer(&format!("/{}", rest.join("/")))
    }
}

/// A UTC time in the profile's `format`, or RFC 3339 with an offset, or a
/// bare `YYYY-MM-DD` date (midnight UTC), as billing periods often are.
pub fn parse_time(text: &str, format: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    NaiveDateTime::parse_from_str(text, format)
        .map(|t| t.and_utc())
        .or_else(|_| DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
        })
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

    /// The recorded billing pages map through the shipped billing profile.
    #[test]
    fn recorded_billing_pages_map_onto_billing_records() {
        use crate::connector::rest::profile::RestProfile;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/connectors/billing-rest");
        let profile: RestProfile =
            toml::from_str(&std::fs::read_to_string(format!("{dir}/profile.toml")).unwrap())
                .unwrap();
        let streams = profile.streams(&BTreeMap::new()).unwrap();
        let read = |stream: &str, fixture: &str| -> Vec<ItsmRecord> {
            let stream = streams.iter().find(|s| s.name == stream).unwrap();
            let page: Value = serde_json::from_str(
                &std::fs::read_to_string(format!("{dir}/fixtures/{fixture}")).unwrap(),
            )
            .unwrap();
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let f = Fields {
                        record: r.as_object().unwrap(),
                        mapping: &stream.fields,
                        time_format: &profile.api.time_format,
                    };
                    stream.record.build(&f).unwrap()
                })
                .collect()
        };
        let subs = read("subscriptions", "subscriptions-page.json");
        let [
            ItsmRecord::Subscription(live),
            ItsmRecord::Subscription(ended),
        ] = subs.as_slice()
        else {
            panic!("two subscriptions: {subs:?}")
        };
        assert_eq!(live.account.as_deref(), Some("acc_00001001"));
        assert_eq!(live.product.as_deref(), Some("MPLS-VPN-100M"));
        assert_eq!(live.ci.as_deref(), Some("rtr-par-01"));
        assert_eq!(live.service.as_deref(), Some("MPLS VPN"));
        assert_eq!(live.quantity, Some(2.0));
        assert_eq!(live.end, None);
        let now = "2026-11-21T00:00:00Z".parse().unwrap();
        assert!(live.is_active(now));
        assert!(!ended.is_active(now));
        let charges = read("charges", "charges-page.json");
        let [ItsmRecord::Charge(charge)] = charges.as_slice() else {
            panic!("one charge")
        };
        assert_eq!(charge.change.as_deref(), Some("CHG0030001"));
        assert_eq!(charge.amount, Some(450.0));
        let accounts = read("accounts", "accounts-page.json");
        let [ItsmRecord::BillingAccount(account)] = accounts.as_slice() else {
            panic!("one account")
        };
        assert_eq!(account.number.as_deref(), Some("ACC-1001"));
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

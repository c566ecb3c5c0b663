//! Records read from the ITSM (ServiceNow-shaped), normalised. Each carries
//! the upstream's record id (`sys_id`) and its last update time, which is
//! what makes applying the same record twice, or an older copy after a
//! newer one, change nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::tagged::{self, Tagged};

/// One ITSM record of any kind. Read tag first (`model::tagged`), which
/// must name the same variants.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ItsmRecord {
    Account(Account),
    Contact(Contact),
    Ci(Ci),
    InstallBaseItem(InstallBaseItem),
    Incident(Incident),
    Change(Change),
    ChangeCi(ChangeCi),
    Problem(Problem),
    ProblemTask(ProblemTask),
    /// From billing: a customer account.
    BillingAccount(BillingAccount),
    /// From billing: a recurring line item.
    Subscription(Subscription),
    /// From billing: a one-off charge.
    Charge(Charge),
}

impl<'de> Deserialize<'de> for ItsmRecord {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        tagged::deserialize(deserializer)
    }
}

impl Tagged for ItsmRecord {
    const TAG: &'static str = "kind";
    const VARIANTS: &'static [&'static str] = &[
        "account",
        "contact",
        "ci",
        "install_base_item",
        "incident",
        "change",
        "change_ci",
        "problem",
        "problem_task",
        "billing_account",
        "subscription",
        "charge",
    ];
    const EXPECTING: &'static str = "an ITSM record";

    fn variant<'de, D: Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        use ItsmRecord as R;
        match tag {
            "account" => Account::deserialize(rest).map(R::Account),
            "contact" => Contact::deserialize(rest).map(R::Contact),
            "ci" => Ci::deserialize(rest).map(R::Ci),
            "install_base_item" => InstallBaseItem::deserialize(rest).map(R::InstallBaseItem),
            "incident" => Incident::deserialize(rest).map(R::Incident),
            "change" => Change::deserialize(rest).map(R::Change),
            "change_ci" => ChangeCi::deserialize(rest).map(R::ChangeCi),
            "problem" => Problem::deserialize(rest).map(R::Problem),
            "problem_task" => ProblemTask::deserialize(rest).map(R::ProblemTask),
            "billing_account" => BillingAccount::deserialize(rest).map(R::BillingAccount),
            "subscription" => Subscription::deserialize(rest).map(R::Subscription),
            "charge" => Charge::deserialize(rest).map(R::Charge),
            other => Err(Self::unknown(other)),
        }
    }
}

/// The store trees of ITSM records, one per kind, by the name the store
/// and the admin API use.
pub const RECORD_TREES: &[&str] = &[
    "accounts",
    "contacts",
    "cis",
    "install_base",
    "incidents",
    "changes",
    "change_cis",
    "problems",
    "problem_tasks",
    "billing_accounts",
    "subscriptions",
    "charges",
];

impl ItsmRecord {
    pub fn id(&self) -> &str {
        match self {
            ItsmRecord::Account(r) => &r.id,
            ItsmRecord::Contact(r) => &r.id,
            ItsmRecord::Ci(r) => &r.id,
            ItsmRecord::InstallBaseItem(r) => &r.id,
            ItsmRecord::Incident(r) => &r.id,
            ItsmRecord::Change(r) => &r.id,
            ItsmRecord::ChangeCi(r) => &r.id,
            ItsmRecord::Problem(r) => &r.id,
            ItsmRecord::ProblemTask(r) => &r.id,
            ItsmRecord::BillingAccount(r) => &r.id,
            ItsmRecord::Subscription(r) => &r.id,
            ItsmRecord::Charge(r) => &r.id,
        }
    }

    pub fn updated_at(&self) -> DateTime<Utc> {
        match self {
            ItsmRecord::Account(r) => r.updated_at,
            ItsmRecord::Contact(r) => r.updated_at,
            ItsmRecord::Ci(r) => r.updated_at,
            ItsmRecord::InstallBaseItem(r) => r.updated_at,
            ItsmRecord::Incident(r) => r.updated_at,
            ItsmRecord::Change(r) => r.updated_at,
            ItsmRecord::ChangeCi(r) => r.updated_at,
            ItsmRecord::Problem(r) => r.updated_at,
            ItsmRecord::ProblemTask(r) => r.updated_at,
            ItsmRecord::BillingAccount(r) => r.updated_at,
            ItsmRecord::Subscription(r) => r.updated_at,
            ItsmRecord::Charge(r) => r.updated_at,
        }
    }

    /// This kind's bit in a set of kinds: its position in [`RECORD_TREES`].
    pub fn kind_bit(&self) -> u16 {
        let tree = self.tree();
        let index = RECORD_TREES.iter().position(|t| *t == tree).unwrap_or(0);
        1 << index
    }

    /// The store tree holding records of this kind.
    pub fn tree(&self) -> &'static str {
        match self {
            ItsmRecord::Account(_) => "accounts",
            ItsmRecord::Contact(_) => "contacts",
            ItsmRecord::Ci(_) => "cis",
            ItsmRecord::InstallBaseItem(_) => "install_base",
            ItsmRecord::Incident(_) => "incidents",
            ItsmRecord::Change(_) => "changes",
            ItsmRecord::ChangeCi(_) => "change_cis",
            ItsmRecord::Problem(_) => "problems",
            ItsmRecord::ProblemTask(_) => "problem_tasks",
            ItsmRecord::BillingAccount(_) => "billing_accounts",
            ItsmRecord::Subscription(_) => "subscriptions",
            ItsmRecord::Charge(_) => "charges",
        }
    }
}

/// `customer_account`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub number: Option<String>,
    pub name: String,
    pub updated_at: DateTime<Utc>,
}

/// `customer_contact`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub id: String,
    pub account: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A configuration item (`cmdb_ci` and its classes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ci {
    pub id: String,
    pub name: String,
    pub class: Option<String>,
    /// `install_status`: 1 installed, 7 retired, … (ServiceNow's choice list).
    pub install_status: Option<i64>,
    pub operational_status: Option<i64>,
    /// The owning customer's account or company.
    pub account: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// `sn_install_base_item`: which customer uses which CI or service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallBaseItem {
    pub id: String,
    pub account: Option<String>,
    pub ci: Option<String>,
    pub service: Option<String>,
    pub state: Option<String>,
    pub uninstall_date: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Incident states (ServiceNow's `incident.state` choice list). The store
/// keeps a variant's position (compact incidents): add new ones at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    New,
    InProgress,
    OnHold,
    Resolved,
    Closed,
    Canceled,
    Other(i64),
}

impl IncidentState {
    pub fn from_code(code: i64) -> Self {
        match code {
            1 => IncidentState::New,
            2 => IncidentState::InProgress,
            3 => IncidentState::OnHold,
            6 => IncidentState::Resolved,
            7 => IncidentState::Closed,
            8 => IncidentState::Canceled,
            other => IncidentState::Other(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub number: String,
    /// 1 (critical) to 5 (planning).
    pub priority: Option<u8>,
    pub state: IncidentState,
    pub short_description: Option<String>,
    pub opened_at: Option<DateTime<Utc>>,
    /// First response, when the instance records it (often a `u_` field).
    pub responded_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Time spent on hold, which does not count against resolution targets.
    pub on_hold_seconds: Option<i64>,
    pub ci: Option<String>,
    pub service: Option<String>,
    pub account: Option<String>,
    pub company: Option<String>,
    pub major: bool,
    pub updated_at: DateTime<Utc>,
}

/// Change request states (ServiceNow's `change_request.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeState {
    New,
    Assess,
    Authorize,
    Scheduled,
    Implement,
    Review,
    Closed,
    Canceled,
    Other(i64),
}

impl ChangeState {
    pub fn from_code(code: i64) -> Self {
        match code {
            -5 => ChangeState::New,
            -4 => ChangeState::Assess,
            -3 => ChangeState::Authorize,
            -2 => ChangeState::Scheduled,
            -1 => ChangeState::Implement,
            0 => ChangeState::Review,
            3 => ChangeState::Closed,
            4 => ChangeState::Canceled,
            other => ChangeState::Other(other),
        }
    }

    /// Not yet implemented, cancelled or closed: its window is still ahead
    /// or under way.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            ChangeState::New
                | ChangeState::Assess
                | ChangeState::Authorize
                | ChangeState::Scheduled
                | ChangeState::Implement
        )
    }
}

/// A close code as instances write it (`Successful`, `successful issues`,
/// `successful-with-issues`, …), lowercased with spaces and dashes as `_`.
pub fn normalised_close_code(close_code: Option<&str>) -> String {
    close_code
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .replace([' ', '-'], "_")
}

/// How a change went, from ServiceNow's `close_code`: `successful`,
/// `successful_issues`, `unsuccessful` or `unknown` (the words templates
/// branch on).
pub fn close_outcome(close_code: Option<&str>) -> &'static str {
    match normalised_close_code(close_code).as_str() {
        "successful" => "successful",
        "successful_issues" | "successful_with_issues" => "successful_issues",
        "unsuccessful" => "unsuccessful",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub id: String,
    pub number: String,
    pub state: ChangeState,
    /// `standard`, `normal` or `emergency`.
    pub change_type: Option<String>,
    pub short_description: Option<String>,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    pub work_start: Option<DateTime<Utc>>,
    pub work_end: Option<DateTime<Utc>>,
    /// `successful`, `successful_issues` or `unsuccessful`.
    pub close_code: Option<String>,
    pub ci: Option<String>,
    pub billable: bool,
    pub customer_requested: bool,
    /// When the change was closed (`closed_at`).
    #[serde(default)]
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// `task_ci`: one CI affected by a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeCi {
    pub id: String,
    pub change: String,
    pub ci: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub id: String,
    pub number: String,
    pub state: Option<i64>,
    pub short_description: Option<String>,
    /// The root cause analysis.
    pub cause_notes: Option<String>,
    pub fix_notes: Option<String>,
    pub ci: Option<String>,
    pub service: Option<String>,
    pub account: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// `problem_task`: an RCA action item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProblemTask {
    pub id: String,
    pub number: String,
    pub problem: String,
    pub state: Option<i64>,
    pub short_description: Option<String>,
    pub assigned_to: Option<String>,
    pub due_date: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A record csmd wants created (and then updated) in the ITSM, kept in the
/// store until the ITSM has it, so nothing is lost or written twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItsmWrite {
    /// csmd's key, written into the record's correlation field.
    pub key: String,
    pub connector: crate::model::ConnectorName,
    pub table: String,
    /// Fields the record is created with.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Updates still to apply, oldest first.
    #[serde(default)]
    pub updates: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The ITSM's id of the record, once created.
    pub record_id: Option<String>,
    pub status: WriteStatus,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ItsmWrite {
    /// A creation of a record with `fields` in `table`, due now.
    pub fn new(
        connector: crate::model::ConnectorName,
        key: &str,
        table: &str,
        fields: serde_json::Map<String, serde_json::Value>,
        now: DateTime<Utc>,
    ) -> ItsmWrite {
        ItsmWrite {
            key: key.to_string(),
            connector,
            table: table.to_string(),
            fields,
            updates: Vec::new(),
            record_id: None,
            status: WriteStatus::Pending,
            attempts: 0,
            last_error: None,
            next_attempt_at: now,
            created_at: now,
            updated_at: now,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteStatus {
    /// Not (fully) written yet; retried at `next_attempt_at`.
    Pending,
    /// The ITSM has the record and every update.
    Done,
    /// Refused for good (the ITSM said the request is invalid); see
    /// `last_error`.
    Failed,
}

impl ChangeState {
    /// The upstream's state code; codes ascend along the change lifecycle
    /// (New -5 … Closed 3, Canceled 4).
    pub fn code(&self) -> i64 {
        match self {
            ChangeState::New => -5,
            ChangeState::Assess => -4,
            ChangeState::Authorize => -3,
            ChangeState::Scheduled => -2,
            ChangeState::Implement => -1,
            ChangeState::Review => 0,
            ChangeState::Closed => 3,
            ChangeState::Canceled => 4,
            ChangeState::Other(code) => *code,
        }
    }
}

/// A change request's planned window, either end possibly unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedWindow {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

/// A planned window that moved, in one version of a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rescheduled {
    pub before: PlannedWindow,
    pub after: PlannedWindow,
}

/// One step in a change request's history as csmd saw it: a version whose
/// state or planned window differs from the previous version stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeTransition {
    /// The change's sys_id.
    pub change: String,
    pub number: String,
    /// The state before; `None` when csmd first saw the change.
    pub from: Option<ChangeState>,
    pub to: ChangeState,
    /// Set when the planned window moved in this version.
    pub rescheduled: Option<Rescheduled>,
    /// The ITSM's time of this version (`sys_updated_on`).
    pub at: DateTime<Utc>,
    /// When csmd stored it.
    pub recorded_at: DateTime<Utc>,
}

impl Change {
    pub fn planned_window(&self) -> PlannedWindow {
        PlannedWindow {
            start: self.planned_start,
            end: self.planned_end,
        }
    }
}

/// A billing system's customer account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingAccount {
    pub id: String,
    /// The account number customer files name as `billing_account`.
    pub number: Option<String>,
    pub name: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A subscription: a recurring line item billing a CI or a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    /// The billing account (its id or number).
    pub account: Option<String>,
    /// Product or SKU.
    pub product: Option<String>,
    /// The CI billed, by name (or ITSM id).
    pub ci: Option<String>,
    /// The service billed.
    pub service: Option<String>,
    pub quantity: Option<f64>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// `active`, `suspended`, `cancelled`, … as the billing system says.
    pub status: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// Billing now: an active (or unstated) status, started, not ended.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        let status_active = self.status.as_deref().is_none_or(|s| {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "active" | "activated" | "live" | "in_service" | "billing"
            )
        });
        status_active
            && self.start.is_none_or(|start| start <= now)
            && self.end.is_none_or(|end| end > now)
    }
}

/// A one-off charge, like the work of a billable change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub account: Option<String>,
    /// The change number it bills (`CHG0001234`), when it bills one.
    pub change: Option<String>,
    pub description: Option<String>,
    pub amount: Option<f64>,
    pub charged_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

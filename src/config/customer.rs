//! Customer files: one TOML file per customer under `customers_dir`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::value::{HumanDuration, TimeZone};
use crate::model::CustomerId;

/// One customer: who they are, who to write to, and what was promised.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// csmd's id of the customer, used in the CLI, the API and message ids.
    pub id: CustomerId,
    /// The name shown to the customer and to CSMs.
    pub name: String,
    /// The customer's time zone: every date they read is in it. Default:
    /// the daemon's.
    #[serde(default)]
    pub time_zone: Option<TimeZone>,
    /// Service-delivery options bought, which decide report content.
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// The customer's account id in the ITSM (`customer_account.number`).
    #[serde(default)]
    pub itsm_account: Option<String>,
    /// The customer's account id in billing.
    #[serde(default)]
    pub billing_account: Option<String>,
    /// People at the customer and what they receive.
    #[serde(default, rename = "contact")]
    pub contacts: Vec<Contact>,
    /// What the contract promises.
    #[serde(default)]
    pub contract: Contract,
    /// CIs and services the customer uses, for providers without an ITSM
    /// install base.
    #[serde(default)]
    pub install_base: Vec<InstallBaseEntry>,
}

/// The customer a source names: by csmd's id, or by the customer's ITSM
/// or billing account.
pub fn find<'a>(customers: &'a [Customer], name: &str) -> Option<&'a Customer> {
    customers.iter().find(|c| {
        c.id.as_str() == name
            || c.itsm_account.as_deref() == Some(name)
            || c.billing_account.as_deref() == Some(name)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Subscription {
    /// Adds trending over the previous months, with charts, to the report.
    ExtendedServiceDelivery,
    /// Adds the incident detail list to the report.
    ExtendedServiceSupport,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub name: String,
    pub email: String,
    /// What this person receives; a contact with no role receives nothing.
    #[serde(default)]
    pub roles: Vec<ContactRole>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactRole {
    Primary,
    Maintenance,
    Reports,
    Accounting,
}

/// Incident priority, P1 the most urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum Priority {
    P1,
    P2,
    P3,
    P4,
    P5,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    /// Monthly availability target per service, in percent.
    #[serde(default = "default_availability_target")]
    pub availability_target: f64,
    /// How long before a planned change its maintenance notice is sent.
    #[serde(default = "default_lead_time")]
    pub maintenance_notice_lead_time: HumanDuration,
    /// Time to respond, per priority.
    #[serde(default)]
    pub response: BTreeMap<Priority, HumanDuration>,
    /// Time to resolve, per priority (on-hold time does not count).
    #[serde(default)]
    pub resolution: BTreeMap<Priority, HumanDuration>,
    /// Service credits: the first step whose `below` the availability falls
    /// under gives the credit.
    #[serde(default)]
    pub service_credit: Vec<CreditStep>,
    /// Whether the monthly report is copied to `accounting` contacts.
    #[serde(default)]
    pub report_to_accounting: bool,
    /// Whether critical monitoring alerts on a service count as outage
    /// time in the report's availability, besides P1 and major incidents.
    #[serde(default)]
    pub availability_from_monitoring: bool,
    /// Whether the customer receives proactive disruption notices.
    #[serde(default = "default_true")]
    pub proactive_notices: bool,
    /// The least severe alert that makes a disruption notice: `info`,
    /// `warning`, `minor`, `major` or `critical`.
    #[serde(default = "default_notice_severity")]
    pub notice_min_severity: Severity,
    /// When repeated incidents on one CI or service make a SIP action.
    #[serde(default)]
    pub chronic_incidents: ChronicRule,
}

/// `count` incidents on the same CI or service within `window` are chronic:
/// they make one SIP action (source `chronic-incident`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChronicRule {
    #[serde(default = "default_chronic_count")]
    pub count: usize,
    #[serde(default = "default_chronic_window")]
    pub window: HumanDuration,
}

impl Default for ChronicRule {
    fn default() -> Self {
        ChronicRule {
            count: default_chronic_count(),
            window: default_chronic_window(),
        }
    }
}

fn default_chronic_count() -> usize {
    3
}

fn default_chronic_window() -> HumanDuration {
    HumanDuration::from_secs(30 * 86_400)
}

impl Default for Contract {
    fn default() -> Self {
        Contract {
            availability_target: default_availability_target(),
            maintenance_notice_lead_time: default_lead_time(),
            response: BTreeMap::new(),
            resolution: BTreeMap::new(),
            service_credit: Vec::new(),
            report_to_accounting: false,
            availability_from_monitoring: false,
            proactive_notices: true,
            notice_min_severity: default_notice_severity(),
            chronic_incidents: ChronicRule::default(),
        }
    }
}

fn default_availability_target() -> f64 {
    99.9
}

fn default_lead_time() -> HumanDuration {
    HumanDuration::from_secs(5 * 86_400)
}

/// Alert severities, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Minor,
    Major,
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        })
    }
}

impl Severity {
    /// A monitoring tool's severity label, read generously (`crit`,
    /// `error`, `page`, …); an unknown or missing one is a warning.
    pub fn of_label(label: Option<&str>) -> Severity {
        match label.map(str::to_ascii_lowercase).as_deref() {
            Some("critical" | "crit" | "page" | "fatal" | "disaster" | "emergency") => {
                Severity::Critical
            }
            Some("major" | "high" | "error" | "err" | "severe") => Severity::Major,
            Some("minor" | "average" | "medium") => Severity::Minor,
            Some("info" | "informational" | "information" | "low" | "none" | "ok") => {
                Severity::Info
            }
            _ => Severity::Warning,
        }
    }
}

fn default_notice_severity() -> Severity {
    Severity::Warning
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreditStep {
    /// Availability (percent) under which this step applies.
    pub below: f64,
    /// Credit, in percent of the monthly fee of the service.
    pub credit_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstallBaseEntry {
    /// A configuration item (host, circuit, …) the customer uses.
    #[serde(default)]
    pub ci: Option<String>,
    /// A business service the customer uses.
    #[serde(default)]
    pub service: Option<String>,
}

/// One step of the path to a value in a customer file: a key, or one entry
/// of an array of tables such as the second `[[contact]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStep {
    Key(&'static str),
    Entry(usize),
}

impl Customer {
    /// Problems a customer file can parse with and still be wrong, as
    /// (path to the value, message).
    pub fn problems(&self) -> Vec<(Vec<PathStep>, String)> {
        use PathStep::{Entry, Key};
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push((vec![Key("name")], "name must not be empty".to_string()));
        }
        if !(0.0..=100.0).contains(&self.contract.availability_target) {
            problems.push((
                vec![Key("contract"), Key("availability_target")],
                format!(
                    "availability_target {} is not a percentage",
                    self.contract.availability_target
                ),
            ));
        }
        if self.contract.chronic_incidents.count < 2 {
            problems.push((
                vec![Key("contract"), Key("chronic_incidents"), Key("count")],
                format!(
                    "chronic_incidents count {} would make every incident chronic: it must be at least 2",
                    self.contract.chronic_incidents.count
                ),
            ));
        }
        for (i, contact) in self.contacts.iter().enumerate() {
            if let Err(e) = contact.email.parse::<lettre::Address>() {
                problems.push((
                    vec![Key("contact"), Entry(i), Key("email")],
                    format!(
                        "contact {:?}: invalid e-mail address {:?}: {e}",
                        contact.name, contact.email
                    ),
                ));
            }
            if contact.name.contains(['\r', '\n']) {
                problems.push((
                    vec![Key("contact"), Entry(i), Key("name")],
                    format!("contact name {:?} contains a line break", contact.name),
                ));
            }
        }
        for (i, entry) in self.install_base.iter().enumerate() {
            if entry.ci.is_none() && entry.service.is_none() {
                problems.push((
                    vec![Key("install_base"), Entry(i)],
                    "an [[install_base]] entry needs `ci` or `service`".to_string(),
                ));
            }
        }
        problems
    }
}

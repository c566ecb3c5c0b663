//! Data-integrity issues: a disagreement between the ITSM, billing and
//! monitoring (or a customer file missing a contact), found by a named rule
//! and followed from first sight to its end.
//!
//! ```text
//! pending ──grace──▶ open ──writeback──▶ ticketed
//!    │                 │                    │
//!    └─ gone: dropped  └──── gone ──────────┴──▶ resolved ──seen again──▶ open/ticketed
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::CustomerId;

/// The reconciliation rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// An in-use install-base item with no active subscription.
    CiNotBilled,
    /// An active subscription for a CI or service no install-base item has.
    BilledNotInInstallBase,
    /// An active subscription for a CI retired in the CMDB, or whose
    /// install-base items are all uninstalled.
    BilledAfterDecommission,
    /// The ITSM and billing give a CI to different customers.
    CustomerMismatch,
    /// An alerting host the CMDB does not know.
    MonitoredUnknownCi,
    /// A billable change closed long ago with no charge referencing it.
    BillableChangeNotBilled,
    /// A customer without a maintenance or a reports contact.
    ContactMissing,
}

impl Rule {
    pub const ALL: &'static [Rule] = &[
        Rule::CiNotBilled,
        Rule::BilledNotInInstallBase,
        Rule::BilledAfterDecommission,
        Rule::CustomerMismatch,
        Rule::MonitoredUnknownCi,
        Rule::BillableChangeNotBilled,
        Rule::ContactMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::CiNotBilled => "ci-not-billed",
            Rule::BilledNotInInstallBase => "billed-not-in-install-base",
            Rule::BilledAfterDecommission => "billed-after-decommission",
            Rule::CustomerMismatch => "customer-mismatch",
            Rule::MonitoredUnknownCi => "monitored-unknown-ci",
            Rule::BillableChangeNotBilled => "billable-change-not-billed",
            Rule::ContactMissing => "contact-missing",
        }
    }

    /// Its name for people, e.g. in a customer's monthly report.
    pub fn title(self) -> &'static str {
        match self {
            Rule::CiNotBilled => "Not billed",
            Rule::BilledNotInInstallBase => "Billed, not in the install base",
            Rule::BilledAfterDecommission => "Billed after decommissioning",
            Rule::CustomerMismatch => "Customer differs between systems",
            Rule::MonitoredUnknownCi => "Monitored, unknown to the CMDB",
            Rule::BillableChangeNotBilled => "Billable change not charged",
            Rule::ContactMissing => "Contact missing",
        }
    }

    /// What the rule checks, for tickets and `csmd integrity list`.
    pub fn describe(self) -> &'static str {
        match self {
            Rule::CiNotBilled => "in use in the install base but not billed",
            Rule::BilledNotInInstallBase => "billed but in no install-base item",
            Rule::BilledAfterDecommission => "still billed after its decommissioning",
            Rule::CustomerMismatch => "given to different customers by the ITSM and billing",
            Rule::MonitoredUnknownCi => "monitored but unknown to the CMDB",
            Rule::BillableChangeNotBilled => "a billable change not charged",
            Rule::ContactMissing => "a customer without a required contact",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Rule, String> {
        Rule::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown rule `{s}`; the rules are {}", known.join(", "))
            })
    }
}

/// What a rule found now: the stable key of the issue, whom it concerns,
/// and what each system says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// `<rule>/<subject>`: the same disagreement always has the same key.
    pub key: String,
    pub rule: Rule,
    /// What it is about: a CI or service name, a change number, a customer.
    pub subject: String,
    pub customer: Option<CustomerId>,
    /// System (`itsm`, `billing`, `monitoring`, `customer file`) → what it
    /// says.
    pub evidence: BTreeMap<String, String>,
}

impl Finding {
    pub fn new(rule: Rule, subject: &str) -> Finding {
        Finding {
            key: format!("{rule}/{subject}"),
            rule,
            subject: subject.to_string(),
            customer: None,
            evidence: BTreeMap::new(),
        }
    }

    pub fn evidence(mut self, system: &str, says: String) -> Finding {
        self.evidence.insert(system.to_string(), says);
        self
    }

    pub fn customer(mut self, customer: Option<CustomerId>) -> Finding {
        self.customer = customer;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueStatus {
    /// Seen, within its rule's grace period: not raised yet.
    Pending,
    /// Raised; no ticket (no write-back configured).
    Open,
    /// Raised with a ticket in the ITSM.
    Ticketed,
    /// The systems agree again.
    Resolved,
}

impl IssueStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueStatus::Pending => "pending",
            IssueStatus::Open => "open",
            IssueStatus::Ticketed => "ticketed",
            IssueStatus::Resolved => "resolved",
        }
    }

    /// Raised and not resolved.
    pub fn is_open(self) -> bool {
        matches!(self, IssueStatus::Open | IssueStatus::Ticketed)
    }
}

impl std::str::FromStr for IssueStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<IssueStatus, String> {
        [
            IssueStatus::Pending,
            IssueStatus::Open,
            IssueStatus::Ticketed,
            IssueStatus::Resolved,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown status `{s}`; use pending, open, ticketed or resolved"))
    }
}

/// One issue as followed over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrityIssue {
    pub key: String,
    pub rule: Rule,
    pub subject: String,
    pub customer: Option<CustomerId>,
    pub status: IssueStatus,
    pub evidence: BTreeMap<String, String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// When it was last raised (left `pending` or was reopened).
    pub opened_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The write-back key (correlation id) of its current ticket.
    pub ticket: Option<String>,
    /// How often it was raised: 1, then one more per reopening.
    pub occurrences: u32,
}

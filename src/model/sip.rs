//! The Service Improvement Program: per customer, the improvement actions
//! the CSM follows until they are done and presents every month.
//!
//! The rules live here, on the action itself, so the admin API, the CLI
//! and the automatic sources (RCA action items, surveys, complaints,
//! chronic incidents) cannot bypass them:
//! - an action leaves `open` only with an owner and a target date;
//! - every change of status, owner or target date is kept in its history;
//! - overdue means the target date has passed and it is neither done nor
//!   cancelled.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::CustomerId;

/// Where an action comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SipSource {
    /// A survey answer scored under the configured threshold.
    Survey,
    /// A customer complaint.
    Complaint,
    /// Raised by the CSM or the service team on their own initiative.
    Proactive,
    /// Repeated incidents on one CI or service for one customer.
    ChronicIncident,
    /// An action item of a root cause analysis (a problem task).
    Rca,
}

impl SipSource {
    pub const ALL: &'static [SipSource] = &[
        SipSource::Survey,
        SipSource::Complaint,
        SipSource::Proactive,
        SipSource::ChronicIncident,
        SipSource::Rca,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SipSource::Survey => "survey",
            SipSource::Complaint => "complaint",
            SipSource::Proactive => "proactive",
            SipSource::ChronicIncident => "chronic-incident",
            SipSource::Rca => "rca",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SipStatus {
    Open,
    InProgress,
    Done,
    Cancelled,
}

impl SipStatus {
    pub const ALL: &'static [SipStatus] = &[
        SipStatus::Open,
        SipStatus::InProgress,
        SipStatus::Done,
        SipStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SipStatus::Open => "open",
            SipStatus::InProgress => "in-progress",
            SipStatus::Done => "done",
            SipStatus::Cancelled => "cancelled",
        }
    }

    /// Done or cancelled: nothing more is expected of it.
    pub fn is_closed(self) -> bool {
        matches!(self, SipStatus::Done | SipStatus::Cancelled)
    }
}

impl std::str::FromStr for SipStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SipStatus::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = SipStatus::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown status {s:?}; statuses: {}", all.join(", "))
            })
    }
}

impl std::str::FromStr for SipSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SipSource::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = SipSource::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown source {s:?}; sources: {}", all.join(", "))
            })
    }
}

/// What an action is about, in the systems where that is recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipLinks {
    /// The problem's number (`PRB…`) whose RCA produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The problem task's number (`PTASK…`): the RCA action item itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem_task: Option<String>,
    /// Incident numbers (`INC…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<String>,
    /// A change number (`CHG…`) that implements it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// A dated note on an action, by its author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipUpdate {
    pub at: DateTime<Utc>,
    pub author: String,
    pub text: String,
}

/// One change of an action's status, owner or target date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipChange {
    pub at: DateTime<Utc>,
    pub author: String,
    /// `status`, `owner` or `target_date`.
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One improvement action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SipAction {
    /// `SIP-<n>`, numbered in creation order.
    pub id: String,
    pub customer: CustomerId,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    pub source: SipSource,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub target_date: Option<NaiveDate>,
    pub status: SipStatus,
    #[serde(default)]
    pub links: SipLinks,
    /// For actions csmd created itself: what caused it (`rca/…`,
    /// `feedback/…`, `chronic/…`). One action per origin, ever.
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub updates: Vec<SipUpdate>,
    #[serde(default)]
    pub history: Vec<SipChange>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub closed_at: Option<DateTime<Utc>>,
}

/// A new action, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSip {
    pub customer: CustomerId,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_source")]
    pub source: SipSource,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub target_date: Option<NaiveDate>,
    #[serde(default)]
    pub links: SipLinks,
    /// Who creates it (a CSM's name, or `csmd` for automatic sources).
    #[serde(default = "default_author")]
    pub author: String,
    #[serde(skip)]
    pub origin: Option<String>,
}

fn default_source() -> SipSource {
    SipSource::Proactive
}

fn default_author() -> String {
    "api".to_string()
}

/// Changes to an action; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipPatch {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub target_date: Option<NaiveDate>,
    #[serde(default)]
    pub status: Option<SipStatus>,
    #[serde(default)]
    pub links: Option<SipLinks>,
    #[serde(default = "default_author")]
    pub author: String,
}

/// Why a change to an action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipRuleError {
    #[error(
        "{id} cannot become {status} without {missing}: an action leaves \"open\" only with an owner and a target date"
    )]
    Incomplete {
        id: String,
        status: &'static str,
        missing: &'static str,
    },
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

impl SipAction {
    /// A new action as `id`, checked against the rules.
    pub fn create(id: String, new: NewSip, now: DateTime<Utc>) -> Result<SipAction, SipRuleError> {
        let title = non_empty(new.title, "title")?;
        let author = non_empty(new.author, "author")?;
        let action = SipAction {
            id,
            customer: new.customer,
            title,
            description: new.description.filter(|d| !d.trim().is_empty()),
            source: new.source,
            owner: new.owner.filter(|o| !o.trim().is_empty()),
            target_date: new.target_date,
            status: SipStatus::Open,
            links: new.links,
            origin: new.origin,
            updates: Vec::new(),
            history: vec![SipChange {
                at: now,
                author,
                field: "status".into(),
                from: None,
                to: Some(SipStatus::Open.as_str().into()),
            }],
            created_at: now,
            updated_at: now,
            closed_at: None,
        };
        Ok(action)
    }

    /// Applies `patch` by its author, keeping the history; refuses a change
    /// that breaks a rule and then changes nothing.
    pub fn apply(&mut self, patch: SipPatch, now: DateTime<Utc>) -> Result<bool, SipRuleError> {
        let author = non_empty(patch.author, "author")?;
        let mut next = self.clone();
        if let Some(title) = patch.title {
            next.title = non_empty(title, "title")?;
        }
        if let Some(description) = patch.description {
            next.description = Some(description).filter(|d| !d.trim().is_empty());
        }
        if let Some(owner) = patch.owner {
            next.owner = Some(owner).filter(|o| !o.trim().is_empty());
        }
        if let Some(target) = patch.target_date {
            next.target_date = Some(target);
        }
        if let Some(links) = patch.links {
            next.links = links;
        }
        if let Some(status) = patch.status {
            next.status = status;
        }
        if next.status != SipStatus::Open {
            let missing = match (&next.owner, next.target_date) {
                (None, None) => Some("an owner and a target date"),
                (None, Some(_)) => Some("an owner"),
                (Some(_), None) => Some("a target date"),
                (Some(_), Some(_)) => None,
            };
            // Also refuses clearing the owner of an action past "open".
            if let Some(missing) = missing {
                return Err(SipRuleError::Incomplete {
                    id: self.id.clone(),
                    status: next.status.as_str(),
                    missing,
                });
            }
        }
        next.record(&author, now, self);
        let changed = next != *self;
        if changed {
            next.updated_at = now;
            *self = next;
        }
        Ok(changed)
    }

    /// Closes the action because its source says it is finished (the RCA
    /// action item was closed in the ITSM). This is the source's decision,
    /// not a CSM's, so it is recorded even when no owner was ever named.
    pub fn close_from_source(&mut self, author: &str, reason: &str, now: DateTime<Utc>) -> bool {
        if self.status.is_closed() {
            return false;
        }
        let before = self.clone();
        self.status = SipStatus::Done;
        self.record(author, now, &before);
        self.note(author, reason, now);
        true
    }

    /// Adds a dated note.
    pub fn note(&mut self, author: &str, text: &str, now: DateTime<Utc>) {
        self.updates.push(SipUpdate {
            at: now,
            author: author.to_string(),
            text: text.to_string(),
        });
        self.updated_at = now;
    }

    /// The target date has passed (`today` is in the customer's time zone)
    /// and nothing says it is finished.
    pub fn is_overdue(&self, today: NaiveDate) -> bool {
        !self.status.is_closed() && self.target_date.is_some_and(|t| t < today)
    }

    /// Records in the history what changed since `before`, and keeps
    /// `closed_at` in step with the status.
    fn record(&mut self, author: &str, now: DateTime<Utc>, before: &SipAction) {
        let mut change = |field: &str, from: Option<String>, to: Option<String>| {
            if from != to {
                self.history.push(SipChange {
                    at: now,
                    author: author.to_string(),
                    field: field.to_string(),
                    from,
                    to,
                });
            }
        };
        change(
            "status",
            Some(before.status.as_str().to_string()),
            Some(self.status.as_str().to_string()),
        );
        change("owner", before.owner.clone(), self.owner.clone());
        change(
            "target_date",
            before.target_date.map(|d| d.to_string()),
            self.target_date.map(|d| d.to_string()),
        );
        match (before.status.is_closed(), self.status.is_closed()) {
            (false, true) => self.closed_at = Some(now),
            (true, false) => self.closed_at = None,
            _ => {}
        }
    }
}

fn non_empty(value: String, what: &'static str) -> Result<String, SipRuleError> {
    let value = value.trim().to_string();
    if value.is_empty() {
        Err(SipRuleError::Empty(what))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn action() -> SipAction {
        SipAction::create(
            "SIP-1".into(),
            NewSip {
                customer: "acme".parse().unwrap(),
                title: " Reduce repeat outages ".into(),
                description: None,
                source: SipSource::Proactive,
                owner: None,
                target_date: None,
                links: SipLinks::default(),
                author: "jane".into(),
                origin: None,
            },
            at("2026-11-01T09:00:00Z"),
        )
        .unwrap()
    }

    fn patch(author: &str) -> SipPatch {
        SipPatch {
            author: author.into(),
            ..SipPatch::default()
        }
    }

    #[test]
    fn an_action_leaves_open_only_with_an_owner_and_a_target_date() {
        let mut a = action();
        assert_eq!(a.title, "Reduce repeat outages");
        let start = SipPatch {
            status: Some(SipStatus::InProgress),
            ..patch("jane")
        };
        let err = a
            .apply(start.clone(), at("2026-11-02T09:00:00Z"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SIP-1 cannot become in-progress without an owner and a target date: an action leaves \"open\" only with an owner and a target date"
        );
        // Refused means unchanged.
        assert_eq!(a, action());

        let with_owner = SipPatch {
            owner: Some("Bob".into()),
            ..start.clone()
        };
        assert!(matches!(
            a.apply(with_owner, at("2026-11-02T09:00:00Z")),
            Err(SipRuleError::Incomplete {
                missing: "a target date",
                ..
            })
        ));
        let complete = SipPatch {
            owner: Some("Bob".into()),
            target_date: Some("2026-11-30".parse().unwrap()),
            ..start
        };
        assert!(a.apply(complete, at("2026-11-02T09:00:00Z")).unwrap());
        assert_eq!(a.status, SipStatus::InProgress);
        let fields: Vec<_> = a.history.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["status", "status", "owner", "target_date"]);
        assert_eq!(a.history[1].from.as_deref(), Some("open"));
        assert_eq!(a.history[1].to.as_deref(), Some("in-progress"));
        assert_eq!(a.history[1].author, "jane");
    }

    #[test]
    fn target_date_moves_and_closing_are_history_and_closing_sets_closed_at() {
        let mut a = action();
        let ready = SipPatch {
            owner: Some("Bob".into()),
            target_date: Some("2026-11-30".parse().unwrap()),
            status: Some(SipStatus::InProgress),
            ..patch("jane")
        };
        a.apply(ready, at("2026-11-02T09:00:00Z")).unwrap();
        let moved = SipPatch {
            target_date: Some("2026-12-15".parse().unwrap()),
            ..patch("bob")
        };
        a.apply(moved, at("2026-11-20T09:00:00Z")).unwrap();
        let last = a.history.last().unwrap();
        assert_eq!(
            (
                last.field.as_str(),
                last.from.as_deref(),
                last.to.as_deref()
            ),
            ("target_date", Some("2026-11-30"), Some("2026-12-15"))
        );
        assert!(!a.is_overdue("2026-12-15".parse().unwrap()));
        assert!(a.is_overdue("2026-12-16".parse().unwrap()));

        let done = SipPatch {
            status: Some(SipStatus::Done),
            ..patch("bob")
        };
        a.apply(done, at("2026-12-20T09:00:00Z")).unwrap();
        assert_eq!(a.closed_at, Some(at("2026-12-20T09:00:00Z")));
        assert!(!a.is_overdue("2027-01-01".parse().unwrap()));
        let reopen = SipPatch {
            status: Some(SipStatus::InProgress),
            ..patch("bob")
        };
        a.apply(reopen, at("2026-12-21T09:00:00Z")).unwrap();
        assert_eq!(a.closed_at, None);
    }

    #[test]
    fn a_patch_that_changes_nothing_is_not_history() {
        let mut a = action();
        let same = SipPatch {
            title: Some("Reduce repeat outages".into()),
            ..patch("jane")
        };
        assert!(!a.apply(same, at("2026-11-03T09:00:00Z")).unwrap());
        assert_eq!(a, action());
    }

    #[test]
    fn the_source_can_close_an_action_without_an_owner() {
        let mut a = action();
        assert!(a.close_from_source("itsm", "PTASK1 closed", at("2026-11-05T09:00:00Z")));
        assert_eq!(a.status, SipStatus::Done);
        assert_eq!(a.updates[0].text, "PTASK1 closed");
        assert!(!a.close_from_source("itsm", "again", at("2026-11-06T09:00:00Z")));
        assert_eq!(a.updates.len(), 1);
    }
}

//! The SIP actions csmd creates itself:
//! - one per RCA action item (a problem task) and customer of its problem,
//!   closed when the task closes in the ITSM;
//! - one per survey answer scoring under the configured threshold, and
//!   per complaint;
//! - one per CI or service and customer with repeated incidents (the
//!   contract's count within its window).
//!
//! Each action records its origin, and the store keeps one action per
//! origin, ever: a re-sync, a replayed journal entry or a redelivered
//! webhook finds the action it created before.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::impact::Impact;
use crate::config::{Customer, Sip};
use crate::model::itsm::{Incident, ItsmRecord, Problem, ProblemTask};
use crate::model::outbox::{Draft, MessageKind};
use crate::model::sip::{NewSip, SipAction, SipLinks, SipSource};
use crate::model::{ConnectorName, CustomerId, FeedbackEvent, FeedbackKind};
use crate::notify::templates::{DigestAction, DigestCustomer, SipDigest, Templates};
use crate::store::{SipError, Store};

/// The author csmd writes into the history of what it does itself.
pub const AUTHOR: &str = "csmd";

/// ServiceNow's `problem_task.state` value for Closed. Closing and
/// cancelling also set `closed_at`, which is what other instances rely on.
const PROBLEM_TASK_CLOSED: i64 = 157;

/// What the SIP processors need besides the store.
pub struct SipSources<'a> {
    pub customers: &'a [Customer],
    pub settings: &'a Sip,
    pub default_time_zone: Tz,
}

/// What an RCA sync did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RcaSync {
    pub created: usize,
    pub closed: usize,
}

impl SipSources<'_> {
    pub fn of(config: &crate::config::Config) -> SipSources<'_> {
        SipSources {
            customers: &config.customers,
            settings: &config.sip,
            default_time_zone: config.daemon.time_zone.0,
        }
    }

    fn customer(&self, name: &str) -> Option<&Customer> {
        crate::config::customer::find(self.customers, name)
    }

    /// Creates the action a survey answer or complaint calls for, if any;
    /// returns it when it was created now.
    pub fn feedback(
        &self,
        store: &Store,
        connector: &ConnectorName,
        feedback: &FeedbackEvent,
        now: DateTime<Utc>,
    ) -> Result<Option<SipAction>, SipError> {
        let (source, title) = match (feedback.kind, feedback.score) {
            (FeedbackKind::Complaint, _) => (SipSource::Complaint, "Complaint".to_string()),
            (FeedbackKind::Csat, Some(score)) if score < self.settings.csat_below => (
                SipSource::Survey,
                format!("Low satisfaction score ({score} in a CSAT survey)"),
            ),
            (FeedbackKind::Nps, Some(score)) if score < self.settings.nps_below => (
                SipSource::Survey,
                format!("Detractor answer ({score} out of 10 in an NPS survey)"),
            ),
            _ => return Ok(None),
        };
        let Some(customer) = self.customer(&feedback.customer) else {
            // The webhook refuses feedback for unknown customers; this one
            // was accepted under a configuration that knew it.
            tracing::warn!(
                customer = %feedback.customer,
                id = %feedback.source_id,
                "Feedback for a customer no longer configured; no SIP action created"
            );
            return Ok(None);
        };
        let mut description = String::new();
        if let Some(who) = &feedback.respondent {
            description.push_str(&format!("From {who}"));
        }
        if let Some(at) = feedback.submitted_at {
            let tz = customer.time_zone.map_or(self.default_time_zone, |t| t.0);
            let when = at.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z");
            description.push_str(&if description.is_empty() {
                format!("Received {when}")
            } else {
                format!(", {when}")
            });
        }
        if let Some(comment) = &feedback.comment {
            if !description.is_empty() {
                description.push_str(":\n");
            }
            description.push_str(comment);
        }
        let title = match (&feedback.comment, source) {
            (Some(comment), SipSource::Complaint) => format!("Complaint: {}", headline(comment)),
            _ => title,
        };
        let new = NewSip {
            customer: customer.id.clone(),
            title,
            description: Some(description),
            source,
            owner: None,
            target_date: None,
            links: SipLinks::default(),
            author: AUTHOR.into(),
            origin: Some(format!(
                "feedback/{connector}/{}",
                feedback.source_id.replace('/', "%2F")
            )),
        };
        let (action, created) = store.create_sip(new, now)?;
        if created {
            tracing::info!(
                id = %action.id,
                customer = %action.customer,
                source = action.source.as_str(),
                "SIP action created from customer feedback"
            );
        }
        Ok(created.then_some(action))
    }

    /// Makes every problem task one action per customer of its problem, and
    /// closes the actions whose task closed. The customer of a problem is
    /// its account's; a problem without one reaches the customers whose
    /// install base holds its CI or service.
    pub fn sync_rca(&self, store: &Store, now: DateTime<Utc>) -> Result<RcaSync, SipError> {
        let tasks = store.itsm_records("problem_tasks")?;
        if tasks.is_empty() {
            return Ok(RcaSync::default());
        }
        let impact = Impact::load(store, self.customers)?;
        let mut problems: HashMap<String, Option<Problem>> = HashMap::new();
        let mut done = RcaSync::default();
        for record in tasks {
            let ItsmRecord::ProblemTask(task) = record else {
                continue;
            };
            if !problems.contains_key(&task.problem) {
                let problem = match store.itsm_record("problems", &task.problem)? {
                    Some(ItsmRecord::Problem(p)) => Some(p),
                    _ => None,
                };
                problems.insert(task.problem.clone(), problem);
            }
            // A task whose problem has not arrived yet waits for it.
            let Some(Some(problem)) = problems.get(&task.problem) else {
                continue;
            };
            let targets = problem.ci.iter().chain(&problem.service).cloned().collect();
            for customer in impact.owners(&problem.account, &targets, self.customers) {
                let step = self.rca_action(store, problem, &task, &customer, now)?;
                done.created += step.created;
                done.closed += step.closed;
            }
        }
        Ok(done)
    }

    fn rca_action(
        &self,
        store: &Store,
        problem: &Problem,
        task: &ProblemTask,
        customer: &CustomerId,
        now: DateTime<Utc>,
    ) -> Result<RcaSync, SipError> {
        let origin = format!("rca/{}/{customer}", task.id);
        let closed = task.closed_at.is_some() || task.state == Some(PROBLEM_TASK_CLOSED);
        let mut done = RcaSync::default();
        let action = match store.sip_by_origin(&origin)? {
            Some(action) => action,
            // A task closed before csmd saw it was never an open action.
            None if closed => return Ok(done),
            None => {
                let tz = self
                    .customer(customer.as_str())
                    .and_then(|c| c.time_zone)
                    .map_or(self.default_time_zone, |t| t.0);
                let new = NewSip {
                    customer: customer.clone(),
                    title: task
                        .short_description
                        .clone()
                        .filter(|s| !s.trim().is_empty())
                        .unwrap_or_else(|| format!("RCA action {}", task.number)),
                    description: Some(rca_description(problem)),
                    source: SipSource::Rca,
                    owner: task.assigned_to.clone(),
                    target_date: task.due_date.map(|d| d.with_timezone(&tz).date_naive()),
                    links: SipLinks {
                        problem: Some(problem.number.clone()),
                        problem_task: Some(task.number.clone()),
                        ..SipLinks::default()
                    },
                    author: AUTHOR.into(),
                    origin: Some(origin),
                };
                let (action, created) = store.create_sip(new, now)?;
                if created {
                    done.created += 1;
                    tracing::info!(
                        id = %action.id,
                        %customer,
                        problem = %problem.number,
                        task = %task.number,
                        "SIP action created from an RCA action item"
                    );
                }
                action
            }
        };
        if closed && !action.status.is_closed() {
            let reason = format!("{} was closed in the ITSM", task.number);
            store.update_sip(
                &action.id,
                |a| Ok(a.close_from_source(AUTHOR, &reason, now)),
            )?;
            done.closed += 1;
            tracing::info!(id = %action.id, task = %task.number, "SIP action done: its RCA action item closed");
        }
        Ok(done)
    }

    /// Makes repeated incidents one action: when a customer's contract
    /// count of incidents (`[contract.chronic_incidents]`, default 3 in 30
    /// days) were opened on one CI or service within the window before
    /// `now`. Incidents already counted by an earlier action of that CI or
    /// service are not counted again, and no second action is made while
    /// one is still open; returns how many actions were created.
    pub fn sync_chronic(&self, store: &Store, now: DateTime<Utc>) -> Result<usize, SipError> {
        // The incidents tree is read one record at a time, and only those
        // opened within the longest window are kept.
        let longest = self
            .customers
            .iter()
            .filter_map(|c| chrono::Duration::from_std(c.contract.chronic_incidents.window.0).ok())
            .max()
            .unwrap_or_default();
        let impact = Impact::load(store, self.customers)?;
        // (customer, CI or service) → incidents on it, by the customer.
        let mut groups: HashMap<(CustomerId, String), Vec<Incident>> = HashMap::new();
        for record in store.itsm_scan("incidents")? {
            let ItsmRecord::Incident(incident) = record? else {
                continue;
            };
            let Some(opened) = incident.opened_at.filter(|o| *o > now - longest) else {
                continue;
            };
            let accounts = incident.account.iter().chain(&incident.company);
            let targets = incident
                .ci
                .iter()
                .chain(&incident.service)
                .cloned()
                .collect();
            for id in impact.owners(accounts, &targets, self.customers) {
                let Some(customer) = self.customer(id.as_str()) else {
                    continue;
                };
                let window =
                    chrono::Duration::from_std(customer.contract.chronic_incidents.window.0)
                        .unwrap_or(chrono::Duration::MAX);
                if opened <= now - window || opened > now {
                    continue;
                }
                for target in incident.ci.iter().chain(&incident.service) {
                    groups
                        .entry((customer.id.clone(), target.clone()))
                        .or_default()
                        .push(incident.clone());
                }
            }
        }
        if groups.is_empty() {
            return Ok(0);
        }
        let existing = store.sip_actions()?;
        let mut created = 0;
        let mut keys: Vec<_> = groups.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let (customer_id, target) = &key;
            let Some(customer) = self.customer(customer_id.as_str()) else {
                continue;
            };
            let prefix = format!("chronic/{customer_id}/{}/", target.replace('/', "%2F"));
            let earlier = existing
                .iter()
                .filter(|a| a.origin.as_deref().is_some_and(|o| o.starts_with(&prefix)));
            if earlier.clone().any(|a| !a.status.is_closed()) {
                continue;
            }
            let counted_until = earlier.map(|a| a.created_at).max();
            let mut incidents: Vec<Incident> = groups[&key]
                .iter()
                .filter(|i| counted_until.is_none_or(|t| i.opened_at.is_some_and(|o| o > t)))
                .cloned()
                .collect();
            if incidents.len() < customer.contract.chronic_incidents.count {
                continue;
            }
            incidents.sort_by_key(|i| i.opened_at);
            let name = impact.ci_name(target).unwrap_or(target);
            let tz = self.time_zone_of(customer_id);
            let days = customer.contract.chronic_incidents.window.0.as_secs() / 86_400;
            let mut description = format!(
                "{} incidents on {name} within {days} days:",
                incidents.len()
            );
            for i in &incidents {
                let opened = i
                    .opened_at
                    .map(|o| o.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string());
                description.push_str(&format!(
                    "\n- {} opened {}{}",
                    i.number,
                    opened.unwrap_or_default(),
                    i.short_description
                        .as_deref()
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                ));
            }
            let first = incidents[0]
                .opened_at
                .map(|o| o.to_rfc3339())
                .unwrap_or_default();
            let new = NewSip {
                customer: customer_id.clone(),
                title: format!("Chronic incidents on {name}"),
                description: Some(description),
                source: SipSource::ChronicIncident,
                owner: None,
                target_date: None,
                links: SipLinks {
                    incidents: incidents.iter().map(|i| i.number.clone()).collect(),
                    ..SipLinks::default()
                },
                author: AUTHOR.into(),
                origin: Some(format!("{prefix}{first}")),
            };
            let (action, made) = store.create_sip(new, now)?;
            if made {
                created += 1;
                tracing::info!(id = %action.id, customer = %customer_id, %target, incidents = incidents.len(), "SIP action created for chronic incidents");
            }
        }
        Ok(created)
    }
}

fn rca_description(problem: &Problem) -> String {
    let mut text = format!(
        "Action item of the root cause analysis of {}",
        problem.number
    );
    if let Some(summary) = &problem.short_description {
        text.push_str(&format!(" ({summary})"));
    }
    text.push('.');
    if let Some(cause) = problem
        .cause_notes
        .as_ref()
        .filter(|c| !c.trim().is_empty())
    {
        text.push_str(&format!("\nRoot cause: {cause}"));
    }
    text
}

/// The first line of a text, at most 80 characters, for a title.
fn headline(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if line.chars().count() > 80 {
        let cut: String = line.chars().take(79).collect();
        format!("{}…", cut.trim_end())
    } else {
        line.to_string()
    }
}

/// Which actions a list shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipQuery {
    pub customer: Option<CustomerId>,
    pub status: Option<crate::model::sip::SipStatus>,
    pub source: Option<SipSource>,
    /// Only overdue actions (`true`) or only those that are not (`false`).
    pub overdue: Option<bool>,
    /// Only actions open at some time in this month (`YYYY-MM`), in the
    /// customer's time zone: created before it ended and not closed before
    /// it began.
    pub month: Option<String>,
}

/// A month as `YYYY-MM`, or what is wrong with it.
pub fn parse_month(text: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(&format!("{text}-01"), "%Y-%m-%d")
        .ok()
        .filter(|_| text.len() == 7)
        .ok_or_else(|| format!("month {text:?} is not YYYY-MM"))
}

/// The first instant of a day in a time zone (the next existing one when a
/// clock change skips midnight).
fn start_of_day(day: chrono::NaiveDate, tz: Tz) -> DateTime<Utc> {
    use chrono::TimeZone as _;
    let mut time = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..4 {
        if let Some(at) = tz.from_local_datetime(&time).earliest() {
            return at.with_timezone(&Utc);
        }
        time += chrono::Duration::hours(1);
    }
    time.and_utc()
}

impl SipSources<'_> {
    fn time_zone_of(&self, customer: &CustomerId) -> Tz {
        self.customer(customer.as_str())
            .and_then(|c| c.time_zone)
            .map_or(self.default_time_zone, |t| t.0)
    }

    /// Today in the customer's time zone: what "overdue" is measured by.
    pub fn today(&self, customer: &CustomerId, now: DateTime<Utc>) -> chrono::NaiveDate {
        now.with_timezone(&self.time_zone_of(customer)).date_naive()
    }

    /// The actions `query` selects, in creation order, each with whether it
    /// is overdue at `now`.
    pub fn list(
        &self,
        store: &Store,
        query: &SipQuery,
        now: DateTime<Utc>,
    ) -> Result<Vec<(SipAction, bool)>, SipError> {
        let month = query
            .month
            .as_deref()
            .map(parse_month)
            .transpose()
            .map_err(SipError::Query)?;
        let mut out = Vec::new();
        for action in store.sip_actions()? {
            let overdue = action.is_overdue(self.today(&action.customer, now));
            let keep = query
                .customer
                .as_ref()
                .is_none_or(|c| *c == action.customer)
                && query.status.is_none_or(|s| s == action.status)
                && query.source.is_none_or(|s| s == action.source)
                && query.overdue.is_none_or(|o| o == overdue)
                && month.is_none_or(|first| {
                    let tz = self.time_zone_of(&action.customer);
                    let start = start_of_day(first, tz);
                    let end = start_of_day(first + chrono::Months::new(1), tz);
                    action.created_at < end && action.closed_at.is_none_or(|c| c >= start)
                });
            if keep {
                out.push((action, overdue));
            }
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Sip(#[from] SipError),
    #[error(transparent)]
    Template(#[from] crate::notify::templates::TemplateError),
}

impl SipSources<'_> {
    /// The overdue actions at `now`, by customer name; none when nothing is
    /// overdue. The day is the daemon's.
    pub fn digest(&self, store: &Store, now: DateTime<Utc>) -> Result<Option<SipDigest>, SipError> {
        let query = SipQuery {
            overdue: Some(true),
            ..SipQuery::default()
        };
        let mut customers: Vec<DigestCustomer> = Vec::new();
        let mut count = 0;
        for (action, _) in self.list(store, &query, now)? {
            let today = self.today(&action.customer, now);
            let Some(target) = action.target_date else {
                continue;
            };
            let entry = DigestAction {
                id: action.id,
                title: action.title,
                owner: action.owner,
                target_date: target.to_string(),
                days_overdue: (today - target).num_days(),
                status: action.status.as_str().into(),
                source: action.source.as_str().into(),
                problem: action.links.problem,
                problem_task: action.links.problem_task,
                change: action.links.change,
                incidents: action.links.incidents,
            };
            count += 1;
            match customers
                .iter_mut()
                .find(|c| c.id == action.customer.as_str())
            {
                Some(c) => c.actions.push(entry),
                None => customers.push(DigestCustomer {
                    id: action.customer.to_string(),
                    name: self
                        .customer(action.customer.as_str())
                        .map_or_else(|| action.customer.to_string(), |c| c.name.clone()),
                    actions: vec![entry],
                }),
            }
        }
        if count == 0 {
            return Ok(None);
        }
        customers.sort_by(|a, b| a.name.cmp(&b.name));
        for customer in &mut customers {
            customer
                .actions
                .sort_by_key(|a| std::cmp::Reverse(a.days_overdue));
        }
        Ok(Some(SipDigest {
            date: now
                .with_timezone(&self.default_time_zone)
                .date_naive()
                .to_string(),
            count,
            customers,
        }))
    }

    /// Queues the digest for the schedule's `occurrence` to every
    /// `[sip] digest_to` address, once per occurrence and address; returns
    /// how many messages were queued now.
    pub fn queue_digest(
        &self,
        store: &Store,
        templates: &Templates,
        from: &lettre::message::Mailbox,
        occurrence: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize, DigestError> {
        if self.settings.digest_to.is_empty() {
            return Ok(0);
        }
        let Some(digest) = self.digest(store, now)? else {
            return Ok(0);
        };
        let rendered = templates.sip_digest(&digest)?;
        let domain = from.email.domain();
        let messages = self
            .settings
            .digest_to
            .iter()
            .map(|to| {
                Draft {
                    key: format!("sip-digest/{}/{}", occurrence.to_rfc3339(), to.email),
                    kind: MessageKind::SipDigest,
                    customer: None,
                    to: to.to_string(),
                    subject: rendered.subject.clone(),
                    text: rendered.text.clone(),
                    html: rendered.html.clone(),
                    calendar: None,
                }
                .queue(domain, now)
            })
            .collect();
        let queued = store
            .queue_messages(Vec::new(), messages)
            .map_err(SipError::from)?;
        Ok(queued.len())
    }
}

//! The figures of one customer's month, from the records gathered for it
//! ([`CustomerData`]): availability per service, response and resolution
//! against the contract with every breach, service credits, incident counts
//! and MTTR, changes, and SIP actions. Pure functions of their inputs: the
//! tests compute months by hand and compare to the minute.
//!
//! The rules, which the report states to the customer:
//! - every duration is counted in seconds and shown rounded to the nearest
//!   whole minute (30 s and more round up); an SLA is met when the rounded
//!   duration is no more than the target;
//! - percentages are truncated, never rounded up, to three decimals, so a
//!   missed target is never shown as met;
//! - an outage is the time from the opening to the resolution of a P1 or
//!   major incident on the service (or an outage window from monitoring,
//!   when the contract asks for it), clipped to the month; overlapping
//!   outages count once; time inside an approved maintenance window of a
//!   change affecting the service does not count; an outage incident tied
//!   to no service counts against every service of the customer;
//! - an SLA clock belongs to the month it stopped in: response to the month
//!   of the first response, resolution to the month of the resolution;
//!   on-hold time, when the ITSM records it, is not counted against
//!   resolution; an incident without a recorded response is not measured
//!   for response;
//! - MTTR is the mean resolution time (on-hold excluded) of the incidents
//!   resolved in the month.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use super::period::Month;
use crate::config::customer::{Contract, Priority};
use crate::model::integrity::IntegrityIssue;
use crate::model::itsm::{Change, ChangeState, Incident, IncidentState, close_outcome};
use crate::model::sip::{SipAction, SipStatus};

/// An incident of the customer, with the service it is on for them.
#[derive(Debug, Clone)]
pub struct IncidentRow {
    pub incident: Incident,
    /// The service's name, from the incident or through its CI.
    pub service: Option<String>,
}

/// A change reaching the customer, with the customer's CIs and services
/// it affects.
#[derive(Debug, Clone)]
pub struct ChangeRow {
    pub change: Change,
    pub cis: BTreeSet<String>,
    pub services: BTreeSet<String>,
}

/// An outage window seen by monitoring on one of the customer's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoredOutage {
    pub service: Option<String>,
    pub start: DateTime<Utc>,
    /// None while it lasts.
    pub end: Option<DateTime<Utc>>,
}

/// Everything a customer's reports are computed from.
#[derive(Debug, Clone, Default)]
pub struct CustomerData {
    /// The services the customer uses (install base), by name.
    pub services: BTreeSet<String>,
    pub incidents: Vec<IncidentRow>,
    pub changes: Vec<ChangeRow>,
    pub sip: Vec<SipAction>,
    /// Only filled when the contract counts monitoring outages.
    pub monitored: Vec<MonitoredOutage>,
    /// Its data-integrity issues open now (open or ticketed).
    pub integrity: Vec<IntegrityIssue>,
}

/// How many were measured and how many of those met the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Ratio {
    pub measured: usize,
    pub met: usize,
}

impl Ratio {
    /// Met in percent; none when nothing was measured.
    pub fn percent(&self) -> Option<f64> {
        (self.measured > 0).then(|| self.met as f64 * 100.0 / self.measured as f64)
    }

    fn add(&mut self, met: bool) {
        self.measured += 1;
        self.met += usize::from(met);
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceFigures {
    pub service: String,
    /// Outage minutes counted against the service.
    pub outage_minutes: i64,
    /// Outage minutes inside approved maintenance windows, not counted.
    pub maintenance_minutes: i64,
    /// In percent of the month's minutes.
    pub availability: f64,
    pub met: bool,
    /// The credit due for the month, in percent of the service's fee.
    pub credit_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PriorityFigures {
    pub priority: Priority,
    /// Opened in the month.
    pub opened: usize,
    /// Resolved in the month.
    pub resolved: usize,
    pub mttr_minutes: Option<i64>,
    pub response_target_minutes: Option<i64>,
    pub response: Ratio,
    pub resolution_target_minutes: Option<i64>,
    pub resolution: Ratio,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachKind {
    Response,
    Resolution,
}

impl BreachKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BreachKind::Response => "response",
            BreachKind::Resolution => "resolution",
        }
    }
}

/// One SLA target an incident missed.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub number: String,
    pub summary: Option<String>,
    pub priority: Priority,
    pub kind: BreachKind,
    pub target_minutes: i64,
    pub actual_minutes: i64,
    /// On-hold minutes left out of a resolution time.
    pub on_hold_minutes: i64,
    pub opened_at: DateTime<Utc>,
}

/// How the month's executed changes went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeFigures {
    pub successful: usize,
    pub successful_issues: usize,
    pub unsuccessful: usize,
    /// Closed without a known outcome.
    pub unknown: usize,
    pub emergency: usize,
    /// Executed in the month, by end of work.
    pub executed: Vec<ExecutedChange>,
    /// Approved changes planned to start in the next month.
    pub upcoming: Vec<UpcomingChange>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutedChange {
    pub number: String,
    pub summary: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    /// `successful`, `successful_issues`, `unsuccessful` or `unknown`.
    pub outcome: &'static str,
    pub emergency: bool,
    pub services: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpcomingChange {
    pub number: String,
    pub summary: Option<String>,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub services: Vec<String>,
    pub cis: Vec<String>,
}

/// SIP actions of the month.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SipFigures {
    /// Created in the month.
    pub opened: Vec<SipAction>,
    /// Done in the month.
    pub completed: Vec<SipAction>,
    /// Past their target date and still open at the end of the month.
    pub overdue: Vec<SipAction>,
    /// Still open at the end of the month (overdue ones included).
    pub open_at_end: usize,
}

/// One customer's month.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthFigures {
    pub month: Month,
    pub minutes: i64,
    pub services: Vec<ServiceFigures>,
    /// P1 to P5, each with a target or an incident.
    pub priorities: Vec<PriorityFigures>,
    pub breaches: Vec<Breach>,
    pub opened: usize,
    pub resolved: usize,
    pub mttr_minutes: Option<i64>,
    pub response: Ratio,
    pub resolution: Ratio,
}

impl MonthFigures {
    /// The lowest availability of any service (the month's headline).
    pub fn lowest_availability(&self) -> Option<f64> {
        self.services
            .iter()
            .map(|s| s.availability)
            .min_by(f64::total_cmp)
    }
}

/// Seconds as whole minutes, 30 s and more rounding up.
pub fn round_minutes(seconds: i64) -> i64 {
    if seconds >= 0 {
        (seconds + 30) / 60
    } else {
        -((-seconds + 30) / 60)
    }
}

/// A percentage truncated (toward zero) to three decimals, as text.
pub fn percent_text(percent: f64) -> String {
    let thousandths = (percent * 1000.0 + 1e-9).floor();
    format!("{:.3}", thousandths / 1000.0)
}

fn priority_of(incident: &Incident) -> Option<Priority> {
    match incident.priority? {
        1 => Some(Priority::P1),
        2 => Some(Priority::P2),
        3 => Some(Priority::P3),
        4 => Some(Priority::P4),
        5 => Some(Priority::P5),
        _ => None,
    }
}

pub const PRIORITIES: [Priority; 5] = [
    Priority::P1,
    Priority::P2,
    Priority::P3,
    Priority::P4,
    Priority::P5,
];

/// When the incident was resolved: `resolved_at`, else `closed_at`.
pub fn resolved_at(incident: &Incident) -> Option<DateTime<Utc>> {
    incident.resolved_at.or(incident.closed_at)
}

/// Whether the incident was open at some time in `[start, end)` (or is
/// opened then): what the month's incident list holds.
pub fn active_in(incident: &Incident, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    incident.opened_at.is_some_and(|o| o < end) && resolved_at(incident).is_none_or(|r| r >= start)
}

/// The resolution time without on-hold time, in seconds.
pub fn resolution_seconds(incident: &Incident) -> Option<i64> {
    let (opened, resolved) = (incident.opened_at?, resolved_at(incident)?);
    let hold = incident.on_hold_seconds.unwrap_or(0).max(0);
    Some(((resolved - opened).num_seconds() - hold).max(0))
}

pub fn response_seconds(incident: &Incident) -> Option<i64> {
    Some(
        (incident.responded_at? - incident.opened_at?)
            .num_seconds()
            .max(0),
    )
}

fn target_minutes(
    targets: &BTreeMap<Priority, crate::config::value::HumanDuration>,
    p: Priority,
) -> Option<i64> {
    targets
        .get(&p)
        .map(|d| round_minutes(i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX)))
}

/// The credit for an availability: of the steps it falls under, the one
/// with the lowest threshold.
pub fn credit_for(contract: &Contract, availability: f64) -> Option<f64> {
    contract
        .service_credit
        .iter()
        .filter(|step| availability < step.below)
        .min_by(|a, b| a.below.total_cmp(&b.below))
        .map(|step| step.credit_percent)
}

/// Whether an incident counts as an outage of its service.
fn is_outage(incident: &Incident) -> bool {
    incident.state != IncidentState::Canceled && (incident.major || incident.priority == Some(1))
}

/// Whether a change's window was approved maintenance.
fn approved(change: &Change) -> bool {
    matches!(
        change.state,
        ChangeState::Scheduled | ChangeState::Implement | ChangeState::Review | ChangeState::Closed
    )
}

/// The window a change's work took: the actual one when recorded, else
/// the planned one.
fn work_window(change: &Change) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    match (change.work_start, change.work_end) {
        (Some(start), Some(end)) if end > start => Some((start, end)),
        _ => match (change.planned_start, change.planned_end) {
            (Some(start), Some(end)) if end > start => Some((start, end)),
            _ => None,
        },
    }
}

type Span = (i64, i64);

/// Sorted, non-overlapping spans covering the same seconds.
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.retain(|(s, e)| e > s);
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn total(spans: &[Span]) -> i64 {
    spans.iter().map(|(s, e)| e - s).sum()
}

/// Seconds both merged lists cover.
fn overlap(a: &[Span], b: &[Span]) -> i64 {
    let (mut i, mut j, mut sum) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if end > start {
            sum += end - start;
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    sum
}

/// A span clipped to `[start, end)`, in seconds since the epoch.
fn clip(from: DateTime<Utc>, to: DateTime<Utc>, start: i64, end: i64) -> Option<Span> {
    let (s, e) = (from.timestamp().max(start), to.timestamp().min(end));
    (e > s).then_some((s, e))
}

/// The figures of `month`, measured in `tz`. `now` ends outages still
/// going on (for a month not over yet).
pub fn month_figures(
    data: &CustomerData,
    contract: &Contract,
    month: Month,
    tz: Tz,
    now: DateTime<Utc>,
) -> MonthFigures {
    let (start, end) = (month.start(tz), month.end(tz));
    let minutes = month.minutes(tz);
    let services = availability(data, contract, start, end, minutes, now);

    let mut rows: BTreeMap<Priority, PriorityFigures> = PRIORITIES
        .iter()
        .map(|&p| {
            (
                p,
                PriorityFigures {
                    priority: p,
                    opened: 0,
                    resolved: 0,
                    mttr_minutes: None,
                    response_target_minutes: target_minutes(&contract.response, p),
                    response: Ratio::default(),
                    resolution_target_minutes: target_minutes(&contract.resolution, p),
                    resolution: Ratio::default(),
                },
            )
        })
        .collect();
    let mut resolution_sums: BTreeMap<Priority, (i64, i64)> = BTreeMap::new();
    let (mut opened, mut resolved, mut all_sum, mut all_count) = (0, 0, 0i64, 0i64);
    let mut breaches = Vec::new();
    let (mut response, mut resolution) = (Ratio::default(), Ratio::default());
    let within = |at: Option<DateTime<Utc>>| at.is_some_and(|at| at >= start && at < end);
    for row in &data.incidents {
        let incident = &row.incident;
        if incident.state == IncidentState::Canceled {
            continue;
        }
        let Some(opened_at) = incident.opened_at else {
            continue;
        };
        let priority = priority_of(incident);
        if within(incident.opened_at) {
            opened += 1;
            if let Some(p) = priority.and_then(|p| rows.get_mut(&p)) {
                p.opened += 1;
            }
        }
        if within(incident.responded_at)
            && let (Some(p), Some(seconds)) = (priority, response_seconds(incident))
            && let Some(row) = rows.get_mut(&p)
            && let Some(target) = row.response_target_minutes
        {
            let actual = round_minutes(seconds);
            let met = actual <= target;
            row.response.add(met);
            response.add(met);
            if !met {
                breaches.push(Breach {
                    number: incident.number.clone(),
                    summary: incident.short_description.clone(),
                    priority: p,
                    kind: BreachKind::Response,
                    target_minutes: target,
                    actual_minutes: actual,
                    on_hold_minutes: 0,
                    opened_at,
                });
            }
        }
        if within(resolved_at(incident))
            && let Some(seconds) = resolution_seconds(incident)
        {
            resolved += 1;
            all_sum += seconds;
            all_count += 1;
            if let Some(p) = priority {
                let sum = resolution_sums.entry(p).or_default();
                sum.0 += seconds;
                sum.1 += 1;
                if let Some(row) = rows.get_mut(&p) {
                    row.resolved += 1;
                    if let Some(target) = row.resolution_target_minutes {
                        let actual = round_minutes(seconds);
                        let met = actual <= target;
                        row.resolution.add(met);
                        resolution.add(met);
                        if !met {
                            breaches.push(Breach {
                                number: incident.number.clone(),
                                summary: incident.short_description.clone(),
                                priority: p,
                                kind: BreachKind::Resolution,
                                target_minutes: target,
                                actual_minutes: actual,
                                on_hold_minutes: round_minutes(
                                    incident.on_hold_seconds.unwrap_or(0).max(0),
                                ),
                                opened_at,
                            });
                        }
                    }
                }
            }
        }
    }
    for (p, (sum, count)) in resolution_sums {
        if let Some(row) = rows.get_mut(&p) {
            row.mttr_minutes = mean_minutes(sum, count);
        }
    }
    breaches.sort_by(|a, b| {
        (a.priority, a.opened_at, &a.number, a.kind as u8).cmp(&(
            b.priority,
            b.opened_at,
            &b.number,
            b.kind as u8,
        ))
    });
    let priorities = rows
        .into_values()
        .filter(|r| {
            r.opened > 0
                || r.resolved > 0
                || r.response_target_minutes.is_some()
                || r.resolution_target_minutes.is_some()
        })
        .collect();
    MonthFigures {
        month,
        minutes,
        services,
        priorities,
        breaches,
        opened,
        resolved,
        mttr_minutes: mean_minutes(all_sum, all_count),
        response,
        resolution,
    }
}

/// The mean of `count` durations summing to `sum` seconds, in whole
/// minutes (rounded like every duration).
fn mean_minutes(sum: i64, count: i64) -> Option<i64> {
    (count > 0).then(|| {
        // Round half up on the exact mean: (2·sum + 60·count) / (120·count).
        (2 * sum + 60 * count).div_euclid(120 * count)
    })
}

/// Availability of every service of the customer over `[start, end)`.
fn availability(
    data: &CustomerData,
    contract: &Contract,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    minutes: i64,
    now: DateTime<Utc>,
) -> Vec<ServiceFigures> {
    let (s, e) = (start.timestamp(), end.timestamp());
    let open_end = now.min(end);
    // Outage spans by service; `None` is no service: every service.
    let mut outages: BTreeMap<Option<&str>, Vec<Span>> = BTreeMap::new();
    for row in &data.incidents {
        let incident = &row.incident;
        if !is_outage(incident) {
            continue;
        }
        let Some(opened) = incident.opened_at else {
            continue;
        };
        let until = resolved_at(incident).unwrap_or(open_end);
        if let Some(span) = clip(opened, until, s, e) {
            outages
                .entry(row.service.as_deref())
                .or_default()
                .push(span);
        }
    }
    for window in &data.monitored {
        if let Some(span) = clip(window.start, window.end.unwrap_or(open_end), s, e) {
            outages
                .entry(window.service.as_deref())
                .or_default()
                .push(span);
        }
    }
    let mut names: BTreeSet<&str> = data.services.iter().map(String::as_str).collect();
    names.extend(outages.keys().flatten());
    let everywhere = outages.remove(&None).unwrap_or_default();
    let mut maintenance: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for row in &data.changes {
        if !approved(&row.change) {
            continue;
        }
        let Some((from, to)) = work_window(&row.change) else {
            continue;
        };
        let Some(span) = clip(from, to, s, e) else {
            continue;
        };
        for service in &row.services {
            maintenance.entry(service).or_default().push(span);
        }
    }
    if names.is_empty() {
        // Nothing known about the customer's services: one line for all.
        names.insert(ALL_SERVICES);
    }
    names
        .into_iter()
        .map(|name| {
            let mut spans = outages.get(&Some(name)).cloned().unwrap_or_default();
            spans.extend(&everywhere);
            let down = merge(spans);
            let windows = merge(maintenance.get(name).cloned().unwrap_or_default());
            let excluded = overlap(&down, &windows);
            let outage_minutes = round_minutes(total(&down) - excluded);
            let availability = if minutes > 0 {
                (minutes - outage_minutes) as f64 * 100.0 / minutes as f64
            } else {
                100.0
            };
            // Met when (minutes − outage) / minutes ≥ target, without
            // floating point doubt at the boundary.
            let met = (minutes - outage_minutes) as f64 * 100.0
                >= contract.availability_target * minutes as f64 - 1e-9;
            ServiceFigures {
                service: name.to_string(),
                outage_minutes,
                maintenance_minutes: round_minutes(excluded),
                availability,
                met,
                credit_percent: credit_for(contract, availability),
            }
        })
        .collect()
}

/// The name of the one availability line of a customer whose services are
/// not known.
pub const ALL_SERVICES: &str = "All services";

/// The changes of the month and the planned maintenance of the next one.
pub fn change_figures(data: &CustomerData, month: Month, tz: Tz) -> ChangeFigures {
    let (start, end) = (month.start(tz), month.end(tz));
    let next_end = month.next().end(tz);
    let mut figures = ChangeFigures::default();
    for row in &data.changes {
        let change = &row.change;
        let services: Vec<String> = row.services.iter().cloned().collect();
        let done = matches!(change.state, ChangeState::Review | ChangeState::Closed);
        let finished = change.work_end.or(change.planned_end);
        if done && let Some(at) = finished.filter(|at| *at >= start && *at < end) {
            let outcome = close_outcome(change.close_code.as_deref());
            let emergency = change
                .change_type
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case("emergency"));
            match outcome {
                "successful" => figures.successful += 1,
                "successful_issues" => figures.successful_issues += 1,
                "unsuccessful" => figures.unsuccessful += 1,
                _ => figures.unknown += 1,
            }
            figures.emergency += usize::from(emergency);
            figures.executed.push(ExecutedChange {
                number: change.number.clone(),
                summary: change.short_description.clone(),
                start: change.work_start.or(change.planned_start),
                end: at,
                outcome,
                emergency,
                services: services.clone(),
            });
        }
        if approved(change)
            && let Some(at) = change
                .planned_start
                .filter(|at| *at >= end && *at < next_end)
        {
            figures.upcoming.push(UpcomingChange {
                number: change.number.clone(),
                summary: change.short_description.clone(),
                start: at,
                end: change.planned_end,
                services,
                cis: row.cis.iter().cloned().collect(),
            });
        }
    }
    figures
        .executed
        .sort_by(|a, b| (a.end, &a.number).cmp(&(b.end, &b.number)));
    figures
        .upcoming
        .sort_by(|a, b| (a.start, &a.number).cmp(&(b.start, &b.number)));
    figures
}

/// The SIP actions opened, completed and overdue in the month.
pub fn sip_figures(data: &CustomerData, month: Month, tz: Tz) -> SipFigures {
    let (start, end) = (month.start(tz), month.end(tz));
    let first_after: NaiveDate = month.next().first_day();
    let mut figures = SipFigures::default();
    for action in &data.sip {
        if action.created_at >= end {
            continue;
        }
        if action.created_at >= start {
            figures.opened.push(action.clone());
        }
        let closed_by_end = action.closed_at.is_some_and(|c| c < end);
        if action.status == SipStatus::Done
            && action.closed_at.is_some_and(|c| c >= start && c < end)
        {
            figures.completed.push(action.clone());
        }
        if !closed_by_end {
            figures.open_at_end += 1;
            if action.target_date.is_some_and(|t| t < first_after) {
                figures.overdue.push(action.clone());
            }
        }
    }
    figures
        .overdue
        .sort_by_key(|a| (a.target_date, a.id.clone()));
    figures
}

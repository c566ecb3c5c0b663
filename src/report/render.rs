//! A computed month made into what the templates show ([`ReportView`]),
//! the CSV export of the month's incidents, and the charts' parts.
//!
//! Every number is formatted here, once, by the rules the report states
//! (durations in whole minutes, percentages truncated to three decimals),
//! so the HTML and the text part cannot disagree.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::IntegrityLine;
use super::charts::{Chart, Trend};
use super::compute::{
    self, ChangeFigures, CustomerData, MonthFigures, PRIORITIES, SipFigures, percent_text,
    resolution_seconds, resolved_at, response_seconds, round_minutes,
};
use super::period::Month;
use crate::config::Customer;
use crate::config::customer::{Priority, Subscription};
use crate::model::itsm::IncidentState;
use crate::model::sip::SipAction;

/// How many months of trending the Extended Service Delivery report shows
/// before the report's month.
pub const TREND_MONTHS: u32 = 6;

/// Services drawn in the availability chart at most (the least available).
const CHART_SERVICES: usize = 6;

/// Everything the report templates see (besides `branding` and `subject`).
#[derive(Debug, Clone, Serialize)]
pub struct ReportView {
    pub customer_id: String,
    pub customer_name: String,
    pub recipient_name: Option<String>,
    /// `2026-11`
    pub month: String,
    /// `November 2026`
    pub month_name: String,
    pub next_month_name: String,
    pub time_zone: String,
    /// RFC 3339, like every instant the templates format.
    pub period_start: String,
    pub period_end: String,
    pub month_minutes: i64,
    pub extended_delivery: bool,
    pub extended_support: bool,
    pub availability_target: String,
    pub services: Vec<ServiceView>,
    pub all_met: bool,
    pub credits: Vec<CreditView>,
    pub sla: Vec<PriorityView>,
    pub response_percent: Option<String>,
    pub resolution_percent: Option<String>,
    pub breaches: Vec<BreachView>,
    pub incidents: IncidentTotals,
    pub changes: ChangesView,
    pub sip: SipView,
    pub integrity: Vec<IntegrityLine>,
    pub trending: Option<TrendView>,
    /// Extended Service Support: every incident of the month.
    pub incident_list: Option<Vec<IncidentLine>>,
    pub csv_filename: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceView {
    pub service: String,
    pub outage_minutes: i64,
    pub outage: String,
    pub maintenance_minutes: i64,
    pub availability: String,
    pub met: bool,
    pub credit_percent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreditView {
    pub service: String,
    pub availability: String,
    pub credit_percent: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriorityView {
    pub priority: String,
    pub opened: usize,
    pub resolved: usize,
    pub mttr: Option<String>,
    pub response_target: Option<String>,
    pub response_measured: usize,
    pub response_met: usize,
    pub response_percent: Option<String>,
    pub resolution_target: Option<String>,
    pub resolution_measured: usize,
    pub resolution_met: usize,
    pub resolution_percent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreachView {
    pub number: String,
    pub summary: Option<String>,
    pub priority: String,
    /// `response` or `resolution`
    pub kind: &'static str,
    pub target: String,
    pub actual: String,
    pub over: String,
    pub on_hold: Option<String>,
    pub opened: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentTotals {
    pub opened: usize,
    pub resolved: usize,
    pub mttr: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangesView {
    pub executed_count: usize,
    pub successful: usize,
    pub successful_issues: usize,
    pub unsuccessful: usize,
    pub unknown: usize,
    pub emergency: usize,
    pub executed: Vec<ChangeLine>,
    pub upcoming: Vec<ChangeLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeLine {
    pub number: String,
    pub summary: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    /// For executed changes: `successful`, `successful_issues`,
    /// `unsuccessful` or `unknown`.
    pub outcome: Option<&'static str>,
    pub emergency: bool,
    pub services: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SipView {
    pub opened: Vec<SipLine>,
    pub completed: Vec<SipLine>,
    pub overdue: Vec<SipLine>,
    pub open_at_end: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SipLine {
    pub id: String,
    pub title: String,
    pub owner: Option<String>,
    pub target_date: Option<String>,
    pub status: &'static str,
    /// At the end of the month, for overdue actions.
    pub days_overdue: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendView {
    pub months: Vec<TrendMonth>,
    pub charts: Vec<ChartView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendMonth {
    pub month: String,
    pub name: String,
    pub lowest_availability: Option<String>,
    pub incidents: usize,
    pub mttr: Option<String>,
    pub response_percent: Option<String>,
    pub resolution_percent: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChartView {
    pub name: &'static str,
    pub title: String,
    /// What the HTML's `<img src="cid:…">` names; in a preview, a `data:`
    /// URI instead.
    pub src: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentLine {
    pub number: String,
    pub priority: Option<String>,
    pub state: String,
    pub major: bool,
    pub summary: Option<String>,
    pub service: Option<String>,
    pub opened: Option<String>,
    pub resolved: Option<String>,
    pub resolution: Option<String>,
    pub on_hold: Option<String>,
}

/// Minutes as `2 h 05 min`, `45 min` or `3 d 4 h 10 min`.
pub fn duration_text(minutes: i64) -> String {
    let minutes = minutes.max(0);
    let (days, hours, mins) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (days, hours) {
        (0, 0) => format!("{mins} min"),
        (0, h) => format!("{h} h {mins:02} min"),
        (d, h) => format!("{d} d {h} h {mins:02} min"),
    }
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn priority_name(p: Priority) -> String {
    format!("{p:?}")
}

fn state_name(state: IncidentState) -> String {
    match state {
        IncidentState::New => "new".into(),
        IncidentState::InProgress => "in progress".into(),
        IncidentState::OnHold => "on hold".into(),
        IncidentState::Resolved => "resolved".into(),
        IncidentState::Closed => "closed".into(),
        IncidentState::Canceled => "canceled".into(),
        IncidentState::Other(code) => format!("state {code}"),
    }
}

fn percent(value: Option<f64>) -> Option<String> {
    value.map(percent_text)
}

/// The trend of the months before `month` and `month` itself.
pub fn trend(figures: &[MonthFigures], target: f64) -> Trend {
    let labels = figures.iter().map(|f| f.month.short_name()).collect();
    // The least available services over the period, by their worst month.
    let mut worst: Vec<(String, f64)> = Vec::new();
    for f in figures {
        for s in &f.services {
            match worst.iter_mut().find(|(name, _)| *name == s.service) {
                Some((_, low)) => *low = low.min(s.availability),
                None => worst.push((s.service.clone(), s.availability)),
            }
        }
    }
    worst.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    worst.truncate(CHART_SERVICES);
    let services = worst
        .into_iter()
        .map(|(name, _)| {
            let values = figures
                .iter()
                .map(|f| {
                    f.services
                        .iter()
                        .find(|s| s.service == name)
                        .map(|s| s.availability)
                })
                .collect();
            (name, values)
        })
        .collect();
    Trend {
        labels,
        services,
        target,
        incidents: figures
            .iter()
            .map(|f| {
                let mut counts = [0; 5];
                for p in &f.priorities {
                    if let Some(i) = PRIORITIES.iter().position(|x| *x == p.priority) {
                        counts[i] = p.opened;
                    }
                }
                counts
            })
            .collect(),
        mttr_hours: figures
            .iter()
            .map(|f| f.mttr_minutes.map(|m| m as f64 / 60.0))
            .collect(),
        response: figures.iter().map(|f| f.response.percent()).collect(),
        resolution: figures.iter().map(|f| f.resolution.percent()).collect(),
    }
}

fn sip_line(action: &SipAction, month_end_day: chrono::NaiveDate) -> SipLine {
    SipLine {
        id: action.id.clone(),
        title: action.title.clone(),
        owner: action.owner.clone(),
        target_date: action.target_date.map(|d| d.to_string()),
        status: action.status.as_str(),
        days_overdue: action
            .target_date
            .filter(|t| *t < month_end_day)
            .map(|t| (month_end_day - t).num_days()),
    }
}

/// What a report is made of before its templates are rendered.
pub struct Parts<'a> {
    pub customer: &'a Customer,
    pub tz: Tz,
    pub month: Month,
    pub figures: &'a MonthFigures,
    pub changes: &'a ChangeFigures,
    pub sip: &'a SipFigures,
    pub integrity: Vec<IntegrityLine>,
    /// Extended Service Delivery: the months before and this one, oldest
    /// first, and the charts with their `src`.
    pub trending: Option<Trending<'a>>,
    pub data: &'a CustomerData,
}

/// Six months of figures, oldest first, and each chart with its `src`.
pub type Trending<'a> = (&'a [MonthFigures], Vec<(&'a Chart, String)>);

/// The view of a report (without a recipient).
pub fn view(parts: Parts<'_>) -> ReportView {
    let Parts {
        customer,
        tz,
        month,
        figures,
        changes,
        sip,
        integrity,
        trending,
        data,
    } = parts;
    let contract = &customer.contract;
    let (start, end) = (month.start(tz), month.end(tz));
    let services: Vec<ServiceView> = figures
        .services
        .iter()
        .map(|s| ServiceView {
            service: s.service.clone(),
            outage_minutes: s.outage_minutes,
            outage: duration_text(s.outage_minutes),
            maintenance_minutes: s.maintenance_minutes,
            availability: percent_text(s.availability),
            met: s.met,
            credit_percent: s.credit_percent.map(|c| format!("{c}")),
        })
        .collect();
    let credits = figures
        .services
        .iter()
        .filter_map(|s| {
            Some(CreditView {
                service: s.service.clone(),
                availability: percent_text(s.availability),
                credit_percent: format!("{}", s.credit_percent?),
            })
        })
        .collect();
    let sla = figures
        .priorities
        .iter()
        .map(|p| PriorityView {
            priority: priority_name(p.priority),
            opened: p.opened,
            resolved: p.resolved,
            mttr: p.mttr_minutes.map(duration_text),
            response_target: p.response_target_minutes.map(duration_text),
            response_measured: p.response.measured,
            response_met: p.response.met,
            response_percent: percent(p.response.percent()),
            resolution_target: p.resolution_target_minutes.map(duration_text),
            resolution_measured: p.resolution.measured,
            resolution_met: p.resolution.met,
            resolution_percent: percent(p.resolution.percent()),
        })
        .collect();
    let breaches = figures
        .breaches
        .iter()
        .map(|b| BreachView {
            number: b.number.clone(),
            summary: b.summary.clone(),
            priority: priority_name(b.priority),
            kind: b.kind.as_str(),
            target: duration_text(b.target_minutes),
            actual: duration_text(b.actual_minutes),
            over: duration_text(b.actual_minutes - b.target_minutes),
            on_hold: (b.on_hold_minutes > 0).then(|| duration_text(b.on_hold_minutes)),
            opened: rfc3339(b.opened_at),
        })
        .collect();
    let change_line = |number: &str,
                       summary: &Option<String>,
                       start: Option<DateTime<Utc>>,
                       end: Option<DateTime<Utc>>,
                       outcome: Option<&'static str>,
                       emergency: bool,
                       services: &[String]| ChangeLine {
        number: number.to_string(),
        summary: summary.clone(),
        start: start.map(rfc3339),
        end: end.map(rfc3339),
        outcome,
        emergency,
        services: services.to_vec(),
    };
    let changes_view = ChangesView {
        executed_count: changes.executed.len(),
        successful: changes.successful,
        successful_issues: changes.successful_issues,
        unsuccessful: changes.unsuccessful,
        unknown: changes.unknown,
        emergency: changes.emergency,
        executed: changes
            .executed
            .iter()
            .map(|c| {
                change_line(
                    &c.number,
                    &c.summary,
                    c.start,
                    Some(c.end),
                    Some(c.outcome),
                    c.emergency,
                    &c.services,
                )
            })
            .collect(),
        upcoming: changes
            .upcoming
            .iter()
            .map(|c| {
                change_line(
                    &c.number,
                    &c.summary,
                    Some(c.start),
                    c.end,
                    None,
                    false,
                    &c.services,
                )
            })
            .collect(),
    };
    let month_end_day = month.next().first_day();
    let sip_view = SipView {
        opened: sip
            .opened
            .iter()
            .map(|a| sip_line(a, month_end_day))
            .collect(),
        completed: sip
            .completed
            .iter()
            .map(|a| sip_line(a, month_end_day))
            .collect(),
        overdue: sip
            .overdue
            .iter()
            .map(|a| sip_line(a, month_end_day))
            .collect(),
        open_at_end: sip.open_at_end,
    };
    let trending = trending.map(|(months, charts)| TrendView {
        months: months
            .iter()
            .map(|f| TrendMonth {
                month: f.month.to_string(),
                name: f.month.long_name(),
                lowest_availability: percent(f.lowest_availability()),
                incidents: f.opened,
                mttr: f.mttr_minutes.map(duration_text),
                response_percent: percent(f.response.percent()),
                resolution_percent: percent(f.resolution.percent()),
            })
            .collect(),
        charts: charts
            .into_iter()
            .map(|(chart, src)| ChartView {
                name: chart.name,
                title: chart.title.clone(),
                src,
            })
            .collect(),
    });
    let extended_support = customer
        .subscriptions
        .contains(&Subscription::ExtendedServiceSupport);
    let incident_list = extended_support.then(|| {
        month_incidents(data, start, end)
            .map(|row| {
                let i = &row.incident;
                IncidentLine {
                    number: i.number.clone(),
                    priority: i.priority.map(|p| format!("P{p}")),
                    state: state_name(i.state),
                    major: i.major,
                    summary: i.short_description.clone(),
                    service: row.service.clone(),
                    opened: i.opened_at.map(rfc3339),
                    resolved: resolved_at(i).map(rfc3339),
                    resolution: resolution_seconds(i).map(|s| duration_text(round_minutes(s))),
                    on_hold: i
                        .on_hold_seconds
                        .filter(|s| *s > 0)
                        .map(|s| duration_text(round_minutes(s))),
                }
            })
            .collect()
    });
    ReportView {
        customer_id: customer.id.to_string(),
        customer_name: customer.name.clone(),
        recipient_name: None,
        month: month.to_string(),
        month_name: month.long_name(),
        next_month_name: month.next().long_name(),
        time_zone: tz.name().to_string(),
        period_start: rfc3339(start),
        period_end: rfc3339(end),
        month_minutes: figures.minutes,
        extended_delivery: customer
            .subscriptions
            .contains(&Subscription::ExtendedServiceDelivery),
        extended_support,
        availability_target: percent_text(contract.availability_target),
        all_met: figures.services.iter().all(|s| s.met),
        services,
        credits,
        sla,
        response_percent: percent(figures.response.percent()),
        resolution_percent: percent(figures.resolution.percent()),
        breaches,
        incidents: IncidentTotals {
            opened: figures.opened,
            resolved: figures.resolved,
            mttr: figures.mttr_minutes.map(duration_text),
        },
        changes: changes_view,
        sip: sip_view,
        integrity,
        trending,
        incident_list,
        csv_filename: csv_filename(customer, month),
    }
}

pub fn csv_filename(customer: &Customer, month: Month) -> String {
    format!("incidents-{}-{month}.csv", customer.id)
}

/// The customer's incidents open at some time in `[start, end)`, by
/// opening time.
pub fn month_incidents(
    data: &CustomerData,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> impl Iterator<Item = &compute::IncidentRow> {
    let mut rows: Vec<&compute::IncidentRow> = data
        .incidents
        .iter()
        .filter(|r| compute::active_in(&r.incident, start, end))
        .collect();
    rows.sort_by(|a, b| {
        (a.incident.opened_at, &a.incident.number).cmp(&(b.incident.opened_at, &b.incident.number))
    });
    rows.into_iter()
}

/// The CSV export of the month's incidents: one row per incident open at
/// some time in the month, times in the customer's zone with their offset.
pub fn incidents_csv(
    data: &CustomerData,
    customer: &Customer,
    month: Month,
    tz: Tz,
) -> Result<Vec<u8>, csv::Error> {
    let (start, end) = (month.start(tz), month.end(tz));
    let mut out = csv::Writer::from_writer(Vec::with_capacity(4096));
    out.write_record([
        "number",
        "priority",
        "state",
        "major",
        "short_description",
        "service",
        "ci",
        "opened_at",
        "responded_at",
        "resolved_at",
        "response_minutes",
        "response_target_minutes",
        "response_met",
        "on_hold_minutes",
        "resolution_minutes",
        "resolution_target_minutes",
        "resolution_met",
    ])?;
    let local = |at: Option<DateTime<Utc>>| {
        at.map(|at| {
            at.with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        })
        .unwrap_or_default()
    };
    let number = |n: Option<i64>| n.map(|n| n.to_string()).unwrap_or_default();
    for row in month_incidents(data, start, end) {
        let i = &row.incident;
        let priority = i
            .priority
            .and_then(|p| PRIORITIES.get(usize::from(p).checked_sub(1)?));
        let target =
            |map: &std::collections::BTreeMap<Priority, crate::config::value::HumanDuration>| {
                priority
                    .and_then(|p| map.get(p))
                    .map(|d| round_minutes(i64::try_from(d.0.as_secs()).unwrap_or(i64::MAX)))
            };
        let response = response_seconds(i).map(round_minutes);
        let resolution = resolution_seconds(i).map(round_minutes);
        let response_target = target(&customer.contract.response);
        let resolution_target = target(&customer.contract.resolution);
        let met = |actual: Option<i64>, target: Option<i64>| match (actual, target) {
            (Some(a), Some(t)) => if a <= t { "yes" } else { "no" }.to_string(),
            _ => String::new(),
        };
        out.write_record([
            i.number.clone(),
            i.priority.map(|p| format!("P{p}")).unwrap_or_default(),
            state_name(i.state),
            if i.major { "yes" } else { "no" }.to_string(),
            i.short_description.clone().unwrap_or_default(),
            row.service.clone().unwrap_or_default(),
            i.ci.clone().unwrap_or_default(),
            local(i.opened_at),
            local(i.responded_at),
            local(resolved_at(i)),
            number(response),
            number(response_target),
            met(response, response_target),
            number(i.on_hold_seconds.map(round_minutes)),
            number(resolution),
            number(resolution_target),
            met(resolution, resolution_target),
        ])?;
    }
    out.into_inner()
        .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))
}

/// Sample views for the templates' trial render at load time: every
/// section filled, and every section empty.
pub fn sample_views() -> Vec<ReportView> {
    let sip = SipLine {
        id: "SIP-1".into(),
        title: "Sample action".into(),
        owner: Some("Sample Owner".into()),
        target_date: Some("2026-01-31".into()),
        status: "in-progress",
        days_overdue: Some(2),
    };
    let change = ChangeLine {
        number: "CHG0000001".into(),
        summary: Some("Sample change".into()),
        start: Some("2026-01-10T21:00:00Z".into()),
        end: Some("2026-01-10T23:00:00Z".into()),
        outcome: Some("successful"),
        emergency: true,
        services: vec!["Sample service".into()],
    };
    let full = ReportView {
        customer_id: "sample".into(),
        customer_name: "Sample Customer".into(),
        recipient_name: Some("Sam Sample".into()),
        month: "2026-01".into(),
        month_name: "January 2026".into(),
        next_month_name: "February 2026".into(),
        time_zone: "Europe/Paris".into(),
        period_start: "2025-12-31T23:00:00Z".into(),
        period_end: "2026-01-31T23:00:00Z".into(),
        month_minutes: 44640,
        extended_delivery: true,
        extended_support: true,
        availability_target: "99.900".into(),
        services: vec![ServiceView {
            service: "Sample service".into(),
            outage_minutes: 90,
            outage: duration_text(90),
            maintenance_minutes: 30,
            availability: "99.798".into(),
            met: false,
            credit_percent: Some("5".into()),
        }],
        all_met: false,
        credits: vec![CreditView {
            service: "Sample service".into(),
            availability: "99.798".into(),
            credit_percent: "5".into(),
        }],
        sla: vec![PriorityView {
            priority: "P1".into(),
            opened: 2,
            resolved: 2,
            mttr: Some(duration_text(75)),
            response_target: Some(duration_text(15)),
            response_measured: 2,
            response_met: 1,
            response_percent: Some("50.000".into()),
            resolution_target: Some(duration_text(240)),
            resolution_measured: 2,
            resolution_met: 2,
            resolution_percent: Some("100.000".into()),
        }],
        response_percent: Some("50.000".into()),
        resolution_percent: Some("100.000".into()),
        breaches: vec![BreachView {
            number: "INC0000001".into(),
            summary: Some("Sample incident".into()),
            priority: "P1".into(),
            kind: "response",
            target: duration_text(15),
            actual: duration_text(40),
            over: duration_text(25),
            on_hold: Some(duration_text(10)),
            opened: "2026-01-05T09:00:00Z".into(),
        }],
        incidents: IncidentTotals {
            opened: 2,
            resolved: 2,
            mttr: Some(duration_text(75)),
        },
        changes: ChangesView {
            executed_count: 1,
            successful: 1,
            successful_issues: 0,
            unsuccessful: 0,
            unknown: 0,
            emergency: 1,
            executed: vec![change.clone()],
            upcoming: vec![ChangeLine {
                outcome: None,
                summary: None,
                end: None,
                ..change
            }],
        },
        sip: SipView {
            opened: vec![sip.clone()],
            completed: vec![SipLine {
                owner: None,
                target_date: None,
                days_overdue: None,
                ..sip.clone()
            }],
            overdue: vec![sip],
            open_at_end: 1,
        },
        integrity: vec![IntegrityLine {
            kind: "Not billed".into(),
            subject: "sample-ci".into(),
            detail: Some("in use in the install base but not billed".into()),
            since: Some("2026-01-02".into()),
        }],
        trending: Some(TrendView {
            months: vec![TrendMonth {
                month: "2026-01".into(),
                name: "January 2026".into(),
                lowest_availability: Some("99.798".into()),
                incidents: 2,
                mttr: Some(duration_text(75)),
                response_percent: Some("50.000".into()),
                resolution_percent: None,
            }],
            charts: vec![ChartView {
                name: "availability",
                title: "Availability".into(),
                src: "cid:availability@example.net".into(),
            }],
        }),
        incident_list: Some(vec![IncidentLine {
            number: "INC0000001".into(),
            priority: Some("P1".into()),
            state: "resolved".into(),
            major: true,
            summary: Some("Sample incident".into()),
            service: Some("Sample service".into()),
            opened: Some("2026-01-05T09:00:00Z".into()),
            resolved: Some("2026-01-05T10:15:00Z".into()),
            resolution: Some(duration_text(75)),
            on_hold: Some(duration_text(10)),
        }]),
        csv_filename: "incidents-sample-2026-01.csv".into(),
    };
    let empty = ReportView {
        recipient_name: None,
        extended_delivery: false,
        extended_support: false,
        services: Vec::new(),
        all_met: true,
        credits: Vec::new(),
        sla: Vec::new(),
        response_percent: None,
        resolution_percent: None,
        breaches: Vec::new(),
        incidents: IncidentTotals {
            opened: 0,
            resolved: 0,
            mttr: None,
        },
        changes: ChangesView {
            executed_count: 0,
            successful: 0,
            successful_issues: 0,
            unsuccessful: 0,
            unknown: 0,
            emergency: 0,
            executed: Vec::new(),
            upcoming: Vec::new(),
        },
        sip: SipView {
            opened: Vec::new(),
            completed: Vec::new(),
            overdue: Vec::new(),
            open_at_end: 0,
        },
        integrity: Vec::new(),
        trending: None,
        incident_list: None,
        ..full.clone()
    };
    vec![full, empty]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_whole_minutes() {
        assert_eq!(duration_text(0), "0 min");
        assert_eq!(duration_text(45), "45 min");
        assert_eq!(duration_text(125), "2 h 05 min");
        assert_eq!(duration_text(1440 + 250), "1 d 4 h 10 min");
    }
}

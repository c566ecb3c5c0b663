//! Change tracking: change requests as CSMs ask about them. Each is shown
//! with its history (every state transition and reschedule csmd received,
//! with the ITSM's times), the CIs it touches and the customers they reach,
//! and what it came to: still open, overdue, executed (when and how), or
//! failed. The queries behind `/api/v1/changes` and `csmd changes`: read
//! only, over the store, at a given `now`.

use std::str::FromStr;

use chrono::{DateTime, Months, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::impact::{AffectedCustomer, Impact};
use crate::config::Customer;
use crate::model::itsm::{
    Change, ChangeState, ChangeTransition, ItsmRecord, close_outcome, normalised_close_code,
};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no customer {0:?}")]
    UnknownCustomer(String),
}

/// What the queries need besides the store.
pub struct Context<'a> {
    pub customers: &'a [Customer],
    /// The daemon's time zone, in which months begin and end.
    pub time_zone: Tz,
    pub now: DateTime<Utc>,
}

/// One change request with everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeView {
    /// The record as the ITSM last sent it (`id` is its sys_id).
    #[serde(flatten)]
    pub change: Change,
    /// Not yet implemented, cancelled or closed.
    pub open: bool,
    /// Still open after its planned end.
    pub overdue: bool,
    /// Closed unsuccessful or backed out, or cancelled once under way.
    pub failed: bool,
    /// When the work was done, if it was.
    pub executed: Option<Executed>,
    /// The CIs it touches: its main CI and its task_ci rows.
    pub cis: Vec<CiRef>,
    /// The customers using any of them, with what they use.
    pub customers: Vec<AffectedCustomer>,
    /// Oldest first.
    pub history: Vec<ChangeTransition>,
}

/// The window a change was carried out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Executed {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `actual` when the ITSM recorded the work window, `planned` when the
    /// change was closed without one and its planned window stands in.
    pub window: WindowSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowSource {
    Actual,
    Planned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CiRef {
    pub id: String,
    /// From the CMDB, when it was read.
    pub name: Option<String>,
}

/// Which changes a list shows; every filter given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeQuery {
    /// Only changes reaching this customer (csmd's customer id).
    pub customer: Option<String>,
    pub status: Option<StatusFilter>,
    /// Only changes executed in this month.
    pub month: Option<Month>,
    pub view: Option<View>,
    /// Only overdue changes (`true`) or only the others (`false`).
    pub overdue: Option<bool>,
}

/// The views CSMs ask for, each with its own order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// Open and starting in the future, soonest first.
    Upcoming,
    /// Carried out, in the order they ended.
    Executed,
    /// Closed unsuccessful or backed out, or cancelled once under way.
    Failed,
    /// Still open after their planned end, the longest overdue first.
    Overdue,
}

impl View {
    /// Whether `change` belongs in this view at `now`.
    fn includes(self, change: &ChangeView, now: DateTime<Utc>) -> bool {
        match self {
            View::Upcoming => {
                change.open && change.change.planned_start.is_some_and(|start| start > now)
            }
            View::Executed => change.executed.is_some(),
            View::Failed => change.failed,
            View::Overdue => change.overdue,
        }
    }

    /// The time this view orders changes by (then by number); none orders
    /// by number alone.
    fn order_time(self, change: &ChangeView) -> Option<DateTime<Utc>> {
        match self {
            View::Upcoming => change.change.planned_start,
            View::Overdue => change.change.planned_end,
            View::Executed => change.executed.map(|e| e.end),
            View::Failed => None,
        }
    }
}

/// `status=`: a group of states or one state by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// New, assess, authorize, scheduled or implement.
    Open,
    /// Implemented: review or closed (not cancelled).
    Closed,
    Canceled,
    State(ChangeState),
}

impl FromStr for StatusFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "open" => StatusFilter::Open,
            "closed" => StatusFilter::Closed,
            "canceled" | "cancelled" => StatusFilter::Canceled,
            "new" => StatusFilter::State(ChangeState::New),
            "assess" => StatusFilter::State(ChangeState::Assess),
            "authorize" => StatusFilter::State(ChangeState::Authorize),
            "scheduled" => StatusFilter::State(ChangeState::Scheduled),
            "implement" => StatusFilter::State(ChangeState::Implement),
            "review" => StatusFilter::State(ChangeState::Review),
            _ => {
                return Err(format!(
                    "unknown status {s:?}: use open, closed (review or closed), canceled, \
                     or a state: new, assess, authorize, scheduled, implement, review"
                ));
            }
        })
    }
}

impl StatusFilter {
    fn matches(self, state: ChangeState) -> bool {
        match self {
            StatusFilter::Open => state.is_open(),
            StatusFilter::Closed => matches!(state, ChangeState::Review | ChangeState::Closed),
            StatusFilter::Canceled => state == ChangeState::Canceled,
            StatusFilter::State(wanted) => state == wanted,
        }
    }
}

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    first_day: NaiveDate,
}

impl FromStr for Month {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("month {s:?} is not YYYY-MM, like 2026-11");
        let (year, month) = s.split_once('-').ok_or_else(bad)?;
        let digits =
            |part: &str, len| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        let first_day = NaiveDate::from_ymd_opt(year, month, 1).ok_or_else(bad)?;
        Ok(Month { first_day })
    }
}

impl Month {
    /// The month's first instant and the next month's, in `tz`.
    pub fn bounds(&self, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let next = self
            .first_day
            .checked_add_months(Months::new(1))
            .unwrap_or(NaiveDate::MAX);
        let midnight = |day: NaiveDate| {
            let local = day.and_hms_opt(0, 0, 0).unwrap_or_default();
            // A zone whose clocks skip midnight starts the day at the
            // first instant after it; a repeated midnight at the first.
            tz.from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    tz.from_local_datetime(&(local + chrono::Duration::hours(1)))
                        .earliest()
                })
                .map_or_else(|| local.and_utc(), |t| t.with_timezone(&Utc))
        };
        (midnight(self.first_day), midnight(next))
    }
}

/// The changes `query` selects, in the order of its view (upcoming by
/// planned start, overdue by planned end, executed — or a month — by the
/// end of the work, everything else by number).
pub fn list(
    store: &Store,
    context: &Context<'_>,
    query: &ChangeQuery,
) -> Result<Vec<ChangeView>, ChangesError> {
    if let Some(customer) = &query.customer
        && !context
            .customers
            .iter()
            .any(|c| c.id.as_str() == customer.as_str())
    {
        return Err(ChangesError::UnknownCustomer(customer.clone()));
    }
    let month = query.month.map(|m| m.bounds(context.time_zone));
    let impact = Impact::load(store, context.customers)?;
    let mut views = Vec::new();
    for record in store.itsm_records("changes")? {
        let ItsmRecord::Change(change) = record else {
            continue;
        };
        if query.status.is_some_and(|s| !s.matches(change.state)) {
            continue;
        }
        let view = view(store, context, &impact, change)?;
        let selected = query
            .customer
            .as_ref()
            .is_none_or(|id| view.customers.iter().any(|c| c.id.as_str() == id))
            && month.is_none_or(|(from, to)| {
                view.executed.is_some_and(|e| from <= e.end && e.end < to)
            })
            && query.overdue.is_none_or(|o| view.overdue == o)
            && query.view.is_none_or(|v| v.includes(&view, context.now));
        if selected {
            views.push(view);
        }
    }
    // A month on its own lists what was executed in it.
    let order = query.view.or(query.month.map(|_| View::Executed));
    let time = |view: &ChangeView| order.and_then(|o| o.order_time(view));
    views.sort_by(|a, b| (time(a), &a.change.number).cmp(&(time(b), &b.change.number)));
    Ok(views)
}

/// One change by number (`CHG0030001`) or sys_id.
pub fn show(
    store: &Store,
    context: &Context<'_>,
    key: &str,
) -> Result<Option<ChangeView>, ChangesError> {
    let change = match store.itsm_record("changes", key)? {
        Some(ItsmRecord::Change(change)) => Some(change),
        _ => store
            .itsm_records("changes")?
            .into_iter()
            .find_map(|record| match record {
                ItsmRecord::Change(change) if change.number.eq_ignore_ascii_case(key) => {
                    Some(change)
                }
                _ => None,
            }),
    };
    let Some(change) = change else {
        return Ok(None);
    };
    let impact = Impact::load(store, context.customers)?;
    Ok(Some(view(store, context, &impact, change)?))
}

fn view(
    store: &Store,
    context: &Context<'_>,
    impact: &Impact,
    change: Change,
) -> Result<ChangeView, StoreError> {
    let history = store.change_history(&change.id)?;
    let cis = impact
        .change_cis(&change)
        .into_iter()
        .map(|id| CiRef {
            name: impact.ci_name(&id).map(str::to_owned),
            id,
        })
        .collect();
    let open = change.state.is_open();
    Ok(ChangeView {
        open,
        overdue: open && change.planned_end.is_some_and(|e| e < context.now),
        failed: failed(&change, &history),
        executed: executed(&change),
        cis,
        customers: impact.affected_customers(&change, context.customers),
        history,
        change,
    })
}

/// Closed unsuccessful, backed out (a close code such as `backed_out` or
/// `backout`), or cancelled after it reached Implement: by its history, or
/// by a recorded work start when the polls missed the Implement state.
fn failed(change: &Change, history: &[ChangeTransition]) -> bool {
    let code = normalised_close_code(change.close_code.as_deref());
    let backed_out = code.contains("backed") || code.contains("backout");
    let cancelled_under_way = change.state == ChangeState::Canceled
        && (change.work_start.is_some()
            || history
                .iter()
                .any(|t| t.to == ChangeState::Implement || t.from == Some(ChangeState::Implement)));
    close_outcome(change.close_code.as_deref()) == "unsuccessful"
        || backed_out
        || cancelled_under_way
}

/// The work window when the ITSM recorded its end; else, for a change in
/// review or closed, its planned window.
fn executed(change: &Change) -> Option<Executed> {
    if let Some(end) = change.work_end {
        return Some(Executed {
            start: change.work_start.unwrap_or(end),
            end,
            window: WindowSource::Actual,
        });
    }
    match (change.state, change.planned_start, change.planned_end) {
        (ChangeState::Review | ChangeState::Closed, Some(start), Some(end)) => Some(Executed {
            start,
            end,
            window: WindowSource::Planned,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::itsm::ChangeCi;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const NOW: &str = "2026-11-22T12:00:00Z";

    fn change(number: &str, state: ChangeState, ci: &str) -> Change {
        Change {
            id: format!("sys-{number}"),
            number: number.into(),
            state,
            change_type: Some("normal".into()),
            short_description: Some(format!("Work {number}")),
            planned_start: None,
            planned_end: None,
            work_start: None,
            work_end: None,
            close_code: None,
            ci: Some(ci.into()),
            billable: false,
            customer_requested: false,
            closed_at: None,
            updated_at: t("2026-11-01T00:00:00Z"),
        }
    }

    fn planned(mut c: Change, start: &str, end: &str) -> Change {
        c.planned_start = Some(t(start));
        c.planned_end = Some(t(end));
        c
    }

    fn customers() -> Vec<Customer> {
        ["acme:ci-a", "globex:ci-b"]
            .iter()
            .map(|spec| {
                let (id, ci) = spec.split_once(':').unwrap();
                toml::from_str(&format!(
                    "id = \"{id}\"\nname = \"{id} Inc\"\n[[install_base]]\nci = \"{ci}\"\nservice = \"svc-{ci}\"\n"
                ))
                .unwrap()
            })
            .collect()
    }

    fn store_with(changes: &[Change]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let records: Vec<ItsmRecord> = changes.iter().cloned().map(ItsmRecord::Change).collect();
        store.apply_itsm(&records).unwrap();
        (dir, store)
    }

    fn numbers(store: &Store, query: ChangeQuery) -> Vec<String> {
        let customers = customers();
        let context = Context {
            customers: &customers,
            time_zone: chrono_tz::Europe::Paris,
            now: t(NOW),
        };
        list(store, &context, &query)
            .unwrap()
            .into_iter()
            .map(|v| v.change.number)
            .collect()
    }

    #[test]
    fn views_select_and_order_what_csms_ask_for() {
        let mut closed_ok = planned(
            change("CHG3", ChangeState::Closed, "ci-a"),
            "2026-10-05T20:00:00Z",
            "2026-10-05T22:00:00Z",
        );
        closed_ok.close_code = Some("successful".into());
        let mut unsuccessful = change("CHG4", ChangeState::Closed, "ci-b");
        unsuccessful.close_code = Some("unsuccessful".into());
        unsuccessful.work_start = Some(t("2026-10-02T20:00:00Z"));
        unsuccessful.work_end = Some(t("2026-10-02T21:00:00Z"));
        let mut backed_out = change("CHG5", ChangeState::Review, "ci-a");
        backed_out.close_code = Some("Backed_Out".into());
        let mut cancelled_under_way = change("CHG6", ChangeState::Canceled, "ci-a");
        cancelled_under_way.work_start = Some(t("2026-11-20T20:00:00Z"));
        let cancelled_early = change("CHG7", ChangeState::Canceled, "ci-a");
        let changes = [
            planned(
                change("CHG1", ChangeState::Scheduled, "ci-a"),
                "2026-11-25T20:00:00Z",
                "2026-11-25T22:00:00Z",
            ),
            planned(
                change("CHG2", ChangeState::New, "ci-b"),
                "2026-11-24T20:00:00Z",
                "2026-11-24T22:00:00Z",
            ),
            closed_ok,
            unsuccessful,
            backed_out,
            cancelled_under_way,
            cancelled_early,
            planned(
                change("CHG8", ChangeState::Implement, "ci-b"),
                "2026-11-21T20:00:00Z",
                "2026-11-21T22:00:00Z",
            ),
        ];
        let (_dir, store) = store_with(&changes);
        let query = |view, customer: Option<&str>| ChangeQuery {
            view: Some(view),
            customer: customer.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            numbers(&store, query(View::Upcoming, None)),
            ["CHG2", "CHG1"]
        );
        assert_eq!(
            numbers(&store, query(View::Upcoming, Some("acme"))),
            ["CHG1"]
        );
        assert_eq!(
            numbers(&store, query(View::Failed, None)),
            ["CHG4", "CHG5", "CHG6"]
        );
        assert_eq!(numbers(&store, query(View::Overdue, None)), ["CHG8"]);
        assert_eq!(
            numbers(&store, query(View::Executed, None)),
            ["CHG4", "CHG3"],
            "by the end of the work"
        );
        let status = |s: &str| ChangeQuery {
            status: Some(s.parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(numbers(&store, status("open")), ["CHG1", "CHG2", "CHG8"]);
        assert_eq!(numbers(&store, status("closed")), ["CHG3", "CHG4", "CHG5"]);
        assert_eq!(numbers(&store, status("cancelled")), ["CHG6", "CHG7"]);
        assert_eq!(numbers(&store, status("review")), ["CHG5"]);
        let overdue = ChangeQuery {
            overdue: Some(true),
            customer: Some("globex".into()),
            ..Default::default()
        };
        assert_eq!(numbers(&store, overdue), ["CHG8"]);

        let customers = customers();
        let context = Context {
            customers: &customers,
            time_zone: chrono_tz::UTC,
            now: t(NOW),
        };
        let unknown = ChangeQuery {
            customer: Some("nobody".into()),
            ..Default::default()
        };
        assert!(matches!(
            list(&store, &context, &unknown),
            Err(ChangesError::UnknownCustomer(c)) if c == "nobody"
        ));
    }

    #[test]
    fn a_month_is_the_daemons_and_a_change_counts_where_its_work_ended() {
        // Ends 23:30 UTC on 31 October: 00:30 on 1 November in Paris.
        let mut late = change("CHG1", ChangeState::Closed, "ci-a");
        late.work_start = Some(t("2026-10-31T22:00:00Z"));
        late.work_end = Some(t("2026-10-31T23:30:00Z"));
        // No work window: the planned one stands in, once closed.
        let by_plan = planned(
            change("CHG2", ChangeState::Closed, "ci-a"),
            "2026-11-03T10:00:00Z",
            "2026-11-03T11:00:00Z",
        );
        let not_done = planned(
            change("CHG3", ChangeState::Scheduled, "ci-a"),
            "2026-11-03T10:00:00Z",
            "2026-11-03T11:00:00Z",
        );
        let (_dir, store) = store_with(&[late, by_plan, not_done]);
        let customers = customers();
        let in_month = |tz, month: &str| {
            let context = Context {
                customers: &customers,
                time_zone: tz,
                now: t(NOW),
            };
            let query = ChangeQuery {
                month: Some(month.parse().unwrap()),
                ..Default::default()
            };
            list(&store, &context, &query)
                .unwrap()
                .into_iter()
                .map(|v| (v.change.number, v.executed.unwrap().window))
                .collect::<Vec<_>>()
        };
        let paris = chrono_tz::Europe::Paris;
        assert_eq!(
            in_month(paris, "2026-11"),
            [
                ("CHG1".to_string(), WindowSource::Actual),
                ("CHG2".to_string(), WindowSource::Planned)
            ]
        );
        assert_eq!(in_month(chrono_tz::UTC, "2026-10").len(), 1);
        assert!(in_month(paris, "2026-10").is_empty());
        assert_eq!(
            Month::from_str("2026-12").unwrap().bounds(paris),
            (t("2026-11-30T23:00:00Z"), t("2026-12-31T23:00:00Z"))
        );
        for bad in [
            "2026-13", "2026-1", "26-11", "2026/11", "november", "+026-11",
        ] {
            assert!(Month::from_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_change_shows_its_cis_customers_and_history_found_by_number_or_id() {
        let mut first = planned(
            change("CHG0030001", ChangeState::New, "ci-b"),
            "2026-11-25T20:00:00Z",
            "2026-11-25T22:00:00Z",
        );
        first.billable = true;
        let mut second = first.clone();
        second.state = ChangeState::Canceled;
        second.updated_at = t("2026-11-02T00:00:00Z");
        let (_dir, store) = store_with(&[first]);
        let row = ChangeCi {
            id: "task-ci-1".into(),
            change: second.id.clone(),
            ci: "ci-a".into(),
            updated_at: t("2026-11-01T00:00:00Z"),
        };
        store
            .apply_itsm(&[ItsmRecord::ChangeCi(row), ItsmRecord::Change(second)])
            .unwrap();
        let customers = customers();
        let context = Context {
            customers: &customers,
            time_zone: chrono_tz::UTC,
            now: t(NOW),
        };
        let by_number = show(&store, &context, "chg0030001").unwrap().unwrap();
        let by_id = show(&store, &context, "sys-CHG0030001").unwrap().unwrap();
        assert_eq!(by_number, by_id);
        let ids: Vec<_> = by_number.cis.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["ci-a", "ci-b"]);
        let reached: Vec<_> = by_number
            .customers
            .iter()
            .map(|c| (c.id.as_str(), c.services.iter().next().unwrap().as_str()))
            .collect();
        assert_eq!(reached, [("acme", "svc-ci-a"), ("globex", "svc-ci-b")]);
        let steps: Vec<_> = by_number.history.iter().map(|h| (h.from, h.to)).collect();
        assert_eq!(
            steps,
            [
                (None, ChangeState::New),
                (Some(ChangeState::New), ChangeState::Canceled)
            ]
        );
        assert!(by_number.change.billable && !by_number.open && !by_number.failed);
        assert!(show(&store, &context, "CHG0000000").unwrap().is_none());

        let json = serde_json::to_value(&by_number).unwrap();
        assert_eq!(json["number"], "CHG0030001");
        assert_eq!(json["state"], "canceled");
        assert_eq!(json["history"][1]["from"], "new");
    }
}

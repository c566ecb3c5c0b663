//! When reports go out: `[schedules] monthly_report` (default 07:00 on the
//! 1st) in each customer's time zone; the occurrence queues the customer's
//! report of the month before it.
//!
//! Exactly once per customer and month: the report's state (`report/<id>/
//! <YYYY-MM>` in the outbox tree) is written in the same batch as its
//! messages, and a month with a state is never queued by the schedule
//! again, whatever the clock does; the messages' keys are per customer,
//! month and recipient, so even a lost state cannot send one twice. An
//! occurrence missed while csmd was down is caught up at start when it is
//! at most [`CATCH_UP`] old; older ones are left to `csmd report send`.
//! A clock set back never sends a month older than the latest one the
//! customer already has a report of.
//! The wall clock is read again at least every minute.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio_util::sync::CancellationToken;

use super::compute::CustomerData;
use super::period::Month;
use super::{ReportError, Reporter, STATE_PREFIX, state_name};
use crate::config::Customer;
use crate::engine::schedule::{latest, next};
use crate::model::outbox::OutboxMessage;
use crate::store::Store;
use crate::store::outbox::StateChange;

/// A report missed while csmd was down is still sent when csmd starts
/// this soon after its occurrence.
pub const CATCH_UP: chrono::Duration = chrono::Duration::days(7);

/// The longest sleep between two looks at the wall clock.
const RECHECK: Duration = Duration::from_secs(60);

/// Customers whose reports are made, then queued, together: one store
/// batch and flush per group.
pub const GROUP: usize = 32;

/// One report the schedule owes.
#[derive(Debug, Clone)]
pub struct Due<'a> {
    pub customer: &'a Customer,
    pub month: Month,
    pub occurrence: DateTime<Utc>,
}

impl Reporter<'_> {
    /// The reports the schedule owes at `now`: per customer, the latest
    /// occurrence in its zone, at most [`CATCH_UP`] old, whose month has
    /// no report yet. Customers without a `reports` contact owe nothing.
    pub fn due(
        &self,
        store: &Store,
        cron: &cron::Schedule,
        now: DateTime<Utc>,
    ) -> Result<Vec<Due<'_>>, ReportError> {
        let done: BTreeSet<String> = store
            .outbox_states(STATE_PREFIX)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        // The latest month each customer has a report of: a clock set back
        // must not send an older month that was never due then.
        let mut latest_done: HashMap<&str, Month> = HashMap::new();
        for name in &done {
            let Some((customer, month)) = name
                .strip_prefix(STATE_PREFIX)
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                continue;
            };
            if let Ok(month) = month.parse::<Month>() {
                let entry = latest_done.entry(customer).or_insert(month);
                *entry = (*entry).max(month);
            }
        }
        let mut latest_in: HashMap<Tz, Option<DateTime<Utc>>> = HashMap::new();
        let mut due = Vec::new();
        for customer in self.customers {
            let tz = self.time_zone(customer);
            let occurrence = *latest_in.entry(tz).or_insert_with(|| latest(cron, tz, now));
            let Some(occurrence) = occurrence.filter(|at| now - *at <= CATCH_UP) else {
                continue;
            };
            let month = Month::containing(occurrence, tz).previous();
            let later_done = latest_done
                .get(customer.id.as_str())
                .is_some_and(|latest| *latest >= month);
            if later_done
                || done.contains(&state_name(&customer.id, month))
                || self.recipients(customer).is_empty()
            {
                continue;
            }
            due.push(Due {
                customer,
                month,
                occurrence,
            });
        }
        Ok(due)
    }

    /// The next occurrence of the schedule in any customer's zone.
    pub fn next_occurrence(
        &self,
        cron: &cron::Schedule,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let zones: BTreeSet<&str> = self
            .customers
            .iter()
            .map(|c| self.time_zone(c).name())
            .collect();
        zones
            .into_iter()
            .filter_map(|name| name.parse::<Tz>().ok())
            .filter_map(|tz| next(cron, tz, now))
            .min()
    }

    /// Queues every report due at `now` (see [`Reporter::due`]): the
    /// store is read once for all of them, reports are made on every core,
    /// and queued [`GROUP`] customers per batch. `queued` is told how many
    /// messages each batch queued. Returns how many were queued.
    pub fn run_schedule(
        &self,
        store: &Store,
        cron: &cron::Schedule,
        now: DateTime<Utc>,
        queued: &dyn Fn(usize),
    ) -> Result<usize, ReportError> {
        let due = self.due(store, cron, now)?;
        if due.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<(&Customer, Month)> = due.iter().map(|d| (d.customer, d.month)).collect();
        let data = self.gather(store, &wanted)?;
        let mut total = 0;
        for group in due.chunks(GROUP) {
            let made = self.build(group, &data, now);
            let mut states = Vec::new();
            let mut messages = Vec::new();
            for (d, made) in group.iter().zip(made) {
                match made {
                    Ok((state, m)) => {
                        tracing::info!(
                            customer = %d.customer.id,
                            month = %d.month,
                            occurrence = %d.occurrence,
                            recipients = m.len(),
                            "Monthly report queued"
                        );
                        states.push(state);
                        messages.extend(m);
                    }
                    // One customer's broken report does not hold up the
                    // others; it is tried again at the next check.
                    Err(e) => tracing::error!(
                        customer = %d.customer.id,
                        month = %d.month,
                        error = %e,
                        "Monthly report failed; retrying at the next check"
                    ),
                }
            }
            if states.is_empty() {
                continue;
            }
            let n = store.queue_messages(states, messages)?.len();
            queued(n);
            total += n;
        }
        Ok(total)
    }

    /// The messages of each report due in `group` (and the state to record
    /// with them), made on every core; in the group's order.
    pub fn build(
        &self,
        group: &[Due<'_>],
        data: &HashMap<crate::model::CustomerId, CustomerData>,
        now: DateTime<Utc>,
    ) -> Vec<Result<(StateChange, Vec<OutboxMessage>), ReportError>> {
        let empty = CustomerData::default();
        self.in_parallel(group, |d| {
            let data = data.get(&d.customer.id).unwrap_or(&empty);
            let report = self.report(d.customer, d.month, data, now, true)?;
            self.messages(d.customer, &report, 0, now)
        })
    }

    /// `work` on every item, spread over the machine's cores; results in
    /// the items' order.
    fn in_parallel<T: Sync, R: Send>(&self, items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(items.len())
            .max(1);
        if threads == 1 {
            return items.iter().map(&work).collect();
        }
        let per = items.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .chunks(per)
                .map(|chunk| {
                    let work = &work;
                    scope.spawn(move || chunk.iter().map(work).collect::<Vec<R>>())
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    }
}

/// Runs the monthly report schedule until shutdown: at every occurrence
/// in some customer's zone, and at least every minute.
pub async fn run(state: Arc<crate::http::AppState>, shutdown: CancellationToken) {
    loop {
        let now = Utc::now();
        let work = state.clone();
        let result = tokio::task::spawn_blocking(move || {
            let config = work.config.load_full();
            let reporter = Reporter::of(&config, &work.templates, &work.from);
            let cron = &config.schedules.monthly_report.schedule;
            let queued = reporter.run_schedule(&work.store, cron, now, &|n| {
                if n > 0 {
                    work.messages_queued(n);
                }
            });
            (queued, reporter.next_occurrence(cron, now))
        })
        .await;
        let next = match result {
            Ok((Ok(queued), next)) => {
                if queued > 0 {
                    tracing::info!(job = "monthly_report", queued, "Scheduled job ran");
                }
                next
            }
            Ok((Err(e), next)) => {
                tracing::error!(job = "monthly_report", error = %e, "Scheduled job failed; retrying at the next check");
                next
            }
            Err(e) => {
                tracing::error!(job = "monthly_report", error = %e, "Scheduled job failed; retrying at the next check");
                None
            }
        };
        let wait = next
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .map_or(RECHECK, |d| d.min(RECHECK));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

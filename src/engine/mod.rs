//! The processors: they follow the journal and turn events into state.
//! [`run`] is the whole pipeline in one place: each journal entry is
//! applied by the processor of its kind, in journal order.
//!
//! The engine's position is stored after the state it covers, and every
//! processor is idempotent, so a crash in between replays a few entries
//! harmlessly.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono_tz::Tz;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::alert::AlertState;
use crate::model::{Event, JournalEntry};
pub mod changes;
pub mod disruption;
pub mod impact;
pub mod integrity;
pub mod maintenance;
pub mod proactive;
pub mod schedule;
pub mod sip;

use crate::config::{Config, Customer, Sip};
use crate::model::itsm::RECORD_TREES;
use crate::store::{SipError, Store, StoreError};

/// What the processors read from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub customers: Vec<Customer>,
    pub sip: Sip,
    pub time_zone: Tz,
}

impl Settings {
    pub fn of(config: &Config) -> Settings {
        Settings {
            customers: config.customers.clone(),
            sip: config.sip.clone(),
            time_zone: config.daemon.time_zone.0,
        }
    }

    fn sip_sources(&self) -> sip::SipSources<'_> {
        sip::SipSources {
            customers: &self.customers,
            settings: &self.sip,
            default_time_zone: self.time_zone,
        }
    }
}

/// How the engine tells the processors that follow it what it applied.
pub struct Signals {
    /// After a catch-up that changed ITSM records.
    pub applied: watch::Sender<()>,
    /// Which kinds of ITSM record changed: one set per processor that
    /// follows them.
    pub changed: Vec<ChangedKinds>,
    /// After a catch-up in which alerts fired or resolved.
    pub alerted: watch::Sender<()>,
    /// The alerts that fired, resolved or were refreshed, for the
    /// disruption planner.
    pub alerts: AlertFeed,
}

/// Alerts whose state changed, in the order they were applied, from the
/// engine to a processor that keeps the firing alerts in memory between
/// runs. If the processor falls far behind, the feed stops holding alerts
/// and says so once: the processor then reads the store again.
#[derive(Debug, Clone, Default)]
pub struct AlertFeed(Arc<Mutex<Fed>>);

#[derive(Debug, Default)]
struct Fed {
    alerts: Vec<AlertState>,
    overflowed: bool,
}

impl AlertFeed {
    /// Alerts held at most before the feed gives up.
    const CAPACITY: usize = 100_000;

    pub fn push(&self, alerts: impl IntoIterator<Item = AlertState>) {
        let mut fed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if fed.overflowed {
            return;
        }
        fed.alerts.extend(alerts);
        if fed.alerts.len() > Self::CAPACITY {
            fed.alerts = Vec::new();
            fed.overflowed = true;
        }
    }

    /// The alerts fed since the last take, or `None` if some were dropped.
    pub fn take(&self) -> Option<Vec<AlertState>> {
        let mut fed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Fed { alerts, overflowed } = std::mem::take(&mut *fed);
        (!overflowed).then_some(alerts)
    }
}

/// The kinds of ITSM record changed since a processor last looked: one bit
/// per entry of [`RECORD_TREES`], set by the engine, taken by the
/// processors that only need to run when their inputs changed.
#[derive(Debug, Clone)]
pub struct ChangedKinds(Arc<AtomicU16>);

impl ChangedKinds {
    /// Every kind marked changed: the first look does all the work.
    pub fn all() -> ChangedKinds {
        ChangedKinds(Arc::new(AtomicU16::new(u16::MAX)))
    }

    pub fn mark(&self, kinds: u16) {
        self.0.fetch_or(kinds, Ordering::AcqRel);
    }

    /// The kinds changed since the last take.
    pub fn take(&self) -> Kinds {
        Kinds(self.0.swap(0, Ordering::AcqRel))
    }
}

/// A set of ITSM record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    /// Whether any of these trees (`"incidents"`, …) is in the set.
    pub fn any(self, trees: &[&str]) -> bool {
        RECORD_TREES
            .iter()
            .enumerate()
            .any(|(i, t)| self.0 & (1 << i) != 0 && trees.contains(t))
    }
}

/// Journal entries read and applied at a time, after which the engine's
/// position is stored; it bounds what a long catch-up holds in memory.
const BATCH: usize = 1000;

/// How often applied journal entries past their retention are removed.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// How often resolved alerts past their retention are removed: a scan of
/// every alert, so not each time the journal is trimmed.
const PURGE_ALERTS_EVERY: Duration = Duration::from_secs(3600);

/// Applies journal entries as they become durable, until shutdown. Entries
/// older than `retention` are removed once applied: the journal is a
/// buffer between sources and processors, not an archive. Resolved alerts
/// go after `[daemon] alert_retention`.
///
/// `applied` is signalled after each catch-up that changed an ITSM record,
/// so processors that read those records (maintenance notices) run then,
/// and not after batches of alerts or of records they already had.
/// `alerted` is signalled after each batch of entries in which alerts fired
/// or resolved, without waiting for the end of the catch-up.
///
/// `config` gives the current configuration; the processors' settings are
/// taken from it again only when it was reloaded.
pub async fn run(
    store: Store,
    mut durable: watch::Receiver<u64>,
    signals: Signals,
    retention: Duration,
    config: impl Fn() -> Arc<Config> + Send,
    shutdown: CancellationToken,
) {
    let Signals {
        applied,
        changed,
        alerted,
        alerts: feed,
    } = signals;
    let alerted = Arc::new(alerted);
    let mut last_trim = tokio::time::Instant::now();
    let mut last_purge: Option<tokio::time::Instant> = None;
    let mut current = config();
    let mut settings = Arc::new(Settings::of(&current));
    loop {
        if last_trim.elapsed() >= TRIM_EVERY {
            last_trim = tokio::time::Instant::now();
            trim(&store, retention).await;
            if last_purge.is_none_or(|at| at.elapsed() >= PURGE_ALERTS_EVERY) {
                last_purge = Some(last_trim);
                purge_alerts(&store, config().daemon.alert_retention).await;
            }
        }
        let latest = config();
        if !Arc::ptr_eq(&latest, &current) {
            settings = Arc::new(Settings::of(&latest));
            current = latest;
        }
        let telling = alerted.clone();
        let feeding = feed.clone();
        match catch_up_telling(&store, settings.clone(), move |alerts| {
            feeding.push(alerts);
            telling.send_replace(());
        })
        .await
        {
            Ok(caught_up) => {
                if caught_up.itsm_changed > 0 {
                    changed.iter().for_each(|c| c.mark(caught_up.kinds));
                    applied.send_replace(());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "Applying the journal failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = durable.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(TRIM_EVERY) => {}
        }
    }
}

async fn trim(store: &Store, retention: Duration) {
    let store = store.clone();
    let result = tokio::task::spawn_blocking(move || {
        let cutoff = cutoff(retention);
        let applied = store.engine_position();
        let mut total = 0;
        loop {
            let removed = store.trim_journal(applied, cutoff)?;
            total += removed;
            if removed < 10_000 {
                return Ok::<_, StoreError>(total);
            }
        }
    })
    .await;
    match result {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(
            removed,
            "Trimmed applied journal entries past their retention"
        ),
        Ok(Err(e)) => tracing::warn!(error = %e, "Trimming the journal failed"),
        Err(e) => tracing::warn!(error = %e, "Trimming the journal failed"),
    }
}

/// The instant `retention` ago; the beginning of time for a retention
/// longer than that (which keeps everything), not a panic.
fn cutoff(retention: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::TimeDelta::from_std(retention)
        .ok()
        .and_then(|retention| chrono::Utc::now().checked_sub_signed(retention))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
}

/// Removes the resolved alerts last delivered more than `retention` ago.
async fn purge_alerts(store: &Store, retention: Duration) {
    let store = store.clone();
    let result =
        tokio::task::spawn_blocking(move || store.purge_resolved_alerts(cutoff(retention))).await;
    match result {
        Ok(Ok(0)) => {}
        Ok(Ok(removed)) => tracing::info!(removed, "Removed resolved alerts past their retention"),
        Ok(Err(e)) => tracing::warn!(error = %e, "Removing resolved alerts failed"),
        Err(e) => tracing::warn!(error = %e, "Removing resolved alerts failed"),
    }
}

/// What a catch-up did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CaughtUp {
    /// Journal entries applied.
    pub entries: usize,
    /// ITSM records stored because they were new or newer.
    pub itsm_changed: usize,
    /// Their kinds ([`crate::model::itsm::ItsmRecord::kind_bit`]).
    pub kinds: u16,
    /// Alerts that fired or resolved.
    pub alerts_changed: usize,
}

/// Applies every durable entry after the stored position.
pub async fn catch_up(store: &Store, settings: Arc<Settings>) -> Result<CaughtUp, StoreError> {
    catch_up_telling(store, settings, |_| {}).await
}

/// [`catch_up`], giving `alerted` the alerts of each batch in which alerts
/// fired, resolved or were refreshed: under a steady stream of webhooks a
/// catch-up lasts as long as the stream, and disruption notices must not
/// wait for its end.
async fn catch_up_telling(
    store: &Store,
    settings: Arc<Settings>,
    alerted: impl Fn(Vec<AlertState>) + Send + 'static,
) -> Result<CaughtUp, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut total = CaughtUp::default();
        loop {
            let position = store.engine_position();
            let entries = store.journal_since(position, BATCH)?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                return Ok(total);
            };
            let (applied, alerts) = apply(&store, &settings, &entries)?;
            total.itsm_changed += applied.changed;
            total.kinds |= applied.kinds;
            total.alerts_changed += alerts.changes.len();
            store.set_engine_position(last)?;
            total.entries += entries.len();
            if !alerts.noticeable.is_empty() {
                alerted(alerts.noticeable);
            }
        }
    })
    .await
    .map_err(|e| StoreError::Transaction(format!("engine task failed: {e}")))?
}

/// The pipeline: every processor, in order, over one batch of entries;
/// returns what happened to the ITSM records and to the alerts.
fn apply(
    store: &Store,
    settings: &Settings,
    entries: &[Arc<JournalEntry>],
) -> Result<(crate::store::Applied, crate::store::alerts::AlertsApplied), StoreError> {
    let itsm = entries.iter().filter_map(|e| match &e.event {
        Event::Itsm(record) => Some(record),
        Event::Alert(_) | Event::Feedback(_) => None,
    });
    let applied = store.apply_itsm(itsm)?;
    if applied.changed > 0 {
        tracing::debug!(
            changed = applied.changed,
            unchanged = applied.unchanged,
            "Applied ITSM records"
        );
    }
    let alerts = entries.iter().filter_map(|e| match &e.event {
        Event::Alert(alert) => Some((&e.connector, e.received_at, alert)),
        Event::Itsm(_) | Event::Feedback(_) => None,
    });
    let alerts = store.apply_alerts(alerts)?;
    for (alert, change) in &alerts.changes {
        tracing::debug!(
            connector = %alert.connector,
            id = %alert.source_id,
            status = ?change,
            ci = alert.ci.as_deref().unwrap_or("-"),
            service = alert.service.as_deref().unwrap_or("-"),
            summary = %alert.summary,
            "Alert"
        );
    }
    let now = chrono::Utc::now();
    for entry in entries {
        if let Event::Feedback(feedback) = &entry.event {
            match settings
                .sip_sources()
                .feedback(store, &entry.connector, feedback, now)
            {
                Ok(_) => {}
                Err(SipError::Store(e)) => return Err(e),
                // A rule can refuse only what csmd itself got wrong: say
                // so and go on, rather than stall the journal behind it.
                Err(e) => {
                    tracing::error!(error = %e, seq = entry.seq, "Feedback made no SIP action")
                }
            }
        }
    }
    Ok((applied, alerts))
}

/// Why a notice planner (maintenance, disruption) could not plan.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] crate::notify::templates::TemplateError),
    #[error("cannot encode notice state: {0}")]
    State(#[from] serde_json::Error),
}

/// How often planners run even when no signal came: advance notices and
/// group windows fall due with the clock, not with an event.
pub const PLAN_EVERY: Duration = Duration::from_secs(60);

/// What one run of a planner did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Messages queued.
    pub queued: usize,
    /// When it must run again at the latest, because something falls due
    /// with the clock (a group window closing).
    pub due: Option<chrono::DateTime<chrono::Utc>>,
}

/// How long a planner rests after a run before a signal may start the
/// next one: `rest` times as long as the run took, and never past the
/// next run that falls due (at the latest [`PLAN_EVERY`]). A planner that reads a whole tree then takes at most
/// `1 / (rest + 1)` of a core however often its signal fires, as it does
/// batch after batch while a full ITSM sync or a stream of pushed records
/// is applied. 0 runs again as soon as signalled, for planners whose runs
/// are short and whose messages are urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rest(pub u32);

impl Rest {
    /// Until when a planner rests after a run of `took` that ended `at`,
    /// when its next run falls due `due` after that.
    fn until(
        self,
        at: tokio::time::Instant,
        took: Duration,
        due: Duration,
    ) -> tokio::time::Instant {
        at + took.saturating_mul(self.0).min(due)
    }
}

/// Runs `planner` (on a blocking thread) now, after each `signal` (once
/// it has rested, see [`Rest`]), when its last run said something falls
/// due, and at least every [`PLAN_EVERY`], until shutdown; `on_queued` is
/// told how many messages a run queued, when it queued some.
pub async fn run_planner<F, E>(
    what: &'static str,
    mut signal: watch::Receiver<()>,
    rest: Rest,
    planner: F,
    on_queued: impl Fn(usize),
    shutdown: CancellationToken,
) where
    F: Fn() -> Result<Planned, E> + Send + Sync + Clone + 'static,
    E: std::fmt::Display + Send + 'static,
{
    loop {
        let plan = planner.clone();
        let mut wait = PLAN_EVERY;
        let started = tokio::time::Instant::now();
        let outcome = tokio::task::spawn_blocking(plan).await;
        let ended = tokio::time::Instant::now();
        match outcome {
            Ok(Ok(planned)) => {
                if planned.queued > 0 {
                    tracing::debug!(planner = what, queued = planned.queued, "Messages queued");
                    on_queued(planned.queued);
                }
                if let Some(due) = planned.due {
                    let until = (due - chrono::Utc::now()).to_std().unwrap_or_default();
                    wait = wait.min(until);
                }
            }
            Ok(Err(e)) => tracing::error!(planner = what, error = %e, "Planning failed"),
            Err(e) => tracing::error!(planner = what, error = %e, "Planning failed"),
        }
        let rested = rest.until(ended, ended - started, wait);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = signal.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => continue,
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(rested) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::model::{AlertEvent, AlertStatus};
    use crate::store::journal::{Append, Journal};

    fn alert_event(id: &str, status: AlertStatus) -> AlertEvent {
        AlertEvent {
            source_id: id.into(),
            status,
            service: None,
            ci: None,
            customer: None,
            severity: None,
            summary: "x".into(),
            starts_at: None,
            ends_at: None,
        }
    }

    fn alert(id: &str) -> Event {
        Event::Alert(alert_event(id, AlertStatus::Firing))
    }

    #[tokio::test]
    async fn applied_entries_are_trimmed_but_sequence_numbers_never_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (journal, committer) =
            Journal::start(&store, Arc::new(Metrics::new()), Duration::from_secs(60)).unwrap();
        let connector: crate::model::ConnectorName = "mon".parse().unwrap();
        for i in 0..5 {
            let append = Append {
                connector: connector.clone(),
                delivery_id: None,
                events: vec![alert(&i.to_string())],
                cursor: None,
            };
            journal.append(append).await.unwrap();
        }
        assert_eq!(
            catch_up(&store, Default::default()).await.unwrap().entries,
            5
        );
        assert_eq!(store.engine_position(), 5);

        // Everything is applied and past a zero retention: all but the newest go.
        let removed = store
            .trim_journal(5, chrono::Utc::now() + chrono::Duration::seconds(1))
            .unwrap();
        assert_eq!(removed, 4);
        assert_eq!(store.journal_len().unwrap(), 1);
        drop(journal);
        committer.join().unwrap();

        // After a restart the next event gets seq 6, not 1, and is applied.
        let (journal, committer) =
            Journal::start(&store, Arc::new(Metrics::new()), Duration::from_secs(60)).unwrap();
        let append = Append {
            connector,
            delivery_id: None,
            events: vec![alert("6")],
            cursor: None,
        };
        let outcome = journal.append(append).await.unwrap();
        assert_eq!(
            outcome,
            crate::store::journal::Appended::Stored {
                first_seq: 6,
                count: 1
            }
        );
        assert_eq!(
            catch_up(&store, Default::default()).await.unwrap().entries,
            1
        );
        drop(journal);
        committer.join().unwrap();
    }

    #[tokio::test]
    async fn a_planner_signalled_again_rests_in_proportion_to_its_last_run() {
        const RUN: Duration = Duration::from_millis(40);
        let (runs, mut ran) = tokio::sync::mpsc::unbounded_channel();
        let (signal, signalled) = watch::channel(());
        let shutdown = CancellationToken::new();
        let planner = tokio::spawn(run_planner(
            "test",
            signalled,
            Rest(4),
            move || {
                let started = std::time::Instant::now();
                // What reading a large tree would take.
                std::thread::sleep(RUN);
                let _ = runs.send((started, std::time::Instant::now()));
                Ok::<_, std::convert::Infallible>(Planned::default())
            },
            |_| {},
            shutdown.clone(),
        ));
        let (_, first_ended) = ran.recv().await.expect("the first run");
        signal.send_replace(());
        let (second_started, _) = ran.recv().await.expect("a run after the signal");
        let rested = second_started - first_ended;
        assert!(rested >= RUN * 4, "rested only {rested:?}");
        shutdown.cancel();
        planner.await.expect("the planner stops");
    }

    #[test]
    fn a_planners_rest_is_never_longer_than_its_longest_wait() {
        let now = tokio::time::Instant::now();
        assert_eq!(Rest(0).until(now, Duration::from_secs(5), PLAN_EVERY), now);
        assert_eq!(
            Rest(9).until(now, Duration::from_millis(100), PLAN_EVERY),
            now + Duration::from_millis(900)
        );
        assert_eq!(
            Rest(u32::MAX).until(now, Duration::MAX, PLAN_EVERY),
            now + PLAN_EVERY
        );
    }

    #[test]
    fn a_retention_longer_than_time_itself_keeps_everything() {
        let day = Duration::from_secs(86_400);
        let ago = chrono::Utc::now() - cutoff(day);
        assert!((ago - chrono::TimeDelta::days(1)).abs() < chrono::TimeDelta::seconds(5));
        assert_eq!(
            cutoff(Duration::MAX),
            chrono::DateTime::<chrono::Utc>::MIN_UTC
        );
    }

    /// The engine removes the resolved alerts older than `[daemon]
    /// alert_retention` at its first housekeeping, a minute after it
    /// starts, and keeps the others.
    #[tokio::test(start_paused = true)]
    async fn the_engine_removes_resolved_alerts_past_their_retention() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("customers")).unwrap();
        std::fs::write(
            dir.path().join("csmd.toml"),
            "[daemon]\ndata_dir = \"data\"\nalert_retention = \"2d\"\n\n\
             [email]\nfrom = \"CSM <csm@example.net>\"\n",
        )
        .unwrap();
        let config = Arc::new(crate::config::load(&dir.path().join("csmd.toml")).unwrap());
        let store = Store::open(&dir.path().join("data")).unwrap();
        let connector: crate::model::ConnectorName = "mon".parse().unwrap();
        let now = chrono::Utc::now();
        for (id, at) in [("old", now - chrono::TimeDelta::days(3)), ("new", now)] {
            for status in [AlertStatus::Firing, AlertStatus::Resolved] {
                store
                    .apply_alerts([(&connector, at, &alert_event(id, status))])
                    .unwrap();
            }
        }
        let (_durable_tx, durable) = watch::channel(0);
        let shutdown = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let engine = tokio::spawn(run(
            store.clone(),
            durable,
            Signals {
                applied: watch::channel(()).0,
                changed: Vec::new(),
                alerted: watch::channel(()).0,
                alerts: AlertFeed::default(),
            },
            Duration::from_secs(86_400),
            move || config.clone(),
            shutdown.clone(),
        ));
        let left = || {
            store
                .alerts(None, None)
                .unwrap()
                .into_iter()
                .map(|a| a.source_id)
                .collect::<Vec<_>>()
        };
        // Time is paused: sleeping advances it at once, except while the
        // purge runs on its blocking thread.
        while left().len() > 1 && started.elapsed() < 10 * TRIM_EVERY {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(left(), ["new"]);
        assert!(started.elapsed() >= TRIM_EVERY);
        shutdown.cancel();
        engine.await.unwrap();
    }
}

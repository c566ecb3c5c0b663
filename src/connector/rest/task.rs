//! The long-running task of one polled connector: it checks the stream
//! mappings against the instance, then syncs every stream on its interval,
//! or at once when asked (`csmd sync`), until shutdown. Failures are kept
//! in the connector's health; an authentication failure waits for the next
//! interval like any other, so a wrong password never becomes a hot loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::client::UpstreamError;
use super::poll::{Health, Poller, StreamReport, SyncError};
use crate::metrics::Metrics;

/// What one sync of a connector did, stream by stream.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    pub connector: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub streams: BTreeMap<String, StreamOutcome>,
    /// Streams not polled because they name columns the table lacks.
    pub field_errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StreamOutcome {
    Synced(StreamReport),
    Failed { error: String },
    Skipped { reason: String },
}

impl SyncReport {
    pub fn ok(&self) -> bool {
        self.field_errors.is_empty()
            && self
                .streams
                .values()
                .all(|s| matches!(s, StreamOutcome::Synced(_)))
    }
}

/// The handle the admin API holds on a polled connector.
#[derive(Clone)]
pub struct PollerHandle {
    trigger: mpsc::Sender<oneshot::Sender<SyncReport>>,
    health: Arc<RwLock<Health>>,
}

impl PollerHandle {
    /// The handle of a task that answers `trigger` with a report and keeps
    /// `health` up to date (a poller, a folder watcher).
    pub fn new(
        trigger: mpsc::Sender<oneshot::Sender<SyncReport>>,
        health: Arc<RwLock<Health>>,
    ) -> PollerHandle {
        PollerHandle { trigger, health }
    }

    /// Asks for a sync now and waits for its report.
    pub async fn sync_now(&self) -> Option<SyncReport> {
        let (reply, report) = oneshot::channel();
        self.trigger.send(reply).await.ok()?;
        report.await.ok()
    }

    pub fn health(&self) -> Health {
        self.health.read().map(|h| h.clone()).unwrap_or_default()
    }
}

/// Starts the connector's task; it ends when `shutdown` is cancelled.
pub fn spawn(
    poller: Poller,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> PollerHandle {
    let (trigger, mut requests) = mpsc::channel::<oneshot::Sender<SyncReport>>(16);
    let health = Arc::new(RwLock::new(Health::default()));
    let handle = PollerHandle {
        trigger,
        health: health.clone(),
    };
    tracker.spawn(async move {
        let mut task = Task {
            poller,
            health,
            metrics,
            verified: BTreeSet::new(),
        };
        let mut waiting: Vec<oneshot::Sender<SyncReport>> = Vec::new();
        loop {
            let sync = task.sync_all();
            let report = tokio::select! {
                _ = shutdown.cancelled() => break,
                report = sync => report,
            };
            for reply in waiting.drain(..) {
                let _ = reply.send(report.clone());
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                Some(reply) = requests.recv() => {
                    waiting.push(reply);
                    // Everyone who asked meanwhile shares the next sync.
                    while let Ok(reply) = requests.try_recv() {
                        waiting.push(reply);
                    }
                }
            }
        }
        tracing::debug!(connector = %task.poller.name, "Poller stopped");
    });
    handle
}

struct Task {
    poller: Poller,
    health: Arc<RwLock<Health>>,
    metrics: Arc<Metrics>,
    /// Streams whose columns were checked against a non-empty table.
    verified: BTreeSet<String>,
}

impl Task {
    #[tracing::instrument(skip_all, fields(connector = %self.poller.name))]
    async fn sync_all(&mut self) -> SyncReport {
        let started_at = Utc::now();
        let mut streams = BTreeMap::new();
        let mut field_errors = Vec::new();
        let mut auth_failed: Option<String> = None;
        let all = self.poller.streams.clone();
        for stream in &all {
            if let Some(error) = &auth_failed {
                streams.insert(
                    stream.name.clone(),
                    StreamOutcome::Skipped {
                        reason: error.clone(),
                    },
                );
                continue;
            }
            let outcome = match self.check_columns(stream).await {
                Err(e) => Err(e),
                Ok(Some(message)) => {
                    field_errors.push(message.clone());
                    streams.insert(
                        stream.name.clone(),
                        StreamOutcome::Skipped { reason: message },
                    );
                    continue;
                }
                Ok(None) => self.poller.sync_stream(stream).await,
            };
            match outcome {
                Ok(report) => {
                    self.metrics.connector_records(
                        self.poller.name.as_str(),
                        &stream.name,
                        report.records,
                        report.remaining,
                    );
                    if report.records > 0 {
                        tracing::info!(stream = %stream.name, records = report.records, pages = report.pages, "Synced");
                    }
                    streams.insert(stream.name.clone(), StreamOutcome::Synced(report));
                }
                Err(e) => {
                    tracing::error!(stream = %stream.name, error = %e, "Sync failed");
                    if let SyncError::Upstream(UpstreamError::Auth { .. }) = &e {
                        auth_failed = Some(format!("not tried: {e}"));
                    }
                    streams.insert(
                        stream.name.clone(),
                        StreamOutcome::Failed {
                            error: e.to_string(),
                        },
                    );
                }
            }
        }
        let report = SyncReport {
            connector: self.poller.name.to_string(),
            started_at,
            finished_at: Utc::now(),
            streams,
            field_errors,
        };
        self.record(&report);
        report
    }

    /// `Ok(Some(message))` when the stream names columns its table lacks.
    async fn check_columns(
        &mut self,
        stream: &super::profile::Stream,
    ) -> Result<Option<String>, SyncError> {
        if self.verified.contains(&stream.name) {
            return Ok(None);
        }
        match self.poller.unknown_columns(stream).await? {
            // An empty table: nothing to misread yet; check again next time.
            None => Ok(None),
            Some(unknown) if unknown.is_empty() => {
                self.verified.insert(stream.name.clone());
                Ok(None)
            }
            Some(unknown) => {
                let message = format!(
                    "stream `{}`: table {} has no field {}; fix [connector.streams.{}] (the instance ignores unknown fields in queries, so polling would read the wrong records)",
                    stream.name,
                    stream.table,
                    unknown.join(", "),
                    stream.name
                );
                tracing::error!(stream = %stream.name, unknown = %unknown.join(","), "Stream maps fields the instance does not have; not polling it");
                Ok(Some(message))
            }
        }
    }

    fn record(&self, report: &SyncReport) {
        let Ok(mut health) = self.health.write() else {
            return;
        };
        let errors: Vec<String> = report
            .streams
            .iter()
            .filter_map(|(name, s)| match s {
                StreamOutcome::Failed { error } => Some(format!("{name}: {error}")),
                _ => None,
            })
            .collect();
        for (name, outcome) in &report.streams {
            let entry = health.streams.entry(name.clone()).or_default();
            if let StreamOutcome::Synced(r) = outcome {
                entry.records_total += r.records;
                entry.skipped_total += r.skipped;
                entry.remaining = r.remaining;
                entry.last_sync = Some(report.finished_at);
                if let Some(stream) = self.poller.streams.iter().find(|s| &s.name == name) {
                    entry.cursor = self.poller.cursor(stream).ok().flatten();
                }
            }
        }
        health.field_errors = report.field_errors.clone();
        if errors.is_empty() {
            health.last_success = Some(report.finished_at);
            health.last_error = None;
            health.last_error_at = None;
        } else {
            health.last_error = Some(errors.join("; "));
            health.last_error_at = Some(report.finished_at);
        }
        self.metrics.connector_health(
            self.poller.name.as_str(),
            health.ok(),
            health.last_success,
            !errors.is_empty(),
        );
    }
}

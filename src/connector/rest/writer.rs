//! The write-back worker of one connector: it works through the queued
//! writes (create, then each update in order), storing progress after each
//! step, retrying transient failures with a growing delay and giving up
//! only on requests the ITSM refuses as invalid.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::client::{RestClient, UpstreamError};
use super::profile::Api;
use super::write::WriteBack;
use crate::model::ConnectorName;
use crate::model::itsm::{ItsmWrite, WriteStatus};
use crate::store::Store;

/// How often due writes are looked for even without a wake-up.
const TICK: Duration = Duration::from_secs(5);
const MAX_DELAY: Duration = Duration::from_secs(600);

/// Wakes the worker when a write is queued.
#[derive(Clone, Default)]
pub struct WriterHandle {
    wake: Arc<Notify>,
}

impl WriterHandle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

pub struct Writer {
    pub connector: ConnectorName,
    pub client: Arc<RestClient>,
    pub api: Api,
    pub store: Store,
}

pub fn spawn(
    writer: Writer,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> WriterHandle {
    let handle = WriterHandle::default();
    let wake = handle.wake.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = writer.work() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    });
    handle
}

impl Writer {
    async fn work(&self) {
        let due = match self.store.due_writes(&self.connector, Utc::now()) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(connector = %self.connector, error = %e, "Reading the write-back queue failed");
                return;
            }
        };
        for write in due {
            self.write(write).await;
        }
    }

    #[tracing::instrument(skip_all, fields(connector = %self.connector, key = %write.key))]
    async fn write(&self, mut write: ItsmWrite) {
        let upstream = WriteBack {
            client: &self.client,
            api: &self.api,
        };
        let result = async {
            let id = match &write.record_id {
                Some(id) => id.clone(),
                None => {
                    let id = upstream
                        .ensure_created(&write.table, &write.key, &write.fields)
                        .await?;
                    tracing::info!(table = %write.table, record = %id, "Created ITSM record");
                    write.record_id = Some(id.clone());
                    self.save(&write);
                    id
                }
            };
            while let Some(update) = write.updates.first().cloned() {
                upstream.update(&write.table, &id, &update).await?;
                write.updates.remove(0);
                self.save(&write);
            }
            Ok::<_, UpstreamError>(())
        }
        .await;
        write.updated_at = Utc::now();
        match result {
            Ok(()) => {
                write.status = WriteStatus::Done;
                write.last_error = None;
            }
            Err(e) => {
                write.attempts += 1;
                write.last_error = Some(e.to_string());
                if e.is_retryable() || matches!(e, UpstreamError::Auth { .. }) {
                    // Credentials get fixed; an outage ends: keep trying.
                    let delay = Duration::from_secs(2u64.saturating_pow(write.attempts.min(10)))
                        .min(MAX_DELAY);
                    write.next_attempt_at = Utc::now() + delay;
                    tracing::warn!(error = %e, attempts = write.attempts, retry_in = ?delay, "ITSM write failed; will retry");
                } else {
                    write.status = WriteStatus::Failed;
                    tracing::error!(error = %e, "ITSM refused the write; giving up");
                }
            }
        }
        self.save(&write);
    }

    fn save(&self, write: &ItsmWrite) {
        if let Err(e) = self.store.save_write(write) {
            tracing::error!(error = %e, "Storing write-back progress failed");
        }
    }
}

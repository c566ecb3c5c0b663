//! The processors: they follow the journal and turn events into state.
//! [`run`] is the whole pipeline in one place: each journal entry is
//! applied by the processor of its kind, in journal order.
//!
//! The engine's position is stored after the state it covers, and every
//! processor is idempotent, so a crash in between replays a few entries
//! harmlessly.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::model::{Event, JournalEntry};
use crate::store::{Store, StoreError};

/// Entries applied per store batch.
const BATCH: usize = 2000;

/// Applies journal entries as they become durable, until shutdown.
pub async fn run(store: Store, mut durable: watch::Receiver<u64>, shutdown: CancellationToken) {
    loop {
        match catch_up(&store).await {
            Ok(_) => {}
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
        }
    }
}

/// Applies every durable entry after the stored position; returns how
/// many were applied.
pub async fn catch_up(store: &Store) -> Result<usize, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        loop {
            let position = store.engine_position()?;
            let entries = store.journal_after(position, BATCH, |_| true)?;
            let Some(last) = entries.last().map(|e| e.seq) else {
                return Ok(total);
            };
            apply(&store, &entries)?;
            store.set_engine_position(last)?;
            total += entries.len();
        }
    })
    .await
    .map_err(|e| StoreError::Transaction(format!("engine task failed: {e}")))?
}

/// The pipeline: every processor, in order, over one batch of entries.
fn apply(store: &Store, entries: &[JournalEntry]) -> Result<(), StoreError> {
    let itsm = entries.iter().filter_map(|e| match &e.event {
        Event::Itsm(record) => Some(record),
        Event::Alert(_) => None,
    });
    let applied = store.apply_itsm(itsm)?;
    if applied.changed > 0 {
        tracing::debug!(
            changed = applied.changed,
            unchanged = applied.unchanged,
            "Applied ITSM records"
        );
    }
    Ok(())
}

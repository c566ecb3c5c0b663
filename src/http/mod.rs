//! The one HTTP listener: health, metrics, inbound webhooks and the admin
//! API behind the CLI.

mod admin;
mod alerts;
pub mod auth;
mod changes;
mod integrity;
mod outbox;
mod report;
mod sip;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::config::Config;
use crate::connector::rest::task::PollerHandle;
use crate::connector::rest::writer::WriterHandle;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::journal::Journal;

/// What every handler shares.
pub struct AppState {
    /// Swapped whole on reload (SIGHUP).
    pub config: ArcSwap<Config>,
    pub store: Store,
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    /// Polled connectors, by name.
    pub pollers: BTreeMap<String, PollerHandle>,
    /// Write-back workers, by connector name.
    pub writers: BTreeMap<String, WriterHandle>,
    /// Wakes the outbox worker (after a retry).
    pub outbox: crate::notify::worker::OutboxHandle,
    /// The message templates, loaded at start.
    pub templates: Arc<crate::notify::templates::Templates>,
    /// The sender, fixed at start: it is in every calendar UID and
    /// Message-ID, which must not change on a reload.
    pub from: Arc<lettre::message::Mailbox>,
}

impl AppState {
    /// Counts `n` messages just queued as pending and wakes the outbox.
    pub fn messages_queued(&self, n: usize) {
        self.metrics
            .outbox_moved(None, Some(crate::model::outbox::MessageStatus::Pending), n);
        self.outbox.wake();
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/webhooks/{connector}", post(webhook::receive))
        .nest("/api/v1", admin::router(state.clone()))
        .fallback(not_found)
        .with_state(state)
}

/// An error answered as `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        response
    }
}

/// Runs `work` (a scan, a transaction) on a blocking thread, not on the
/// runtime's, and answers with its error.
pub(crate) async fn blocking<T, E>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "Store read failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}"),
        )
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "alive" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let config = state.config.load();
    let store_ok = state.journal.is_healthy();
    let body = json!({
        "status": if store_ok { "ready" } else { "not ready" },
        "store": if store_ok { "ok" } else { "failing writes" },
        "config": config.path.display().to_string(),
        "connectors": config.connectors.iter().map(|c| {
            let mut entry = json!({ "name": c.name, "kind": c.kind });
            // Polled connectors also say how their last sync went.
            if let Some(health) = state.pollers.get(c.name.as_str()).map(|p| p.health()) {
                entry["ok"] = json!(health.ok());
                entry["last_success"] = json!(health.last_success);
                entry["last_error"] = json!(health.last_error);
            }
            entry
        }).collect::<Vec<_>>(),
        "customers": config.customers.len(),
    });
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // The engine's lag, taken now: how far notices and records trail what
    // senders were told is stored.
    let durable = *state.journal.durable().borrow();
    let unapplied = durable.saturating_sub(state.store.engine_position());
    state
        .metrics
        .journal_unapplied
        .set(i64::try_from(unapplied).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

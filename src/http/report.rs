//! `/api/v1/reports`: a customer's monthly service report, previewed
//! (rendered with its charts as `data:` URIs, nothing queued) or queued for
//! its recipients now (`csmd report render|send`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::report::period::Month;
use crate::report::{ReportError, Reporter};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/reports/{customer}/{month}", get(preview))
        .route("/reports/{customer}/{month}/send", post(send))
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(e) => e.into(),
            e @ ReportError::UnknownCustomer(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            e @ ReportError::AlreadySent { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            e @ (ReportError::MonthNotOver { .. } | ReportError::NoRecipients(_)) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            e => {
                tracing::error!(error = %e, "Report failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

fn month(text: &str) -> Result<Month, ApiError> {
    text.parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// Runs `work` with a reporter on a blocking thread: reports read whole
/// trees and draw charts.
async fn with_reporter<T: Send + 'static>(
    state: &Arc<AppState>,
    work: impl FnOnce(&Reporter<'_>, &crate::store::Store) -> Result<T, ReportError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    super::blocking(move || {
        let config = state.config.load_full();
        let reporter = Reporter::of(&config, &state.templates, &state.from);
        work(&reporter, &state.store)
    })
    .await
}

async fn preview(
    State(state): State<Arc<AppState>>,
    Path((customer, month_text)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let month = month(&month_text)?;
    let preview = with_reporter(&state, move |reporter, store| {
        reporter.preview(store, &customer, month, chrono::Utc::now())
    })
    .await?;
    Ok(Json(json!(preview)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    /// Send again although the month's report was queued before.
    #[serde(default)]
    force: bool,
}

async fn send(
    State(state): State<Arc<AppState>>,
    Path((customer, month_text)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let month = month(&month_text)?;
    let request: SendRequest = if bytes.is_empty() {
        SendRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {e}"),
            )
        })?
    };
    let queued = with_reporter(&state, move |reporter, store| {
        reporter.send(store, &customer, month, request.force, chrono::Utc::now())
    })
    .await?;
    state.messages_queued(queued.len());
    let messages: Vec<Value> = queued
        .iter()
        .map(|m| json!({ "id": m.id, "to": m.to, "subject": m.subject, "key": m.key }))
        .collect();
    Ok(Json(
        json!({ "queued": messages.len(), "messages": messages }),
    ))
}

//! `/api/v1/outbox`: the messages csmd queued for customers, and a retry
//! for those that died.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::model::outbox::{MessageStatus, OutboxMessage};
use crate::store::outbox::OutboxFilter;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/outbox", get(list))
        .route("/outbox/{id}", get(show))
        .route("/outbox/{id}/retry", post(retry))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    customer: Option<String>,
    limit: Option<usize>,
}

/// What a list shows of a message: everything but the bodies.
fn summary(message: &OutboxMessage) -> Value {
    json!({
        "id": message.id,
        "key": message.key,
        "kind": message.kind,
        "customer": message.customer,
        "to": message.to,
        "subject": message.subject,
        "status": message.status,
        "attempts": message.attempts,
        "next_attempt_at": message.next_attempt_at,
        "last_error": message.last_error,
        "created_at": message.created_at,
        "sent_at": message.sent_at,
    })
}

async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<MessageStatus>)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let filter = OutboxFilter {
        status,
        customer: query.customer,
    };
    let limit = query.limit.unwrap_or(100).min(10_000);
    let store = state.store.clone();
    let (messages, counts) = super::blocking(move || store.outbox_overview(&filter, limit)).await?;
    let counts: serde_json::Map<String, Value> = MessageStatus::ALL
        .into_iter()
        .map(|s| {
            (
                s.as_str().to_string(),
                json!(counts.get(&s).copied().unwrap_or(0)),
            )
        })
        .collect();
    Ok(Json(json!({
        "messages": messages.iter().map(summary).collect::<Vec<_>>(),
        "counts": counts,
    })))
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let message = state
        .store
        .outbox_message(&id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no message {id:?}")))?;
    // The files are described, not dumped: a report's charts would be
    // hundreds of kilobytes of base64 in a terminal.
    let attachments: Vec<Value> = message
        .attachments
        .iter()
        .map(|a| {
            json!({
                "filename": a.filename,
                "content_type": a.content_type,
                "content_id": a.content_id,
                "bytes": a.data.len(),
            })
        })
        .collect();
    let mut shown = json!(message);
    shown["attachments"] = json!(attachments);
    Ok(Json(shown))
}

async fn retry(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (was, message) = state
        .store
        .retry_message(&id, chrono::Utc::now())?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no message {id:?}")))?;
    if was == MessageStatus::Dead {
        state
            .metrics
            .outbox_moved(Some(was), Some(MessageStatus::Pending), 1);
    }
    if message.status != MessageStatus::Pending {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "message {id} is {}; only dead or pending messages can be retried",
                message.status.as_str()
            ),
        ));
    }
    state.outbox.wake();
    Ok(Json(summary(&message)))
}

//! `/api/v1`: the bearer-protected admin API behind the `csmd` CLI.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::check_bearer;
use super::{ApiError, AppState};
use crate::model::CustomerId;

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/customers", get(list_customers))
        .route("/customers/{id}", get(show_customer))
        .route("/events", get(list_events))
        .route("/events/{seq}", get(show_event))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

async fn require_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let config = state.config.load();
    let Some(token) = &config.daemon.admin_token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the admin API is disabled: set daemon.admin_token",
        ));
    };
    check_bearer(request.headers(), token)
        .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
    Ok(next.run(request).await)
}

async fn list_customers(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "customers": state.store.customers()? })))
}

async fn show_customer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: CustomerId = id.parse().map_err(|e: crate::model::IdError| {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    let customer = state
        .store
        .customer(&id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no customer {id}")))?;
    Ok(Json(json!(customer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    /// Only events after this sequence number.
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
    connector: Option<String>,
}

fn default_limit() -> usize {
    100
}

const MAX_LIMIT: usize = 1000;

async fn list_events(
    State(state): State<Arc<AppState>>,
    Query(query): Query<EventQuery>,
) -> Result<Json<Value>, ApiError> {
    if query.limit == 0 || query.limit > MAX_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let events = state.store.journal_after(query.after, query.limit, |e| {
        query
            .connector
            .as_deref()
            .is_none_or(|c| e.connector.as_str() == c)
    })?;
    let next_after = events.last().map(|e| e.seq);
    Ok(Json(
        json!({ "events": events, "next_after": next_after, "total": state.store.journal_len()? }),
    ))
}

async fn show_event(
    State(state): State<Arc<AppState>>,
    Path(seq): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    let entry = state
        .store
        .journal_entry(seq)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no event {seq}")))?;
    Ok(Json(json!(entry)))
}

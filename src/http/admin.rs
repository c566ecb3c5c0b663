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
        .route("/connectors", get(list_connectors))
        .route(
            "/connectors/{name}/sync",
            axum::routing::post(sync_connector),
        )
        .route("/records/{kind}", get(list_records))
        .route("/records/{kind}/{id}", get(show_record))
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

async fn list_connectors(State(state): State<Arc<AppState>>) -> Json<Value> {
    let config = state.config.load();
    let connectors: Vec<Value> = config
        .connectors
        .iter()
        .map(|c| {
            let health = state.pollers.get(c.name.as_str()).map(|p| p.health());
            json!({
                "name": c.name,
                "kind": c.kind,
                "webhook": c.webhook_auth.as_ref().map_or_else(|| "off".to_string(), |a| a.describe()),
                "polls": c.poll.as_ref().map(|p| json!({
                    "base_url": p.client.base_url.to_string(),
                    "interval_seconds": p.interval.as_secs(),
                    "streams": p.polling.streams.iter().map(|s| &s.name).collect::<Vec<_>>(),
                })),
                "ok": health.as_ref().map(|h| h.ok()),
                "health": health,
            })
        })
        .collect();
    Json(json!({ "connectors": connectors }))
}

async fn sync_connector(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let config = state.config.load();
    if config.connector(&name).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connector named {name:?}"),
        ));
    }
    let poller = state.pollers.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("connector {name:?} does not poll; it only receives webhooks"),
        )
    })?;
    let report = poller.sync_now().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        )
    })?;
    Ok(Json(json!(report)))
}

/// The stores of ITSM records, by the name used in the API.
const RECORD_KINDS: &[&str] = &[
    "accounts",
    "contacts",
    "cis",
    "install_base",
    "incidents",
    "changes",
    "change_cis",
    "problems",
    "problem_tasks",
];

fn record_kind(kind: &str) -> Result<&'static str, ApiError> {
    RECORD_KINDS
        .iter()
        .copied()
        .find(|k| *k == kind)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no record kind {kind:?}; kinds: {}",
                    RECORD_KINDS.join(", ")
                ),
            )
        })
}

async fn list_records(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kind = record_kind(&kind)?;
    Ok(Json(
        json!({ "kind": kind, "count": state.store.itsm_count(kind)? }),
    ))
}

async fn show_record(
    State(state): State<Arc<AppState>>,
    Path((kind, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let kind = record_kind(&kind)?;
    let record = state
        .store
        .itsm_record(kind, &id)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no {kind} record {id}")))?;
    Ok(Json(json!(record)))
}

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
use crate::model::itsm::{RECORD_TREES, WriteStatus};

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
        .route("/writes", get(list_writes))
        .route(
            "/connectors/{name}/writes",
            axum::routing::post(queue_write),
        )
        .route("/connectors/{name}/writes/{key}", get(show_write))
        .route(
            "/connectors/{name}/writes/{key}/updates",
            axum::routing::post(queue_update),
        )
        .route("/records/{kind}", get(list_records))
        .route("/records/{kind}/{id}", get(show_record))
        .merge(super::outbox::routes())
        .merge(super::changes::routes())
        .merge(super::sip::routes())
        .merge(super::alerts::routes())
        .merge(super::integrity::routes())
        .merge(super::report::routes())
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
                "files": c.files.as_ref().map(|f| json!({
                    "folder": f.folder,
                    "archive": f.archive,
                    "done_marker": f.done_marker,
                    "interval_seconds": f.interval.as_secs(),
                })),
                "tickets": c.tickets.as_ref().map(|t| json!({
                    "writeback": t.writeback,
                    "min_severity": t.min_severity,
                    "assignment_group": t.assignment_group,
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

fn record_kind(kind: &str) -> Result<&'static str, ApiError> {
    RECORD_TREES
        .iter()
        .copied()
        .find(|k| *k == kind)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no record kind {kind:?}; kinds: {}",
                    RECORD_TREES.join(", ")
                ),
            )
        })
}

async fn list_records(
    State(state): State<Arc<AppState>>,
    Path(kind): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let kind = record_kind(&kind)?;
    let store = state.store.clone();
    let count = super::blocking(move || store.itsm_count(kind)).await?;
    Ok(Json(json!({ "kind": kind, "count": count })))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteRequest {
    /// csmd's key of the record; the same key never creates a second one.
    key: String,
    table: String,
    fields: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    fields: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WritesQuery {
    connector: Option<String>,
    status: Option<WriteStatus>,
}

/// A key is written into an encoded query (`correlation_id=KEY`), so it may
/// hold nothing that query syntax gives a meaning to.
fn check_write_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= 100
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "key must be 1 to 100 characters from A-Z, a-z, 0-9, '-', '_', '.', ':'",
        ))
    }
}

fn writable(state: &AppState, name: &str) -> Result<crate::model::ConnectorName, ApiError> {
    let config = state.config.load();
    let connector = config.connector(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connector named {name:?}"),
        )
    })?;
    if !state.writers.contains_key(name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("connector {name:?} cannot write records upstream"),
        ));
    }
    Ok(connector.name.clone())
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

async fn queue_write(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let connector = writable(&state, &name)?;
    let request: WriteRequest = json_body(&body)?;
    check_write_key(&request.key)?;
    let (write, queued) = state.store.queue_write(
        &connector,
        &request.key,
        &request.table,
        request.fields,
        chrono::Utc::now(),
    )?;
    if let Some(writer) = state.writers.get(&name) {
        writer.wake();
    }
    let status = if queued {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "queued": queued, "write": write }))))
}

async fn queue_update(
    State(state): State<Arc<AppState>>,
    Path((name, key)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let connector = writable(&state, &name)?;
    let request: UpdateRequest = json_body(&body)?;
    let write = state
        .store
        .queue_update(&connector, &key, request.fields, chrono::Utc::now())?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no write {key:?} for connector {name:?}"),
            )
        })?;
    if let Some(writer) = state.writers.get(&name) {
        writer.wake();
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "write": write }))))
}

async fn show_write(
    State(state): State<Arc<AppState>>,
    Path((name, key)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let connector: crate::model::ConnectorName =
        name.parse().map_err(|e: crate::model::IdError| {
            ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
        })?;
    let write = state.store.write(&connector, &key)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no write {key:?} for connector {name:?}"),
        )
    })?;
    Ok(Json(json!(write)))
}

async fn list_writes(
    State(state): State<Arc<AppState>>,
    Query(query): Query<WritesQuery>,
) -> Result<Json<Value>, ApiError> {
    let connector = query
        .connector
        .map(|c| c.parse::<crate::model::ConnectorName>())
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let writes: Vec<_> = state
        .store
        .writes(connector.as_ref())?
        .into_iter()
        .filter(|w| query.status.is_none_or(|s| w.status == s))
        .collect();
    Ok(Json(json!({ "writes": writes })))
}

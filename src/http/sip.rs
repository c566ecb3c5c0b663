//! `/api/v1/sip`: the Service Improvement Program's actions: list with
//! filters, show, create, update, add a note; and the overdue digest on
//! demand.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::engine::sip::{SipQuery, SipSources};
use crate::model::sip::{NewSip, SipAction, SipPatch};
use crate::store::SipError;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/sip", get(list).post(create))
        .route("/sip/digest", post(digest))
        .route("/sip/{id}", get(show).patch(update))
        .route("/sip/{id}/notes", post(note))
}

impl From<SipError> for ApiError {
    fn from(e: SipError) -> Self {
        match e {
            SipError::Store(e) => e.into(),
            e @ SipError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            e @ SipError::Rule(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            e @ SipError::Query(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
}

/// An action as the API shows it: the stored action and whether it is
/// overdue now.
fn view(action: &SipAction, overdue: bool) -> Value {
    let mut value = json!(action);
    value["overdue"] = json!(overdue);
    value
}

fn with_overdue(state: &AppState, action: &SipAction) -> Value {
    let config = state.config.load();
    let today = SipSources::of(&config).today(&action.customer, chrono::Utc::now());
    view(action, action.is_overdue(today))
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<SipQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let config = state.config.load();
    if let Some(customer) = &query.customer
        && config.customer(customer).is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("no customer {customer}"),
        ));
    }
    let actions = SipSources::of(&config).list(&state.store, &query, chrono::Utc::now())?;
    let actions: Vec<Value> = actions.iter().map(|(a, o)| view(a, *o)).collect();
    Ok(Json(json!({ "actions": actions })))
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let action = state.store.sip_action(&id)?.ok_or(SipError::NotFound(id))?;
    Ok(Json(with_overdue(&state, &action)))
}

async fn create(
    State(state): State<Arc<AppState>>,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewSip = body(&bytes)?;
    if state.config.load().customer(&new.customer).is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("no customer {}", new.customer),
        ));
    }
    let (action, _) = state.store.create_sip(new, chrono::Utc::now())?;
    tracing::info!(id = %action.id, customer = %action.customer, "SIP action created");
    Ok((StatusCode::CREATED, Json(with_overdue(&state, &action))))
}

async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let patch: SipPatch = body(&bytes)?;
    let now = chrono::Utc::now();
    let action = state.store.update_sip(&id, |a| a.apply(patch, now))?;
    Ok(Json(with_overdue(&state, &action)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    text: String,
    #[serde(default = "default_author")]
    author: String,
}

fn default_author() -> String {
    "api".into()
}

async fn note(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let note: Note = body(&bytes)?;
    let (text, author) = (note.text.trim(), note.author.trim());
    if text.is_empty() || author.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a note needs a text and an author",
        ));
    }
    let now = chrono::Utc::now();
    let action = state.store.update_sip(&id, |a| {
        a.note(author, text, now);
        Ok(true)
    })?;
    Ok((StatusCode::CREATED, Json(with_overdue(&state, &action))))
}

/// Queues the overdue digest now, whatever the schedule says.
async fn digest(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let config = state.config.load();
    if config.sip.digest_to.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no digest recipients: set [sip] digest_to",
        ));
    }
    let run = state.clone();
    let queued = super::blocking(move || {
        crate::app::queue_sip_digest(&run, chrono::Utc::now()).map_err(|e| match e {
            crate::engine::sip::DigestError::Sip(e) => ApiError::from(e),
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })
    })
    .await?;
    Ok(Json(json!({ "queued": queued })))
}

//! `/api/v1/changes`: change requests with their history, windows and
//! affected customers, listed by view and filter or shown one at a time.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::engine::changes::{self, ChangeQuery, ChangesError, Context, View};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/changes", get(list))
        .route("/changes/{key}", get(show))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// csmd's customer id.
    customer: Option<String>,
    /// open, closed, canceled or a state name.
    status: Option<String>,
    /// Executed in this month, `YYYY-MM`, in the daemon's time zone.
    month: Option<String>,
    view: Option<View>,
    overdue: Option<bool>,
}

impl From<ChangesError> for ApiError {
    fn from(e: ChangesError) -> Self {
        match e {
            ChangesError::Store(e) => e.into(),
            e @ ChangesError::UnknownCustomer(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
            }
        }
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Runs a query on a blocking thread, with the configuration of now.
async fn query<T: Send + 'static>(
    state: &Arc<AppState>,
    run: impl FnOnce(&crate::store::Store, &Context<'_>) -> Result<T, ChangesError> + Send + 'static,
) -> Result<T, ApiError> {
    let state = state.clone();
    super::blocking(move || {
        let config = state.config.load_full();
        let context = Context {
            customers: &config.customers,
            time_zone: config.daemon.time_zone.0,
            now: chrono::Utc::now(),
        };
        run(&state.store, &context)
    })
    .await
}

async fn list(
    State(state): State<Arc<AppState>>,
    query_params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    // The rejection's own text names the bad or unknown parameter; it is
    // answered as JSON like every other error.
    let Query(params) = query_params.map_err(|e| bad_request(e.body_text()))?;
    let filter = ChangeQuery {
        customer: params.customer,
        status: params
            .status
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad_request)?,
        month: params
            .month
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(bad_request)?,
        view: params.view,
        overdue: params.overdue,
    };
    let views = query(&state, move |store, context| {
        changes::list(store, context, &filter)
    })
    .await?;
    Ok(Json(json!({ "count": views.len(), "changes": views })))
}

async fn show(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let lookup = key.clone();
    let view = query(&state, move |store, context| {
        changes::show(store, context, &lookup)
    })
    .await?
    .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no change {key:?}")))?;
    Ok(Json(json!(view)))
}

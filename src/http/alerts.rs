//! `/api/v1/alerts`: the alerts csmd knows, with their latest state, and
//! `/api/v1/disruptions`: what each customer was told about them.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::model::{AlertStatus, ConnectorName};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/alerts", get(list))
        .route("/disruptions", get(disruptions))
        .route("/outages", get(outages))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    connector: Option<ConnectorName>,
    status: Option<AlertStatus>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let store = state.store.clone();
    let alerts =
        super::blocking(move || store.alerts(query.connector.as_ref(), query.status)).await?;
    Ok(Json(json!({ "alerts": alerts })))
}

/// Per customer: the disruption open now, and the alerts held back because
/// a change under way covers them ("during maintenance").
async fn disruptions(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let told = super::blocking(move || crate::engine::disruption::told(&store)).await?;
    let customers: Vec<Value> = told
        .into_iter()
        .map(|(customer, told)| {
            json!({
                "customer": customer,
                "open": told.open,
                "during_maintenance": told.during_maintenance,
            })
        })
        .collect();
    Ok(Json(json!({ "customers": customers })))
}

/// The outages with open ITSM tickets: their alerts, major incident and
/// proactive cases (keys of the write-back queue).
async fn outages(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let store = state.store.clone();
    let outages = super::blocking(move || crate::engine::proactive::outages(&store)).await?;
    let outages: Vec<_> = outages.into_values().collect();
    Ok(Json(json!({ "outages": outages })))
}

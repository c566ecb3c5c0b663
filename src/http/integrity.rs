//! `/api/v1/integrity`: the data-integrity issues, with filters.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::model::integrity::{IssueStatus, Rule};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/integrity", get(list))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueQuery {
    customer: Option<String>,
    rule: Option<String>,
    status: Option<String>,
}

fn bad(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<IssueQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| bad(e.body_text()))?;
    let rule = query
        .rule
        .as_deref()
        .map(str::parse::<Rule>)
        .transpose()
        .map_err(bad)?;
    let status = query
        .status
        .as_deref()
        .map(str::parse::<IssueStatus>)
        .transpose()
        .map_err(bad)?;
    if let Some(customer) = &query.customer
        && !state
            .config
            .load()
            .customers
            .iter()
            .any(|c| c.id.as_str() == customer)
    {
        return Err(bad(format!("no customer {customer}")));
    }
    let store = state.store.clone();
    let issues = super::blocking(move || store.integrity_issues()).await?;
    let issues: Vec<_> = issues
        .into_iter()
        .filter(|i| rule.is_none_or(|r| i.rule == r))
        .filter(|i| status.is_none_or(|s| i.status == s))
        .filter(|i| {
            query
                .customer
                .as_deref()
                .is_none_or(|c| i.customer.as_ref().is_some_and(|ic| ic.as_str() == c))
        })
        .collect();
    Ok(Json(json!({ "issues": issues })))
}

//! `POST /webhooks/{connector}`: authenticate, parse with the connector's
//! profile, append to the journal, and answer 2xx only once it is durable.
//!
//! Status codes follow what senders do with them (Alertmanager retries 5xx
//! and drops everything else): 4xx for input that will never be valid, 503
//! when we cannot store it right now.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::auth::verify_webhook;
use super::{ApiError, AppState};
use crate::config::customer;
use crate::model::Event;
use crate::store::journal::{Append, AppendError, Appended};

pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let config = state.config.load_full();
    let Some(connector) = config.connector(&name) else {
        state.metrics.reject("", "unknown_connector");
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no connector named {name:?}"),
        ));
    };
    let reject = |status: StatusCode, reason: &str, message: String| {
        tracing::info!(connector = %connector.name, reason, %message, "Webhook rejected");
        state.metrics.reject(connector.name.as_str(), reason);
        ApiError::new(status, message)
    };

    let body = read_body(&headers, body, config.daemon.max_body_bytes)
        .await
        .map_err(|(status, reason, message)| reject(status, reason, message))?;
    let Some(auth) = &connector.webhook_auth else {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "webhooks_off",
            format!("connector {name:?} takes no webhooks: it has no [connector.webhook] section"),
        ));
    };
    let now = chrono::Utc::now().timestamp();
    let delivery_id = verify_webhook(auth, &headers, &body, now)
        .map_err(|f| reject(StatusCode::UNAUTHORIZED, f.reason, f.message))?;
    let parsed = connector
        .parser
        .parse(&body)
        .map_err(|e| reject(StatusCode::BAD_REQUEST, "malformed", e.0))?;
    if parsed.truncated > 0 {
        // The sender left alerts out (a receiver's max_alerts): they are
        // not lost upstream, but csmd never sees them.
        tracing::warn!(connector = %connector.name, truncated = parsed.truncated, "Webhook says it left alerts out");
        state
            .metrics
            .alerts_truncated
            .get_or_create(&crate::metrics::ConnectorLabels {
                connector: connector.name.to_string(),
            })
            .inc_by(parsed.truncated);
    }
    let events = parsed.events;
    // Feedback becomes a customer's SIP action: one for a customer csmd
    // does not know would be lost, so it is refused while the sender can
    // still say so.
    let unknown = events.iter().enumerate().find_map(|(i, e)| match e {
        Event::Feedback(f) if customer::find(&config.customers, &f.customer).is_none() => {
            Some((i, &f.customer))
        }
        _ => None,
    });
    if let Some((i, name)) = unknown {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_customer",
            format!(
                "record {i}: no customer {name:?}: expected a customer id or a customer's ITSM or billing account"
            ),
        ));
    }

    let append = Append {
        connector: connector.name.clone(),
        delivery_id: delivery_id.clone(),
        events,
        cursor: None,
    };
    match state.journal.append(append).await {
        Ok(Appended::Stored { first_seq, count }) => {
            tracing::debug!(connector = %connector.name, first_seq, count, "Webhook stored");
            Ok((
                StatusCode::OK,
                Json(json!({ "stored": count, "first_seq": first_seq })),
            ))
        }
        Ok(Appended::Replayed {
            first_seq,
            received_at,
        }) => Err(reject(
            StatusCode::CONFLICT,
            "replayed",
            format!(
                "webhook-id {:?} was already received at {} and stored as event {first_seq}; it is not stored again",
                delivery_id.unwrap_or_default(),
                received_at.to_rfc3339()
            ),
        )),
        Err(e @ AppendError::Closed) | Err(e @ AppendError::Store(_)) => Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("{e}; retry later"),
        )),
    }
}

/// How long a sender may take to send its body: a stalled sender must not
/// hold a connection (and a journal handle) for ever.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the body up to `limit` bytes; a larger one is refused with 413
/// before it is read whole when it declares its length.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, (StatusCode, &'static str, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body is larger than the {limit} bytes accepted"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err((
            StatusCode::REQUEST_TIMEOUT,
            "slow_body",
            format!(
                "the request body did not arrive within {}s",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    read.map_err(|e| {
        let source = std::error::Error::source(&e);
        if source.is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            (
                StatusCode::BAD_REQUEST,
                "unreadable",
                format!("cannot read the request body: {e}"),
            )
        }
    })
}

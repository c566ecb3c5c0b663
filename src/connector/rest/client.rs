//! The HTTP client of polled upstreams: authentication (basic, bearer,
//! OAuth2 with a cached token refreshed once on 401), a governor rate limit,
//! timeouts, and retries with exponential backoff and jitter on transient
//! failures (5xx, 429, timeouts, connection errors), honouring
//! `Retry-After`. Errors say whether they are worth retrying.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::value::Rate;

/// How csmd authenticates to an upstream.
#[derive(Debug, Clone)]
pub enum UpstreamAuth {
    Basic {
        username: String,
        password: SecretString,
    },
    Bearer(SecretString),
    OAuth2(OAuth2),
}

#[derive(Debug, Clone)]
pub struct OAuth2 {
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: SecretString,
    /// Set for the password grant; the client-credentials grant otherwise.
    pub user: Option<(String, SecretString)>,
}

#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub base_url: Url,
    pub auth: UpstreamAuth,
    pub timeout: Duration,
    pub rate_limit: Option<Rate>,
    /// Attempts after the first before a transient failure is given up.
    pub max_retries: usize,
    pub max_backoff: Duration,
}

/// A failed request. `Display` never includes a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("authentication to {url} failed (HTTP {status}): {message}")]
    Auth {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{method} {url} answered HTTP {status}: {message}")]
    Status {
        method: String,
        url: String,
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{method} {url} failed: {message}")]
    Transport {
        method: String,
        url: String,
        message: String,
    },
    #[error("{url} sent an unexpected response: {message}")]
    Body { url: String, message: String },
}

impl UpstreamError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => {
                *status == 429 || *status == 408 || (500..600).contains(status)
            }
            UpstreamError::Transport { .. } => true,
            UpstreamError::Auth { .. } | UpstreamError::Body { .. } => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            UpstreamError::Status { status, .. } | UpstreamError::Auth { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}

/// A successful response.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

struct CachedToken {
    value: SecretString,
    refresh_at: Instant,
}

pub struct RestClient {
    http: reqwest::Client,
    base_url: Url,
    auth: UpstreamAuth,
    token: Mutex<Option<CachedToken>>,
    limiter: Option<DefaultDirectRateLimiter>,
    backoff: ExponentialBuilder,
    max_backoff: Duration,
    token_fetches: AtomicU64,
}

impl RestClient {
    pub fn new(settings: ClientSettings) -> Result<RestClient, String> {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("csmd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(settings.max_backoff)
            .with_max_times(settings.max_retries)
            .with_jitter();
        Ok(RestClient {
            http,
            base_url: settings.base_url,
            auth: settings.auth,
            token: Mutex::new(None),
            limiter: settings.rate_limit.map(|r| RateLimiter::direct(r.quota())),
            backoff,
            max_backoff: settings.max_backoff,
            token_fetches: AtomicU64::new(0),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// How many OAuth tokens were fetched so far.
    pub fn token_fetches(&self) -> u64 {
        self.token_fetches.load(Ordering::Relaxed)
    }

    /// One request with retries on transient failures.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Response, UpstreamError> {
        self.retrying(|| self.send_once(method.clone(), url, body))
            .await
    }

    /// Runs `attempt` again on transient failures, with backoff and jitter,
    /// waiting at least `Retry-After` when the upstream says so.
    pub async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, UpstreamError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, UpstreamError>>,
    {
        attempt
            .retry(self.backoff)
            .sleep(tokio::time::sleep)
            .when(UpstreamError::is_retryable)
            // Wait at least what the upstream asks; a wait beyond our longest
            // backoff ends the attempt, and the next poll tries again.
            .adjust(|e, backoff| match (backoff, e.retry_after()) {
                (None, _) => None,
                (Some(_), Some(after)) if after > self.max_backoff => None,
                (Some(b), after) => Some(after.map_or(b, |a| a.max(Duration::from_millis(1)))),
            })
            .notify(|e, wait| tracing::warn!(error = %e, wait = ?wait, "Upstream request failed; retrying"))
            .await
    }

    /// One request, without retries but with the rate limit and a single
    /// token refresh when an OAuth token was refused.
    pub async fn send_once(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Response, UpstreamError> {
        let first = self.attempt(method.clone(), url, body).await;
        match (&self.auth, first) {
            (UpstreamAuth::OAuth2(_), Err(UpstreamError::Auth { status: 401, .. })) => {
                *self.token.lock().await = None;
                self.attempt(method, url, body).await
            }
            (_, result) => result,
        }
    }

    async fn attempt(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Response, UpstreamError> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("Accept", "application/json");
        request = match &self.auth {
            UpstreamAuth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose_secret()))
            }
            UpstreamAuth::Bearer(token) => request.bearer_auth(token.expose_secret()),
            UpstreamAuth::OAuth2(oauth) => {
                request.bearer_auth(self.access_token(oauth).await?.expose_secret())
            }
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&method, url, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&method, url, &e))?;
        let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
        check_status(&method, url, status, &headers, &bytes, refused)?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Body {
                url: url_without_query(url),
                message: format!("not JSON: {e}"),
            })?
        };
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    async fn access_token(&self, oauth: &OAuth2) -> Result<SecretString, UpstreamError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.refresh_at > Instant::now()) {
            return Ok(token.value.clone());
        }
        let mut form = vec![
            ("client_id", oauth.client_id.clone()),
            (
                "client_secret",
                oauth.client_secret.expose_secret().to_string(),
            ),
        ];
        match &oauth.user {
            Some((username, password)) => {
                form.push(("grant_type", "password".into()));
                form.push(("username", username.clone()));
                form.push(("password", password.expose_secret().to_string()));
            }
            None => form.push(("grant_type", "client_credentials".into())),
        }
        let url = &oauth.token_url;
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        let response = self
            .http
            .post(url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| transport_error(&Method::POST, url, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&Method::POST, url, &e))?;
        // The token endpoint refuses bad credentials with any 4xx.
        check_status(
            &Method::POST,
            url,
            status,
            &headers,
            &bytes,
            status.is_client_error(),
        )?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let token: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Body {
                url: url_without_query(url),
                message: format!("token response without access_token: {e}"),
            })?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        // Refresh a little early so a token never expires in flight.
        let refresh_at = Instant::now() + lifetime.saturating_sub(lifetime / 10);
        let value = SecretString::from(token.access_token);
        *cached = Some(CachedToken {
            value: value.clone(),
            refresh_at,
        });
        Ok(value)
    }
}

/// Turns a non-success answer into an error: an authentication failure
/// when `refused`, otherwise a status error that may be retried.
fn check_status(
    method: &Method,
    url: &Url,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    refused: bool,
) -> Result<(), UpstreamError> {
    if refused {
        return Err(UpstreamError::Auth {
            url: url_without_query(url),
            status: status.as_u16(),
            message: error_message(body),
        });
    }
    if !status.is_success() {
        return Err(UpstreamError::Status {
            method: method.to_string(),
            url: url_without_query(url),
            status: status.as_u16(),
            message: error_message(body),
            retry_after: retry_after(headers),
        });
    }
    Ok(())
}

fn transport_error(method: &Method, url: &Url, e: &reqwest::Error) -> UpstreamError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "connection error"
    };
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    UpstreamError::Transport {
        method: method.to_string(),
        url: url_without_query(url),
        message: format!("{kind}: {cause}"),
    }
}

/// URLs in errors and logs carry no query (it can be long, and some APIs
/// put tokens there).
fn url_without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// `Retry-After` in seconds (HTTP dates are rare from APIs; a date is
/// treated as "no hint" and the backoff applies).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}

/// The upstream's own error message, from ServiceNow's `{"error":
/// {"message", "detail"}}`, OAuth's `{"error_description"}`, or the text.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        let error = v.get("error")?;
        match error {
            Value::String(code) => Some(
                v.get("error_description")
                    .and_then(Value::as_str)
                    .map_or_else(|| code.clone(), |d| format!("{code}: {d}")),
            ),
            Value::Object(_) => {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let detail = error
                    .get("detail")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Some(if detail.is_empty() {
                    message.to_string()
                } else {
                    format!("{message} ({detail})")
                })
            }
            _ => None,
        }
    });
    let text = message.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let text = text.trim();
    if text.is_empty() {
        "no details".into()
    } else {
        text.chars().take(300).collect()
    }
}

//! A billing system's REST API, served over real HTTP on loopback, for the
//! billing connector's tests. It answers as a typical modern billing API
//! does (the assumptions are in `connectors/billing-rest/README.md`):
//!
//! ```ignore
//! let billing = sim::billing::Simulator::builder().bearer_token("tok").start().await;
//! let id = billing.insert("subscriptions", json!({"account_id": "acc_1", "sku": "MPLS"}));
//! billing.fail_next(Fault::TooManyRequests { retry_after: 1 }, 1);
//! billing.on_page(move |page, billing| {
//!     if page.resource == "subscriptions" && page.index == 0 {
//!         billing.update("subscriptions", &id, json!({"quantity": 3})); // moves to the end
//!     }
//! });
//! ```
//!
//! - `GET /v1/{accounts|subscriptions|charges}` with `limit` (1 to 1000,
//!   default 100), `updated_since` (RFC 3339, inclusive), `cursor` (opaque,
//!   from the previous page), and any other parameter as an equality
//!   filter on a top-level field (`status=active`). Records are ordered by
//!   `(updated_at, id)`; the cursor is the position of the page's last
//!   record, so a record updated during a sync moves behind it and is
//!   served again later, never skipped. Answers `{"object": "list",
//!   "data": [...], "has_more": bool, "next_cursor": "…" | null}` with a
//!   `Link: <…>; rel="next"` header while more remain, and `Date` from the
//!   simulator's clock.
//! - Errors as `{"error": {"type", "message"}}`: 400 for a bad parameter or
//!   cursor, 401 (with `WWW-Authenticate`) without a valid bearer token or
//!   basic user, 404 for an unknown resource; injected faults: 429 with
//!   `Retry-After`, 5xx, a delay, a dropped connection.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

/// The resources the API serves.
pub const RESOURCES: &[&str] = &["accounts", "subscriptions", "charges"];
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// The status logged for a request whose connection was dropped.
pub const DROPPED: u16 = 0;

/// A failure served instead of the next request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `Retry-After` in seconds.
    TooManyRequests { retry_after: u64 },
    /// This status with the API's JSON error body.
    ServerError(u16),
    /// Answered normally after this long.
    Delay(Duration),
    /// The connection is closed without an answer.
    DropConnection,
}

/// One request the simulator answered.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub at: std::time::Instant,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub status: u16,
}

impl LoggedRequest {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A list page just built, as the page hook sees it.
#[derive(Debug, Clone)]
pub struct PageInfo {
    pub resource: String,
    /// How many pages of this resource were served before this one.
    pub index: usize,
    pub limit: usize,
    pub returned: usize,
    pub has_more: bool,
}

type PageHook = Box<dyn FnMut(&PageInfo, &Simulator) + Send>;

#[derive(Default)]
struct Resource {
    records: HashMap<String, Value>,
    /// `(updated_at, id)` of every record.
    order: BTreeSet<(DateTime<Utc>, String)>,
}

struct State {
    resources: HashMap<String, Resource>,
    now: DateTime<Utc>,
    pages_served: HashMap<String, usize>,
    next_id: u64,
}

struct Inner {
    base_url: String,
    addr: SocketAddr,
    tokens: Vec<String>,
    users: Vec<(String, String)>,
    link_only: bool,
    state: Mutex<State>,
    faults: Mutex<VecDeque<Fault>>,
    log: Mutex<Vec<LoggedRequest>>,
    page_hook: Mutex<Option<PageHook>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A running billing API. Cheap to clone; all clones are the same API.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

#[derive(Default)]
pub struct Builder {
    tokens: Vec<String>,
    users: Vec<(String, String)>,
    now: Option<String>,
    link_only: bool,
}

impl Builder {
    /// Accepts `Authorization: Bearer <token>`.
    pub fn bearer_token(mut self, token: &str) -> Builder {
        self.tokens.push(token.into());
        self
    }

    /// Accepts basic auth as this user.
    pub fn basic_user(mut self, user: &str, password: &str) -> Builder {
        self.users.push((user.into(), password.into()));
        self
    }

    /// The next page is only in the `Link` header, not in the body.
    pub fn link_only(mut self) -> Builder {
        self.link_only = true;
        self
    }

    /// The API's clock, stopped at this RFC 3339 time.
    pub fn now(mut self, at: &str) -> Builder {
        self.now = Some(at.into());
        self
    }

    pub async fn start(self) -> Simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the billing simulator");
        let addr = listener.local_addr().expect("local addr");
        let now = self.now.as_deref().map_or_else(Utc::now, parse_time);
        let sim = Simulator {
            inner: Arc::new(Inner {
                base_url: format!("http://{addr}"),
                addr,
                tokens: self.tokens,
                users: self.users,
                link_only: self.link_only,
                state: Mutex::new(State {
                    resources: RESOURCES
                        .iter()
                        .map(|r| (r.to_string(), Resource::default()))
                        .collect(),
                    now,
                    pages_served: HashMap::new(),
                    next_id: 0,
                }),
                faults: Mutex::new(VecDeque::new()),
                log: Mutex::new(Vec::new()),
                page_hook: Mutex::new(None),
                server: Mutex::new(None),
            }),
        };
        let task = tokio::spawn(serve(listener, sim.clone()));
        *lock(&sim.inner.server) = Some(task);
        sim
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn parse_time(at: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("{at:?} is not an RFC 3339 time: {e}"))
        .with_timezone(&Utc)
}

/// How the API writes times: RFC 3339, UTC, whole seconds, `Z`.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn id_prefix(resource: &str) -> &'static str {
    match resource {
        "accounts" => "acc",
        "subscriptions" => "sub",
        _ => "ch",
    }
}

impl Simulator {
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn shutdown(&self) {
        if let Some(task) = lock(&self.inner.server).take() {
            task.abort();
        }
    }

    /// Adds a record and returns its id (`id` when given, else generated,
    /// in increasing order); `updated_at` when given, else the clock.
    pub fn insert(&self, resource: &str, record: Value) -> String {
        self.insert_many(resource, [record]).remove(0)
    }

    pub fn insert_many(
        &self,
        resource: &str,
        records: impl IntoIterator<Item = Value>,
    ) -> Vec<String> {
        let mut state = lock(&self.inner.state);
        let now = state.now;
        let mut ids = Vec::new();
        for record in records {
            let Value::Object(mut record) = record else {
                panic!("a record is a JSON object")
            };
            let id = match record.get("id").and_then(Value::as_str) {
                Some(id) => id.to_string(),
                None => {
                    state.next_id += 1;
                    format!("{}_{:08}", id_prefix(resource), state.next_id)
                }
            };
            let updated = record
                .get("updated_at")
                .and_then(Value::as_str)
                .map_or(now, parse_time);
            record.insert("id".into(), json!(id));
            record.insert("updated_at".into(), json!(format_time(updated)));
            let table = state
                .resources
                .get_mut(resource)
                .unwrap_or_else(|| panic!("no resource {resource}"));
            if let Some(old) = table.records.get(&id) {
                let old_at = parse_time(old["updated_at"].as_str().unwrap_or_default());
                table.order.remove(&(old_at, id.clone()));
            }
            table.order.insert((updated, id.clone()));
            table.records.insert(id.clone(), Value::Object(record));
            ids.push(id);
        }
        ids
    }

    /// Changes a record's fields; `updated_at` becomes the clock's unless
    /// `fields` sets it. Returns the record.
    pub fn update(&self, resource: &str, id: &str, fields: Value) -> Value {
        let mut record = self
            .find(resource, id)
            .unwrap_or_else(|| panic!("no {resource} {id}"));
        let now = format_time(self.now());
        record["updated_at"] = json!(now);
        if let Value::Object(fields) = fields {
            for (k, v) in fields {
                record[k] = v;
            }
        }
        self.insert(resource, record.clone());
        record
    }

    pub fn find(&self, resource: &str, id: &str) -> Option<Value> {
        lock(&self.inner.state)
            .resources
            .get(resource)?
            .records
            .get(id)
            .cloned()
    }

    pub fn count(&self, resource: &str) -> usize {
        lock(&self.inner.state)
            .resources
            .get(resource)
            .map_or(0, |r| r.records.len())
    }

    pub fn now(&self) -> DateTime<Utc> {
        lock(&self.inner.state).now
    }

    pub fn set_now(&self, at: &str) {
        lock(&self.inner.state).now = parse_time(at);
    }

    pub fn fail_next(&self, fault: Fault, times: usize) {
        let mut faults = lock(&self.inner.faults);
        faults.extend(std::iter::repeat_n(fault, times));
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.inner.faults).len()
    }

    pub fn on_page(&self, hook: impl FnMut(&PageInfo, &Simulator) + Send + 'static) {
        *lock(&self.inner.page_hook) = Some(Box::new(hook));
    }

    pub fn clear_page_hook(&self) {
        *lock(&self.inner.page_hook) = None;
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.inner.log).clone()
    }

    /// The list requests of one resource, in order.
    pub fn list_requests(&self, resource: &str) -> Vec<LoggedRequest> {
        let path = format!("/v1/{resource}");
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.log).clear();
    }
}

type Reply = Response<Full<Bytes>>;

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

async fn serve(listener: tokio::net::TcpListener, sim: Simulator) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let sim = sim.clone();
                async move { handle(&sim, request).await }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn handle(sim: &Simulator, request: hyper::Request<Incoming>) -> Result<Reply, Dropped> {
    let path = request.uri().path().to_string();
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = request.into_body().collect().await;
    let log = |status: u16| {
        lock(&sim.inner.log).push(LoggedRequest {
            at: std::time::Instant::now(),
            path: path.clone(),
            query: params.clone(),
            status,
        });
    };
    let fault = lock(&sim.inner.faults).pop_front();
    let mut reply = match fault {
        Some(Fault::DropConnection) => {
            log(DROPPED);
            return Err(Dropped);
        }
        Some(Fault::TooManyRequests { retry_after }) => {
            let mut reply = error(429, "rate_limit_error", "Too many requests; slow down");
            reply.headers_mut().insert(
                "Retry-After",
                HeaderValue::from_str(&retry_after.to_string()).expect("a header"),
            );
            reply
        }
        Some(Fault::ServerError(status)) => {
            error(status, "api_error", "An internal error occurred")
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            route(sim, &path, &params, authorization.as_deref())
        }
        None => route(sim, &path, &params, authorization.as_deref()),
    };
    log(reply.status().as_u16());
    let date = sim.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(value) = HeaderValue::from_str(&date) {
        reply.headers_mut().insert(hyper::header::DATE, value);
    }
    Ok(reply)
}

fn error(status: u16, kind: &str, message: &str) -> Reply {
    json_reply(
        status,
        &json!({"error": {"type": kind, "message": message}}),
    )
}

fn json_reply(status: u16, body: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

fn authenticated(sim: &Simulator, authorization: Option<&str>) -> bool {
    let inner = &sim.inner;
    if inner.tokens.is_empty() && inner.users.is_empty() {
        return true;
    }
    let Some(authorization) = authorization else {
        return false;
    };
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return inner.tokens.iter().any(|t| t == token.trim());
    }
    if let Some(basic) = authorization.strip_prefix("Basic ") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        let decoded = String::from_utf8_lossy(&decoded);
        return inner
            .users
            .iter()
            .any(|(u, p)| decoded == format!("{u}:{p}"));
    }
    false
}

fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    let raw = json!({"u": format_time(at), "i": id}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let value: Value = serde_json::from_slice(&raw).ok()?;
    let at = DateTime::parse_from_rfc3339(value["u"].as_str()?).ok()?;
    Some((at.with_timezone(&Utc), value["i"].as_str()?.to_string()))
}

fn route(
    sim: &Simulator,
    path: &str,
    params: &[(String, String)],
    authorization: Option<&str>,
) -> Reply {
    let Some(resource) = path.strip_prefix("/v1/") else {
        return error(404, "invalid_request_error", "Unrecognized request URL");
    };
    if !authenticated(sim, authorization) {
        let mut reply = error(401, "authentication_error", "Invalid API key provided");
        reply.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"billing\""),
        );
        return reply;
    }
    if !RESOURCES.contains(&resource) {
        return error(
            404,
            "invalid_request_error",
            &format!("Unrecognized request URL (GET: {path})"),
        );
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let limit = match param("limit").map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                400,
                "invalid_request_error",
                &format!("limit: must be an integer from 1 to {MAX_LIMIT}"),
            );
        }
    };
    let since = match param("updated_since").map(DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(at)) => Some(at.with_timezone(&Utc)),
        Some(Err(_)) => {
            return error(
                400,
                "invalid_request_error",
                "updated_since: not an RFC 3339 time",
            );
        }
    };
    let after = match param("cursor").map(decode_cursor) {
        None => None,
        Some(Some(position)) => Some(position),
        Some(None) => return error(400, "invalid_request_error", "cursor: invalid cursor"),
    };
    let filters: Vec<(&String, &String)> = params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "limit" | "updated_since" | "cursor"))
        .map(|(k, v)| (k, v))
        .collect();
    let (data, has_more, index) = {
        let mut state = lock(&sim.inner.state);
        let table = &state.resources[resource];
        let mut data = Vec::new();
        let mut has_more = false;
        for (at, id) in &table.order {
            if since.is_some_and(|s| *at < s) {
                continue;
            }
            if after
                .as_ref()
                .is_some_and(|(a_at, a_id)| (at, id) <= (a_at, a_id))
            {
                continue;
            }
            let record = &table.records[id];
            let matches = filters.iter().all(|(k, v)| match record.get(k.as_str()) {
                Some(Value::String(s)) => s == *v,
                Some(other) => serde_json::from_str::<Value>(v).is_ok_and(|p| &p == other),
                None => false,
            });
            if !matches {
                continue;
            }
            if data.len() == limit {
                has_more = true;
                break;
            }
            data.push(record.clone());
        }
        let served = state.pages_served.entry(resource.to_string()).or_default();
        let index = *served;
        *served += 1;
        (data, has_more, index)
    };
    let next_cursor = has_more.then(|| data.last()).flatten().map(|last| {
        encode_cursor(
            parse_time(last["updated_at"].as_str().unwrap_or_default()),
            last["id"].as_str().unwrap_or_default(),
        )
    });
    let info = PageInfo {
        resource: resource.to_string(),
        index,
        limit,
        returned: data.len(),
        has_more,
    };
    if let Some(hook) = lock(&sim.inner.page_hook).as_mut() {
        hook(&info, sim);
    }
    let mut body = json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": next_cursor,
    });
    if sim.inner.link_only
        && let Some(body) = body.as_object_mut()
    {
        body.remove("next_cursor");
    }
    let mut reply = json_reply(200, &body);
    if let Some(cursor) = &next_cursor {
        let mut next: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "cursor")
            .cloned()
            .collect();
        next.push(("cursor".into(), cursor.clone()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(next)
            .finish();
        let link = format!("<{}{path}?{query}>; rel=\"next\"", sim.url());
        if let Ok(value) = HeaderValue::from_str(&link) {
            reply.headers_mut().insert(hyper::header::LINK, value);
        }
    }
    reply
}

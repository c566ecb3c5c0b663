//! A ServiceNow instance's Table API, served over real HTTP on loopback, for
//! the ITSM connector's tests and benchmark.
//!
//! ```ignore
//! let sn = sim::servicenow::Simulator::builder()
//!     .table("incident", &["number", "priority", "state", "cmdb_ci", "u_custom"])
//!     .basic_user("csmd", "pw")
//!     .oauth_client("client-id", "client-secret", Duration::from_secs(1800))
//!     .start()
//!     .await;
//! let id = sn.insert("incident", json!({"number": "INC0010001", "priority": 1}));
//! sn.fail_next(Fault::ServerError(503), 2);
//! sn.on_page(move |page, sn| {
//!     if page.table == "incident" && page.index == 0 {
//!         sn.update("incident", &id, json!({"state": "6"})); // moves to the end
//!     }
//! });
//! ```
//!
//! What it serves, as an instance does:
//! - `GET /api/now/table/{table}` (also `/api/now/v1/…`, `/api/now/v2/…`)
//!   with `sysparm_query`, an encoded query: conditions `field OP value`
//!   with `= != > >= < <= IN NOT IN STARTSWITH ENDSWITH LIKE NOT LIKE
//!   ISEMPTY ISNOTEMPTY ANYTHING BETWEEN`, joined by `^` (AND) and `^OR`
//!   (OR with the previous condition only, binding tighter than AND), `^NQ`
//!   (a new OR'ed query), `ORDERBYfield` / `ORDERBYDESCfield` applied in
//!   order (then sys_id; sys_id alone by default). Values of numeric
//!   columns (`integer`, `decimal`, …) compare as numbers, all others as
//!   text (which orders `YYYY-MM-DD HH:MM:SS` and sys_ids correctly); an
//!   empty value is NULL and fails every comparison but `ISEMPTY`, `field=`
//!   and `ANYTHING`. A term naming a field the table lacks is dropped
//!   silently, so a typo returns everything, unless built with
//!   [`Builder::strict_queries`] (400) or
//!   [`Builder::invalid_queries_return_no_rows`] (the instance property
//!   `glide.invalid_query.returns_no_rows`). Also `sysparm_fields` (unknown
//!   names omitted), `sysparm_limit` (default 10000), `sysparm_offset`,
//!   `sysparm_exclude_reference_link` (references otherwise render as
//!   `{"link","value"}`). Answers `{"result":[…]}` with `X-Total-Count` and
//!   `Link: <url>;rel="first",<url>;rel="prev",<url>;rel="next",<url>;rel="last"`
//!   (`prev` past offset 0, `next` while more remain), each URL the
//!   request's query string with `sysparm_offset` replaced. Raw values only:
//!   `sysparm_display_value=true|all` is answered 400, so a client that asks
//!   for display values notices.
//! - `GET|PATCH|PUT|DELETE /api/now/table/{table}/{sys_id}` and `POST
//!   /api/now/table/{table}` (201 with `Location`); unknown fields and
//!   system fields in a body are ignored, except a new record's `sys_id`.
//!   An unknown record is 404 `No Record found`; an unknown table is 400
//!   `Invalid table {name}`; both with the instance's error body
//!   `{"error":{"message","detail"},"status":"failure"}`.
//! - `sys_dictionary`, derived from the declared tables: one row per column
//!   (`name`, `element`, `internal_type`, `reference`) plus one `collection`
//!   row per table, queryable like any table.
//! - Auth: Basic users, and `POST /oauth_token.do` (form-encoded
//!   `password`, `client_credentials` and `refresh_token` grants), then
//!   `Authorization: Bearer`. With no user or client configured, no
//!   credentials are needed. Refusals: 401 `User Not Authenticated` on the
//!   API; 401 `{"error":"server_error","error_description":"access_denied"}`
//!   on the token endpoint.
//!
//! What a test controls: records ([`Simulator::insert`], `insert_many`,
//! `insert_rows`, `update`, `delete`; `sys_updated_on` as given, else from
//! the simulator's clock: UTC wall time at 1 s resolution, or fixed with
//! [`Simulator::set_now`] / [`Simulator::advance_clock`]); [`Fault`]s
//! queued one per request; a token-bucket rate limit
//! ([`Simulator::rate_limit`]); a hook run after each list page is built and
//! before it is sent ([`Simulator::on_page`]), to change data mid-sync;
//! token expiry; and the log of every request ([`Simulator::requests`]).
//!
//! Storage: each table keeps its records by sys_id and a sorted
//! `(sys_updated_on, sys_id)` index. A query made only of comparisons on
//! those two fields and ordered by them (a poller's cursor query) is
//! answered by binary search, total included, so a page costs the same at
//! offset 0 or 99,000; other queries scan the table once (and sort the
//! matches only when ordered by other fields).

mod auth;
mod builder;
mod faults;
mod index;
mod query;
mod server;
mod store;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Utc};
use serde_json::{Map, Value};

pub use auth::Caller;
pub use builder::Builder;
pub use faults::Fault;

use auth::Auth;
use faults::RateLimiter;
use store::Table;

/// The datetime format of raw values, always UTC.
pub const DATETIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// `sysparm_limit` when a request gives none.
pub const DEFAULT_LIMIT: usize = 10_000;

/// The status logged for a request whose connection was dropped unanswered.
pub const DROPPED: u16 = 0;

/// One request the simulator answered (or dropped).
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// The status sent, or [`DROPPED`].
    pub status: u16,
    /// Who the request authenticated as, when it got that far.
    pub caller: Option<Caller>,
}

impl LoggedRequest {
    /// The first value of a query parameter.
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
    pub table: String,
    /// How many list pages of this table were served before this one.
    pub index: usize,
    pub query: String,
    pub offset: usize,
    pub limit: usize,
    /// Records on this page.
    pub returned: usize,
    /// `X-Total-Count`.
    pub total: usize,
}

type PageHook = Box<dyn FnMut(&PageInfo, &Simulator) + Send>;

/// What to do with a query term the table cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InvalidQueries {
    Ignore,
    NoRows,
    Reject,
}

enum Clock {
    Wall,
    Fixed(NaiveDateTime),
}

impl Clock {
    fn now(&self) -> String {
        match self {
            Clock::Wall => Utc::now().naive_utc().format(DATETIME_FORMAT).to_string(),
            Clock::Fixed(at) => at.format(DATETIME_FORMAT).to_string(),
        }
    }
}

struct State {
    tables: HashMap<String, Table>,
    clock: Clock,
    pages_served: HashMap<String, usize>,
}

struct Inner {
    base_url: String,
    addr: SocketAddr,
    invalid_queries: InvalidQueries,
    state: Mutex<State>,
    auth: Mutex<Auth>,
    faults: Mutex<VecDeque<Fault>>,
    limiter: Mutex<Option<RateLimiter>>,
    log: Mutex<Vec<LoggedRequest>>,
    page_hook: Mutex<Option<PageHook>>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A running simulated instance. Cheap to clone; all clones are the same
/// instance.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

fn parse_datetime(at: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(at, DATETIME_FORMAT)
        .unwrap_or_else(|e| panic!("{at:?} is not a `YYYY-MM-DD HH:MM:SS` datetime: {e}"))
}

/// Locks, shrugging off a panic elsewhere (a failed assertion in a hook
/// must not turn every later request into a second panic).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn object(fields: Value) -> Map<String, Value> {
    match fields {
        Value::Object(map) => map,
        other => panic!("record fields must be a JSON object, not {other}"),
    }
}

impl Simulator {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `http://127.0.0.1:PORT`, the instance URL.
    pub fn url(&self) -> String {
        self.inner.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Stops accepting connections (open ones finish their requests).
    pub fn shutdown(&self) {
        if let Some(task) = lock(&self.inner.server).take() {
            task.abort();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Adds a record and returns its sys_id. Values may be JSON strings,
    /// numbers, booleans or null (stored as text, as ServiceNow does);
    /// `sys_id`, `sys_created_on` and `sys_updated_on` are taken when given,
    /// else generated / set from the clock. Panics on an unknown table or
    /// field, so a test's typo is not silently dropped.
    pub fn insert(&self, table: &str, fields: Value) -> String {
        self.insert_many(table, [fields]).remove(0)
    }

    /// [`Simulator::insert`] for many records under one lock (100k in a
    /// fraction of a second).
    pub fn insert_many(
        &self,
        table: &str,
        records: impl IntoIterator<Item = Value>,
    ) -> Vec<String> {
        let mut state = self.state();
        let now = state.clock.now();
        let table = known_table(&mut state, table);
        records
            .into_iter()
            .map(|fields| {
                table
                    .insert(&object(fields), true, &now, "admin")
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// The fastest bulk load: `rows` give values for `fields`, in that
    /// order, as raw strings (same rules as [`Simulator::insert`] otherwise).
    pub fn insert_rows(
        &self,
        table: &str,
        fields: &[&str],
        rows: impl IntoIterator<Item = Vec<String>>,
    ) -> Vec<String> {
        let mut state = self.state();
        let now = state.clock.now();
        let table = known_table(&mut state, table);
        let columns: Vec<usize> = fields
            .iter()
            .map(|f| {
                table
                    .column(f)
                    .unwrap_or_else(|| panic!("table {} has no field {f:?}", table.name))
            })
            .collect();
        rows.into_iter()
            .map(|row| {
                assert_eq!(row.len(), columns.len(), "one value per field");
                let mut values = vec![String::new(); table.columns.len()];
                for (&column, value) in columns.iter().zip(row) {
                    values[column] = value;
                }
                table
                    .insert_values(values, &now, "admin")
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    }

    /// Changes fields of a record and stamps `sys_updated_on` (with the
    /// given value, or the clock's), counting the change in `sys_mod_count`.
    /// Returns the record. Panics on an unknown table, field or record.
    pub fn update(&self, table: &str, sys_id: &str, fields: Value) -> Value {
        let mut state = self.state();
        let now = state.clock.now();
        let table = known_table(&mut state, table);
        let fields = object(fields);
        check_fields(table, &fields);
        table
            .update(sys_id, &fields, &now, "admin")
            .unwrap_or_else(|| panic!("{} has no record {sys_id}", table.name));
        table.to_json(table.slot(sys_id).expect("just updated"))
    }

    /// Deletes a record; false when there was none.
    pub fn delete(&self, table: &str, sys_id: &str) -> bool {
        known_table(&mut self.state(), table).delete(sys_id)
    }

    /// Every record of a table, by sys_id, as raw string values.
    pub fn records(&self, table: &str) -> Vec<Value> {
        self.query(table, "")
    }

    /// The records an encoded query selects, in its order.
    pub fn query(&self, table: &str, encoded: &str) -> Vec<Value> {
        let mut state = self.state();
        let table = known_table(&mut state, table);
        let (query, problems) = query::parse(encoded, |f| table.field(f));
        assert!(problems.is_empty(), "query {encoded:?}: {problems:?}");
        let (_, slots) = table.select(&query, 0, usize::MAX);
        slots.into_iter().map(|slot| table.to_json(slot)).collect()
    }

    /// One record by sys_id.
    pub fn find(&self, table: &str, sys_id: &str) -> Option<Value> {
        let mut state = self.state();
        let table = known_table(&mut state, table);
        table.slot(sys_id).map(|slot| table.to_json(slot))
    }

    /// How many records a table holds.
    pub fn count(&self, table: &str) -> usize {
        known_table(&mut self.state(), table).len()
    }

    /// The clock's current time, `YYYY-MM-DD HH:MM:SS` UTC.
    pub fn now(&self) -> String {
        self.state().clock.now()
    }

    /// Fixes the clock at `YYYY-MM-DD HH:MM:SS` (UTC).
    pub fn set_now(&self, at: &str) {
        self.state().clock = Clock::Fixed(parse_datetime(at));
    }

    /// Moves the clock on (fixing it, if it was the wall clock).
    pub fn advance_clock(&self, by: Duration) {
        let mut state = self.state();
        let now = parse_datetime(&state.clock.now());
        state.clock = Clock::Fixed(now + chrono::Duration::from_std(by).expect("a sane duration"));
    }

    /// Back to the wall clock.
    pub fn use_wall_clock(&self) {
        self.state().clock = Clock::Wall;
    }

    /// Queues `fault` for the next `times` requests (after any already
    /// queued).
    pub fn fail_next(&self, fault: Fault, times: usize) {
        lock(&self.inner.faults).extend(std::iter::repeat_n(fault, times));
    }

    /// Faults queued and not yet served.
    pub fn pending_faults(&self) -> usize {
        lock(&self.inner.faults).len()
    }

    /// Limits API requests (not the token endpoint) to `per_second`, with
    /// a burst of as many; excess requests get 429 and `Retry-After`.
    pub fn rate_limit(&self, per_second: u32) {
        *lock(&self.inner.limiter) = Some(RateLimiter::new(per_second));
    }

    pub fn clear_rate_limit(&self) {
        *lock(&self.inner.limiter) = None;
    }

    /// Runs `hook` after each list page is built and before it is sent, with
    /// the simulator unlocked, so it may insert, update and delete. (It must
    /// not call `on_page` itself.)
    pub fn on_page(&self, hook: impl FnMut(&PageInfo, &Simulator) + Send + 'static) {
        *lock(&self.inner.page_hook) = Some(Box::new(hook));
    }

    pub fn clear_page_hook(&self) {
        *lock(&self.inner.page_hook) = None;
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.inner.log).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.inner.log).clear();
    }

    /// Invalidates every access token issued so far; the next API call with
    /// one gets 401, and the next grant issues a new token.
    pub fn expire_tokens(&self) {
        lock(&self.inner.auth).expire_access_tokens();
    }

    /// Invalidates refresh tokens as well, so only the password or client
    /// credentials grant gets a new token.
    pub fn revoke_refresh_tokens(&self) {
        lock(&self.inner.auth).revoke_refresh_tokens();
    }

    /// Distinct access tokens issued by `/oauth_token.do`.
    pub fn tokens_issued(&self) -> usize {
        lock(&self.inner.auth).tokens_issued
    }

    /// Calls to `/oauth_token.do`, granted or not.
    pub fn token_requests(&self) -> usize {
        lock(&self.inner.auth).token_requests
    }
}

fn known_table<'a>(state: &'a mut State, name: &str) -> &'a mut Table {
    state
        .tables
        .get_mut(name)
        .unwrap_or_else(|| panic!("the simulator has no table {name:?}; declare it with .table()"))
}

fn check_fields(table: &Table, fields: &Map<String, Value>) {
    if let Some(unknown) = fields.keys().find(|f| table.column(f).is_none()) {
        panic!("table {} has no field {unknown:?}", table.name);
    }
}

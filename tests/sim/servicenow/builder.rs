//! Building a simulator: declared tables (and the `sys_dictionary` rows
//! derived from them), credentials, query strictness, then binding and
//! serving.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::auth::Auth;
use super::faults::RateLimiter;
use super::store::{Column, Table};
use super::{Clock, Inner, InvalidQueries, Simulator, State, lock, parse_datetime, server};

/// Declares tables and credentials, then [`Builder::start`]s the server.
#[derive(Default)]
pub struct Builder {
    tables: Vec<(String, Vec<String>)>,
    references: Vec<(String, String, String)>,
    types: Vec<(String, String, String)>,
    users: Vec<(String, String)>,
    clients: Vec<(String, String, Duration)>,
    invalid_queries: Option<InvalidQueries>,
    rate_limit: Option<u32>,
    now: Option<String>,
}

impl Builder {
    /// A table with these fields (system fields `sys_id`, `sys_created_on`,
    /// `sys_created_by`, `sys_updated_on`, `sys_updated_by`, `sys_mod_count`
    /// are added). Well-known reference fields (`cmdb_ci`,
    /// `business_service`, `company`, `account`, `assigned_to`, …) are
    /// references without being declared so.
    pub fn table(mut self, name: &str, fields: &[&str]) -> Self {
        let fields = fields.iter().map(|f| f.to_string()).collect();
        self.tables.push((name.to_string(), fields));
        self
    }

    /// Makes `table.field` a reference to `target` (or overrides the target
    /// of a well-known one).
    pub fn reference(mut self, table: &str, field: &str, target: &str) -> Self {
        self.references
            .push((table.to_string(), field.to_string(), target.to_string()));
        self
    }

    /// Sets the `internal_type` `sys_dictionary` reports for `table.field`
    /// (otherwise guessed: `*_at`/`*_on` are `glide_date_time`, `priority`
    /// and `state` `integer`, …).
    pub fn field_type(mut self, table: &str, field: &str, internal_type: &str) -> Self {
        self.types.push((
            table.to_string(),
            field.to_string(),
            internal_type.to_string(),
        ));
        self
    }

    /// A user who may authenticate with Basic auth or the password grant.
    pub fn basic_user(mut self, user: &str, password: &str) -> Self {
        self.users.push((user.to_string(), password.to_string()));
        self
    }

    /// An OAuth client whose access tokens live `lifetime`.
    pub fn oauth_client(mut self, id: &str, secret: &str, lifetime: Duration) -> Self {
        self.clients
            .push((id.to_string(), secret.to_string(), lifetime));
        self
    }

    /// A query term on an unknown field (or with an unknown operator) is
    /// answered 400 instead of being dropped.
    pub fn strict_queries(mut self) -> Self {
        self.invalid_queries = Some(InvalidQueries::Reject);
        self
    }

    /// A query with an invalid term returns no rows, as with the instance
    /// property `glide.invalid_query.returns_no_rows=true`.
    pub fn invalid_queries_return_no_rows(mut self) -> Self {
        self.invalid_queries = Some(InvalidQueries::NoRows);
        self
    }

    /// Starts with a rate limit of this many API requests per second.
    pub fn rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = Some(per_second);
        self
    }

    /// Starts with the clock fixed at `YYYY-MM-DD HH:MM:SS` (UTC).
    pub fn now(mut self, at: &str) -> Self {
        self.now = Some(at.to_string());
        self
    }

    /// Binds 127.0.0.1 on a free port and serves on a tokio task.
    pub async fn start(self) -> Simulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the ServiceNow simulator on loopback");
        let addr = listener.local_addr().expect("bound address");
        let mut tables = HashMap::new();
        let mut dictionary = Table::new("sys_dictionary", dictionary_columns());
        for (name, fields) in &self.tables {
            let columns = fields
                .iter()
                .map(|field| {
                    let find = |list: &[(String, String, String)]| {
                        list.iter()
                            .find(|(t, f, _)| t == name && f == field)
                            .map(|(_, _, v)| v.clone())
                    };
                    Column::new(field, find(&self.references), find(&self.types))
                })
                .collect();
            let table = Table::new(name, columns);
            describe(&mut dictionary, &table);
            tables.insert(name.clone(), table);
        }
        tables.insert("sys_dictionary".to_string(), dictionary);
        let mut auth = Auth::default();
        self.users.iter().for_each(|(u, p)| auth.add_user(u, p));
        self.clients
            .iter()
            .for_each(|(id, secret, lifetime)| auth.add_client(id, secret, *lifetime));
        let clock = match &self.now {
            Some(at) => Clock::Fixed(parse_datetime(at)),
            None => Clock::Wall,
        };
        let sim = Simulator {
            inner: Arc::new(Inner {
                base_url: format!("http://{addr}"),
                addr,
                invalid_queries: self.invalid_queries.unwrap_or(InvalidQueries::Ignore),
                state: Mutex::new(State {
                    tables,
                    clock,
                    pages_served: HashMap::new(),
                }),
                auth: Mutex::new(auth),
                faults: Mutex::new(VecDeque::new()),
                limiter: Mutex::new(self.rate_limit.map(RateLimiter::new)),
                log: Mutex::new(Vec::new()),
                page_hook: Mutex::new(None),
                server: Mutex::new(None),
            }),
        };
        let task = tokio::spawn(server::serve(listener, sim.clone()));
        *lock(&sim.inner.server) = Some(task);
        sim
    }
}

fn dictionary_columns() -> Vec<Column> {
    [
        "name",
        "element",
        "internal_type",
        "reference",
        "column_label",
        "active",
    ]
    .iter()
    .map(|f| Column::new(f, None, Some("string".to_string())))
    .collect()
}

/// Adds `table`'s rows to `sys_dictionary`.
fn describe(dictionary: &mut Table, table: &Table) {
    let at = Clock::Wall.now();
    let mut row = |element: &str, internal_type: &str, reference: &str| {
        let label = element.replace('_', " ");
        let fields = json!({
            "name": table.name, "element": element, "internal_type": internal_type,
            "reference": reference, "column_label": label, "active": "true",
        });
        dictionary
            .insert(fields.as_object().expect("an object"), false, &at, "system")
            .expect("fresh sys_id");
    };
    row("", "collection", "");
    for column in &table.columns {
        row(
            &column.name,
            &column.internal_type,
            column.reference.as_deref().unwrap_or_default(),
        );
    }
}

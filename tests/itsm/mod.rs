//! What the ITSM connector's test binaries share: a ServiceNow instance
//! (the simulator) with incident and problem tables, the `[[connector]]` section an
//! operator would write for it, incidents as the instance stores them, and
//! the admin-API calls an operator makes to watch a sync.

#![allow(dead_code)] // each test binary uses its own part of this module

use chrono::NaiveDateTime;
use serde_json::{Value, json};

use crate::common::{Api, ConfigDir, PATIENCE, wait_until};
use crate::sim::servicenow::{DATETIME_FORMAT, Simulator};

/// The incident columns the simulated instance has.
pub const INCIDENT_FIELDS: &[&str] = &[
    "number",
    "priority",
    "state",
    "short_description",
    "opened_at",
    "resolved_at",
    "closed_at",
    "cmdb_ci",
    "business_service",
    "account",
    "company",
    "major_incident_state",
    "active",
    "u_major",
];

/// The problem columns the simulated instance has.
pub const PROBLEM_FIELDS: &[&str] = &[
    "number",
    "state",
    "short_description",
    "cause_notes",
    "fix_notes",
    "cmdb_ci",
    "business_service",
    "company",
];

/// The change_request columns the profile reads.
pub const CHANGE_FIELDS: &[&str] = &[
    "number",
    "state",
    "type",
    "short_description",
    "start_date",
    "end_date",
    "work_start",
    "work_end",
    "close_code",
    "cmdb_ci",
    "closed_at",
];

/// Every stream of the ServiceNow profile.
pub const ALL_STREAMS: &[&str] = &[
    "accounts",
    "contacts",
    "cis",
    "install_base",
    "incidents",
    "changes",
    "change_cis",
    "problems",
    "problem_tasks",
];

/// The user csmd reads the instance as, and its password.
pub const USER: &str = "csmd";
pub const PASSWORD: &str = "sn-password";

/// When the incidents of a test were last updated, unless it says otherwise.
pub const EPOCH: &str = "2026-11-20 08:00:00";

/// The instance's clock: stopped a day after [`EPOCH`], so every timestamp a
/// test gives (`at(n)`) lies in the instance's past, as on a real instance,
/// whose `Date` is the clock that stamps `sys_updated_on`.
pub const INSTANCE_NOW: &str = "2026-11-21 08:00:00";

/// An instance with an incident and a problem table, a user for csmd, and
/// its clock stopped at [`INSTANCE_NOW`].
pub async fn instance() -> Simulator {
    Simulator::builder()
        .table("incident", INCIDENT_FIELDS)
        .table("problem", PROBLEM_FIELDS)
        .basic_user(USER, PASSWORD)
        .now(INSTANCE_NOW)
        .start()
        .await
}

/// `EPOCH` plus `seconds`, as the instance writes datetimes.
pub fn at(seconds: i64) -> String {
    let epoch = NaiveDateTime::parse_from_str(EPOCH, DATETIME_FORMAT).expect("EPOCH");
    (epoch + chrono::Duration::seconds(seconds))
        .format(DATETIME_FORMAT)
        .to_string()
}

/// `EPOCH` plus `seconds`, as csmd's API writes times.
pub fn rfc3339_at(seconds: i64) -> String {
    let epoch = NaiveDateTime::parse_from_str(EPOCH, DATETIME_FORMAT).expect("EPOCH");
    (epoch + chrono::Duration::seconds(seconds))
        .and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Incident number `n` as the instance stores it: in progress, priority 2
/// or 1 every seventh, on CI `ci-{n % 50}`, opened the day before.
pub fn incident(n: usize) -> Value {
    json!({
        "number": format!("INC{n:07}"),
        "priority": if n.is_multiple_of(7) { "1" } else { "2" },
        "state": "2",
        "short_description": format!("Incident {n}"),
        "opened_at": "2026-11-19 10:00:00",
        "cmdb_ci": format!("ci-{}", n % 50),
        "company": "acme-company",
        "active": "true",
    })
}

/// Incident `n`, last updated `EPOCH + n` seconds, so each has its own
/// timestamp and the cursor order is the insertion order.
pub fn incident_updated_in_turn(n: usize) -> Value {
    let mut record = incident(n);
    record["sys_updated_on"] = json!(at(n as i64));
    record
}

/// The `[[connector]]` section of the ITSM connector, `itsm`, as an
/// operator writes it: basic auth, only the incidents stream, no rate
/// limit, and an interval long enough that only the sync at start and
/// explicit ones run.
pub struct Connector {
    base_url: String,
    streams: Vec<&'static str>,
    auth: String,
    password: String,
    poll_interval: &'static str,
    timeout: &'static str,
    extra: String,
    /// Secret files beside `csmd.toml`: name and content.
    secrets: Vec<(&'static str, String)>,
}

impl Connector {
    pub fn new(sn: &Simulator) -> Connector {
        Connector {
            base_url: sn.url(),
            streams: vec!["incidents"],
            auth: format!(
                "kind = \"basic\"\nusername = \"{USER}\"\npassword = {{ file = \"sn_password\" }}"
            ),
            password: PASSWORD.into(),
            poll_interval: "1h",
            timeout: "5s",
            extra: String::new(),
            secrets: Vec::new(),
        }
    }

    /// Reads these streams; the others are disabled.
    pub fn streams(mut self, streams: &[&'static str]) -> Connector {
        self.streams = streams.to_vec();
        self
    }

    /// The password written in the secret file `sn_password`.
    pub fn password(mut self, password: &str) -> Connector {
        self.password = password.into();
        self
    }

    /// The OAuth2 password grant for `client_id`, whose secret is in
    /// `sn_client_secret`.
    pub fn oauth2(mut self, client_id: &str, client_secret: &str) -> Connector {
        self.auth = format!(
            "kind = \"oauth2\"\nclient_id = \"{client_id}\"\n\
             client_secret = {{ file = \"sn_client_secret\" }}\n\
             username = \"{USER}\"\npassword = {{ file = \"sn_password\" }}"
        );
        self.secrets
            .push(("sn_client_secret", client_secret.to_string()));
        self
    }

    pub fn poll_interval(mut self, interval: &'static str) -> Connector {
        self.poll_interval = interval;
        self
    }

    /// The timeout of one request to the instance.
    pub fn timeout(mut self, timeout: &'static str) -> Connector {
        self.timeout = timeout;
        self
    }

    /// A secret file beside `csmd.toml`, for TOML given to [`Connector::with`].
    pub fn secret(mut self, file: &'static str, value: &str) -> Connector {
        self.secrets.push((file, value.to_string()));
        self
    }

    /// TOML appended after the section, like `[connector.streams.incidents]`.
    pub fn with(mut self, toml: &str) -> Connector {
        self.extra += "\n";
        self.extra += toml;
        self
    }

    /// A configuration directory holding this connector and its secrets.
    pub fn config(self) -> ConfigDir {
        let mut config = ConfigDir::new();
        let secret = |file: &str, value: &str| {
            std::fs::write(config.dir().join(file), format!("{value}\n")).expect("write secret");
        };
        secret("sn_password", &self.password);
        for (file, value) in &self.secrets {
            secret(file, value);
        }
        let disabled: String = ALL_STREAMS
            .iter()
            .filter(|s| !self.streams.contains(s))
            .map(|s| format!("{s} = {{ enabled = false }}\n"))
            .collect();
        config.extra = format!(
            r#"
[[connector]]
name = "itsm"
profile = "servicenow"
base_url = "{url}"
poll_interval = "{interval}"
rate_limit = "off"
timeout = "{timeout}"
[connector.auth]
{auth}
[connector.streams]
{disabled}{extra}
"#,
            url = self.base_url,
            interval = self.poll_interval,
            timeout = self.timeout,
            auth = self.auth,
            extra = self.extra,
        );
        config
    }
}

/// The `itsm` connector as `GET /api/v1/connectors` shows it.
pub async fn connector(api: &Api) -> Value {
    let reply = api.admin_get("/api/v1/connectors").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["connectors"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "itsm"))
        .unwrap_or_else(|| panic!("no connector itsm in {}", reply.text))
        .clone()
}

/// Waits for the end of the sync the connector runs at start, successful
/// or not; returns the connector's health.
pub async fn first_sync(api: &Api) -> Value {
    wait_until("the sync at start", PATIENCE, || async {
        let health = &connector(api).await["health"];
        !health["last_success"].is_null() || !health["last_error"].is_null()
    })
    .await;
    connector(api).await["health"].clone()
}

/// `POST /api/v1/connectors/itsm/sync`: a sync now; its report.
pub async fn sync_now(api: &Api) -> Value {
    let reply = api.admin_post("/api/v1/connectors/itsm/sync").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

/// How many records of a kind (`incidents`, `problems`, …) the store has.
pub async fn stored_count(api: &Api, kind: &str) -> u64 {
    let reply = api.admin_get(&format!("/api/v1/records/{kind}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["count"].as_u64().expect("count")
}

/// Waits until the engine has applied everything up to record `last` (the
/// last one read), then checks the store holds `count` records of the kind.
/// (Waiting on one record, not polling the count, which is a scan.)
pub async fn assert_all_stored(api: &Api, kind: &str, last: &str, count: u64) {
    wait_stored(api, kind, last).await;
    assert_eq!(stored_count(api, kind).await, count, "{kind} in the store");
}

/// One stored record, or `None`.
pub async fn stored(api: &Api, kind: &str, id: &str) -> Option<Value> {
    let reply = api.admin_get(&format!("/api/v1/records/{kind}/{id}")).await;
    match reply.status {
        200 => Some(reply.json),
        404 => None,
        other => panic!("GET record {kind}/{id}: {other} {}", reply.text),
    }
}

/// Waits until the engine has stored record `id`; returns it. The engine
/// applies the journal in order, so every record read before it is
/// applied too: tests use a fresh record as a barrier before asserting
/// that something else did *not* change.
pub async fn wait_stored(api: &Api, kind: &str, id: &str) -> Value {
    wait_until(&format!("{kind} {id} in the store"), PATIENCE, || async {
        stored(api, kind, id).await.is_some()
    })
    .await;
    stored(api, kind, id).await.expect("just seen")
}

/// The `sysparm_query` of each list request for incidents that read a
/// page (not the one-record probe of the columns), in order.
pub fn page_queries(sn: &Simulator) -> Vec<String> {
    sn.requests()
        .iter()
        .filter(|r| r.path.ends_with("/table/incident") && r.param("sysparm_limit") == Some("1000"))
        .map(|r| r.param("sysparm_query").unwrap_or_default().to_string())
        .collect()
}

/// The query of a page after the cursor `(updated, id)`, as the profile
/// writes it.
pub fn query_after(updated: &str, id: &str) -> String {
    format!(
        "sys_updated_on>={updated}^sys_id>{id}^ORsys_updated_on>{updated}\
         ^ORDERBYsys_updated_on^ORDERBYsys_id"
    )
}

/// Runs the `csmd` CLI against the daemon behind `api`, as an operator on
/// another host would: `--url`, and the admin token in `CSMD_ADMIN_TOKEN`.
pub async fn cli(api: &Api, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::from(crate::common::csmd_command());
    command
        .args(args)
        .arg("--url")
        .arg(&api.base)
        .env("CSMD_ADMIN_TOKEN", crate::common::ADMIN_TOKEN)
        .stdin(std::process::Stdio::null());
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("the CLI finishes in time")
        .expect("run the csmd CLI")
}

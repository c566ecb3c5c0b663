//! What the black-box tests share: a configuration directory in a temp dir,
//! the daemon started in-process or as the real binary, and the clients a
//! webhook sender, an operator and systemd would use against it. Nothing
//! here reaches into the daemon; everything goes over HTTP, signals, the
//! notify socket or the CLI.

#![allow(dead_code)] // each test binary uses its own part of this module

mod alertmanager;
mod daemon;
mod raw_http;
mod smtp;

// Re-exported for the test binaries; each uses some of them.
#[allow(unused_imports)]
pub use alertmanager::{Alertmanager, MONITORING_TOKEN, add_monitoring_connector};
#[allow(unused_imports)]
pub use daemon::{Daemon, csmd_binary, csmd_command, run_cli};
#[allow(unused_imports)]
pub use raw_http::RawConnection;
#[allow(unused_imports)]
pub use smtp::{Received, SmtpServer};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

/// The admin API token every test configuration uses.
pub const ADMIN_TOKEN: &str = "admin-token-used-by-the-tests";

/// How long a test waits for something that normally takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// reqwest is built without a default rustls provider; pick one per process.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Polls `check` every few milliseconds until it holds; fails the test
/// after `timeout`, naming what it waited for.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// One webhook body holding one record of the webhook-json profile.
pub fn alert_body(id: &str, summary: &str) -> String {
    serde_json::json!({
        "alerts": [{ "id": id, "status": "firing", "summary": summary }]
    })
    .to_string()
}

/// The recorded sample of the webhook-json connector: two alerts.
pub fn two_alerts_fixture() -> Vec<u8> {
    std::fs::read(repo_path(
        "connectors/webhook-json/fixtures/two-alerts.json",
    ))
    .expect("the recorded webhook-json fixture")
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A Standard Webhooks signing key, as a sender holds it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    pub fn random() -> SigningKey {
        SigningKey(rand::random::<[u8; 24]>().to_vec())
    }

    /// The `whsec_…` form written in the daemon's secret file.
    pub fn secret(&self) -> String {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    /// One `v1,<base64>` signature of a message.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = csmd::http::auth::sign(&self.0, id, &timestamp.to_string(), body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac)
        )
    }

    /// The three Standard Webhooks headers of a message signed with this key.
    pub fn headers(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
        signed_headers(id, timestamp, &self.signature(id, timestamp, body))
    }
}

/// Standard Webhooks headers with a given `webhook-signature` value.
pub fn signed_headers(id: &str, timestamp: i64, signature: &str) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), signature.into()),
    ]
}

pub fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {token}"))]
}

/// How a test connector authenticates its webhooks.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    StandardWebhooks(Vec<SigningKey>),
}

/// A configuration directory: `csmd.toml`, secret files, `customers/` and
/// the data directory, all in one temp dir that goes away with the test.
pub struct ConfigDir {
    dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub admin_token: Option<String>,
    pub max_body_bytes: usize,
    pub shutdown_grace: String,
    pub connectors: Vec<(String, Auth)>,
    /// Lines added to `[email]` (transport, retries…).
    pub email: String,
    /// Appended verbatim, to write a broken configuration on purpose.
    pub extra: String,
}

impl ConfigDir {
    /// Port 0, the admin token, one customer (`acme`), no connector yet.
    pub fn new() -> ConfigDir {
        let dir = tempfile::Builder::new()
            .prefix("csmd-test-")
            .tempdir()
            .expect("temp dir");
        let config = ConfigDir {
            dir,
            listen: "127.0.0.1:0".parse().expect("address"),
            admin_token: Some(ADMIN_TOKEN.into()),
            max_body_bytes: 4096,
            shutdown_grace: "5s".into(),
            connectors: Vec::new(),
            email: String::new(),
            extra: String::new(),
        };
        std::fs::create_dir_all(config.customers_dir()).expect("customers dir");
        config.write_customer("acme", "ACME Logistics SAS");
        config
    }

    /// For the real binary, which cannot tell us the port it bound: a port
    /// that was free a moment ago.
    pub fn on_free_port(mut self) -> ConfigDir {
        self.listen = free_port();
        self
    }

    pub fn with_connector(mut self, name: &str, auth: Auth) -> ConfigDir {
        self.connectors.push((name.into(), auth));
        self
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("csmd.toml")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn customers_dir(&self) -> PathBuf {
        self.dir.path().join("customers")
    }

    pub fn write_customer(&self, id: &str, name: &str) {
        let text = format!(
            "id = \"{id}\"\nname = \"{name}\"\ntime_zone = \"Europe/Paris\"\n\n\
             [[contact]]\nname = \"Primary contact\"\nemail = \"primary@{id}.example\"\n\
             roles = [\"primary\", \"maintenance\"]\n"
        );
        std::fs::write(self.customers_dir().join(format!("{id}.toml")), text)
            .expect("write customer file");
    }

    /// Writes `csmd.toml` and the secret files it names. Secrets are files
    /// next to it (`{ file = "…" }`), never inline and never process-wide
    /// environment variables, so parallel tests cannot see each other's.
    pub fn write(&self) {
        let mut toml = String::from("[daemon]\n");
        toml += "data_dir = \"data\"\n";
        toml += &format!("listen = \"{}\"\n", self.listen);
        if let Some(token) = &self.admin_token {
            self.write_secret("admin_token", token);
            toml += "admin_token = { file = \"admin_token\" }\n";
        }
        toml += "customers_dir = \"customers\"\n";
        toml += &format!(
            "connector_dirs = [{}]\n",
            toml::Value::String(repo_path("connectors").display().to_string())
        );
        toml += &format!("max_body_bytes = {}\n", self.max_body_bytes);
        toml += &format!("shutdown_grace = \"{}\"\n", self.shutdown_grace);
        toml += "log_level = \"info\"\n\n";
        toml += "[email]\nfrom = \"Test CSM <csm@example.net>\"\n";
        toml += &self.email;
        for (name, auth) in &self.connectors {
            toml += &format!(
                "\n[[connector]]\nname = \"{name}\"\nprofile = \"webhook-json\"\n[connector.webhook]\n"
            );
            match auth {
                Auth::None => toml += "auth = \"none\"\n",
                Auth::Bearer(token) => {
                    let file = format!("{name}.token");
                    self.write_secret(&file, token);
                    toml += &format!("auth = \"bearer\"\ntoken = {{ file = \"{file}\" }}\n");
                }
                Auth::StandardWebhooks(keys) => {
                    let mut files = Vec::new();
                    for (i, key) in keys.iter().enumerate() {
                        let file = format!("{name}.whsec{i}");
                        self.write_secret(&file, &key.secret());
                        files.push(format!("{{ file = \"{file}\" }}"));
                    }
                    toml += &format!(
                        "auth = \"standard-webhooks\"\nsecrets = [{}]\ntolerance = \"5m\"\n",
                        files.join(", ")
                    );
                }
            }
        }
        toml += &self.extra;
        std::fs::write(self.path(), toml).expect("write csmd.toml");
    }

    fn write_secret(&self, file: &str, value: &str) {
        std::fs::write(self.dir.path().join(file), format!("{value}\n")).expect("write secret");
    }

    /// Loads the configuration exactly as `csmd run` does.
    pub fn load(&self) -> csmd::config::Config {
        csmd::config::load(&self.path()).unwrap_or_else(|d| panic!("test configuration: {d}"))
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    socket.local_addr().expect("local addr")
}

/// An HTTP answer: status, headers and the body as JSON (`Null` when it is
/// not JSON; the raw text is kept too).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// The `error` message of a JSON error body.
    pub fn error(&self) -> &str {
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no JSON error in {} {:?}", self.status, self.text))
    }
}

/// A client of the daemon's HTTP listener.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        install_crypto();
        Api {
            base: format!("http://{addr}"),
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET on the admin API with the configured admin token.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(ADMIN_TOKEN))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POST (no body) on the admin API with the configured admin token.
    pub async fn admin_post(&self, path: &str) -> Reply {
        self.send(self.http.post(self.url(path)).bearer_auth(ADMIN_TOKEN))
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POST a JSON body on the admin API with the configured admin token.
    pub async fn admin_post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(ADMIN_TOKEN)
                .json(body),
        )
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// GET with some bearer token.
    pub async fn send_get_with_token(&self, path: &str, token: &str) -> Reply {
        self.send(self.http.get(self.url(path)).bearer_auth(token))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// POSTs a webhook; `Err` only when no answer came back.
    pub async fn try_post_webhook(
        &self,
        connector: &str,
        headers: &[(String, String)],
        body: impl Into<reqwest::Body>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .http
            .post(self.url(&format!("/webhooks/{connector}")))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        self.send(request).await
    }

    pub async fn post_webhook(
        &self,
        connector: &str,
        headers: &[(String, String)],
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        self.try_post_webhook(connector, headers, body)
            .await
            .unwrap_or_else(|e| panic!("POST /webhooks/{connector}: {e}"))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            text,
            json,
        })
    }

    /// Every journal entry, paged through `/api/v1/events?after=`.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .admin_get(&format!("/api/v1/events?after={after}&limit=1000"))
                .await;
            assert_eq!(page.status, 200, "{}", page.text);
            let batch = page.json["events"]
                .as_array()
                .expect("events array")
                .clone();
            if batch.is_empty() {
                return events;
            }
            after = page.json["next_after"].as_u64().expect("next_after");
            events.extend(batch);
        }
    }

    /// The number of journal entries the admin API reports.
    pub async fn journal_total(&self) -> u64 {
        let page = self.admin_get("/api/v1/events?limit=1").await;
        assert_eq!(page.status, 200, "{}", page.text);
        page.json["total"].as_u64().expect("total")
    }

    /// Every alert the admin API lists (`GET /api/v1/alerts`).
    pub async fn alerts(&self) -> Vec<Value> {
        let reply = self.admin_get("/api/v1/alerts").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["alerts"].as_array().expect("alerts").clone()
    }

    /// The alert with this `source_id` (an Alertmanager or Grafana
    /// fingerprint), if stored.
    pub async fn alert(&self, source_id: &str) -> Option<Value> {
        self.alerts()
            .await
            .into_iter()
            .find(|a| a["source_id"] == source_id)
    }

    /// The plain-text body of an outbox message (`GET /api/v1/outbox/{id}`;
    /// the listing leaves it out).
    pub async fn outbox_text(&self, message: &Value) -> String {
        let id = message["id"].as_str().expect("the message's id");
        let reply = self.admin_get(&format!("/api/v1/outbox/{id}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        reply.json["text"]
            .as_str()
            .expect("a text body")
            .to_string()
    }

    pub async fn metrics(&self) -> String {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200);
        reply.text
    }
}

/// The value of one sample in a Prometheus text exposition (0 when the
/// series does not exist yet, as Prometheus would treat a counter).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let mut have: Vec<&str> = label_text.split(',').filter(|s| !s.is_empty()).collect();
            have.sort_unstable();
            let mut want: Vec<&str> = wanted.iter().map(String::as_str).collect();
            want.sort_unstable();
            (metric_name == name && have == want).then(|| value.parse().expect("sample value"))
        })
        .unwrap_or(0.0)
}

/// The daemon started in-process, as `csmd run` starts it, on port 0.
pub struct TestApp {
    pub config: ConfigDir,
    pub api: Api,
    running: Option<csmd::app::Running>,
}

impl TestApp {
    pub async fn start(config: ConfigDir) -> TestApp {
        config.write();
        let running = csmd::app::start(config.load())
            .await
            .expect("the daemon starts");
        let api = Api::new(running.addr());
        TestApp {
            config,
            api,
            running: Some(running),
        }
    }

    pub fn running(&self) -> &csmd::app::Running {
        self.running.as_ref().expect("running")
    }

    /// Stops the daemon and starts it again on the same configuration and
    /// store.
    pub async fn restart(mut self) -> TestApp {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        TestApp::start(self.config).await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

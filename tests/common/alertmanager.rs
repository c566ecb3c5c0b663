//! A real Prometheus Alertmanager for the monitoring tests: Debian's
//! `prometheus-alertmanager` (0.25), run as a child process in a temp dir
//! with one route to one webhook receiver, the way an operator points it at
//! csmd's `POST /webhooks/{connector}` with a bearer token
//! ([`add_monitoring_connector`] configures csmd's side).
//!
//! The test plays Prometheus: [`Alertmanager::fire`] posts alerts to
//! `/api/v2/alerts` and [`Alertmanager::resolve`] posts one of them again
//! with `endsAt` in the past. Alertmanager then groups, delivers (payload
//! version 4), deduplicates and retries as it does in production; only its
//! timers are short:
//!
//! - `group_wait` ([`GROUP_WAIT`]): from the first alert of a new group to
//!   its first delivery;
//! - `group_interval` ([`GROUP_INTERVAL`]): between later deliveries of a
//!   group, so a resolution or a new alert in a group that was already
//!   notified arrives on the next tick;
//! - `repeat_interval` (1h): an unchanged group is never delivered again
//!   within a test.
//!
//! A receiver that answers 5xx (or cannot be reached) is retried with
//! exponential backoff (the first retry 0.25–0.75 s later, then growing)
//! for 10 s, and again on the group's next flush, until it accepts; a 4xx
//! is not retried.
//!
//! Clustering is off (`--cluster.listen-address=`), so it binds only its
//! HTTP port on 127.0.0.1 and several can run at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ConfigDir, PATIENCE, free_port, install_crypto};

/// The Debian binary, when `prometheus-alertmanager` is not on `PATH`.
const DEBIAN_BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// Wait before the first delivery of a new group.
pub const GROUP_WAIT: Duration = Duration::from_millis(500);

/// Wait between deliveries of one group (resolutions, new alerts).
pub const GROUP_INTERVAL: Duration = Duration::from_secs(1);

/// How often `/-/ready` is asked while Alertmanager starts.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// How many times a start is tried again when the free port was taken by
/// someone else between choosing it and Alertmanager binding it.
const PORT_TRIES: usize = 3;

/// The bearer token of the connector [`add_monitoring_connector`] adds.
pub const MONITORING_TOKEN: &str = "alertmanager-token";

/// Adds to `config` the connector an operator points Alertmanager at: an
/// `alertmanager` connector, `monitoring`, taking bearer token
/// [`MONITORING_TOKEN`] (from a file), and `[disruptions]` timers of a
/// second, so a notice goes out a second after the first alert.
pub fn add_monitoring_connector(config: &mut ConfigDir) {
    std::fs::write(
        config.dir().join("am_token"),
        format!("{MONITORING_TOKEN}\n"),
    )
    .expect("token file");
    config.extra += r#"
[disruptions]
group_window = "1s"
group_interval = "1s"

[[connector]]
name = "monitoring"
profile = "alertmanager"
[connector.webhook]
auth = "bearer"
token = { file = "am_token" }
"#;
}

/// A running Alertmanager on 127.0.0.1, killed when dropped.
pub struct Alertmanager {
    dir: tempfile::TempDir,
    child: Option<Child>,
    base: String,
    http: reqwest::Client,
    /// The alerts fired so far, by their labels, as last posted: what
    /// [`Self::resolve`] posts again.
    fired: Mutex<HashMap<String, Value>>,
    /// How long the last start took, from spawning to `/-/ready`.
    started_in: Duration,
}

impl Alertmanager {
    /// Starts Alertmanager delivering every alert to `webhook_url` with
    /// `Authorization: Bearer <bearer_token>`, alerts grouped by
    /// `alertname`, resolutions sent too. Returns once `/-/ready` answers.
    pub async fn start(webhook_url: &str, bearer_token: &str) -> Alertmanager {
        Alertmanager::start_grouped_by(webhook_url, bearer_token, &["alertname"]).await
    }

    /// [`Self::start`] with other grouping labels: `&["..."]` groups by
    /// every label (one delivery per distinct alert), `&[]` puts all alerts
    /// in one group.
    pub async fn start_grouped_by(
        webhook_url: &str,
        bearer_token: &str,
        group_by: &[&str],
    ) -> Alertmanager {
        install_crypto();
        let binary = binary();
        let dir = tempfile::Builder::new()
            .prefix("csmd-alertmanager-")
            .tempdir()
            .expect("temp dir for Alertmanager");
        let config = config_yaml(webhook_url, bearer_token, group_by);
        std::fs::write(dir.path().join("alertmanager.yml"), config)
            .expect("write alertmanager.yml");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let mut alertmanager = Alertmanager {
            dir,
            child: None,
            base: String::new(),
            http,
            fired: Mutex::new(HashMap::new()),
            started_in: Duration::ZERO,
        };
        for attempt in 1..=PORT_TRIES {
            let began = Instant::now();
            let addr = free_port();
            alertmanager.base = format!("http://{addr}");
            alertmanager.child = Some(alertmanager.spawn(&binary, &addr.to_string()));
            match alertmanager.wait_ready().await {
                Ok(()) => {
                    alertmanager.started_in = began.elapsed();
                    return alertmanager;
                }
                Err(why) => {
                    let log = alertmanager.log();
                    if attempt < PORT_TRIES && log.contains("address already in use") {
                        continue; // someone took the port: try another
                    }
                    panic!("Alertmanager did not get ready: {why}\n{log}");
                }
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// The base URL of its HTTP API, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// How long it took from spawning the binary to `/-/ready` answering.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Posts alerts as Prometheus does (`POST /api/v2/alerts`): each an
    /// object with `labels`, and optionally `annotations`, `startsAt`,
    /// `endsAt` (in the past: resolved) and `generatorURL`. `startsAt`
    /// defaults to now, filled in here so that [`Self::resolve`] posts the
    /// same start again.
    pub async fn fire(&self, alerts: &[Value]) {
        let now = timestamp(chrono::Utc::now());
        let alerts: Vec<Value> = alerts
            .iter()
            .map(|alert| {
                let mut object = alert
                    .as_object()
                    .unwrap_or_else(|| panic!("an alert is a JSON object: {alert}"))
                    .clone();
                assert!(
                    object.get("labels").is_some_and(Value::is_object),
                    "an alert has labels: {alert}"
                );
                object
                    .entry("startsAt")
                    .or_insert_with(|| Value::String(now.clone()));
                Value::Object(object)
            })
            .collect();
        self.post_alerts(&alerts).await;
        let mut fired = self.fired.lock().expect("fired alerts");
        for alert in alerts {
            fired.insert(alert["labels"].to_string(), alert);
        }
    }

    /// Resolves the alert with these labels (a JSON object): posts it again
    /// as it was last fired (annotations, start) with `endsAt` one second
    /// ago (never before its start), as Prometheus does when the condition
    /// clears. Alertmanager delivers the resolution on the group's next
    /// `group_interval` tick.
    pub async fn resolve(&self, labels: &Value) {
        assert!(labels.is_object(), "labels are a JSON object: {labels}");
        let key = labels.to_string();
        let now = chrono::Utc::now();
        let mut alert = self
            .fired
            .lock()
            .expect("fired alerts")
            .get(&key)
            .cloned()
            .unwrap_or_else(|| serde_json::json!({ "labels": labels }));
        let mut ends = now - chrono::Duration::seconds(1);
        if let Some(starts) = alert["startsAt"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            ends = ends.max(starts.with_timezone(&chrono::Utc));
        }
        alert["endsAt"] = Value::String(timestamp(ends));
        self.post_alerts(std::slice::from_ref(&alert)).await;
        self.fired.lock().expect("fired alerts").insert(key, alert);
    }

    /// Every alert Alertmanager holds (`GET /api/v2/alerts`), as it lists
    /// them: with `fingerprint`, `status.state` and `receivers`.
    pub async fn alerts(&self) -> Vec<Value> {
        let url = format!("{}/api/v2/alerts", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}\n{}", self.log()));
        assert_eq!(response.status().as_u16(), 200, "GET {url}");
        response.json().await.expect("the alerts are JSON")
    }

    /// What Alertmanager logged (logfmt, debug level), over its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The configuration file it runs with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("alertmanager.yml")
    }

    async fn post_alerts(&self, alerts: &[Value]) {
        let url = format!("{}/api/v2/alerts", self.base);
        let response = self
            .http
            .post(&url)
            .json(alerts)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(
            status,
            200,
            "Alertmanager refused the alerts {}: {text}",
            Value::from(alerts.to_vec())
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("alertmanager.log")
    }

    fn spawn(&mut self, binary: &Path, listen: &str) -> Child {
        if let Some(mut old) = self.child.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the Alertmanager log");
        let stdout = log.try_clone().expect("clone the log file");
        Command::new(binary)
            .arg(format!("--config.file={}", self.config_path().display()))
            .arg(format!(
                "--storage.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg(format!("--web.external-url=http://{listen}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
    }

    /// Polls `/-/ready` until it answers 200; `Err` when the process ended
    /// or [`PATIENCE`] ran out.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let url = format!("{}/-/ready", self.base);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("look at Alertmanager") {
                self.child = None;
                return Err(format!("it exited ({status})"));
            }
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{url} did not answer 200 within {PATIENCE:?}"));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        // A failed test must not leave an Alertmanager behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The binary, or a failed test saying how to install it.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus-alertmanager"))
            .find(|candidate| candidate.is_file())
    });
    if let Some(found) = on_path {
        return found;
    }
    let debian = PathBuf::from(DEBIAN_BINARY);
    assert!(
        debian.is_file(),
        "the Alertmanager tests need a real Prometheus Alertmanager, and \
         `prometheus-alertmanager` is neither on PATH nor at {DEBIAN_BINARY}: \
         run scripts/test (it installs it), or \
         `apt-get install prometheus-alertmanager`"
    );
    debian
}

/// One route to one webhook receiver. Strings are written as JSON strings,
/// which YAML reads as its double-quoted scalars.
fn config_yaml(webhook_url: &str, bearer_token: &str, group_by: &[&str]) -> String {
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    let group_by: Vec<String> = group_by.iter().map(|label| quote(label)).collect();
    format!(
        "route:\n\
         \x20 receiver: csmd\n\
         \x20 group_by: [{group_by}]\n\
         \x20 group_wait: {group_wait}ms\n\
         \x20 group_interval: {group_interval}ms\n\
         \x20 repeat_interval: 1h\n\
         receivers:\n\
         \x20 - name: csmd\n\
         \x20   webhook_configs:\n\
         \x20     - url: {url}\n\
         \x20       send_resolved: true\n\
         \x20       max_alerts: 0\n\
         \x20       http_config:\n\
         \x20         authorization:\n\
         \x20           type: Bearer\n\
         \x20           credentials: {token}\n",
        group_by = group_by.join(", "),
        group_wait = GROUP_WAIT.as_millis(),
        group_interval = GROUP_INTERVAL.as_millis(),
        url = quote(webhook_url),
        token = quote(bearer_token),
    )
}

/// RFC 3339 in UTC with milliseconds, as Prometheus writes its times.
fn timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

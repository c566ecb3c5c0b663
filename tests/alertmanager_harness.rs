//! The Alertmanager test harness itself, against a plain loopback webhook
//! receiver: what a real Prometheus Alertmanager 0.25 delivers (headers,
//! payload version 4, firing then resolved) and that it retries a receiver
//! that answered 500.

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use common::{Alertmanager, PATIENCE};

const TOKEN: &str = "alertmanager-token-used-by-the-tests";

/// One POST the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Delivery {
    headers: HeaderMap,
    body: Value,
    answered: u16,
    at: Instant,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Recorded {
    deliveries: Mutex<Vec<Delivery>>,
    /// The status the next deliveries are answered with (200 when unset).
    answer: AtomicU16,
}

/// A webhook receiver on 127.0.0.1 that records every POST to `/hook`.
struct Receiver {
    url: String,
    recorded: Arc<Recorded>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let recorded = Arc::new(Recorded::default());
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the receiver runs");
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            recorded,
            server,
        }
    }

    fn answer_with(&self, status: u16) {
        self.recorded.answer.store(status, Ordering::SeqCst);
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.recorded.deliveries.lock().expect("deliveries").clone()
    }

    /// The deliveries once there are at least `n`.
    async fn wait_for(&self, n: usize, alertmanager: &Alertmanager) -> Vec<Delivery> {
        self.wait_until(&format!("{n} webhook deliveries"), alertmanager, |d| {
            d.len() >= n
        })
        .await
    }

    /// The deliveries once `check` holds for them; fails the test after
    /// [`PATIENCE`] with what arrived and Alertmanager's log.
    async fn wait_until(
        &self,
        what: &str,
        alertmanager: &Alertmanager,
        check: impl Fn(&[Delivery]) -> bool,
    ) -> Vec<Delivery> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let deliveries = self.deliveries();
            if check(&deliveries) {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {PATIENCE:?} waiting for {what}; got {deliveries:#?}\n{}",
                alertmanager.log()
            );
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(recorded): State<Arc<Recorded>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let answered = match recorded.answer.load(Ordering::SeqCst) {
        0 => 200,
        status => status,
    };
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    recorded
        .deliveries
        .lock()
        .expect("deliveries")
        .push(Delivery {
            headers,
            body,
            answered,
            at: Instant::now(),
        });
    StatusCode::from_u16(answered).expect("a status code")
}

fn instance_down_labels() -> Value {
    json!({
        "alertname": "InstanceDown",
        "instance": "core-sw-par-01:9100",
        "job": "node",
        "service": "vpn",
        "severity": "critical",
    })
}

fn instance_down() -> Value {
    json!({
        "labels": instance_down_labels(),
        "annotations": {
            "summary": "Instance core-sw-par-01:9100 down",
            "description": "core-sw-par-01:9100 of job node has been down for more than 1 minute.",
        },
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
    })
}

/// The one alert of a version 4 payload, after checking the envelope.
fn only_alert<'a>(payload: &'a Value, status: &str) -> &'a Value {
    assert_eq!(payload["version"], "4", "{payload:#}");
    assert_eq!(payload["status"], status, "{payload:#}");
    assert_eq!(payload["receiver"], "csmd", "{payload:#}");
    assert_eq!(payload["truncatedAlerts"], 0, "{payload:#}");
    assert_eq!(
        payload["groupLabels"],
        json!({ "alertname": "InstanceDown" }),
        "{payload:#}"
    );
    assert_eq!(
        payload["commonLabels"],
        instance_down_labels(),
        "{payload:#}"
    );
    let alerts = payload["alerts"].as_array().expect("an alerts array");
    assert_eq!(alerts.len(), 1, "{payload:#}");
    let alert = &alerts[0];
    assert_eq!(alert["status"], status, "{payload:#}");
    assert_eq!(alert["labels"], instance_down_labels(), "{payload:#}");
    assert_eq!(
        alert["annotations"]["summary"], "Instance core-sw-par-01:9100 down",
        "{payload:#}"
    );
    let fingerprint = alert["fingerprint"].as_str().expect("a fingerprint");
    assert_eq!(fingerprint.len(), 16, "{payload:#}");
    assert!(
        fingerprint.bytes().all(|b| b.is_ascii_hexdigit()),
        "{payload:#}"
    );
    alert
}

/// The recorded fixtures of the alertmanager connector were sent by this
/// Alertmanager: a live payload has the same fields, alert fields and
/// labels.
fn assert_same_shape(payload: &Value, fixture: &str) {
    let path = common::repo_path(&format!("connectors/alertmanager/fixtures/{fixture}"));
    let recorded: Value = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())),
    )
    .expect("the fixture is JSON");
    let keys = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    assert_eq!(keys(payload), keys(&recorded), "{fixture} vs {payload:#}");
    assert_eq!(
        keys(&payload["alerts"][0]),
        keys(&recorded["alerts"][0]),
        "{fixture} vs {payload:#}"
    );
    for field in [
        "status",
        "version",
        "receiver",
        "groupKey",
        "groupLabels",
        "commonLabels",
    ] {
        assert_eq!(
            payload[field], recorded[field],
            "{field}: {fixture} vs {payload:#}"
        );
    }
    assert_eq!(
        payload["alerts"][0]["fingerprint"],
        recorded["alerts"][0]["fingerprint"]
    );
}

#[tokio::test]
async fn delivers_a_firing_alert_then_its_resolution_with_the_bearer_token() {
    let receiver = Receiver::start().await;
    let alertmanager = Alertmanager::start(&receiver.url, TOKEN).await;
    eprintln!("Alertmanager ready in {:?}", alertmanager.started_in());

    let fired = Instant::now();
    alertmanager.fire(&[instance_down()]).await;
    let deliveries = receiver.wait_for(1, &alertmanager).await;
    eprintln!("firing delivered after {:?}", deliveries[0].at - fired);
    let firing = &deliveries[0];
    assert_eq!(
        firing.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(firing.header("content-type"), Some("application/json"));
    assert!(
        firing
            .header("user-agent")
            .is_some_and(|agent| agent.starts_with("Alertmanager/")),
        "{:?}",
        firing.headers
    );
    let alert = only_alert(&firing.body, "firing");
    let fingerprint = alert["fingerprint"].clone();
    assert_same_shape(&firing.body, "firing.json");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z", "{alert:#}");

    let resolved_at = Instant::now();
    alertmanager.resolve(&instance_down_labels()).await;
    let deliveries = receiver.wait_for(2, &alertmanager).await;
    eprintln!(
        "resolution delivered after {:?}",
        deliveries[1].at - resolved_at
    );
    let resolved = &deliveries[1];
    assert_eq!(
        resolved.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let alert = only_alert(&resolved.body, "resolved");
    assert_eq!(alert["fingerprint"], fingerprint);
    assert_same_shape(&resolved.body, "resolved.json");
    assert_eq!(
        alert["startsAt"], firing.body["alerts"][0]["startsAt"],
        "the resolution keeps the alert's start"
    );
    assert_ne!(alert["endsAt"], "0001-01-01T00:00:00Z", "{alert:#}");
    assert_eq!(firing.body["groupKey"], resolved.body["groupKey"]);
}

#[tokio::test]
async fn retries_a_delivery_the_receiver_answered_500() {
    let receiver = Receiver::start().await;
    receiver.answer_with(500);
    let alertmanager = Alertmanager::start(&receiver.url, TOKEN).await;

    alertmanager.fire(&[instance_down()]).await;
    let deliveries = receiver.wait_for(2, &alertmanager).await;
    assert_eq!(deliveries[0].answered, 500);
    eprintln!("retried after {:?}", deliveries[1].at - deliveries[0].at);
    let first = only_alert(&deliveries[0].body, "firing");
    let again = only_alert(&deliveries[1].body, "firing");
    assert_eq!(first["fingerprint"], again["fingerprint"]);
    assert_eq!(
        deliveries[1].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // Once the receiver accepts, the retries succeed.
    receiver.answer_with(200);
    let accepted = receiver
        .wait_until("a delivery answered 200", &alertmanager, |d| {
            d.iter().any(|d| d.answered == 200)
        })
        .await
        .into_iter()
        .find(|d| d.answered == 200)
        .expect("an accepted delivery");
    assert_eq!(
        only_alert(&accepted.body, "firing")["fingerprint"],
        first["fingerprint"]
    );
}

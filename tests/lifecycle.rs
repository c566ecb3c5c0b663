//! The real `csmd` binary as systemd and an operator drive it: SIGTERM
//! with a request in flight, the sd_notify conversation, SIGHUP reloads
//! (good and broken), the CLI against the running daemon, and a second
//! daemon refused on the same data directory.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    ADMIN_TOKEN, Auth, ConfigDir, Daemon, PATIENCE, RawConnection, alert_body, bearer, run_cli,
    wait_until,
};
use serde_json::Value;

const TOKEN: &str = "lifecycle-bearer-token";

fn monitoring() -> ConfigDir {
    ConfigDir::new()
        .on_free_port()
        .with_connector("monitoring", Auth::Bearer(TOKEN.into()))
}

/// Sends the head of a webhook with `Expect: 100-continue` and waits for
/// the 100: from then on the handler is running and reading the body.
async fn start_request(daemon: &Daemon, body_len: usize) -> RawConnection {
    let mut connection = RawConnection::open(daemon.api.addr).await;
    let head = format!(
        "POST /webhooks/monitoring HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {body_len}\r\nExpect: 100-continue\r\n\r\n"
    );
    connection.send(head.as_bytes()).await;
    let interim = connection.response().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    connection
}

/// Waits until the listener is closed: the daemon has begun shutting down.
async fn wait_until_listener_closed(daemon: &Daemon) {
    let addr = daemon.api.addr;
    wait_until("the listener to close", PATIENCE, || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mut config = monitoring();
    let mut daemon = Daemon::start(&mut config, &[]).await;
    let body = alert_body("in-flight", "Sent while csmd was stopping");
    let mut connection = start_request(&daemon, body.len()).await;

    daemon.signal(libc::SIGTERM);
    let stopping = Instant::now();
    wait_until_listener_closed(&daemon).await;

    // The request that was already being read is still served in full.
    connection.send(body.as_bytes()).await;
    let reply = connection.response().await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "exit took longer than the grace period"
    );
    let log = daemon.log();
    assert!(
        log.contains("Shutting down") && log.contains("Stopped"),
        "{log}"
    );
    assert!(!log.contains("did not finish in time"), "{log}");

    // It was stored: it is there after a restart.
    let daemon = Daemon::start(&mut config, &[]).await;
    let events = daemon.api.all_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"]["source_id"], "in-flight");
}

#[tokio::test]
async fn sigterm_gives_up_on_a_stalled_request_after_the_grace_period() {
    let mut config = monitoring();
    config.shutdown_grace = "1s".into();
    let mut daemon = Daemon::start(&mut config, &[]).await;
    // A sender that announces a body and never sends it.
    let _stalled = start_request(&daemon, 100).await;

    daemon.signal(libc::SIGTERM);
    let stopping = Instant::now();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}:\n{}", daemon.log());
    assert!(
        stopping.elapsed() >= Duration::from_secs(1),
        "exited before the grace period: {:?}",
        stopping.elapsed()
    );
    let log = daemon.log();
    assert!(log.contains("did not finish in time"), "{log}");
    assert!(log.contains("Stopped"), "{log}");
}

/// The service manager's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket { socket, path }
    }

    /// The next message holding `line`, skipping others; the message text.
    async fn wait_for(&self, line: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut buffer = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.socket.recv(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("no {line} from csmd within {PATIENCE:?}"))
                .expect("recv on the notify socket");
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if message.lines().any(|l| l == line) {
                return message;
            }
        }
    }
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let config = monitoring();
    let notify = NotifySocket::bind(config.dir());
    let socket_path = notify.path.to_str().expect("UTF-8 path").to_string();
    // 200 ms watchdog: csmd pings every 100 ms. No WATCHDOG_PID: the
    // watchdog is meant for whoever reads the variable.
    let mut daemon = Daemon::spawn(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.as_str()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );

    let ready = notify.wait_for("READY=1").await;
    assert!(ready.contains("STATUS="), "{ready:?}");
    // Once systemd is told it is ready, it is.
    let readyz = daemon.api.get("/readyz").await;
    assert_eq!(readyz.status, 200, "{}", readyz.text);

    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1").await;
    }

    daemon.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1").await;
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    notify.wait_for("READY=1").await;
    notify.wait_for("WATCHDOG=1").await;

    daemon.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1").await;
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}:\n{}", daemon.log());
}

async fn customer_names(daemon: &Daemon) -> Vec<(String, String)> {
    let reply = daemon.api.admin_get("/api/v1/customers").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let mut names: Vec<_> = reply.json["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    names.sort();
    names
}

async fn connector_names(daemon: &Daemon) -> Vec<String> {
    let reply = daemon.api.get("/readyz").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json["connectors"]
        .as_array()
        .expect("connectors")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn sighup_applies_changed_customers_and_new_connectors() {
    let mut config = monitoring();
    let daemon = Daemon::start(&mut config, &[]).await;
    assert_eq!(
        customer_names(&daemon).await,
        pairs(&[("acme", "ACME Logistics SAS")])
    );
    let refused = daemon
        .api
        .post_webhook("grafana", &[], alert_body("g-1", "x"))
        .await;
    assert_eq!(refused.status, 404);

    config.write_customer("acme", "ACME Logistics Group");
    config.write_customer("globex", "Globex Retail GmbH");
    config
        .connectors
        .push(("grafana".into(), Auth::Bearer("grafana-token".into())));
    config.write();
    daemon.signal(libc::SIGHUP);

    let expected = pairs(&[
        ("acme", "ACME Logistics Group"),
        ("globex", "Globex Retail GmbH"),
    ]);
    // The customers are stored before the configuration is swapped: wait
    // for both.
    wait_until("the reloaded customers and connectors", PATIENCE, || {
        let daemon = &daemon;
        let expected = &expected;
        async move {
            customer_names(daemon).await == *expected
                && connector_names(daemon).await == ["monitoring", "grafana"]
        }
    })
    .await;
    let reply = daemon
        .api
        .post_webhook("grafana", &bearer("grafana-token"), alert_body("g-1", "x"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(daemon.log().contains("Configuration reloaded"));
}

#[tokio::test]
async fn a_broken_configuration_on_sighup_is_refused_and_the_old_one_keeps_serving() {
    let mut config = monitoring();
    let daemon = Daemon::start(&mut config, &[]).await;

    config.write_customer("globex", "Globex Retail GmbH");
    config.extra = "\n[deamon]\nlisten = \"127.0.0.1:1\"\n".into();
    config.write();
    daemon.signal(libc::SIGHUP);

    let log = daemon.wait_for_log("Reload refused").await;
    assert!(log.contains("unknown section `deamon`"), "{log}");
    let path = config.path().display().to_string();
    assert!(
        log.contains(&format!("{path}:")),
        "the error names the file: {log}"
    );

    // Still serving, with the configuration it had.
    assert_eq!(connector_names(&daemon).await, ["monitoring"]);
    assert_eq!(
        customer_names(&daemon).await,
        pairs(&[("acme", "ACME Logistics SAS")])
    );
    let reply = daemon
        .api
        .post_webhook("monitoring", &bearer(TOKEN), alert_body("m-1", "x"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);

    // Fixed and reloaded again, the change is applied.
    config.extra.clear();
    config.write();
    daemon.signal(libc::SIGHUP);
    wait_until("the fixed configuration", PATIENCE, || {
        let daemon = &daemon;
        async move { customer_names(daemon).await.len() == 2 }
    })
    .await;
}

#[tokio::test]
async fn the_cli_lists_customers_and_events_of_the_running_daemon() {
    let mut config = monitoring();
    config.write_customer("globex", "Globex Retail GmbH");
    let mut daemon = Daemon::start(&mut config, &[]).await;
    let reply = daemon
        .api
        .post_webhook("monitoring", &bearer(TOKEN), common::two_alerts_fixture())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let cfg = config.path().display().to_string();

    let out = run_cli(&["customers", "list", "--config", &cfg]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let header = stdout.lines().next().expect("a table header");
    for column in ["ID", "NAME", "TIME ZONE", "CONTACTS"] {
        assert!(header.contains(column), "{stdout}");
    }
    let acme = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("acme "))
        .expect(&stdout);
    assert!(acme.contains("ACME Logistics SAS"), "{stdout}");
    assert!(acme.contains("Europe/Paris"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.trim_start().starts_with("globex ")),
        "{stdout}"
    );

    let out = run_cli(&["events", "--config", &cfg]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("core-sw-par-01 / ip-vpn"), "{stdout}");
    assert!(stdout.contains("Packet loss above 5%"), "{stdout}");

    let out = run_cli(&["events", "--json", "--config", &cfg]).await;
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["total"], 2);
    assert_eq!(json["events"][0]["event"]["source_id"], "7f3c2a91d4e0b6a1");
    assert_eq!(json["events"][1]["event"]["status"], "resolved");

    // The CLI also works from a URL and CSMD_ADMIN_TOKEN alone.
    let mut command = tokio::process::Command::from(common::csmd_command());
    command
        .args(["customers", "list", "--json", "--url", &daemon.api.base])
        .env("CSMD_ADMIN_TOKEN", ADMIN_TOKEN);
    let out = command.output().await.expect("run the CLI");
    assert!(out.status.success(), "{out:?}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["customers"].as_array().map(Vec::len), Some(2));

    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(5)).await.success());
    let out = run_cli(&["events", "--config", &cfg]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("not reachable"), "{stderr}");
    assert!(stderr.contains(&daemon.api.base), "{stderr}");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_data_dir_or_port_refuses_to_start() {
    let mut config = monitoring();
    let _first = Daemon::start(&mut config, &[]).await;

    // Same configuration: the store is in use.
    let mut second = Daemon::spawn(&config, &[]);
    let status = second.wait_exit(PATIENCE).await;
    let log = second.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("in use by another process"),
        "the message should say the store is in use: {log}"
    );

    // Another data directory, same port: the address is in use.
    let mut other = monitoring();
    other.listen = config.listen;
    let mut third = Daemon::spawn(&other, &[]);
    let status = third.wait_exit(PATIENCE).await;
    let log = third.log();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("cannot listen on {}", config.listen))
            && log.contains("Address already in use"),
        "{log}"
    );
}

//! ITSM full-sync benchmark (see BENCHMARKS.md).
//!
//! Loads `--records` incidents into the ServiceNow Table API simulator,
//! which runs in this process, then starts the real `csmd` binary as a
//! child process with one ServiceNow connector (incidents only, rate limit
//! off) pointed at it, so the peak RSS measured is csmd's alone. The
//! connector syncs once at start; the benchmark times that sync:
//!
//! - *fetched*: from the first request the simulator receives until the
//!   connector's health shows `last_success`. Every page is then durable in
//!   the journal together with its cursor (a page is acknowledged only
//!   after the journal flushed it).
//! - *applied*: until the engine has applied the journal to the incidents
//!   tree: the last record in cursor order is readable through
//!   `GET /api/v1/records/incidents/{id}` (the engine applies in journal
//!   order), then the count is checked to be exactly `--records`.
//!
//! Peak RSS is the child's `VmHWM` from `/proc/<pid>/status`, read once
//! the sync is applied; `VmRSS` is sampled every 10 ms as well. The count
//! that checks the store afterwards is a scan of the whole incidents tree
//! through sled's page cache, which raises the RSS by tens of MB for a
//! second; its `VmHWM` is printed apart, as it is not the sync's. A run
//! fails (exit 1) when csmd does not read every record exactly once.
//!
//! ```text
//! cargo build --release && cargo run --release --example itsm_sync
//! ```

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDateTime, Utc};
use clap::Parser;
use serde_json::{Value, json};

use sim::servicenow::Simulator;

/// What the issue asks of this benchmark.
const TARGET_RECORDS_PER_SECOND: f64 = 20_000.0;
const TARGET_PEAK_RSS_MB: f64 = 150.0;

const CONNECTOR: &str = "itsm";
const ADMIN_TOKEN: &str = "bench-admin-token";
const SN_USER: &str = "csmd";
const SN_PASSWORD: &str = "sn-password";
/// The profile's `page_size`.
const PAGE_SIZE: &str = "1000";

/// The incident columns the profile maps (system fields are implicit).
const INCIDENT_FIELDS: &[&str] = &[
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
];

/// Environment the child must not inherit: systemd's and the CLI's
/// variables, and a developer's `RUST_LOG`.
const SCRUBBED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "CREDENTIALS_DIRECTORY",
    "STATE_DIRECTORY",
    "CSMD_CONFIG",
    "CSMD_URL",
    "CSMD_ADMIN_TOKEN",
    "RUST_LOG",
];

#[derive(Parser, Debug)]
#[command(about = "Time a full ServiceNow sync by the csmd binary and measure its peak RSS")]
struct Args {
    /// Incidents loaded into the simulator.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// The csmd binary. Default: `csmd` in the directory above this
    /// example's (target/release/csmd).
    #[arg(long)]
    csmd: Option<PathBuf>,
    /// csmd's log level (its log is printed when a run fails).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Keep the temporary directory (config, store, csmd's log).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One worker thread: the simulator is the only real work on this side,
    // and the daemon gets the rest of the machine.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("itsm_sync: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("itsm_sync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    if args.records == 0 {
        bail!("--records must be at least 1");
    }
    let csmd = match &args.csmd {
        Some(path) => path.clone(),
        None => default_csmd()?,
    };
    if !csmd.is_file() {
        bail!(
            "no csmd binary at {} (run `cargo build --release` first, or pass --csmd PATH)",
            csmd.display()
        );
    }
    // reqwest (the admin API client) is built without a default crypto
    // provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let machine = Machine::read();
    println!(
        "machine: {} CPU(s), {}; {:.1} GiB RAM",
        machine.cpus, machine.cpu_model, machine.mem_gib
    );
    println!("csmd:    {}", csmd.display());

    // The upstream.
    let sn = Simulator::builder()
        .table("incident", INCIDENT_FIELDS)
        .basic_user(SN_USER, SN_PASSWORD)
        .start()
        .await;
    let loading = Instant::now();
    let ids = sn.insert_many("incident", incidents(args.records));
    // The poller reads in (sys_updated_on, sys_id) order, so the engine
    // applies this one last.
    let last_id = (0..ids.len())
        .max_by_key(|&i| (updated_second(i), &ids[i]))
        .map(|i| ids[i].clone())
        .context("no record loaded")?;
    drop(ids);
    println!(
        "loaded:  {} incidents into the simulator in {:.2?}",
        sn.count("incident"),
        loading.elapsed()
    );

    // csmd's configuration.
    let temp = tempfile::Builder::new()
        .prefix("csmd-itsm-sync-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let listen = free_port()?;
    let config_path = write_config(temp.path(), &sn.url(), listen, &args.log_level)?;

    // The daemon.
    let log_path = temp.path().join("csmd.log");
    let log = std::fs::File::create(&log_path).context("cannot create csmd's log file")?;
    let mut command = Command::new(&csmd);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    command
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log);
    let spawned_at = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", csmd.display()))?;
    let mut daemon = Daemon {
        child,
        log_path: log_path.clone(),
    };
    let pid = daemon.child.id();
    let sampler = RssSampler::start(pid);

    let outcome = measure(
        &mut daemon,
        &sampler,
        &sn,
        listen,
        &config_path,
        &last_id,
        args.records,
        spawned_at,
    )
    .await;
    let rss_phases = sampler.stop();
    let hwm = proc_status_kb(pid, "VmHWM");
    let stopped = daemon.stop();

    let result = match outcome {
        Ok(m) => {
            // The upstream alone, with csmd stopped: the same page requests
            // again, one after the other, as the poller sends them.
            let upstream = replay(&sn, &m.page_requests).await?;
            report(args.records, &m, hwm, rss_phases, upstream);
            stopped
        }
        Err(e) => Err(e.context(format!("csmd's log:\n{}", daemon.log()))),
    };
    sn.shutdown();
    if args.keep {
        let kept = temp.keep();
        println!("kept:    {}", kept.display());
    }
    result
}

/// `target/release/csmd` beside `target/release/examples/itsm_sync`.
fn default_csmd() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("this executable has no grandparent directory")?;
    Ok(dir.join("csmd"))
}

/// Seconds after the start of 2026 at which incident `i` was opened: three
/// incidents a second, so the cursor's tie-break on `sys_id` is exercised.
fn opened_second(i: usize) -> usize {
    i / 3
}

/// Its `sys_updated_on`, an hour after it was opened.
fn updated_second(i: usize) -> usize {
    opened_second(i) + 3600
}

/// `n` incidents, oldest first.
fn incidents(n: usize) -> Vec<Value> {
    let start =
        NaiveDateTime::parse_from_str("2026-01-01 00:00:00", sim::servicenow::DATETIME_FORMAT)
            .expect("a valid datetime");
    let at = |seconds: usize| {
        (start + chrono::Duration::seconds(seconds as i64))
            .format(sim::servicenow::DATETIME_FORMAT)
            .to_string()
    };
    let states = ["1", "2", "3", "6", "7"];
    (0..n)
        .map(|i| {
            let updated = at(updated_second(i));
            let opened = at(opened_second(i));
            let state = states[i % states.len()];
            let resolved = if state == "6" || state == "7" {
                at(opened_second(i) + 1800)
            } else {
                String::new()
            };
            let closed = if state == "7" {
                at(opened_second(i) + 3000)
            } else {
                String::new()
            };
            json!({
                "number": format!("INC{:07}", i + 1),
                "priority": ((i % 4) + 1).to_string(),
                "state": state,
                "short_description": format!("Packet loss on access link {} towards the core network", i % 977),
                "opened_at": opened,
                "resolved_at": resolved,
                "closed_at": closed,
                "cmdb_ci": format!("{:032x}", 0xc1_0000 + i % 5000),
                "business_service": format!("{:032x}", 0x5e_0000 + i % 40),
                "account": format!("{:032x}", 0xac_0000 + i % 200),
                "company": format!("{:032x}", 0xc0_0000 + i % 200),
                "major_incident_state": if i % 500 == 0 { "accepted" } else { "" },
                "sys_updated_on": updated,
            })
        })
        .collect()
}

fn write_config(
    dir: &Path,
    sn_url: &str,
    listen: std::net::SocketAddr,
    log_level: &str,
) -> anyhow::Result<PathBuf> {
    let customers = dir.join("customers");
    std::fs::create_dir_all(&customers).context("customers dir")?;
    std::fs::write(
        customers.join("acme.toml"),
        "id = \"acme\"\nname = \"ACME Logistics SAS\"\ntime_zone = \"Europe/Paris\"\n\n\
         [[contact]]\nname = \"Primary contact\"\nemail = \"primary@acme.example\"\n\
         roles = [\"primary\", \"maintenance\"]\n",
    )
    .context("customer file")?;
    std::fs::write(dir.join("admin_token"), format!("{ADMIN_TOKEN}\n")).context("admin token")?;
    std::fs::write(dir.join("sn_password"), format!("{SN_PASSWORD}\n")).context("password")?;
    let connectors = Path::new(env!("CARGO_MANIFEST_DIR")).join("connectors");
    let toml = format!(
        r#"[daemon]
data_dir = "data"
listen = "{listen}"
admin_token = {{ file = "admin_token" }}
customers_dir = "customers"
connector_dirs = [{connectors}]
log_level = "{log_level}"

[email]
from = "Bench CSM <csm@example.net>"

[[connector]]
name = "{CONNECTOR}"
profile = "servicenow"
base_url = "{sn_url}"
poll_interval = "1h"
rate_limit = "off"
[connector.auth]
kind = "basic"
username = "{SN_USER}"
password = {{ file = "sn_password" }}
[connector.streams]
accounts = {{ enabled = false }}
contacts = {{ enabled = false }}
cis = {{ enabled = false }}
install_base = {{ enabled = false }}
changes = {{ enabled = false }}
change_cis = {{ enabled = false }}
problems = {{ enabled = false }}
problem_tasks = {{ enabled = false }}
"#,
        connectors = toml::Value::String(connectors.display().to_string()),
    );
    let path = dir.join("csmd.toml");
    std::fs::write(&path, toml).context("csmd.toml")?;
    Ok(path)
}

/// A loopback port nobody listens on right now.
fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").context("bind port 0")?;
    Ok(socket.local_addr()?)
}

struct Daemon {
    child: Child,
    log_path: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it has not stopped within 10 s.
    fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            bail!("csmd exited during the run:\n{}", self.log());
        }
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is
        // our own child, not reaped yet (we hold its `Child`).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!("csmd did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The moments of one sync, and what csmd did meanwhile.
struct Measured {
    /// Process start to `/readyz` answering 200.
    startup: Duration,
    /// The first request the simulator received (the column check).
    sync_start: Instant,
    ready_at: Instant,
    /// The connector's health showed `last_success`.
    fetched: Duration,
    /// The engine had applied the last record.
    applied: Duration,
    records_total: u64,
    pages: usize,
    requests: usize,
    store_count: u64,
    /// csmd's `VmHWM` once the sync was applied, before the count.
    synced_hwm_kb: Option<u64>,
    /// csmd's CPU seconds (user + system) at ready, fetched, applied.
    cpu: [Option<f64>; 3],
    /// Flushes and seconds spent flushing, from `/metrics`, at fetched.
    flushes: Option<(f64, f64)>,
    /// The page requests csmd sent, as path and query.
    page_requests: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    daemon: &mut Daemon,
    sampler: &RssSampler,
    sn: &Simulator,
    listen: std::net::SocketAddr,
    config_path: &Path,
    last_id: &str,
    records: usize,
    spawned_at: Instant,
) -> anyhow::Result<Measured> {
    let pid = daemon.child.id();
    let base = format!("http://{listen}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("HTTP client")?;
    let get = |path: String| {
        let request = http
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .send();
        async move {
            let response = request.await?;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            anyhow::Ok((status, text))
        }
    };
    let json = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
    let deadline = Instant::now() + Duration::from_secs(600);
    let check = |daemon: &mut Daemon, what: &str| -> anyhow::Result<()> {
        if let Some(status) = daemon.child.try_wait()? {
            bail!("csmd exited ({status}) before {what}");
        }
        if Instant::now() > deadline {
            bail!("gave up waiting for {what}");
        }
        Ok(())
    };

    // Ready: this daemon (not another one on the port) answers /readyz.
    loop {
        check(daemon, "it was ready")?;
        if let Ok((200, body)) = get("/readyz".into()).await
            && json(&body)["config"].as_str() == config_path.to_str()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_at = Instant::now();
    let cpu_ready = proc_cpu_seconds(pid);
    sampler.next_phase();

    // Fetched: the sync ended; every page is durable in the journal.
    let health = loop {
        check(daemon, "the sync")?;
        let (_, body) = get("/api/v1/connectors".into()).await?;
        let health = json(&body)["connectors"][0]["health"].clone();
        if !health["last_error"].is_null() {
            bail!("the sync failed: {}", health["last_error"]);
        }
        if !health["last_success"].is_null() {
            break health;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let polled_fetched_at = (Instant::now(), SystemTime::now());
    let cpu_fetched = proc_cpu_seconds(pid);
    sampler.next_phase();
    let flushes = get("/metrics".into())
        .await
        .ok()
        .and_then(|(_, text)| flush_metrics(&text));

    // Applied: the newest record is in the store.
    loop {
        check(daemon, "the engine")?;
        let (status, _) = get(format!("/api/v1/records/incidents/{last_id}")).await?;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let applied_at = Instant::now();
    let cpu_applied = proc_cpu_seconds(pid);
    let synced_hwm_kb = proc_status_kb(pid, "VmHWM");
    sampler.next_phase();
    let (_, count) = get("/api/v1/records/incidents".into()).await?;
    let store_count = json(&count)["count"].as_u64().unwrap_or(0);
    let records_total = health["streams"]["incidents"]["records_total"]
        .as_u64()
        .unwrap_or(0);

    let log = sn.requests();
    let to_incidents: Vec<_> = log
        .iter()
        .filter(|r| r.path.ends_with("/incident"))
        .collect();
    let Some(first) = to_incidents.first() else {
        bail!("the simulator received no request");
    };
    let sync_start = first.at;
    let page_requests: Vec<String> = to_incidents
        .iter()
        .filter(|r| r.param("sysparm_limit") == Some(PAGE_SIZE))
        .map(|r| {
            let mut url = url::Url::parse("http://sim/").expect("a valid URL");
            url.set_path(&r.path);
            url.query_pairs_mut().extend_pairs(&r.query);
            format!("{}?{}", url.path(), url.query().unwrap_or_default())
        })
        .collect();
    let failed: Vec<_> = log.iter().filter(|r| r.status != 200).collect();
    if !failed.is_empty() {
        bail!(
            "{} request(s) failed, first: {} {} -> {}",
            failed.len(),
            failed[0].method,
            failed[0].path,
            failed[0].status
        );
    }
    // The sync's end by csmd's own clock (health's `last_success`), which
    // the 10 ms poll can only overestimate.
    let fetched_at = health["last_success"]
        .as_str()
        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
        .and_then(|at| wall_to_instant(at, polled_fetched_at))
        .filter(|at| *at > sync_start && *at <= polled_fetched_at.0)
        .unwrap_or(polled_fetched_at.0);
    if records_total != records as u64 {
        bail!("the connector read {records_total} records, not {records}");
    }
    if store_count != records as u64 {
        bail!("the store holds {store_count} incidents, not {records}");
    }
    Ok(Measured {
        startup: ready_at - spawned_at,
        sync_start,
        ready_at,
        fetched: fetched_at - sync_start,
        applied: applied_at - sync_start,
        records_total,
        pages: page_requests.len(),
        requests: to_incidents.len(),
        store_count,
        synced_hwm_kb,
        cpu: [cpu_ready, cpu_fetched, cpu_applied],
        flushes,
        page_requests,
    })
}

/// `csmd_store_flush_seconds` count and sum from the metrics text.
fn flush_metrics(text: &str) -> Option<(f64, f64)> {
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        value("csmd_store_flush_seconds_count")?,
        value("csmd_store_flush_seconds_sum")?,
    ))
}

/// Sends `requests` (path and query) to the simulator one after the other
/// and returns the time they took, bodies read.
async fn replay(sn: &Simulator, requests: &[String]) -> anyhow::Result<Duration> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    for request in requests {
        let response = http
            .get(format!("{}{request}", sn.url()))
            .basic_auth(SN_USER, Some(SN_PASSWORD))
            .send()
            .await?
            .error_for_status()?;
        response.bytes().await?;
    }
    Ok(started.elapsed())
}

/// The `Instant` of a wall-clock time, through a pair of readings of both
/// clocks taken together.
fn wall_to_instant(at: DateTime<Utc>, (now, wall_now): (Instant, SystemTime)) -> Option<Instant> {
    let wall_now: DateTime<Utc> = wall_now.into();
    let behind = (wall_now - at).to_std().ok()?;
    now.checked_sub(behind)
}

fn report(
    records: usize,
    m: &Measured,
    hwm_kb: Option<u64>,
    rss_kb: [u64; PHASES],
    upstream: Duration,
) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let fetched_rate = rate(m.fetched);
    let applied_rate = rate(m.applied);
    println!(
        "synced:  {} records in {} pages of {PAGE_SIZE} ({} requests to the table, incl. the column check); the store holds {}",
        m.records_total, m.pages, m.requests, m.store_count
    );
    let lead = if m.sync_start <= m.ready_at {
        format!("{:.1?} before", m.ready_at - m.sync_start)
    } else {
        format!("{:.1?} after", m.sync_start - m.ready_at)
    };
    println!(
        "startup: csmd ready {:.0?} after spawn; its first request came {lead} /readyz answered",
        m.startup
    );
    println!(
        "fetched and durable in the journal: {:>7.3} s  {:>7.0} records/s",
        m.fetched.as_secs_f64(),
        fetched_rate
    );
    println!(
        "applied to the store:               {:>7.3} s  {:>7.0} records/s",
        m.applied.as_secs_f64(),
        applied_rate
    );
    let sampled = |phases: &[u64]| mb(phases.iter().copied().max().unwrap_or(0));
    let peak = m.synced_hwm_kb.map_or_else(|| sampled(&rss_kb[..3]), mb);
    println!(
        "csmd RSS: peak of the sync (VmHWM) {peak:.1} MB; highest 10 ms sample at startup {:.1} MB, while fetching {:.1} MB, while applying {:.1} MB",
        mb(rss_kb[0]),
        mb(rss_kb[1]),
        mb(rss_kb[2]),
    );
    println!(
        "          then the check's count, a scan of the tree: peak (VmHWM) {:.1} MB",
        hwm_kb.map_or_else(|| sampled(&rss_kb), mb),
    );
    if let [Some(ready), Some(fetched), Some(applied)] = m.cpu {
        println!(
            "csmd CPU (user+system): {:.2} s while fetching, {:.2} s more while applying the rest ({:.0} us/record in all)",
            fetched - ready,
            applied - fetched,
            (applied - ready) * 1e6 / records as f64
        );
    }
    if let Some((count, seconds)) = m.flushes {
        println!(
            "journal: {count:.0} flushes, {seconds:.3} s flushing ({:.1} ms each)",
            seconds * 1e3 / count.max(1.0)
        );
    }
    println!(
        "upstream alone: the {} page requests replayed one by one take {:.3} s ({:.1} ms a page)",
        m.pages,
        upstream.as_secs_f64(),
        upstream.as_secs_f64() * 1e3 / m.pages.max(1) as f64
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "target:  >= {TARGET_RECORDS_PER_SECOND:.0} records/s applied: {}; peak RSS <= {TARGET_PEAK_RSS_MB:.0} MB: {}",
        verdict(applied_rate >= TARGET_RECORDS_PER_SECOND),
        verdict(peak <= TARGET_PEAK_RSS_MB)
    );
}

/// A field of `/proc/<pid>/status`, in kB.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// Samples the child's `VmRSS` every 10 ms on a thread of its own, keeping
/// the highest sample of each phase of the run.
struct RssSampler {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    peaks_kb: Arc<[AtomicU64; PHASES]>,
    thread: std::thread::JoinHandle<()>,
}

/// Startup, fetching, applying, after.
const PHASES: usize = 4;

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(0));
        let peaks_kb: Arc<[AtomicU64; PHASES]> = Arc::new(Default::default());
        let thread = {
            let (stop, phase, peaks_kb) = (stop.clone(), phase.clone(), peaks_kb.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kb) = proc_status_kb(pid, "VmRSS") {
                        let at = phase.load(Ordering::Relaxed).min(PHASES - 1);
                        peaks_kb[at].fetch_max(kb, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        RssSampler {
            stop,
            phase,
            peaks_kb,
            thread,
        }
    }

    fn next_phase(&self) {
        self.phase.fetch_add(1, Ordering::Relaxed);
    }

    /// The highest sample of each phase, in kB.
    fn stop(self) -> [u64; PHASES] {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        std::array::from_fn(|i| self.peaks_kb[i].load(Ordering::Relaxed))
    }
}

struct Machine {
    cpus: usize,
    cpu_model: String,
    mem_gib: f64,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            mem_gib,
        }
    }
}

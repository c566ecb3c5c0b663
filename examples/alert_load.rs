//! Alert load generator (see BENCHMARKS.md): Alertmanager payloads of 10
//! alerts each, from POST to queued disruption notice.
//!
//! Starts csmd in-process on its own runtime (two worker threads, like the
//! real binary on a two-core machine) with the real `alertmanager` profile,
//! `[disruptions] group_window = "0s"` (a notice is queued as soon as the
//! planner sees the alerts) and `--customers` customer files. Each customer
//! uses its own service; `--shared-services` more services are each used by
//! three customers. Clients on a separate runtime post from `--clients`
//! keep-alive HTTP/1.1 connections, one request in flight each.
//!
//! Every POST is an Alertmanager v4 payload of exactly 10 alerts on one
//! service, like a monitoring load: a group of 10 alerts fires, `--hold`
//! after its acknowledgement a payload resolves the same 10 alerts, and
//! `--rest` after that the service's customers may get their next group.
//! Each service's alerts keep their fingerprints from one group to the
//! next (a later `startsAt` is a new occurrence), so the alerts stored and
//! the alerts firing stay bounded. A customer has at most one group
//! firing at a time, so each group is one disruption of each of its
//! customers: one notice to each primary contact when it fires and one
//! resolution when it clears.
//!
//! Each group starts (`startsAt`) in a minute of its own, a year back. A
//! disruption's reference (`DIS-<customer>-<date>-<HH:MM>`), and so its
//! notices' idempotency keys, are made from that minute: two disruptions
//! of one customer starting in the same minute would share their keys.
//!
//! The clusters of services that share customers start their cycles
//! spread over one `hold + rest`, so the load is steady. With the default
//! pace (4,000 customers, groups firing for a second) the clients post as
//! fast as csmd answers; a longer `--hold` and `--rest` or fewer customers
//! offer less (the summary prints the most the pace allows).
//!
//! The daemon paces webhooks to its engine (`[daemon]
//! max_unapplied_events`, its default unless `--max-unapplied-events` is
//! given), so the acknowledged rate is the rate alerts are applied at;
//! `--max-unapplied-events 0` measures acknowledging alone, with the
//! engine falling behind for as long as the run.
//!
//! A group must fire for longer than csmd takes from POST to notice: one
//! the planner first sees already resolved never opened a disruption, so
//! nobody hears of it (as Alertmanager sends a resolution only for alerts
//! it notified), and the notice check counts it as missing. With
//! `--hold 100` that is what happens to many groups whenever the engine
//! or the planner lags by more than 100 ms.
//!
//! It reports acknowledged alerts per second (a 2xx means the alerts are
//! durable), POST latency, how far the engine falls behind the journal,
//! how long after the last POST every notice was queued (and so the rate
//! from POST to queued notice), and the latency from sending a POST to its
//! notice being durably queued in the outbox: the end of the planner run
//! that queued it, taken from the daemon's own `Messages queued` event
//! (after the outbox batch is flushed), matched to the run by the message's
//! `created_at` (the run's clock). After the run it stops the daemon,
//! reopens the store and checks every fired group got exactly one notice
//! per primary contact of each of its customers and every resolved group
//! one resolution, none twice, nothing else: any error or mismatch fails
//! the run.
//!
//! ```text
//! cargo run --release --example alert_load -- --clients 64 --seconds 10
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Parser;
use hdrhistogram::Histogram;
use tracing_subscriber::layer::SubscriberExt as _;

use csmd::model::outbox::MessageKind;
use csmd::store::Store;
use csmd::store::outbox::OutboxFilter;
use webhook::{Scrape, Target, connect, post, scrape};

mod common;
#[path = "common/webhook.rs"]
mod webhook;

/// The allocator of the `csmd` binary, since the daemon runs in-process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CONNECTOR: &str = "alertmanager";
const TOKEN_ENV: &str = "CSMD_BENCH_TOKEN";
const TOKEN: &str = "bench-token";
/// Alerts in every payload.
const ALERTS_PER_POST: usize = 10;
/// Customers using each shared service.
const SHARING: usize = 3;
/// What the issue asks of this benchmark.
const TARGET_ALERTS_PER_SECOND: f64 = 60_000.0;
const TARGET_P99: Duration = Duration::from_millis(50);
const ALERT_NAMES: [&str; ALERTS_PER_POST] = [
    "InstanceDown",
    "LinkDown",
    "BgpSessionDown",
    "HighLatency",
    "PacketLoss",
    "InterfaceErrors",
    "HighCpu",
    "DiskFull",
    "ProbeFailed",
    "CertificateExpiry",
];

#[derive(Parser, Debug)]
#[command(about = "Load csmd with Alertmanager payloads and measure alerts to queued notices")]
struct Args {
    /// Concurrent clients, each one keep-alive connection with one request
    /// in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Load before the measured window, not counted in the figures.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Customers, each using a service of its own.
    #[arg(long, default_value_t = 4000)]
    customers: usize,
    /// Services each used by three customers (who also use their own).
    #[arg(long, default_value_t = 10)]
    shared_services: usize,
    /// How long a group fires, from the acknowledgement of its firing
    /// payload to sending its resolution, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    hold: u64,
    /// How long a customer stays quiet after a resolution is acknowledged
    /// before its next group fires, in milliseconds.
    #[arg(long, default_value_t = 100)]
    rest: u64,
    /// The daemon's `store_cache_mib` (sled's page cache).
    #[arg(long, default_value_t = csmd::store::DEFAULT_CACHE_MIB)]
    store_cache_mib: u64,
    /// The daemon's `max_unapplied_events` (how far webhooks may run ahead
    /// of the engine; 0 never makes them wait); its default when not given.
    #[arg(long)]
    max_unapplied_events: Option<u64>,
    /// Worker threads of the daemon's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Where the daemon keeps its store; must not exist yet. Default: a
    /// fresh temporary directory, removed afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("alert_load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The load window: requests started before `measure_from` are warm-up,
/// none is started at or after `end`.
#[derive(Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// A service and the customers (indices) using it: what one group of
/// alerts fires on.
struct Unit {
    service: String,
    customers: Vec<usize>,
    /// Distinguishes the fingerprints of different services.
    seed: u64,
}

/// Services whose groups must not overlap because they share customers,
/// fired in turn by one client: a customer's own service alone, or a
/// shared service with its customers' own services.
struct Cluster {
    units: Vec<usize>,
    /// When its first group fires, after the start: the clusters' cycles
    /// are spread over one `hold + rest`, so the load is steady rather
    /// than every cluster firing at once.
    offset: Duration,
}

/// The timeline of a group of alerts, as the load generator saw it.
#[derive(Clone)]
struct Group {
    unit: usize,
    /// The group's `startsAt` minute, which names its disruptions.
    starts_at: DateTime<Utc>,
    /// When the firing payload was sent, and whether in the measured window.
    fired: DateTime<Utc>,
    fired_measured: bool,
    /// When the resolving payload was sent, once it was acknowledged.
    resolved: Option<(DateTime<Utc>, bool)>,
}

/// What one client saw.
struct ClientReport {
    /// Latency in microseconds of each POST of the measured window.
    latency: Histogram<u64>,
    /// Alerts in 2xx answers to POSTs of the measured window.
    measured_alerts: u64,
    /// Every group whose firing payload was acknowledged, warm-up included.
    groups: Vec<Group>,
    errors: u64,
    first_error: Option<String>,
}

/// The disruption planner's runs that queued messages: when each ended
/// (its batch flushed) and how many it queued, from the daemon's
/// `Messages queued` event.
#[derive(Clone, Default)]
struct PlannerRuns(Arc<Mutex<Vec<PlannerRun>>>);

/// When a planner run ended and how many messages it queued.
type PlannerRun = (DateTime<Utc>, u64);

impl PlannerRuns {
    fn snapshot(&self) -> Vec<(DateTime<Utc>, u64)> {
        self.0.lock().map(|runs| runs.clone()).unwrap_or_default()
    }

    fn queued(&self) -> u64 {
        self.snapshot().iter().map(|(_, n)| n).sum()
    }
}

/// Whether a callsite is the planners' `Messages queued` event; every
/// other event stays disabled, so the daemon pays nothing for logging.
fn is_messages_queued(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_event()
        && meta.fields().field("planner").is_some()
        && meta.fields().field("queued").is_some()
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PlannerRuns {
    fn register_callsite(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if is_messages_queued(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        is_messages_queued(meta)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let at = Utc::now();
        let mut fields = QueuedFields::default();
        event.record(&mut fields);
        if fields.planner.as_deref() == Some("disruptions")
            && let Some(queued) = fields.queued
            && let Ok(mut runs) = self.0.lock()
        {
            runs.push((at, queued));
        }
    }
}

#[derive(Default)]
struct QueuedFields {
    planner: Option<String>,
    queued: Option<u64>,
}

impl tracing::field::Visit for QueuedFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "planner" {
            self.planner = Some(value.to_string());
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "queued" {
            self.queued = Some(value);
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        if field.name() == "queued" {
            self.queued = u64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// Returns whether the run was clean (no error, every notice as expected).
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.clients == 0 || args.seconds == 0 || args.customers == 0 {
        bail!("--clients, --seconds and --customers must be at least 1");
    }
    if args.shared_services * SHARING > args.customers {
        bail!("--shared-services needs {SHARING} customers each");
    }
    // reqwest (the daemon's outbound client) is built without a default
    // crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runs = PlannerRuns::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(runs.clone()))
        .context("cannot install the tracing layer")?;

    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let data_dir = match &args.data_dir {
        Some(dir) if dir.exists() => bail!("--data-dir {} already exists", dir.display()),
        Some(dir) => dir.clone(),
        None => temp.path().join("data"),
    };
    let config_path = write_config(temp.path(), &data_dir, args)?;
    let (units, clusters) = write_customers(&temp.path().join("customers"), args)?;
    // SAFETY: no other thread exists yet; both runtimes are built below.
    unsafe { std::env::set_var(TOKEN_ENV, TOKEN) };
    let config = csmd::config::load(&config_path)
        .map_err(|d| anyhow::anyhow!("the benchmark configuration is invalid:\n{d}"))?;
    if config.customers.len() != args.customers {
        bail!(
            "the daemon loaded {} customers, not {}",
            config.customers.len(),
            args.customers
        );
    }

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("csmd-server")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("load-client")
        .enable_all()
        .build()?;

    let running = server_rt.block_on(csmd::app::start(config))?;
    let addr = running.addr();
    let units = Arc::new(units);
    let lag = LagSampler::start(running.state().clone());
    let (reports, before, after, window) =
        client_rt.block_on(drive(addr, args, units.clone(), clusters))?;

    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut measured_alerts = 0;
    let mut errors = 0;
    let mut first_error = None;
    let mut groups = Vec::new();
    for report in reports {
        latency.add(&report.latency)?;
        measured_alerts += report.measured_alerts;
        errors += report.errors;
        first_error = first_error.or(report.first_error);
        groups.extend(report.groups);
    }
    // Every notice the acknowledged groups call for, before stopping.
    let expected: u64 = groups
        .iter()
        .map(|g| units[g.unit].customers.len() as u64 * (1 + u64::from(g.resolved.is_some())))
        .sum();
    let drained = drain(&runs, expected);
    let lag = lag.stop();
    server_rt.block_on(running.stop());
    drop(server_rt);

    let measured = window.end - window.measure_from;
    let alerts_per_second = measured_alerts as f64 / measured.as_secs_f64();
    let flushes = after.flushes - before.flushes;
    let journal_groups = after.groups - before.groups;
    let fired = groups.len();
    let resolved = groups.iter().filter(|g| g.resolved.is_some()).count();
    let schedule_limit = schedule_limit(args);

    println!(
        "alert load, {} clients, {} customers ({} services, {} of them shared by {SHARING})",
        args.clients,
        args.customers,
        units.len(),
        args.shared_services
    );
    println!(
        "  runtimes          daemon {} worker threads, load generator {} (same machine, same cores)",
        args.server_threads, args.client_threads
    );
    println!(
        "  window            {} s warm-up, {:.2} s measured; groups fire {} ms, customers rest {} ms (at most ~{schedule_limit:.0} alerts/s)",
        args.warmup,
        measured.as_secs_f64(),
        args.hold,
        args.rest
    );
    println!(
        "  acked alerts/s    {alerts_per_second:.0}  ({measured_alerts} alerts in {} payloads of {ALERTS_PER_POST})",
        measured_alerts / ALERTS_PER_POST as u64
    );
    println!(
        "  POST latency      p50 {}, p99 {}, max {}",
        millis(latency.value_at_quantile(0.50)),
        millis(latency.value_at_quantile(0.99)),
        millis(latency.max())
    );
    println!("  errors            {errors}");
    if let Some(e) = &first_error {
        println!("  first error       {e}");
    }
    println!(
        "  server flushes    {flushes:.0} in the window ({:.0}/s), mean flush {:.2} ms, mean group {:.1} appends",
        flushes / measured.as_secs_f64(),
        1000.0 * (after.flush_seconds - before.flush_seconds) / flushes.max(1.0),
        (after.group_sum - before.group_sum) / journal_groups.max(1.0)
    );
    let measured_lag: Vec<u64> = lag
        .iter()
        .filter(|(at, _)| (window.measure_from..window.end).contains(at))
        .map(|(_, entries)| *entries)
        .collect();
    println!(
        "  engine lag        mean {:.0}, max {} journal entries durable but not yet applied (sampled every 50 ms)",
        measured_lag.iter().sum::<u64>() as f64 / measured_lag.len().max(1) as f64,
        measured_lag.iter().max().copied().unwrap_or(0)
    );
    if let Some(catch_up) = catch_up_after(&lag, window.end) {
        println!("  engine catch-up   {catch_up}");
    }
    println!("  groups            {fired} fired, {resolved} resolved (warm-up included)");
    match &drained {
        Ok(waited) => println!(
            "  drain             every notice queued {:.2} s after the last POST: {:.0} alerts/s from POST to queued notice",
            waited.as_secs_f64(),
            measured_alerts as f64 / (measured + *waited).as_secs_f64()
        ),
        Err(e) => println!("  drain             FAILED: {e:#}"),
    }

    let store = Store::open(&data_dir.join("store"))?;
    let check = check_notices(&store, &units, &groups, &runs.snapshot())?;
    let planner_runs = runs.snapshot().len();
    println!(
        "  planner           {planner_runs} runs queued notices, {:.1} messages per run; a run took {} on average, at most {}",
        check.messages as f64 / planner_runs.max(1) as f64,
        millis(check.run_time.mean() as u64),
        millis(check.run_time.max())
    );
    for (name, h) in [
        ("POST→notice", &check.notice),
        ("POST→resolution", &check.resolution),
        ("POST→either", &check.both),
    ] {
        println!(
            "  {name:<17} p50 {}, p99 {}, max {}  ({} messages of the measured window)",
            millis(h.value_at_quantile(0.50)),
            millis(h.value_at_quantile(0.99)),
            millis(h.max()),
            h.len()
        );
    }
    if check.problems.is_empty() {
        println!("  notice check      ok: {}", check.summary);
    } else {
        println!(
            "  notice check      FAILED: {}; {} problems, the first: {}",
            check.summary,
            check.problems.len(),
            check.problems[..check.problems.len().min(3)].join("; ")
        );
    }
    let notice_p99 = Duration::from_micros(check.both.value_at_quantile(0.99));
    let met = alerts_per_second >= TARGET_ALERTS_PER_SECOND
        && notice_p99 <= TARGET_P99
        && check.problems.is_empty();
    println!(
        "  target            >= {TARGET_ALERTS_PER_SECOND:.0} alerts/s and POST→notice p99 <= {} ms: {}",
        TARGET_P99.as_millis(),
        if met { "met" } else { "MISSED" }
    );
    Ok(errors == 0 && drained.is_ok() && check.problems.is_empty())
}

fn millis(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

/// The most alerts per second the schedule allows if every answer were
/// instant: each cluster carries one group at a time, a group every
/// `hold + rest`.
fn schedule_limit(args: &Args) -> f64 {
    let clusters = args.customers - args.shared_services * (SHARING - 1);
    let cycle = Duration::from_millis(args.hold + args.rest).as_secs_f64();
    clusters as f64 * (2 * ALERTS_PER_POST) as f64 / cycle.max(0.001)
}

/// A configuration with one bearer-authenticated `alertmanager`
/// connector, notices as soon as the planner sees alerts, its store in
/// `data_dir`.
fn write_config(dir: &Path, data_dir: &Path, args: &Args) -> anyhow::Result<PathBuf> {
    let daemon = common::daemon_section(dir, data_dir)?;
    let Args {
        store_cache_mib,
        max_unapplied_events,
        ..
    } = args;
    let pace = max_unapplied_events
        .map(|n| format!("max_unapplied_events = {n}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"{daemon}store_cache_mib = {store_cache_mib}
{pace}
[email]
from = "csmd benchmark <bench@example.net>"

[disruptions]
group_window = "0s"

[[connector]]
name = "{CONNECTOR}"
profile = "alertmanager"
[connector.webhook]
auth = "bearer"
token = {{ env = "{TOKEN_ENV}" }}
"#
    );
    let path = dir.join("csmd.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn customer_id(index: usize) -> String {
    format!("c{index:05}")
}

fn primary_email(index: usize) -> String {
    format!("ops@{}.example", customer_id(index))
}

/// Writes one customer file per customer (a primary contact and a reports
/// contact, proactive notices on, UTC) into `dir`; returns the services
/// alerts fire on and how they are shared out.
fn write_customers(dir: &Path, args: &Args) -> anyhow::Result<(Vec<Unit>, Vec<Cluster>)> {
    let mut units: Vec<Unit> = (0..args.customers)
        .map(|c| Unit {
            service: format!("svc-{c:05}"),
            customers: vec![c],
            seed: c as u64,
        })
        .collect();
    let mut clusters = Vec::new();
    let mut shared_by = vec![None; args.customers];
    for s in 0..args.shared_services {
        let customers: Vec<usize> = (s * SHARING..(s + 1) * SHARING).collect();
        let unit = units.len();
        for &c in &customers {
            shared_by[c] = Some(unit);
        }
        let mut members = customers.clone();
        members.push(unit);
        clusters.push(Cluster {
            units: members,
            offset: Duration::ZERO,
        });
        units.push(Unit {
            service: format!("shared-{s:03}"),
            customers,
            seed: (args.customers + s) as u64,
        });
    }
    clusters.extend(
        (args.shared_services * SHARING..args.customers).map(|c| Cluster {
            units: vec![c],
            offset: Duration::ZERO,
        }),
    );
    for c in 0..args.customers {
        let id = customer_id(c);
        let mut text = format!(
            "id = \"{id}\"\nname = \"Customer {c:05}\"\ntime_zone = \"UTC\"\n\n\
             [[contact]]\nname = \"Operations {c:05}\"\nemail = \"{}\"\nroles = [\"primary\"]\n\n\
             [[contact]]\nname = \"Reports {c:05}\"\nemail = \"reports@{id}.example\"\nroles = [\"reports\"]\n\n\
             [contract]\nproactive_notices = true\n\n\
             [[install_base]]\nservice = \"{}\"\n",
            primary_email(c),
            units[c].service
        );
        if let Some(shared) = shared_by[c] {
            writeln!(
                text,
                "\n[[install_base]]\nservice = \"{}\"",
                units[shared].service
            )?;
        }
        std::fs::write(dir.join(format!("{id}.toml")), text)?;
    }
    Ok((units, clusters))
}

/// Runs the warm-up and the measured window; returns every client's report
/// and the server's counters at the start and end of the measured window.
async fn drive(
    addr: SocketAddr,
    args: &Args,
    units: Arc<Vec<Unit>>,
    clusters: Vec<Cluster>,
) -> anyhow::Result<(Vec<ClientReport>, Scrape, Scrape, Window)> {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let window = Window {
        measure_from,
        end: measure_from + Duration::from_secs(args.seconds),
    };
    let target = Target {
        addr,
        uri: format!("/webhooks/{CONNECTOR}").parse()?,
        authorization: format!("Bearer {TOKEN}").parse()?,
    };
    // Each group starts in a minute of its own, a year back.
    let epoch = Utc::now() - chrono::Duration::days(366);
    let epoch = epoch - chrono::Duration::seconds(epoch.timestamp() % 60);
    let minutes = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut shares: Vec<Vec<Cluster>> = (0..args.clients).map(|_| Vec::new()).collect();
    let cycle = Duration::from_millis(args.hold + args.rest);
    let count = clusters.len() as u32;
    for (i, mut cluster) in clusters.into_iter().enumerate() {
        cluster.offset = cycle * i as u32 / count.max(1);
        shares[i % args.clients].push(cluster);
    }
    let pace = Pace {
        hold: Duration::from_millis(args.hold),
        rest: Duration::from_millis(args.rest),
    };
    let clients: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let starts = Starts {
                epoch,
                next: minutes.clone(),
            };
            tokio::spawn(client(
                target.clone(),
                window,
                units.clone(),
                share,
                starts,
                pace,
            ))
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let before = scrape(addr).await?;
    let mut reports = Vec::with_capacity(clients.len());
    for client in clients {
        reports.push(client.await?);
    }
    let after = scrape(addr).await?;
    Ok((reports, before, after, window))
}

#[derive(Clone, Copy)]
struct Pace {
    hold: Duration,
    rest: Duration,
}

/// Hands out the groups' start minutes.
struct Starts {
    epoch: DateTime<Utc>,
    next: Arc<std::sync::atomic::AtomicI64>,
}

impl Starts {
    fn next(&self) -> DateTime<Utc> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.epoch + chrono::Duration::minutes(n)
    }
}

/// Where a cluster is in its cycle.
enum Phase {
    /// Its next group (on `units[next]`) may fire at `at`.
    Quiet { at: Instant, next: usize },
    /// Group `group` (of the client's list) resolves at `at`.
    Firing { at: Instant, group: usize },
    /// A POST failed: its customers' state is unknown, so it is left alone.
    Broken,
}

/// One client: fires and resolves groups on its clusters, one POST at a
/// time on one connection, until the end of the window; reconnects if the
/// connection breaks.
async fn client(
    target: Target,
    window: Window,
    units: Arc<Vec<Unit>>,
    clusters: Vec<Cluster>,
    starts: Starts,
    pace: Pace,
) -> ClientReport {
    let mut report = ClientReport {
        latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
        measured_alerts: 0,
        groups: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let begin = Instant::now();
    let mut phases: Vec<Phase> = clusters
        .iter()
        .map(|cluster| Phase::Quiet {
            at: begin + cluster.offset,
            next: 0,
        })
        .collect();
    let mut connection = None;
    let mut turn = 0;
    loop {
        let now = Instant::now();
        if now >= window.end {
            break;
        }
        // Resolutions first, then the next cluster in turn that may fire.
        let n = phases.len();
        let due = (0..n)
            .map(|i| (turn + i) % n)
            .find(|&i| matches!(phases[i], Phase::Firing { at, .. } if at <= now))
            .or_else(|| {
                (0..n)
                    .map(|i| (turn + i) % n)
                    .find(|&i| matches!(phases[i], Phase::Quiet { at, .. } if at <= now))
            });
        let Some(i) = due else {
            let next = phases
                .iter()
                .filter_map(|p| match p {
                    Phase::Quiet { at, .. } | Phase::Firing { at, .. } => Some(*at),
                    Phase::Broken => None,
                })
                .min()
                .unwrap_or(window.end)
                .min(window.end);
            tokio::time::sleep_until(next.into()).await;
            continue;
        };
        turn = (i + 1) % n;
        let (body, unit, resolving) = match phases[i] {
            Phase::Quiet { next, .. } => {
                let unit = clusters[i].units[next];
                let starts_at = starts.next();
                report.groups.push(Group {
                    unit,
                    starts_at,
                    fired: Utc::now(),
                    fired_measured: now >= window.measure_from,
                    resolved: None,
                });
                let body = payload(&units[unit], starts_at, false);
                (body, unit, None)
            }
            Phase::Firing { group, .. } => {
                let g = &report.groups[group];
                let body = payload(&units[g.unit], g.starts_at, true);
                (body, g.unit, Some(group))
            }
            Phase::Broken => continue,
        };
        let sent = Utc::now();
        let started = Instant::now();
        let result = match &mut connection {
            Some(sender) => post(sender, &target, body).await,
            None => match connect(target.addr).await {
                Ok(sender) => post(connection.insert(sender), &target, body).await,
                Err(e) => Err(e),
            },
        };
        let acked = Instant::now();
        let measured = started >= window.measure_from;
        let failure = match result {
            Ok((status, _)) if status.is_success() => None,
            Ok((status, body)) => Some(format!("{status}: {}", String::from_utf8_lossy(&body))),
            Err(e) => {
                connection = None;
                Some(format!("{e:#}"))
            }
        };
        if let Some(failure) = failure {
            report.errors += 1;
            report.first_error.get_or_insert(failure);
            if resolving.is_none() {
                report.groups.pop();
            }
            phases[i] = Phase::Broken;
            // Do not spin if the server is gone.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        if measured {
            report.measured_alerts += ALERTS_PER_POST as u64;
            report
                .latency
                .saturating_record((acked - started).as_micros().try_into().unwrap_or(u64::MAX));
        }
        phases[i] = match resolving {
            None => {
                let group = report.groups.len() - 1;
                report.groups[group].fired = sent;
                Phase::Firing {
                    at: acked + pace.hold,
                    group,
                }
            }
            Some(group) => {
                report.groups[group].resolved = Some((sent, measured));
                let next = clusters[i]
                    .units
                    .iter()
                    .position(|&u| u == unit)
                    .map_or(0, |p| (p + 1) % clusters[i].units.len());
                Phase::Quiet {
                    at: acked + pace.rest,
                    next,
                }
            }
        };
    }
    report
}

/// Mixes a service's seed and an alert's index into a fingerprint.
fn fingerprint(seed: u64, alert: usize) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(alert as u64 + 1);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An Alertmanager v4 payload of the unit's 10 alerts, firing or resolved,
/// as a receiver with `send_resolved: true` gets it.
fn payload(unit: &Unit, starts_at: DateTime<Utc>, resolved: bool) -> String {
    let service = &unit.service;
    let status = if resolved { "resolved" } else { "firing" };
    let mut body = String::with_capacity(6 * 1024);
    let _ = write!(
        body,
        r#"{{"receiver":"csmd","status":"{status}","alerts":["#
    );
    for (i, name) in ALERT_NAMES.iter().enumerate() {
        let starts = starts_at + chrono::Duration::seconds(i as i64);
        let ends = if resolved {
            (starts_at + chrono::Duration::seconds(50))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        } else {
            "0001-01-01T00:00:00Z".to_string()
        };
        let _ = write!(
            body,
            r#"{comma}{{"status":"{status}","labels":{{"alertname":"{name}","instance":"{service}-node-{i}:9100","job":"node","service":"{service}","severity":"critical"}},"annotations":{{"summary":"{name} on {service}-node-{i}","description":"{name} on {service}-node-{i} for more than 1 minute."}},"startsAt":"{starts}","endsAt":"{ends}","generatorURL":"http://prometheus.example:9090/graph?g0.expr=up+%3D%3D+0&g0.tab=1","fingerprint":"{fingerprint:016x}"}}"#,
            comma = if i == 0 { "" } else { "," },
            starts = starts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            fingerprint = fingerprint(unit.seed, i),
        );
    }
    let _ = write!(
        body,
        r#"],"groupLabels":{{"service":"{service}"}},"commonLabels":{{"job":"node","service":"{service}","severity":"critical"}},"commonAnnotations":{{}},"externalURL":"http://alertmanager.example:9093","version":"4","groupKey":"{{}}:{{service=\"{service}\"}}","truncatedAlerts":0}}"#
    );
    body
}

/// Samples how far the engine is behind the journal: entries durable but
/// not yet applied, every 50 ms, until stopped.
struct LagSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl LagSampler {
    fn start(state: Arc<csmd::http::AppState>) -> LagSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || {
            let durable = state.journal.durable();
            let mut samples = Vec::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let written = *durable.borrow();
                let applied = state.store.engine_position();
                samples.push((Instant::now(), written.saturating_sub(applied)));
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        LagSampler { stop, handle }
    }

    fn stop(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// How the engine caught up once the load stopped: the entries it was
/// behind at the end of the window, and how fast it applied them.
fn catch_up_after(lag: &[(Instant, u64)], end: Instant) -> Option<String> {
    let after: Vec<&(Instant, u64)> = lag.iter().filter(|(at, _)| *at >= end).collect();
    let &&(from, behind) = after.first()?;
    if behind == 0 {
        return Some("nothing to catch up at the end of the window".into());
    }
    let (to, left) = after
        .iter()
        .find(|(_, entries)| *entries == 0)
        .map_or_else(|| after.last().map_or((from, behind), |l| **l), |l| **l);
    let seconds = (to - from).as_secs_f64();
    let applied = behind.saturating_sub(left);
    Some(format!(
        "{behind} entries behind at the end of the window, {applied} applied in {seconds:.2} s after it ({:.0} entries/s)",
        applied as f64 / seconds.max(0.001)
    ))
}

/// Waits until the planner has queued as many messages as the groups call
/// for, or has queued nothing for a while (then the check says what is
/// missing).
fn drain(runs: &PlannerRuns, expected: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(600);
    let mut last = (runs.queued(), Instant::now());
    loop {
        let queued = runs.queued();
        if queued >= expected {
            return Ok(start.elapsed());
        }
        if queued != last.0 {
            last = (queued, Instant::now());
        }
        if last.1.elapsed() > Duration::from_secs(20) || Instant::now() > deadline {
            bail!("the planner queued {queued} messages of {expected} expected, then stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the notice check found.
struct Checked {
    /// Latency in microseconds from sending a firing payload to its notice
    /// being queued, from sending a resolving payload to its resolution
    /// being queued, and both, for payloads of the measured window.
    notice: Histogram<u64>,
    resolution: Histogram<u64>,
    both: Histogram<u64>,
    messages: usize,
    summary: String,
    /// What is wrong: a message missing, twice or unexpected.
    problems: Vec<String>,
    /// How long each planner run took, from its clock (the messages'
    /// `created_at`) to its messages being queued, in microseconds.
    run_time: Histogram<u64>,
}

/// Reads the outbox and checks it holds exactly the notices and
/// resolutions the groups call for, each once, to primary contacts; times
/// each from its payload to the end of the planner run that queued it.
fn check_notices(
    store: &Store,
    units: &[Unit],
    groups: &[Group],
    runs: &[(DateTime<Utc>, u64)],
) -> anyhow::Result<Checked> {
    let (messages, _) = store.outbox_overview(&OutboxFilter::default(), usize::MAX)?;
    // Each disruption's reference names the customer and the group's start.
    let mut references: HashMap<String, (usize, usize)> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for &c in &units[group.unit].customers {
            let reference = format!(
                "DIS-{}-{}",
                customer_id(c),
                group.starts_at.format("%Y%m%d-%H%M")
            );
            if references.insert(reference.clone(), (g, c)).is_some() {
                bail!("two groups make disruption {reference}");
            }
        }
    }
    // Runs end in order and each run's messages are stamped with its start,
    // after the previous run ended.
    let mut per_run = vec![0u64; runs.len()];
    let mut seen: HashSet<(usize, usize, &'static str)> = HashSet::new();
    let mut checked = Checked {
        notice: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        resolution: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        both: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        messages: 0,
        summary: String::new(),
        problems: Vec::new(),
        run_time: Histogram::new_with_bounds(1, 600_000_000, 3)?,
    };
    let mut run_start: Vec<Option<DateTime<Utc>>> = vec![None; runs.len()];
    let problems = &mut checked.problems;
    for message in &messages {
        checked.messages += 1;
        let what = match message.kind {
            MessageKind::Disruption => "notice",
            MessageKind::DisruptionResolved => "resolved",
            other => {
                problems.push(format!("{} is a {}", message.key, other.as_str()));
                continue;
            }
        };
        // disruption/<customer>/<reference>/<kind>/<sequence>/<email>
        let parts: Vec<&str> = message.key.split('/').collect();
        let [_, customer, reference, kind, _, email] = parts[..] else {
            problems.push(format!("unexpected key {}", message.key));
            continue;
        };
        let Some(&(g, c)) = references.get(reference) else {
            problems.push(format!("{} is about no group", message.key));
            continue;
        };
        if customer != customer_id(c) || email != primary_email(c) || kind != what {
            problems.push(format!("{} went to the wrong place", message.key));
            continue;
        }
        if !seen.insert((g, c, what)) {
            problems.push(format!("{what} of {reference} queued twice"));
            continue;
        }
        let run = runs.partition_point(|(end, _)| *end < message.created_at);
        let Some((queued_at, _)) = runs.get(run) else {
            bail!(
                "message {} was queued at {} after the last planner run seen",
                message.key,
                message.created_at
            );
        };
        per_run[run] += 1;
        run_start[run] = Some(message.created_at);
        let group = &groups[g];
        let (sent, measured, histogram) = match what {
            "notice" => (group.fired, group.fired_measured, &mut checked.notice),
            _ => match group.resolved {
                Some((sent, measured)) => (sent, measured, &mut checked.resolution),
                None => {
                    problems.push(format!(
                        "{reference} resolved, but no resolution was posted"
                    ));
                    continue;
                }
            },
        };
        if measured {
            let micros = (*queued_at - sent).num_microseconds().unwrap_or(i64::MAX);
            let micros = u64::try_from(micros).unwrap_or(0);
            histogram.saturating_record(micros);
            checked.both.saturating_record(micros);
        }
    }
    for (run, (&(end, queued), &matched)) in runs.iter().zip(&per_run).enumerate() {
        if queued != matched {
            bail!("planner run {run} (ended {end}) queued {queued} messages, {matched} found");
        }
    }
    for (&(end, _), start) in runs.iter().zip(&run_start) {
        if let Some(start) = start {
            let micros = (end - *start).num_microseconds().unwrap_or(0);
            checked
                .run_time
                .saturating_record(u64::try_from(micros).unwrap_or(0));
        }
    }
    let (mut no_notice, mut no_resolution) = (0, 0);
    for (g, group) in groups.iter().enumerate() {
        for &c in &units[group.unit].customers {
            if !seen.contains(&(g, c, "notice")) {
                no_notice += 1;
                problems.push(format!("no notice of group {g} to {}", customer_id(c)));
            }
            if group.resolved.is_some() && !seen.contains(&(g, c, "resolved")) {
                no_resolution += 1;
                problems.push(format!("no resolution of group {g} to {}", customer_id(c)));
            }
        }
    }
    let notices = seen.iter().filter(|(_, _, w)| *w == "notice").count();
    checked.summary = format!(
        "{notices} notices and {} resolutions for {} groups ({no_notice} notices and {no_resolution} resolutions missing)",
        seen.len() - notices,
        groups.len()
    );
    Ok(checked)
}

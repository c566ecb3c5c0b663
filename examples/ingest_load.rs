//! Webhook-ingest load generator (see BENCHMARKS.md).
//!
//! Starts csmd in-process on its own runtime (two worker threads, like the
//! real binary on a two-core machine), then drives `POST /webhooks/bench`
//! from a separate runtime with `--clients` keep-alive HTTP/1.1
//! connections, one request in flight each. Every request carries one alert
//! with a unique id; a 2xx means csmd flushed it to disk (group commit).
//!
//! It reports durable acknowledgements per second and latency percentiles
//! over the measured window, with the server's flush count and group size
//! from `/metrics`. Then it stops the daemon, reopens the store and checks
//! the journal holds exactly the acknowledged events, each once: a run is
//! also a correctness check, and fails on any error or mismatch.
//!
//! ```text
//! cargo run --release --example ingest_load -- --clients 64 --seconds 10
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http::StatusCode;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

use csmd::model::Event;
use csmd::store::Store;
use webhook::{Scrape, Target, connect, post, scrape};

mod common;
#[path = "common/webhook.rs"]
mod webhook;

/// The allocator of the `csmd` binary, since the daemon runs in-process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const CONNECTOR: &str = "bench";
const TOKEN_ENV: &str = "CSMD_BENCH_TOKEN";
const TOKEN: &str = "bench-token";
/// What the issue asks of this benchmark.
const TARGET_ACKS_PER_SECOND: f64 = 20_000.0;
const TARGET_P99: Duration = Duration::from_millis(20);

#[derive(Parser, Debug)]
#[command(about = "Load csmd's webhook ingest and measure durable acknowledgements")]
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
            eprintln!("ingest_load: {e:#}");
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

/// What one client saw.
struct ClientReport {
    /// Latency in microseconds of each request of the measured window.
    latency: Histogram<u64>,
    /// 2xx answers to requests of the measured window.
    measured_acks: u64,
    /// Ids of every acknowledged event, warm-up included.
    acked_ids: Vec<String>,
    errors: u64,
    first_error: Option<String>,
}

/// Returns whether the run was clean (no error, journal matches).
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.clients == 0 || args.seconds == 0 {
        bail!("--clients and --seconds must be at least 1");
    }
    // reqwest (the daemon's outbound client) is built without a default
    // crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let data_dir = match &args.data_dir {
        Some(dir) if dir.exists() => bail!("--data-dir {} already exists", dir.display()),
        Some(dir) => dir.clone(),
        None => temp.path().join("data"),
    };
    let config_path = write_config(temp.path(), &data_dir)?;
    // SAFETY: no other thread exists yet; both runtimes are built below.
    unsafe { std::env::set_var(TOKEN_ENV, TOKEN) };
    let config = csmd::config::load(&config_path)
        .map_err(|d| anyhow::anyhow!("the benchmark configuration is invalid:\n{d}"))?;

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
    let (reports, before, after, window) = client_rt.block_on(drive(addr, args))?;
    server_rt.block_on(running.stop());
    drop(server_rt);

    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut measured_acks = 0;
    let mut errors = 0;
    let mut first_error = None;
    let mut acked_ids = Vec::new();
    for report in reports {
        latency.add(&report.latency)?;
        measured_acks += report.measured_acks;
        errors += report.errors;
        first_error = first_error.or(report.first_error);
        acked_ids.extend(report.acked_ids);
    }
    let measured = window.end - window.measure_from;
    let acks_per_second = measured_acks as f64 / measured.as_secs_f64();
    let p99 = Duration::from_micros(latency.value_at_quantile(0.99));
    let flushes = after.flushes - before.flushes;
    let groups = after.groups - before.groups;

    println!("webhook ingest, {} clients", args.clients);
    println!(
        "  runtimes          daemon {} worker threads, load generator {} (same machine, same cores)",
        args.server_threads, args.client_threads
    );
    println!(
        "  window            {} s warm-up, {:.2} s measured",
        args.warmup,
        measured.as_secs_f64()
    );
    println!("  acked events/s    {acks_per_second:.0}  ({measured_acks} acknowledged)");
    println!(
        "  latency p50       {}",
        millis(latency.value_at_quantile(0.50))
    );
    println!(
        "  latency p99       {}",
        millis(latency.value_at_quantile(0.99))
    );
    println!(
        "  latency p99.9     {}",
        millis(latency.value_at_quantile(0.999))
    );
    println!("  latency max       {}", millis(latency.max()));
    println!("  errors            {errors}");
    println!(
        "  server flushes    {flushes:.0} in the window ({:.0}/s), mean flush {:.2} ms, mean group {:.1} appends",
        flushes / measured.as_secs_f64(),
        1000.0 * (after.flush_seconds - before.flush_seconds) / flushes.max(1.0),
        (after.group_sum - before.group_sum) / groups.max(1.0)
    );
    if let Some(e) = &first_error {
        println!("  first error       {e}");
    }

    let journal = verify_journal(&data_dir.join("store"), &acked_ids);
    match &journal {
        Ok(summary) => println!("  journal check     ok: {summary}"),
        Err(e) => println!("  journal check     FAILED: {e:#}"),
    }
    let met = acks_per_second >= TARGET_ACKS_PER_SECOND && p99 <= TARGET_P99;
    println!(
        "  target            >= {TARGET_ACKS_PER_SECOND:.0}/s and p99 <= {} ms: {}",
        TARGET_P99.as_millis(),
        if met { "met" } else { "MISSED" }
    );
    Ok(errors == 0 && journal.is_ok())
}

fn millis(micros: u64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

/// A configuration with one bearer-authenticated `webhook-json` connector,
/// its store in `data_dir`.
fn write_config(dir: &Path, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let daemon = common::daemon_section(dir, data_dir)?;
    let text = format!(
        r#"{daemon}
[email]
from = "csmd benchmark <bench@example.net>"

[[connector]]
name = "{CONNECTOR}"
profile = "webhook-json"
[connector.webhook]
auth = "bearer"
token = {{ env = "{TOKEN_ENV}" }}
"#
    );
    let path = dir.join("csmd.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs the warm-up and the measured window; returns every client's report
/// and the server's counters at the start and end of the measured window.
async fn drive(
    addr: SocketAddr,
    args: &Args,
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
    let clients: Vec<_> = (0..args.clients)
        .map(|index| tokio::spawn(client(index, target.clone(), window)))
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

/// One client: posts events back to back on one connection until the end
/// of the window, reconnecting if the connection breaks.
async fn client(index: usize, target: Target, window: Window) -> ClientReport {
    let mut report = ClientReport {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        measured_acks: 0,
        acked_ids: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let mut connection = None;
    for n in 0u64.. {
        let started = Instant::now();
        if started >= window.end {
            break;
        }
        let id = format!("bench-{index}-{n}");
        let result = match &mut connection {
            Some(sender) => post_event(sender, &target, &id).await,
            None => match connect(target.addr).await {
                Ok(sender) => post_event(connection.insert(sender), &target, &id).await,
                Err(e) => Err(e),
            },
        };
        let elapsed = started.elapsed();
        let measured = started >= window.measure_from;
        match result {
            Ok((status, _)) if status.is_success() => {
                report.acked_ids.push(id);
                if measured {
                    report.measured_acks += 1;
                    report
                        .latency
                        .saturating_record(elapsed.as_micros().try_into().unwrap_or(u64::MAX));
                }
            }
            Ok((status, body)) => {
                report.errors += 1;
                report
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(e) => {
                report.errors += 1;
                report.first_error.get_or_insert_with(|| format!("{e:#}"));
                connection = None;
                // Do not spin if the server is gone.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    report
}

/// Posts one alert; returns the status and the answer's body.
async fn post_event(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    id: &str,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let body = format!(
        r#"{{"alerts":[{{"id":"{id}","status":"firing","summary":"benchmark event {id}","service":"bench","severity":"minor"}}]}}"#
    );
    post(sender, target, body).await
}

/// Reopens the stopped daemon's store and checks its journal holds exactly
/// the acknowledged events: each id once, sequence numbers without gaps.
fn verify_journal(store_dir: &Path, acked_ids: &[String]) -> anyhow::Result<String> {
    let store = Store::open(store_dir)?;
    let entries = store.journal_after(0, usize::MAX, |_| true)?;
    let mut expected: HashSet<&str> = acked_ids.iter().map(String::as_str).collect();
    if expected.len() != acked_ids.len() {
        bail!("the load generator acknowledged an id twice");
    }
    for (i, entry) in entries.iter().enumerate() {
        if entry.seq != i as u64 + 1 {
            bail!("journal entry {} has seq {}", i + 1, entry.seq);
        }
        if entry.connector.as_str() != CONNECTOR {
            bail!(
                "journal entry {} is from connector {}",
                entry.seq,
                entry.connector
            );
        }
        let id = match &entry.event {
            Event::Alert(alert) => alert.source_id.as_str(),
            other => bail!("journal entry {} is not an alert: {other:?}", entry.seq),
        };
        if !expected.remove(id) {
            bail!(
                "journal entry {} holds {id:?}, never acknowledged or stored twice",
                entry.seq
            );
        }
    }
    if !expected.is_empty() {
        bail!(
            "{} acknowledged events are missing from the journal (of {})",
            expected.len(),
            acked_ids.len()
        );
    }
    Ok(format!(
        "journal holds {} entries, seq 1..={}, exactly the {} acknowledged events (warm-up included)",
        entries.len(),
        entries.len(),
        acked_ids.len()
    ))
}

//! Data-integrity reconciliation benchmark (see BENCHMARKS.md).
//!
//! Fills a store with 1,000,000 CMDB CIs, 1,000,000 install-base items,
//! 1,000,000 subscriptions and 200,000 monitored hosts for 1,000 customers,
//! with a known number of disagreements of each kind, then runs, in a fresh
//! process so its peak RSS is the reconciliation's own:
//!
//! - a full reconciliation (every rule over everything), checked against
//!   the disagreements planted;
//! - incremental reconciliations after one record changed: one
//!   subscription cancelled (an issue raised), then restored (resolved);
//! - twice, the scheduled full reconciliation, which evaluates every rule
//!   over the index the daemon kept instead of building it from the store;
//! - writing the index's snapshot (as the daemon does after a full run);
//!
//! then, once subscriptions have changed through the journal (one of them
//! cancelled), in another fresh process, what the daemon does at start: a
//! full reconciliation from the snapshot (read it, follow the journal from
//! its position, every rule), checked against the disagreements planted
//! and the one cancelled, then saving the index again.
//!
//! `--fill-only DIR` fills a store and keeps it, to measure copies of it
//! with `--measure DIR` (a run changes the store).
//!
//! ```text
//! cargo run --release --example integrity_load
//! cargo run --release --example integrity_load -- --items 100000   # smaller
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Parser;

use csmd::engine::integrity::Reconciler;
use csmd::engine::integrity::index::snapshot;
use csmd::metrics::Metrics;
use csmd::model::itsm::{Account, BillingAccount, Ci, InstallBaseItem, ItsmRecord, Subscription};
use csmd::model::{AlertEvent, AlertStatus, ConnectorName, Event};
use csmd::store::Store;
use csmd::store::journal::{Append, Journal};

mod common;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const TARGET_FULL: Duration = Duration::from_secs(5);
const TARGET_RSS_MB: f64 = 1024.0;
const TARGET_INCREMENTAL: Duration = Duration::from_millis(10);
const CUSTOMERS: usize = 1000;
/// One disagreement of each kind every this many items.
const EVERY: usize = 1000;

#[derive(Parser, Debug)]
#[command(
    about = "Measure a full and an incremental data-integrity reconciliation, and a start from the saved index"
)]
struct Args {
    /// CIs, install-base items and subscriptions (one each per CI).
    #[arg(long, default_value_t = 1_000_000)]
    items: usize,
    /// Monitored hosts (alerts), most of them CMDB CIs.
    #[arg(long, default_value_t = 200_000)]
    monitored: usize,
    /// Subscriptions changed through the journal after the snapshot is
    /// written, for the start from the snapshot to follow.
    #[arg(long, default_value_t = 10_000)]
    journaled: usize,
    /// Internal: measure the store in this directory.
    #[arg(long, hide = true)]
    measure: Option<PathBuf>,
    /// Internal: measure a start from the snapshot beside the store in
    /// this directory.
    #[arg(long, hide = true)]
    restart: Option<PathBuf>,
    /// Only fill a store in this (new) directory and keep it, to measure
    /// it later with `--measure` (on a copy: a run changes the store).
    #[arg(long)]
    fill_only: Option<PathBuf>,
}

fn now() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap_or_default()
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match (&args.restart, &args.measure, &args.fill_only) {
        (Some(dir), _, _) => restart(dir, &args),
        (None, Some(dir), _) => measure(dir, &args),
        (None, None, Some(dir)) => fill(dir, &args).map(|()| true),
        (None, None, None) => prepare_and_measure(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("integrity_load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn prepare_and_measure(args: &Args) -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    fill(dir.path(), args)?;
    eprintln!(
        "filled the store in {:.1} s ({} CIs, {} items, {} subscriptions, {} monitored hosts)",
        started.elapsed().as_secs_f64(),
        args.items,
        args.items,
        args.items,
        args.monitored
    );
    in_fresh_process(args, "--measure", dir.path())
}

/// Runs this benchmark in a fresh process (so that its peak RSS is the
/// phase's own) with `phase` on the store in `dir`.
fn in_fresh_process(args: &Args, phase: &str, dir: &Path) -> anyhow::Result<bool> {
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--items")
        .arg(args.items.to_string())
        .arg("--monitored")
        .arg(args.monitored.to_string())
        .arg("--journaled")
        .arg(args.journaled.to_string())
        .arg(phase)
        .arg(dir)
        .status()?;
    Ok(status.success())
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(snapshot::FILE_NAME)
}

fn store_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// CI `n`: its name, and which disagreement (if any) it carries.
fn ci_name(n: usize) -> String {
    format!("ci-{n:07}.net.example")
}

fn fill(dir: &Path, args: &Args) -> anyhow::Result<()> {
    write_config(dir)?;
    let store = Store::open(&store_dir(dir))?;
    let mut batch = Vec::with_capacity(10_000);
    let flush = |batch: &mut Vec<ItsmRecord>| -> anyhow::Result<()> {
        store.apply_itsm(batch.iter())?;
        batch.clear();
        Ok(())
    };
    for c in 0..CUSTOMERS {
        batch.push(ItsmRecord::Account(Account {
            id: format!("acc-{c}"),
            number: Some(format!("ACC{c:04}")),
            name: format!("Customer {c}"),
            updated_at: now(),
        }));
        batch.push(ItsmRecord::BillingAccount(BillingAccount {
            id: format!("ba-{c}"),
            number: Some(format!("B{c:04}")),
            name: None,
            updated_at: now(),
        }));
    }
    flush(&mut batch)?;
    for n in 0..args.items {
        let customer = n % CUSTOMERS;
        let kind = n % EVERY;
        // kind 1: retired in the CMDB but still billed; 2: not billed;
        // 3: billed to another customer; 4: billed, in no install base.
        batch.push(ItsmRecord::Ci(Ci {
            id: format!("sys-{n}"),
            name: ci_name(n),
            class: Some("cmdb_ci_netgear".into()),
            install_status: Some(if kind == 1 { 7 } else { 1 }),
            operational_status: Some(1),
            account: None,
            updated_at: now(),
        }));
        if kind != 4 {
            batch.push(ItsmRecord::InstallBaseItem(InstallBaseItem {
                id: format!("ib-{n}"),
                account: Some(format!("acc-{customer}")),
                ci: Some(format!("sys-{n}")),
                service: None,
                state: Some("installed".into()),
                uninstall_date: None,
                updated_at: now(),
            }));
        }
        if kind != 2 {
            let billed_to = if kind == 3 {
                (customer + 1) % CUSTOMERS
            } else {
                customer
            };
            batch.push(subscription(n, billed_to, "active", now()));
        }
        if batch.len() >= 9_000 {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    let connector: ConnectorName = "monitoring".parse()?;
    let mut alerts = Vec::with_capacity(10_000);
    for m in 0..args.monitored {
        // One unknown host in a thousand.
        let ci = if m % EVERY == 5 {
            format!("unknown-{m}.example")
        } else {
            ci_name(m * (args.items / args.monitored.max(1)).max(1) % args.items)
        };
        alerts.push(AlertEvent {
            source_id: format!("fp-{m}"),
            status: AlertStatus::Firing,
            service: None,
            ci: Some(ci),
            customer: None,
            severity: Some("critical".into()),
            summary: "down".into(),
            starts_at: Some(now()),
            ends_at: None,
        });
        if alerts.len() >= 10_000 {
            store.apply_alerts(alerts.iter().map(|a| (&connector, now(), a)))?;
            alerts.clear();
        }
    }
    store.apply_alerts(alerts.iter().map(|a| (&connector, now(), a)))?;
    store.flush()?;
    Ok(())
}

fn subscription(n: usize, customer: usize, status: &str, at: DateTime<Utc>) -> ItsmRecord {
    ItsmRecord::Subscription(Subscription {
        id: format!("sub-{n}"),
        account: Some(format!("ba-{customer}")),
        product: Some("MPLS-100M".into()),
        ci: Some(ci_name(n)),
        service: None,
        quantity: Some(1.0),
        start: Some(now() - chrono::Duration::days(365)),
        end: None,
        status: Some(status.into()),
        updated_at: at,
    })
}

fn write_config(dir: &Path) -> anyhow::Result<()> {
    let daemon = common::daemon_section(dir, &store_dir(dir))?;
    let customers = dir.join("customers");
    for c in 0..CUSTOMERS {
        std::fs::write(
            customers.join(format!("c{c:04}.toml")),
            format!(
                "id = \"c{c:04}\"\nname = \"Customer {c}\"\nitsm_account = \"ACC{c:04}\"\nbilling_account = \"B{c:04}\"\n\n\
                 [[contact]]\nname = \"Ops\"\nemail = \"ops@c{c}.example\"\nroles = [\"maintenance\", \"reports\"]\n"
            ),
        )?;
    }
    std::fs::write(
        dir.join("csmd.toml"),
        format!("{daemon}\n[email]\nfrom = \"CSM <csm@example.net>\"\n"),
    )?;
    Ok(())
}

fn peak_rss_mb() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kb / 1024.0)
}

fn measure(dir: &Path, args: &Args) -> anyhow::Result<bool> {
    let config = csmd::config::load(&dir.join("csmd.toml"))
        .map_err(|d| anyhow::anyhow!("benchmark configuration: {d}"))?;
    let store = Store::open(&store_dir(dir))?;
    let rss_open = peak_rss_mb()?;
    let mut reconciler = Reconciler::new();

    let started = Instant::now();
    let done = reconciler.full(&store, &config, now())?;
    let full = started.elapsed();
    let rss = peak_rss_mb()?;

    let expected = planted(args);
    if done.findings != expected {
        bail!(
            "the full run found {} issues, {expected} were planted",
            done.findings
        );
    }

    // One record changes: a subscription is cancelled, then billed again.
    let mut incremental = Vec::new();
    for (step, status) in [(1, "cancelled"), (2, "active")] {
        let at = now() + chrono::Duration::minutes(step);
        let record = subscription(10, 10 % CUSTOMERS, status, at);
        store.apply_itsm(std::slice::from_ref(&record))?;
        // What an incremental run does once the journal named the record.
        let started = Instant::now();
        let done = reconciler.changed(&store, &config, [record], at)?;
        incremental.push((started.elapsed(), done));
    }
    let (raised, resolved) = (incremental[0].1.raised, incremental[1].1.resolved);
    if (raised, resolved) != (1, 1) {
        bail!(
            "the incremental runs raised {raised} and resolved {resolved} issues, expected 1 and 1"
        );
    }

    // The scheduled full run: every rule over the index the daemon kept
    // (and followed the journal with), not rebuilt from the store.
    let mut warm = Vec::new();
    for _ in 0..2 {
        let started = Instant::now();
        let done = reconciler.review(&store, &config, now() + chrono::Duration::minutes(3))?;
        warm.push(started.elapsed());
        if done.findings != expected || done.raised + done.resolved > 0 {
            bail!(
                "the scheduled full run found {} issues (raised {}, resolved {}), expected {expected} and no change",
                done.findings,
                done.raised,
                done.resolved
            );
        }
    }
    let rss_end = peak_rss_mb()?;

    // What the daemon does after a full run.
    let started = Instant::now();
    let written = reconciler
        .write_snapshot(&store, &snapshot_path(dir))?
        .context("no index to save")?;
    let write = started.elapsed();
    let rss_written = peak_rss_mb()?;

    println!(
        "full reconciliation from a cold store (index built from the store): {:.2} s for {} CIs, {} install-base items, {} subscriptions, {} monitored hosts; {} findings",
        full.as_secs_f64(),
        args.items,
        args.items,
        args.items,
        args.monitored,
        done.findings
    );
    println!(
        "peak RSS: {rss:.0} MB after the cold full run, {rss_end:.0} MB at the end (after opening the store: {rss_open:.0} MB)"
    );
    for (took, done) in &incremental {
        println!(
            "incremental after one record: {:.2} ms (raised {}, resolved {})",
            took.as_secs_f64() * 1000.0,
            done.raised,
            done.resolved
        );
    }
    for took in &warm {
        println!(
            "scheduled full reconciliation over the kept index: {:.2} s",
            took.as_secs_f64()
        );
    }
    println!(
        "wrote the index's snapshot: {:.2} s, {:.1} MB (peak RSS after: {rss_written:.0} MB)",
        write.as_secs_f64(),
        written as f64 / 1e6
    );
    let worst = incremental
        .iter()
        .map(|(t, _)| *t)
        .max()
        .unwrap_or_default();
    let worst_warm = warm.iter().max().copied().unwrap_or_default();
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "targets: full from a cold store ≤ {} s: {}; scheduled full run ≤ {0} s: {}; peak RSS ≤ {TARGET_RSS_MB:.0} MB: {}; incremental ≤ {} ms: {}",
        TARGET_FULL.as_secs(),
        verdict(full <= TARGET_FULL),
        verdict(worst_warm <= TARGET_FULL),
        verdict(rss_end <= TARGET_RSS_MB),
        TARGET_INCREMENTAL.as_millis(),
        verdict(worst <= TARGET_INCREMENTAL),
    );

    // Then, with the daemon stopped, subscriptions change through the
    // journal, and it starts again from the snapshot.
    journal_changes(&store, args)?;
    drop(store);
    in_fresh_process(args, "--restart", dir)
}

/// `--journaled` subscriptions of CIs without a planted disagreement sent
/// again through the journal, the first of them (CI 20) cancelled, and
/// applied by the engine.
fn journal_changes(store: &Store, args: &Args) -> anyhow::Result<()> {
    let at = now() + chrono::Duration::minutes(5);
    let events: Vec<Event> = (20..args.items)
        .filter(|n| !(1..=4).contains(&(n % EVERY)))
        .take(args.journaled)
        .map(|n| {
            let status = if n == 20 { "cancelled" } else { "active" };
            Event::Itsm(subscription(n, n % CUSTOMERS, status, at))
        })
        .collect();
    let journaled = events.len();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (journal, committer) =
            Journal::start(store, Arc::new(Metrics::new()), Duration::from_secs(3600))?;
        for chunk in events.chunks(1000) {
            journal
                .append(Append {
                    connector: "billing".parse()?,
                    delivery_id: None,
                    events: chunk.to_vec(),
                    cursor: None,
                })
                .await?;
        }
        csmd::engine::catch_up(store, Default::default()).await?;
        drop(journal);
        committer
            .join()
            .map_err(|_| anyhow::anyhow!("the journal's committer panicked"))?;
        Ok::<_, anyhow::Error>(())
    })?;
    store.flush()?;
    println!("then {journaled} subscriptions changed through the journal (one cancelled)");
    Ok(())
}

/// A start from the snapshot: read it, follow the journal, every rule.
fn restart(dir: &Path, args: &Args) -> anyhow::Result<bool> {
    tracing_subscriber::fmt()
        .with_env_filter("csmd=info")
        .with_writer(std::io::stderr)
        .init();
    let config = csmd::config::load(&dir.join("csmd.toml"))
        .map_err(|d| anyhow::anyhow!("benchmark configuration: {d}"))?;
    let store = Store::open(&store_dir(dir))?;
    let rss_open = peak_rss_mb()?;
    let mut reconciler = Reconciler::with_snapshot(snapshot_path(dir));
    let started = Instant::now();
    let done = reconciler.resume(&store, &config, now() + chrono::Duration::minutes(6))?;
    let took = started.elapsed();
    let rss = peak_rss_mb()?;
    // Then the daemon saves what it followed.
    let started = Instant::now();
    reconciler.save(&store);
    let saved = started.elapsed();
    let rss_saved = peak_rss_mb()?;
    // The planted disagreements, and CI 20 no longer billed.
    let expected = planted(args) + 1;
    if done.rebuilt || done.findings != expected || (done.raised, done.resolved) != (1, 0) {
        bail!(
            "the start from the snapshot (rebuilt: {}) found {} issues (raised {}, resolved {}), expected {expected} (raised 1)",
            done.rebuilt,
            done.findings,
            done.raised,
            done.resolved
        );
    }
    println!(
        "full reconciliation from the snapshot (read it, follow the journal, every rule): {:.2} s; {} findings",
        took.as_secs_f64(),
        done.findings
    );
    println!(
        "saving the index again afterwards: {:.2} s",
        saved.as_secs_f64()
    );
    println!(
        "peak RSS: {rss:.0} MB after the run, {rss_saved:.0} MB after saving (after opening the store: {rss_open:.0} MB)"
    );
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "targets: full from the snapshot ≤ {} s: {}; peak RSS ≤ {TARGET_RSS_MB:.0} MB: {}",
        TARGET_FULL.as_secs(),
        verdict(took <= TARGET_FULL),
        verdict(rss_saved <= TARGET_RSS_MB),
    );
    Ok(true)
}

/// The issues planted: each of the four kinds once per `EVERY` CIs, and
/// the unknown hosts.
fn planted(args: &Args) -> usize {
    let items = (0..args.items)
        .filter(|n| (1..=4).contains(&(n % EVERY)))
        .count();
    items + (0..args.monitored).filter(|m| m % EVERY == 5).count()
}

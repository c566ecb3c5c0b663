//! Monthly report benchmark (see BENCHMARKS.md).
//!
//! Fills a fresh csmd store with `--customers` customers (each with an
//! ITSM account, three CIs on three services, a `reports` and an
//! `accounting` contact, both subscriptions, so every report has the six
//! months of trending with its four charts and the incident list) in four
//! time zones, `--incidents` incidents and `--changes` changes in the
//! report's month, and `--history` incidents spread over the six months
//! before it (for the trend). Then it runs what the daemon runs at 07:00 on
//! the 1st: the monthly report schedule (`Reporter::run_schedule`), which
//! reads the store once, computes every customer's month and the six
//! before it, draws the charts, renders the templates and the CSV, and
//! queues one message per recipient into the outbox, durably.
//!
//! The figure is the wall time of that run, and the process's peak RSS
//! (`VmHWM`, which includes the store's page cache and the generated
//! data). A run is also a correctness check and fails (exit 1) unless every
//! customer's report was queued to both of its contacts with four inline
//! charts and the CSV, and a second run of the schedule queues nothing.
//!
//! ```text
//! cargo run --release --example report_load
//! cargo run --release --example report_load -- --customers 100 --preview /tmp/report
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use clap::Parser;

use csmd::config::Customer;
use csmd::model::itsm::{Account, Change, ChangeState, Incident, IncidentState, ItsmRecord};
use csmd::notify::templates::{Branding, Templates};
use csmd::report::Reporter;
use csmd::report::period::Month;
use csmd::store::Store;
use csmd::store::outbox::OutboxFilter;

/// The allocator of the `csmd` binary.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the issue asks of this benchmark.
const TARGET_SECONDS: f64 = 30.0;
const ZONES: [&str; 4] = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC"];
const SERVICES: [&str; 3] = ["IP-VPN", "Internet", "Voice"];
/// Records per `apply_itsm` call while filling the store.
const APPLY_BATCH: usize = 5_000;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000)]
    customers: usize,
    /// Incidents opened in the report's month, over all customers.
    #[arg(long, default_value_t = 100_000)]
    incidents: usize,
    /// Changes carried out in the report's month.
    #[arg(long, default_value_t = 10_000)]
    changes: usize,
    /// Incidents over the six months before (the trend).
    #[arg(long, default_value_t = 60_000)]
    history: usize,
    /// The report's month.
    #[arg(long, default_value = "2026-10")]
    month: String,
    /// Make the reports and their messages but queue nothing (to tell the
    /// store's share from the rest).
    #[arg(long)]
    render_only: bool,
    /// Also write the first customer's report here (HTML with its charts,
    /// text and CSV), as `csmd report render` would.
    #[arg(long)]
    preview: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("report_load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn customer(i: usize) -> anyhow::Result<Customer> {
    let zone = ZONES[i % ZONES.len()];
    let mut text = format!(
        r#"
id = "c{i:04}"
name = "Customer {i:04} SA"
time_zone = "{zone}"
subscriptions = ["extended-service-delivery", "extended-service-support"]
itsm_account = "ACC{i:04}"

[[contact]]
name = "Reports {i:04}"
email = "reports@c{i:04}.example"
roles = ["reports"]

[[contact]]
name = "Accounting {i:04}"
email = "accounting@c{i:04}.example"
roles = ["accounting"]

[contract]
availability_target = 99.9
report_to_accounting = true
response = {{ P1 = "15m", P2 = "30m", P3 = "4h", P4 = "1d", P5 = "2d" }}
resolution = {{ P1 = "4h", P2 = "8h", P3 = "3d", P4 = "5d", P5 = "10d" }}
service_credit = [{{ below = 99.9, credit_percent = 5.0 }}, {{ below = 99.5, credit_percent = 10.0 }}]
"#
    );
    for (k, service) in SERVICES.iter().enumerate() {
        text.push_str(&format!(
            "\n[[install_base]]\nci = \"ci-{i}-{k}\"\nservice = \"{service}\"\n"
        ));
    }
    toml::from_str(&text).context("a generated customer file")
}

fn incident(
    rng: &mut Rng,
    n: usize,
    customers: usize,
    from: DateTime<Utc>,
    span_minutes: i64,
) -> ItsmRecord {
    let c = rng.below(customers as u64) as usize;
    let opened = from + Duration::minutes(rng.below(span_minutes as u64) as i64);
    let priority = match rng.below(100) {
        0..2 => 1,
        2..10 => 2,
        10..50 => 3,
        50..90 => 4,
        _ => 5,
    };
    let responded = opened + Duration::minutes(rng.below(90) as i64);
    let open = rng.below(20) == 0;
    let resolved = (!open).then(|| opened + Duration::minutes(30 + rng.below(3 * 1440) as i64));
    ItsmRecord::Incident(Incident {
        id: format!("inc-sys-{n}"),
        number: format!("INC{n:07}"),
        priority: Some(priority),
        state: if open {
            IncidentState::InProgress
        } else {
            IncidentState::Resolved
        },
        short_description: Some(format!("Incident {n} on a customer service")),
        opened_at: Some(opened),
        responded_at: Some(responded),
        resolved_at: resolved,
        closed_at: None,
        on_hold_seconds: (rng.below(4) == 0).then(|| rng.below(6 * 3600) as i64),
        ci: Some(format!("ci-{c}-{}", rng.below(3))),
        service: None,
        account: Some(format!("acc-sys-{c}")),
        company: None,
        major: rng.below(100) == 0,
        updated_at: opened,
    })
}

fn change(rng: &mut Rng, n: usize, customers: usize, month_start: DateTime<Utc>) -> ItsmRecord {
    let c = rng.below(customers as u64) as usize;
    // Nine in ten carried out in the month, one in ten planned in the next.
    let upcoming = rng.below(10) == 0;
    let start = month_start
        + Duration::days(if upcoming { 31 } else { 0 })
        + Duration::minutes(rng.below(29 * 1440) as i64);
    let end = start + Duration::minutes(30 + rng.below(240) as i64);
    let close = [
        "successful",
        "successful",
        "successful",
        "successful_issues",
        "unsuccessful",
    ][rng.below(5) as usize];
    ItsmRecord::Change(Change {
        id: format!("chg-sys-{n}"),
        number: format!("CHG{n:07}"),
        state: if upcoming {
            ChangeState::Scheduled
        } else {
            ChangeState::Closed
        },
        change_type: Some(
            if rng.below(20) == 0 {
                "emergency"
            } else {
                "normal"
            }
            .into(),
        ),
        short_description: Some(format!("Change {n}")),
        planned_start: Some(start),
        planned_end: Some(end),
        work_start: (!upcoming).then_some(start),
        work_end: (!upcoming).then_some(end),
        close_code: (!upcoming).then(|| close.to_string()),
        closed_at: (!upcoming).then_some(end),
        ci: Some(format!("ci-{c}-{}", rng.below(3))),
        billable: false,
        customer_requested: false,
        updated_at: end,
    })
}

fn apply(store: &Store, records: &mut Vec<ItsmRecord>) -> anyhow::Result<()> {
    store.apply_itsm(records.iter())?;
    records.clear();
    Ok(())
}

/// CPU seconds (user and system) the process used so far.
fn cpu_seconds() -> f64 {
    // /proc/self/stat fields 14 and 15, in clock ticks (100 per second on
    // Linux); the command name (field 2) may hold spaces, so count after it.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The process's peak resident set, in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let month: Month = args.month.parse().map_err(anyhow::Error::msg)?;
    let dir = tempfile::Builder::new()
        .prefix("csmd-report-load-")
        .tempdir()?;
    let store = Store::open(&dir.path().join("store"))?;
    let customers: Vec<Customer> = (0..args.customers)
        .map(customer)
        .collect::<anyhow::Result<_>>()?;

    let fill = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut records = Vec::with_capacity(APPLY_BATCH);
    for i in 0..args.customers {
        records.push(ItsmRecord::Account(Account {
            id: format!("acc-sys-{i}"),
            number: Some(format!("ACC{i:04}")),
            name: format!("Customer {i:04} SA"),
            updated_at: DateTime::UNIX_EPOCH,
        }));
    }
    apply(&store, &mut records)?;
    // Opened from a day before the month (UTC) so every zone's month is
    // covered; a few cross into the next.
    let start = month.start(chrono_tz::Tz::UTC) - Duration::hours(14);
    let span = month.minutes(chrono_tz::Tz::UTC);
    for n in 0..args.incidents {
        records.push(incident(&mut rng, n, args.customers, start, span));
        if records.len() == APPLY_BATCH {
            apply(&store, &mut records)?;
        }
    }
    let history_start = month.minus(6).start(chrono_tz::Tz::UTC);
    let history_span = (start - history_start).num_minutes();
    for n in 0..args.history {
        records.push(incident(
            &mut rng,
            args.incidents + n,
            args.customers,
            history_start,
            history_span,
        ));
        if records.len() == APPLY_BATCH {
            apply(&store, &mut records)?;
        }
    }
    for n in 0..args.changes {
        records.push(change(&mut rng, n, args.customers, start));
        if records.len() == APPLY_BATCH {
            apply(&store, &mut records)?;
        }
    }
    apply(&store, &mut records)?;
    store.flush()?;
    println!(
        "store filled in {:.1} s: {} customers, {} incidents in {month} and {} before, {} changes",
        fill.elapsed().as_secs_f64(),
        args.customers,
        args.incidents,
        args.history,
        args.changes
    );

    let templates = Templates::load(
        None,
        Branding {
            name: "Example Networks".into(),
            ..Branding::default()
        },
    )?;
    let from: lettre::message::Mailbox = "Example Networks <csm@example.net>".parse()?;
    let reporter = Reporter {
        customers: &customers,
        default_time_zone: chrono_tz::Tz::UTC,
        templates: &templates,
        from: &from,
    };
    let cron: cron::Schedule = "0 0 7 1 * *".parse()?;
    // A day after the 1st: every zone's occurrence has passed.
    let now = month.next().start(chrono_tz::Tz::UTC) + Duration::days(1);
    let rss_before = peak_rss_mb();

    if args.render_only {
        return render_only(&reporter, &store, &cron, now);
    }
    let started = Instant::now();
    let cpu = cpu_seconds();
    let queued = reporter.run_schedule(&store, &cron, now, &|_| {})?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let rss = peak_rss_mb();

    let again = reporter.run_schedule(&store, &cron, now + Duration::minutes(1), &|_| {})?;
    let (messages, _) = store.outbox_overview(&OutboxFilter::default(), usize::MAX)?;
    let bytes: usize = messages
        .iter()
        .map(|m| serde_json::to_vec(m).map_or(0, |v| v.len()))
        .sum();
    let complete = messages
        .iter()
        .filter(|m| {
            m.attachments.iter().filter(|a| a.is_inline()).count() == 4
                && m.attachments.iter().any(|a| a.filename.ends_with(".csv"))
        })
        .count();
    println!(
        "monthly report run: {queued} messages for {} customers in {seconds:.2} s ({:.1} ms per customer), \
         {cpu:.1} CPU s; peak RSS {} MB (after filling the store: {} MB)",
        args.customers,
        seconds * 1000.0 / args.customers.max(1) as f64,
        rss.map_or("?".into(), |r| format!("{r:.1}")),
        rss_before.map_or("?".into(), |r| format!("{r:.1}")),
    );
    println!(
        "outbox: {} messages, {:.1} MB stored as JSON ({:.0} KB each), {complete} with 4 charts and the CSV; second run queued {again}",
        messages.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e3 / messages.len().max(1) as f64
    );

    if let Some(out) = &args.preview {
        write_preview(&reporter, &store, &customers[0], month, now, out)?;
    }

    let expected = 2 * args.customers;
    let ok = queued == expected && messages.len() == expected && complete == expected && again == 0;
    if !ok {
        eprintln!("check failed: expected {expected} complete messages once");
    }
    let met = seconds <= TARGET_SECONDS;
    println!(
        "target ≤ {TARGET_SECONDS:.0} s: {}",
        if met { "met" } else { "MISSED" }
    );
    Ok(ok)
}

/// The schedule's run without the store's part: reading, computing,
/// drawing and rendering every report, then dropping its messages.
fn render_only(
    reporter: &Reporter<'_>,
    store: &Store,
    cron: &cron::Schedule,
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let cpu = cpu_seconds();
    let due = reporter.due(store, cron, now)?;
    let wanted: Vec<_> = due.iter().map(|d| (d.customer, d.month)).collect();
    let data = reporter.gather(store, &wanted)?;
    let gathered = started.elapsed().as_secs_f64();
    let (mut messages, mut bytes) = (0, 0);
    for group in due.chunks(csmd::report::schedule::GROUP) {
        for made in reporter.build(group, &data, now) {
            let (_, m) = made?;
            messages += m.len();
            bytes += m
                .iter()
                .map(|m| serde_json::to_vec(m).map_or(0, |v| v.len()))
                .sum::<usize>();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    println!(
        "render only: {messages} messages for {} customers in {seconds:.2} s, {cpu:.1} CPU s \
         (store read {gathered:.2} s), {:.1} MB as JSON; peak RSS {} MB",
        due.len(),
        bytes as f64 / 1e6,
        peak_rss_mb().map_or("?".into(), |r| format!("{r:.1}")),
    );
    Ok(true)
}

fn write_preview(
    reporter: &Reporter<'_>,
    store: &Store,
    customer: &Customer,
    month: Month,
    now: DateTime<Utc>,
    out: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let preview = reporter.preview(store, customer.id.as_str(), month, now)?;
    std::fs::write(out.join("report.html"), &preview.html)?;
    std::fs::write(out.join("report.txt"), &preview.text)?;
    std::fs::write(out.join(&preview.csv_filename), &preview.csv)?;
    if preview.charts.len() != 4 {
        bail!("the preview has {} charts", preview.charts.len());
    }
    println!("preview written to {}", out.display());
    Ok(())
}

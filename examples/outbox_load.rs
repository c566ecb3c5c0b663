//! Outbox delivery benchmark (see BENCHMARKS.md).
//!
//! Starts the test SMTP server (`tests/smtp/server.py`, aiosmtpd on
//! 127.0.0.1) as a child process, opens a fresh csmd store and queues
//! `--messages` maintenance notices in it, rendered with the embedded
//! templates and carrying an iCalendar part, as the maintenance planner
//! queues them: each to its own recipient, with its own idempotency key and
//! Message-ID. Then it runs the daemon's outbox worker, built from a
//! configuration read by the daemon's own loader (SMTP towards the server,
//! `tls = "none"`, `rate = "off"`, `[email] concurrency` from
//! `--concurrency` or the configuration's default), on a runtime of two
//! worker threads like the real binary on a two-core machine. The SMTP
//! server shares those cores.
//!
//! The figure is messages per second from the worker's start until no
//! message is left to send (the queue is looked at every 20 ms; a message
//! leaves it when the transport's acceptance is recorded). csmd's start-up
//! scan of the outbox (to set the gauges) comes before the worker starts
//! and is timed on its own. Latency
//! is from queuing to the recorded acceptance, as the
//! `outbox_delivery_seconds` metric has it; the whole backlog is queued
//! before the worker starts, so it mostly says where a message was in the
//! queue. Logging is off (no tracing subscriber), so the daemon's per
//! message log line is not paid for.
//!
//! A run is also a correctness check and fails (exit 1) unless the store
//! holds every message as sent and the server received exactly the queued
//! messages, each Message-ID once and to its own recipient.
//!
//! ```text
//! cargo run --release --example outbox_load
//! cargo run --release --example outbox_load -- --messages 10000 --concurrency 8
//! ```

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use clap::Parser;
use hdrhistogram::Histogram;
use lettre::message::Mailbox;
use tokio_util::sync::CancellationToken;

use csmd::config::Config;
use csmd::metrics::{Metrics, StatusLabels};
use csmd::model::CustomerId;
use csmd::model::outbox::{CalendarPart, Draft, MessageKind, MessageStatus, OutboxMessage};
use csmd::notify::ics::{MaintenanceEvent, Method, maintenance_calendar};
use csmd::notify::templates::{MaintenanceKind, MaintenanceNotice, Templates};
use csmd::notify::transport::Transport;
use csmd::notify::worker::{Composer, OutboxHandle, RetryPolicy, Worker};
use csmd::store::Store;
use csmd::store::outbox::OutboxFilter;

mod common;

/// The allocator of the `csmd` binary, since the worker runs in-process.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the issue asks of this benchmark.
const TARGET_MESSAGES_PER_SECOND: f64 = 200.0;
/// How often the queue is looked at while the worker delivers.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How long the SMTP server may take to print `READY <port>`.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The exit code of `server.py` when aiosmtpd is missing.
const EXIT_NO_AIOSMTPD: i32 = 3;
/// Messages per `queue_messages` call (one batch and one flush each).
const QUEUE_BATCH: usize = 100;
/// Maintenance contacts per customer: one notice per contact.
const CONTACTS_PER_CUSTOMER: usize = 5;
/// Customers each change affects.
const CUSTOMERS_PER_CHANGE: usize = 200;
const SENDER: &str = "Example Telecom CSM <csm@example.net>";

#[derive(Parser, Debug)]
#[command(about = "Deliver a backlog of outbox messages to a local SMTP server and time it")]
struct Args {
    /// Messages queued before the worker starts.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// `[email] concurrency`: messages handed to the transport at once,
    /// and SMTP connections in the pool. Default: the configuration's.
    #[arg(long)]
    concurrency: Option<u16>,
    /// Worker threads of the runtime the outbox worker runs on.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Give up when the backlog is not delivered within this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("outbox_load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether the run was clean (everything sent, server matches).
fn run(args: &Args) -> anyhow::Result<bool> {
    if args.messages == 0 || args.threads == 0 {
        bail!("--messages and --threads must be at least 1");
    }
    csmd::install_crypto_provider();

    // Declared before the server so the server is killed before its
    // folder is removed.
    let temp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let server = SmtpServer::start(temp.path())?;
    let config = load_config(temp.path(), server.port, args.concurrency)?;
    let data_dir = &config.daemon.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let store = Store::open(&data_dir.join("store"))?;
    let templates = csmd::app::load_templates(&config.email).map_err(|e| anyhow!(e))?;

    let started = Instant::now();
    let messages = render_messages(&templates, &config.email.from, args.messages, Utc::now())?;
    let rendered_in = started.elapsed();
    let expected: HashMap<String, String> = messages
        .iter()
        .map(|m| Ok((m.message_id.clone(), recipient_address(&m.to)?)))
        .collect::<anyhow::Result<_>>()?;
    if expected.len() != args.messages {
        bail!("the load generator made a Message-ID twice");
    }
    let started = Instant::now();
    let mut queued = 0;
    let mut batches = messages.into_iter().peekable();
    while batches.peek().is_some() {
        let batch: Vec<_> = batches.by_ref().take(QUEUE_BATCH).collect();
        queued += store.queue_messages(Vec::new(), batch)?.len();
    }
    let queued_in = started.elapsed();
    if queued != args.messages {
        bail!("{queued} of {} messages were queued", args.messages);
    }
    // csmd makes the same scan at start, before the worker runs.
    let started = Instant::now();
    store.outbox_counts()?;
    let counts_scan = started.elapsed();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .thread_name("csmd-outbox")
        .enable_all()
        .build()?;
    let delivery = runtime.block_on(deliver(&store, &config, Duration::from_secs(args.timeout)))?;
    drop(runtime);

    let (all, counts) = store.outbox_overview(&OutboxFilter::default(), usize::MAX)?;
    let count = |status| counts.get(&status).copied().unwrap_or(0);
    let (sent, dead) = (count(MessageStatus::Sent), count(MessageStatus::Dead));
    let unsent = count(MessageStatus::Pending) + count(MessageStatus::Sending);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for message in &all {
        if let Some(sent_at) = message.sent_at {
            let micros = (sent_at - message.created_at)
                .num_microseconds()
                .unwrap_or(0);
            latency.saturating_record(u64::try_from(micros).unwrap_or(0).max(1));
        }
    }
    let first_dead = all
        .iter()
        .find(|m| m.status == MessageStatus::Dead)
        .map(|m| {
            format!(
                "{}: {}",
                m.to,
                m.last_error.as_deref().unwrap_or("no error")
            )
        });
    let server_check = verify_maildir(&server.maildir, &expected);

    let seconds = delivery.elapsed.as_secs_f64();
    let per_second = sent as f64 / seconds;
    println!(
        "outbox delivery, {} messages, SMTP (tls none, rate off) to aiosmtpd on 127.0.0.1",
        args.messages
    );
    println!(
        "  runtime           {} worker threads, concurrency {} (SMTP pool of as many connections); \
         the SMTP server on the same cores",
        args.threads, config.email.concurrency
    );
    println!(
        "  prepared          rendered in {:.2} s, queued in {:.2} s ({QUEUE_BATCH} per batch and flush)",
        rendered_in.as_secs_f64(),
        queued_in.as_secs_f64()
    );
    println!(
        "  start-up scan     {:.0} ms for one outbox_counts() of the backlog (csmd makes one at \
         start, before the worker)",
        counts_scan.as_secs_f64() * 1000.0
    );
    if delivery.timed_out {
        println!("  delivered         TIMED OUT after {seconds:.2} s, {sent} sent");
    } else {
        println!("  delivered         {sent} in {seconds:.2} s");
    }
    println!("  messages/s        {per_second:.0}");
    println!(
        "  latency p50       {}  (queued → sent, backlog included)",
        seconds_of(latency.value_at_quantile(0.50))
    );
    println!(
        "  latency p99       {}",
        seconds_of(latency.value_at_quantile(0.99))
    );
    println!("  latency max       {}", seconds_of(latency.max()));
    println!(
        "  failed attempts   {} retried, {} dead",
        delivery.retries, delivery.dead
    );
    if let Some(dead) = &first_dead {
        println!("  first dead        {dead}");
    }
    let store_ok = sent == args.messages as u64 && dead == 0 && unsent == 0;
    println!(
        "  store check       {}: {sent} sent, {dead} dead, {unsent} pending or sending",
        if store_ok { "ok" } else { "FAILED" }
    );
    match &server_check {
        Ok(summary) => println!("  server check      ok: {summary}"),
        Err(e) => println!("  server check      FAILED: {e:#}"),
    }
    let met = !delivery.timed_out && per_second >= TARGET_MESSAGES_PER_SECOND;
    println!(
        "  target            >= {TARGET_MESSAGES_PER_SECOND:.0} messages/s: {}",
        if met { "met" } else { "MISSED" }
    );
    let clean = !delivery.timed_out && store_ok && server_check.is_ok();
    if !clean {
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        if !log.trim().is_empty() {
            println!("SMTP server log:\n{log}");
        }
    }
    Ok(clean)
}

fn seconds_of(micros: u64) -> String {
    format!("{:.2} s", micros as f64 / 1_000_000.0)
}

/// How the delivery went.
struct Delivery {
    /// From the worker's start until no message was left to send (or the
    /// timeout).
    elapsed: Duration,
    timed_out: bool,
    /// Attempts that failed and were rescheduled, and messages given up.
    retries: u64,
    dead: u64,
}

/// Runs the outbox worker, built as `csmd::app::start` builds it, until no
/// message is left to send, then stops it.
async fn deliver(store: &Store, config: &Config, timeout: Duration) -> anyhow::Result<Delivery> {
    let email = &config.email;
    let transport = Transport::build(&email.transport)
        .map_err(|e| anyhow!("cannot build the SMTP transport: {e}"))?;
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let worker = Worker {
        store: store.clone(),
        transport: Arc::new(transport),
        composer: Arc::new(Composer {
            from: email.from.clone(),
            reply_to: email.reply_to.clone(),
        }),
        rate: email.rate,
        concurrency: email.concurrency,
        retry: RetryPolicy::from_config(email),
        keep_sent: email.keep_sent,
        metrics: metrics.clone(),
        handle: OutboxHandle::default(),
    };
    let started = Instant::now();
    let mut task = tokio::spawn(worker.run(shutdown.clone()));
    // The queue holds exactly the messages still pending or sending, so
    // its first key is a cheap "done yet?"; counting the outbox decodes
    // every message and would take the worker's CPU.
    let (elapsed, timed_out) = loop {
        if store.next_due(&|_| false)?.is_none() {
            break (started.elapsed(), false);
        }
        if started.elapsed() >= timeout {
            break (started.elapsed(), true);
        }
        tokio::select! {
            stopped = &mut task => {
                stopped.context("the outbox worker panicked")?;
                bail!("the outbox worker stopped before the queue was empty");
            }
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    };
    shutdown.cancel();
    task.await.context("the outbox worker panicked")?;
    let failures = |outcome: &str| {
        metrics
            .outbox_send_failures
            .get_or_create(&StatusLabels {
                status: outcome.into(),
            })
            .get()
    };
    Ok(Delivery {
        elapsed,
        timed_out,
        retries: failures("retry"),
        dead: failures("dead"),
    })
}

/// Writes a configuration whose `[email]` sends over SMTP to the server on
/// `port`, and reads it with the daemon's loader.
fn load_config(dir: &Path, port: u16, concurrency: Option<u16>) -> anyhow::Result<Config> {
    let daemon = common::daemon_section(dir, &dir.join("data"))?;
    let concurrency = concurrency
        .map(|n| format!("concurrency = {n}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"{daemon}
[email]
from = "{SENDER}"
transport = "smtp"
rate = "off"
{concurrency}
[email.branding]
name = "Example Telecom"
footer = "Example Telecom, 1 rue de l'Exemple, Paris. Service desk +33 1 00 00 00 00, 24/7."
logo_url = "https://www.example.net/logo.png"
website = "https://www.example.net/status"

[email.smtp]
host = "127.0.0.1"
port = {port}
tls = "none"
"#
    );
    let path = dir.join("csmd.toml");
    std::fs::write(&path, text)?;
    csmd::config::load(&path).map_err(|d| anyhow!("the benchmark configuration is invalid:\n{d}"))
}

/// `count` maintenance notices as the planner queues them: a change
/// affects `CUSTOMERS_PER_CHANGE` customers, a customer has
/// `CONTACTS_PER_CUSTOMER` maintenance contacts, each gets a message of
/// their own with the customer's calendar event.
fn render_messages(
    templates: &Templates,
    from: &Mailbox,
    count: usize,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<OutboxMessage>> {
    const ZONES: [Tz; 4] = [
        Tz::Europe__Paris,
        Tz::Europe__London,
        Tz::America__New_York,
        Tz::Asia__Tokyo,
    ];
    let domain = from.email.domain();
    let organizer_name = from.name.clone().unwrap_or_default();
    let organizer_email = from.email.to_string();
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let customer_n = n / CONTACTS_PER_CUSTOMER;
        let change_n = customer_n / CUSTOMERS_PER_CHANGE;
        let contact_n = n % CONTACTS_PER_CUSTOMER;
        let change_number = format!("CHG{:07}", 40_000 + change_n);
        let customer: CustomerId = format!("customer-{customer_n:05}").parse()?;
        let start = now + chrono::Duration::days(14) + chrono::Duration::hours(change_n as i64);
        let end = start + chrono::Duration::hours(4);
        let summary = format!(
            "Core router software upgrade in PAR{} and replacement of line cards",
            change_n % 7 + 1
        );
        let notice = MaintenanceNotice {
            kind: MaintenanceKind::Notice,
            short_notice: false,
            customer_name: format!("Customer {customer_n} Industries SAS"),
            recipient_name: Some(format!("Contact {contact_n} of customer {customer_n}")),
            change_number: change_number.clone(),
            summary: Some(summary.clone()),
            start,
            end,
            previous_window: None,
            time_zone: ZONES[customer_n % ZONES.len()],
            services: (1..=4)
                .map(|s| format!("MPLS VPN {customer_n}-{s} (Paris – Lyon, 1 Gbit/s)"))
                .collect(),
            cis: (1..=6)
                .map(|c| format!("par{}-pe-{c:02}.core.example.net", change_n % 7 + 1))
                .collect(),
            close_code: None,
            sequence: 0,
        };
        let rendered = templates.maintenance(&notice)?;
        let recipient_name = notice.recipient_name.clone().unwrap_or_default();
        let address = format!("contact{contact_n}@{customer}.example");
        let uid = format!("{change_number}.{customer}@{domain}");
        let calendar_summary = format!("Planned maintenance {change_number}: {summary}");
        let calendar = CalendarPart {
            method: Method::Request.as_str().to_owned(),
            ics: maintenance_calendar(&MaintenanceEvent {
                uid: &uid,
                sequence: notice.sequence,
                stamp: now,
                start,
                end,
                summary: &calendar_summary,
                description: &rendered.text,
                organizer: Some((&organizer_name, &organizer_email)),
                attendee: Some((&recipient_name, &address)),
                method: Method::Request,
            }),
        };
        out.push(
            Draft {
                key: format!("maintenance/{change_number}/{customer}/notice/0/{address}"),
                kind: MessageKind::MaintenanceNotice,
                to: Mailbox::new(Some(recipient_name), address.parse()?).to_string(),
                customer: Some(customer),
                subject: rendered.subject,
                text: rendered.text,
                html: rendered.html,
                calendar: Some(calendar),
            }
            .queue(domain, now),
        );
    }
    Ok(out)
}

/// The bare address of a `Name <address>` mailbox, as the envelope has it.
fn recipient_address(to: &str) -> anyhow::Result<String> {
    let mailbox: Mailbox = to
        .parse()
        .with_context(|| format!("invalid recipient {to:?}"))?;
    Ok(mailbox.email.to_string())
}

/// `tests/smtp/server.py` on a free port of 127.0.0.1, killed when dropped.
struct SmtpServer {
    child: Child,
    port: u16,
    maildir: PathBuf,
    /// The server's stderr.
    log: PathBuf,
}

impl SmtpServer {
    /// Runs the script with no rules (it accepts everything) and waits for
    /// its `READY <port>` line.
    fn start(dir: &Path) -> anyhow::Result<SmtpServer> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/server.py");
        let maildir = dir.join("maildir");
        let rules = dir.join("rules.json");
        let log = dir.join("smtp-server.log");
        std::fs::write(&rules, "{}")?;
        let stderr = std::fs::File::create(&log)?;
        let mut child = Command::new("python3")
            .arg(&script)
            .arg("--port")
            .arg("0")
            .arg("--maildir")
            .arg(&maildir)
            .arg("--rules")
            .arg(&rules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow!(
                    "python3 is not installed; the benchmark runs {} with it \
                     (and needs aiosmtpd: `pip install aiosmtpd`)",
                    script.display()
                ),
                _ => anyhow!("cannot run python3 {}: {e}", script.display()),
            })?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let mut server = SmtpServer {
            child,
            port: 0,
            maildir,
            log,
        };
        // A thread reads the line, so a server that hangs cannot hang us.
        let (sender, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = ready.recv_timeout(SERVER_READY_TIMEOUT).map_err(|_| {
            anyhow!("the SMTP server was not ready within {SERVER_READY_TIMEOUT:?}")
        })?;
        if let Some(port) = line.trim().strip_prefix("READY ") {
            server.port = port
                .parse()
                .with_context(|| format!("the SMTP server said {line:?}"))?;
            return Ok(server);
        }
        // No READY line: the script ended; say why.
        let status = server.child.wait()?;
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        if status.code() == Some(EXIT_NO_AIOSMTPD) {
            bail!("the SMTP server needs aiosmtpd: run `pip install aiosmtpd`\n{log}");
        }
        bail!("the SMTP server exited ({status}) before it was ready\n{log}")
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks the server's maildir holds exactly the `expected` messages
/// (Message-ID → recipient): each Message-ID once, each to its recipient.
fn verify_maildir(maildir: &Path, expected: &HashMap<String, String>) -> anyhow::Result<String> {
    let mut seen = HashSet::new();
    let mut bytes = 0u64;
    let (mut smallest, mut largest) = (u64::MAX, 0u64);
    for entry in std::fs::read_dir(maildir)
        .with_context(|| format!("cannot read the maildir {}", maildir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let envelope: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let eml = path.with_extension("eml");
        let raw = std::fs::read(&eml).with_context(|| format!("cannot read {}", eml.display()))?;
        let name = eml.display();
        let message_id =
            header(&raw, "Message-ID").with_context(|| format!("{name} has no Message-ID"))?;
        let Some(recipient) = expected.get(&message_id) else {
            bail!("{name} has Message-ID {message_id}, which was never queued");
        };
        if !seen.insert(message_id.clone()) {
            bail!("{name}: Message-ID {message_id} was received twice");
        }
        let rcpt_tos = envelope["rcpt_tos"].as_array().map(Vec::as_slice);
        if rcpt_tos != Some(&[serde_json::Value::from(recipient.as_str())][..]) {
            bail!(
                "{name} ({message_id}) went to {}, not {recipient}",
                envelope["rcpt_tos"]
            );
        }
        let size = raw.len() as u64;
        bytes += size;
        smallest = smallest.min(size);
        largest = largest.max(size);
    }
    if seen.len() != expected.len() {
        bail!(
            "the server received {} of the {} messages",
            seen.len(),
            expected.len()
        );
    }
    Ok(format!(
        "{} messages, each Message-ID once, each to its recipient; size mean {:.1} KB \
         (min {:.1}, max {:.1})",
        seen.len(),
        bytes as f64 / seen.len().max(1) as f64 / 1024.0,
        smallest as f64 / 1024.0,
        largest as f64 / 1024.0
    ))
}

/// The first header field called `name` (any case), unfolded and trimmed.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None; // the end of the header section
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if !field.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = value.to_owned();
        for continuation in lines.by_ref().take_while(|l| l.starts_with([' ', '\t'])) {
            value.push_str(continuation);
        }
        return Some(value.trim().to_owned());
    }
    None
}

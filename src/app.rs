//! Builds the daemon from its configuration, runs it, and stops it: the
//! one place that knows every task and the order they start and stop in.
//!
//! Start: store → journal committer → HTTP listener → READY=1.
//! Stop: STOPPING=1 → listener drains in-flight requests → journal makes
//! its last group durable → store flush.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connector::billing_csv;
use crate::connector::rest::client::RestClient;
use crate::connector::rest::poll::Poller;
use crate::connector::rest::task::{self, PollerHandle};
use crate::connector::rest::writer::{self, Writer, WriterHandle};
use crate::engine;
use crate::notify::templates::{Branding, Templates};
use crate::notify::transport::Transport;
use crate::notify::worker::{Composer, OutboxHandle, RetryPolicy, Worker, count_outbox};

use crate::config::{self, Config, LogFormat};
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::store::journal::Journal;
use crate::store::{Store, StoreError};

/// Delivery ids are remembered at least this long (and at least twice the
/// largest signature tolerance), so a replay is refused either way.
const MIN_DELIVERY_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("e-mail: {0}")]
    Email(String),
    #[error("connector {name}: {message}")]
    Connector { name: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started daemon. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    /// The engine and the pollers.
    tasks: TaskTracker,
    committer: std::thread::JoinHandle<()>,
    grace: Duration,
}

/// Opens the store, starts the journal and binds the listener.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let data_dir = config.daemon.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let store = Store::open_with_cache(&data_dir.join("store"), config.daemon.store_cache_bytes)?;
    store.sync_customers(&config.customers)?;
    let metrics = Arc::new(Metrics::new());
    let (journal, committer) =
        Journal::start(&store, metrics.clone(), delivery_retention(&config))?;
    let journal = journal.paced(&store, config.daemon.max_unapplied_events);

    let addr = config.daemon.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    let grace = config.daemon.shutdown_grace;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (applied_tx, applied) = tokio::sync::watch::channel(());
    let durable = journal.durable();
    let changed = engine::ChangedKinds::all();
    let disruption_itsm = engine::ChangedKinds::all();
    let alert_feed = engine::AlertFeed::default();
    let (alerted_tx, alerted) = tokio::sync::watch::channel(());
    let journal_retention = config.daemon.journal_retention;
    let ConnectorTasks { pollers, writers } =
        start_pollers(&config, &store, &journal, &metrics, &shutdown, &tasks)?;
    let templates = Arc::new(load_templates(&config.email).map_err(StartError::Email)?);
    // Fixed at start, like the worker's: it is in every calendar UID.
    let from = Arc::new(config.email.from.clone());
    let transport = Transport::build(&config.email.transport).map_err(StartError::Email)?;
    let outbox = OutboxHandle::default();
    count_outbox(&store, &metrics);
    tasks.spawn(
        Worker {
            store: store.clone(),
            transport: Arc::new(transport),
            composer: Arc::new(Composer {
                from: config.email.from.clone(),
                reply_to: config.email.reply_to.clone(),
            }),
            rate: config.email.rate,
            concurrency: config.email.concurrency,
            retry: RetryPolicy::from_config(&config.email),
            keep_sent: config.email.keep_sent,
            metrics: metrics.clone(),
            handle: outbox.clone(),
        }
        .run(shutdown.clone()),
    );
    let state = Arc::new(AppState {
        config: ArcSwap::from_pointee(config),
        store,
        journal,
        metrics,
        pollers,
        writers,
        outbox: outbox.clone(),
        templates,
        from,
    });
    let reading = state.clone();
    tasks.spawn(engine::run(
        state.store.clone(),
        durable,
        engine::Signals {
            applied: applied_tx,
            changed: vec![changed.clone(), disruption_itsm.clone()],
            alerted: alerted_tx,
            alerts: alert_feed.clone(),
        },
        journal_retention,
        move || reading.config.load_full(),
        shutdown.clone(),
    ));
    // The planners: each runs on a blocking thread after its signal.
    let queued = {
        let state = state.clone();
        move |n: usize| state.messages_queued(n)
    };
    let planning = state.clone();
    tasks.spawn(engine::run_planner(
        "maintenance",
        applied.clone(),
        // Reads every change request and the inventory: at most a fifth
        // of a core.
        engine::Rest(4),
        move || {
            let config = planning.config.load_full();
            let queued = engine::maintenance::Planner {
                customers: &config.customers,
                settings: &config.maintenance,
                default_time_zone: config.daemon.time_zone.0,
                templates: &planning.templates,
                from: &planning.from,
            }
            .run(&planning.store, chrono::Utc::now())?;
            Ok::<_, engine::NoticeError>(engine::Planned { queued, due: None })
        },
        queued.clone(),
        shutdown.clone(),
    ));
    let reconciling = state.clone();
    let ticketed = state.clone();
    tasks.spawn(engine::integrity::run(
        state.store.clone(),
        move || reconciling.config.load_full(),
        data_dir.join(engine::integrity::index::snapshot::FILE_NAME),
        state.metrics.clone(),
        applied.clone(),
        alerted.clone(),
        move |_| ticketed.writers.values().for_each(|w| w.wake()),
        shutdown.clone(),
    ));
    let sourcing = state.clone();
    tasks.spawn(engine::run_planner(
        "sip sources",
        applied,
        // Reads every incident and problem: at most a tenth of a core.
        engine::Rest(9),
        move || {
            sip_sources(&sourcing, &changed);
            Ok::<_, std::convert::Infallible>(engine::Planned::default())
        },
        queued.clone(),
        shutdown.clone(),
    ));
    let ticketing = state.clone();
    let written = state.clone();
    tasks.spawn(engine::run_planner(
        "proactive tickets",
        alerted.clone(),
        engine::Rest(0),
        move || {
            let config = ticketing.config.load_full();
            engine::proactive::Planner {
                connectors: &config.connectors,
                customers: &config.customers,
            }
            .run(&ticketing.store, chrono::Utc::now())
        },
        move |_| written.writers.values().for_each(|w| w.wake()),
        shutdown.clone(),
    ));
    let disrupting = state.clone();
    let memory = Arc::new(std::sync::Mutex::new(engine::disruption::Memory::new(
        alert_feed,
        disruption_itsm,
    )));
    tasks.spawn(engine::run_planner(
        "disruptions",
        alerted,
        // Incremental, and customers wait for its notices.
        engine::Rest(0),
        move || {
            let config = disrupting.config.load_full();
            let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
            memory.follow(&config);
            engine::disruption::Planner {
                customers: &config.customers,
                settings: &config.disruptions,
                default_time_zone: config.daemon.time_zone.0,
                templates: &disrupting.templates,
                from: &disrupting.from,
            }
            .run_with(&disrupting.store, &mut memory, chrono::Utc::now())
        },
        queued,
        shutdown.clone(),
    ));
    let digest = state.clone();
    let schedule = state.clone();
    tasks.spawn(engine::schedule::run(
        "sip_digest",
        move || {
            let config = schedule.config.load();
            (
                config.schedules.sip_digest.schedule.clone(),
                config.daemon.time_zone.0,
            )
        },
        DIGEST_CATCH_UP,
        move |occurrence| {
            let queued = queue_sip_digest(&digest, occurrence).map_err(|e| e.to_string())?;
            Ok(queued)
        },
        shutdown.clone(),
    ));
    tasks.spawn(crate::report::schedule::run(
        state.clone(),
        shutdown.clone(),
    ));
    tasks.close();

    let app = http::router(state.clone());
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(%addr, "Listening");
    Ok(Running {
        addr,
        state,
        shutdown,
        server,
        tasks,
        committer,
        grace,
    })
}

/// Repeated incidents, then RCA action items, become SIP actions after the
/// ITSM records they are read from changed (in this order, so an RCA action
/// seen means the incidents applied before it were counted). Each reads a
/// whole tree, so each runs only when its inputs changed; one that fails
/// runs again next time.
fn sip_sources(state: &AppState, changed: &engine::ChangedKinds) {
    let config = state.config.load();
    let sources = engine::sip::SipSources::of(&config);
    let kinds = changed.take();
    let who_uses_what = ["accounts", "cis", "install_base"];
    let now = chrono::Utc::now();
    if (kinds.any(&["incidents"]) || kinds.any(&who_uses_what))
        && let Err(e) = sources.sync_chronic(&state.store, now)
    {
        tracing::error!(error = %e, "Creating SIP actions for chronic incidents failed");
        changed.mark(u16::MAX);
    }
    if (kinds.any(&["problems", "problem_tasks"]) || kinds.any(&who_uses_what))
        && let Err(e) = sources.sync_rca(&state.store, now)
    {
        tracing::error!(error = %e, "Creating SIP actions from RCA action items failed");
        changed.mark(u16::MAX);
    }
}

/// A digest missed while csmd was down is still sent when it starts this
/// soon after; an older one is stale news.
const DIGEST_CATCH_UP: chrono::Duration = chrono::Duration::hours(12);

/// Queues the overdue SIP digest for `occurrence` and wakes the outbox;
/// returns how many messages were queued now.
pub fn queue_sip_digest(
    state: &AppState,
    occurrence: chrono::DateTime<chrono::Utc>,
) -> Result<usize, engine::sip::DigestError> {
    let config = state.config.load();
    let queued = engine::sip::SipSources::of(&config).queue_digest(
        &state.store,
        &state.templates,
        &state.from,
        occurrence,
        chrono::Utc::now(),
    )?;
    if queued > 0 {
        state.messages_queued(queued);
    }
    Ok(queued)
}

/// The message templates: the embedded ones and the operator's overrides.
pub fn load_templates(email: &crate::config::Email) -> Result<Templates, String> {
    let branding = &email.branding;
    Templates::load(
        email.templates_dir.as_deref(),
        Branding {
            name: branding.name.clone().unwrap_or_default(),
            logo_url: branding.logo_url.clone(),
            footer: branding.footer.clone(),
            website: branding.website.clone(),
        },
    )
    .map_err(|e| e.to_string())
}

/// One task per polled connector, reading its upstream into the journal,
/// one per folder-watching connector, importing its files, and one
/// write-back worker per connector whose profile can write.
fn start_pollers(
    config: &Config,
    store: &Store,
    journal: &Journal,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
    tasks: &TaskTracker,
) -> Result<ConnectorTasks, StartError> {
    let mut pollers = BTreeMap::new();
    let mut writers = BTreeMap::new();
    for connector in &config.connectors {
        if let Some(folder) = &connector.files {
            let watcher = billing_csv::Watcher {
                name: connector.name.clone(),
                folder: folder.folder.clone(),
                archive: folder.archive.clone(),
                done_marker: folder.done_marker,
                files: folder.files.clone(),
                journal: journal.clone(),
                store: store.clone(),
            };
            let handle = billing_csv::spawn(
                watcher,
                folder.interval,
                metrics.clone(),
                shutdown.clone(),
                tasks,
            );
            pollers.insert(connector.name.to_string(), handle);
        }
        let Some(poll) = &connector.poll else {
            continue;
        };
        let client =
            RestClient::new(poll.client.clone()).map_err(|message| StartError::Connector {
                name: connector.name.to_string(),
                message,
            })?;
        let client = Arc::new(client);
        let poller = Poller {
            name: connector.name.clone(),
            client: client.clone(),
            api: poll.polling.api.clone(),
            streams: poll.polling.streams.clone(),
            extra_filter: poll.filter.clone(),
            journal: journal.clone(),
            store: store.clone(),
        };
        let handle = task::spawn(
            poller,
            poll.interval,
            metrics.clone(),
            shutdown.clone(),
            tasks,
        );
        pollers.insert(connector.name.to_string(), handle);
        if poll.polling.api.write.is_some() {
            let writer = Writer {
                connector: connector.name.clone(),
                client,
                api: poll.polling.api.clone(),
                store: store.clone(),
            };
            writers.insert(
                connector.name.to_string(),
                writer::spawn(writer, shutdown.clone(), tasks),
            );
        }
    }
    Ok(ConnectorTasks { pollers, writers })
}

/// Handles on the connectors' background tasks, by connector name.
struct ConnectorTasks {
    pollers: BTreeMap<String, PollerHandle>,
    writers: BTreeMap<String, WriterHandle>,
}

fn delivery_retention(config: &Config) -> Duration {
    config
        .connectors
        .iter()
        .filter_map(|c| match &c.webhook_auth {
            Some(config::WebhookAuth::StandardWebhooks { tolerance, .. }) => Some(*tolerance * 2),
            _ => None,
        })
        .fold(MIN_DELIVERY_RETENTION, Duration::max)
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Re-reads the configuration. On error the running one is kept.
    pub fn reload(&self) -> Result<(), config::Diagnostics> {
        let current = self.state.config.load();
        let fresh = config::load(&current.path)?;
        if fresh.daemon.listen != current.daemon.listen
            || fresh.daemon.data_dir != current.daemon.data_dir
        {
            tracing::warn!(
                "daemon.listen and daemon.data_dir changes take effect at the next restart"
            );
        }
        if let Err(e) = self.state.store.sync_customers(&fresh.customers) {
            tracing::error!(error = %e, "Storing reloaded customers failed; keeping the running configuration");
            return Ok(());
        }
        tracing::info!(
            connectors = fresh.connectors.len(),
            customers = fresh.customers.len(),
            "Configuration reloaded"
        );
        self.state.config.store(Arc::new(fresh));
        Ok(())
    }

    /// Stops accepting requests, lets in-flight ones finish (up to the
    /// grace period), makes the journal durable and flushes the store.
    pub async fn stop(self) {
        let Running {
            state,
            shutdown,
            mut server,
            tasks,
            committer,
            grace,
            ..
        } = self;
        shutdown.cancel();
        let drained = tokio::time::timeout(grace, &mut server).await.is_ok();
        if !drained {
            tracing::warn!(grace = ?grace, "In-flight requests did not finish in time; closing them");
            server.abort();
        }
        // Pollers stop between two requests; a page being stored finishes.
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("Background tasks did not stop in time");
        }
        let store = state.store.clone();
        // The committer stops once the last journal handle is gone.
        drop(state);
        if drained {
            match tokio::task::spawn_blocking(move || committer.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("The journal committer did not stop cleanly"),
            }
        }
        // Otherwise the connection tasks of the unfinished requests (which
        // aborting the server does not end) still hold journal handles, so
        // the committer cannot stop: waiting for it would hang until systemd
        // kills us. Every acknowledged event is already durable; the flush
        // below covers the rest.
        if let Err(e) = store.flush() {
            tracing::error!(error = %e, "Final store flush failed");
        }
        tracing::info!("Stopped");
    }
}

/// `csmd run`: loads the configuration, runs until SIGTERM or SIGINT,
/// reloads on SIGHUP, and talks to systemd throughout.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config =
        config::load(config_path).map_err(|d| anyhow::anyhow!("invalid configuration:\n{d}"))?;
    init_logging(config.daemon.log_format, &config.daemon.log_level);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %config_path.display(), "Starting csmd");
    // Handlers first: from the moment the listener answers, a SIGHUP or
    // SIGTERM must reach us, not kill the process by its default action.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let running = start(config).await?;

    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let watchdog = spawn_watchdog(running.state().clone());

    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                let mut states = vec![NotifyState::Reloading];
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    states.push(now);
                }
                notify(&states);
                if let Err(diagnostics) = running.reload() {
                    for d in &diagnostics.0 {
                        tracing::error!(error = %d, "Reload refused; keeping the running configuration");
                    }
                }
                notify(&[NotifyState::Ready]);
            }
        }
    }
    tracing::info!("Shutting down");
    notify(&[NotifyState::Stopping]);
    if let Some(w) = watchdog {
        w.abort();
    }
    running.stop().await;
    Ok(())
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "Cannot notify systemd");
    }
}

/// Pings systemd's watchdog at half its interval while the journal can
/// write, so a wedged store gets the service restarted.
fn spawn_watchdog(state: Arc<AppState>) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()? / 2;
    Some(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            if state.journal.is_healthy() {
                notify(&[NotifyState::Watchdog]);
            }
        }
    }))
}

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // journald adds its own timestamps; colour only for a person at a terminal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(e) = result {
        eprintln!("csmd: logging was already set up: {e}");
    }
}

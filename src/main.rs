//! The `csmd` binary: a thin clap front over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use csmd::cli::{self, Client, ClientArgs};
use csmd::config;

/// jemalloc instead of the system allocator: the daemon allocates many
/// small, short-lived buffers per request and per record (measured in
/// BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (the symbol overrides the
/// library's default, a NUL-terminated string): a background thread hands
/// freed pages back to the kernel after a second, instead of holding them
/// until allocations in the same arena happen to trigger it, which keeps
/// the peak RSS of a long sync close to what is in use.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser)]
#[command(
    name = "csmd",
    version,
    about = "The customer service management daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, env = "CSMD_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Load and check the configuration, customer files and connector
    /// profiles; print a summary, or every error and exit 1.
    CheckConfig {
        #[arg(long, env = "CSMD_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Customers known to the running daemon.
    Customers {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cli::CustomersCommand,
    },
    /// Connectors with their health: last success, last error, records.
    Connectors {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Poll a connector once now and print what changed.
    Sync {
        #[command(flatten)]
        client: ClientArgs,
        /// The connector's name.
        #[arg(long)]
        connector: String,
    },
    /// Records csmd creates and updates in the ITSM (idempotent by key).
    Writeback {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cli::WritebackCommand,
    },
    /// Customer e-mail queued in the outbox: list, show, retry.
    Outbox {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cli::OutboxCommand,
    },
    /// Change requests: state history, windows, affected customers.
    Changes {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cli::changes::ChangesCommand,
    },
    /// Service Improvement Program actions: list, show, add, update, note.
    Sip {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cli::sip::SipCommand,
    },
    /// Data-integrity issues found across the ITSM, billing and monitoring.
    Integrity {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cli::integrity::IntegrityCommand,
    },
    /// Monthly service reports: preview one, or send one now.
    Report {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: cli::report::ReportCommand,
    },
    /// Inbound events stored in the daemon's journal.
    Events {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::EventsArgs,
    },
    /// Export the store as a JSON Lines dump, or import one into an empty
    /// store; the daemon must be stopped.
    Store {
        #[command(subcommand)]
        command: cli::store::StoreCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => block_on(csmd::app::run(&config)),
        Command::Customers { client, command } => {
            block_on(async move { cli::customers(&Client::new(&client)?, command).await })
        }
        Command::Connectors { client } => {
            block_on(async move { cli::connectors(&Client::new(&client)?).await })
        }
        Command::Sync { client, connector } => {
            block_on(async move { cli::sync(&Client::new(&client)?, &connector).await })
        }
        Command::Writeback { client, command } => {
            block_on(async move { cli::writeback(&Client::new(&client)?, command).await })
        }
        Command::Outbox { client, command } => {
            block_on(async move { cli::outbox(&Client::new(&client)?, command).await })
        }
        Command::Changes { client, command } => {
            block_on(async move { cli::changes::run(&Client::new(&client)?, command).await })
        }
        Command::Sip { client, command } => {
            block_on(async move { cli::sip::sip(&Client::new(&client)?, command).await })
        }
        Command::Integrity { client, command } => {
            block_on(async move { cli::integrity::run(&Client::new(&client)?, command).await })
        }
        Command::Report { client, command } => {
            block_on(async move { cli::report::run(&Client::new(&client)?, command).await })
        }
        Command::Events { client, args } => {
            block_on(async move { cli::events(&Client::new(&client)?, args).await })
        }
        // Synchronous; block_on gives it the CLI's error reporting.
        Command::Store { command } => block_on(async move { cli::store::run(command) }),
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        // The daemon renders every template once at start; so does this.
        Ok(config) => match csmd::app::load_templates(&config.email) {
            Ok(_) => {
                print!("{}", config.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: e-mail templates: {e}", path.display());
                eprintln!("1 error(s); the configuration was not accepted");
                ExitCode::FAILURE
            }
        },
        Err(diagnostics) => {
            for d in &diagnostics.0 {
                eprintln!("{d}");
            }
            eprintln!(
                "{} error(s); the configuration was not accepted",
                diagnostics.0.len()
            );
            ExitCode::FAILURE
        }
    }
}

fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("csmd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("csmd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `csmd store export|import`: the store as a JSON Lines dump. The one
//! place where the CLI opens the store itself rather than asking the daemon:
//! sled's lock makes both refuse to run while the daemon holds the store.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use crate::config;
use crate::store::dump::{self, StoreExport, Summary};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write every record of the store as JSON Lines (the daemon must be
    /// stopped).
    Export {
        #[arg(long, env = "CSMD_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Write the dump to this file instead of stdout; the file appears
        /// only once the dump is complete.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fill an empty store from a dump (the daemon must be stopped).
    Import {
        #[arg(long, env = "CSMD_CONFIG", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// The dump; stdin when it is `-` or left out.
        file: Option<PathBuf>,
    },
}

pub fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Export { config, out } => export(&config, out.as_deref()),
        StoreCommand::Import { config, file } => import(&config, file.as_deref()),
    }
}

/// The store directory of the configuration, as the daemon finds it.
fn store_dir(config: &Path) -> anyhow::Result<PathBuf> {
    Ok(config::load_daemon_section(config)?.data_dir.join("store"))
}

fn export(config: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let store = store_dir(config)?;
    // Opened before the output, so a refusal leaves no file behind.
    let source = StoreExport::open(&store)?;
    let summary = match out {
        None => source.write(BufWriter::new(std::io::stdout().lock()))?,
        Some(path) => write_complete_file(path, |file| source.write(file))?,
    };
    print_summary("exported", "from", &store, &summary);
    Ok(())
}

/// Writes `path` through a temporary file beside it, renamed into place
/// once `write` succeeded and the data is on disk.
fn write_complete_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<Summary, dump::DumpError>,
) -> anyhow::Result<Summary> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = (|| -> anyhow::Result<Summary> {
        let file = File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut out = BufWriter::new(file);
        let summary = write(&mut out)?;
        out.flush()?;
        out.get_ref()
            .sync_all()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, path).with_context(|| {
            format!("cannot rename {} to {}", partial.display(), path.display())
        })?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

fn import(config: &Path, file: Option<&Path>) -> anyhow::Result<()> {
    let store = store_dir(config)?;
    let summary = match file.filter(|path| *path != Path::new("-")) {
        None => dump::import(&store, std::io::stdin().lock(), "<stdin>")?,
        Some(path) => {
            let input =
                File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
            dump::import(&store, BufReader::new(input), &path.display().to_string())?
        }
    };
    print_summary("imported", "into", &store, &summary);
    Ok(())
}

/// On stderr, so that it never mixes with a dump written to stdout.
fn print_summary(done: &str, preposition: &str, store: &Path, summary: &Summary) {
    eprintln!(
        "{done} {} records (schema version {}) {preposition} {}",
        summary.total(),
        summary.schema_version,
        store.display()
    );
    let width = summary.records.keys().map(String::len).max().unwrap_or(0);
    for (tree, records) in &summary.records {
        eprintln!("  {tree:<width$}  {records:>9}");
    }
}

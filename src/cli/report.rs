//! `csmd report …`: preview a customer's monthly service report, or send
//! it now.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use clap::Subcommand;
use serde_json::{Value, json};

use super::Client;
use super::output::{Table, print_json, text};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Render a report as the customer would get it, with its charts;
    /// nothing is sent.
    Render {
        #[arg(long)]
        customer: String,
        /// The report's month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// The HTML file to write (charts inside as data: URIs); the text
        /// part and the CSV attachment are written beside it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Queue a report for the customer's `reports` (and, by contract,
    /// `accounting`) contacts now.
    Send {
        #[arg(long)]
        customer: String,
        /// The report's month, YYYY-MM; it must have ended.
        #[arg(long)]
        month: String,
        /// Send it again although it was sent before.
        #[arg(long)]
        force: bool,
    },
}

pub async fn run(client: &Client, command: ReportCommand) -> anyhow::Result<()> {
    match command {
        ReportCommand::Render {
            customer,
            month,
            out,
        } => {
            let preview = client
                .get(&format!("/api/v1/reports/{customer}/{month}"), &[])
                .await?;
            let written = write_preview(&preview, &out)?;
            if client.json {
                return print_json(&json!({
                    "subject": preview["subject"],
                    "files": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                }));
            }
            println!("{}", text(&preview["subject"]));
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        ReportCommand::Send {
            customer,
            month,
            force,
        } => {
            let body = client
                .post(
                    &format!("/api/v1/reports/{customer}/{month}/send"),
                    Some(&json!({ "force": force })),
                )
                .await?;
            if client.json {
                return print_json(&body);
            }
            let mut table = Table::new(["ID", "TO", "SUBJECT"]);
            for m in body["messages"].as_array().into_iter().flatten() {
                table.row([text(&m["id"]), text(&m["to"]), text(&m["subject"])]);
            }
            table.print();
            println!("{} message(s) queued", text(&body["queued"]));
            Ok(())
        }
    }
}

/// Writes the HTML to `out`, and beside it the text part (`.txt`), the
/// CSV attachment, and the charts as PNG files; returns the paths.
fn write_preview(preview: &Value, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut written = Vec::new();
    let mut write = |path: PathBuf, bytes: &[u8]| -> anyhow::Result<()> {
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    write(out.to_path_buf(), text(&preview["html"]).as_bytes())?;
    write(out.with_extension("txt"), text(&preview["text"]).as_bytes())?;
    let csv_name = text(&preview["csv_filename"]);
    if !csv_name.is_empty() {
        write(
            dir.join(file_name(&csv_name)),
            text(&preview["csv"]).as_bytes(),
        )?;
    }
    for chart in preview["charts"].as_array().into_iter().flatten() {
        let png = base64::engine::general_purpose::STANDARD
            .decode(text(&chart["png"]))
            .context("the daemon sent a chart that is not base64")?;
        write(dir.join(file_name(&text(&chart["filename"]))), &png)?;
    }
    Ok(written)
}

/// The last component of a name the daemon gave, so it cannot write
/// elsewhere.
fn file_name(name: &str) -> String {
    Path::new(name).file_name().map_or_else(
        || "attachment".to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

//! `csmd integrity …`: the data-integrity issues.

use clap::Subcommand;
use serde_json::Value;

use super::Client;
use super::output::{Table, print_json, short_time, text};

#[derive(Debug, Subcommand)]
pub enum IntegrityCommand {
    /// List the issues, by key.
    List {
        #[arg(long)]
        customer: Option<String>,
        /// ci-not-billed, billed-not-in-install-base, billed-after-decommission,
        /// customer-mismatch, monitored-unknown-ci, billable-change-not-billed
        /// or contact-missing.
        #[arg(long)]
        rule: Option<String>,
        /// pending, open, ticketed or resolved.
        #[arg(long)]
        status: Option<String>,
    },
}

pub async fn run(client: &Client, command: IntegrityCommand) -> anyhow::Result<()> {
    let IntegrityCommand::List {
        customer,
        rule,
        status,
    } = command;
    let query: Vec<(&str, String)> = [("customer", customer), ("rule", rule), ("status", status)]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let body = client.get("/api/v1/integrity", &query).await?;
    if client.json {
        return print_json(&body);
    }
    print_list(&body);
    Ok(())
}

fn print_list(body: &Value) {
    let mut table = Table::new([
        "RULE",
        "SUBJECT",
        "CUSTOMER",
        "STATUS",
        "TICKET",
        "FIRST SEEN",
        "EVIDENCE",
    ]);
    for issue in body["issues"].as_array().into_iter().flatten() {
        let evidence = issue["evidence"]
            .as_object()
            .map(|e| {
                e.iter()
                    .map(|(system, says)| format!("{system}: {}", text(says)))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        table.row([
            text(&issue["rule"]),
            text(&issue["subject"]),
            text(&issue["customer"]),
            text(&issue["status"]),
            text(&issue["ticket"]),
            short_time(&issue["first_seen"]),
            evidence,
        ]);
    }
    table.print();
}

//! The CLI's side of the admin API: a small client and the table or JSON
//! output of each command. The daemon owns the store, so everything but
//! `run` and `check-config` goes through the running daemon.

mod client;
pub mod output;

pub use client::{Client, ClientArgs};

use clap::Subcommand;
use output::{Table, print_json, text};

#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// List the customers the daemon knows.
    List,
    /// Show one customer with contacts and contract.
    Show { id: String },
}

pub async fn customers(client: &Client, command: CustomersCommand) -> anyhow::Result<()> {
    match command {
        CustomersCommand::List => {
            let body = client.get("/api/v1/customers", &[]).await?;
            if client.json {
                return print_json(&body);
            }
            let mut table = Table::new(["ID", "NAME", "TIME ZONE", "CONTACTS", "SUBSCRIPTIONS"]);
            for c in body["customers"].as_array().into_iter().flatten() {
                table.row([
                    text(&c["id"]),
                    text(&c["name"]),
                    text(&c["time_zone"]),
                    c["contact"].as_array().map_or(0, Vec::len).to_string(),
                    c["subscriptions"].as_array().map_or(String::new(), |s| {
                        s.iter().map(text).collect::<Vec<_>>().join(", ")
                    }),
                ]);
            }
            table.print();
        }
        CustomersCommand::Show { id } => {
            let body = client.get(&format!("/api/v1/customers/{id}"), &[]).await?;
            // A customer is a nested document; JSON is its readable form.
            print_json(&body)?;
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only events of this connector.
    #[arg(long)]
    connector: Option<String>,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many events (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

pub async fn events(client: &Client, args: EventsArgs) -> anyhow::Result<()> {
    let mut query = vec![
        ("after", args.after.to_string()),
        ("limit", args.limit.to_string()),
    ];
    if let Some(c) = args.connector {
        query.push(("connector", c));
    }
    let body = client.get("/api/v1/events", &query).await?;
    if client.json {
        return print_json(&body);
    }
    let mut table = Table::new([
        "SEQ",
        "RECEIVED (UTC)",
        "CONNECTOR",
        "TYPE",
        "STATUS",
        "CI / SERVICE",
        "SUMMARY",
    ]);
    for e in body["events"].as_array().into_iter().flatten() {
        let event = &e["event"];
        let target = [&event["ci"], &event["service"]]
            .iter()
            .map(|v| text(v))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>();
        table.row([
            text(&e["seq"]),
            text(&e["received_at"])
                .chars()
                .take(19)
                .collect::<String>()
                .replace('T', " "),
            text(&e["connector"]),
            text(&event["type"]),
            text(&event["status"]),
            target.join(" / "),
            text(&event["summary"]),
        ]);
    }
    table.print();
    let shown = body["events"].as_array().map_or(0, Vec::len);
    if let (Some(next), true) = (body["next_after"].as_u64(), shown == args.limit) {
        eprintln!("(more with --after {next})");
    }
    Ok(())
}

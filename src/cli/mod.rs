//! The CLI's side of the admin API: a small client and the table or JSON
//! output of each command. The daemon owns the store, so everything but
//! `run`, `check-config` and `store` (which needs the daemon stopped) goes
//! through the running daemon.

pub mod changes;
mod client;
pub mod integrity;
pub mod output;
pub mod report;
pub mod sip;
pub mod store;

pub use client::{Client, ClientArgs};

use clap::Subcommand;
use output::{Table, print_json, short_time, text};

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

pub async fn connectors(client: &Client) -> anyhow::Result<()> {
    let body = client.get("/api/v1/connectors", &[]).await?;
    if client.json {
        return print_json(&body);
    }
    let mut table = Table::new([
        "NAME",
        "KIND",
        "WEBHOOK",
        "POLLS",
        "STATUS",
        "LAST SUCCESS (UTC)",
        "RECORDS",
        "LAST ERROR",
    ]);
    for c in body["connectors"].as_array().into_iter().flatten() {
        let health = &c["health"];
        let status = match c["ok"].as_bool() {
            None => "-",
            Some(true) => "ok",
            Some(false) if health["last_success"].is_null() && health["last_error"].is_null() => {
                "starting"
            }
            Some(false) => "FAILING",
        };
        let records: u64 = health["streams"].as_object().map_or(0, |s| {
            s.values().filter_map(|v| v["records_total"].as_u64()).sum()
        });
        let mut error = text(&health["last_error"]);
        if let Some(fields) = health["field_errors"].as_array().filter(|f| !f.is_empty()) {
            error = fields.iter().map(text).collect::<Vec<_>>().join("; ");
        }
        table.row([
            text(&c["name"]),
            text(&c["kind"]),
            text(&c["webhook"]),
            // What it polls: an API, or a folder of exports.
            if c["files"].is_null() {
                text(&c["polls"]["base_url"])
            } else {
                text(&c["files"]["folder"])
            },
            status.to_string(),
            short_time(&health["last_success"]),
            if c["polls"].is_null() && c["files"].is_null() {
                String::new()
            } else {
                records.to_string()
            },
            error,
        ]);
    }
    table.print();
    Ok(())
}

/// `csmd sync`: polls a connector once now and says what changed; exit 1
/// when a stream failed.
pub async fn sync(client: &Client, connector: &str) -> anyhow::Result<()> {
    let report = client
        .post(&format!("/api/v1/connectors/{connector}/sync"), None)
        .await?;
    if client.json {
        print_json(&report)?;
    } else {
        let mut table = Table::new([
            "STREAM",
            "STATUS",
            "RECORDS",
            "SKIPPED",
            "PAGES",
            "REMAINING",
            "ERROR",
        ]);
        for (name, s) in report["streams"].as_object().into_iter().flatten() {
            table.row([
                name.clone(),
                text(&s["status"]),
                text(&s["records"]),
                text(&s["skipped"]),
                text(&s["pages"]),
                text(&s["remaining"]),
                [text(&s["error"]), text(&s["reason"])].concat(),
            ]);
        }
        table.print();
    }
    let failed = report["field_errors"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
        || report["streams"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, s)| s["status"] != "synced");
    if failed {
        anyhow::bail!("the sync of {connector} did not complete; see above");
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum WritebackCommand {
    /// Records csmd creates or updates in the ITSM, and how far each got.
    List {
        #[arg(long)]
        connector: Option<String>,
        /// pending, done or failed.
        #[arg(long)]
        status: Option<String>,
    },
    /// One queued write with its error, if any.
    Show {
        #[arg(long)]
        connector: String,
        key: String,
    },
    /// Create a record in the ITSM, once per key however often it is asked.
    Create {
        #[arg(long)]
        connector: String,
        #[arg(long)]
        table: String,
        /// csmd's key for the record (goes into its correlation field).
        #[arg(long)]
        key: String,
        /// A field of the record, as name=value; repeat for more.
        #[arg(long = "field", value_parser = parse_field)]
        fields: Vec<(String, String)>,
    },
    /// Set fields on a record created through csmd.
    Update {
        #[arg(long)]
        connector: String,
        key: String,
        #[arg(long = "field", value_parser = parse_field)]
        fields: Vec<(String, String)>,
    },
}

fn parse_field(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

fn fields_json(fields: Vec<(String, String)>) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    )
}

pub async fn writeback(client: &Client, command: WritebackCommand) -> anyhow::Result<()> {
    let body = match command {
        WritebackCommand::List { connector, status } => {
            let mut query = Vec::new();
            if let Some(c) = connector {
                query.push(("connector", c));
            }
            if let Some(s) = status {
                query.push(("status", s));
            }
            let body = client.get("/api/v1/writes", &query).await?;
            if client.json {
                return print_json(&body);
            }
            let mut table = Table::new([
                "CONNECTOR",
                "KEY",
                "TABLE",
                "STATUS",
                "RECORD",
                "ATTEMPTS",
                "UPDATES PENDING",
                "LAST ERROR",
            ]);
            for w in body["writes"].as_array().into_iter().flatten() {
                table.row([
                    text(&w["connector"]),
                    text(&w["key"]),
                    text(&w["table"]),
                    text(&w["status"]),
                    text(&w["record_id"]),
                    text(&w["attempts"]),
                    w["updates"].as_array().map_or(0, Vec::len).to_string(),
                    text(&w["last_error"]),
                ]);
            }
            table.print();
            return Ok(());
        }
        WritebackCommand::Show { connector, key } => {
            client
                .get(&format!("/api/v1/connectors/{connector}/writes/{key}"), &[])
                .await?
        }
        WritebackCommand::Create {
            connector,
            table,
            key,
            fields,
        } => {
            let request =
                serde_json::json!({ "key": key, "table": table, "fields": fields_json(fields) });
            client
                .post(
                    &format!("/api/v1/connectors/{connector}/writes"),
                    Some(&request),
                )
                .await?
        }
        WritebackCommand::Update {
            connector,
            key,
            fields,
        } => {
            let request = serde_json::json!({ "fields": fields_json(fields) });
            client
                .post(
                    &format!("/api/v1/connectors/{connector}/writes/{key}/updates"),
                    Some(&request),
                )
                .await?
        }
    };
    print_json(&body)
}

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Messages queued for customers, newest first, with counts by status.
    List {
        /// pending, sending, sent or dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        customer: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One message: recipients, subject, bodies, calendar part, last error.
    Show { id: String },
    /// Send a dead (or waiting) message again now.
    Retry { id: String },
}

pub async fn outbox(client: &Client, command: OutboxCommand) -> anyhow::Result<()> {
    let body = match command {
        OutboxCommand::List {
            status,
            customer,
            limit,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(s) = status {
                query.push(("status", s));
            }
            if let Some(c) = customer {
                query.push(("customer", c));
            }
            let body = client.get("/api/v1/outbox", &query).await?;
            if client.json {
                return print_json(&body);
            }
            let mut table = Table::new([
                "ID",
                "KIND",
                "CUSTOMER",
                "TO",
                "STATUS",
                "ATTEMPTS",
                "CREATED",
                "LAST ERROR",
            ]);
            for m in body["messages"].as_array().into_iter().flatten() {
                table.row([
                    text(&m["id"]),
                    text(&m["kind"]),
                    text(&m["customer"]),
                    text(&m["to"]),
                    text(&m["status"]),
                    text(&m["attempts"]),
                    text(&m["created_at"]),
                    text(&m["last_error"]),
                ]);
            }
            table.print();
            let counts = &body["counts"];
            println!(
                "pending {}, sending {}, sent {}, dead {}",
                text(&counts["pending"]),
                text(&counts["sending"]),
                text(&counts["sent"]),
                text(&counts["dead"])
            );
            return Ok(());
        }
        OutboxCommand::Show { id } => client.get(&format!("/api/v1/outbox/{id}"), &[]).await?,
        OutboxCommand::Retry { id } => {
            client
                .post(&format!("/api/v1/outbox/{id}/retry"), None)
                .await?
        }
    };
    print_json(&body)
}

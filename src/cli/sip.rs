//! `csmd sip …`: the Service Improvement Program's actions.

use clap::Subcommand;
use serde_json::{Value, json};

use super::Client;
use super::output::{Table, print_json, short_time, text};

#[derive(Debug, Subcommand)]
pub enum SipCommand {
    /// List actions, oldest first.
    List {
        #[arg(long)]
        customer: Option<String>,
        /// open, in-progress, done or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// survey, complaint, proactive, chronic-incident or rca.
        #[arg(long)]
        source: Option<String>,
        /// Only actions past their target date and not finished.
        #[arg(long)]
        overdue: bool,
        /// Only actions open at some time in this month (YYYY-MM).
        #[arg(long)]
        month: Option<String>,
    },
    /// Show one action with its notes and history.
    Show { id: String },
    /// Add an action by hand.
    Add {
        #[arg(long)]
        customer: String,
        #[arg(long)]
        title: String,
        #[arg(long)]
        description: Option<String>,
        /// survey, complaint, proactive, chronic-incident or rca.
        #[arg(long, default_value = "proactive")]
        source: String,
        #[arg(long)]
        owner: Option<String>,
        /// Target date, YYYY-MM-DD.
        #[arg(long)]
        target: Option<String>,
        /// Who adds it (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Change an action's status, owner, target date, title or description.
    Update {
        id: String,
        /// open, in-progress, done or cancelled.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Target date, YYYY-MM-DD.
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Who changes it (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Add a dated note to an action.
    Note {
        id: String,
        text: String,
        /// Who writes it (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// Send the digest of overdue actions to [sip] digest_to now.
    Digest,
}

/// The author of a change: `--author`, or the user running the CLI.
fn author(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// Adds `key: value` to a JSON object when the value is given.
fn put(body: &mut Value, key: &str, value: Option<String>) {
    if let Some(value) = value {
        body[key] = json!(value);
    }
}

pub async fn sip(client: &Client, command: SipCommand) -> anyhow::Result<()> {
    let shown = match command {
        SipCommand::List {
            customer,
            status,
            source,
            overdue,
            month,
        } => {
            let mut query = Vec::new();
            for (key, value) in [
                ("customer", customer),
                ("status", status),
                ("source", source),
                ("month", month),
            ] {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            if overdue {
                query.push(("overdue", "true".into()));
            }
            let body = client.get("/api/v1/sip", &query).await?;
            if client.json {
                return print_json(&body);
            }
            print_list(&body);
            return Ok(());
        }
        SipCommand::Show { id } => client.get(&format!("/api/v1/sip/{id}"), &[]).await?,
        SipCommand::Add {
            customer,
            title,
            description,
            source,
            owner,
            target,
            author: who,
        } => {
            let mut body = json!({
                "customer": customer,
                "title": title,
                "source": source,
                "author": author(who),
            });
            put(&mut body, "description", description);
            put(&mut body, "owner", owner);
            put(&mut body, "target_date", target);
            client.post("/api/v1/sip", Some(&body)).await?
        }
        SipCommand::Update {
            id,
            status,
            owner,
            target,
            title,
            description,
            author: who,
        } => {
            let mut body = json!({ "author": author(who) });
            put(&mut body, "status", status);
            put(&mut body, "owner", owner);
            put(&mut body, "target_date", target);
            put(&mut body, "title", title);
            put(&mut body, "description", description);
            client.patch(&format!("/api/v1/sip/{id}"), &body).await?
        }
        SipCommand::Note {
            id,
            text,
            author: who,
        } => {
            let body = json!({ "text": text, "author": author(who) });
            client
                .post(&format!("/api/v1/sip/{id}/notes"), Some(&body))
                .await?
        }
        SipCommand::Digest => {
            let body = client.post("/api/v1/sip/digest", None).await?;
            if client.json {
                return print_json(&body);
            }
            match body["queued"].as_u64() {
                Some(0) => println!("nothing is overdue: no digest queued"),
                Some(n) => println!("digest queued for {n} recipient(s)"),
                None => print_json(&body)?,
            }
            return Ok(());
        }
    };
    if client.json {
        print_json(&shown)
    } else {
        print_action(&shown);
        Ok(())
    }
}

fn print_list(body: &Value) {
    let mut table = Table::new([
        "ID", "CUSTOMER", "STATUS", "OWNER", "TARGET", "SOURCE", "TITLE",
    ]);
    for a in body["actions"].as_array().into_iter().flatten() {
        let target = text(&a["target_date"]);
        table.row([
            text(&a["id"]),
            text(&a["customer"]),
            text(&a["status"]),
            text(&a["owner"]),
            if a["overdue"].as_bool() == Some(true) {
                format!("{target} OVERDUE")
            } else {
                target
            },
            text(&a["source"]),
            text(&a["title"]),
        ]);
    }
    table.print();
}

fn print_action(a: &Value) {
    let overdue = if a["overdue"].as_bool() == Some(true) {
        " (OVERDUE)"
    } else {
        ""
    };
    println!("{}  {}", text(&a["id"]), text(&a["title"]));
    println!("  customer     {}", text(&a["customer"]));
    println!("  status       {}", text(&a["status"]));
    println!("  source       {}", text(&a["source"]));
    println!("  owner        {}", or_none(&a["owner"]));
    println!("  target date  {}{overdue}", or_none(&a["target_date"]));
    println!("  created      {}", text(&a["created_at"]));
    if !a["closed_at"].is_null() {
        println!("  closed       {}", text(&a["closed_at"]));
    }
    for (key, label) in [
        ("problem", "problem"),
        ("problem_task", "RCA action"),
        ("change", "change"),
    ] {
        if !a["links"][key].is_null() {
            println!("  {label:<12} {}", text(&a["links"][key]));
        }
    }
    if let Some(incidents) = a["links"]["incidents"].as_array() {
        let numbers: Vec<_> = incidents.iter().map(text).collect();
        println!("  incidents    {}", numbers.join(", "));
    }
    if let Some(description) = a["description"].as_str() {
        println!();
        for line in description.lines() {
            println!("  {line}");
        }
    }
    let notes = a["updates"].as_array().filter(|n| !n.is_empty());
    if let Some(notes) = notes {
        println!("\nNotes");
        let mut table = Table::new(["AT (UTC)", "AUTHOR", "NOTE"]);
        for n in notes {
            table.row([short_time(&n["at"]), text(&n["author"]), text(&n["text"])]);
        }
        table.print();
    }
    println!("\nHistory");
    let mut table = Table::new(["AT (UTC)", "AUTHOR", "FIELD", "FROM", "TO"]);
    for h in a["history"].as_array().into_iter().flatten() {
        table.row([
            short_time(&h["at"]),
            text(&h["author"]),
            text(&h["field"]),
            text(&h["from"]),
            text(&h["to"]),
        ]);
    }
    table.print();
}

fn or_none(value: &Value) -> String {
    match text(value) {
        t if t.is_empty() => "(none)".into(),
        t => t,
    }
}

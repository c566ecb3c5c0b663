//! `csmd changes`: change requests as the daemon tracks them — list by
//! view and filter, or one with its affected customers and history.

use clap::Subcommand;
use serde_json::Value;

use super::Client;
use super::output::{Table, print_json, short_time, text};

#[derive(Debug, Subcommand)]
pub enum ChangesCommand {
    /// Change requests, by number; a view orders them its own way.
    List(ListArgs),
    /// One change (by number or sys_id): its fields, the customers it
    /// reaches and its history.
    Show { number: String },
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only changes reaching this customer (csmd's customer id).
    #[arg(long)]
    customer: Option<String>,
    /// open, closed (review or closed), canceled, or a state: new, assess,
    /// authorize, scheduled, implement, review.
    #[arg(long)]
    status: Option<String>,
    /// Only changes executed in this month (YYYY-MM, the daemon's time
    /// zone), in the order they ended.
    #[arg(long, value_name = "YYYY-MM")]
    month: Option<String>,
    /// Open changes starting in the future, soonest first.
    #[arg(long, group = "view")]
    upcoming: bool,
    /// Changes carried out, in the order they ended.
    #[arg(long, group = "view")]
    executed: bool,
    /// Changes closed unsuccessful or backed out, or cancelled once under way.
    #[arg(long, group = "view")]
    failed: bool,
    /// Changes still open after their planned end, longest overdue first.
    #[arg(long, group = "view")]
    overdue: bool,
}

impl ListArgs {
    fn query(self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        let filters = [
            ("customer", self.customer),
            ("status", self.status),
            ("month", self.month),
        ];
        for (name, value) in filters {
            if let Some(value) = value {
                query.push((name, value));
            }
        }
        let views = [
            ("upcoming", self.upcoming),
            ("executed", self.executed),
            ("failed", self.failed),
            ("overdue", self.overdue),
        ];
        if let Some((view, _)) = views.into_iter().find(|(_, on)| *on) {
            query.push(("view", view.to_string()));
        }
        query
    }
}

pub async fn run(client: &Client, command: ChangesCommand) -> anyhow::Result<()> {
    match command {
        ChangesCommand::List(args) => {
            let body = client.get("/api/v1/changes", &args.query()).await?;
            if client.json {
                return print_json(&body);
            }
            let mut table = Table::new([
                "NUMBER",
                "STATE",
                "TYPE",
                "PLANNED (UTC)",
                "CUSTOMERS",
                "CLOSE CODE",
                "SUMMARY",
            ]);
            for change in body["changes"].as_array().into_iter().flatten() {
                table.row([
                    text(&change["number"]),
                    state(change),
                    text(&change["change_type"]),
                    window(&change["planned_start"], &change["planned_end"]),
                    customer_ids(change),
                    text(&change["close_code"]),
                    text(&change["short_description"]),
                ]);
            }
            table.print();
        }
        ChangesCommand::Show { number } => {
            let change = client
                .get(&format!("/api/v1/changes/{number}"), &[])
                .await?;
            if client.json {
                return print_json(&change);
            }
            show(&change);
        }
    }
    Ok(())
}

fn show(change: &Value) {
    let mut fields = Table::new(["FIELD", "VALUE"]);
    let executed = &change["executed"];
    let rows = [
        ("number", text(&change["number"])),
        ("sys_id", text(&change["id"])),
        ("state", state(change)),
        ("type", text(&change["change_type"])),
        ("summary", text(&change["short_description"])),
        (
            "planned (UTC)",
            window(&change["planned_start"], &change["planned_end"]),
        ),
        (
            "work (UTC)",
            window(&change["work_start"], &change["work_end"]),
        ),
        (
            "executed (UTC)",
            if executed.is_null() {
                String::new()
            } else {
                format!(
                    "{} ({} window)",
                    window(&executed["start"], &executed["end"]),
                    text(&executed["window"])
                )
            },
        ),
        ("close code", text(&change["close_code"])),
        ("billable", text(&change["billable"])),
        ("customer requested", text(&change["customer_requested"])),
        ("failed", text(&change["failed"])),
        (
            "CIs",
            list(&change["cis"], |ci| {
                let name = text(&ci["name"]);
                if name.is_empty() {
                    text(&ci["id"])
                } else {
                    name
                }
            }),
        ),
    ];
    for (name, value) in rows {
        fields.row([name.to_string(), value]);
    }
    fields.print();

    println!("\nAffected customers:");
    let mut customers = Table::new(["CUSTOMER", "NAME", "CIS", "SERVICES"]);
    for customer in change["customers"].as_array().into_iter().flatten() {
        customers.row([
            text(&customer["id"]),
            text(&customer["name"]),
            list(&customer["cis"], text),
            list(&customer["services"], text),
        ]);
    }
    customers.print();

    println!("\nHistory:");
    let mut history = Table::new(["AT (UTC)", "FROM", "TO", "RESCHEDULED (UTC)"]);
    for step in change["history"].as_array().into_iter().flatten() {
        let rescheduled = &step["rescheduled"];
        history.row([
            short_time(&step["at"]),
            text(&step["from"]),
            text(&step["to"]),
            if rescheduled.is_null() {
                String::new()
            } else {
                format!(
                    "{} -> {}",
                    window(
                        &rescheduled["before"]["start"],
                        &rescheduled["before"]["end"]
                    ),
                    window(&rescheduled["after"]["start"], &rescheduled["after"]["end"])
                )
            },
        ]);
    }
    history.print();
}

/// The state, marked when overdue.
fn state(change: &Value) -> String {
    let state = text(&change["state"]);
    if change["overdue"] == true {
        format!("{state} (overdue)")
    } else {
        state
    }
}

fn customer_ids(change: &Value) -> String {
    list(&change["customers"], |c| text(&c["id"]))
}

fn list(values: &Value, show: impl Fn(&Value) -> String) -> String {
    values
        .as_array()
        .into_iter()
        .flatten()
        .map(show)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An RFC 3339 UTC time as `YYYY-MM-DD HH:MM`.
fn time(value: &Value) -> String {
    short_time(value).chars().take(16).collect()
}

fn window(start: &Value, end: &Value) -> String {
    match (start.is_null(), end.is_null()) {
        (true, true) => String::new(),
        _ => format!("{} – {}", time(start), time(end)),
    }
}

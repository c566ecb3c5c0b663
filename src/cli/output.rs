//! How the CLI prints: aligned tables for people, JSON with `--json`.

use serde_json::Value;

pub struct Table {
    inner: comfy_table::Table,
}

impl Table {
    pub fn new<const N: usize>(header: [&str; N]) -> Table {
        let mut inner = comfy_table::Table::new();
        inner
            .load_style(comfy_table::TableStyle::new())
            .set_header(header);
        Table { inner }
    }

    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.inner.add_row(cells);
    }

    pub fn print(&self) {
        if self.inner.row_count() == 0 {
            println!("(none)");
        } else {
            println!("{}", self.inner.trim_fmt());
        }
    }
}

pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS`.
pub fn short_time(value: &Value) -> String {
    text(value)
        .chars()
        .take(19)
        .collect::<String>()
        .replace('T', " ")
}

/// A JSON value as table text: strings without quotes, null as empty.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

//! Tables and their records: values as ServiceNow stores them (every value a
//! string, empty for NULL), two sorted indexes (by sys_id, and by
//! `(sys_updated_on, sys_id)`) so a page of a large table is served without
//! sorting it, and rendering of records as the Table API's JSON.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use super::index::{self, UpdatedIndex};
use super::query::{self, Field, OrderBy, Query};

/// The system fields every table has, after the declared ones.
pub(crate) const SYSTEM_FIELDS: &[&str] = &[
    "sys_id",
    "sys_created_on",
    "sys_created_by",
    "sys_updated_on",
    "sys_updated_by",
    "sys_mod_count",
];

/// `internal_type`s whose values compare as numbers.
const NUMERIC_TYPES: &[&str] = &[
    "integer", "longint", "decimal", "float", "currency", "price",
];

/// Reference fields the simulator knows without being told, and the table
/// each points at.
const WELL_KNOWN_REFERENCES: &[(&str, &str)] = &[
    ("cmdb_ci", "cmdb_ci"),
    ("configuration_item", "cmdb_ci"),
    ("business_service", "cmdb_ci_service"),
    ("service_offering", "service_offering"),
    ("company", "core_company"),
    ("account", "customer_account"),
    ("contact", "customer_contact"),
    ("consumer", "csm_consumer"),
    ("assigned_to", "sys_user"),
    ("caller_id", "sys_user"),
    ("opened_by", "sys_user"),
    ("resolved_by", "sys_user"),
    ("closed_by", "sys_user"),
    ("requested_by", "sys_user"),
    ("assignment_group", "sys_user_group"),
    ("location", "cmn_location"),
    ("problem_id", "problem"),
    ("rfc", "change_request"),
    ("caused_by", "change_request"),
    ("parent", "task"),
    ("parent_incident", "incident"),
    ("install_base_item", "sn_install_base_item"),
    ("product", "cmdb_model"),
];

/// A column of a table, as `sys_dictionary` describes it.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub name: String,
    pub internal_type: String,
    /// The referenced table, for reference columns.
    pub reference: Option<String>,
}

impl Column {
    pub fn new(name: &str, reference: Option<String>, internal_type: Option<String>) -> Column {
        let reference = reference.or_else(|| {
            WELL_KNOWN_REFERENCES
                .iter()
                .find(|(field, _)| *field == name)
                .map(|(_, table)| table.to_string())
        });
        let internal_type =
            internal_type.unwrap_or_else(|| guess_type(name, reference.is_some()).to_string());
        Column {
            name: name.to_string(),
            internal_type,
            reference,
        }
    }
}

fn guess_type(name: &str, is_reference: bool) -> &'static str {
    if is_reference {
        return "reference";
    }
    match name {
        "sys_id" => "GUID",
        "sys_mod_count" | "priority" | "state" | "impact" | "urgency" | "severity"
        | "incident_state" => "integer",
        "active" | "major_incident" | "made_sla" | "knowledge" => "boolean",
        "start_date" | "end_date" | "due_date" | "work_start" | "work_end" | "uninstall_date"
        | "install_date" => "glide_date_time",
        _ if name.ends_with("_at") || name.ends_with("_on") => "glide_date_time",
        _ => "string",
    }
}

pub(crate) struct Row {
    pub values: Vec<String>,
}

pub(crate) struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Each column's `"name":`, ready to copy into a response.
    keys: Vec<Vec<u8>>,
    index: HashMap<String, usize>,
    /// Slots by row number; a deleted record leaves `None`.
    rows: Vec<Option<Row>>,
    by_id: BTreeMap<String, usize>,
    by_updated: UpdatedIndex,
    pub sys_id: usize,
    pub created_on: usize,
    pub created_by: usize,
    pub updated_on: usize,
    pub updated_by: usize,
    pub mod_count: usize,
}

/// How `select` walks the table: along an index, or by sorting the matches.
enum Plan {
    ById { descending: bool },
    ByUpdated { descending: bool },
    Sort,
}

impl Table {
    pub fn new(name: &str, declared: Vec<Column>) -> Table {
        let mut columns: Vec<Column> = declared
            .into_iter()
            .filter(|c| !SYSTEM_FIELDS.contains(&c.name.as_str()))
            .collect();
        columns.extend(SYSTEM_FIELDS.iter().map(|f| Column::new(f, None, None)));
        let index: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Table {
            name: name.to_string(),
            sys_id: index["sys_id"],
            created_on: index["sys_created_on"],
            created_by: index["sys_created_by"],
            updated_on: index["sys_updated_on"],
            updated_by: index["sys_updated_by"],
            mod_count: index["sys_mod_count"],
            keys: columns
                .iter()
                .map(|c| {
                    let mut key = Vec::new();
                    write_json_str(&mut key, &c.name);
                    key.push(b':');
                    key
                })
                .collect(),
            columns,
            index,
            rows: Vec::new(),
            by_id: BTreeMap::new(),
            by_updated: UpdatedIndex::new(),
        }
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A column as the query parser sees it.
    pub fn field(&self, name: &str) -> Option<Field> {
        let column = self.column(name)?;
        let numeric = NUMERIC_TYPES.contains(&self.columns[column].internal_type.as_str());
        Some(Field { column, numeric })
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn row(&self, slot: usize) -> &Row {
        self.rows[slot].as_ref().expect("indexed rows exist")
    }

    pub fn slot(&self, sys_id: &str) -> Option<usize> {
        self.by_id.get(sys_id).copied()
    }

    /// Stores a new record. Fields the table lacks are an error when
    /// `strict`, else ignored; system fields present are taken as given, the
    /// others filled in from `now` and `user`.
    pub fn insert(
        &mut self,
        fields: &Map<String, Value>,
        strict: bool,
        now: &str,
        user: &str,
    ) -> Result<String, String> {
        let mut values = vec![String::new(); self.columns.len()];
        for (name, value) in fields {
            match self.column(name) {
                Some(column) => values[column] = raw_value(value),
                None if strict => {
                    return Err(format!("table {} has no field {name:?}", self.name));
                }
                None => {}
            }
        }
        self.insert_values(values, now, user)
    }

    /// Stores a new record given as one value per column (empty for unset).
    pub fn insert_values(
        &mut self,
        mut values: Vec<String>,
        now: &str,
        user: &str,
    ) -> Result<String, String> {
        if values[self.sys_id].is_empty() {
            values[self.sys_id] = new_sys_id();
        }
        if self.by_id.contains_key(&values[self.sys_id]) {
            return Err(format!(
                "{} already has a record {}",
                self.name, values[self.sys_id]
            ));
        }
        if values[self.updated_on].is_empty() {
            values[self.updated_on] = now.to_string();
        }
        if values[self.created_on].is_empty() {
            values[self.created_on] = values[self.updated_on].clone();
        }
        for by in [self.created_by, self.updated_by] {
            if values[by].is_empty() {
                values[by] = user.to_string();
            }
        }
        if values[self.mod_count].is_empty() {
            values[self.mod_count] = "0".to_string();
        }
        let sys_id = values[self.sys_id].clone();
        let slot = self.rows.len();
        self.by_id.insert(sys_id.clone(), slot);
        self.by_updated
            .insert(&values[self.updated_on], &sys_id, slot);
        self.rows.push(Some(Row { values }));
        Ok(sys_id)
    }

    /// Changes a record's declared fields, counts the change, and stamps
    /// `sys_updated_on` with `now` unless `fields` gives it.
    pub fn update(
        &mut self,
        sys_id: &str,
        fields: &Map<String, Value>,
        now: &str,
        user: &str,
    ) -> Option<()> {
        let slot = self.slot(sys_id)?;
        let (updated_on, mod_count, updated_by, id_column) = (
            self.updated_on,
            self.mod_count,
            self.updated_by,
            self.sys_id,
        );
        let row = self.rows[slot].as_mut().expect("indexed rows exist");
        let old_updated = row.values[updated_on].clone();
        for (name, value) in fields {
            match self.index.get(name) {
                Some(&column) if column != id_column => row.values[column] = raw_value(value),
                _ => {}
            }
        }
        if !fields.contains_key("sys_updated_on") {
            row.values[updated_on] = now.to_string();
        }
        if !fields.contains_key("sys_updated_by") {
            row.values[updated_by] = user.to_string();
        }
        if !fields.contains_key("sys_mod_count") {
            let count: u64 = row.values[mod_count].parse().unwrap_or(0);
            row.values[mod_count] = (count + 1).to_string();
        }
        if row.values[updated_on] != old_updated {
            self.by_updated
                .moved(&old_updated, &row.values[updated_on], sys_id, slot);
        }
        Some(())
    }

    pub fn delete(&mut self, sys_id: &str) -> bool {
        let Some(slot) = self.by_id.remove(sys_id) else {
            return false;
        };
        let row = self.rows[slot].take().expect("indexed rows exist");
        self.by_updated.remove(&row.values[self.updated_on], sys_id);
        true
    }

    /// The rows matching `query`, in its order: the total count and the
    /// slots of the `limit` rows from `offset` on.
    pub fn select(&mut self, query: &Query, offset: usize, limit: usize) -> (usize, Vec<usize>) {
        let plan = self.plan(&query.order);
        let rows = &self.rows;
        let row = |slot: usize| rows[slot].as_ref().expect("indexed rows exist");
        let matching = |slot: &usize| query.matches(&row(*slot).values);
        let mut total = 0;
        let mut page = Vec::new();
        let mut take = |slot: usize| {
            if total >= offset && total - offset < limit {
                page.push(slot);
            }
            total += 1;
        };
        match plan {
            Plan::ById { descending } => {
                let slots = self.by_id.values().copied();
                if descending {
                    slots.rev().filter(matching).for_each(&mut take)
                } else {
                    slots.filter(matching).for_each(&mut take)
                }
            }
            Plan::ByUpdated { descending } => {
                let (updated, sys_id) = (self.updated_on, self.sys_id);
                let entries =
                    self.by_updated
                        .sorted(rows.iter().enumerate().filter_map(|(slot, r)| {
                            r.as_ref().map(|r| {
                                (r.values[updated].as_str(), r.values[sys_id].as_str(), slot)
                            })
                        }));
                if let Some(ranges) = query::key_ranges(query, updated, sys_id) {
                    // The whole answer is a few spans of the index: count
                    // them, and read only the page.
                    let spans = index::spans(entries, &ranges);
                    let total: usize = spans.iter().map(|(start, end)| end - start).sum();
                    let positions = spans.iter().flat_map(|&(start, end)| start..end);
                    let page: Vec<usize> = if descending {
                        positions
                            .rev()
                            .skip(offset)
                            .take(limit)
                            .map(|at| entries[at].2)
                            .collect()
                    } else {
                        positions
                            .skip(offset)
                            .take(limit)
                            .map(|at| entries[at].2)
                            .collect()
                    };
                    return (total, page);
                }
                if descending {
                    entries
                        .iter()
                        .rev()
                        .map(|e| e.2)
                        .filter(matching)
                        .for_each(&mut take)
                } else {
                    let start = query::lower_bound(query, updated).map_or(0, |bound| {
                        entries.partition_point(|(u, _, _)| u.as_str() < bound)
                    });
                    entries[start..]
                        .iter()
                        .map(|e| e.2)
                        .filter(matching)
                        .for_each(&mut take)
                }
            }
            Plan::Sort => {
                let mut slots: Vec<usize> = self.by_id.values().copied().filter(matching).collect();
                // Stable over sys_id order, so ties fall back to sys_id.
                slots.sort_by(|a, b| {
                    let (a, b) = (&row(*a).values, &row(*b).values);
                    query
                        .order
                        .iter()
                        .fold(std::cmp::Ordering::Equal, |acc, key| {
                            acc.then_with(|| {
                                let ordering =
                                    query::compare(key.numeric, &a[key.column], &b[key.column]);
                                if key.descending {
                                    ordering.reverse()
                                } else {
                                    ordering
                                }
                            })
                        })
                });
                slots.into_iter().for_each(&mut take)
            }
        }
        (total, page)
    }

    fn plan(&self, order: &[OrderBy]) -> Plan {
        match order {
            [] => Plan::ById { descending: false },
            [only] if only.column == self.sys_id => Plan::ById {
                descending: only.descending,
            },
            [first] | [first, _] if first.column == self.updated_on => {
                let descending = first.descending;
                let then_by_id =
                    |k: &OrderBy| k.column == self.sys_id && k.descending == descending;
                if order.len() == 1 || then_by_id(&order[1]) {
                    Plan::ByUpdated { descending }
                } else {
                    Plan::Sort
                }
            }
            _ => Plan::Sort,
        }
    }

    /// Appends the JSON of one record to `out`: the `columns` given, in
    /// that order; reference fields as `{"link","value"}` objects when
    /// `links` is set (empty references stay `""`).
    pub fn render(&self, out: &mut Vec<u8>, slot: usize, columns: &[usize], links: Option<&str>) {
        let values = &self.row(slot).values;
        out.push(b'{');
        for (i, &column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let value = &values[column];
            out.extend_from_slice(&self.keys[column]);
            match (&self.columns[column].reference, links) {
                (Some(target), Some(base)) if !value.is_empty() => {
                    out.extend_from_slice(b"{\"link\":\"");
                    out.extend_from_slice(base.as_bytes());
                    out.extend_from_slice(b"/api/now/table/");
                    out.extend_from_slice(target.as_bytes());
                    out.push(b'/');
                    write_json_text(out, value);
                    out.extend_from_slice(b"\",\"value\":");
                    write_json_str(out, value);
                    out.push(b'}');
                }
                _ => write_json_str(out, value),
            }
        }
        out.push(b'}');
    }

    /// One record as a JSON object of raw values (what tests inspect).
    pub fn to_json(&self, slot: usize) -> Value {
        let values = &self.row(slot).values;
        Value::Object(
            self.columns
                .iter()
                .zip(values)
                .map(|(c, v)| (c.name.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    pub fn all_columns(&self) -> Vec<usize> {
        (0..self.columns.len()).collect()
    }
}

/// Writes `s` as a JSON string.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_json_text(out, s);
    out.push(b'"');
}

/// Writes `s` escaped for the inside of a JSON string. Most values need no
/// escaping and are copied straight: this is most of the cost of a page, so
/// it is written to stay cheap in debug builds too (a plain loop rather
/// than iterator adapters or serde's writer).
fn write_json_text(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x20 || b == b'"' || b == b'\\' {
            let quoted = serde_json::to_string(s).expect("a string serialises");
            out.extend_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]);
            return;
        }
        i += 1;
    }
    out.extend_from_slice(bytes);
}

/// ServiceNow stores and returns every value as a string.
fn raw_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // A reference as the API renders it, fed back in.
        Value::Object(o) if o.contains_key("value") => {
            o["value"].as_str().unwrap_or_default().to_string()
        }
        other => other.to_string(),
    }
}

/// A fresh sys_id: 32 lower-case hex digits, random-looking and unique in
/// the process (two splitmix64 outputs of a counter from a random start;
/// cheaper than a CSPRNG when a benchmark loads 100k records).
pub(crate) fn new_sys_id() -> String {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let n = NEXT
        .get_or_init(|| AtomicU64::new(rand::random()))
        .fetch_add(2, Ordering::Relaxed);
    format!(
        "{:016x}{:016x}",
        splitmix64(n),
        splitmix64(n.wrapping_add(1))
    )
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `s` looks like a sys_id.
pub(crate) fn is_sys_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

//! The encoded-query subset of `sysparm_query`: parsing into groups of
//! conditions, evaluation against a row, and the comparison rules shared with
//! `ORDERBY`.
//!
//! Grammar, as ServiceNow reads it: terms separated by `^` (AND); a term
//! starting with `OR` is OR'ed with the term before it only (OR binds tighter
//! than AND); a term starting with `NQ` starts a new query whose result is
//! OR'ed with the previous ones; `ORDERBYfield` / `ORDERBYDESCfield` add sort
//! keys in order; `EQ` ends the query. A literal `^` in a value is written
//! `^^`.

use std::cmp::Ordering;
use std::ops::Bound;

/// A parsed `sysparm_query`: `groups` are OR'ed (`^NQ`); each group is an AND
/// of clauses; each clause is an OR of conditions.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub groups: Vec<Vec<Vec<Condition>>>,
    pub order: Vec<OrderBy>,
}

/// What the parser needs to know of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub column: usize,
    /// Whether values compare as numbers (integer, decimal, … columns).
    pub numeric: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OrderBy {
    pub column: usize,
    pub descending: bool,
    pub numeric: bool,
}

#[derive(Debug)]
pub(crate) struct Condition {
    pub column: usize,
    pub op: Op,
    pub value: String,
    /// The value as a number, parsed once, when the column is numeric:
    /// numeric columns compare as numbers, all others as text.
    number: Option<f64>,
    numeric: bool,
    /// `IN` / `NOT IN` items, `BETWEEN` bounds.
    items: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    NotIn,
    StartsWith,
    EndsWith,
    Like,
    NotLike,
    IsEmpty,
    IsNotEmpty,
    Anything,
    Between,
}

/// Longest spellings first, so `>=` is not read as `>` followed by `=...`.
const OPERATORS: &[(&str, Op)] = &[
    ("ISNOTEMPTY", Op::IsNotEmpty),
    ("ISEMPTY", Op::IsEmpty),
    ("ANYTHING", Op::Anything),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("NOT LIKE", Op::NotLike),
    ("NOTLIKE", Op::NotLike),
    ("NOT IN", Op::NotIn),
    ("BETWEEN", Op::Between),
    ("LIKE", Op::Like),
    ("IN", Op::In),
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
];

/// A part of the query the table cannot answer. ServiceNow drops such parts
/// silently unless told otherwise; the caller decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Problem {
    UnknownField(String),
    UnknownOperator(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::UnknownField(field) => write!(f, "Invalid field name: {field}"),
            Problem::UnknownOperator(term) => write!(f, "Invalid query term: {term}"),
        }
    }
}

/// Parses `encoded`, resolving field names with `column`. Terms naming a
/// field the table lacks, or with an operator outside the subset, are left
/// out of the query and reported.
pub(crate) fn parse(
    encoded: &str,
    column: impl Fn(&str) -> Option<Field>,
) -> (Query, Vec<Problem>) {
    let mut query = Query::default();
    let mut problems = Vec::new();
    let mut group: Vec<Vec<Condition>> = Vec::new();
    // Whether the last term of this group was kept, so a following `^OR`
    // joins it rather than the term before a dropped one.
    let mut last_kept = false;

    for term in split_terms(encoded) {
        if term.is_empty() || term == "EQ" {
            continue;
        }
        if let Some(field) = term.strip_prefix("ORDERBYDESC") {
            push_order(&mut query, &mut problems, &column, field, true);
            continue;
        }
        if let Some(field) = term.strip_prefix("ORDERBY") {
            push_order(&mut query, &mut problems, &column, field, false);
            continue;
        }
        let (joins_previous, condition) = if let Some(rest) = term.strip_prefix("NQ") {
            query.groups.push(std::mem::take(&mut group));
            last_kept = false;
            (false, rest)
        } else if let Some(rest) = term.strip_prefix("OR") {
            (true, rest)
        } else {
            (false, term.as_str())
        };
        match parse_condition(condition, &column) {
            Ok(condition) => {
                match group.last_mut() {
                    Some(clause) if joins_previous && last_kept => clause.push(condition),
                    _ => group.push(vec![condition]),
                }
                last_kept = true;
            }
            Err(problem) => {
                problems.push(problem);
                // `a^ORbad` is still `a`; `bad^ORb` is `b` alone.
                if !joins_previous {
                    last_kept = false;
                }
            }
        }
    }
    query.groups.push(group);
    // A query with no usable condition at all matches everything.
    if query.groups.iter().all(|g| g.is_empty()) {
        query.groups.clear();
    }
    (query, problems)
}

fn push_order(
    query: &mut Query,
    problems: &mut Vec<Problem>,
    column: &impl Fn(&str) -> Option<Field>,
    field: &str,
    descending: bool,
) {
    match column(field) {
        Some(Field { column, numeric }) => query.order.push(OrderBy {
            column,
            descending,
            numeric,
        }),
        None => problems.push(Problem::UnknownField(field.to_string())),
    }
}

/// Splits on `^`, reading `^^` as a literal caret.
fn split_terms(encoded: &str) -> Vec<String> {
    let mut terms = vec![String::new()];
    let mut chars = encoded.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '^' {
            terms.last_mut().expect("one term").push(c);
        } else if chars.peek() == Some(&'^') {
            chars.next();
            terms.last_mut().expect("one term").push('^');
        } else {
            terms.push(String::new());
        }
    }
    terms
}

fn parse_condition(
    term: &str,
    column: &impl Fn(&str) -> Option<Field>,
) -> Result<Condition, Problem> {
    // Column names are lower case, operators upper case or symbols, so the
    // field ends at the first character a column name cannot hold.
    let end = term
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(term.len());
    let (field, rest) = term.split_at(end);
    // `INSTANCEOF` (outside the subset) must not be read as `IN`.
    if rest.starts_with("INSTANCEOF") {
        return Err(Problem::UnknownOperator(term.to_string()));
    }
    let Some(&(spelling, op)) = OPERATORS
        .iter()
        .find(|(spelling, _)| rest.starts_with(spelling))
    else {
        return Err(Problem::UnknownOperator(term.to_string()));
    };
    let Some(Field { column, numeric }) = column(field) else {
        return Err(Problem::UnknownField(field.to_string()));
    };
    let value = script_date(&rest[spelling.len()..]);
    let items = match op {
        Op::In | Op::NotIn => value.split(',').map(str::to_string).collect(),
        Op::Between => value.splitn(2, '@').map(script_date).collect(),
        _ => Vec::new(),
    };
    let number = if numeric {
        value.parse::<f64>().ok()
    } else {
        None
    };
    Ok(Condition {
        column,
        op,
        value,
        number,
        numeric,
        items,
    })
}

/// `javascript:gs.dateGenerate('2024-01-31','23:59:59')`, which the list
/// filter UI writes into queries, is the datetime `2024-01-31 23:59:59`.
fn script_date(value: &str) -> String {
    let Some(args) = value
        .strip_prefix("javascript:gs.dateGenerate(")
        .and_then(|v| v.strip_suffix(')'))
    else {
        return value.to_string();
    };
    let parts: Vec<&str> = args
        .split(',')
        .map(|p| p.trim().trim_matches('\''))
        .collect();
    match parts.as_slice() {
        [date, time] => format!("{date} {time}"),
        _ => value.to_string(),
    }
}

impl Query {
    /// Whether a row (its values, indexed by column) satisfies the query.
    pub fn matches(&self, row: &[String]) -> bool {
        self.groups.is_empty()
            || self.groups.iter().any(|group| {
                group.iter().all(|clause| {
                    clause
                        .iter()
                        .any(|condition| condition.holds(&row[condition.column]))
                })
            })
    }
}

impl Condition {
    /// Empty fields are NULL in the database underneath: only `ISEMPTY`,
    /// `ANYTHING` and `field=` (empty value) match them, so `state!=7` does
    /// not return records without a state.
    fn holds(&self, field: &str) -> bool {
        match self.op {
            Op::IsEmpty => return field.is_empty(),
            Op::IsNotEmpty => return !field.is_empty(),
            Op::Anything => return true,
            Op::Eq if self.value.is_empty() => return field.is_empty(),
            Op::Ne if self.value.is_empty() => return !field.is_empty(),
            _ if field.is_empty() => return false,
            _ => {}
        }
        match self.op {
            Op::Eq => self.compare(field) == Ordering::Equal,
            Op::Ne => self.compare(field) != Ordering::Equal,
            Op::Gt => self.compare(field) == Ordering::Greater,
            Op::Ge => self.compare(field) != Ordering::Less,
            Op::Lt => self.compare(field) == Ordering::Less,
            Op::Le => self.compare(field) != Ordering::Greater,
            Op::In => self
                .items
                .iter()
                .any(|item| compare(self.numeric, field, item) == Ordering::Equal),
            Op::NotIn => !self
                .items
                .iter()
                .any(|item| compare(self.numeric, field, item) == Ordering::Equal),
            Op::StartsWith => lower(field).starts_with(&lower(&self.value)),
            Op::EndsWith => lower(field).ends_with(&lower(&self.value)),
            Op::Like => lower(field).contains(&lower(&self.value)),
            Op::NotLike => !lower(field).contains(&lower(&self.value)),
            Op::Between => match self.items.as_slice() {
                [low, high] => {
                    compare(self.numeric, field, low) != Ordering::Less
                        && compare(self.numeric, field, high) != Ordering::Greater
                }
                _ => false,
            },
            Op::IsEmpty | Op::IsNotEmpty | Op::Anything => unreachable!("answered above"),
        }
    }

    /// The field compared with this condition's value.
    fn compare(&self, field: &str) -> Ordering {
        if let Some(value) = self.number
            && could_be_number(field)
            && let Ok(field) = field.parse::<f64>()
        {
            return field.partial_cmp(&value).unwrap_or(Ordering::Equal);
        }
        field.cmp(&self.value)
    }
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

/// Values of numeric columns compare as numbers (when both parse);
/// everything else (datetimes `YYYY-MM-DD HH:MM:SS`, sys_ids, text, digits
/// in a string column) compares as text. Empty values sort first, as NULLs
/// do.
pub(crate) fn compare(numeric: bool, a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    if numeric
        && could_be_number(a)
        && could_be_number(b)
        && let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>())
    {
        return x.partial_cmp(&y).unwrap_or(Ordering::Equal);
    }
    a.cmp(b)
}

/// A cheap test that spares parsing text that is plainly not a number.
fn could_be_number(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'))
}

/// A query group as a range of the `(sys_updated_on, sys_id)` index: bounds
/// on `sys_updated_on`, and on `sys_id` only where `sys_updated_on` is
/// pinned to one value (so the range is contiguous in the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyRange<'q> {
    pub updated: (Bound<&'q str>, Bound<&'q str>),
    pub sys_id: (Bound<&'q str>, Bound<&'q str>),
}

const EVERYTHING: KeyRange<'static> = KeyRange {
    updated: (Bound::Unbounded, Bound::Unbounded),
    sys_id: (Bound::Unbounded, Bound::Unbounded),
};

/// The query as index ranges (one per `^NQ` group, to be united), when it
/// is nothing but comparisons of `sys_updated_on` and `sys_id`: the cursor
/// queries a poller sends. `None` when a scan is needed.
pub(crate) fn key_ranges(
    query: &Query,
    updated: usize,
    sys_id: usize,
) -> Option<Vec<KeyRange<'_>>> {
    if query.groups.is_empty() {
        return Some(vec![EVERYTHING]);
    }
    query
        .groups
        .iter()
        .map(|group| {
            let mut range = EVERYTHING;
            for clause in group {
                let [c] = clause.as_slice() else { return None };
                if c.value.is_empty() || c.numeric {
                    return None;
                }
                let bounds = if c.column == updated {
                    // An empty timestamp is NULL and fails every comparison.
                    tighten_low(&mut range.updated.0, Bound::Excluded(""));
                    &mut range.updated
                } else if c.column == sys_id {
                    &mut range.sys_id
                } else {
                    return None;
                };
                let value = c.value.as_str();
                match c.op {
                    Op::Eq => {
                        tighten_low(&mut bounds.0, Bound::Included(value));
                        tighten_high(&mut bounds.1, Bound::Included(value));
                    }
                    Op::Gt => tighten_low(&mut bounds.0, Bound::Excluded(value)),
                    Op::Ge => tighten_low(&mut bounds.0, Bound::Included(value)),
                    Op::Lt => tighten_high(&mut bounds.1, Bound::Excluded(value)),
                    Op::Le => tighten_high(&mut bounds.1, Bound::Included(value)),
                    _ => return None,
                }
            }
            let pinned =
                matches!(range.updated, (Bound::Included(a), Bound::Included(b)) if a == b);
            if range.sys_id != EVERYTHING.sys_id && !pinned {
                return None;
            }
            Some(range)
        })
        .collect()
}

fn bound_value<'a>(bound: &Bound<&'a str>) -> Option<&'a str> {
    match bound {
        Bound::Included(v) | Bound::Excluded(v) => Some(v),
        Bound::Unbounded => None,
    }
}

fn tighten_low<'q>(low: &mut Bound<&'q str>, new: Bound<&'q str>) {
    let tighter = match (bound_value(low), bound_value(&new)) {
        (None, _) => true,
        (Some(old), Some(v)) => v > old || (v == old && matches!(new, Bound::Excluded(_))),
        (Some(_), None) => false,
    };
    if tighter {
        *low = new;
    }
}

fn tighten_high<'q>(high: &mut Bound<&'q str>, new: Bound<&'q str>) {
    let tighter = match (bound_value(high), bound_value(&new)) {
        (None, _) => true,
        (Some(old), Some(v)) => v < old || (v == old && matches!(new, Bound::Excluded(_))),
        (Some(_), None) => false,
    };
    if tighter {
        *high = new;
    }
}

/// The lowest value of `column` any matching row can have, when every `^NQ`
/// group bounds it from below with an AND-ed `>`, `>=` or `=`: lets a scan in
/// that column's order skip everything before it.
pub(crate) fn lower_bound(query: &Query, column: usize) -> Option<&str> {
    if query.groups.is_empty() {
        return None;
    }
    let mut lowest: Option<&str> = None;
    for group in &query.groups {
        let bound = group
            .iter()
            .filter_map(|clause| match clause.as_slice() {
                [c] if c.column == column
                    && matches!(c.op, Op::Gt | Op::Ge | Op::Eq)
                    && !c.numeric =>
                {
                    Some(c.value.as_str())
                }
                _ => None,
            })
            .max()?;
        lowest = Some(lowest.map_or(bound, |l| l.min(bound)));
    }
    lowest
}

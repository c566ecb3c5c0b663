//! The declarative profile of a polled REST upstream (`profile.toml`):
//! endpoints, pagination, the incremental cursor, and per-stream field
//! mappings onto csmd's record kinds.
//!
//! Two pagination styles (`[api.pagination] style`):
//! - `offset` (ServiceNow): every page is asked for after the last stored
//!   record with an encoded query (`[api.cursor] after` and `order`),
//!   always at offset 0.
//! - `cursor` (typical billing APIs): the first page is asked for with
//!   `updated_since` = the last stored record's update time (inclusive),
//!   the next pages with the opaque cursor the previous page gave, from
//!   the body (a JSON pointer) or from a `Link: <…>; rel="next"` header.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::records::RecordKind;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestProfile {
    pub kind: String,
    pub description: String,
    pub api: Api,
    pub streams: BTreeMap<String, StreamProfile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Path of a table; `{table}` is replaced by the stream's table.
    pub table_path: String,
    /// JSON pointer to the array of records in a response.
    pub records: String,
    pub page_size: usize,
    /// chrono format of the upstream's datetimes, which are UTC.
    pub time_format: String,
    /// Header with the number of records matching the query; empty when
    /// the upstream sends none.
    #[serde(default)]
    pub total_header: String,
    pub limit_param: String,
    /// `offset` style: the offset parameter.
    #[serde(default)]
    pub offset_param: String,
    /// `offset` style: the parameter carrying the encoded query.
    #[serde(default)]
    pub query_param: String,
    /// The parameter naming the columns to return; empty when the upstream
    /// always returns whole records.
    #[serde(default)]
    pub fields_param: String,
    /// How pages are walked; `offset` when not given.
    #[serde(default)]
    pub pagination: Pagination,
    /// Query parameters sent with every read.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub cursor: CursorProfile,
    #[serde(default)]
    pub oauth: Option<OAuthProfile>,
    #[serde(default)]
    pub write: Option<WriteProfile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CursorProfile {
    /// The field holding a record's last update.
    pub updated: String,
    /// The field holding a record's unique id.
    pub id: String,
    /// `offset` style: query selecting records after the cursor;
    /// `{updated}` and `{id}` are the last stored record's values.
    #[serde(default)]
    pub after: String,
    /// `offset` style: query clause ordering records by the cursor.
    #[serde(default)]
    pub order: String,
}

/// `[api.pagination]`: how the pages of a stream are walked.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    pub style: PaginationStyle,
    /// `cursor` style: JSON pointer to the next page's cursor in a
    /// response body (`/next_cursor`); null, absent or empty on the last
    /// page.
    #[serde(default)]
    pub next_cursor: Option<String>,
    /// `cursor` style: the query parameter the cursor is sent back in.
    #[serde(default)]
    pub cursor_param: Option<String>,
    /// `cursor` style: follow the `Link` header's `rel="next"` URL instead
    /// of (or when the body has no) `next_cursor`.
    #[serde(default)]
    pub next_link: bool,
    /// `cursor` style: the query parameter asking for records updated at or
    /// after a time (the last stored record's `updated`, as the upstream
    /// wrote it).
    #[serde(default)]
    pub updated_since_param: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationStyle {
    /// Keyset pages by an encoded query, always at offset 0 (ServiceNow).
    #[default]
    Offset,
    /// An opaque next cursor, and `updated_since` for incremental syncs.
    Cursor,
}

impl Api {
    /// What the profile's `[api]` lacks for its pagination style.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut need = |ok: bool, what: &str| {
            if !ok {
                errors.push(format!(
                    "[api] with pagination style `{}` needs {what}",
                    match self.pagination.style {
                        PaginationStyle::Offset => "offset",
                        PaginationStyle::Cursor => "cursor",
                    }
                ));
            }
        };
        match self.pagination.style {
            PaginationStyle::Offset => {
                need(!self.query_param.is_empty(), "`query_param`");
                need(!self.offset_param.is_empty(), "`offset_param`");
                need(!self.cursor.after.is_empty(), "[api.cursor] `after`");
                need(!self.cursor.order.is_empty(), "[api.cursor] `order`");
            }
            PaginationStyle::Cursor => {
                let p = &self.pagination;
                need(
                    p.next_link || (p.next_cursor.is_some() && p.cursor_param.is_some()),
                    "[api.pagination] `next_cursor` with `cursor_param`, or `next_link = true`",
                );
                need(
                    p.updated_since_param.is_some(),
                    "[api.pagination] `updated_since_param`",
                );
            }
        }
        if self.page_size == 0 {
            errors.push("[api] `page_size` must be at least 1".into());
        }
        errors
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthProfile {
    pub token_path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteProfile {
    /// The field carrying csmd's key on records it creates.
    pub correlation_field: String,
    /// The tickets csmd opens by itself, by purpose, like
    /// `[api.write.tickets.major_incident]`.
    #[serde(default)]
    pub tickets: BTreeMap<TicketPurpose, TicketProfile>,
}

/// Why csmd opens a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketPurpose {
    /// One per outage seen by monitoring.
    MajorIncident,
    /// One per customer an outage reaches, linked to the major incident.
    ProactiveCase,
    /// One per data-integrity issue.
    DataIntegrity,
}

impl TicketPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketPurpose::MajorIncident => "major_incident",
            TicketPurpose::ProactiveCase => "proactive_case",
            TicketPurpose::DataIntegrity => "data_integrity",
        }
    }
}

/// How tickets of one purpose are written: the table, where csmd's parts
/// of a ticket go, and the columns set on creation and resolution.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketProfile {
    pub table: String,
    /// csmd's part of a ticket → the upstream column.
    pub fields: BTreeMap<TicketField, String>,
    /// Columns set on every ticket of this purpose when it is created.
    #[serde(default)]
    pub create: serde_json::Map<String, serde_json::Value>,
    /// Columns set when csmd resolves the ticket (its note goes into the
    /// `note` column in the same update).
    #[serde(default)]
    pub resolve: serde_json::Map<String, serde_json::Value>,
    /// Columns set when csmd reopens a resolved ticket.
    #[serde(default)]
    pub reopen: serde_json::Map<String, serde_json::Value>,
}

/// The parts of a ticket csmd fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketField {
    /// A one-line summary.
    Title,
    /// The full text.
    Description,
    /// The customer's account (a reference: its id when csmd knows it).
    Account,
    /// The CI (a reference: its id when csmd knows it).
    Ci,
    /// The service (a reference: its id when csmd knows it).
    Service,
    /// The assignment group, from the connector's configuration.
    Group,
    /// Where work notes go.
    Note,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamProfile {
    pub table: String,
    pub record: RecordKind,
    /// Extra query ANDed to every read of this stream: an encoded query
    /// (`offset` style), or query parameters `a=1&b=2` (`cursor` style).
    #[serde(default)]
    pub filter: String,
    /// csmd field → upstream field.
    pub fields: BTreeMap<String, String>,
}

/// A stream with the connector's overrides applied.
#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    pub table: String,
    pub record: RecordKind,
    pub filter: String,
    pub fields: BTreeMap<&'static str, String>,
}

/// `[connector.streams.NAME]` in csmd.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOverride {
    /// Read this stream at all (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Another table name (a custom table or a view).
    #[serde(default)]
    pub table: Option<String>,
    /// Extra query ANDed to the profile's.
    #[serde(default)]
    pub filter: Option<String>,
    /// csmd field → upstream field, replacing the profile's (custom `u_`
    /// fields of an instance).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

impl RestProfile {
    /// The enabled streams with `overrides` applied; errors are messages
    /// naming the stream and field.
    pub fn streams(
        &self,
        overrides: &BTreeMap<String, StreamOverride>,
    ) -> Result<Vec<Stream>, Vec<String>> {
        let mut errors = self.api.check();
        let joiner = match self.api.pagination.style {
            PaginationStyle::Offset => "^",
            PaginationStyle::Cursor => "&",
        };
        for name in overrides.keys() {
            if !self.streams.contains_key(name) {
                let known: Vec<_> = self.streams.keys().map(String::as_str).collect();
                errors.push(format!(
                    "unknown stream `{name}`; this profile has {}",
                    known.join(", ")
                ));
            }
        }
        let mut streams = Vec::new();
        for (name, profile) in &self.streams {
            let over = overrides.get(name).cloned().unwrap_or_default();
            if over.enabled == Some(false) {
                continue;
            }
            let mut fields = BTreeMap::new();
            for (field, column) in profile.fields.iter().chain(&over.fields) {
                match profile.record.field(field) {
                    Some(known) => {
                        fields.insert(known, column.clone());
                    }
                    None => errors.push(format!(
                        "stream `{name}`: unknown field `{field}` for {} records; known fields: {}",
                        profile.record.as_str(),
                        profile.record.fields().join(", ")
                    )),
                }
            }
            for required in profile.record.required() {
                if !fields.contains_key(required) {
                    errors.push(format!(
                        "stream `{name}`: field `{required}` has no mapping"
                    ));
                }
            }
            let filter = [
                profile.filter.as_str(),
                over.filter.as_deref().unwrap_or(""),
            ]
            .into_iter()
            .filter(|f| !f.is_empty())
            .collect::<Vec<_>>()
            .join(joiner);
            streams.push(Stream {
                name: name.clone(),
                table: over.table.unwrap_or_else(|| profile.table.clone()),
                record: profile.record,
                filter,
                fields,
            });
        }
        if errors.is_empty() {
            Ok(streams)
        } else {
            Err(errors)
        }
    }
}

//! Polling one connector: each stream is read page by page after its stored
//! cursor, and each page is appended to the journal together with the
//! cursor after it, so a crash resumes exactly after the last stored page.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::{RestClient, UpstreamError};
use super::profile::{Api, Stream};
use super::records::{Fields, parse_time};
use crate::model::{ConnectorName, Event};
use crate::store::journal::{Append, AppendError, Appended, CursorUpdate, Journal};
use crate::store::{Store, StoreError};

/// An append on its way to the journal.
type Storing<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Appended, AppendError>> + Send + 'a>>;

/// Where a stream stopped: the last stored record's update time (as the
/// upstream writes it) and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub updated: String,
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("cannot store what was read: {0}")]
    Store(String),
    #[error("{0}")]
    Config(String),
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        SyncError::Store(e.to_string())
    }
}

/// What one sync of one stream did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamReport {
    pub records: u64,
    pub skipped: u64,
    pub pages: u64,
    /// Records the upstream still had after the last page read.
    pub remaining: Option<u64>,
}

/// One connector's streams against one upstream.
pub struct Poller {
    pub name: ConnectorName,
    pub client: Arc<RestClient>,
    pub api: Api,
    pub streams: Vec<Stream>,
    pub extra_filter: Option<String>,
    pub journal: Journal,
    pub store: Store,
}

impl Poller {
    fn cursor_key(&self, stream: &Stream) -> String {
        format!("{}/{}", self.name, stream.name)
    }

    pub fn cursor(&self, stream: &Stream) -> Result<Option<Cursor>, SyncError> {
        let Some(bytes) = self.store.cursor(&self.cursor_key(stream))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SyncError::Store(format!("stored cursor unreadable: {e}")))
    }

    fn table_url(&self, table: &str) -> Result<Url, SyncError> {
        self.client
            .base_url()
            .join(&self.api.table_path.replace("{table}", table))
            .map_err(|e| SyncError::Config(format!("bad table path for {table}: {e}")))
    }

    /// The columns a stream reads, cursor fields included.
    fn columns(&self, stream: &Stream) -> Vec<String> {
        let mut columns: BTreeSet<String> = stream.fields.values().cloned().collect();
        columns.insert(self.api.cursor.updated.clone());
        columns.insert(self.api.cursor.id.clone());
        columns.into_iter().collect()
    }

    fn filter(&self, stream: &Stream) -> Vec<String> {
        [Some(stream.filter.as_str()), self.extra_filter.as_deref()]
            .into_iter()
            .flatten()
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The URL of the first page after `cursor`.
    pub fn page_url(&self, stream: &Stream, cursor: Option<&Cursor>) -> Result<Url, SyncError> {
        let api = &self.api;
        let mut query = self.filter(stream);
        if let Some(c) = cursor {
            query.push(
                api.cursor
                    .after
                    .replace("{updated}", &c.updated)
                    .replace("{id}", &c.id),
            );
        }
        query.push(api.cursor.order.clone());
        let mut url = self.table_url(&stream.table)?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &api.params {
                pairs.append_pair(k, v);
            }
            pairs.append_pair(&api.query_param, &query.join("^"));
            pairs.append_pair(&api.fields_param, &self.columns(stream).join(","));
            pairs.append_pair(&api.limit_param, &api.page_size.to_string());
            pairs.append_pair(&api.offset_param, "0");
        }
        Ok(url)
    }

    /// Reads a stream from its cursor to the end, storing page by page.
    ///
    /// The next page is fetched while the journal makes the previous one
    /// durable (its cursor is known as soon as the page is read), so the
    /// upstream's time and the flush's overlap. Pages are still appended in
    /// order, each with its own cursor, and at most two are in memory.
    pub async fn sync_stream(&self, stream: &Stream) -> Result<StreamReport, SyncError> {
        // `cursor` is where this sync goes on reading; `stored`, where the
        // next one starts.
        let mut stored = self.cursor(stream)?;
        let mut cursor = stored.clone();
        let mut report = StreamReport::default();
        // The previous page's append, still waiting for its flush.
        let mut storing: Option<Storing<'_>> = None;
        loop {
            let url = self.page_url(stream, cursor.as_ref())?;
            let fetch = self.client.send(Method::GET, &url, None);
            let response = match storing.take() {
                Some(previous) => {
                    let (response, appended) = tokio::join!(fetch, previous);
                    appended.map_err(|e| SyncError::Store(e.to_string()))?;
                    response?
                }
                None => fetch.await?,
            };
            let records = response
                .body
                .pointer(&self.api.records)
                .and_then(Value::as_array)
                .ok_or_else(|| UpstreamError::Body {
                    url: url.path().to_string(),
                    message: format!("no array at {:?}", self.api.records),
                })?;
            let total = response
                .headers
                .get(self.api.total_header.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if records.is_empty() {
                report.remaining = Some(0);
                break;
            }
            let (events, last, skipped) = self.read_page(stream, records)?;
            report.skipped += skipped;
            report.records += events.len() as u64;
            report.pages += 1;
            report.remaining = total.map(|t| t.saturating_sub(records.len() as u64));
            // The stored cursor never enters the instance's current second:
            // a record updated later in that second would sort before it and
            // never be read. Those records are stored now and read again at
            // the next sync, once their second is over.
            let open_second = instance_second(&response.headers);
            let settled = match open_second {
                Some(open) => self.last_settled(records, open).or_else(|| stored.clone()),
                None => Some(last.clone()),
            };
            let cursor_update = match &settled {
                Some(position) if Some(position) != stored.as_ref() => Some(CursorUpdate {
                    key: self.cursor_key(stream),
                    value: serde_json::to_vec(position)
                        .map_err(|e| SyncError::Store(e.to_string()))?,
                }),
                _ => None,
            };
            stored = settled;
            let full = records.len() >= self.api.page_size;
            // The page's JSON is no longer needed while it is stored.
            drop(response);
            let append = Append {
                connector: self.name.clone(),
                delivery_id: None,
                events,
                cursor: cursor_update,
            };
            storing = Some(Box::pin(self.journal.append(append)));
            cursor = Some(last);
            if !full {
                break;
            }
        }
        if let Some(previous) = storing {
            previous
                .await
                .map_err(|e| SyncError::Store(e.to_string()))?;
        }
        Ok(report)
    }

    /// The position of the page's last record updated before `open`, the
    /// instance's current second.
    fn last_settled(&self, records: &[Value], open: DateTime<Utc>) -> Option<Cursor> {
        records.iter().rev().find_map(|r| {
            let updated = r.get(&self.api.cursor.updated)?.as_str()?;
            let id = r.get(&self.api.cursor.id)?.as_str()?;
            let at = parse_time(updated, &self.api.time_format).ok()?;
            (at < open).then(|| Cursor {
                updated: updated.to_string(),
                id: id.to_string(),
            })
        })
    }

    /// Maps one page; returns its events, the cursor after it, and how many
    /// records were skipped as unreadable.
    fn read_page(
        &self,
        stream: &Stream,
        records: &[Value],
    ) -> Result<(Vec<Event>, Cursor, u64), SyncError> {
        let mut events = Vec::with_capacity(records.len());
        let mut skipped = 0;
        let mut last = None;
        for raw in records {
            let record = raw.as_object();
            let position = record.and_then(|r| {
                let updated = r.get(&self.api.cursor.updated)?.as_str()?;
                let id = r.get(&self.api.cursor.id)?.as_str()?;
                Some(Cursor {
                    updated: updated.to_string(),
                    id: id.to_string(),
                })
            });
            let (Some(record), Some(position)) = (record, position) else {
                return Err(SyncError::Upstream(UpstreamError::Body {
                    url: stream.table.clone(),
                    message: format!(
                        "a record without `{}` and `{}`: the cursor cannot advance past it",
                        self.api.cursor.updated, self.api.cursor.id
                    ),
                }));
            };
            let fields = Fields {
                record,
                mapping: &stream.fields,
                time_format: &self.api.time_format,
            };
            match stream.record.build(&fields) {
                Ok(r) => events.push(Event::Itsm(r)),
                Err(e) => {
                    skipped += 1;
                    tracing::warn!(connector = %self.name, stream = %stream.name, record = %position.id, error = %e, "Skipping an unreadable record");
                }
            }
            last = Some(position);
        }
        // `records` is not empty, so `last` is set.
        let last = last.ok_or_else(|| SyncError::Store("empty page".into()))?;
        Ok((events, last, skipped))
    }

    /// Checks that every column a stream maps or filters on exists in its
    /// table, because the upstream silently ignores unknown query fields
    /// (a typo would read the whole table). `Ok(None)` when the table is
    /// empty and nothing can be checked yet.
    pub async fn unknown_columns(&self, stream: &Stream) -> Result<Option<Vec<String>>, SyncError> {
        let mut url = self.table_url(&stream.table)?;
        url.query_pairs_mut()
            .append_pair(&self.api.limit_param, "1")
            .append_pair(&self.api.fields_param, &self.columns(stream).join(","));
        let response = self.client.send(Method::GET, &url, None).await?;
        let Some(record) = response
            .body
            .pointer(&self.api.records)
            .and_then(Value::as_array)
            .and_then(|r| r.first())
        else {
            return Ok(None);
        };
        let Some(record) = record.as_object() else {
            return Ok(None);
        };
        let mut referenced: BTreeSet<String> = self.columns(stream).into_iter().collect();
        referenced.extend(self.filter(stream).iter().flat_map(|f| query_fields(f)));
        // Dot-walked fields (`task.sys_class_name`) are not columns of the
        // table itself; their first part is.
        let unknown = referenced
            .into_iter()
            .map(|f| f.split('.').next().unwrap_or_default().to_string())
            .filter(|f| !f.is_empty() && !record.contains_key(f))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Ok(Some(unknown))
    }
}

/// The instance's clock from a response's `Date`, truncated to the second:
/// the second in which records may still be updated.
fn instance_second(headers: &reqwest::header::HeaderMap) -> Option<DateTime<Utc>> {
    let date = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(date)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The field names of an encoded query (`a=1^ORb>2^NQc!=3^ORDERBYd`).
/// Column names are lower case and word operators upper case, written
/// without a space between them (`stateIN1,2`, `resolved_atISEMPTY`), so a
/// name ends at the first character that is not lower case, a digit, `_`
/// or `.`.
pub fn query_fields(query: &str) -> Vec<String> {
    query
        .split('^')
        .map(|part| {
            part.strip_prefix("OR")
                .filter(|_| !part.starts_with("ORDERBY"))
                .unwrap_or(part)
        })
        .map(|part| part.strip_prefix("NQ").unwrap_or(part))
        .map(|part| {
            part.strip_prefix("ORDERBYDESC")
                .or_else(|| part.strip_prefix("ORDERBY"))
                .unwrap_or(part)
        })
        .filter_map(|cond| {
            let name: String = cond
                .chars()
                .take_while(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '.'
                })
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// A connector's health, as `/readyz`, `/metrics` and `csmd connectors`
/// show it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// Streams not polled because their mapping names unknown columns.
    pub field_errors: Vec<String>,
    pub streams: BTreeMap<String, StreamHealth>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamHealth {
    pub records_total: u64,
    pub skipped_total: u64,
    pub remaining: Option<u64>,
    pub cursor: Option<Cursor>,
    pub last_sync: Option<DateTime<Utc>>,
}

impl Health {
    /// Green when the last sync succeeded and every stream is polled.
    pub fn ok(&self) -> bool {
        self.last_error.is_none() && self.field_errors.is_empty() && self.last_success.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::query_fields;

    #[test]
    fn query_fields_finds_every_condition_and_order() {
        assert_eq!(
            query_fields(
                "active=true^ORpriority<=2^NQcompany.name=ACME^ORDERBYsys_updated_on^ORDERBYDESCnumber"
            ),
            [
                "active",
                "priority",
                "company.name",
                "sys_updated_on",
                "number"
            ]
        );
    }

    #[test]
    fn query_fields_end_where_a_word_operator_begins() {
        assert_eq!(
            query_fields(
                "stateIN1,2,3^resolved_atISEMPTY^short_descriptionLIKEdisk^cmdb_ciISNOTEMPTY\
                 ^company.nameSTARTSWITHACME^u_tierNOT IN1,2^opened_atBETWEENa@b^EQ"
            ),
            [
                "state",
                "resolved_at",
                "short_description",
                "cmdb_ci",
                "company.name",
                "u_tier",
                "opened_at"
            ]
        );
    }
}

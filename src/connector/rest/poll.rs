//! Polling one connector: each stream is read page by page after its stored
//! cursor, and each page is appended to the journal together with the
//! cursor after it, so a crash resumes exactly after the last stored page.
//!
//! The profile's pagination style says how the next page is asked for:
//! `offset` pages are keyset queries after the last record read (always at
//! offset 0); `cursor` pages follow the upstream's opaque next cursor, and
//! a sync starts at `updated_since` = the stored record's update time,
//! skipping the records at or before the stored `(updated, id)`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::client::Response;
use super::client::{RestClient, UpstreamError};
use super::profile::{Api, PaginationStyle, Stream};
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

    /// The stream's and the connector's filters.
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
    pub async fn sync_stream(&self, stream: &Stream) -> Result<StreamReport, SyncError> {
        match self.api.pagination.style {
            PaginationStyle::Offset => self.sync_offset(stream).await,
            PaginationStyle::Cursor => self.sync_cursor(stream).await,
        }
    }

    /// `offset` style: every page is a keyset query after the last record
    /// read.
    ///
    /// The next page is fetched while the journal makes the previous one
    /// durable (its cursor is known as soon as the page is read), so the
    /// upstream's time and the flush's overlap. Pages are still appended in
    /// order, each with its own cursor, and at most two are in memory.
    async fn sync_offset(&self, stream: &Stream) -> Result<StreamReport, SyncError> {
        // `cursor` is where this sync goes on reading; `stored`, where the
        // next one starts.
        let mut stored = self.cursor(stream)?;
        let mut cursor = stored.clone();
        let mut report = StreamReport::default();
        // The previous page's append, still waiting for its flush.
        let mut storing: Option<Storing<'_>> = None;
        loop {
            let url = self.page_url(stream, cursor.as_ref())?;
            let response = self.fetch(&url, storing.take()).await?;
            let records = self.records_of(&response, &url)?;
            let total = response
                .headers
                .get(self.api.total_header.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if records.is_empty() {
                report.remaining = Some(0);
                break;
            }
            let (events, last, skipped) = self.read_page(stream, records, None)?;
            let last = last.ok_or_else(|| SyncError::Store("empty page".into()))?;
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

    /// Maps one page; returns its events, the position of its last record,
    /// and how many records were skipped as unreadable. Records at or
    /// before `stored` are already in the store and are left out.
    fn read_page(
        &self,
        stream: &Stream,
        records: &[Value],
        stored: Option<&Cursor>,
    ) -> Result<(Vec<Event>, Option<Cursor>, u64), SyncError> {
        let stored_key = stored.and_then(|c| self.position_key(c));
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
            let seen = stored_key.as_ref().is_some_and(|stored| {
                self.position_key(&position)
                    .is_some_and(|p| (p.0, p.1) <= (stored.0, stored.1))
            });
            if seen {
                last = Some(position);
                continue;
            }
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
        Ok((events, last, skipped))
    }

    /// A position as a comparable key: the update time parsed (the
    /// upstream may write one instant several ways) and the id.
    fn position_key<'c>(&self, c: &'c Cursor) -> Option<(DateTime<Utc>, &'c str)> {
        parse_time(&c.updated, &self.api.time_format)
            .ok()
            .map(|at| (at, c.id.as_str()))
    }

    /// The later of two positions; `a` when they cannot be compared.
    fn later(&self, a: Option<Cursor>, b: Option<Cursor>) -> Option<Cursor> {
        match (a, b) {
            (Some(a), Some(b)) => match (self.position_key(&a), self.position_key(&b)) {
                (Some(ka), Some(kb)) if kb > ka => Some(b),
                _ => Some(a),
            },
            (a, b) => a.or(b),
        }
    }

    /// `cursor` style: the first page of a sync, of the records updated at
    /// or after the stored position's time.
    pub fn first_cursor_page_url(
        &self,
        stream: &Stream,
        stored: Option<&Cursor>,
    ) -> Result<Url, SyncError> {
        let api = &self.api;
        let mut url = self.table_url(&stream.table)?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &api.params {
                pairs.append_pair(k, v);
            }
            for filter in self.filter(stream) {
                for (k, v) in url::form_urlencoded::parse(filter.as_bytes()) {
                    pairs.append_pair(&k, &v);
                }
            }
            if !api.fields_param.is_empty() {
                pairs.append_pair(&api.fields_param, &self.columns(stream).join(","));
            }
            pairs.append_pair(&api.limit_param, &api.page_size.to_string());
            if let (Some(param), Some(c)) = (&api.pagination.updated_since_param, stored) {
                pairs.append_pair(param, &c.updated);
            }
        }
        Ok(url)
    }

    /// `cursor` style: the URL of the page after `response`, `None` on the
    /// last page. The body's cursor is sent back with the first page's
    /// parameters; a `Link` URL is followed as given.
    fn next_page_url(&self, response: &Response, current: &Url) -> Option<Url> {
        let p = &self.api.pagination;
        if let (Some(pointer), Some(param)) = (&p.next_cursor, &p.cursor_param) {
            let next = match response.body.pointer(pointer) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            if let Some(next) = next {
                let kept: Vec<(String, String)> = current
                    .query_pairs()
                    .filter(|(k, _)| k != param)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let mut url = current.clone();
                url.query_pairs_mut()
                    .clear()
                    .extend_pairs(kept)
                    .append_pair(param, &next);
                return Some(url);
            }
        }
        if p.next_link {
            return response
                .headers
                .get_all(reqwest::header::LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(link_next)
                .and_then(|next| current.join(&next).ok());
        }
        None
    }

    /// GETs a page while the previous page's append (if any) finishes its
    /// flush: the two overlap, and a failed append stops the sync.
    async fn fetch(&self, url: &Url, storing: Option<Storing<'_>>) -> Result<Response, SyncError> {
        let fetch = self.client.send(Method::GET, url, None);
        Ok(match storing {
            Some(previous) => {
                let (response, appended) = tokio::join!(fetch, previous);
                appended.map_err(|e| SyncError::Store(e.to_string()))?;
                response?
            }
            None => fetch.await?,
        })
    }

    /// The page's records, where the profile's `records` pointer says.
    fn records_of<'r>(
        &self,
        response: &'r Response,
        url: &Url,
    ) -> Result<&'r Vec<Value>, UpstreamError> {
        response
            .body
            .pointer(&self.api.records)
            .and_then(Value::as_array)
            .ok_or_else(|| UpstreamError::Body {
                url: url.path().to_string(),
                message: format!("no array at {:?}", self.api.records),
            })
    }

    /// `cursor` style: from the stored position to the last page, following
    /// the upstream's next cursor. Records updated during the sync move to
    /// the end of the upstream's `(updated, id)` order and are read again
    /// later in the same sync; the stored position never enters the
    /// upstream's current second (see [`Poller::sync_offset`]).
    async fn sync_cursor(&self, stream: &Stream) -> Result<StreamReport, SyncError> {
        let start = self.cursor(stream)?;
        let mut stored = start.clone();
        let mut report = StreamReport::default();
        let mut storing: Option<Storing<'_>> = None;
        let mut next = Some(self.first_cursor_page_url(stream, start.as_ref())?);
        while let Some(url) = next.take() {
            let response = self.fetch(&url, storing.take()).await?;
            let records = self.records_of(&response, &url)?;
            let (events, last, skipped) = self.read_page(stream, records, start.as_ref())?;
            report.skipped += skipped;
            report.records += events.len() as u64;
            report.pages += 1;
            let settled = match instance_second(&response.headers) {
                Some(open) => self.last_settled(records, open),
                None => last,
            };
            let settled = self.later(stored.clone(), settled);
            let cursor_update = match &settled {
                Some(position) if Some(position) != stored.as_ref() => Some(CursorUpdate {
                    key: self.cursor_key(stream),
                    value: serde_json::to_vec(position)
                        .map_err(|e| SyncError::Store(e.to_string()))?,
                }),
                _ => None,
            };
            stored = settled;
            next = self.next_page_url(&response, &url);
            if next.as_ref() == Some(&url) {
                return Err(SyncError::Upstream(UpstreamError::Body {
                    url: url.path().to_string(),
                    message: "the next page's cursor is the current page's: paging would never end"
                        .into(),
                }));
            }
            drop(response);
            if !events.is_empty() || cursor_update.is_some() {
                storing = Some(Box::pin(self.journal.append(Append {
                    connector: self.name.clone(),
                    delivery_id: None,
                    events,
                    cursor: cursor_update,
                })));
            }
        }
        if let Some(previous) = storing {
            previous
                .await
                .map_err(|e| SyncError::Store(e.to_string()))?;
        }
        report.remaining = Some(0);
        Ok(report)
    }

    /// Checks that every column a stream maps or filters on exists in its
    /// table, because the upstream silently ignores unknown query fields
    /// (a typo would read the whole table). `Ok(None)` when the table is
    /// empty and nothing can be checked yet.
    ///
    /// `cursor` style upstreams return whole records, often without their
    /// empty fields, and take filters as parameters: nothing to check.
    pub async fn unknown_columns(&self, stream: &Stream) -> Result<Option<Vec<String>>, SyncError> {
        if self.api.pagination.style == PaginationStyle::Cursor {
            return Ok(Some(Vec::new()));
        }
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

/// The target of a `Link` header's `rel="next"` entry
/// (`<https://…?cursor=x>; rel="next", <…>; rel="last"`).
fn link_next(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=").is_some_and(|rel| {
                rel.trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        next.then(|| target.to_string())
    })
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
    /// Imported files' rows that were not imported, `file:line: message`
    /// (the first 100 of the latest import).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected_rows: Vec<String>,
    /// How many rows the latest import rejected.
    #[serde(skip_serializing_if = "is_zero")]
    pub rejected_rows_total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    use super::{link_next, query_fields};

    #[test]
    fn link_next_finds_the_next_target_among_others() {
        assert_eq!(
            link_next(
                r#"<https://b.example/v1/charges?cursor=a>; rel="prev", <https://b.example/v1/charges?cursor=b&limit=2>; rel="next""#
            )
            .as_deref(),
            Some("https://b.example/v1/charges?cursor=b&limit=2")
        );
        assert_eq!(
            link_next(r#"</v1/x?c=1>; rel=next"#).as_deref(),
            Some("/v1/x?c=1")
        );
        assert_eq!(link_next(r#"</v1/x?c=1>; rel="last""#), None);
        assert_eq!(link_next("garbage"), None);
    }

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

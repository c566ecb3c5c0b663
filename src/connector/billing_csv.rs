//! Billing CSV exports dropped into a folder: one file kind per record kind
//! (accounts, subscriptions, charges), chosen by the file's name.
//!
//! A file is taken only once it is complete: by default every file whose
//! name matches a kind's pattern is complete, because writers write it
//! under another name (`.name.csv`, `name.csv.tmp`, another folder) and
//! rename it into place; with `done_marker = true` a file waits for its
//! `<name>.done` beside it. Each file is imported in one journal append
//! (one durable batch) together with a mark saying it was imported (its
//! SHA-256), then moved to the archive folder. A crash between the two
//! finds the mark at restart and only archives the file; and importing a
//! file twice would be harmless anyway, since the store keeps each record
//! by id and its newest `updated_at`.
//!
//! Rows that cannot be read are not imported and are reported as
//! `file:line: message` (the log, the connector's health, `csmd
//! connectors`); the file's other rows are.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::rest::poll::{Health, StreamHealth, StreamReport};
use super::rest::profile::StreamOverride;
use super::rest::records::{Fields, RecordKind};
use super::rest::task::{PollerHandle, StreamOutcome, SyncReport};
use crate::metrics::Metrics;
use crate::model::{ConnectorName, Event};
use crate::store::Store;
use crate::store::journal::{Append, CursorUpdate, Journal};

/// How many rejected rows the connector's health lists.
const REJECTED_SHOWN: usize = 100;

/// `connectors/billing-csv/profile.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub kind: String,
    pub description: String,
    /// chrono format of datetimes without an offset (UTC); RFC 3339 and
    /// bare `YYYY-MM-DD` dates are accepted too.
    pub time_format: String,
    /// The field separator, one ASCII character. Default `,`.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// File kinds by name.
    pub files: BTreeMap<String, FileProfile>,
}

fn default_delimiter() -> char {
    ','
}

/// `[files.NAME]`: one kind of export file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProfile {
    /// File names of this kind: `*` is any run of characters, `?` one.
    pub pattern: String,
    pub record: RecordKind,
    /// csmd field → column of the header.
    pub fields: BTreeMap<String, String>,
}

/// The file kinds of a connector, its overrides applied.
#[derive(Debug, Clone)]
pub struct Files {
    pub time_format: String,
    pub delimiter: u8,
    pub kinds: Vec<FileKind>,
}

#[derive(Debug, Clone)]
pub struct FileKind {
    pub name: String,
    pub pattern: String,
    pub record: RecordKind,
    pub fields: BTreeMap<&'static str, String>,
}

impl Profile {
    /// The enabled file kinds with `[connector.streams.NAME]` overrides
    /// (`enabled`, `fields`) applied.
    pub fn files(
        &self,
        overrides: &BTreeMap<String, StreamOverride>,
    ) -> Result<Files, Vec<String>> {
        let mut errors = Vec::new();
        let delimiter = u8::try_from(self.delimiter)
            .ok()
            .filter(u8::is_ascii)
            .unwrap_or_else(|| {
                errors.push(format!(
                    "delimiter {:?} is not one ASCII character",
                    self.delimiter
                ));
                b','
            });
        for (name, over) in overrides {
            if !self.files.contains_key(name) {
                let known: Vec<_> = self.files.keys().map(String::as_str).collect();
                errors.push(format!(
                    "unknown file kind `{name}`; this profile has {}",
                    known.join(", ")
                ));
            }
            if over.table.is_some() || over.filter.is_some() {
                errors.push(format!(
                    "[connector.streams.{name}]: `table` and `filter` do not apply to CSV files; use `enabled` and `fields`"
                ));
            }
        }
        let mut kinds = Vec::new();
        for (name, file) in &self.files {
            let over = overrides.get(name).cloned().unwrap_or_default();
            if over.enabled == Some(false) {
                continue;
            }
            let mut fields = BTreeMap::new();
            for (field, column) in file.fields.iter().chain(&over.fields) {
                match file.record.field(field) {
                    Some(known) => {
                        fields.insert(known, column.clone());
                    }
                    None => errors.push(format!(
                        "file kind `{name}`: unknown field `{field}` for {} records; known fields: {}",
                        file.record.as_str(),
                        file.record.fields().join(", ")
                    )),
                }
            }
            for required in file.record.required() {
                if !fields.contains_key(required) {
                    errors.push(format!(
                        "file kind `{name}`: field `{required}` has no column"
                    ));
                }
            }
            if file.pattern.is_empty() || file.pattern.contains('/') {
                errors.push(format!(
                    "file kind `{name}`: pattern {:?} must be a file name",
                    file.pattern
                ));
            }
            kinds.push(FileKind {
                name: name.clone(),
                pattern: file.pattern.clone(),
                record: file.record,
                fields,
            });
        }
        if errors.is_empty() {
            Ok(Files {
                time_format: self.time_format.clone(),
                delimiter,
                kinds,
            })
        } else {
            Err(errors)
        }
    }
}

impl Files {
    /// The kind of a file, by its name.
    pub fn kind_of(&self, file_name: &str) -> Option<&FileKind> {
        self.kinds
            .iter()
            .find(|k| glob_match(k.pattern.as_bytes(), file_name.as_bytes()))
    }
}

/// `*` matches any run of characters, `?` one; the rest literally.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == b'?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|c| *c == b'*')
}

/// A row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedRow {
    pub file: String,
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    pub message: String,
}

impl fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// What one file held.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    pub rejected: Vec<RejectedRow>,
}

/// Reads one export: every good row becomes an event; every bad one a
/// [`RejectedRow`]. A header without a mapped column rejects the file at
/// line 1 (no row could be read right).
pub fn parse(file_name: &str, bytes: &[u8], kind: &FileKind, files: &Files) -> Parsed {
    let mut parsed = Parsed::default();
    let reject = |line: u64, message: String| RejectedRow {
        file: file_name.to_string(),
        line,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(files.delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            parsed
                .rejected
                .push(reject(1, format!("unreadable header: {e}")));
            return parsed;
        }
    };
    let missing: Vec<String> = kind
        .fields
        .iter()
        .filter(|(_, column)| !header.iter().any(|h| h == column.as_str()))
        .map(|(field, column)| format!("`{column}` (csmd's `{field}`)"))
        .collect();
    if !missing.is_empty() {
        parsed.rejected.push(reject(
            1,
            format!(
                "the header has no column {}; it has {}",
                missing.join(", "),
                header.iter().collect::<Vec<_>>().join(", ")
            ),
        ));
        return parsed;
    }
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                parsed.rejected.push(reject(line, csv_reason(&e)));
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != header.len() {
            parsed.rejected.push(reject(
                line,
                format!(
                    "{} fields where the header has {}",
                    record.len(),
                    header.len()
                ),
            ));
            continue;
        }
        let row: Map<String, Value> = header
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
            .collect();
        let fields = Fields {
            record: &row,
            mapping: &kind.fields,
            time_format: &files.time_format,
        };
        match kind.record.build(&fields) {
            Ok(r) => parsed.events.push(Event::Itsm(r)),
            Err(message) => parsed.rejected.push(reject(line, message)),
        }
    }
    parsed
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

/// The mark stored with a file's records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImportMark {
    sha256: String,
    imported_at: chrono::DateTime<Utc>,
    records: u64,
    rejected: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the folder {path}: {message}")]
    Folder { path: String, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot store {file}: {message}")]
    Store { file: String, message: String },
    #[error("imported {file} but cannot move it to {archive}: {message}")]
    Archive {
        file: String,
        archive: String,
        message: String,
    },
}

/// A file of a scan and what importing it did.
pub type Imported = (String, Result<FileOutcome, ImportError>);

/// One connector's folder.
pub struct Watcher {
    pub name: ConnectorName,
    pub folder: PathBuf,
    pub archive: PathBuf,
    /// Files wait for `<name>.done`.
    pub done_marker: bool,
    pub files: Files,
    pub journal: Journal,
    pub store: Store,
}

/// What importing one file did.
#[derive(Debug)]
pub struct FileOutcome {
    /// Its file kind.
    pub kind: String,
    /// Records stored (0 when it had been imported before a crash).
    pub records: u64,
    pub rejected: Vec<RejectedRow>,
}

impl Watcher {
    fn mark_key(&self, file_name: &str) -> String {
        format!("{}/file/{file_name}", self.name)
    }

    /// The complete files waiting in the folder, in name order, with their
    /// kind.
    fn ready(&self) -> Result<Vec<(String, String)>, ImportError> {
        let folder_error = |e: std::io::Error| ImportError::Folder {
            path: self.folder.display().to_string(),
            message: crate::config::value::io_reason(&e),
        };
        let mut ready = Vec::new();
        for entry in std::fs::read_dir(&self.folder).map_err(folder_error)? {
            let entry = entry.map_err(folder_error)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || name.ends_with(".done") {
                continue;
            }
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let Some(kind) = self.files.kind_of(&name) else {
                continue;
            };
            if self.done_marker && !self.folder.join(format!("{name}.done")).is_file() {
                continue;
            }
            ready.push((name, kind.name.clone()));
        }
        ready.sort();
        Ok(ready)
    }

    /// Imports every complete file once and archives it.
    pub async fn scan(&self) -> Result<Vec<Imported>, ImportError> {
        let ready = self.ready()?;
        let mut outcomes = Vec::new();
        for (file, kind) in ready {
            let outcome = self.import(&file, &kind).await;
            outcomes.push((file, outcome));
        }
        Ok(outcomes)
    }

    async fn import(&self, file: &str, kind_name: &str) -> Result<FileOutcome, ImportError> {
        let path = self.folder.join(file);
        let read = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(&path)).await
        };
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                return Err(ImportError::Read {
                    path: path.display().to_string(),
                    message: crate::config::value::io_reason(&e),
                });
            }
            Err(e) => {
                return Err(ImportError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let key = self.mark_key(file);
        let store_error = |message: String| ImportError::Store {
            file: file.to_string(),
            message,
        };
        let mark: Option<ImportMark> = self
            .store
            .cursor(&key)
            .map_err(|e| store_error(e.to_string()))?
            .and_then(|v| serde_json::from_slice(&v).ok());
        let outcome = match mark {
            // Stored before a crash or a failed move: only archive it.
            Some(mark) if mark.sha256 == sha256 => {
                tracing::info!(connector = %self.name, file, "File was imported before; archiving it");
                FileOutcome {
                    kind: kind_name.to_string(),
                    records: 0,
                    rejected: Vec::new(),
                }
            }
            _ => {
                let Some(kind) = self.files.kinds.iter().find(|k| k.name == kind_name) else {
                    return Err(store_error(format!("no file kind {kind_name}")));
                };
                let parsed = {
                    let kind = kind.clone();
                    let files = self.files.clone();
                    let file = file.to_string();
                    tokio::task::spawn_blocking(move || parse(&file, &bytes, &kind, &files))
                        .await
                        .map_err(|e| store_error(e.to_string()))?
                };
                let records = parsed.events.len() as u64;
                let mark = ImportMark {
                    sha256,
                    imported_at: Utc::now(),
                    records,
                    rejected: parsed.rejected.len() as u64,
                };
                let value = serde_json::to_vec(&mark).map_err(|e| store_error(e.to_string()))?;
                self.journal
                    .append(Append {
                        connector: self.name.clone(),
                        delivery_id: None,
                        events: parsed.events,
                        cursor: Some(CursorUpdate { key, value }),
                    })
                    .await
                    .map_err(|e| store_error(e.to_string()))?;
                for row in parsed.rejected.iter().take(REJECTED_SHOWN) {
                    tracing::warn!(connector = %self.name, row = %row, "Row not imported");
                }
                tracing::info!(connector = %self.name, file, records, rejected = parsed.rejected.len(), "Imported");
                FileOutcome {
                    kind: kind_name.to_string(),
                    records,
                    rejected: parsed.rejected,
                }
            }
        };
        self.archive(file).await?;
        Ok(outcome)
    }

    /// Moves a stored file (and its `.done`) into the archive; a name
    /// already there gets the time appended.
    async fn archive(&self, file: &str) -> Result<(), ImportError> {
        let folder = self.folder.clone();
        let archive = self.archive.clone();
        let name = file.to_string();
        let moved = tokio::task::spawn_blocking(move || archive_file(&folder, &archive, &name))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| crate::config::value::io_reason(&e)));
        moved.map_err(|message| ImportError::Archive {
            file: file.to_string(),
            archive: self.archive.display().to_string(),
            message,
        })
    }
}

fn archive_file(folder: &Path, archive: &Path, name: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(archive)?;
    let from = folder.join(name);
    let mut to = archive.join(name);
    if to.exists() {
        to = archive.join(format!(
            "{name}.{}",
            Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        ));
    }
    if std::fs::rename(&from, &to).is_err() {
        // Another file system: copy, make the copy durable, then remove.
        std::fs::copy(&from, &to)?;
        std::fs::File::open(&to)?.sync_all()?;
        std::fs::remove_file(&from)?;
    }
    let done = folder.join(format!("{name}.done"));
    match std::fs::remove_file(&done) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    for dir in [archive, folder] {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Starts the folder's task: a scan at once, then every `interval`, or
/// when asked (`csmd sync`). It ends when `shutdown` is cancelled.
pub fn spawn(
    watcher: Watcher,
    interval: Duration,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> PollerHandle {
    let (trigger, mut requests) = mpsc::channel::<oneshot::Sender<SyncReport>>(16);
    let health = Arc::new(RwLock::new(Health::default()));
    let handle = PollerHandle::new(trigger, health.clone());
    tracker.spawn(async move {
        let mut waiting: Vec<oneshot::Sender<SyncReport>> = Vec::new();
        loop {
            let report = tokio::select! {
                _ = shutdown.cancelled() => break,
                report = watcher.run_once(&health, &metrics) => report,
            };
            for reply in waiting.drain(..) {
                let _ = reply.send(report.clone());
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                Some(reply) = requests.recv() => {
                    waiting.push(reply);
                    while let Ok(reply) = requests.try_recv() {
                        waiting.push(reply);
                    }
                }
            }
        }
        tracing::debug!(connector = %watcher.name, "Folder watcher stopped");
    });
    handle
}

impl Watcher {
    #[tracing::instrument(skip_all, fields(connector = %self.name))]
    async fn run_once(&self, health: &RwLock<Health>, metrics: &Metrics) -> SyncReport {
        let started_at = Utc::now();
        let mut per_kind: BTreeMap<String, StreamReport> = self
            .files
            .kinds
            .iter()
            .map(|k| {
                (
                    k.name.clone(),
                    StreamReport {
                        remaining: Some(0),
                        ..StreamReport::default()
                    },
                )
            })
            .collect();
        let mut errors: Vec<String> = Vec::new();
        let mut rejected: Vec<RejectedRow> = Vec::new();
        let mut imported_files = 0;
        match self.scan().await {
            Err(e) => {
                tracing::error!(error = %e, "Cannot scan the folder");
                errors.push(e.to_string());
            }
            Ok(outcomes) => {
                for (file, outcome) in outcomes {
                    match outcome {
                        Ok(o) => {
                            imported_files += 1;
                            if let Some(r) = per_kind.get_mut(&o.kind) {
                                r.records += o.records;
                                r.skipped += o.rejected.len() as u64;
                                r.pages += 1;
                            }
                            rejected.extend(o.rejected);
                        }
                        Err(e) => {
                            tracing::error!(file, error = %e, "Import failed");
                            errors.push(e.to_string());
                        }
                    }
                }
            }
        }
        let finished_at = Utc::now();
        let streams = per_kind
            .iter()
            .map(|(name, r)| {
                let outcome = match errors.first() {
                    Some(e) if r.pages == 0 => StreamOutcome::Failed { error: e.clone() },
                    _ => StreamOutcome::Synced(r.clone()),
                };
                (name.clone(), outcome)
            })
            .collect();
        if let Ok(mut h) = health.write() {
            for (name, r) in &per_kind {
                let entry: &mut StreamHealth = h.streams.entry(name.clone()).or_default();
                entry.records_total += r.records;
                entry.skipped_total += r.skipped;
                entry.remaining = Some(0);
                if r.pages > 0 {
                    entry.last_sync = Some(finished_at);
                }
                metrics.connector_records(self.name.as_str(), name, r.records, Some(0));
            }
            // Rows rejected by the latest files imported stay in the health
            // until a later import is clean.
            if imported_files > 0 {
                h.rejected_rows = rejected
                    .iter()
                    .take(REJECTED_SHOWN)
                    .map(ToString::to_string)
                    .collect();
                h.rejected_rows_total = rejected.len() as u64;
            }
            if errors.is_empty() {
                h.last_success = Some(finished_at);
            }
            let mut problems = errors.clone();
            if h.rejected_rows_total > 0 {
                problems.push(format!(
                    "{} row(s) not imported: {}",
                    h.rejected_rows_total,
                    h.rejected_rows.join("; ")
                ));
            }
            if problems.is_empty() {
                h.last_error = None;
                h.last_error_at = None;
            } else {
                h.last_error = Some(problems.join("; "));
                if !errors.is_empty() || imported_files > 0 {
                    h.last_error_at = Some(finished_at);
                }
            }
            metrics.connector_health(
                self.name.as_str(),
                h.ok(),
                h.last_success,
                !errors.is_empty(),
            );
        }
        SyncReport {
            connector: self.name.to_string(),
            started_at,
            finished_at,
            streams,
            field_errors: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::itsm::ItsmRecord;

    fn shipped() -> Files {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/connectors/billing-csv/profile.toml"
        ))
        .expect("shipped profile");
        let profile: Profile = toml::from_str(&text).expect("shipped profile parses");
        profile.files(&BTreeMap::new()).expect("shipped kinds map")
    }

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match(
            b"subscriptions*.csv",
            b"subscriptions-2026-11.csv"
        ));
        assert!(glob_match(b"subscriptions*.csv", b"subscriptions.csv"));
        assert!(!glob_match(b"subscriptions*.csv", b"subscriptions.csv.tmp"));
        assert!(!glob_match(b"subscriptions*.csv", b"charges.csv"));
        assert!(glob_match(b"a?c*", b"abcdef"));
        assert!(glob_match(b"*x*y", b"axxbxy"));
        assert!(!glob_match(b"*x*y", b"axxbxyz"));
    }

    #[test]
    fn the_recorded_exports_map_and_bad_rows_are_named_by_line() {
        let files = shipped();
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/connectors/billing-csv/fixtures"
        );
        let read = |name: &str| {
            let bytes = std::fs::read(format!("{dir}/{name}")).expect("fixture");
            let kind = files.kind_of(name).expect("a kind");
            parse(name, &bytes, kind, &files)
        };
        let subs = read("subscriptions-2026-11.csv");
        assert!(subs.rejected.is_empty(), "{:?}", subs.rejected);
        let Some(Event::Itsm(ItsmRecord::Subscription(s))) = subs.events.first() else {
            panic!("a subscription: {:?}", subs.events)
        };
        assert_eq!(s.account.as_deref(), Some("ACC-1001"));
        assert_eq!(s.quantity, Some(2.0));
        let charges = read("charges-2026-11.csv");
        assert!(charges.rejected.is_empty(), "{:?}", charges.rejected);
        let Some(Event::Itsm(ItsmRecord::Charge(c))) = charges.events.first() else {
            panic!("a charge")
        };
        assert_eq!(c.change.as_deref(), Some("CHG0030001"));
        assert_eq!(c.amount, Some(450.0));

        let bad = parse(
            "subscriptions-bad.csv",
            b"id,account,product,ci,service,quantity,start,end,status,updated_at\n\
              S1,ACC-1,P,ci-1,,1,2026-01-01,,active,2026-11-20T08:00:00Z\n\
              S2,ACC-1,P,ci-2,,many,2026-01-01,,active,2026-11-20T08:00:00Z\n\
              S3,ACC-1\n\
              ,ACC-1,P,ci-4,,1,2026-01-01,,active,2026-11-20T08:00:00Z\n\
              S5,ACC-1,P,ci-5,,1,2026-01-01,,active,yesterday\n",
            files.kind_of("subscriptions-bad.csv").expect("kind"),
            &files,
        );
        assert_eq!(bad.events.len(), 1);
        let lines: Vec<String> = bad.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines[0].starts_with("subscriptions-bad.csv:3: `quantity` \"many\""),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("subscriptions-bad.csv:4: 2 fields"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("subscriptions-bad.csv:5: missing `id`"),
            "{lines:?}"
        );
        assert!(
            lines[3].starts_with("subscriptions-bad.csv:6: `updated_at`"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_header_without_a_mapped_column_rejects_the_file_at_line_1() {
        let files = shipped();
        let parsed = parse(
            "charges-x.csv",
            b"id,updated_at\nC1,2026-11-20T08:00:00Z\n",
            files.kind_of("charges-x.csv").expect("kind"),
            &files,
        );
        assert!(parsed.events.is_empty());
        assert_eq!(parsed.rejected.len(), 1);
        assert_eq!(parsed.rejected[0].line, 1);
        assert!(
            parsed.rejected[0].message.contains("no column"),
            "{:?}",
            parsed.rejected
        );
    }
}

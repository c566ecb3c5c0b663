//! `csmd store export` and `import`: the whole store as JSON Lines, one
//! record per line, independent of sled's on-disk format, so that a store
//! can be backed up, inspected, and moved to another csmd (or off sled).
//!
//! Line 1 is a header; then one line per key of every tree, trees and keys
//! in byte order; then a trailer with the record count, so that a truncated
//! dump is refused rather than half imported:
//!
//! ```text
//! {"csmd_dump":1,"schema_version":3,"csmd_version":"0.1.0","created_at":"2026-01-05T09:00:00Z"}
//! {"tree":"customers","key":"acme","value":{"id":"acme","name":"ACME Logistics SAS"}}
//! {"tree":"journal","key_hex":"650000000000000001","value":{"seq":1}}
//! {"tree":"meta","key":"schema_version","value_b64":"AAAAAw=="}
//! {"end":true,"records":3}
//! ```
//!
//! A key is text unless it is not UTF-8 or holds a control character
//! (`key_hex`). A value is inline JSON when it parses as JSON, which every
//! csmd record does (`value_b64` otherwise); import re-encodes it, so key
//! order inside a value may change, and nothing that decodes it cares.
//!
//! Import fills a staging directory beside the store and renames it into
//! place only once the whole dump has been read and checked: a malformed,
//! truncated or interrupted import leaves no half-filled store that the
//! daemon would start on.
//!
//! A dump does not say which database of the store a tree was in
//! ([`super::layout`]): export reads each tree where the store's schema
//! puts it, import writes it where the current schema does.

mod format;

use std::collections::BTreeMap;
use std::collections::hash_map::{Entry, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::layout::{OWN_DB_SINCE, in_outbox_db, outbox_dir};
use super::{SCHEMA_KEY, SCHEMA_VERSION, StoreError, open_db};
use format::DumpReader;
pub use format::FORMAT_VERSION;

/// Records written to one tree per sled batch on import.
const BATCH_RECORDS: usize = 10_000;

/// One step of the schema: rewrites a record of a dump at schema version N
/// into version N + 1, or drops it (`None`). The message of an error is
/// reported at the record's line.
type Migration = fn(Record) -> Result<Option<Record>, String>;

/// `MIGRATIONS[i]` upgrades a dump at schema `OLDEST_IMPORTABLE + i`.
/// Version 2 is the first schema that was ever exported.
const MIGRATIONS: &[Migration] = &[
    // 2 to 3: the outbox moved to a database of its own; no record changed.
    |record| Ok(Some(record)),
];

/// The oldest schema version whose dumps this csmd imports.
const OLDEST_IMPORTABLE: u32 = SCHEMA_VERSION - MIGRATIONS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("there is no store at {path} (csmd creates it when it first starts)")]
    NoStore { path: PathBuf },
    #[error("{path} is not a csmd store: it has no schema version")]
    NotAStore { path: PathBuf },
    #[error(
        "the store in {path} already holds data, and import only fills an empty store: \
         move {path} aside (keep it until the imported store is checked) and import again"
    )]
    NotEmpty { path: PathBuf },
    #[error("tree {name:?} of the store has a name that is not UTF-8")]
    TreeName { name: String },
    /// The dump is not a complete, valid csmd dump; `line` is 1-based.
    #[error("{source_name}:{line}: {message}")]
    Line {
        source_name: String,
        line: u64,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sled::Error> for DumpError {
    fn from(e: sled::Error) -> Self {
        DumpError::Store(StoreError::Io(e))
    }
}

/// What an export wrote or an import read.
#[derive(Debug, Default)]
pub struct Summary {
    /// The dump's schema version.
    pub schema_version: u32,
    /// Records per tree; trees without records are left out.
    pub records: BTreeMap<String, u64>,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.records.values().sum()
    }
}

/// One key/value pair of one tree, as sled holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub tree: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A store opened for export. It takes sled's lock, so it fails while the
/// daemon runs; it creates no store and changes no record.
pub struct StoreExport {
    db: ExistingDb,
    /// The outbox's database, from schema 3 on.
    outbox_db: Option<ExistingDb>,
    schema_version: u32,
}

impl StoreExport {
    pub fn open(dir: &Path) -> Result<StoreExport, DumpError> {
        if !holds_files(dir)? {
            return Err(DumpError::NoStore {
                path: dir.to_path_buf(),
            });
        }
        let db = ExistingDb::open(dir)?;
        let schema_version = stored_schema_version(&db)?.ok_or_else(|| DumpError::NotAStore {
            path: dir.to_path_buf(),
        })?;
        let outbox_db = match schema_version >= OWN_DB_SINCE && holds_files(&outbox_dir(dir))? {
            true => Some(ExistingDb::open(&outbox_dir(dir))?),
            false => None,
        };
        Ok(StoreExport {
            db,
            outbox_db,
            schema_version,
        })
    }

    /// Every tree, by name, from the database the store's schema puts it
    /// in, in byte order of their names.
    fn trees(&self) -> Result<Vec<(sled::IVec, sled::Tree)>, DumpError> {
        let mut trees = Vec::new();
        for name in self.db.tree_names() {
            if self.outbox_db.is_none() || !in_outbox_db(&name) {
                trees.push((name.clone(), self.db.open_tree(&name)?));
            }
        }
        if let Some(outbox_db) = &self.outbox_db {
            for name in outbox_db.tree_names() {
                if in_outbox_db(&name) {
                    trees.push((name.clone(), outbox_db.open_tree(&name)?));
                }
            }
        }
        trees.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(trees)
    }

    /// Writes the dump, streaming one tree at a time, and flushes `out`.
    pub fn write(&self, mut out: impl Write) -> Result<Summary, DumpError> {
        let io = |source| DumpError::Io {
            context: "cannot write the dump".into(),
            source,
        };
        format::write_header(&mut out, self.schema_version).map_err(io)?;
        let mut summary = Summary {
            schema_version: self.schema_version,
            records: BTreeMap::new(),
        };
        for (name, tree) in self.trees()? {
            let tree_name = std::str::from_utf8(&name).map_err(|_| DumpError::TreeName {
                name: String::from_utf8_lossy(&name).into_owned(),
            })?;
            let mut count = 0;
            for item in tree.iter() {
                let (key, value) = item?;
                // Alerts, incidents and alerts' journal entries are
                // stored compact, messages packed; the dump holds them
                // as JSON. The journal's records are split into their
                // entries, one a key.
                if tree_name == super::journal::TREE {
                    for (key, value) in super::journal::exported(&key, &value)? {
                        format::write_record(&mut out, tree_name, &key, &value).map_err(io)?;
                        count += 1;
                    }
                    continue;
                }
                let value = match tree_name {
                    super::alerts::TREE => super::alerts::exported(&key, &value)?,
                    super::outbox::TREE => super::outbox::exported(&key, &value)?,
                    super::itsm::INCIDENTS => super::itsm::exported(&key, &value)?,
                    _ => std::borrow::Cow::Borrowed(value.as_ref()),
                };
                format::write_record(&mut out, tree_name, &key, &value).map_err(io)?;
                count += 1;
            }
            if count > 0 {
                summary.records.insert(tree_name.to_owned(), count);
            }
        }
        format::write_trailer(&mut out, summary.total()).map_err(io)?;
        out.flush().map_err(io)?;
        Ok(summary)
    }
}

/// Imports a dump into the store in `dir`, which must be missing or empty.
/// `source_name` names the input in errors (`dump.jsonl:17: …`). Either
/// the whole dump ends up in the store, or nothing does.
pub fn import(dir: &Path, input: impl BufRead, source_name: &str) -> Result<Summary, DumpError> {
    ensure_empty(dir)?;
    let staging = staging_dir(dir);
    remove_staging(&staging)?;
    let result = fill(&staging, input, source_name).and_then(|summary| {
        replace(dir, &staging)?;
        Ok(summary)
    });
    if result.is_err() {
        // Whatever was read so far must not be taken for a store.
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Reads the whole dump into a new store in `staging`.
fn fill(staging: &Path, input: impl BufRead, source_name: &str) -> Result<Summary, DumpError> {
    let db = open_db(staging)?;
    let outbox_db = open_db(&outbox_dir(staging))?;
    let mut reader = DumpReader::new(input, source_name);
    let schema_version = reader.header()?;
    let migrations = migrations_from(schema_version).map_err(|m| reader.error_at(1, m))?;
    let mut pending: HashMap<String, PendingTree> = HashMap::new();
    while let Some(record) = reader.next_record()? {
        let Some(record) = migrate(record, migrations).map_err(|m| reader.error(m))? else {
            continue;
        };
        let tree = match pending.entry(record.tree) {
            Entry::Occupied(tree) => tree.into_mut(),
            Entry::Vacant(slot) => {
                let name = slot.key().as_bytes();
                let tree = match in_outbox_db(name) {
                    true => outbox_db.open_tree(name)?,
                    false => db.open_tree(name)?,
                };
                slot.insert(PendingTree::new(tree))
            }
        };
        tree.insert(record.key, record.value)?;
    }
    let mut records = BTreeMap::new();
    for (name, mut tree) in pending {
        tree.apply()?;
        records.insert(name, tree.records);
    }
    // Whatever schema the dump was written at, the store is now the current one.
    db.open_tree("meta")?
        .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
    outbox_db.flush()?;
    db.flush()?;
    Ok(Summary {
        schema_version,
        records,
    })
}

/// The records of one tree read so far, written in batches.
struct PendingTree {
    tree: sled::Tree,
    batch: sled::Batch,
    /// Records in `batch`.
    batched: usize,
    /// Records read for this tree.
    records: u64,
}

impl PendingTree {
    fn new(tree: sled::Tree) -> PendingTree {
        PendingTree {
            tree,
            batch: sled::Batch::default(),
            batched: 0,
            records: 0,
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), DumpError> {
        self.batch.insert(key, value);
        self.batched += 1;
        self.records += 1;
        if self.batched >= BATCH_RECORDS {
            self.apply()?;
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<(), DumpError> {
        self.tree.apply_batch(std::mem::take(&mut self.batch))?;
        self.batched = 0;
        Ok(())
    }
}

/// Runs `record` through `migrations`, oldest first; `None` once a step
/// drops it.
fn migrate(record: Record, migrations: &[Migration]) -> Result<Option<Record>, String> {
    migrations
        .iter()
        .try_fold(Some(record), |record, step| record.map_or(Ok(None), step))
}

/// The migration steps from a dump's schema version to the current one.
fn migrations_from(version: u32) -> Result<&'static [Migration], String> {
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the dump has schema version {version}, newer than this csmd's {SCHEMA_VERSION}: \
             import it with the csmd that exported it, or a newer one"
        ));
    }
    if version < OLDEST_IMPORTABLE {
        let reads = if OLDEST_IMPORTABLE == SCHEMA_VERSION {
            format!("{SCHEMA_VERSION}")
        } else {
            format!("{OLDEST_IMPORTABLE} to {SCHEMA_VERSION}")
        };
        return Err(format!(
            "the dump has schema version {version}, and this csmd imports schema version \
             {reads} only: there is no migration from version {version}"
        ));
    }
    Ok(&MIGRATIONS[(version - OLDEST_IMPORTABLE) as usize..])
}

/// The staging directory of an import into `dir`: beside it, so that the
/// final rename stays on one file system.
fn staging_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".importing");
    dir.with_file_name(name)
}

/// Removes what an interrupted import left, unless an import running now
/// holds it (sled's lock says so).
fn remove_staging(staging: &Path) -> Result<(), DumpError> {
    if staging.exists() {
        drop(open_db(staging)?);
        std::fs::remove_dir_all(staging).map_err(|source| DumpError::Io {
            context: format!("cannot remove {}", staging.display()),
            source,
        })?;
    }
    Ok(())
}

/// Moves the filled staging store to `dir`, where the empty store (if any)
/// is checked once more: the daemon may have been started meanwhile.
fn replace(dir: &Path, staging: &Path) -> Result<(), DumpError> {
    ensure_empty(dir)?;
    let io = |what: &str, source| DumpError::Io {
        context: format!("cannot {what}"),
        source,
    };
    #[cfg(unix)]
    if let Some(parent) = dir.parent() {
        adopt_owner(staging, parent)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .map_err(|e| io(&format!("remove the empty store {}", dir.display()), e))?;
    }
    std::fs::rename(staging, dir).map_err(|e| {
        io(
            &format!("rename {} to {}", staging.display(), dir.display()),
            e,
        )
    })?;
    // The rename is durable once the parent directory is.
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&format!("sync {}", parent.display()), e))?;
    }
    Ok(())
}

/// Gives every file under `store` the owner of `reference` (the data
/// directory, or the store itself), so that csmd run as root leaves a store
/// the service user can open (under systemd's `DynamicUser=`, the state
/// directory's owner).
#[cfg(unix)]
fn adopt_owner(store: &Path, reference: &Path) -> Result<(), DumpError> {
    use std::os::unix::fs::MetadataExt;
    let io = |path: &Path, source| DumpError::Io {
        context: format!(
            "cannot give {} the owner of {}",
            path.display(),
            reference.display()
        ),
        source,
    };
    let owner = std::fs::metadata(reference).map_err(|e| io(reference, e))?;
    let mut pending = vec![store.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        // The group alone is left as it is: a user importing into their own
        // directory may not own its group, and needs no change anyway.
        if meta.uid() != owner.uid() {
            std::os::unix::fs::lchown(&path, Some(owner.uid()), Some(owner.gid()))
                .map_err(|e| io(&path, e))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| io(&path, e))? {
                pending.push(entry.map_err(|e| io(&path, e))?.path());
            }
        }
    }
    Ok(())
}

/// Fails unless the store in `dir` is missing or holds nothing but its
/// schema version. Fails too while the daemon holds the store.
fn ensure_empty(dir: &Path) -> Result<(), DumpError> {
    if !holds_files(dir)? {
        return Ok(());
    }
    let mut dbs = vec![ExistingDb::open(dir)?];
    if holds_files(&outbox_dir(dir))? {
        dbs.push(ExistingDb::open(&outbox_dir(dir))?);
    }
    for db in &dbs {
        if holds_records(db)? {
            return Err(DumpError::NotEmpty {
                path: dir.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Whether `db` holds any key but the schema version.
fn holds_records(db: &sled::Db) -> Result<bool, DumpError> {
    for name in db.tree_names() {
        let is_meta = name.as_ref() == b"meta";
        for key in db.open_tree(&name)?.iter().keys() {
            if !(is_meta && key?.as_ref() == SCHEMA_KEY) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// A store that was there before this process opened it, typically the
/// daemon's, opened by an operator as root. sled may write a snapshot file
/// while it is open; on drop, once sled has closed it, every file gets the
/// store's owner back, so that the daemon can still open its store.
struct ExistingDb {
    db: Option<sled::Db>,
    dir: PathBuf,
}

impl ExistingDb {
    fn open(dir: &Path) -> Result<ExistingDb, DumpError> {
        Ok(ExistingDb {
            db: Some(open_db(dir)?),
            dir: dir.to_path_buf(),
        })
    }
}

impl std::ops::Deref for ExistingDb {
    type Target = sled::Db;

    fn deref(&self) -> &sled::Db {
        self.db.as_ref().expect("open until dropped")
    }
}

impl Drop for ExistingDb {
    fn drop(&mut self) {
        // Dropping the last handle joins sled's flusher and closes its files.
        drop(self.db.take());
        #[cfg(unix)]
        if let Err(e) = adopt_owner(&self.dir, &self.dir) {
            // Only the CLI opens an existing store this way, and it logs
            // nowhere else; the daemon would fail to open the store later.
            eprintln!("csmd: warning: {e}");
        }
    }
}

/// Whether `dir` exists and holds anything (a store sled has written).
fn holds_files(dir: &Path) -> Result<bool, DumpError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DumpError::Io {
            context: format!("cannot read {}", dir.display()),
            source,
        }),
    }
}

/// The schema version in the store's `meta` tree, without creating the
/// tree when it is missing.
fn stored_schema_version(db: &sled::Db) -> Result<Option<u32>, DumpError> {
    if !db.tree_names().iter().any(|n| n.as_ref() == b"meta") {
        return Ok(None);
    }
    Ok(super::stored_schema_version(&db.open_tree("meta")?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store at the current schema holding `records`, each tree in its
    /// database.
    fn store_with(dir: &Path, records: &[(&str, &[u8], &[u8])]) {
        store_at(SCHEMA_VERSION, dir, records);
    }

    /// A store at `schema` (2 or 3) holding `records`.
    fn store_at(schema: u32, dir: &Path, records: &[(&str, &[u8], &[u8])]) {
        let db = open_db(dir).unwrap();
        // A store at 2 has no outbox database.
        let outbox_db = (schema >= OWN_DB_SINCE).then(|| open_db(&outbox_dir(dir)).unwrap());
        db.open_tree("meta")
            .unwrap()
            .insert(SCHEMA_KEY, &schema.to_be_bytes())
            .unwrap();
        for (tree, key, value) in records {
            let db = match &outbox_db {
                Some(outbox_db) if in_outbox_db(tree.as_bytes()) => outbox_db,
                _ => &db,
            };
            db.open_tree(tree).unwrap().insert(key, *value).unwrap();
        }
        if let Some(outbox_db) = outbox_db {
            outbox_db.flush().unwrap();
        }
        db.flush().unwrap();
    }

    fn export(dir: &Path) -> String {
        let mut out = Vec::new();
        StoreExport::open(dir).unwrap().write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn records_of(dump: &str) -> Vec<&str> {
        dump.lines().skip(1).collect()
    }

    #[test]
    fn every_tree_survives_export_and_import_unchanged() {
        let temp = tempfile::tempdir().unwrap();
        let (source, target) = (temp.path().join("a"), temp.path().join("b"));
        let packed =
            crate::store::compact::pack("outbox", &serde_json::json!({"id": "m-1"})).unwrap();
        store_with(
            &source,
            &[
                ("customers", b"acme", br#"{"id":"acme"}"#),
                ("journal", &[b'e', 0, 0, 0, 0, 0, 0, 0, 1], br#"{"seq":1}"#),
                ("a_tree_csmd_adds_later", b"\xff\x00", b"\x00\x01binary"),
                ("outbox", b"mm-1", &packed),
            ],
        );
        let dump = export(&source);
        assert!(
            dump.starts_with(r#"{"csmd_dump":1,"schema_version":"#),
            "{dump}"
        );
        assert!(dump.ends_with("{\"end\":true,\"records\":5}\n"), "{dump}");
        // A packed message is exported as its JSON.
        assert!(
            dump.contains(r#"{"tree":"outbox","key":"mm-1","value":{"id":"m-1"}}"#),
            "{dump}"
        );

        let summary = import(&target, dump.as_bytes(), "dump.jsonl").unwrap();
        assert_eq!(summary.total(), 5);
        assert_eq!(summary.records["a_tree_csmd_adds_later"], 1);
        assert!(!staging_dir(&target).exists());
        assert_eq!(records_of(&export(&target)), records_of(&dump));
    }

    #[test]
    fn a_store_at_schema_2_exports_its_outbox_and_imports_at_the_current_schema() {
        let temp = tempfile::tempdir().unwrap();
        let (source, target) = (temp.path().join("a"), temp.path().join("b"));
        let message = serde_json::json!({"id": "m-1"});
        let packed = crate::store::compact::pack("outbox", &message).unwrap();
        store_at(
            2,
            &source,
            &[
                ("outbox", b"mm-1", &packed),
                ("outbox", b"sdisruption/acme", br#"{"open":null}"#),
                ("sip", b"action-1", br#"{"title":"Call back"}"#),
            ],
        );
        let dump = export(&source);
        assert!(
            dump.starts_with(r#"{"csmd_dump":1,"schema_version":2,"#),
            "{dump}"
        );
        assert!(
            dump.contains(r#"{"tree":"outbox","key":"mm-1","value":{"id":"m-1"}}"#),
            "{dump}"
        );

        let summary = import(&target, dump.as_bytes(), "dump.jsonl").unwrap();
        assert_eq!(summary.schema_version, 2);
        assert_eq!(summary.records["outbox"], 2);
        let exported = export(&target);
        assert!(
            exported.starts_with(&format!(
                r#"{{"csmd_dump":1,"schema_version":{SCHEMA_VERSION},"#
            )),
            "{exported}"
        );
        // The outbox is in its own database now, the rest where it was.
        let outbox = open_db(&outbox_dir(&target)).unwrap();
        let tree = outbox.open_tree("outbox").unwrap();
        assert_eq!(tree.len(), 2);
        // Imported as JSON, which the store reads as well as packed.
        assert_eq!(
            tree.get(b"mm-1").unwrap().unwrap().as_ref(),
            br#"{"id":"m-1"}"#
        );
        drop(outbox);
        let main = open_db(&target).unwrap();
        assert!(!main.tree_names().iter().any(|n| in_outbox_db(n)));
        assert_eq!(main.open_tree("sip").unwrap().len(), 1);
        drop(main);
        // Every record but the schema version is the same.
        let differs = |a: &&str| !a.contains(r#""key":"schema_version""#);
        assert_eq!(
            records_of(&exported)
                .into_iter()
                .filter(differs)
                .collect::<Vec<_>>(),
            records_of(&dump)
                .into_iter()
                .filter(differs)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_empty_store_is_replaced_and_one_with_data_is_kept() {
        let temp = tempfile::tempdir().unwrap();
        let (source, target) = (temp.path().join("a"), temp.path().join("b"));
        store_with(
            &source,
            &[("sip", b"action-1", br#"{"title":"Call back"}"#)],
        );
        let dump = export(&source);

        // A store csmd opened once and nothing else: only its schema version.
        store_with(&target, &[]);
        import(&target, dump.as_bytes(), "dump.jsonl").unwrap();
        assert_eq!(records_of(&export(&target)), records_of(&dump));

        let error = import(&target, dump.as_bytes(), "dump.jsonl").unwrap_err();
        assert!(matches!(error, DumpError::NotEmpty { .. }), "{error}");
        assert_eq!(records_of(&export(&target)), records_of(&dump));
    }

    #[test]
    fn a_store_holding_only_messages_is_not_taken_for_empty() {
        let temp = tempfile::tempdir().unwrap();
        let (source, target) = (temp.path().join("a"), temp.path().join("b"));
        store_with(&source, &[("sip", b"action-1", br#"{"title":"x"}"#)]);
        store_with(&target, &[("outbox", b"sdisruption/acme", b"{}")]);
        let error = import(&target, export(&source).as_bytes(), "dump.jsonl").unwrap_err();
        assert!(matches!(error, DumpError::NotEmpty { .. }), "{error}");
        assert!(export(&target).contains(r#""key":"sdisruption/acme""#));
    }

    #[cfg(unix)]
    #[test]
    fn an_import_run_as_root_leaves_a_store_the_data_dirs_owner_can_open() {
        let temp = tempfile::tempdir().unwrap();
        if !can_give_files_away(temp.path()) {
            return;
        }
        let (source, data) = (temp.path().join("a"), temp.path().join("data"));
        store_with(
            &source,
            &[("sip", b"action-1", br#"{"title":"Call back"}"#)],
        );
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(64_123), Some(64_124)).unwrap();

        import(
            &data.join("store"),
            export(&source).as_bytes(),
            "dump.jsonl",
        )
        .unwrap();
        let owners = owners_under(&data.join("store"));
        assert!(owners.len() > 2, "{owners:?}");
        assert!(
            owners.iter().all(|(_, owner)| *owner == (64_123, 64_124)),
            "{owners:?}"
        );
    }

    /// Whether the test runs as root, the only user that can give files
    /// away; says it is skipped otherwise.
    #[cfg(unix)]
    fn can_give_files_away(temp: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let root = std::fs::metadata(temp).unwrap().uid() == 0;
        if !root {
            eprintln!("skipped: only root can give files away");
        }
        root
    }

    /// `dir` and every file under it, with its owner and group.
    #[cfg(unix)]
    fn owners_under(dir: &Path) -> Vec<(PathBuf, (u32, u32))> {
        use std::os::unix::fs::MetadataExt;
        let mut owners = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
            owners.push((path, (meta.uid(), meta.gid())));
        }
        owners
    }

    #[cfg(unix)]
    #[test]
    fn an_export_run_as_root_leaves_the_store_to_its_owner() {
        let temp = tempfile::tempdir().unwrap();
        if !can_give_files_away(temp.path()) {
            return;
        }
        let store = temp.path().join("store");
        store_with(&store, &[("sip", b"action-1", br#"{"title":"Call back"}"#)]);
        for (path, _) in owners_under(&store) {
            std::os::unix::fs::chown(&path, Some(64_123), Some(64_124)).unwrap();
        }

        export(&store);
        let owners = owners_under(&store);
        assert!(owners.len() > 2, "{owners:?}");
        assert!(
            owners.iter().all(|(_, (uid, _))| *uid == 64_123),
            "{owners:?}"
        );
    }

    #[test]
    fn a_dump_of_a_newer_schema_is_refused_and_nothing_is_written() {
        let temp = tempfile::tempdir().unwrap();
        let target = temp.path().join("store");
        let newer = SCHEMA_VERSION + 1;
        let dump = format!(
            "{{\"csmd_dump\":1,\"schema_version\":{newer}}}\n{{\"end\":true,\"records\":0}}\n"
        );
        let error = import(&target, dump.as_bytes(), "new.jsonl")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "new.jsonl:1: the dump has schema version {newer}, newer"
            )),
            "{error}"
        );
        assert!(!target.exists() && !staging_dir(&target).exists());
    }
}

//! The store: the only code that touches sled. It owns the trees and their
//! key encodings, checks the schema version at open, hands out the ingest
//! [`journal`], and reads and writes the format-independent [`dump`].

pub mod alerts;
mod compact;
pub mod dump;
mod integrity;
mod itsm;
pub mod journal;
pub mod layout;
pub mod outbox;
mod sip;
pub mod tickets;
mod typed;
mod writes;

use std::path::{Path, PathBuf};

use crate::config::Customer;
use crate::model::CustomerId;
use crate::model::itsm::RECORD_TREES;
pub use itsm::Applied;
pub use sip::SipError;
pub use typed::TypedTree;

/// Bumped whenever a tree's key or value encoding, or the database it
/// lives in, changes incompatibly.
/// 2: journal entries, delivery ids and cursors share the journal tree
/// under key prefixes.
/// 3: the outbox in a database of its own ([`layout`]); a store at 2 is
/// moved at open.
pub const SCHEMA_VERSION: u32 = 3;

const SCHEMA_KEY: &[u8] = b"schema_version";

/// sled's page cache unless `[daemon] store_cache_mib` says otherwise:
/// small enough for the ITSM sync's memory target (BENCHMARKS.md).
pub const DEFAULT_CACHE_MIB: u64 = 16;

/// The store's random identity ([`Store::id`]).
const STORE_ID_KEY: &[u8] = b"store_id";

/// Every tree of the store besides the ITSM records' ([`RECORD_TREES`]).
/// Trees without accessors yet are opened so the on-disk layout is complete
/// from the first version.
const TREE_NAMES: &[&str] = &[
    "meta",
    "journal",
    "customers",
    "alerts",
    "sip",
    integrity::TREE,
    "itsm_writes",
    tickets::TREE,
    itsm::CHANGE_HISTORY,
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the store in {path} is in use by another process (is csmd already running?)")]
    Locked { path: PathBuf },
    #[error(
        "the store in {path} has schema version {found}, this csmd reads version {expected}; \
         run the csmd that wrote it, or `csmd store export` it, move it aside and \
         `csmd store import` the dump (import converts the older versions it knows)"
    )]
    Schema {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("store I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("store transaction failed: {0}")]
    Transaction(String),
    #[error("record {key} in tree {tree} cannot be decoded: {source}")]
    Decode {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("record for tree {tree} cannot be encoded: {source}")]
    Encode {
        tree: &'static str,
        source: serde_json::Error,
    },
    #[error("record {key} in tree {tree} cannot be decoded: {message}")]
    Corrupt {
        tree: &'static str,
        key: String,
        message: String,
    },
    #[error("record for tree {tree} cannot be encoded: {message}")]
    Encoding { tree: &'static str, message: String },
}

/// The open store. Cheap to clone: sled handles are reference counted.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// The outbox's own database ([`layout`]).
    outbox_db: sled::Db,
    path: PathBuf,
    customers: TypedTree<Customer>,
    /// The journal: read in `journal::read`, written by its committer.
    journal: sled::Tree,
    meta: sled::Tree,
    outbox: sled::Tree,
    /// The ids the outbox knows, once read ([`outbox::KnownIds`]).
    outbox_ids: std::sync::Arc<std::sync::Mutex<Option<outbox::KnownIds>>>,
    alerts: sled::Tree,
    /// What is kept of the alerts in memory, shared by every clone.
    live_alerts: std::sync::Arc<std::sync::Mutex<alerts::Live>>,
    /// The newest durable journal entries, shared by every clone.
    tail: std::sync::Arc<journal::Tail>,
    /// The engine's position as last stored, for those who wait on it
    /// ([`Store::engine_applied`]).
    engine_applied: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    sip: sip::SipTree,
}

impl Store {
    /// Opens (or creates) the store in `dir` and checks its schema version.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(dir, DEFAULT_CACHE_MIB * 1024 * 1024)
    }

    /// [`Store::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let path = dir.to_path_buf();
        let db = open_db_cached(dir, cache_bytes)?;
        let meta = db.open_tree("meta")?;
        let schema = stored_schema_version(&meta)?;
        // Refused before the outbox's database is created beside it.
        if let Some(found) = schema.filter(|&v| v != SCHEMA_VERSION && v != 2) {
            return Err(StoreError::Schema {
                path,
                found,
                expected: SCHEMA_VERSION,
            });
        }
        let outbox_db = open_db_cached(
            &layout::outbox_dir(dir),
            layout::OUTBOX_CACHE_MIB * 1024 * 1024,
        )?;
        settle_schema(schema, &db, &outbox_db, &meta, &path)?;
        for name in TREE_NAMES.iter().chain(RECORD_TREES) {
            db.open_tree(name)?;
        }
        let engine_applied = tokio::sync::watch::Sender::new(itsm::stored_engine_position(&meta)?);
        Ok(Store {
            customers: TypedTree::new("customers", db.open_tree("customers")?),
            journal: db.open_tree(journal::TREE)?,
            meta,
            outbox: outbox_db.open_tree(outbox::TREE)?,
            outbox_ids: Default::default(),
            alerts: db.open_tree(alerts::TREE)?,
            live_alerts: Default::default(),
            tail: Default::default(),
            engine_applied: std::sync::Arc::new(engine_applied),
            sip: sip::SipTree::new(db.open_tree(sip::TREE)?),
            db,
            outbox_db,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.flush_outbox()?;
        self.db.flush()?;
        Ok(())
    }

    /// Makes what was written to the outbox so far durable.
    pub fn flush_outbox(&self) -> Result<(), StoreError> {
        self.outbox_db.flush()?;
        Ok(())
    }

    /// Replaces the stored customers with the configured ones, in one batch.
    pub fn sync_customers(&self, customers: &[Customer]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let keep: std::collections::HashSet<&str> =
            customers.iter().map(|c| c.id.as_str()).collect();
        for key in self.customers.keys() {
            let key = key?;
            if !keep.contains(std::str::from_utf8(&key).unwrap_or_default()) {
                batch.remove(key);
            }
        }
        for customer in customers {
            batch.insert(
                customer.id.as_str().as_bytes(),
                self.customers.encode(customer)?,
            );
        }
        self.customers.apply_batch(batch)
    }

    pub fn customers(&self) -> Result<Vec<Customer>, StoreError> {
        self.customers.values().collect()
    }

    pub fn customer(&self, id: &CustomerId) -> Result<Option<Customer>, StoreError> {
        self.customers.get(id.as_str().as_bytes())
    }

    /// The store's identity: random, given the first time it is asked for
    /// (and kept by `csmd store export` and `import`), so that what is
    /// saved beside a store for it, such as the integrity index's
    /// snapshot, is never read with another store that reached the same
    /// journal position.
    pub fn id(&self) -> Result<u128, StoreError> {
        let parse = |bytes: &[u8]| <[u8; 16]>::try_from(bytes).ok().map(u128::from_be_bytes);
        if let Some(id) = self.meta.get(STORE_ID_KEY)?.as_deref().and_then(parse) {
            return Ok(id);
        }
        let fresh = rand::random::<u128>().to_be_bytes();
        let id = self
            .meta
            .update_and_fetch(STORE_ID_KEY, |old| match old {
                Some(old) if parse(old).is_some() => Some(old.to_vec()),
                _ => Some(fresh.to_vec()),
            })?
            .as_deref()
            .and_then(parse)
            .unwrap_or(u128::from_be_bytes(fresh));
        self.meta.flush()?;
        Ok(id)
    }
}

/// Opens (or creates) the sled database in `dir` with the settings every
/// csmd process uses and the default page cache.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    open_db_cached(dir, DEFAULT_CACHE_MIB * 1024 * 1024)
}

/// Opens (or creates) the sled database in `dir` with the settings every
/// csmd process uses; a database another process holds is
/// [`StoreError::Locked`].
///
/// sled releases its file lock from a background thread after the last
/// handle is dropped (sled#1234), so a database this process has just
/// closed (an import checks the target, then replaces it) can look
/// locked for a few milliseconds: a lock is tried again for up to a
/// second before it is taken for another process's.
fn open_db_cached(dir: &Path, cache_bytes: u64) -> Result<sled::Db, StoreError> {
    use backon::{BlockingRetryable, ExponentialBuilder};
    use std::time::Duration;
    let open = || {
        sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(1000))
            .open()
    };
    let lock_wait = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(100))
        .with_max_times(usize::MAX)
        .with_total_delay(Some(Duration::from_secs(1)));
    open.retry(lock_wait)
        .sleep(std::thread::sleep)
        .when(is_lock_error)
        .call()
        .map_err(|source| {
            if is_lock_error(&source) {
                StoreError::Locked {
                    path: dir.to_path_buf(),
                }
            } else {
                StoreError::Open {
                    path: dir.to_path_buf(),
                    source,
                }
            }
        })
}

/// Whether sled could not take the database's file lock.
fn is_lock_error(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e)
        if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("lock"))
}

/// The schema version a store's `meta` tree records, if any (0 when it is
/// unreadable).
fn stored_schema_version(meta: &sled::Tree) -> Result<Option<u32>, sled::Error> {
    Ok(meta.get(SCHEMA_KEY)?.map(|bytes| {
        <[u8; 4]>::try_from(bytes.as_ref())
            .map(u32::from_be_bytes)
            .unwrap_or(0)
    }))
}

/// Brings a store at a schema this csmd reads (`schema`, none when new)
/// to the current one: a new store gets its version, and a store at
/// version 2 has its outbox moved ([`layout::move_outbox`]).
fn settle_schema(
    schema: Option<u32>,
    db: &sled::Db,
    outbox_db: &sled::Db,
    meta: &sled::Tree,
    path: &Path,
) -> Result<(), StoreError> {
    let mark = || -> Result<(), StoreError> {
        meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
        db.flush()?;
        Ok(())
    };
    match schema {
        None => mark(),
        Some(2) => {
            let moved = layout::move_outbox(db, outbox_db, mark)?;
            tracing::info!(
                path = %path.display(),
                records = moved,
                "Moved the outbox into a database of its own (store schema 2 to 3)"
            );
            Ok(())
        }
        Some(_) => layout::drop_moved(db),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_let_go_of_soon_is_waited_for_and_one_kept_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let held = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StoreError::Locked { path }) => assert_eq!(path, dir.path()),
            Err(other) => panic!("not a lock error: {other}"),
            Ok(_) => panic!("a store open in this process was opened again"),
        }
        // As sled's background thread does after a drop: the lock goes a
        // little later.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(held);
        });
        let reopened = Store::open(dir.path());
        release.join().unwrap();
        if let Err(error) = reopened {
            panic!("the store was not opened once its lock went: {error}");
        }
    }
}

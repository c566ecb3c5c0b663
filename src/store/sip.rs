//! SIP actions in the store: one tree, under key prefixes:
//! - `a/<n>`: the action `SIP-<n>` (n zero-padded, so keys sort by number);
//! - `o/<origin>`: the id of the action an automatic source created, so a
//!   re-sync or a replayed event never creates a second one;
//! - `next`: the next action number.
//!
//! Writers are serialised by one lock: an action is read, changed by its
//! own rules and written back with its index entries in one batch and one
//! flush, so concurrent API calls and the engine never lose each other's
//! changes. SIP traffic is a few writes a day; the lock costs nothing.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::model::sip::{NewSip, SipAction, SipRuleError};

pub const TREE: &str = "sip";
const ACTION: &str = "a/";
const ORIGIN: &str = "o/";
const NEXT: &[u8] = b"next";

/// The SIP tree and the lock its writers take.
#[derive(Clone)]
pub(super) struct SipTree {
    tree: sled::Tree,
    lock: Arc<Mutex<()>>,
}

impl SipTree {
    pub(super) fn new(tree: sled::Tree) -> SipTree {
        SipTree {
            tree,
            lock: Arc::new(Mutex::new(())),
        }
    }
}

/// Why a SIP write was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error(transparent)]
    Rule(#[from] SipRuleError),
    #[error("no SIP action {0}")]
    NotFound(String),
    #[error("{0}")]
    Query(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn action_key(number: u64) -> Vec<u8> {
    format!("{ACTION}{number:010}").into_bytes()
}

/// `SIP-12` → 12.
fn number_of(id: &str) -> Option<u64> {
    id.strip_prefix("SIP-")?.parse().ok()
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<SipAction, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        tree: TREE,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode(action: &SipAction) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(action).map_err(|source| StoreError::Encode { tree: TREE, source })
}

impl Store {
    /// Creates an action. One with an origin that created an action before
    /// returns that action instead, unchanged, and `false`.
    pub fn create_sip(
        &self,
        new: NewSip,
        now: DateTime<Utc>,
    ) -> Result<(SipAction, bool), SipError> {
        let sip = &self.sip;
        let _guard = sip.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(origin) = &new.origin
            && let Some(existing) = self.sip_by_origin(origin)?
        {
            return Ok((existing, false));
        }
        let number = match sip.tree.get(NEXT).map_err(StoreError::from)? {
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_ref())
                .map(u64::from_be_bytes)
                .unwrap_or(1),
            None => 1,
        };
        let origin = new.origin.clone();
        let action = SipAction::create(format!("SIP-{number}"), new, now)?;
        let mut batch = sled::Batch::default();
        batch.insert(action_key(number), encode(&action)?);
        batch.insert(NEXT, &(number + 1).to_be_bytes());
        if let Some(origin) = origin {
            batch.insert(
                format!("{ORIGIN}{origin}").into_bytes(),
                action.id.as_bytes(),
            );
        }
        sip.tree.apply_batch(batch).map_err(StoreError::from)?;
        self.flush()?;
        Ok((action, true))
    }

    /// Changes one action with `change`, which applies the action's rules;
    /// written and flushed only when it changed something. Returns the
    /// action as it is now.
    pub fn update_sip<F>(&self, id: &str, change: F) -> Result<SipAction, SipError>
    where
        F: FnOnce(&mut SipAction) -> Result<bool, SipRuleError>,
    {
        let sip = &self.sip;
        let _guard = sip.lock.lock().unwrap_or_else(|e| e.into_inner());
        let key = number_of(id)
            .map(action_key)
            .ok_or_else(|| SipError::NotFound(id.to_string()))?;
        let mut action = match sip.tree.get(&key).map_err(StoreError::from)? {
            Some(bytes) => decode(&key, &bytes)?,
            None => return Err(SipError::NotFound(id.to_string())),
        };
        if change(&mut action)? {
            sip.tree
                .insert(&key, encode(&action)?)
                .map_err(StoreError::from)?;
            self.flush()?;
        }
        Ok(action)
    }

    pub fn sip_action(&self, id: &str) -> Result<Option<SipAction>, StoreError> {
        let Some(key) = number_of(id).map(action_key) else {
            return Ok(None);
        };
        self.sip
            .tree
            .get(&key)?
            .map(|bytes| decode(&key, &bytes))
            .transpose()
    }

    /// The action an automatic source created for `origin`, if any.
    pub fn sip_by_origin(&self, origin: &str) -> Result<Option<SipAction>, StoreError> {
        match self.sip.tree.get(format!("{ORIGIN}{origin}"))? {
            Some(id) => self.sip_action(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// Every action, in creation order (a scan: actions are few).
    pub fn sip_actions(&self) -> Result<Vec<SipAction>, StoreError> {
        self.sip
            .tree
            .scan_prefix(ACTION)
            .map(|item| {
                let (key, bytes) = item?;
                decode(&key, &bytes)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sip::{SipLinks, SipPatch, SipSource, SipStatus};

    fn new(origin: Option<&str>) -> NewSip {
        NewSip {
            customer: "acme".parse().unwrap(),
            title: "Fix it".into(),
            description: None,
            source: SipSource::Rca,
            owner: None,
            target_date: None,
            links: SipLinks::default(),
            author: "csmd".into(),
            origin: origin.map(str::to_string),
        }
    }

    #[test]
    fn numbers_follow_creation_and_an_origin_creates_one_action_ever() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let (a, created) = store.create_sip(new(Some("rca/t1/acme")), now).unwrap();
        assert!(created);
        assert_eq!(a.id, "SIP-1");
        let (again, created) = store.create_sip(new(Some("rca/t1/acme")), now).unwrap();
        assert!(!created);
        assert_eq!(again.id, "SIP-1");
        let (b, _) = store.create_sip(new(None), now).unwrap();
        assert_eq!(b.id, "SIP-2");
        drop(store);

        // Numbers survive a restart.
        let store = Store::open(dir.path()).unwrap();
        let (c, _) = store.create_sip(new(None), now).unwrap();
        assert_eq!(c.id, "SIP-3");
        let ids: Vec<_> = store
            .sip_actions()
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["SIP-1", "SIP-2", "SIP-3"]);
        assert_eq!(
            store.sip_by_origin("rca/t1/acme").unwrap().unwrap().id,
            "SIP-1"
        );
    }

    #[test]
    fn a_refused_update_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, _) = store.create_sip(new(None), Utc::now()).unwrap();
        let patch = SipPatch {
            status: Some(SipStatus::Done),
            author: "jane".into(),
            ..SipPatch::default()
        };
        let err = store
            .update_sip(&a.id, |action| action.apply(patch, Utc::now()))
            .unwrap_err();
        assert!(matches!(err, SipError::Rule(_)), "{err}");
        assert_eq!(store.sip_action(&a.id).unwrap().unwrap(), a);
        assert!(matches!(
            store.update_sip("SIP-99", |_| Ok(true)),
            Err(SipError::NotFound(_))
        ));
        assert!(matches!(
            store.update_sip("nonsense", |_| Ok(true)),
            Err(SipError::NotFound(_))
        ));
    }
}

//! A sled tree holding one record type, JSON-encoded so that a store can be
//! inspected and exported without csmd's Rust types.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

pub struct TypedTree<V> {
    name: &'static str,
    tree: sled::Tree,
    _record: PhantomData<fn() -> V>,
}

impl<V> Clone for TypedTree<V> {
    fn clone(&self) -> Self {
        TypedTree {
            name: self.name,
            tree: self.tree.clone(),
            _record: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> TypedTree<V> {
    pub fn new(name: &'static str, tree: sled::Tree) -> Self {
        TypedTree {
            name,
            tree,
            _record: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    pub fn encode(&self, value: &V) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            tree: self.name,
            source,
        })
    }

    pub fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<V, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            tree: self.name,
            key: String::from_utf8_lossy(key).into_owned(),
            source,
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<V>, StoreError> {
        match self.tree.get(key)? {
            Some(bytes) => self.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn values(&self) -> impl Iterator<Item = Result<V, StoreError>> + '_ {
        self.tree.iter().map(|item| {
            let (k, v) = item?;
            self.decode(&k, &v)
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = Result<sled::IVec, StoreError>> + '_ {
        self.tree.iter().keys().map(|k| k.map_err(StoreError::from))
    }

    pub fn apply_batch(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

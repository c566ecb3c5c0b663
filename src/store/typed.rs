//! A sled tree holding one record type, JSON-encoded so that a store can be
//! inspected and exported without csmd's Rust types; a tree may read its
//! values with a decoder of its own ([`TypedTree::decoding`]) when some of
//! them are stored compact, as the journal's alert entries are.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

pub struct TypedTree<V> {
    name: &'static str,
    tree: sled::Tree,
    /// How values are read, when not only as JSON.
    decoder: Option<Decoder<V>>,
    _record: PhantomData<fn() -> V>,
}

/// Reads the value stored under a key.
pub type Decoder<V> = fn(&[u8], &[u8]) -> Result<V, StoreError>;

impl<V> Clone for TypedTree<V> {
    fn clone(&self) -> Self {
        TypedTree {
            name: self.name,
            tree: self.tree.clone(),
            decoder: self.decoder,
            _record: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> TypedTree<V> {
    pub fn new(name: &'static str, tree: sled::Tree) -> Self {
        TypedTree {
            name,
            tree,
            decoder: None,
            _record: PhantomData,
        }
    }

    /// The tree, reading its values with `decoder` (which also reads the
    /// JSON the tree may hold) instead of as JSON.
    pub fn decoding(self, decoder: Decoder<V>) -> Self {
        TypedTree {
            decoder: Some(decoder),
            ..self
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
        if let Some(decoder) = self.decoder {
            return decoder(key, bytes);
        }
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

    pub fn values_from(&self, start: &[u8]) -> impl Iterator<Item = Result<V, StoreError>> + '_ {
        self.tree.range(start..).map(|item| {
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

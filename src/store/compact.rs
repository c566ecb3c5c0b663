//! What the store's compact values share: the byte that marks them and
//! the encoding of an instant.
//!
//! The trees that hold many values and are rewritten often (alerts,
//! incidents) store them as postcard: no field names, instants as numbers.
//! Their first byte is [`COMPACT`], which no JSON value starts with, so a
//! tree may hold both, as written by earlier versions or by
//! `csmd store import`. Postcard has no names: fields are only ever added
//! at the end of a stored struct.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The first byte of a compact value; a JSON value starts with `{`.
pub(super) const COMPACT: u8 = 1;

/// Seconds and nanoseconds since the Unix epoch: exact, and a few bytes.
pub(super) type Instant = (i64, u32);

pub(super) fn instant(at: DateTime<Utc>) -> Instant {
    (at.timestamp(), at.timestamp_subsec_nanos())
}

/// The instant a stored value holds, or why it is corrupt.
pub(super) fn date_time(
    tree: &'static str,
    key: &[u8],
    (secs, nanos): Instant,
) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp(secs, nanos).ok_or_else(|| {
        corrupt(
            tree,
            key,
            format!("instant {secs}.{nanos:09} is out of range"),
        )
    })
}

pub(super) fn corrupt(tree: &'static str, key: &[u8], message: String) -> StoreError {
    StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    }
}

pub(super) fn borrowed(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

pub(super) fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

/// `value` stored compact: the [`COMPACT`] byte, then postcard.
pub(super) fn encode(tree: &'static str, value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    postcard::to_extend(value, vec![COMPACT]).map_err(|e| StoreError::Encoding {
        tree,
        message: e.to_string(),
    })
}

/// A stored value, borrowed: `C` when compact, else `J` from the JSON
/// earlier versions (or `csmd store import`) wrote. Returned and matched
/// at once, never kept, so its size costs nothing a box would save.
#[allow(clippy::large_enum_variant)]
pub(super) enum Value<C, J> {
    Compact(C),
    Json(J),
}

/// The value stored under `key` in `tree`, of either encoding.
pub(super) fn read<'a, C: Deserialize<'a>, J: Deserialize<'a>>(
    tree: &'static str,
    key: &[u8],
    bytes: &'a [u8],
) -> Result<Value<C, J>, StoreError> {
    match bytes.strip_prefix(&[COMPACT]) {
        Some(compact) => postcard::from_bytes(compact)
            .map(Value::Compact)
            .map_err(|e| corrupt(tree, key, e.to_string())),
        None => serde_json::from_slice(bytes)
            .map(Value::Json)
            .map_err(|source| StoreError::Decode {
                tree,
                key: String::from_utf8_lossy(key).into_owned(),
                source,
            }),
    }
}

/// A stored value as JSON, for `csmd store export`: a JSON value as it
/// is, a compact one as `decode` reads it.
pub(super) fn exported<'v, T: Serialize>(
    tree: &'static str,
    value: &'v [u8],
    decode: impl FnOnce() -> Result<T, StoreError>,
) -> Result<Cow<'v, [u8]>, StoreError> {
    if !value.starts_with(&[COMPACT]) {
        return Ok(Cow::Borrowed(value));
    }
    let json =
        serde_json::to_vec(&decode()?).map_err(|source| StoreError::Encode { tree, source })?;
    Ok(Cow::Owned(json))
}

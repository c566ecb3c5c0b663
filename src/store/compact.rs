//! What the store's compact values share: the bytes that mark them and
//! the encoding of an instant.
//!
//! The trees that hold many values and are rewritten often (alerts,
//! incidents) store them as postcard: no field names, instants as numbers.
//! Their first byte is [`COMPACT`], which no JSON value starts with, so a
//! tree may hold both, as written by earlier versions or by
//! `csmd store import`. Postcard has no names: fields are only ever added
//! at the end of a stored struct.
//!
//! Values made mostly of long text (the outbox's rendered messages) stay
//! JSON, compressed with LZ4 after a [`PACKED`] byte ([`pack`]): a
//! disruption notice takes 1.9 KB instead of 5 KB, so sled's page cache
//! holds 2.7 times as many, and rewrites that many fewer bytes when it
//! consolidates a page of them. LZ4 packs one in about 5 µs
//! (BENCHMARKS.md). The journal's records are packed the same way.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The first byte of a compact value; a JSON value starts with `{`.
pub(super) const COMPACT: u8 = 1;

/// The first byte of a packed value: LZ4-compressed JSON, or a journal
/// record.
pub(super) const PACKED: u8 = 2;

/// The first byte of a journal record holding several entries
/// (`journal::stored`).
pub(super) const RECORD: u8 = 3;

/// The longest JSON a packed value may unpack to: a corrupt length must
/// not make csmd allocate gigabytes.
const MAX_UNPACKED: usize = 256 * 1024 * 1024;

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

/// `value` as JSON compressed with LZ4, after the [`PACKED`] byte and the
/// JSON's length (4 bytes, little-endian).
pub(super) fn pack(tree: &'static str, value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(value).map_err(|source| StoreError::Encode { tree, source })?;
    pack_bytes(tree, &json)
}

/// `bytes` compressed with LZ4, after the [`PACKED`] byte and their length;
/// read back by [`unpack`].
pub(super) fn pack_bytes(tree: &'static str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let length = u32::try_from(bytes.len()).map_err(|_| StoreError::Encoding {
        tree,
        message: format!("a value of {} bytes is too long to store", bytes.len()),
    })?;
    let mut packed = vec![0; 5 + lz4_flex::block::get_maximum_output_size(bytes.len())];
    packed[0] = PACKED;
    packed[1..5].copy_from_slice(&length.to_le_bytes());
    let written = lz4_flex::block::compress_into(bytes, &mut packed[5..]).map_err(|e| {
        StoreError::Encoding {
            tree,
            message: e.to_string(),
        }
    })?;
    packed.truncate(5 + written);
    Ok(packed)
}

/// The JSON (or bytes) of a value stored plain or packed ([`pack`],
/// [`pack_bytes`]).
pub(super) fn unpack<'v>(
    tree: &'static str,
    key: &[u8],
    value: &'v [u8],
) -> Result<Cow<'v, [u8]>, StoreError> {
    let Some(packed) = value.strip_prefix(&[PACKED]) else {
        return Ok(Cow::Borrowed(value));
    };
    let (length, compressed) = lz4_flex::block::uncompressed_size(packed)
        .map_err(|_| corrupt(tree, key, "a packed value without its length".into()))?;
    if length > MAX_UNPACKED {
        return Err(corrupt(
            tree,
            key,
            format!("a packed value says it unpacks to {length} bytes"),
        ));
    }
    let mut json = vec![0; length];
    match lz4_flex::block::decompress_into(compressed, &mut json) {
        Ok(written) if written == length => Ok(Cow::Owned(json)),
        Ok(written) => Err(corrupt(
            tree,
            key,
            format!("a packed value unpacks to {written} bytes, not {length}"),
        )),
        Err(e) => Err(corrupt(tree, key, format!("cannot unpack: {e}"))),
    }
}

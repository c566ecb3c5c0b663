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

//! The index saved to a file beside the store, so that a restart reads it
//! back and follows the journal from the position it reflects instead of
//! building it from every record in sled (at a million CIs, sled's
//! iteration alone takes about ten seconds: BENCHMARKS.md).
//!
//! The file is a fixed header, then the body (`body`): the index in
//! postcard's encoding. The header says what the index was built from
//! ([`Origin`]: the store's identity and schema version, and a
//! [`Fingerprint`] of the configuration the index reads), the journal
//! position it reflects, the length of each of the body's sections, and a
//! CRC-32 of the header and the body. The body is written as it is
//! encoded, so writing holds no second copy of the index; reading holds
//! the file's bytes (about 80 bytes per CI) while it decodes them.
//!
//! A file that is missing, truncated, corrupt or written for another
//! store, schema or configuration is refused with the reason
//! ([`SnapshotError`]), and the caller builds the index from the store.
//! It is written to a temporary file in the same directory, synced and
//! renamed over the previous one: a crash leaves one or the other whole.

mod body;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Index;
use crate::config::Customer;
use body::{BodyWriter, SECTIONS, Sections};

/// The snapshot's file name in the daemon's data directory.
pub const FILE_NAME: &str = "integrity-index.snapshot";

const MAGIC: [u8; 8] = *b"csmd-idx";
/// Bumped whenever the header or the body changes.
const FORMAT: u32 = 1;
/// Magic, format, schema, store, position, fingerprint, sections' lengths,
/// checksum.
const HEADER_LEN: usize = 8 + 4 + 4 + 16 + 8 + 32 + 8 * SECTIONS + 4;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("there is no snapshot at {0}")]
    Missing(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not an index snapshot")]
    NotASnapshot(PathBuf),
    #[error("the snapshot has format {found}, this csmd reads format {FORMAT}")]
    Format { found: u32 },
    #[error("the snapshot is of a store with schema version {found}, the store has {expected}")]
    Schema { found: u32, expected: u32 },
    #[error("the snapshot was written for another store")]
    OtherStore,
    #[error("the customers' accounts or install base changed since the snapshot was written")]
    Configuration,
    #[error("the snapshot is truncated: {found} bytes, its header says {expected}")]
    Length { expected: u64, found: u64 },
    #[error("the snapshot is corrupt: its checksum does not match")]
    Checksum,
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(&'static str),
    #[error("the snapshot is corrupt: {0}")]
    Decode(postcard::Error),
    #[error("cannot encode the index: {0}")]
    Encode(postcard::Error),
    #[error("the index is too large for the snapshot format")]
    TooLarge,
}

/// What the index reads of the configuration: which customers map to
/// which ITSM and billing accounts, and the customers' own install base
/// (SHA-256, over the customers in order: the first match wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(customers: &[Customer]) -> Fingerprint {
        fn field(hash: &mut Sha256, value: Option<&str>) {
            match value {
                None => hash.update([0]),
                Some(value) => {
                    hash.update([1]);
                    hash.update((value.len() as u64).to_le_bytes());
                    hash.update(value);
                }
            }
        }
        let mut hash = Sha256::new();
        for customer in customers {
            field(&mut hash, Some(customer.id.as_str()));
            field(&mut hash, customer.itsm_account.as_deref());
            field(&mut hash, customer.billing_account.as_deref());
            hash.update((customer.install_base.len() as u64).to_le_bytes());
            for entry in &customer.install_base {
                field(&mut hash, entry.ci.as_deref());
                field(&mut hash, entry.service.as_deref());
            }
        }
        Fingerprint(hash.finalize().into())
    }
}

/// What an index was built from: a snapshot is read back only where the
/// same holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// [`crate::store::Store::id`].
    pub store: u128,
    /// [`crate::store::SCHEMA_VERSION`].
    pub schema: u32,
    pub configuration: Fingerprint,
}

struct Header {
    format: u32,
    origin: Origin,
    /// The journal position the index reflects.
    position: u64,
    sections: Sections,
    checksum: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = Vec::with_capacity(HEADER_LEN);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&self.format.to_le_bytes());
        bytes.extend_from_slice(&self.origin.schema.to_le_bytes());
        bytes.extend_from_slice(&self.origin.store.to_le_bytes());
        bytes.extend_from_slice(&self.position.to_le_bytes());
        bytes.extend_from_slice(&self.origin.configuration.0);
        for section in self.sections {
            bytes.extend_from_slice(&section.to_le_bytes());
        }
        bytes.extend_from_slice(&self.checksum.to_le_bytes());
        let mut out = [0; HEADER_LEN];
        for (to, from) in out.iter_mut().zip(bytes) {
            *to = from;
        }
        out
    }

    /// The header, if `bytes` start with one of this format.
    fn decode(bytes: &[u8; HEADER_LEN], path: &Path) -> Result<Header, SnapshotError> {
        let mut fields = Fields(bytes);
        if fields.take::<8>()? != MAGIC {
            return Err(SnapshotError::NotASnapshot(path.to_path_buf()));
        }
        let format = u32::from_le_bytes(fields.take()?);
        if format != FORMAT {
            return Err(SnapshotError::Format { found: format });
        }
        let schema = u32::from_le_bytes(fields.take()?);
        let store = u128::from_le_bytes(fields.take()?);
        let position = u64::from_le_bytes(fields.take()?);
        let configuration = Fingerprint(fields.take()?);
        let mut sections = [0; SECTIONS];
        for section in &mut sections {
            *section = u64::from_le_bytes(fields.take()?);
        }
        let checksum = u32::from_le_bytes(fields.take()?);
        Ok(Header {
            format,
            origin: Origin {
                store,
                schema,
                configuration,
            },
            position,
            sections,
            checksum,
        })
    }

    /// Whether the index was built from what `origin` says.
    fn check(&self, origin: &Origin) -> Result<(), SnapshotError> {
        if self.origin.schema != origin.schema {
            return Err(SnapshotError::Schema {
                found: self.origin.schema,
                expected: origin.schema,
            });
        }
        if self.origin.store != origin.store {
            return Err(SnapshotError::OtherStore);
        }
        if self.origin.configuration != origin.configuration {
            return Err(SnapshotError::Configuration);
        }
        Ok(())
    }

    fn body_len(&self) -> u64 {
        self.sections
            .iter()
            .fold(0, |sum, s| sum.saturating_add(*s))
    }

    /// The CRC-32 of the header (but its checksum) followed by the body's.
    fn checksum_with(&self, body: &crc32fast::Hasher) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.encode()[..HEADER_LEN - 4]);
        hasher.combine(body);
        hasher.finalize()
    }
}

/// The header's fields, in order.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let (field, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(SnapshotError::Corrupt("a short header"))?;
        self.0 = rest;
        Ok(*field)
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io {
        action,
        path,
        source,
    }
}

/// Writes `index`, reflecting the journal up to `position`, to `path`
/// atomically; returns the file's size.
pub fn write(
    path: &Path,
    index: &Index,
    origin: Origin,
    position: u64,
) -> Result<u64, SnapshotError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = dir.join(name);
    let written = write_partial(&partial, index, origin, position).and_then(|size| {
        std::fs::rename(&partial, path).map_err(io("rename into place", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))?;
        Ok(size)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Writes the whole file at `partial` and syncs it; returns its size.
fn write_partial(
    partial: &Path,
    index: &Index,
    origin: Origin,
    position: u64,
) -> Result<u64, SnapshotError> {
    let mut file = File::create(partial).map_err(io("create", partial))?;
    // The header goes first, once the body's sections and checksum are
    // known.
    file.write_all(&[0; HEADER_LEN])
        .map_err(io("write", partial))?;
    let mut body = BodyWriter::new(file, partial);
    let sections = body::write(index, &mut body)?;
    body.flush()?;
    let mut header = Header {
        format: FORMAT,
        origin,
        position,
        sections,
        checksum: 0,
    };
    if header.body_len() != body.len {
        return Err(SnapshotError::Corrupt(
            "sections other than the body written",
        ));
    }
    header.checksum = header.checksum_with(&body.crc);
    let mut file = body.out;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(&header.encode()))
        .map_err(io("write", partial))?;
    file.sync_all().map_err(io("sync", partial))?;
    Ok(HEADER_LEN as u64 + body.len)
}

/// Reads the index saved at `path` if it was built from what `origin`
/// says; returns it with the journal position it reflects.
pub fn read(path: &Path, origin: &Origin) -> Result<(Index, u64), SnapshotError> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SnapshotError::Missing(path.to_path_buf()),
        _ => io("open", path)(e),
    })?;
    let found = file.metadata().map_err(io("read", path))?.len();
    let mut head = [0; HEADER_LEN];
    file.read_exact(&mut head).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Length {
            expected: HEADER_LEN as u64,
            found,
        },
        _ => io("read", path)(e),
    })?;
    let header = Header::decode(&head, path)?;
    header.check(origin)?;
    let expected = (HEADER_LEN as u64).saturating_add(header.body_len());
    if found != expected {
        return Err(SnapshotError::Length { expected, found });
    }
    let mut body = Vec::with_capacity(usize::try_from(header.body_len()).unwrap_or(0));
    file.read_to_end(&mut body).map_err(io("read", path))?;
    if body.len() as u64 != header.body_len() {
        return Err(SnapshotError::Length {
            expected,
            found: HEADER_LEN as u64 + body.len() as u64,
        });
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&body);
    if header.checksum_with(&crc) != header.checksum {
        return Err(SnapshotError::Checksum);
    }
    let index = body::read(&body, &header.sections)?;
    Ok((index, header.position))
}

/// `bytes` of a snapshot with its checksum made right again, as if
/// whatever changed them had been written so.
#[cfg(test)]
pub fn resealed(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= HEADER_LEN {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..HEADER_LEN - 4]);
        crc.update(&bytes[HEADER_LEN..]);
        bytes[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.finalize().to_le_bytes());
    }
    bytes
}

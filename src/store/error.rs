//! Errors of the store.

use std::io;
use std::path::PathBuf;

use crate::nix::export::ExportError;
use crate::nix::hash::NarHash;
use crate::nix::nar::NarError;
use crate::nix::narinfo::{NarInfoError, PathInfo};
use crate::nix::store_path::{StorePath, StorePathError};

/// Errors of the store. Each variant's text stands alone: a wrapped error's text is part of
/// it, and it is not also exposed as a `source` (which would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A Git operation failed.
    #[error("git: {}", .0.message())]
    Git(git2::Error),
    /// Reading or writing a stream failed.
    #[error("{0}")]
    Io(io::Error),
    /// The NAR is malformed or truncated.
    #[error(transparent)]
    Nar(NarError),
    /// An export stream is malformed or truncated.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// No repository at the path.
    #[error("no Grove store at {0} (run 'grove init' first)")]
    NotAStore(PathBuf),
    /// The path is not in the store.
    #[error("{0} is not in the store")]
    Unknown(String),
    /// Not a store path nor a hash part.
    #[error(transparent)]
    BadPath(#[from] StorePathError),
    /// The NAR's hash differs from the one claimed for it.
    #[error("NAR hash mismatch for {path}: expected {expected}, got {actual}")]
    HashMismatch {
        /// The path.
        path: StorePath,
        /// What its metadata claims.
        expected: NarHash,
        /// What its NAR hashes to.
        actual: NarHash,
    },
    /// The NAR's size differs from the one claimed for it.
    #[error("NAR size mismatch for {path}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The path.
        path: StorePath,
        /// What its metadata claims.
        expected: u64,
        /// The NAR's size.
        actual: u64,
    },
    /// A (possibly compressed) NAR file that does not match its narinfo's FileHash/FileSize,
    /// has trailing data, or names a compression Grove cannot read.
    #[error("{0}")]
    BadFile(String),
    /// A reference is neither in the store nor earlier in the same import.
    #[error("{path} refers to {reference}, which is not in the store; add it first")]
    MissingReference {
        /// The path.
        path: StorePath,
        /// Its missing reference.
        reference: StorePath,
    },
    /// A path whose hash the store (or the batch) holds under another name.
    #[error("{wanted} names {existing} by another name")]
    NameMismatch {
        /// The path asked for.
        wanted: StorePath,
        /// The path with that hash.
        existing: StorePath,
    },
    /// A NAR or NAR file larger than allowed (by its NarSize, or by the upload limit).
    #[error("NAR larger than {0} bytes")]
    TooLarge(u64),
    /// The disk is full: nothing more can be written until space is freed.
    #[error("no space left on device ({0})")]
    NoSpace(String),
    /// Stored data that does not have Grove's layout.
    #[error("corrupt store entry {0}: {1}")]
    Corrupt(String, String),
    /// Stored metadata that does not parse.
    #[error("corrupt metadata of {0}: {1}")]
    BadMetadata(String, NarInfoError),
}

/// Whether an error's text says the disk is full (libgit2 reports the OS error in words).
fn says_disk_full(text: &str) -> bool {
    text.contains("No space left on device")
}

impl From<git2::Error> for StoreError {
    fn from(e: git2::Error) -> Self {
        if says_disk_full(e.message()) {
            StoreError::NoSpace(e.message().to_string())
        } else {
            StoreError::Git(e)
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::StorageFull || says_disk_full(&e.to_string()) {
            StoreError::NoSpace(e.to_string())
        } else if e.kind() == io::ErrorKind::InvalidData {
            StoreError::BadFile(e.to_string())
        } else {
            StoreError::Io(e)
        }
    }
}

impl From<NarError> for StoreError {
    fn from(e: NarError) -> Self {
        match e {
            NarError::Io(io) => io.into(),
            NarError::Sink(why) if says_disk_full(&why) => StoreError::NoSpace(why),
            e => StoreError::Nar(e),
        }
    }
}

/// Checks a NAR's hash and size against a path's metadata.
pub fn check_nar(info: &PathInfo, actual: NarHash, size: u64) -> Result<(), StoreError> {
    let path = &info.path;
    if actual != info.nar_hash {
        return Err(StoreError::HashMismatch {
            path: path.clone(),
            expected: info.nar_hash,
            actual,
        });
    }
    if size != info.nar_size {
        return Err(StoreError::SizeMismatch {
            path: path.clone(),
            expected: info.nar_size,
            actual: size,
        });
    }
    Ok(())
}

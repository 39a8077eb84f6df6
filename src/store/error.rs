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
    Nar(#[from] NarError),
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
    /// Stored data that does not have Grove's layout.
    #[error("corrupt store entry {0}: {1}")]
    Corrupt(String, String),
    /// Stored metadata that does not parse.
    #[error("corrupt metadata of {0}: {1}")]
    BadMetadata(String, NarInfoError),
}

impl From<git2::Error> for StoreError {
    fn from(e: git2::Error) -> Self {
        StoreError::Git(e)
    }
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Io(e)
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

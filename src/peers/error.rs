//! Why a peer was skipped.

use std::time::Duration;

use crate::store::StoreError;

/// Why a peer was skipped.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// An HTTP request failed (connection, timeout, status).
    #[error("{0}: {1}")]
    Http(String, String),
    /// A git command failed.
    #[error("git with {0}: {1}")]
    Git(String, String),
    /// The peer took longer than allowed.
    #[error("{0}: no answer within {1:?}")]
    Timeout(String, Duration),
    /// No trusted key signed the path.
    #[error("{0} has no valid signature by a trusted key")]
    Signature(String),
    /// The peer sent something malformed or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// Storing failed (including NarHash/NarSize mismatches).
    #[error(transparent)]
    Store(#[from] StoreError),
}

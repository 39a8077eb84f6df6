//! What every endpoint shares.

use crate::read::ReadPath;

use super::pending::Pending;

/// What the server needs besides the store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `Priority` in `/nix-cache-info`.
    pub priority: u32,
    /// Token required for reads, if any.
    pub read_token: Option<String>,
    /// Token required for uploads; without one, uploads are refused.
    pub write_token: Option<String>,
}

/// The server's shared state: the read path, the options and the uploads waiting for their
/// narinfo.
pub struct Server {
    pub read: ReadPath,
    pub options: Options,
    pub uploads: Pending,
}

//! What every endpoint shares.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::read::ReadPath;

use super::pending::Pending;

/// What the server needs besides the store.
#[derive(Debug, Clone)]
pub struct Options {
    /// `Priority` in `/nix-cache-info`.
    pub priority: u32,
    /// Token required for reads, if any.
    pub read_token: Option<String>,
    /// Token required for uploads; without one, uploads are refused.
    pub write_token: Option<String>,
    /// Largest NAR an upload may carry, uncompressed.
    pub max_upload_bytes: u64,
    /// How long a request body may pause before the request is answered 408; also how long a
    /// client may take to send a request's headers, and to take each part of a response.
    pub io_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            priority: 40,
            read_token: None,
            write_token: None,
            max_upload_bytes: 64 << 30,
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// At most this many response chunks are made at once (of tokio's 512 blocking threads).
const CHUNK_MAKERS: usize = 64;

/// At most this many `git http-backend` processes run at once; more requests wait.
const GIT_PROCESSES: usize = 8;

/// The server's shared state: the read path, the options, the uploads waiting for their
/// narinfo, and the limits on expensive work.
pub struct Server {
    /// The one read path.
    pub read: ReadPath,
    /// Options.
    pub options: Options,
    /// Uploaded NARs waiting for their narinfo.
    pub uploads: Pending,
    /// Permits for `git http-backend` processes.
    pub git_processes: Arc<Semaphore>,
    /// Permits for NARs compressed on the fly (one per core).
    pub compressors: Arc<Semaphore>,
    /// Permits for making a chunk of a response body on the blocking pool.
    pub chunk_makers: Arc<Semaphore>,
}

impl Server {
    /// The state for serving `read`.
    pub fn state(read: ReadPath, options: Options) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Server {
            read,
            options,
            uploads: Pending::default(),
            git_processes: Arc::new(Semaphore::new(GIT_PROCESSES)),
            compressors: Arc::new(Semaphore::new(cores)),
            chunk_makers: Arc::new(Semaphore::new(CHUNK_MAKERS)),
        }
    }
}

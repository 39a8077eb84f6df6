//! `grove serve`: the Nix binary-cache HTTP protocol over the read path.
//!
//! Routes, one file each: `/nix-cache-info` ([`cache_info`]), `/<hash>.narinfo` ([`narinfo`]),
//! `/nar/<hash>.nar[.zst|.xz]` ([`nar`]), `/<hash>.ls` ([`listing`]), `PUT` of NARs and narinfo
//! ([`upload`]), the repository over Git smart HTTP under `/git/` ([`git`]) and the log of
//! added paths that read replicas follow (`/git/grove-paths.log`, [`paths_log`]). Tokens are
//! checked in [`auth`]; refusals map to statuses in [`error`]. Git work runs on tokio's
//! blocking pool; bodies flow through bounded channels, so memory per request does not grow
//! with the NAR.

mod auth;
mod body;
mod cache_info;
pub mod error;
mod git;
mod listing;
mod nar;
mod narinfo;
mod paths_log;
pub mod pending;
pub mod range;
mod request;
mod state;
pub mod upload;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::nix::cache_file::{CacheFile, CacheFileError};
use crate::read::ReadPath;
use body::Body;
use error::Reject;
pub use state::{Options, Server};

impl Server {
    /// A server over `read`.
    pub fn new(read: ReadPath, options: Options) -> Arc<Self> {
        Arc::new(Server::state(read, options))
    }

    /// Serves connections from `listener` until `shutdown` completes.
    ///
    /// Each connection costs a file descriptor, so at most [`connection_cap`] are open at once
    /// (a new one is accepted when another closes). A connection that sends no complete request
    /// headers within the I/O timeout, idle ones included, is closed, and so is one whose client
    /// takes no response bytes for that long: a client cannot hold a connection, a thread or
    /// more than a chunk of memory by doing nothing.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let slots = Arc::new(tokio::sync::Semaphore::new(connection_cap()));
        let mut backoff = AcceptBackoff::default();
        loop {
            let slot = tokio::select! {
                _ = &mut shutdown => return,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => { backoff.reset(); a }
                    Err(e) => { backoff.wait(&e).await; continue; }
                },
            };
            // Responses go out as a header write and body writes; without this, Nagle's
            // algorithm holds a small body back until the client's delayed ACK (~40 ms).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY for {peer}: {e}");
            }
            let timeout = self.options.io_timeout;
            let mut io = tokio_io_timeout::TimeoutStream::new(stream);
            io.set_write_timeout(Some(timeout));
            let server = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| server.clone().handle(req, peer));
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(timeout)
                    .serve_connection(hyper_util::rt::TokioIo::new(Box::pin(io)), service);
                if let Err(e) = conn.await {
                    tracing::debug!("connection from {peer}: {e}");
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, Infallible> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let resp = self.route(req).await.unwrap_or_else(Reject::response);
        tracing::debug!("{peer} {method} {path} {}", resp.status().as_u16());
        Ok(resp)
    }

    /// The routing table: checks tokens, then hands the request to its endpoint.
    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Reject> {
        let method = req.method().clone();
        let path = req.uri().path().trim_start_matches('/').to_string();
        if method == Method::PUT {
            let Some(token) = self.options.write_token.as_deref() else {
                return Err(Reject::Forbidden("uploads are disabled: set server.write_token".into()));
            };
            if !auth::authorized(&req, Some(token)) {
                return Err(Reject::Unauthorized);
            }
            return match CacheFile::parse(&path) {
                Ok(CacheFile::Nar(file)) => upload::put_nar(self, file, req).await,
                Ok(CacheFile::NarInfo(hash)) => upload::put_narinfo(self, hash, req).await,
                Err(CacheFileError::Compression(e)) => {
                    Err(Reject::Unsupported(format!("unsupported NAR compression: {e}")))
                }
                Err(e @ (CacheFileError::BadHash(_) | CacheFileError::BadNarName(_))) => {
                    Err(Reject::Bad(e.to_string()))
                }
                Ok(CacheFile::CacheInfo | CacheFile::Listing(_)) | Err(CacheFileError::Unknown(_)) => {
                    Err(Reject::NotFound(format!("cannot upload to /{path}")))
                }
            };
        }
        let is_git = path == "git" || path.starts_with("git/");
        if method != Method::GET && method != Method::HEAD && !(is_git && method == Method::POST) {
            return Err(Reject::Method);
        }
        let opts = &self.options;
        let may_read = auth::authorized(&req, opts.read_token.as_deref())
            || opts
                .write_token
                .as_deref()
                .is_some_and(|w| auth::authorized(&req, Some(w)));
        if !may_read {
            return Err(Reject::Unauthorized);
        }
        if path == "git/grove-paths.log" && method != Method::POST {
            return paths_log::get(self, &method, &req).await;
        }
        if is_git {
            return git::serve(self, req).await;
        }
        match CacheFile::parse(&path) {
            Ok(CacheFile::CacheInfo) => Ok(cache_info::get(&self, &method)),
            Ok(CacheFile::NarInfo(hash)) => narinfo::get(self, &method, hash, &req).await,
            Ok(CacheFile::Listing(hash)) => listing::get(self, &method, hash, &req).await,
            Ok(CacheFile::Nar(file)) => nar::get(self, &method, file, &req).await,
            Err(CacheFileError::BadHash(e)) => Err(Reject::Bad(format!("not a store path hash: {e}"))),
            Err(CacheFileError::BadNarName(_) | CacheFileError::Compression(_)) => {
                Err(Reject::NotFound(format!("no such NAR: /{path}")))
            }
            Err(CacheFileError::Unknown(_)) => Err(Reject::NotFound(format!("no such resource: /{path}"))),
        }
    }
}

/// File descriptors kept free for everything but connections (Git, peers, logs).
const RESERVED_FDS: u64 = 256;

/// How many connections may be open at once: the soft open-files limit less a reserve.
fn connection_cap() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    };
    soft.saturating_sub(RESERVED_FDS).clamp(16, 1 << 20) as usize
}

/// Waits after failed accepts (out of file descriptors, say), longer each time up to a second,
/// and logs at most once a second.
#[derive(Default)]
struct AcceptBackoff {
    delay: std::time::Duration,
    last_log: Option<std::time::Instant>,
    failures: u64,
}

impl AcceptBackoff {
    async fn wait(&mut self, e: &std::io::Error) {
        self.failures += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
        {
            tracing::warn!("accept failed ({} times since the last report): {e}", self.failures);
            self.last_log = Some(std::time::Instant::now());
            self.failures = 0;
        }
        self.delay = (self.delay * 2).clamp(std::time::Duration::from_millis(5), std::time::Duration::from_secs(1));
        tokio::time::sleep(self.delay).await;
    }

    fn reset(&mut self) {
        self.delay = std::time::Duration::ZERO;
    }
}

/// Runs the server on `addr` until SIGINT or SIGTERM; `on_bound` is told the bound address.
pub fn run(read: ReadPath, options: Options, addr: &str, on_bound: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        on_bound(listener.local_addr()?);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            eprintln!("shutting down");
        };
        Server::new(read, options).serve(listener, shutdown).await;
        Ok(())
    })
}

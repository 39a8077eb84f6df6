//! Lazy read-through: a path the store lacks is asked of the peers in order (Git remotes, then
//! HTTP upstreams), stored, and then served as if it had been there.
//!
//! Concurrent requests for one missing path share one fetch (single-flight); a path no peer had
//! is not asked for again until `store.negative_ttl_s` passes (an LRU negative cache), because
//! Nix asks for many paths a cache does not have.

pub mod error;
pub mod follow;
pub mod git;
pub mod http;
mod parallel;
pub mod via;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::{Condvar, Mutex};

pub use error::PeerError;
pub use via::VIA_HEADER;

use crate::config::StoreConfig;
use crate::nix::store_path::{StoreHash, StorePath};
use crate::store::Store;
use git::GitRemote;
use http::Upstream;

/// How many absent paths the negative cache remembers.
const NEGATIVE_ENTRIES: NonZeroUsize = NonZeroUsize::MIN.saturating_add(65_535);

/// One peer.
pub enum Peer {
    /// Another Grove repository.
    Git(GitRemote),
    /// A Nix binary cache.
    Http(Upstream),
}

impl Peer {
    /// The peer's URL.
    pub fn url(&self) -> &str {
        match self {
            Peer::Git(g) => g.url(),
            Peer::Http(u) => u.url(),
        }
    }

    /// Fetches a path with its closure: the paths added, or `None` if the peer lacks it. `via`
    /// is sent on to HTTP upstreams.
    fn fetch(&self, store: &Store, hash: &StoreHash, via: &str) -> Result<Option<Vec<StorePath>>, PeerError> {
        match self {
            Peer::Git(g) => Ok(g.fetch_path(store, hash)?.map(|adopted| {
                for (path, local, theirs) in &adopted.conflicts {
                    tracing::warn!(
                        "{path}: peer {} has commit {theirs}, this store {local}; kept ours",
                        g.url()
                    );
                }
                adopted.added
            })),
            Peer::Http(u) => u.fetch(store, hash, via),
        }
    }
}

/// One fetch in progress; others asking for the same path wait for its outcome.
#[derive(Default)]
struct Flight {
    done: Mutex<Option<bool>>,
    finished: Condvar,
}

/// Ends a flight when dropped: records its outcome, wakes the waiters, forgets the flight.
struct Landing<'p> {
    peers: &'p Peers,
    hash: StoreHash,
    flight: Arc<Flight>,
    found: bool,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        *self.flight.done.lock() = Some(self.found);
        self.flight.finished.notify_all();
        self.peers.inflight.lock().remove(&self.hash);
    }
}

/// The peers of one store.
pub struct Peers {
    id: String,
    store: PathBuf,
    peers: Vec<Peer>,
    negative_ttl: Duration,
    inflight: Mutex<HashMap<StoreHash, Arc<Flight>>>,
    absent: Mutex<LruCache<StoreHash, Instant>>,
    fetches: AtomicU64,
    turns: Turns,
}

/// At most this many different paths are fetched from peers at once; more wait their turn.
const FETCHES_AT_ONCE: usize = 4;

/// A counting semaphore for blocking threads (std has none; the read path is synchronous).
struct Turns {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A turn taken from [`Turns`], given back when dropped.
struct Turn<'t>(&'t Turns);

impl Turns {
    fn new(n: usize) -> Self {
        Turns {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn take(&self) -> Turn<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
        Turn(self)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

impl Peers {
    /// The peers `config` lists for the store at `store`.
    pub fn from_config(store: &Path, config: &StoreConfig) -> Result<Self, PeerError> {
        let timeout = Some(Duration::from_secs(config.remote_timeout_s.max(1)));
        let mut peers: Vec<Peer> = config
            .remotes
            .iter()
            .map(|url| Peer::Git(GitRemote::new(url, timeout, config.ssh_key_path())))
            .collect();
        for up in &config.upstreams {
            peers.push(Peer::Http(Upstream::new(up)?));
        }
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| PeerError::Config(format!("no randomness for an instance id: {e}")))?;
        Ok(Peers {
            id: data_encoding::HEXLOWER.encode(&id),
            store: store.to_path_buf(),
            peers,
            negative_ttl: Duration::from_secs(config.negative_ttl_s),
            inflight: Mutex::new(HashMap::new()),
            absent: Mutex::new(LruCache::new(NEGATIVE_ENTRIES)),
            fetches: AtomicU64::new(0),
            turns: Turns::new(FETCHES_AT_ONCE),
        })
    }

    /// This process's instance id, as it appears in [`VIA_HEADER`].
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether there is no peer at all.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// How many times the peers were asked for a path (after single-flight and negative cache).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Whether a request that passed through the Groves in `via` (a [`VIA_HEADER`] value) came
    /// from this one: then it must not be fetched from the peers again.
    pub fn is_loop(&self, via: &str) -> bool {
        via::is_loop(via, &self.id)
    }

    /// Makes a missing path present if a peer has it; returns whether it is present now.
    /// Failures are logged, never returned: a peer's trouble is a miss to the caller. `via` is
    /// the [`VIA_HEADER`] of the request that asked ("" if none).
    pub fn fetch(&self, hash: &StoreHash, via: &str) -> bool {
        if self.peers.is_empty() || self.is_loop(via) {
            return false;
        }
        if let Some(since) = self.absent.lock().get(hash) {
            if since.elapsed() < self.negative_ttl {
                return false;
            }
        }
        let (flight, leader) = {
            let mut inflight = self.inflight.lock();
            match inflight.get(hash) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    inflight.insert(*hash, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut done = flight.done.lock();
            while done.is_none() {
                flight.finished.wait(&mut done);
            }
            return done.unwrap_or(false);
        }
        // Waiters are released however the fetch ends, a panic included.
        let mut landing = Landing {
            peers: self,
            hash: *hash,
            flight,
            found: false,
        };
        landing.found = {
            let _turn = self.turns.take();
            self.fetch_now_via(hash, via).is_some()
        };
        if landing.found {
            self.absent.lock().pop(hash);
        } else if !self.negative_ttl.is_zero() {
            self.absent.lock().put(*hash, Instant::now());
        }
        landing.found
    }

    /// Asks each peer in turn, bypassing the negative cache; returns the paths added by the
    /// first peer that had it (empty if it was present already), or `None`.
    pub fn fetch_now(&self, hash: &StoreHash) -> Option<Vec<StorePath>> {
        self.fetch_now_via(hash, "")
    }

    fn fetch_now_via(&self, hash: &StoreHash, via: &str) -> Option<Vec<StorePath>> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let via = via::extend(via, &self.id);
        let store = match Store::open(&self.store) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot open the store to fetch {hash}: {e}");
                return None;
            }
        };
        if matches!(store.get(hash), Ok(Some(_))) {
            return Some(Vec::new());
        }
        tracing::info!("fetching {hash} from peers");
        for peer in &self.peers {
            let start = Instant::now();
            match peer.fetch(&store, hash, &via) {
                Ok(Some(_)) if !matches!(store.get(hash), Ok(Some(_))) => {
                    tracing::warn!("skipping peer {} for {hash}: what it sent is not that path", peer.url());
                }
                Ok(Some(added)) => {
                    tracing::info!(
                        "fetched {hash} from {}: {} new paths in {:.3}s",
                        peer.url(),
                        added.len(),
                        start.elapsed().as_secs_f64()
                    );
                    return Some(added);
                }
                Ok(None) => tracing::debug!("{} does not have {hash}", peer.url()),
                Err(e) => tracing::warn!("skipping peer {} for {hash}: {e}", peer.url()),
            }
        }
        tracing::info!("no peer has {hash}");
        None
    }
}

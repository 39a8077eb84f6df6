//! The one read path: every front end (HTTP, FUSE, CLI) resolves store paths, narinfo, NARs and
//! NAR byte ranges here, on pooled Git handles.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use crate::layout::NarLayout;
use crate::listing::NarListing;
use crate::narinfo::NarInfo;
use crate::peers::Peers;
use crate::signing::SecretKey;
use crate::store::{Entry, Store, StoreError};
use crate::store_path::StoreHash;

/// How served NARs are compressed (what narinfo advertises).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain NARs, with `Content-Length` and byte ranges.
    #[default]
    None,
    /// zstd-compressed NARs (`.nar.zst`).
    Zstd,
    /// xz-compressed NARs (`.nar.xz`).
    Xz,
}

impl Compression {
    /// The narinfo `Compression` value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }

    /// The file extension after `.nar`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Zstd => ".zst",
            Compression::Xz => ".xz",
        }
    }

    /// The compression a NAR URL's extension names.
    pub fn from_extension(ext: &str) -> Option<Self> {
        [Compression::None, Compression::Zstd, Compression::Xz]
            .into_iter()
            .find(|c| c.extension() == ext)
    }
}

/// How many signed narinfo texts are kept.
const NARINFO_CACHE_ENTRIES: usize = 65_536;
/// How many NAR layouts are kept.
const LAYOUT_CACHE_ENTRIES: usize = 4096;

/// Shared, thread-safe access to one store.
///
/// Store paths never change once added, so what is derived from them (signed narinfo, whole
/// NARs) is kept in bounded LRU caches; a path added later is simply not cached yet.
pub struct ReadPath {
    path: PathBuf,
    handles: Mutex<Vec<Store>>,
    key: Option<SecretKey>,
    compression: Compression,
    narinfos: Mutex<LruCache<StoreHash, Bytes>>,
    layouts: Mutex<LruCache<StoreHash, Arc<NarLayout>>>,
    nars: Mutex<ByteLru<StoreHash>>,
    blobs: Mutex<ByteLru<git2::Oid>>,
    peers: Option<Arc<Peers>>,
}

/// Byte strings by key within a byte budget, least recently used first out.
struct ByteLru<K: std::hash::Hash + Eq> {
    lru: LruCache<K, Bytes>,
    bytes: usize,
    budget: usize,
}

impl<K: std::hash::Hash + Eq> ByteLru<K> {
    fn new(budget: usize) -> Self {
        ByteLru {
            lru: LruCache::unbounded(),
            bytes: 0,
            budget,
        }
    }

    fn get(&mut self, key: &K) -> Option<Bytes> {
        self.lru.get(key).cloned()
    }

    fn insert(&mut self, key: K, value: Bytes) {
        if !self.fits(value.len() as u64) || self.lru.contains(&key) {
            return;
        }
        while self.bytes + value.len() > self.budget {
            match self.lru.pop_lru() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
        self.bytes += value.len();
        self.lru.put(key, value);
    }

    /// Whether a value of `size` bytes may be kept: at most a quarter of the budget.
    fn fits(&self, size: u64) -> bool {
        size <= (self.budget / 4) as u64
    }
}

/// Default memory for blob contents read through [`ReadPath::blob`].
pub const DEFAULT_BLOB_CACHE: usize = 256 << 20;

impl ReadPath {
    /// Opens the store at `path`; narinfo is signed with `key` and advertises `compression`.
    pub fn open(path: &Path, key: Option<SecretKey>, compression: Compression) -> Result<Self, StoreError> {
        let first = Store::open(path)?;
        let entries = NonZeroUsize::new(NARINFO_CACHE_ENTRIES).expect("non-zero");
        Ok(ReadPath {
            path: path.to_path_buf(),
            handles: Mutex::new(vec![first]),
            key,
            compression,
            narinfos: Mutex::new(LruCache::new(entries)),
            layouts: Mutex::new(LruCache::new(
                NonZeroUsize::new(LAYOUT_CACHE_ENTRIES).expect("non-zero"),
            )),
            nars: Mutex::new(ByteLru::new(0)),
            blobs: Mutex::new(ByteLru::new(DEFAULT_BLOB_CACHE)),
            peers: None,
        })
    }

    /// Keeps up to `bytes` of whole NARs in memory (0, the default, keeps none).
    pub fn with_nar_cache(self, bytes: usize) -> Self {
        self.nars.lock().expect("poisoned").budget = bytes;
        self
    }

    /// Fetches paths the store lacks from `peers` (unless there are none).
    pub fn with_peers(mut self, peers: Arc<Peers>) -> Self {
        self.peers = (!peers.is_empty()).then_some(peers);
        self
    }

    /// The peers missing paths are fetched from, if any.
    pub fn peers(&self) -> Option<&Arc<Peers>> {
        self.peers.as_ref()
    }

    /// The store's repository directory.
    pub fn store_dir(&self) -> &Path {
        &self.path
    }

    /// The signing key, if the store has one.
    pub fn key(&self) -> Option<&SecretKey> {
        self.key.as_ref()
    }

    /// Runs `f` on a Git handle from the pool (opening one only when all are busy).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let store = self.handles.lock().expect("pool poisoned").pop();
        let store = match store {
            Some(s) => s,
            None => Store::open(&self.path)?,
        };
        let result = f(&store);
        self.handles.lock().expect("pool poisoned").push(store);
        result
    }

    /// Looks a path up; one the store lacks is fetched from the peers (blocking until then).
    pub fn entry(&self, hash: &StoreHash) -> Result<Option<Entry>, StoreError> {
        self.entry_via(hash, "")
    }

    /// [`ReadPath::entry`] for a request that passed through the Groves in `via` (the
    /// [`crate::peers::VIA_HEADER`] value): a request that came from this Grove is answered
    /// from the store alone.
    pub fn entry_via(&self, hash: &StoreHash, via: &str) -> Result<Option<Entry>, StoreError> {
        if let Some(entry) = self.with_store(|s| s.get(hash))? {
            return Ok(Some(entry));
        }
        match &self.peers {
            Some(peers) if peers.fetch(hash, via) => self.with_store(|s| s.get(hash)),
            _ => Ok(None),
        }
    }

    /// The signed narinfo of a path, pointing at the NAR URL this cache serves.
    pub fn narinfo(&self, hash: &StoreHash) -> Result<Option<NarInfo>, StoreError> {
        self.narinfo_via(hash, "")
    }

    fn narinfo_via(&self, hash: &StoreHash, via: &str) -> Result<Option<NarInfo>, StoreError> {
        Ok(self
            .entry_via(hash, via)?
            .map(|e| narinfo_for(e, self.key.as_ref(), self.compression)))
    }

    /// The rendered signed narinfo if it is cached (no Git access).
    pub fn cached_narinfo_text(&self, hash: &StoreHash) -> Option<Bytes> {
        self.narinfos.lock().expect("poisoned").get(hash).cloned()
    }

    /// The rendered signed narinfo, from the cache or from Git.
    pub fn narinfo_text(&self, hash: &StoreHash) -> Result<Option<Bytes>, StoreError> {
        self.narinfo_text_via(hash, "")
    }

    /// [`ReadPath::narinfo_text`] for a request that passed through the Groves in `via`.
    pub fn narinfo_text_via(&self, hash: &StoreHash, via: &str) -> Result<Option<Bytes>, StoreError> {
        if let Some(text) = self.cached_narinfo_text(hash) {
            return Ok(Some(text));
        }
        let Some(ni) = self.narinfo_via(hash, via)? else {
            return Ok(None);
        };
        let text = Bytes::from(ni.render());
        self.narinfos.lock().expect("poisoned").put(*hash, text.clone());
        Ok(Some(text))
    }

    /// A path's whole NAR if it is cached.
    pub fn cached_nar(&self, hash: &StoreHash) -> Option<Bytes> {
        self.nars.lock().expect("poisoned").get(hash)
    }

    /// Whether a NAR of `size` bytes would be kept by [`ReadPath::remember_nar`].
    pub fn nar_cacheable(&self, size: u64) -> bool {
        self.nars.lock().expect("poisoned").fits(size)
    }

    /// Keeps a path's whole NAR (as synthesised by [`ReadPath::write_nar_range`]).
    pub fn remember_nar(&self, hash: StoreHash, nar: Bytes) {
        self.nars.lock().expect("poisoned").insert(hash, nar);
    }

    /// The NAR layout of a path (cached).
    pub fn layout(&self, entry: &Entry) -> Result<Arc<NarLayout>, StoreError> {
        let hash = entry.info.path.hash();
        if let Some(l) = self.layouts.lock().expect("poisoned").get(&hash) {
            return Ok(l.clone());
        }
        let layout = Arc::new(self.with_store(|s| s.nar_layout(&entry.root))?);
        self.layouts.lock().expect("poisoned").put(hash, layout.clone());
        Ok(layout)
    }

    /// Writes bytes `start..end` of a path's NAR to `out`, reading only the blobs they cover.
    pub fn write_nar_range(&self, entry: &Entry, start: u64, end: u64, out: &mut dyn Write) -> Result<(), StoreError> {
        let layout = self.layout(entry)?;
        self.with_store(|s| s.write_nar_range(&layout, start, end, out))
    }

    /// A blob's contents, inflated once and kept while the blob cache has room (a blob larger
    /// than a quarter of it is read anew each time: hold on to the result).
    pub fn blob(&self, oid: git2::Oid) -> Result<Bytes, StoreError> {
        if let Some(b) = self.blobs.lock().expect("poisoned").get(&oid) {
            return Ok(b);
        }
        let bytes = self.with_store(|s| Ok(Bytes::copy_from_slice(s.repo().find_blob(oid)?.content())))?;
        self.blobs.lock().expect("poisoned").insert(oid, bytes.clone());
        Ok(bytes)
    }

    /// Up to `size` bytes of a path's NAR from `offset`, with file contents from the blob cache.
    /// `pinned` keeps the last blob read, so sequential reads through a file too large for the
    /// cache inflate it once, not once per read.
    pub fn read_nar_at(
        &self,
        entry: &Entry,
        offset: u64,
        size: u64,
        pinned: &mut Option<(git2::Oid, Bytes)>,
    ) -> Result<Vec<u8>, StoreError> {
        let layout = self.layout(entry)?;
        let end = offset.saturating_add(size).min(layout.size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        if offset < end {
            layout.copy_range(offset, end, &mut out, |oid, _, from, to, out| {
                let bytes = match pinned {
                    Some((pinned_oid, bytes)) if *pinned_oid == oid => bytes.clone(),
                    _ => {
                        let bytes = self.blob(oid)?;
                        *pinned = Some((oid, bytes.clone()));
                        bytes
                    }
                };
                out.write_all(&bytes[from as usize..to as usize])?;
                Ok::<_, StoreError>(())
            })?;
        }
        Ok(out)
    }

    /// The `.ls` listing of a path.
    pub fn listing(&self, entry: &Entry) -> Result<NarListing, StoreError> {
        self.with_store(|s| s.listing(&entry.root))
    }
}

/// The narinfo served for a path: its NAR at `nar/<hash>.nar[.ext]`, signed with `key` if given
/// (other signatures kept).
pub fn narinfo_for(entry: Entry, key: Option<&SecretKey>, compression: Compression) -> NarInfo {
    let mut info = entry.info;
    if let Some(key) = key {
        info.sign(key);
    }
    let plain = compression == Compression::None;
    NarInfo {
        url: Some(format!("nar/{}.nar{}", info.path.hash(), compression.extension())),
        compression: Some(compression.name().into()),
        file_hash: plain.then_some(info.nar_hash),
        file_size: plain.then_some(info.nar_size),
        info,
    }
}

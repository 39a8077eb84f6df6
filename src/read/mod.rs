//! The one read path: every front end (HTTP, FUSE, CLI) resolves store paths, narinfo, NARs,
//! NAR byte ranges, listings and directory entries here, on pooled Git handles, with
//! read-through from the peers.
//!
//! Store paths never change once added, so what is derived from them (signed narinfo, NAR
//! layouts, whole NARs, blobs) is kept in bounded LRU caches; a path added later is simply not
//! cached yet.

mod byte_lru;

use std::collections::HashMap;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use crate::nix::cache_file::NarFile;
use crate::nix::compression::Compression;
use crate::nix::export;
use crate::nix::listing::NarListing;
use crate::nix::narinfo::NarInfo;
use crate::nix::signing::SecretKey;
use crate::nix::store_path::{parse_spec, StoreHash, StorePath};
use crate::peers::Peers;
use crate::store::layout::NarLayout;
use crate::store::{BlobStream, Entry, ObjectId, PathIndex, Root, Store, StoreError};
use byte_lru::ByteLru;

/// Memory for signed narinfo texts (about 110,000 of them).
const NARINFO_CACHE_BYTES: usize = 64 << 20;
/// How many NAR layouts are kept.
const LAYOUT_CACHE_ENTRIES: NonZeroUsize = NonZeroUsize::MIN.saturating_add(4095);

/// Default memory for blob contents read through [`ReadPath::blob`].
pub const DEFAULT_BLOB_CACHE: usize = 256 << 20;

/// Where a reader of one NAR is: the blob it read last (shared with the blob cache) and the
/// stream of a blob too large for the cache, so that sequential reads never inflate a blob twice.
#[derive(Default)]
pub struct NarCursor {
    pinned: Option<(ObjectId, Bytes)>,
    stream: Option<(BlobStream, u64)>,
}

/// Shared, thread-safe access to one store.
pub struct ReadPath {
    path: PathBuf,
    handles: Mutex<Vec<Store>>,
    key: Option<SecretKey>,
    compression: Compression,
    narinfos: Mutex<ByteLru<StoreHash>>,
    layouts: Mutex<LruCache<StoreHash, Arc<NarLayout>>>,
    nars: Mutex<ByteLru<StoreHash>>,
    /// Bytes held by responses copying a whole NAR for `nars` right now.
    nar_copies: AtomicU64,
    blobs: Mutex<ByteLru<ObjectId>>,
    /// Blobs being inflated now: a second reader of the same blob waits for the first.
    loading: Mutex<HashMap<ObjectId, Arc<Mutex<()>>>>,
    peers: Option<Arc<Peers>>,
    /// Every hash the store holds, so that misses never reach Git (long-running front ends
    /// only: building it reads every ref).
    index: Option<Mutex<PathIndex>>,
}

impl ReadPath {
    /// Opens the store at `path`; narinfo is signed with `key` and advertises `compression`.
    pub fn open(path: &Path, key: Option<SecretKey>, compression: Compression) -> Result<Self, StoreError> {
        let first = Store::open(path)?;
        Ok(ReadPath {
            path: path.to_path_buf(),
            handles: Mutex::new(vec![first]),
            key,
            compression,
            narinfos: Mutex::new(ByteLru::new(NARINFO_CACHE_BYTES)),
            layouts: Mutex::new(LruCache::new(LAYOUT_CACHE_ENTRIES)),
            nars: Mutex::new(ByteLru::new(0)),
            nar_copies: AtomicU64::new(0),
            blobs: Mutex::new(ByteLru::new(DEFAULT_BLOB_CACHE)),
            loading: Mutex::new(HashMap::new()),
            peers: None,
            index: None,
        })
    }

    /// Keeps up to `bytes` of whole NARs in memory (0, the default, keeps none).
    pub fn with_nar_cache(self, bytes: usize) -> Self {
        self.nars.lock().set_budget(bytes);
        self
    }

    /// Keeps an index of every hash the store holds in memory, so that a path the store lacks
    /// is answered without Git (for servers: building it reads every ref once).
    pub fn with_index(mut self) -> Result<Self, StoreError> {
        let index = self.with_store(|s| s.path_index())?;
        self.index = Some(Mutex::new(index));
        Ok(self)
    }

    /// Fetches paths the store lacks from `peers` (unless there are none).
    pub fn with_peers(mut self, peers: Arc<Peers>) -> Self {
        self.peers = (!peers.is_empty()).then_some(peers);
        self
    }

    /// The store's repository directory.
    pub fn store_dir(&self) -> &Path {
        &self.path
    }

    /// The compression narinfo advertises and NARs are served in.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Runs `f` on a Git handle from the pool (opening one only when all are busy); writers
    /// such as uploads use it too.
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let store = self.handles.lock().pop();
        let store = match store {
            Some(s) => s,
            None => Store::open(&self.path)?,
        };
        let result = f(&store);
        self.handles.lock().push(store);
        result
    }

    /// Every store path in the store, sorted by hash.
    pub fn list(&self) -> Result<Vec<StorePath>, StoreError> {
        self.with_store(|s| s.list())
    }

    /// Every store path with the root of its files, sorted by hash.
    pub fn list_roots(&self) -> Result<Vec<(StorePath, Root)>, StoreError> {
        self.with_store(|s| s.list_roots())
    }

    /// Every store path with its NAR's size, sorted by hash.
    pub fn list_nar_sizes(&self) -> Result<Vec<(StorePath, u64)>, StoreError> {
        self.with_store(|s| s.list_nar_sizes())
    }

    /// Looks a path up; one the store lacks is fetched from the peers (blocking until then).
    pub fn entry(&self, hash: &StoreHash) -> Result<Option<Entry>, StoreError> {
        self.entry_via(hash, "")
    }

    /// [`ReadPath::entry`] for a request that passed through the Groves in `via` (the
    /// [`crate::peers::VIA_HEADER`] value): a request that came from this Grove is answered
    /// from the store alone.
    pub fn entry_via(&self, hash: &StoreHash, via: &str) -> Result<Option<Entry>, StoreError> {
        if self.may_hold(hash) {
            if let Some(entry) = self.with_store(|s| s.get(hash))? {
                return Ok(Some(entry));
            }
        }
        match &self.peers {
            Some(peers) if peers.fetch(hash, via) => self.with_store(|s| s.get(hash)),
            _ => Ok(None),
        }
    }

    /// Whether the store may hold `hash`, from memory: `false` is certain.
    pub fn may_hold(&self, hash: &StoreHash) -> bool {
        self.index.as_ref().is_none_or(|i| i.lock().may_hold(hash))
    }

    /// The store's generation (see [`crate::store::PathIndex::generation`]); `None` without an
    /// index.
    pub fn generation(&self) -> Option<u64> {
        self.index.as_ref().map(|i| i.lock().generation())
    }

    /// How many paths the store holds (from the index if there is one: perhaps a few being
    /// added).
    pub fn known_paths(&self) -> Result<usize, StoreError> {
        match &self.index {
            Some(i) => Ok(i.lock().len()),
            None => Ok(self.list()?.len()),
        }
    }

    /// Whether a request for a path the store lacks would go to peers.
    pub fn reads_through(&self) -> bool {
        self.peers.is_some()
    }

    /// The path a store path, base name or hash part names; one the store lacks is an error.
    pub fn resolve(&self, spec: &str) -> Result<Entry, StoreError> {
        let hash = parse_spec(spec)?;
        self.entry(&hash)?.ok_or_else(|| StoreError::Unknown(spec.to_string()))
    }

    /// The closure of `roots`, references first.
    pub fn closure(&self, roots: &[Entry]) -> Result<Vec<Entry>, StoreError> {
        self.with_store(|s| s.closure(roots))
    }

    /// The signed narinfo of an entry, as this cache serves it.
    pub fn narinfo_of(&self, entry: Entry) -> NarInfo {
        narinfo_for(entry, self.key.as_ref(), self.compression)
    }

    /// The rendered signed narinfo if it is cached (no Git access).
    pub fn cached_narinfo_text(&self, hash: &StoreHash) -> Option<Bytes> {
        self.narinfos.lock().get(hash)
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
        let Some(entry) = self.entry_via(hash, via)? else {
            return Ok(None);
        };
        let text = Bytes::from(self.narinfo_of(entry).render());
        self.narinfos.lock().insert(*hash, text.clone());
        Ok(Some(text))
    }

    /// A path's whole NAR if it is cached.
    pub fn cached_nar(&self, hash: &StoreHash) -> Option<Bytes> {
        self.nars.lock().get(hash)
    }

    /// Reserves room to copy a NAR of `size` bytes on its way out, for
    /// [`ReadPath::remember_nar`]: only if the NAR cache would keep it and the copies under way
    /// stay within a quarter of the cache (many clients of one large NAR copy it once or so,
    /// not once each). Give it back with [`ReadPath::release_nar_copy`].
    pub fn reserve_nar_copy(&self, size: u64) -> bool {
        let nars = self.nars.lock();
        if !nars.fits(size) || self.nar_copies.load(Ordering::Relaxed) + size > nars.budget() / 4 {
            return false;
        }
        self.nar_copies.fetch_add(size, Ordering::Relaxed);
        true
    }

    /// Gives back what [`ReadPath::reserve_nar_copy`] reserved.
    pub fn release_nar_copy(&self, size: u64) {
        self.nar_copies.fetch_sub(size, Ordering::Relaxed);
    }

    /// Keeps a path's whole NAR (as synthesised by [`ReadPath::write_nar_range`]).
    pub fn remember_nar(&self, hash: StoreHash, nar: Bytes) {
        self.nars.lock().insert(hash, nar);
    }

    /// The NAR layout of a path (cached).
    pub fn layout(&self, entry: &Entry) -> Result<Arc<NarLayout>, StoreError> {
        let hash = entry.info.path.hash();
        if let Some(l) = self.layouts.lock().get(&hash) {
            return Ok(l.clone());
        }
        let layout = Arc::new(self.with_store(|s| s.nar_layout(&entry.root))?);
        self.layouts.lock().put(hash, layout.clone());
        Ok(layout)
    }

    /// Writes bytes `start..end` of a path's NAR to `out`, reading only the blobs they cover.
    pub fn write_nar_range(&self, entry: &Entry, start: u64, end: u64, out: &mut dyn Write) -> Result<(), StoreError> {
        let layout = self.layout(entry)?;
        self.with_store(|s| s.write_nar_range(&layout, start, end, out))
    }

    /// Writes a path's whole NAR, byte for byte what `nix-store --dump` writes.
    pub fn write_nar(&self, entry: &Entry, out: &mut dyn Write) -> Result<(), StoreError> {
        self.write_nar_range(entry, 0, entry.info.nar_size, out)
    }

    /// Writes `entries` (references first) as a `nix-store --export` stream.
    pub fn export(&self, entries: &[Entry], out: &mut dyn Write) -> Result<(), StoreError> {
        for e in entries {
            export::write_header(out)?;
            self.write_nar(e, out)?;
            export::write_trailer(out, &e.info)?;
        }
        export::write_end(out)?;
        Ok(())
    }

    /// A blob's contents, inflated once and kept while the blob cache has room (a blob larger
    /// than a quarter of it is read anew each time: hold on to the result).
    pub fn blob(&self, oid: ObjectId) -> Result<Bytes, StoreError> {
        if let Some(b) = self.blobs.lock().get(&oid) {
            return Ok(b);
        }
        // Many readers of one large blob inflate it once: the others wait, then find it cached.
        let gate = self.loading.lock().entry(oid).or_default().clone();
        let _turn = gate.lock();
        if let Some(b) = self.blobs.lock().get(&oid) {
            return Ok(b);
        }
        let loaded = self.with_store(|s| s.blob(oid)).map(Bytes::from);
        if let Ok(bytes) = &loaded {
            self.blobs.lock().insert(oid, bytes.clone());
        }
        self.loading.lock().remove(&oid);
        loaded
    }

    /// Whether a blob of `len` bytes is kept in the blob cache when read (otherwise stream it:
    /// [`ReadPath::blob_stream`]).
    pub fn blob_cacheable(&self, len: u64) -> bool {
        self.blobs.lock().fits(len)
    }

    /// A blob from byte `from` on, streamed in bounded memory.
    pub fn blob_stream(&self, oid: ObjectId, from: u64) -> Result<BlobStream, StoreError> {
        self.with_store(|s| s.blob_stream(oid, from))
    }

    /// A blob's size, from its header.
    pub fn blob_size(&self, oid: ObjectId) -> Result<u64, StoreError> {
        self.with_store(|s| s.blob_size(oid))
    }

    /// A directory's entries in NAR order.
    pub fn children(&self, dir: &Root) -> Result<Vec<(Vec<u8>, Root)>, StoreError> {
        self.with_store(|s| s.children(dir))
    }

    /// The entry `name` of a directory, if there is one.
    pub fn child(&self, dir: &Root, name: &[u8]) -> Result<Option<Root>, StoreError> {
        self.with_store(|s| s.child(dir, name))
    }

    /// Up to `size` bytes of a path's NAR from `offset`. File contents come from the blob cache
    /// (one inflation per blob, shared by every reader) or, for blobs too large for it, from a
    /// stream kept in `cursor` where the last read ended: sequential reads through a file of
    /// any size inflate it once, in bounded memory.
    pub fn read_nar_at(
        &self,
        entry: &Entry,
        offset: u64,
        size: u64,
        cursor: &mut NarCursor,
    ) -> Result<Vec<u8>, StoreError> {
        let layout = self.layout(entry)?;
        let end = offset.saturating_add(size).min(layout.size());
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        if offset >= end {
            return Ok(out);
        }
        let short = |oid: ObjectId| StoreError::Corrupt(oid.to_string(), "blob shorter than its header".into());
        layout.copy_range(offset, end, &mut out, |oid, len, from, to, out| {
            if self.blob_cacheable(len) {
                let bytes = match &cursor.pinned {
                    Some((pinned, bytes)) if *pinned == oid => bytes.clone(),
                    _ => {
                        let bytes = self.blob(oid)?;
                        cursor.pinned = Some((oid, bytes.clone()));
                        bytes
                    }
                };
                out.write_all(bytes.get(from as usize..to as usize).ok_or_else(|| short(oid))?)?;
                if to == len {
                    // Read to its end: a paused reader holds no blob beyond its chunk.
                    cursor.pinned = None;
                }
                return Ok(());
            }
            self.read_streamed(&mut cursor.stream, oid, from, to, out)
        })?;
        Ok(out)
    }

    /// Writes bytes `from..to` of a blob through `stream`, which is kept where the read ended:
    /// the next read from there goes on without inflating again; any other offset, or a read
    /// that failed or came short, opens a new stream.
    pub fn read_streamed(
        &self,
        stream: &mut Option<(BlobStream, u64)>,
        oid: ObjectId,
        from: u64,
        to: u64,
        out: &mut dyn Write,
    ) -> Result<(), StoreError> {
        if !matches!(stream, Some((s, at)) if s.oid() == oid && *at == from) {
            *stream = Some((self.blob_stream(oid, from)?, from));
        }
        let Some((s, at)) = stream.as_mut() else {
            return Ok(());
        };
        match std::io::copy(&mut std::io::Read::take(s, to - from), out) {
            Ok(n) if n == to - from => {
                *at = to;
                Ok(())
            }
            Ok(_) => {
                *stream = None;
                Err(StoreError::Corrupt(
                    oid.to_string(),
                    "blob shorter than its header".into(),
                ))
            }
            Err(e) => {
                *stream = None;
                Err(e.into())
            }
        }
    }

    /// The `.ls` listing of a path.
    pub fn listing(&self, entry: &Entry) -> Result<NarListing, StoreError> {
        self.with_store(|s| s.listing(&entry.root))
    }
}

/// The narinfo served for a path: its NAR at `nar/<hash>.nar[.ext]`, signed with `key` if given
/// (other signatures kept).
fn narinfo_for(entry: Entry, key: Option<&SecretKey>, compression: Compression) -> NarInfo {
    let mut info = entry.info;
    if let Some(key) = key {
        info.sign(key);
    }
    let plain = compression == Compression::None;
    NarInfo {
        url: Some(NarFile::of_path(&info.path.hash(), compression).to_string()),
        compression: Some(compression.name().into()),
        file_hash: plain.then_some(info.nar_hash),
        file_size: plain.then_some(info.nar_size),
        info,
    }
}

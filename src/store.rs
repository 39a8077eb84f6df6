//! The Git-backed store: every store path is a commit in a bare repository.
//!
//! Layout (see `docs/design.md`):
//! * `refs/nix/<hash>` points at the path's commit;
//! * the commit's tree holds `out` (the path's contents: a tree, a blob with mode 100644/100755,
//!   or a symlink blob with mode 120000) and `narinfo` (the metadata as narinfo text, no URL);
//! * the commit's parents are the commits of the path's references, so a closure is exactly what
//!   is reachable from the ref; author, committer and time are fixed, so the same path with the
//!   same metadata is the same commit everywhere.
//!
//! Writes are atomic: an [`Importer`] writes objects as it parses and moves refs only in
//! [`Importer::commit`], so an error or a crash part-way leaves no new ref (only unreachable
//! objects, which `git gc` prunes).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use git2::{FileMode, ObjectType, Oid, Repository};

use crate::hash::{HashingWriter, NarHash};
use crate::layout::NarLayout;
use crate::nar::{self, NarError, NarVisitor};
use crate::narinfo::{NarInfo, NarInfoError, PathInfo};
use crate::store_path::{StoreHash, StorePath, StorePathError, HASH_LEN, STORE_DIR};

/// Where the refs of store paths live.
pub const REF_PREFIX: &str = "refs/nix/";

/// Name of the tree entry holding a path's contents.
pub const OUT_ENTRY: &str = "out";

/// Name of the tree entry holding a path's metadata.
pub const NARINFO_ENTRY: &str = "narinfo";

/// Prefix that escapes entry names Git refuses or treats specially (`.git`, `.gitmodules`,
/// NTFS short names like `git~1`); names already starting with it are escaped too, so the
/// mapping is reversible.
pub const NAME_ESCAPE: &[u8] = b"grove~";

/// Blobs larger than this are streamed into the object database instead of buffered.
const STREAM_BLOB_THRESHOLD: u64 = 1 << 20;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A Git operation failed.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// Reading or writing a stream failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// The NAR is malformed or truncated.
    #[error(transparent)]
    Nar(#[from] NarError),
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
        path: StorePath,
        expected: NarHash,
        actual: NarHash,
    },
    /// The NAR's size differs from the one claimed for it.
    #[error("NAR size mismatch for {path}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        path: StorePath,
        expected: u64,
        actual: u64,
    },
    /// A reference is neither in the store nor earlier in the same import.
    #[error("{path} refers to {reference}, which is not in the store; add it first")]
    MissingReference { path: StorePath, reference: StorePath },
    /// Stored data that does not have Grove's layout.
    #[error("corrupt store entry {0}: {1}")]
    Corrupt(String, String),
    /// Stored metadata that does not parse.
    #[error("corrupt metadata of {0}: {1}")]
    BadMetadata(String, NarInfoError),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The contents root of a path as Git holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root {
    /// Tree, blob, executable blob or symlink.
    pub mode: FileMode,
    /// The object.
    pub oid: Oid,
}

/// A store path found in the store.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its metadata.
    pub info: PathInfo,
    /// Its commit.
    pub commit: Oid,
    /// Its contents.
    pub root: Root,
}

/// A Grove store: a bare Git repository.
pub struct Store {
    repo: Repository,
    path: PathBuf,
}

impl Store {
    /// Creates the repository at `path` if there is none, and opens it.
    pub fn init(path: &Path) -> Result<Self> {
        if !path.join("HEAD").exists() {
            let mut opts = git2::RepositoryInitOptions::new();
            opts.bare(true).mkpath(true).initial_head("main");
            let repo = Repository::init_opts(path, &opts)?;
            let mut cfg = repo.config()?;
            // Store paths may hold names that Windows or macOS checkouts would refuse; this
            // repository is never checked out, and dangerous names are escaped anyway.
            cfg.set_bool("core.protectNTFS", false)?;
            cfg.set_bool("core.protectHFS", false)?;
            // Keep `git gc` from packing on its own in the middle of a serve.
            cfg.set_i32("gc.auto", 0)?;
        }
        Self::open(path)
    }

    /// Opens an existing store.
    pub fn open(path: &Path) -> Result<Self> {
        let repo = Repository::open_bare(path).map_err(|_| StoreError::NotAStore(path.to_path_buf()))?;
        Ok(Store {
            repo,
            path: path.to_path_buf(),
        })
    }

    /// The repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying repository.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Resolves a store path, a base name `<hash>-<name>` or a bare hash part to a path's hash.
    pub fn parse_spec(spec: &str) -> Result<StoreHash> {
        let base = spec
            .strip_prefix(STORE_DIR)
            .map(|s| s.trim_start_matches('/'))
            .unwrap_or(spec);
        let hash = base
            .get(..HASH_LEN)
            .ok_or_else(|| StorePathError::BadHash(spec.to_string()))?;
        if base.len() > HASH_LEN {
            // A full base name must be valid as a whole, not just its first 32 characters.
            StorePath::from_base_name(base.split('/').next().unwrap_or(base))?;
        }
        Ok(hash.parse()?)
    }

    /// Looks a path up by its hash part.
    pub fn get(&self, hash: &StoreHash) -> Result<Option<Entry>> {
        let name = format!("{REF_PREFIX}{hash}");
        let commit = match self.repo.find_reference(&name) {
            Ok(r) => r.peel_to_commit()?,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let entry = self.entry_of_commit(commit.id())?;
        if entry.info.path.hash() != *hash {
            return Err(StoreError::Corrupt(name, "narinfo names another path".into()));
        }
        Ok(Some(entry))
    }

    /// Reads the store path a commit holds (checking Grove's layout, not the contents).
    pub fn entry_of_commit(&self, oid: Oid) -> Result<Entry> {
        let commit = self.repo.find_commit(oid)?;
        let tree = commit.tree()?;
        let name = oid.to_string();
        let corrupt = |why: &str| StoreError::Corrupt(name.clone(), why.to_string());
        let meta = tree
            .get_name(NARINFO_ENTRY)
            .ok_or_else(|| corrupt("no narinfo entry"))?;
        let blob = self.repo.find_blob(meta.id())?;
        let text = std::str::from_utf8(blob.content()).map_err(|_| corrupt("narinfo is not UTF-8"))?;
        let info = NarInfo::parse(text)
            .map_err(|e| StoreError::BadMetadata(name.clone(), e))?
            .info;
        let out = tree.get_name(OUT_ENTRY).ok_or_else(|| corrupt("no out entry"))?;
        let root = Root {
            mode: mode_of(out.filemode()).ok_or_else(|| corrupt("bad out mode"))?,
            oid: out.id(),
        };
        Ok(Entry {
            info,
            commit: oid,
            root,
        })
    }

    /// Re-hashes an entry's contents and compares them with its recorded NarHash and NarSize.
    pub fn check_contents(&self, entry: &Entry) -> Result<()> {
        let (actual, size) = self.hash_nar(&entry.root)?;
        let path = &entry.info.path;
        if actual != entry.info.nar_hash {
            return Err(StoreError::HashMismatch {
                path: path.clone(),
                expected: entry.info.nar_hash,
                actual,
            });
        }
        if size != entry.info.nar_size {
            return Err(StoreError::SizeMismatch {
                path: path.clone(),
                expected: entry.info.nar_size,
                actual: size,
            });
        }
        Ok(())
    }

    /// Like [`Store::get`], but a missing path is an error.
    pub fn require(&self, spec: &str) -> Result<Entry> {
        let hash = Self::parse_spec(spec)?;
        self.get(&hash)?.ok_or_else(|| StoreError::Unknown(spec.to_string()))
    }

    /// Every store path in the store, sorted by hash.
    pub fn list(&self) -> Result<Vec<StorePath>> {
        let mut out = Vec::new();
        for r in self.repo.references_glob(&format!("{REF_PREFIX}*"))? {
            let r = r?;
            let commit = r.peel_to_commit()?;
            let first = commit.message().unwrap_or("").lines().next().unwrap_or("");
            let name = r.name().unwrap_or("?").to_string();
            out.push(
                first
                    .parse()
                    .map_err(|_| StoreError::Corrupt(name, "commit message is not a store path".into()))?,
            );
        }
        Ok(out)
    }

    /// The closure of `roots` (the roots and everything they refer to), references first.
    pub fn closure(&self, roots: &[Entry]) -> Result<Vec<Entry>> {
        let mut done: BTreeMap<StoreHash, ()> = BTreeMap::new();
        let mut order = Vec::new();
        // Iterative post-order DFS: a path is emitted after all its references.
        let mut stack: Vec<(Entry, bool)> = roots.iter().rev().map(|e| (e.clone(), false)).collect();
        while let Some((entry, expanded)) = stack.pop() {
            let hash = entry.info.path.hash();
            if done.contains_key(&hash) {
                continue;
            }
            if expanded {
                done.insert(hash, ());
                order.push(entry);
                continue;
            }
            let refs: Vec<StorePath> = entry.info.other_references().cloned().collect();
            stack.push((entry, true));
            for r in refs.iter().rev() {
                if !done.contains_key(&r.hash()) {
                    let e = self.get(&r.hash())?.ok_or_else(|| StoreError::Unknown(r.to_string()))?;
                    stack.push((e, false));
                }
            }
        }
        Ok(order)
    }

    /// Writes the path's NAR, byte for byte what `nix-store --dump` writes.
    pub fn write_nar(&self, root: &Root, out: &mut dyn Write) -> Result<()> {
        let layout = self.nar_layout(root)?;
        self.write_nar_range(&layout, 0, layout.size(), out)
    }

    /// Writes bytes `start..end` of the NAR with this layout, reading only the blobs they cover.
    pub fn write_nar_range(&self, layout: &NarLayout, start: u64, end: u64, out: &mut dyn Write) -> Result<()> {
        layout.copy_range(start, end, out, |oid, len, from, to, out| {
            self.write_blob_range(oid, len, from, to, out)
        })
    }

    /// Writes bytes `from..to` of a blob of `len` bytes.
    pub fn write_blob_range(&self, oid: Oid, len: u64, from: u64, to: u64, out: &mut dyn Write) -> Result<()> {
        // Large loose blobs stream from disk; libgit2 cannot stream packed objects, so those
        // (and small blobs) are inflated whole.
        if len > STREAM_BLOB_THRESHOLD {
            if let Ok((reader, _, _)) = self.repo.odb()?.reader(oid) {
                let mut reader = reader.take(to);
                io::copy(&mut (&mut reader).take(from), &mut io::sink())?;
                let copied = io::copy(&mut reader, out)?;
                if copied != to - from {
                    return Err(StoreError::Corrupt(
                        oid.to_string(),
                        "blob shorter than its header".into(),
                    ));
                }
                return Ok(());
            }
        }
        let blob = self.repo.find_blob(oid)?;
        let content = blob.content().get(from as usize..to as usize);
        out.write_all(
            content.ok_or_else(|| StoreError::Corrupt(oid.to_string(), "blob shorter than its header".into()))?,
        )?;
        Ok(())
    }

    /// Re-hashes a path's NAR from Git.
    pub fn hash_nar(&self, root: &Root) -> Result<(NarHash, u64)> {
        let mut h = HashingWriter::new();
        self.write_nar(root, &mut h)?;
        Ok(h.finish())
    }

    /// Starts a batch of imports; nothing is visible until [`Importer::commit`].
    pub fn importer(&self) -> Importer<'_> {
        Importer {
            store: self,
            pending: BTreeMap::new(),
        }
    }
}

/// The file modes Grove stores; anything else in a tree is corruption.
pub(crate) fn mode_of(raw: i32) -> Option<FileMode> {
    [FileMode::Tree, FileMode::Blob, FileMode::BlobExecutable, FileMode::Link]
        .into_iter()
        .find(|m| i32::from(*m) == raw)
}

fn needs_escape(name: &[u8]) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with(b".git") || lower.starts_with(b"git~") || name.starts_with(NAME_ESCAPE)
}

/// The Git tree entry name for a NAR entry name.
pub fn escape_name(name: &[u8]) -> Vec<u8> {
    if needs_escape(name) {
        [NAME_ESCAPE, name].concat()
    } else {
        name.to_vec()
    }
}

/// The NAR entry name for a Git tree entry name.
pub fn unescape_name(name: &[u8]) -> &[u8] {
    name.strip_prefix(NAME_ESCAPE).unwrap_or(name)
}

/// The objects of one parsed NAR, written but not yet referenced.
#[derive(Debug, Clone, Copy)]
pub struct Contents {
    /// The contents' root object.
    pub root: Root,
    /// The NAR's hash as parsed.
    pub nar_hash: NarHash,
    /// The NAR's size as parsed.
    pub nar_size: u64,
}

/// A batch of imports into one store: objects are written at once, refs only on commit.
pub struct Importer<'s> {
    store: &'s Store,
    pending: BTreeMap<StoreHash, (Oid, StorePath)>,
}

impl Importer<'_> {
    /// Whether the path is already in the store or earlier in this batch.
    pub fn has(&self, path: &StorePath) -> Result<bool> {
        Ok(self.commit_of(path)?.is_some())
    }

    fn commit_of(&self, path: &StorePath) -> Result<Option<Oid>> {
        if let Some((oid, _)) = self.pending.get(&path.hash()) {
            return Ok(Some(*oid));
        }
        Ok(self.store.get(&path.hash())?.map(|e| e.commit))
    }

    /// Parses a NAR from `nar` (reading exactly its bytes) into Git objects.
    pub fn write_contents(&self, nar: &mut dyn Read) -> Result<Contents> {
        let mut w = GitWriter { repo: &self.store.repo };
        let (root, nar_hash, nar_size) = nar::parse(nar, &mut w)?;
        Ok(Contents {
            root,
            nar_hash,
            nar_size,
        })
    }

    /// Adds a path whose contents are written: checks the NAR's hash and size against `info`
    /// and that every reference is present, then writes its commit. Returns `false` (and
    /// writes nothing) if the path is present already.
    pub fn stage(&mut self, info: &PathInfo, contents: Contents) -> Result<bool> {
        let path = &info.path;
        if info.nar_hash != contents.nar_hash {
            return Err(StoreError::HashMismatch {
                path: path.clone(),
                expected: info.nar_hash,
                actual: contents.nar_hash,
            });
        }
        if info.nar_size != contents.nar_size {
            return Err(StoreError::SizeMismatch {
                path: path.clone(),
                expected: info.nar_size,
                actual: contents.nar_size,
            });
        }
        if self.has(path)? {
            return Ok(false);
        }
        let mut parents = Vec::new();
        for r in info.other_references() {
            let oid = self.commit_of(r)?.ok_or_else(|| StoreError::MissingReference {
                path: path.clone(),
                reference: r.clone(),
            })?;
            parents.push(self.store.repo.find_commit(oid)?);
        }
        let repo = &self.store.repo;
        let meta = NarInfo {
            info: info.clone(),
            url: None,
            compression: None,
            file_hash: None,
            file_size: None,
        };
        let meta_oid = repo.blob(meta.render().as_bytes())?;
        let mut tb = repo.treebuilder(None)?;
        tb.insert(NARINFO_ENTRY, meta_oid, FileMode::Blob.into())?;
        tb.insert(OUT_ENTRY, contents.root.oid, contents.root.mode.into())?;
        let tree = repo.find_tree(tb.write()?)?;
        let sig = git2::Signature::new("grove", "grove@localhost", &git2::Time::new(1, 0))?;
        let parent_refs: Vec<&git2::Commit> = parents.iter().collect();
        let commit = repo.commit(None, &sig, &sig, &format!("{path}\n"), &tree, &parent_refs)?;
        self.pending.insert(path.hash(), (commit, path.clone()));
        Ok(true)
    }

    /// Parses, checks and stages one path from its NAR.
    pub fn add(&mut self, info: &PathInfo, nar: &mut dyn Read) -> Result<bool> {
        let contents = self.write_contents(nar)?;
        self.stage(info, contents)
    }

    /// Number of paths staged so far.
    pub fn staged(&self) -> usize {
        self.pending.len()
    }

    /// Makes every staged path visible by creating its ref. A ref that appeared meanwhile is
    /// left as it is. Returns the paths added.
    pub fn commit(self) -> Result<Vec<StorePath>> {
        let repo = &self.store.repo;
        let mut tx = repo.transaction()?;
        let mut added = Vec::new();
        for (hash, (oid, path)) in &self.pending {
            let name = format!("{REF_PREFIX}{hash}");
            tx.lock_ref(&name)?;
            match repo.refname_to_id(&name) {
                Ok(existing) if existing != *oid => {
                    tracing::warn!("{path} was added concurrently with other metadata; keeping the existing entry");
                }
                Ok(_) => {}
                Err(_) => {
                    tx.set_target(&name, *oid, None, "grove: add")?;
                    added.push(path.clone());
                }
            }
        }
        tx.commit()?;
        Ok(added)
    }
}

/// Writes NAR nodes as Git objects.
struct GitWriter<'r> {
    repo: &'r Repository,
}

impl GitWriter<'_> {
    fn sink(e: git2::Error) -> NarError {
        NarError::Sink(format!("git: {e}"))
    }
}

impl NarVisitor for GitWriter<'_> {
    type Node = Root;

    fn file(&mut self, executable: bool, size: u64, contents: &mut dyn Read) -> Result<Root, NarError> {
        let mode = if executable {
            FileMode::BlobExecutable
        } else {
            FileMode::Blob
        };
        let oid = if size <= STREAM_BLOB_THRESHOLD {
            let mut buf = Vec::with_capacity(size as usize);
            contents.read_to_end(&mut buf)?;
            self.repo.blob(&buf).map_err(Self::sink)?
        } else {
            let odb = self.repo.odb().map_err(Self::sink)?;
            let mut w = odb.writer(size as usize, ObjectType::Blob).map_err(Self::sink)?;
            io::copy(contents, &mut w)?;
            w.finalize().map_err(Self::sink)?
        };
        Ok(Root { mode, oid })
    }

    fn symlink(&mut self, target: &[u8]) -> Result<Root, NarError> {
        Ok(Root {
            mode: FileMode::Link,
            oid: self.repo.blob(target).map_err(Self::sink)?,
        })
    }

    fn directory(&mut self, entries: Vec<(Vec<u8>, Root)>) -> Result<Root, NarError> {
        let mut tb = self.repo.treebuilder(None).map_err(Self::sink)?;
        for (name, child) in entries {
            tb.insert(escape_name(&name), child.oid, child.mode.into())
                .map_err(Self::sink)?;
        }
        Ok(Root {
            mode: FileMode::Tree,
            oid: tb.write().map_err(Self::sink)?,
        })
    }
}

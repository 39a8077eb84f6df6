//! The repository: opening it, finding store paths by their refs, reading their metadata,
//! trees and blobs.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use git2::{FileMode, ObjectType, Repository};

use crate::nix::narinfo::{NarInfo, PathInfo};
use crate::nix::store_path::{parse_spec, StoreHash, StorePath};

use super::error::StoreError;
use super::names::{escape_name, unescape_name};
use super::raw;

/// A Git object id (of a commit, tree or blob).
pub type ObjectId = git2::Oid;

/// Where the refs of store paths live.
pub const REF_PREFIX: &str = "refs/nix/";

/// Name of the tree entry holding a path's contents.
pub const OUT_ENTRY: &str = "out";

/// Name of the tree entry holding a path's metadata.
pub const NARINFO_ENTRY: &str = "narinfo";

/// Blobs larger than this are streamed into and out of the object database, not buffered.
pub(super) const STREAM_BLOB_THRESHOLD: u64 = 1 << 20;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a node of a path's contents is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A directory (a Git tree).
    Directory,
    /// A regular file (a blob, mode 100644).
    Regular,
    /// An executable file (a blob, mode 100755).
    Executable,
    /// A symlink (a blob holding the target, mode 120000).
    Symlink,
}

impl Kind {
    /// The kind a tree entry's mode stands for; anything else in a tree is corruption.
    fn from_mode(raw: i32) -> Option<Kind> {
        [Kind::Directory, Kind::Regular, Kind::Executable, Kind::Symlink]
            .into_iter()
            .find(|k| i32::from(k.mode()) == raw)
    }

    pub(super) fn mode(self) -> FileMode {
        match self {
            Kind::Directory => FileMode::Tree,
            Kind::Regular => FileMode::Blob,
            Kind::Executable => FileMode::BlobExecutable,
            Kind::Symlink => FileMode::Link,
        }
    }
}

/// A node of a path's contents as Git holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root {
    /// Directory, file, executable file or symlink.
    pub kind: Kind,
    /// The object.
    pub oid: ObjectId,
}

/// A store path found in the store.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Its metadata.
    pub info: PathInfo,
    /// Its commit.
    pub commit: ObjectId,
    /// Its contents.
    pub root: Root,
}

/// A Grove store: a bare Git repository.
pub struct Store {
    pub(super) repo: Repository,
    path: PathBuf,
}

/// The root of a path's files: the `out` entry of its commit's tree (`name` names the commit
/// or ref in errors).
fn root_of(tree: &git2::Tree, name: &str) -> Result<Root> {
    let corrupt = |why: &str| StoreError::Corrupt(name.to_string(), why.to_string());
    let out = tree.get_name(OUT_ENTRY).ok_or_else(|| corrupt("no out entry"))?;
    Ok(Root {
        kind: Kind::from_mode(out.filemode()).ok_or_else(|| corrupt("bad out mode"))?,
        oid: out.id(),
    })
}

/// The mode and object of `entry` in `tree`, read raw (`name` names the path in errors).
fn raw_entry(odb: &git2::Odb, tree: ObjectId, entry: &str, name: &str) -> Result<(i32, ObjectId)> {
    let tree = odb.read(tree)?;
    raw::tree_entry(tree.data(), entry.as_bytes())
        .ok_or_else(|| StoreError::Corrupt(name.to_string(), format!("no {entry} entry")))
}

impl Store {
    /// Creates the repository at `path` if there is none, and opens it.
    pub fn init(path: &Path) -> Result<Self> {
        if !path.join("HEAD").exists() {
            let mut opts = git2::RepositoryInitOptions::new();
            // No hook samples from Git's template directory: nothing here runs hooks.
            opts.bare(true)
                .mkpath(true)
                .initial_head("main")
                .external_template(false);
            let repo = Repository::init_opts(path, &opts)?;
            let mut cfg = repo.config()?;
            // Store paths may hold names that Windows or macOS checkouts would refuse; this
            // repository is never checked out, and dangerous names are escaped anyway.
            cfg.set_bool("core.protectNTFS", false)?;
            cfg.set_bool("core.protectHFS", false)?;
            // Keep `git gc` from packing on its own in the middle of a serve.
            cfg.set_i32("gc.auto", 0)?;
            // Large files are packed whole (never as deltas), so they can be streamed.
            cfg.set_str("core.bigFileThreshold", "1m")?;
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

    /// Like git, trust object ids on read (`strict` false): libgit2 would otherwise re-hash
    /// (SHA-1DC, slow) every object it inflates. Objects are hashed when written, fetched packs
    /// are checked by index-pack with fsckObjects and zlib's checksum catches corruption on
    /// disk; `grove verify` keeps the check, on top of re-hashing whole NARs. Process-wide.
    pub fn verify_object_hashes(strict: bool) {
        git2::opts::strict_hash_verification(strict);
    }

    /// The repository's directory.
    pub fn path(&self) -> &Path {
        &self.path
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

    /// The commit `refs/nix/<hash>` points at, if the ref exists (nothing else is read).
    pub fn commit_of_ref(&self, hash: &StoreHash) -> Result<Option<ObjectId>> {
        match self.repo.refname_to_id(&format!("{REF_PREFIX}{hash}")) {
            Ok(oid) => Ok(Some(oid)),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Like [`Store::get`] for a store path, base name or hash part; a missing path is an error.
    pub fn require(&self, spec: &str) -> Result<Entry> {
        let hash = parse_spec(spec)?;
        self.get(&hash)?.ok_or_else(|| StoreError::Unknown(spec.to_string()))
    }

    /// Reads the store path a commit holds (checking Grove's layout, not the contents).
    pub fn entry_of_commit(&self, oid: ObjectId) -> Result<Entry> {
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
        let root = root_of(&tree, &name)?;
        Ok(Entry {
            info,
            commit: oid,
            root,
        })
    }

    /// The commits a commit names as its parents.
    pub fn parents(&self, commit: ObjectId) -> Result<Vec<ObjectId>> {
        Ok(self.repo.find_commit(commit)?.parent_ids().collect())
    }

    /// Every store path in the store, sorted by hash.
    pub fn list(&self) -> Result<Vec<StorePath>> {
        self.list_each(|_, _| Ok(()))
    }

    /// Every store path with the root of its files, sorted by hash: a commit and a tree read
    /// per path, no narinfo.
    pub fn list_roots(&self) -> Result<Vec<(StorePath, Root)>> {
        let odb = self.repo.odb()?;
        let mut roots = Vec::new();
        let paths = self.list_each(|name, tree| {
            let (mode, oid) = raw_entry(&odb, tree, OUT_ENTRY, name)?;
            let kind =
                Kind::from_mode(mode).ok_or_else(|| StoreError::Corrupt(name.to_string(), "bad out mode".into()))?;
            roots.push(Root { kind, oid });
            Ok(())
        })?;
        Ok(paths.into_iter().zip(roots).collect())
    }

    /// Every store path with its NAR's size, sorted by hash: a commit, a tree and the narinfo
    /// read per path.
    pub fn list_nar_sizes(&self) -> Result<Vec<(StorePath, u64)>> {
        let odb = self.repo.odb()?;
        let mut sizes = Vec::new();
        let paths = self.list_each(|name, tree| {
            let (_, meta) = raw_entry(&odb, tree, NARINFO_ENTRY, name)?;
            let meta = odb.read(meta)?;
            let text = std::str::from_utf8(meta.data())
                .map_err(|_| StoreError::Corrupt(name.to_string(), "narinfo is not UTF-8".into()))?;
            let info = NarInfo::parse(text).map_err(|e| StoreError::BadMetadata(name.to_string(), e))?;
            sizes.push(info.info.nar_size);
            Ok(())
        })?;
        Ok(paths.into_iter().zip(sizes).collect())
    }

    /// Every store path (from its commit's message), after `each` has seen its ref's name and
    /// the commit's tree. Commits are read raw, past libgit2's object cache: a listing reads
    /// each once, and through the cache it kept hundreds of megabytes at 100,000 paths.
    fn list_each(&self, mut each: impl FnMut(&str, ObjectId) -> Result<()>) -> Result<Vec<StorePath>> {
        let odb = self.repo.odb()?;
        let mut out = Vec::new();
        for r in self.repo.references_glob(&format!("{REF_PREFIX}*"))? {
            let r = r?;
            let name = r.name().unwrap_or("?").to_string();
            let corrupt = |why: &str| StoreError::Corrupt(name.clone(), why.to_string());
            let oid = r.target().ok_or_else(|| corrupt("not a direct ref"))?;
            let commit = odb.read(oid)?;
            if commit.kind() != ObjectType::Commit {
                return Err(corrupt("not a commit"));
            }
            let (tree, message) = raw::commit_tree_and_message(commit.data()).ok_or_else(|| corrupt("bad commit"))?;
            let first = message.split(|&b| b == b'\n').next().unwrap_or_default();
            let path = std::str::from_utf8(first)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| corrupt("commit message is not a store path"))?;
            each(&name, tree)?;
            out.push(path);
        }
        Ok(out)
    }

    /// The closure of `roots` (the roots and everything they refer to), references first.
    pub fn closure(&self, roots: &[Entry]) -> Result<Vec<Entry>> {
        let mut done: BTreeSet<StoreHash> = BTreeSet::new();
        let mut order = Vec::new();
        // Iterative post-order DFS: a path is emitted after all its references.
        let mut stack: Vec<(Entry, bool)> = roots.iter().rev().map(|e| (e.clone(), false)).collect();
        while let Some((entry, expanded)) = stack.pop() {
            let hash = entry.info.path.hash();
            if done.contains(&hash) {
                continue;
            }
            if expanded {
                done.insert(hash);
                order.push(entry);
                continue;
            }
            let refs: Vec<StorePath> = entry.info.other_references().cloned().collect();
            stack.push((entry, true));
            for r in refs.iter().rev() {
                if !done.contains(&r.hash()) {
                    let e = self.get(&r.hash())?.ok_or_else(|| StoreError::Unknown(r.to_string()))?;
                    stack.push((e, false));
                }
            }
        }
        Ok(order)
    }

    /// Writes bytes `from..to` of a blob of `len` bytes.
    pub fn write_blob_range(&self, oid: ObjectId, len: u64, from: u64, to: u64, out: &mut dyn Write) -> Result<()> {
        let short = || StoreError::Corrupt(oid.to_string(), "blob shorter than its header".into());
        // Large loose blobs stream from disk; libgit2 cannot stream packed objects, so those
        // (and small blobs) are inflated whole.
        if len > STREAM_BLOB_THRESHOLD {
            if let Ok((reader, _, _)) = self.repo.odb()?.reader(oid) {
                let mut reader = reader.take(to);
                io::copy(&mut (&mut reader).take(from), &mut io::sink())?;
                let copied = io::copy(&mut reader, out)?;
                if copied != to - from {
                    return Err(short());
                }
                return Ok(());
            }
        }
        let blob = self.repo.find_blob(oid)?;
        out.write_all(blob.content().get(from as usize..to as usize).ok_or_else(short)?)?;
        Ok(())
    }

    /// A blob's contents from byte `from` on, as a stream read from `git cat-file`, which
    /// streams loose and undeltified packed blobs alike in bounded memory (libgit2 inflates a
    /// packed blob whole). For large blobs read in pieces over time (slow clients, the mount).
    pub fn blob_stream(&self, oid: ObjectId, from: u64) -> Result<BlobStream> {
        let mut child = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&self.path)
            .args(["-c", "core.bigFileThreshold=1m", "cat-file", "blob"])
            .arg(oid.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(StoreError::Corrupt(
                oid.to_string(),
                "git cat-file has no output".into(),
            ));
        };
        let mut stream = BlobStream { child, out, oid };
        let skipped = io::copy(&mut (&mut stream).take(from), &mut io::sink())?;
        if skipped != from {
            return Err(StoreError::Corrupt(
                oid.to_string(),
                "blob shorter than its header".into(),
            ));
        }
        Ok(stream)
    }

    /// A blob's whole contents.
    pub fn blob(&self, oid: ObjectId) -> Result<Vec<u8>> {
        Ok(self.repo.find_blob(oid)?.content().to_vec())
    }

    /// A blob's size, from its header.
    pub fn blob_size(&self, oid: ObjectId) -> Result<u64> {
        Ok(self.repo.odb()?.read_header(oid)?.0 as u64)
    }

    /// A directory's entries in NAR order (bytewise by unescaped name).
    pub fn children(&self, dir: &Root) -> Result<Vec<(Vec<u8>, Root)>> {
        let tree = self.repo.find_tree(dir.oid)?;
        let mut entries = Vec::with_capacity(tree.len());
        for e in tree.iter() {
            let kind = Kind::from_mode(e.filemode())
                .ok_or_else(|| StoreError::Corrupt(dir.oid.to_string(), "unsupported mode".into()))?;
            entries.push((unescape_name(e.name_bytes()).to_vec(), Root { kind, oid: e.id() }));
        }
        // Git orders trees as if directory names ended in '/'; NAR orders bytewise.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// The entry `name` (a NAR entry name) of a directory, if there is one.
    pub fn child(&self, dir: &Root, name: &[u8]) -> Result<Option<Root>> {
        let tree = self.repo.find_tree(dir.oid)?;
        // Stores written before a name was escaped hold it as it is.
        let found = tree.get_name_bytes(&escape_name(name)).or_else(|| {
            tree.get_name_bytes(name)
                .filter(|e| e.name_bytes() == unescape_name(e.name_bytes()))
        });
        let Some(e) = found else {
            return Ok(None);
        };
        let kind = Kind::from_mode(e.filemode())
            .ok_or_else(|| StoreError::Corrupt(dir.oid.to_string(), "unsupported mode".into()))?;
        Ok(Some(Root { kind, oid: e.id() }))
    }
}

/// A blob read as a stream (see [`Store::blob_stream`]); the reading process ends with it.
pub struct BlobStream {
    child: std::process::Child,
    out: std::process::ChildStdout,
    oid: ObjectId,
}

impl BlobStream {
    /// The blob.
    pub fn oid(&self) -> ObjectId {
        self.oid
    }
}

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.out.read(buf)
    }
}

impl Drop for BlobStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

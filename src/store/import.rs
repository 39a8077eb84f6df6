//! Writing paths into the store: NARs are parsed into Git objects as they stream in, checked
//! against their metadata, staged as commits, and made visible by their refs, references first.
//! A batch importer ([`Store::batch_importer`]) writes its objects as packs (see
//! [`super::pack`]); a plain one writes loose objects, visible at once, for contents written in
//! one request and staged in a later one (uploads).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, BufReader, Read};

use git2::ObjectType;

use crate::nix::compression::Compression;
use crate::nix::hash::{HashingReader, NarHash};
use crate::nix::nar::{self, NarError, NarVisitor};
use crate::nix::narinfo::{NarInfo, PathInfo};
use crate::nix::store_path::{StoreHash, StorePath};

use super::error::{check_nar, StoreError};
use super::names::escape_name;
use super::objects::{commit_bytes, tree_bytes, Target};
use super::pack::PackSink;
use super::repo::{Kind, ObjectId, Root, Store, NARINFO_ENTRY, OUT_ENTRY, STREAM_BLOB_THRESHOLD};

type Result<T, E = StoreError> = std::result::Result<T, E>;

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

/// A parsed NAR file (possibly compressed): its contents and the file's own hash and size.
#[derive(Debug, Clone, Copy)]
pub struct NarFileContents {
    /// The parsed NAR.
    pub contents: Contents,
    /// SHA-256 of the file as it came.
    pub file_hash: NarHash,
    /// Size of the file as it came.
    pub file_size: u64,
}

/// A batch of imports into one store: objects are written at once, refs only on commit.
pub struct Importer<'s> {
    store: &'s Store,
    /// Staged paths in the order they were staged, which is references first.
    staged: Vec<(StorePath, ObjectId)>,
    /// Where each staged path is in `staged`.
    index: HashMap<StoreHash, usize>,
    /// New objects on their way into packs, for a batch importer.
    pack: Option<RefCell<PackSink>>,
}

impl Store {
    /// Starts a batch of imports; nothing is visible until [`Importer::commit`].
    /// Objects are written loose, each visible at once (see [`Store::batch_importer`]).
    pub fn importer(&self) -> Importer<'_> {
        Importer {
            store: self,
            staged: Vec::new(),
            index: HashMap::new(),
            pack: None,
        }
    }

    /// Starts a batch of imports whose objects are written as packs: much faster for many
    /// small paths, but the objects exist only once [`Importer::commit`] (or
    /// [`Importer::flush`]) has run.
    pub fn batch_importer(&self) -> Importer<'_> {
        Importer {
            pack: Some(RefCell::new(PackSink::default())),
            ..self.importer()
        }
    }
}

impl Importer<'_> {
    /// Whether the path is already in the store or earlier in this batch.
    pub fn has(&self, path: &StorePath) -> Result<bool> {
        Ok(self.commit_of(path)?.is_some())
    }

    /// The commit of `path` in this batch or the store. The same hash with another name is
    /// an error: a store path is its hash and its name.
    fn commit_of(&self, path: &StorePath) -> Result<Option<ObjectId>> {
        let found = match self.index.get(&path.hash()).and_then(|&i| self.staged.get(i)) {
            Some((staged, oid)) => Some((staged.clone(), *oid)),
            None => self.store.get(&path.hash())?.map(|e| (e.info.path, e.commit)),
        };
        match found {
            Some((existing, _)) if existing != *path => Err(StoreError::NameMismatch {
                wanted: path.clone(),
                existing,
            }),
            Some((_, oid)) => Ok(Some(oid)),
            None => Ok(None),
        }
    }

    /// The repository directory of the store this importer writes to.
    pub fn store_dir(&self) -> &std::path::Path {
        self.store.path()
    }

    /// Where this importer's objects go.
    fn target(&self) -> Target<'_> {
        match &self.pack {
            Some(sink) => Target::Pack(&self.store.repo, sink),
            None => Target::Loose(&self.store.repo),
        }
    }

    /// Makes the objects written so far exist in the repository (a batch importer holds them
    /// back until then).
    pub fn flush(&self) -> Result<()> {
        match &self.pack {
            Some(sink) => sink.borrow_mut().flush(&self.store.repo),
            None => Ok(()),
        }
    }

    /// Parses a NAR from `nar` (reading exactly its bytes) into Git objects.
    pub fn write_contents(&self, nar: &mut dyn Read) -> Result<Contents> {
        let mut w = GitWriter { target: self.target() };
        let (root, nar_hash, nar_size) = nar::parse(nar, &mut w)?;
        Ok(Contents {
            root,
            nar_hash,
            nar_size,
        })
    }

    /// Parses a NAR file compressed as `compression` into Git objects, hashing the file as it
    /// comes. A NAR of more than `max_nar_size` bytes is refused as soon as it gets there (a
    /// source that sends without end cannot make the import run forever), and so is a file much
    /// larger than that; nothing may follow the NAR. This is the one routine uploads, upstreams
    /// and `file://` caches import through.
    pub fn write_nar_file(
        &self,
        compression: Compression,
        file: impl Read,
        max_nar_size: u64,
    ) -> Result<NarFileContents> {
        // Compression can make incompressible data a little larger, never much.
        let max_file = max_nar_size.saturating_add(max_nar_size / 8).saturating_add(1 << 16);
        let mut hashed = HashingReader::new(Limited::new(file, max_file));
        let contents = {
            let decoded = Limited::new(Decoded(compression.decoder(&mut hashed)?), max_nar_size);
            let mut nar = BufReader::with_capacity(1 << 16, decoded);
            let contents = self.write_contents(&mut nar).map_err(|e| too_large(e, max_nar_size))?;
            let mut rest = [0u8; 1];
            if nar.read(&mut rest).map_err(|e| too_large(e.into(), max_nar_size))? != 0 {
                return Err(StoreError::BadFile("trailing data after the NAR".into()));
            }
            contents
        };
        io::copy(&mut hashed, &mut io::sink()).map_err(|e| too_large(e.into(), max_file))?;
        let (file_hash, file_size) = hashed.finish();
        Ok(NarFileContents {
            contents,
            file_hash,
            file_size,
        })
    }

    /// [`Importer::write_nar_file`] for the file a narinfo describes, named `source` in errors:
    /// decompressed as it says, at most its NarSize read, checked against its FileHash/FileSize.
    /// NarHash/NarSize are checked when the contents are staged.
    pub fn write_nar_file_of(&self, ni: &NarInfo, source: &str, file: impl Read) -> Result<Contents> {
        let compression = Compression::from_name(ni.compression.as_deref())
            .map_err(|e| StoreError::BadFile(format!("{source}: {e}")))?;
        let parsed = self
            .write_nar_file(compression, file, ni.info.nar_size)
            .map_err(|e| match e {
                StoreError::BadFile(why) => StoreError::BadFile(format!("{source}: {why}")),
                e => e,
            })?;
        check_file(ni, source, &parsed)?;
        Ok(parsed.contents)
    }

    /// Adds a path whose contents are written: checks the NAR's hash and size against `info`
    /// and that every reference is present, then writes its commit. Returns `false` (and
    /// writes nothing) if the path is present already.
    pub fn stage(&mut self, info: &PathInfo, contents: Contents) -> Result<bool> {
        check_nar(info, contents.nar_hash, contents.nar_size)?;
        let path = &info.path;
        if self.has(path)? {
            return Ok(false);
        }
        let mut parents = Vec::new();
        for r in info.other_references() {
            parents.push(self.commit_of(r)?.ok_or_else(|| StoreError::MissingReference {
                path: path.clone(),
                reference: r.clone(),
            })?);
        }
        let meta = NarInfo {
            info: info.clone(),
            url: None,
            compression: None,
            file_hash: None,
            file_size: None,
        };
        let target = self.target();
        let meta_oid = target.write(ObjectType::Blob, meta.render().as_bytes())?;
        let meta_root = Root {
            kind: Kind::Regular,
            oid: meta_oid,
        };
        let tree = tree_bytes(vec![
            (NARINFO_ENTRY.as_bytes().to_vec(), meta_root),
            (OUT_ENTRY.as_bytes().to_vec(), contents.root),
        ]);
        let tree = target.write(ObjectType::Tree, &tree)?;
        let commit = target.write(ObjectType::Commit, &commit_bytes(tree, &parents, &format!("{path}\n")))?;
        self.index.insert(path.hash(), self.staged.len());
        self.staged.push((path.clone(), commit));
        Ok(true)
    }

    /// Parses, checks and stages one path from its NAR.
    pub fn add(&mut self, info: &PathInfo, nar: &mut dyn Read) -> Result<bool> {
        let contents = self.write_contents(nar)?;
        self.stage(info, contents)
    }

    /// Makes every staged path visible by creating its ref, references first (see
    /// [`super::refs`] for what an interruption leaves). A ref that appeared meanwhile is left as
    /// it is. Returns the paths added.
    pub fn commit(self) -> Result<Vec<StorePath>> {
        self.flush()?;
        let outcome = self.store.create_refs(&self.staged, "grove: add")?;
        for (path, _, _) in &outcome.conflicts {
            tracing::warn!("{path} was added concurrently with other metadata; keeping the existing entry");
        }
        Ok(outcome.added)
    }
}

/// A decompressor's output, whose own errors (the file is not what its extension says, or is
/// cut short) become [`io::ErrorKind::InvalidData`]: the data is bad, not the server (found by
/// fuzzing the upload path). Errors of the source beneath (a body that stopped coming, one too
/// large) keep their kind.
struct Decoded<R>(R);

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::FileTooLarge
            | io::ErrorKind::InvalidData => e,
            _ => io::Error::new(io::ErrorKind::InvalidData, format!("the file does not decompress: {e}")),
        })
    }
}

/// A reader that fails with [`io::ErrorKind::FileTooLarge`] once more than `left` bytes come.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R> Limited<R> {
    fn new(inner: R, max: u64) -> Self {
        Limited { inner, left: max }
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte more than allowed is asked for, to tell "exactly the limit" from "more".
        let want = buf
            .len()
            .min(self.left.saturating_add(1).min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "over the size limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Turns the error of a stream that went over `max` bytes into [`StoreError::TooLarge`].
fn too_large(e: StoreError, max: u64) -> StoreError {
    let over = match &e {
        StoreError::Io(io) => io.kind() == io::ErrorKind::FileTooLarge,
        StoreError::Nar(NarError::Io(io)) => io.kind() == io::ErrorKind::FileTooLarge,
        _ => false,
    };
    if over {
        StoreError::TooLarge(max)
    } else {
        e
    }
}

/// Checks a NAR file against its narinfo's FileHash and FileSize, when it has them.
pub fn check_file(ni: &NarInfo, source: &str, file: &NarFileContents) -> Result<()> {
    if ni.file_hash.is_some_and(|h| h != file.file_hash) || ni.file_size.is_some_and(|s| s != file.file_size) {
        return Err(StoreError::BadFile(format!(
            "{source} does not match FileHash/FileSize"
        )));
    }
    Ok(())
}

/// `e`, or a "no space left on device" error if the disk holding `dir` is (nearly) full.
fn disk_full_or(dir: &std::path::Path, e: io::Error) -> io::Error {
    // Errors of the NAR's source (a client that stopped, an upload too large) are its own.
    if matches!(
        e.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::FileTooLarge
            | io::ErrorKind::InvalidData
            | io::ErrorKind::UnexpectedEof
    ) {
        return e;
    }
    let Ok(path) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str())) else {
        return e;
    };
    // SAFETY: statvfs fills the struct it is given from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 && (st.f_bavail as u64) * (st.f_frsize as u64) < 1 << 20 {
        io::Error::new(io::ErrorKind::StorageFull, format!("{}: {e}", dir.display()))
    } else {
        e
    }
}

/// Writes NAR nodes as Git objects.
struct GitWriter<'r> {
    target: Target<'r>,
}

impl GitWriter<'_> {
    fn sink(e: git2::Error) -> NarError {
        NarError::Sink(format!("git: {}", e.message()))
    }

    fn store(e: StoreError) -> NarError {
        match e {
            StoreError::Io(io) => NarError::Io(io),
            e => NarError::Sink(e.to_string()),
        }
    }
}

impl NarVisitor for GitWriter<'_> {
    type Node = Root;

    fn file(&mut self, executable: bool, size: u64, contents: &mut dyn Read) -> Result<Root, NarError> {
        let kind = if executable { Kind::Executable } else { Kind::Regular };
        let oid = if size <= STREAM_BLOB_THRESHOLD {
            let mut buf = Vec::with_capacity(size as usize);
            contents.read_to_end(&mut buf)?;
            self.target.write(ObjectType::Blob, &buf).map_err(Self::store)?
        } else {
            // Streamed into a loose object: a pack entry would hold the whole blob in memory.
            let repo = self.target.repo();
            let odb = repo.odb().map_err(Self::sink)?;
            let mut w = odb.writer(size as usize, ObjectType::Blob).map_err(Self::sink)?;
            // libgit2's stream says only "Write error": tell a full disk by looking at it.
            io::copy(contents, &mut w).map_err(|e| disk_full_or(repo.path(), e))?;
            w.finalize().map_err(Self::sink)?
        };
        Ok(Root { kind, oid })
    }

    fn symlink(&mut self, target: &[u8]) -> Result<Root, NarError> {
        Ok(Root {
            kind: Kind::Symlink,
            oid: self.target.write(ObjectType::Blob, target).map_err(Self::store)?,
        })
    }

    fn directory(&mut self, entries: Vec<(Vec<u8>, Root)>) -> Result<Root, NarError> {
        let entries = entries
            .into_iter()
            .map(|(name, child)| (escape_name(&name), child))
            .collect();
        Ok(Root {
            kind: Kind::Directory,
            oid: self
                .target
                .write(ObjectType::Tree, &tree_bytes(entries))
                .map_err(Self::store)?,
        })
    }
}

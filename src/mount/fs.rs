//! The file system `grove mount` serves: the store as a read-only Nix-store-like tree, served
//! from the read path.
//!
//! ```text
//! DIR/<hash>-<name>/…        every store path: directories, files (0444, 0555 if executable),
//!                            symlinks; a path that is a single file or symlink is that file
//! DIR/.nar/<hash>.nar        the path's NAR, read at any offset without building it whole
//! DIR/.narinfo/<hash>.narinfo  the narinfo HTTP serves, signed
//! ```
//! Store paths never change, so attributes and entries are cached by the kernel for an hour, and
//! files and directories are never opened (the kernel's "no open" mode): no open or release
//! round trip per file or directory, and pages and listings stay cached. The three top
//! directories grow: their attributes are never cached and their modification time is the
//! store's generation, which every writer moves, so the kernel drops its listing of them when
//! a path was added and the next `ls` shows it. A lookup of a name that is not (yet) there is
//! not cached.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};
use lru::LruCache;
use parking_lot::Mutex;

use crate::nix::store_path::{StoreHash, StorePath};
use crate::read::{NarCursor, ReadPath};
use crate::store::{BlobStream, Entry, Kind, ObjectId, Root, StoreError};

/// How long the kernel may cache what never changes: attributes and entries inside store paths.
const TTL: Duration = Duration::from_secs(3600);
/// How long the kernel may cache the attributes of the three top directories, which grow: not
/// at all, so that it compares their modification time with its cached listing each time.
const DIR_TTL: Duration = Duration::ZERO;

const ROOT: u64 = 1;
const NAR_DIR: u64 = 2;
const NARINFO_DIR: u64 = 3;

#[derive(Clone)]
enum Node {
    Root,
    NarDir,
    NarinfoDir,
    /// Something inside a store path (or its top); `size` for files and symlinks.
    Git {
        root: Root,
        size: u64,
    },
    /// A virtual NAR.
    Nar {
        hash: StoreHash,
        size: u64,
    },
    /// A signed narinfo.
    Narinfo {
        text: Bytes,
    },
}

struct Inodes {
    nodes: HashMap<u64, Node>,
    by_name: HashMap<(u64, Vec<u8>), u64>,
    next: u64,
}

/// Where one reader is in a file too large for the blob cache (a stream kept where the last
/// read ended, so sequential reads inflate it once in bounded memory) or in a virtual NAR.
enum Cursor {
    Large(Option<(BlobStream, u64)>),
    Nar(Box<Entry>, NarCursor),
}

/// A reader: an inode and the process reading it.
type Reader = (u64, u32);

/// How many readers' cursors are kept. Files are never opened, so nothing says when a reader
/// is done: the least recently used cursor goes, and its reader's next read starts a new one.
const CURSORS: usize = 256;

/// A listing of one of the top directories, taken when a reader starts at offset 0: the kernel
/// reads a large directory in many calls, and each continues the same listing.
type Listing = Arc<Vec<DirEntry>>;

/// How many listings of the top directories are kept, by directory and reading process.
const LISTINGS: usize = 64;

/// A directory entry: inode, type, name.
type DirEntry = (u64, FileType, Vec<u8>);

/// The largest read asked for: 256 pages, the kernel's limit for FUSE.
const LARGE_READ: u32 = 1 << 20;

/// The file system.
pub struct GroveFs {
    read: Arc<ReadPath>,
    inodes: Mutex<Inodes>,
    listings: Mutex<LruCache<Reader, Listing>>,
    /// Cursors by inode and reading process: with no open there is no file handle, and one
    /// process reads one file sequentially.
    cursors: Mutex<LruCache<Reader, Arc<Mutex<Cursor>>>>,
}

/// Returns the heap's free pages to the system. Listing a top directory allocates and frees
/// about a kilobyte a path, which glibc's allocator otherwise keeps: a mount's own memory after
/// listing 100,000 paths was 175 MB without this, 107 MB with it.
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn eio(e: StoreError) -> Errno {
    tracing::error!("mount: {e}");
    Errno::EIO
}

impl GroveFs {
    /// A file system over `read`.
    pub fn new(read: Arc<ReadPath>) -> Self {
        let nodes = HashMap::from([
            (ROOT, Node::Root),
            (NAR_DIR, Node::NarDir),
            (NARINFO_DIR, Node::NarinfoDir),
        ]);
        let by_name = HashMap::from([
            ((ROOT, b".nar".to_vec()), NAR_DIR),
            ((ROOT, b".narinfo".to_vec()), NARINFO_DIR),
        ]);
        GroveFs {
            read,
            inodes: Mutex::new(Inodes {
                nodes,
                by_name,
                next: NARINFO_DIR + 1,
            }),
            listings: Mutex::new(LruCache::new(NonZeroUsize::new(LISTINGS).unwrap_or(NonZeroUsize::MIN))),
            cursors: Mutex::new(LruCache::new(NonZeroUsize::new(CURSORS).unwrap_or(NonZeroUsize::MIN))),
        }
    }

    fn node(&self, ino: u64) -> Option<Node> {
        self.inodes.lock().nodes.get(&ino).cloned()
    }

    /// The inode of `name` in `parent`: the same number every time within this mount.
    fn intern(&self, parent: u64, name: &[u8], node: Node) -> u64 {
        let mut inodes = self.inodes.lock();
        if let Some(&ino) = inodes.by_name.get(&(parent, name.to_vec())) {
            return ino;
        }
        let ino = inodes.next;
        inodes.next += 1;
        inodes.nodes.insert(ino, node);
        inodes.by_name.insert((parent, name.to_vec()), ino);
        ino
    }

    fn git_node(&self, root: Root) -> Result<Node, StoreError> {
        let size = match root.kind {
            Kind::Directory => 0,
            _ => self.read.blob_size(root.oid)?,
        };
        Ok(Node::Git { root, size })
    }

    fn store_entry(&self, hash: &StoreHash) -> Result<Option<Entry>, StoreError> {
        self.read.entry(hash)
    }

    /// Resolves `name` in the directory `parent`.
    fn resolve(&self, parent: &Node, name: &[u8]) -> Result<Option<Node>, StoreError> {
        let text = std::str::from_utf8(name).ok();
        match parent {
            Node::Root => {
                let Some(path) = text.and_then(|t| StorePath::from_base_name(t).ok()) else {
                    return Ok(None);
                };
                match self.store_entry(&path.hash())? {
                    Some(e) if e.info.path == path => Ok(Some(self.git_node(e.root)?)),
                    _ => Ok(None),
                }
            }
            Node::NarDir => {
                let Some(hash) = text.and_then(|t| t.strip_suffix(".nar")).and_then(|h| h.parse().ok()) else {
                    return Ok(None);
                };
                Ok(self.store_entry(&hash)?.map(|e| Node::Nar {
                    hash,
                    size: e.info.nar_size,
                }))
            }
            Node::NarinfoDir => {
                let Some(hash) = text
                    .and_then(|t| t.strip_suffix(".narinfo"))
                    .and_then(|h| h.parse().ok())
                else {
                    return Ok(None);
                };
                Ok(self.read.narinfo_text(&hash)?.map(|text| Node::Narinfo { text }))
            }
            Node::Git { root, .. } if root.kind == Kind::Directory => match self.read.child(root, name)? {
                Some(child) => Ok(Some(self.git_node(child)?)),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let (kind, perm, size) = match node {
            Node::Root | Node::NarDir | Node::NarinfoDir => (FileType::Directory, 0o555, 0),
            Node::Git { root, size } => match root.kind {
                Kind::Directory => (FileType::Directory, 0o555, 0),
                Kind::Symlink => (FileType::Symlink, 0o777, *size),
                Kind::Executable => (FileType::RegularFile, 0o555, *size),
                Kind::Regular => (FileType::RegularFile, 0o444, *size),
            },
            Node::Nar { size, .. } => (FileType::RegularFile, 0o444, *size),
            Node::Narinfo { text } => (FileType::RegularFile, 0o444, text.len() as u64),
        };
        let mut time = UNIX_EPOCH + Duration::from_secs(1);
        if matches!(node, Node::Root | Node::NarDir | Node::NarinfoDir) {
            time += Duration::from_nanos(self.read.generation().unwrap_or(0));
        }
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn ttl(ino: u64) -> Duration {
        if ino <= NARINFO_DIR {
            DIR_TTL
        } else {
            TTL
        }
    }

    /// The entries of a directory, `.` and `..` first.
    fn list(&self, ino: u64, node: &Node) -> Result<Vec<DirEntry>, StoreError> {
        let mut out = vec![
            (ino, FileType::Directory, b".".to_vec()),
            (ROOT, FileType::Directory, b"..".to_vec()),
        ];
        let kind_of = |n: &Node| self.attr(0, n).kind;
        match node {
            Node::Root => {
                out.push((NAR_DIR, FileType::Directory, b".nar".to_vec()));
                out.push((NARINFO_DIR, FileType::Directory, b".narinfo".to_vec()));
                for (path, root) in self.read.list_roots()? {
                    let name = path.base_name().into_bytes();
                    let n = self.git_node(root)?;
                    out.push((self.intern(ROOT, &name, n.clone()), kind_of(&n), name));
                }
            }
            Node::NarDir => {
                for (path, size) in self.read.list_nar_sizes()? {
                    let name = format!("{}.nar", path.hash()).into_bytes();
                    let n = Node::Nar {
                        hash: path.hash(),
                        size,
                    };
                    out.push((self.intern(ino, &name, n), FileType::RegularFile, name));
                }
            }
            Node::NarinfoDir => {
                for path in self.read.list()? {
                    let name = format!("{}.narinfo", path.hash()).into_bytes();
                    if let Some(n) = self.resolve(node, &name)? {
                        out.push((self.intern(ino, &name, n), FileType::RegularFile, name));
                    }
                }
            }
            Node::Git { root, .. } => {
                for (name, child) in self.read.children(root)? {
                    let n = self.git_node(child)?;
                    out.push((self.intern(ino, &name, n.clone()), kind_of(&n), name));
                }
            }
            Node::Nar { .. } | Node::Narinfo { .. } => {}
        }
        Ok(out)
    }

    /// Up to `size` bytes at `offset` of a large blob, through `stream` (reopened when the
    /// read is not where the last one ended).
    fn read_large(
        &self,
        stream: &mut Option<(BlobStream, u64)>,
        oid: ObjectId,
        len: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let want = u64::from(size).min(len.saturating_sub(offset));
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(want as usize);
        self.read.read_streamed(stream, oid, offset, offset + want, &mut out)?;
        Ok(out)
    }

    /// The cursor of process `pid` in `ino`, made by `new` when there is none (`None` when
    /// `new` finds nothing to read).
    fn cursor(
        &self,
        ino: u64,
        pid: u32,
        new: impl FnOnce() -> Result<Option<Cursor>, StoreError>,
    ) -> Result<Option<Arc<Mutex<Cursor>>>, Errno> {
        if let Some(c) = self.cursors.lock().get(&(ino, pid)) {
            return Ok(Some(c.clone()));
        }
        let Some(c) = new().map_err(eio)? else {
            return Ok(None);
        };
        let c = Arc::new(Mutex::new(c));
        self.cursors.lock().put((ino, pid), c.clone());
        Ok(Some(c))
    }

    /// Up to `size` bytes at `offset` of the file `node`, for process `pid`.
    fn read_file(&self, ino: u64, node: Node, pid: u32, offset: u64, size: u32) -> Result<Bytes, Errno> {
        let slice = |bytes: Bytes| {
            let start = (offset as usize).min(bytes.len());
            let end = start.saturating_add(size as usize).min(bytes.len());
            bytes.slice(start..end)
        };
        match node {
            Node::Git { root, size: len } if matches!(root.kind, Kind::Regular | Kind::Executable) => {
                if self.read.blob_cacheable(len) {
                    return self.read.blob(root.oid).map(slice).map_err(eio);
                }
                let Some(cursor) = self.cursor(ino, pid, || Ok(Some(Cursor::Large(None))))? else {
                    return Err(Errno::EIO);
                };
                let Cursor::Large(stream) = &mut *cursor.lock() else {
                    return Err(Errno::EIO);
                };
                self.read_large(stream, root.oid, len, offset, size)
                    .map(Bytes::from)
                    .map_err(eio)
            }
            Node::Nar { hash, .. } => {
                let new = || {
                    let entry = self.store_entry(&hash)?;
                    Ok(entry.map(|e| Cursor::Nar(Box::new(e), NarCursor::default())))
                };
                let Some(cursor) = self.cursor(ino, pid, new)? else {
                    return Err(Errno::ENOENT);
                };
                let Cursor::Nar(entry, nar) = &mut *cursor.lock() else {
                    return Err(Errno::EIO);
                };
                self.read
                    .read_nar_at(entry, offset, size as u64, nar)
                    .map(Bytes::from)
                    .map_err(eio)
            }
            Node::Narinfo { text } => Ok(slice(text)),
            _ => Err(Errno::EISDIR),
        }
    }
}

impl Filesystem for GroveFs {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        // Symlink targets never change: let the kernel cache them (ignored by kernels without it).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_CACHE_SYMLINKS);
        // The kernel checks a cached listing against the directory's modification time (the
        // store's generation for the top directories) before using it.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_AUTO_INVAL_DATA);
        // Without this the kernel serialises lookups in a directory: one lookup waiting on a
        // slow peer would hold up every other lookup in the root.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_PARALLEL_DIROPS);
        // Large reads: the kernel asks for up to 1 MiB at once (its request size follows the
        // larger of these two; the store is read-only, so no write ever comes) and reads
        // ahead as far as it allows.
        let _ = config.set_max_write(LARGE_READ);
        if let Err(most) = config.set_max_readahead(LARGE_READ) {
            let _ = config.set_max_readahead(most);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.as_bytes();
        let Some(pnode) = self.node(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        if parent.0 == ROOT && (name == b".nar" || name == b".narinfo") {
            let ino = if name == b".nar" { NAR_DIR } else { NARINFO_DIR };
            let node = if ino == NAR_DIR { Node::NarDir } else { Node::NarinfoDir };
            return reply.entry(&DIR_TTL, &self.attr(ino, &node), Generation(0));
        }
        match self.resolve(&pnode, name) {
            Ok(Some(node)) => {
                let ino = self.intern(parent.0, name, node.clone());
                reply.entry(&TTL, &self.attr(ino, &node), Generation(0));
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(eio(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino.0) {
            Some(node) => reply.attr(&Self::ttl(ino.0), &self.attr(ino.0, &node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino.0) {
            Some(Node::Git { root, .. }) if root.kind == Kind::Symlink => match self.read.blob(root.oid) {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(eio(e)),
            },
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino.0) {
            // ENOSYS to an open puts the kernel in "no open" mode: it stops sending opens and
            // releases for every file and keeps their pages cached, as FOPEN_KEEP_CACHE would.
            // Reads then come without a handle and are served by inode.
            Some(Node::Git { root, .. }) if matches!(root.kind, Kind::Regular | Kind::Executable) => {
                reply.error(Errno::ENOSYS)
            }
            Some(Node::Nar { .. } | Node::Narinfo { .. }) => reply.error(Errno::ENOSYS),
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(node) = self.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match self.read_file(ino.0, node, req.pid(), offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: LockOwner, reply: fuser::ReplyEmpty) {
        // Nothing to flush in a read-only store; ENOSYS makes the kernel stop asking.
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // As for files: the kernel stops sending opendir and releasedir (so neither is
        // implemented here, nor release), and keeps listings (FOPEN_CACHE_DIR) until a
        // directory's modification time moves.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(node) = self.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let top = matches!(node, Node::Root | Node::NarDir | Node::NarinfoDir);
        if !top && !matches!(&node, Node::Git { root, .. } if root.kind == Kind::Directory) {
            return reply.error(Errno::ENOTDIR);
        }
        let key = (ino.0, req.pid());
        let kept = if top && offset > 0 {
            self.listings.lock().get(&key).cloned()
        } else {
            None
        };
        let entries = match kept {
            Some(entries) => entries,
            None => match self.list(ino.0, &node) {
                Ok(entries) => Arc::new(entries),
                Err(e) => return reply.error(eio(e)),
            },
        };
        if top {
            self.listings.lock().put(key, entries.clone());
        }
        let mut full = false;
        for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*child), (i + 1) as u64, *kind, OsStr::from_bytes(name)) {
                full = true;
                break;
            }
        }
        if top && !full {
            // The rest fitted: this reader is done with the listing (the kernel keeps it).
            self.listings.lock().pop(&key);
            give_back_freed_memory();
        }
        reply.ok();
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: fuser::ReplyEmpty) {
        // The kernel asks here for access(2) because the mount does not use
        // default_permissions (see the mount options). Everything is readable by everyone;
        // nothing is writable; only directories and executables can be executed.
        let Some(node) = self.node(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if mask.contains(fuser::AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        let perm = self.attr(ino.0, &node).perm;
        if mask.contains(fuser::AccessFlags::X_OK) && perm & 0o111 == 0 {
            return reply.error(Errno::EACCES);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}

impl std::fmt::Debug for GroveFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroveFs").finish_non_exhaustive()
    }
}

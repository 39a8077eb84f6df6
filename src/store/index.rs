//! Which hashes the store holds, in memory, so that a miss (most of a cache's traffic: Nix asks
//! every substituter for paths it lacks) is answered without a disk or Git lookup.
//!
//! Every writer, in any process, announces the paths it is about to make visible *before* it
//! creates their refs ([`Store::announce`]): it appends `+<hash>\n` records to
//! [`PATHS_LOG`] and then bumps a counter in [`GENERATION`], an 8-byte file that every Grove
//! process maps into memory. A [`PathIndex`] that does not hold a hash loads the counter (a
//! memory read); only if it moved does it read the log's new records. Since the announcement
//! comes first, a path whose ref exists is always in the index of anyone who looks after it
//! was created; a writer that dies between the two leaves a hash in the index without a ref,
//! which costs one Git lookup that finds nothing, never a wrong answer.
//!
//! Once the refs are written the writer bumps the counter again ([`Store::refs_changed`]), so
//! whatever a reader derived from the refs while the counter had one value (the mount's cached
//! listing of its root) is known to be stale once it moves.
//!
//! Refs created by other means (a plain `git fetch` into `refs/nix/`) are seen when an index is
//! next built: each process builds its index from the refs and the log when it starts.
//!
//! The log is also what a read replica follows: its length is a position a follower can ask
//! for the records after (see `grove sync --follow`).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapRaw;

use crate::nix::store_path::StoreHash;

use super::error::StoreError;
use super::repo::{Store, REF_PREFIX};

/// The log of announced paths, in the repository's directory.
pub const PATHS_LOG: &str = "grove-paths.log";

/// The 8-byte counter writers bump after appending to [`PATHS_LOG`].
pub const GENERATION: &str = "grove-generation";

/// One record: `+`, the 32-character hash, a newline.
const RECORD: usize = 34;

/// A counter shared by every process that maps the same file.
struct Generation {
    map: MmapRaw,
}

impl Generation {
    /// Maps `dir/grove-generation` to read, creating it if it is missing and the directory is
    /// writable.
    fn open(dir: &Path) -> io::Result<Generation> {
        match Self::open_writable(dir) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS) => {
                Self::read_only(&dir.join(GENERATION))
            }
            other => other,
        }
    }

    /// Maps `dir/grove-generation` to read and bump, creating it if it is missing.
    fn open_writable(dir: &Path) -> io::Result<Generation> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(GENERATION))?;
        if file.metadata()?.len() < 8 {
            file.set_len(8)?;
        }
        Ok(Generation {
            map: MmapRaw::map_raw(&file)?,
        })
    }

    /// A store this process may not write to: its counter is read, never bumped.
    fn read_only(path: &Path) -> io::Result<Generation> {
        let file = File::open(path)?;
        if file.metadata()?.len() < 8 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the generation file is short",
            ));
        }
        Ok(Generation {
            map: memmap2::MmapOptions::new().map_raw_read_only(&file)?,
        })
    }

    fn counter(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes long and lives as long as
        // `self`; other processes only ever touch these bytes atomically too.
        unsafe { &*(self.map.as_ptr() as *const AtomicU64) }
    }

    fn load(&self) -> u64 {
        self.counter().load(Ordering::Acquire)
    }

    /// Only on a map from [`Generation::open_writable`].
    fn bump(&self) {
        self.counter().fetch_add(1, Ordering::AcqRel);
    }
}

/// Every hash the store holds (and perhaps a few it was about to hold), kept current.
pub struct PathIndex {
    hashes: HashSet<StoreHash>,
    /// Where the next unread record of the log starts.
    offset: u64,
    /// The counter's value when the log was last read.
    seen: u64,
    generation: Generation,
    log: Option<File>,
    log_path: PathBuf,
}

impl PathIndex {
    /// Whether the store may hold `hash`: `false` is certain, `true` is to be confirmed in Git.
    /// Reads memory only, unless a writer announced paths since the last look.
    pub fn may_hold(&mut self, hash: &StoreHash) -> bool {
        if self.hashes.contains(hash) {
            return true;
        }
        let now = self.generation.load();
        if now != self.seen {
            if let Err(e) = self.read_log() {
                tracing::warn!("cannot read the paths log: {e}; treating every hash as present");
                return true;
            }
            self.seen = now;
            return self.hashes.contains(hash);
        }
        false
    }

    /// The store's generation now. It moves when paths are announced and again once their
    /// refs are written: whatever was derived from the refs under one value is stale once it
    /// has moved.
    pub fn generation(&self) -> u64 {
        self.generation.load()
    }

    /// How many hashes the index holds.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the index holds no hash.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Reads the records appended since the last read.
    fn read_log(&mut self) -> io::Result<()> {
        if self.log.is_none() {
            // No writer had announced anything when the index was built.
            self.log = match File::open(&self.log_path) {
                Ok(f) => Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
        }
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        log.seek(SeekFrom::Start(self.offset))?;
        let mut tail = Vec::new();
        log.read_to_end(&mut tail)?;
        let used = parse_records(&tail, |h| {
            self.hashes.insert(h);
        });
        self.offset += used as u64;
        Ok(())
    }
}

/// Calls `found` for each complete record in `bytes` and returns how many bytes they took. A
/// record is the 33 bytes before each newline: a writer that failed part-way (a full disk) may
/// leave a piece of a record, which the next record's newline ends and which is skipped.
pub fn parse_records(bytes: &[u8], mut found: impl FnMut(StoreHash)) -> usize {
    let mut used = 0;
    for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        if i + 1 >= RECORD {
            let rec = &bytes[i + 1 - RECORD..i];
            if rec[0] == b'+' {
                if let Some(h) = std::str::from_utf8(&rec[1..]).ok().and_then(|s| s.parse().ok()) {
                    found(h);
                }
            }
        }
        used = i + 1;
    }
    used
}

impl Store {
    /// Builds the index of every hash this store holds: the log first, then the refs (see
    /// the module docs for why in this order).
    pub fn path_index(&self) -> Result<PathIndex, StoreError> {
        let generation = Generation::open(self.path())?;
        let seen = generation.load();
        let mut index = PathIndex {
            hashes: HashSet::new(),
            offset: 0,
            seen,
            generation,
            log: None,
            log_path: self.path().join(PATHS_LOG),
        };
        index.read_log()?;
        for name in self.repo.references_glob(&format!("{REF_PREFIX}*"))?.names() {
            if let Some(h) = name?.strip_prefix(REF_PREFIX).and_then(|h| h.parse().ok()) {
                index.hashes.insert(h);
            }
        }
        Ok(index)
    }

    /// Tells every index that `hashes` are about to be added: appends them to the log in one
    /// write and bumps the generation. Call before creating their refs.
    pub fn announce(&self, hashes: impl IntoIterator<Item = StoreHash>) -> Result<(), StoreError> {
        let mut records = Vec::new();
        for h in hashes {
            records.push(b'+');
            records.extend_from_slice(h.to_string().as_bytes());
            records.push(b'\n');
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut log = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.path().join(PATHS_LOG))?;
        // One write with O_APPEND: records of concurrent writers never interleave.
        log.write_all(&records)?;
        Generation::open_writable(self.path())?.bump();
        Ok(())
    }

    /// Tells every index that refs changed: bumps the generation, so that what a reader
    /// derived from the refs (the mount's cached listings) is taken anew.
    pub fn refs_changed(&self) -> Result<(), StoreError> {
        Generation::open_writable(self.path())?.bump();
        Ok(())
    }

    /// Up to `max` bytes of the log from byte `from`, and the log's whole length (a store
    /// that never announced a path has an empty log).
    pub fn paths_log(&self, from: u64, max: usize) -> Result<(Vec<u8>, u64), StoreError> {
        read_log_at(&self.path().join(PATHS_LOG), from, max)
    }
}

/// Up to `max` bytes of the log file at `path` from byte `from`, and its whole length.
pub fn read_log_at(path: &Path, from: u64, max: usize) -> Result<(Vec<u8>, u64), StoreError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    let mut out = Vec::new();
    if from < len {
        file.seek(SeekFrom::Start(from))?;
        file.take(max as u64).read_to_end(&mut out)?;
    }
    Ok((out, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const B: &str = "11111111111111111111111111111111";

    fn parsed(bytes: &[u8]) -> (Vec<String>, usize) {
        let mut out = Vec::new();
        let used = parse_records(bytes, |h| out.push(h.to_string()));
        (out, used)
    }

    #[test]
    fn records_and_a_torn_one() {
        let log = format!("+{A}\n+{B}\n+0123");
        assert_eq!(parsed(log.as_bytes()), (vec![A.to_string(), B.to_string()], 68));
        // A piece left by a writer that failed, then a whole record: the record counts.
        let torn = format!("+0123+{B}\n");
        assert_eq!(parsed(torn.as_bytes()).0, vec![B.to_string()]);
        assert_eq!(parsed(b"+short\n\n"), (vec![], 8));
    }
}

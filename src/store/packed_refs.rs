//! Adding a large batch of refs in one step: `packed-refs` rewritten with the new refs merged in
//! and renamed into place, instead of one loose file each. A file per ref costs a disk block and
//! an inode allocation in one directory of up to a million entries (most of the time of a
//! large import or sync went there); the batch also becomes visible at once, which keeps it
//! closed under references. The format is Git's (`<oid> <refname>` lines sorted by name, with
//! the header that tells readers they are sorted, so libgit2 and Git find a ref by binary
//! search). The rewrite holds `packed-refs.lock`, the lock Git and libgit2 take for it.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::nix::store_path::StorePath;

use super::error::StoreError;
use super::locks::{lock_age, LOCK_WAIT, STALE_LOCK};
use super::repo::{ObjectId, Store, REF_PREFIX};

/// What creating refs did.
#[derive(Debug, Default)]
pub struct RefOutcome {
    /// Paths whose ref was created.
    pub added: Vec<StorePath>,
    /// Paths whose ref existed with the same commit.
    pub present: usize,
    /// Paths whose ref existed with another commit (left as it is): path, existing, offered.
    pub conflicts: Vec<(StorePath, ObjectId, ObjectId)>,
}

/// The header Git writes: refs are sorted (and peeled, of which Grove's have nothing).
const HEADER: &[u8] = b"# pack-refs with: peeled fully-peeled sorted \n";

/// `packed-refs.lock`, removed when dropped unless it was renamed into place.
struct Lock {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Store {
    /// Creates the refs of `refs` that do not exist, all at once, in `packed-refs`; existing
    /// ones are reported as present or conflicting in `outcome`, never moved.
    pub(super) fn add_packed_refs(
        &self,
        refs: &[(StorePath, ObjectId)],
        outcome: &mut RefOutcome,
    ) -> Result<(), StoreError> {
        let packed = self.path().join("packed-refs");
        let mut lock = self.lock_packed_refs(&packed)?;
        let old = match std::fs::read(&packed) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut seen = HashSet::new();
        let mut new_lines: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (path, oid) in refs {
            let name = format!("{REF_PREFIX}{}", path.hash());
            if !seen.insert(name.clone()) {
                continue;
            }
            match self.commit_of_ref(&path.hash())? {
                Some(existing) if existing == *oid => outcome.present += 1,
                Some(existing) => outcome.conflicts.push((path.clone(), existing, *oid)),
                None => {
                    new_lines.push((name.clone().into_bytes(), format!("{oid} {name}\n").into_bytes()));
                    outcome.added.push(path.clone());
                }
            }
        }
        if new_lines.is_empty() {
            return Ok(());
        }
        let mut blocks = blocks_of(&old);
        blocks.extend(new_lines.iter().map(|(n, l)| (n.as_slice(), l.as_slice())));
        blocks.sort_by(|a, b| a.0.cmp(b.0));
        let Some(mut file) = lock.file.take() else {
            return Err(StoreError::Corrupt("packed-refs".into(), "lost its lock".into()));
        };
        let written = (|| -> io::Result<()> {
            let mut out = io::BufWriter::with_capacity(1 << 20, &mut file);
            out.write_all(HEADER)?;
            for (_, block) in &blocks {
                out.write_all(block)?;
            }
            out.flush()?;
            drop(out);
            file.sync_all()?;
            std::fs::rename(&lock.path, &packed)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&lock.path);
            outcome.added.clear();
            return Err(e.into());
        }
        Ok(())
    }

    /// Takes `packed-refs.lock`, removing one left by a dead writer.
    fn lock_packed_refs(&self, packed: &Path) -> Result<Lock, StoreError> {
        let path = packed.with_file_name("packed-refs.lock");
        let start = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(Lock { path, file: Some(file) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if lock_age(&path).is_some_and(|age| age > STALE_LOCK) {
                        self.remove_stale_lock(&path)?;
                    } else if start.elapsed() > LOCK_WAIT {
                        return Err(StoreError::Io(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            format!("{} is held by another writer", path.display()),
                        )));
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The refs of a `packed-refs` file: each ref's name and its lines (the ref and any `^` peeled
/// line after it), header lines left out.
fn blocks_of(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out: Vec<(&[u8], &[u8])> = Vec::new();
    let mut start = 0;
    let mut current: Option<(usize, usize, usize)> = None; // (name start, name end, block start)
    for (i, _) in data.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        let line = &data[start..i];
        if line.first() == Some(&b'^') {
            start = i + 1;
            continue;
        }
        if let Some((ns, ne, bs)) = current.take() {
            out.push((&data[ns..ne], &data[bs..start]));
        }
        if line.first() != Some(&b'#') {
            if let Some(sp) = line.iter().position(|b| *b == b' ') {
                current = Some((start + sp + 1, i, start));
            }
        }
        start = i + 1;
    }
    if let Some((ns, ne, bs)) = current {
        out.push((&data[ns..ne], &data[bs..start]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::blocks_of;

    #[test]
    fn blocks_keep_peeled_lines_and_drop_the_header() {
        let data = b"# pack-refs with: peeled\naaa refs/a\n^bbb\nccc refs/c\n";
        let blocks = blocks_of(data);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0], (&b"refs/a"[..], &b"aaa refs/a\n^bbb\n"[..]));
        assert_eq!(blocks[1], (&b"refs/c"[..], &b"ccc refs/c\n"[..]));
    }
}

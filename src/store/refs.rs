//! The one way store paths become visible: by their `refs/nix/<hash>` refs, created one at a
//! time in the order given (callers give references first), each atomically (Git's lock file,
//! then a rename). An error, a kill or a full disk part-way therefore leaves a prefix of the
//! batch visible in which every path has its references: never a path without them. A ref
//! that exists already is never moved. A lock left by a dead writer does not block anyone: a
//! live writer holds a ref's lock for microseconds, so one older than [`STALE_LOCK`] is removed.
//! A batch of [`PACKED_BATCH`] refs or more is added to `packed-refs` in one rename instead
//! ([`super::packed_refs`]): all of it becomes visible at once, or none.

use std::io;
use std::time::{Duration, Instant};

use crate::nix::store_path::StorePath;

use super::error::StoreError;
use super::locks::{lock_age, LOCK_WAIT, STALE_LOCK};
pub use super::packed_refs::RefOutcome;
use super::repo::{ObjectId, Store, REF_PREFIX};

/// A batch of this many refs is added to `packed-refs` at once (see [`super::packed_refs`]).
const PACKED_BATCH: usize = 1000;

/// What one ref turned out to be.
enum Created {
    New,
    Present,
    Conflict(ObjectId),
}

impl Store {
    /// Creates `refs/nix/<hash>` for each path and commit, one after the other, in the order
    /// given: pass references before the paths that refer to them.
    pub fn create_refs(&self, refs: &[(StorePath, ObjectId)], message: &str) -> Result<RefOutcome, StoreError> {
        self.announce(refs.iter().map(|(p, _)| p.hash()))?;
        let outcome = self.create_announced_refs(refs, message);
        // Even after an error, for part of the batch may be visible; the first error is the
        // one reported.
        let changed = if refs.is_empty() { Ok(()) } else { self.refs_changed() };
        let outcome = outcome?;
        changed.map(|()| outcome)
    }

    fn create_announced_refs(&self, refs: &[(StorePath, ObjectId)], message: &str) -> Result<RefOutcome, StoreError> {
        let mut outcome = RefOutcome::default();
        if refs.len() >= PACKED_BATCH {
            self.add_packed_refs(refs, &mut outcome)?;
            if let Err(e) = self.write_commit_graph() {
                tracing::warn!("{e}");
            }
            return Ok(outcome);
        }
        for (path, oid) in refs {
            match self.create_ref(path, *oid, message)? {
                Created::New => outcome.added.push(path.clone()),
                Created::Present => outcome.present += 1,
                Created::Conflict(existing) => outcome.conflicts.push((path.clone(), existing, *oid)),
            }
        }
        Ok(outcome)
    }

    fn create_ref(&self, path: &StorePath, oid: ObjectId, message: &str) -> Result<Created, StoreError> {
        let name = format!("{REF_PREFIX}{}", path.hash());
        let start = Instant::now();
        loop {
            // Created only if absent, checked under the ref's lock (a plain "create unless it
            // exists" checks before locking, so two writers could both create it).
            let err = match self
                .repo
                .reference_matching(&name, oid, true, ObjectId::ZERO_SHA1, message)
            {
                Ok(_) => return Ok(Created::New),
                Err(e) => e,
            };
            match err.code() {
                git2::ErrorCode::Exists | git2::ErrorCode::Modified => {
                    let existing = self.repo.refname_to_id(&name)?;
                    return Ok(if existing == oid {
                        Created::Present
                    } else {
                        Created::Conflict(existing)
                    });
                }
                git2::ErrorCode::Locked => {
                    let lock = self.path().join(format!("{name}.lock"));
                    if lock_age(&lock).is_some_and(|age| age > STALE_LOCK) {
                        self.remove_stale_lock(&lock)?;
                    } else if start.elapsed() > LOCK_WAIT {
                        return Err(err.into());
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                _ => return Err(err.into()),
            }
        }
    }

    /// Lock files under `refs/` older than [`STALE_LOCK`]: left by writers that died. They
    /// block nobody (the next writer of that ref removes its lock), but `grove verify` lists them.
    pub fn stale_locks(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut dirs = vec![self.path().join("refs")];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let p = entry?.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "lock") && lock_age(&p).is_some_and(|a| a > STALE_LOCK) {
                    out.push(p.strip_prefix(self.path()).unwrap_or(&p).display().to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

//! Lock files left by writers that died: how old a lock is, and removing a stale one safely.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::error::StoreError;
use super::repo::Store;

/// A lock file older than this was left by a dead writer.
pub const STALE_LOCK: Duration = Duration::from_secs(10);

/// How long a writer waits for another's lock before giving up.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(30);

impl Store {
    /// Removes `lock` if it is still stale. Writers that find the same stale lock take turns
    /// (an exclusive `flock` on one file of the store), and each looks at its age again: one
    /// that removed it may have locked the ref anew, and that live lock must stay.
    pub(super) fn remove_stale_lock(&self, lock: &Path) -> Result<(), StoreError> {
        use std::os::fd::AsRawFd;
        let turn = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path().join("grove-stale-locks"))?;
        // SAFETY: flock on a descriptor this function owns; released when `turn` is closed.
        if unsafe { libc::flock(turn.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        if lock_age(lock).is_some_and(|age| age > STALE_LOCK) {
            match std::fs::remove_file(lock) {
                Ok(()) => tracing::warn!("removed {}, left by a writer that died", lock.display()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// How long ago a lock file was written, if it exists.
pub(super) fn lock_age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(SystemTime::now().duration_since(modified).unwrap_or_default())
}

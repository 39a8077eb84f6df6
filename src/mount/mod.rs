//! `grove mount`: the store as a read-only Nix-store-like file system over FUSE (the file
//! system itself is in [`fs`]).

mod fs;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::{MountOption, SessionACL};

use crate::read::ReadPath;
pub use fs::GroveFs;

/// Mount options: read-only, shared with other users, unmounted if the process dies. Not
/// `default_permissions`: with it the kernel would ask for the root's attributes (never
/// cached, see [`fs`]) on every path walked through it. Every mode is readable by all and the
/// mount is read-only, so the kernel's own checks (execute bits, writes) and
/// [`GroveFs`]'s `access` are all the checking there is to do.
fn config() -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("grove".into()),
        MountOption::Subtype("grove".into()),
        MountOption::AutoUnmount,
        MountOption::NoAtime,
        MountOption::Exec,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(4);
    config.clone_fd = true;
    config
}

/// Mounts the store at `dir`; calls `ready` once mounted, then serves until SIGINT/SIGTERM or
/// until someone unmounts it (`fusermount3 -u`).
pub fn mount(read: ReadPath, dir: &Path, ready: impl FnOnce()) -> anyhow::Result<()> {
    use anyhow::Context;
    let fs = GroveFs::new(Arc::new(read));
    let session = fuser::spawn_mount(fs, dir, &config()).with_context(|| format!("cannot mount {}", dir.display()))?;
    ready();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let signalled = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<_, std::io::Error>(true),
                _ = term.recv() => return Ok(true),
                _ = tick.tick() => if session.guard.is_finished() { return Ok(false) },
            }
        }
    })?;
    if !signalled {
        return session.join().context("the mount ended with an error");
    }
    let result = unmount(dir);
    // The session's threads end once the kernel drops the mount; never wait forever for them.
    for _ in 0..50 {
        if session.guard.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    result
}

/// Unmounts `dir`; when busy (a process holds a file open), detaches it lazily so the kernel
/// finishes once the last file is closed, and says so.
fn unmount(dir: &Path) -> anyhow::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: umount2 takes a NUL-terminated path and flags; no memory is shared.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EPERM) => {
            let status = std::process::Command::new("fusermount3").arg("-u").arg(dir).status()?;
            anyhow::ensure!(status.success(), "fusermount3 -u {} failed", dir.display());
            Ok(())
        }
        Some(libc::EBUSY) => {
            // SAFETY: as above.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                eprintln!("{} is busy (a file is open there); detached it lazily", dir.display());
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "cannot unmount {}: {}",
                    dir.display(),
                    std::io::Error::last_os_error()
                ))
            }
        }
        _ => Err(anyhow::anyhow!("cannot unmount {}: {err}", dir.display())),
    }
}

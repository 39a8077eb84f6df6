//! `grove mount`: in the foreground, or detached once the mount is ready (`--daemon`).

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::{bail, Result};

use crate::read::ReadPath;

/// Mounts the store at `dir` from `read`; with `daemon`, returns once it is mounted.
pub fn mount(read: ReadPath, dir: &Path, daemon: bool) -> Result<()> {
    if !dir.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    let ready = if daemon { Some(daemonize()?) } else { None };
    crate::mount::mount(read, dir, || {
        if let Some(mut tell_parent) = ready {
            let _ = tell_parent.write_all(b"1");
            detach_stdio();
        }
    })
}

/// Forks: the parent waits until the child reports the mount ready (exit 0) or fails (exit 1);
/// the child, in a new session, gets the pipe to report on.
fn daemonize() -> Result<io::PipeWriter> {
    let (mut reader, writer) = io::pipe()?;
    // SAFETY: called before this process starts any thread, so the child is a complete copy.
    match unsafe { libc::fork() } {
        -1 => bail!("fork failed: {}", io::Error::last_os_error()),
        0 => {
            drop(reader);
            // SAFETY: setsid has no memory effects; it detaches from the terminal's session.
            unsafe { libc::setsid() };
            Ok(writer)
        }
        _ => {
            drop(writer);
            let mut byte = [0u8; 1];
            let ok = matches!(reader.read(&mut byte), Ok(1));
            std::process::exit(if ok { 0 } else { 1 });
        }
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

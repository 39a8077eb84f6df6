//! Replication between Grove repositories with the real `git` (any URL Git speaks: a path,
//! `file://`, `ssh://`, smart HTTP).
//!
//! Fetches land in a quarantine namespace (`refs/grove/incoming/…`), never in `refs/nix/`
//! directly: each new path is read back, its references checked against its parents and its
//! NAR re-hashed against its NarHash, and only then are the `refs/nix/<hash>` refs created, in
//! one transaction. A ref that exists locally with another commit is never overwritten: the
//! mismatch is reported and skipped. Pushes are never forced for the same reason.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::nix::store_path::StoreHash;
use crate::store::adopt::{Adopted, INCOMING};
use crate::store::refs::RefOutcome;
use crate::store::{Entry, ObjectId, Store, REF_PREFIX};

use super::error::PeerError;

/// How many refspecs one `git push` gets.
const PUSH_BATCH: usize = 1000;

/// Up to this many missing paths, a sync fetches them by name; beyond, with one wildcard.
pub const NAMED_FETCH_LIMIT: usize = 1000;

/// A Git peer.
pub struct GitRemote {
    url: String,
    timeout: Option<Duration>,
    ssh_key: Option<PathBuf>,
}

impl GitRemote {
    /// A peer at `url`; `timeout` bounds lazy fetches (replication runs without one);
    /// `ssh_key` (`store.ssh_private_key_path`) is the identity for `ssh://` URLs.
    pub fn new(url: &str, timeout: Option<Duration>, ssh_key: Option<PathBuf>) -> Self {
        GitRemote {
            url: url.to_string(),
            timeout,
            ssh_key,
        }
    }

    /// The peer's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetches one path with its closure. `Ok(None)` if the peer does not have it.
    pub fn fetch_path(&self, store: &Store, hash: &StoreHash) -> Result<Option<Adopted>, PeerError> {
        let ns = incoming_namespace();
        match self.fetch_into(store, &format!("+{REF_PREFIX}{hash}:{ns}/{hash}")) {
            Ok(()) => Ok(Some(store.adopt_namespace(&ns, true)?)),
            Err(PeerError::Git(_, msg)) if msg.contains("couldn't find remote ref") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches every path the peer has that this store lacks (or holds as another commit):
    /// the peer's refs are listed, compared with the store's, and only the differing ones are
    /// fetched, by name. Neither the fetch nor the quarantine grows with the paths both have.
    pub fn sync(&self, store: &Store) -> Result<Adopted, PeerError> {
        let mut wanted = Vec::new();
        let mut present = 0;
        for (hash, oid) in self.list_refs(store)? {
            if store.commit_of_ref(&hash)? == Some(oid) {
                present += 1;
            } else {
                wanted.push(hash);
            }
        }
        if wanted.len() > NAMED_FETCH_LIMIT {
            // Git matches every advertised ref against every refspec: for many paths one
            // wildcard refspec is far cheaper than naming each.
            let ns = incoming_namespace();
            self.fetch_into(store, &format!("+{REF_PREFIX}*:{ns}/*"))?;
            return Ok(store.adopt_namespace(&ns, false)?);
        }
        let mut adopted = Adopted {
            present,
            ..Adopted::default()
        };
        for batch in wanted.chunks(NAMED_FETCH_LIMIT) {
            let a = self.fetch_paths(store, batch)?;
            adopted.added.extend(a.added);
            adopted.present += a.present;
            adopted.conflicts.extend(a.conflicts);
            adopted.rejected.extend(a.rejected);
        }
        Ok(adopted)
    }

    /// The peer's store paths: hash and commit of each `refs/nix/` ref.
    fn list_refs(&self, store: &Store) -> Result<Vec<(StoreHash, ObjectId)>, PeerError> {
        let listing = self.git(
            store.path(),
            &[
                "-c",
                "protocol.version=2",
                "ls-remote",
                "--refs",
                "--",
                &self.url,
                &format!("{REF_PREFIX}*"),
            ],
        )?;
        let mut out = Vec::new();
        for line in listing.lines() {
            let parsed = line.split_once('\t').and_then(|(oid, name)| {
                let hash = name.strip_prefix(REF_PREFIX)?.parse().ok()?;
                Some((hash, ObjectId::from_str(oid).ok()?))
            });
            match parsed {
                Some(p) => out.push(p),
                None => tracing::warn!("{}: ignoring ref line '{line}'", self.url),
            }
        }
        Ok(out)
    }

    /// Fetches the paths `hashes` name, with their closures, in one fetch; hashes the peer
    /// lacks are skipped. With protocol v2 the peer lists only the refs asked for (a
    /// `ref-prefix` each), so the cost does not grow with the peer's size.
    pub fn fetch_paths(&self, store: &Store, hashes: &[StoreHash]) -> Result<Adopted, PeerError> {
        let ns = incoming_namespace();
        self.clean_quarantine(store);
        self.fetch_named(store.path(), None, hashes, &ns)?;
        Ok(store.adopt_namespace(&ns, false)?)
    }

    /// Fetches the refs of `hashes` into `into/<hash>` of the Git directory `dir` (writing
    /// objects to `objects` if given). A refspec `refs/nix/<hash>*` matches the ref if it
    /// exists and is no error if it does not (a plain one fails the whole fetch); refspecs go
    /// on standard input, so a batch is not bounded by the argument list.
    fn fetch_named(
        &self,
        dir: &Path,
        objects: Option<&Path>,
        hashes: &[StoreHash],
        into: &str,
    ) -> Result<(), PeerError> {
        let specs: String = hashes
            .iter()
            .map(|h| format!("+{REF_PREFIX}{h}*:{into}/{h}*\n"))
            .collect();
        let args = [
            "-c",
            "protocol.version=2",
            "fetch",
            "--no-tags",
            "--no-write-fetch-head",
            "--quiet",
            "--stdin",
            "--",
            &self.url,
        ];
        self.run_git(dir, objects, &args, Some(specs.into_bytes())).map(drop)
    }

    /// [`GitRemote::fetch_paths`] from a scratch Git directory beside the store: it writes into
    /// the store's objects (`GIT_OBJECT_DIRECTORY`) but holds as refs only `haves`, the commits
    /// of the paths' references that the store holds. `git fetch` negotiates with and checks
    /// connectivity against every ref of the repository it runs in, which in the store itself
    /// means every path (0.36 s for one path at 100,000 paths, most of it those two); here it
    /// is a handful. Missing haves cost bytes, never correctness: the peer then sends more.
    pub fn fetch_paths_beside(
        &self,
        store: &Store,
        hashes: &[StoreHash],
        haves: &[ObjectId],
    ) -> Result<Adopted, PeerError> {
        let scratch = Scratch::new(store.path())?;
        let objects = store.path().join("objects");
        self.run_git(scratch.path(), None, &["init", "--bare", "--quiet"], None)?;
        for (i, oid) in haves.iter().enumerate() {
            let name = scratch.path().join("refs").join(format!("have-{i}"));
            std::fs::write(name, format!("{oid}\n")).map_err(|e| self.io(e))?;
        }
        self.fetch_named(scratch.path(), Some(&objects), hashes, "refs/fetched")?;
        let listing = self.run_git(
            scratch.path(),
            Some(&objects),
            &["for-each-ref", "--format=%(objectname)", "refs/fetched/"],
            None,
        )?;
        let tips = listing
            .lines()
            .filter_map(|l| ObjectId::from_str(l.trim()).ok())
            .collect();
        Ok(store.adopt(tips, false)?)
    }

    fn io(&self, e: std::io::Error) -> PeerError {
        PeerError::Git(self.url.clone(), e.to_string())
    }

    /// Pushes `entries` (callers pass whole closures) to the peer without overwriting anything:
    /// `added` are the paths pushed.
    pub fn push(&self, store: &Store, entries: &[Entry]) -> Result<RefOutcome, PeerError> {
        let listing = self.git(
            store.path(),
            &["ls-remote", "--refs", "--", &self.url, &format!("{REF_PREFIX}*")],
        )?;
        let mut remote: BTreeMap<String, ObjectId> = BTreeMap::new();
        for line in listing.lines() {
            if let Some((oid, name)) = line.split_once('\t') {
                if let Ok(oid) = ObjectId::from_str(oid) {
                    remote.insert(name.to_string(), oid);
                }
            }
        }
        let mut report = RefOutcome::default();
        let mut specs = Vec::new();
        for e in entries {
            let name = format!("{REF_PREFIX}{}", e.info.path.hash());
            match remote.get(&name) {
                None => {
                    specs.push(format!("{}:{name}", e.commit));
                    report.added.push(e.info.path.clone());
                }
                Some(oid) if *oid == e.commit => report.present += 1,
                Some(oid) => report.conflicts.push((e.info.path.clone(), e.commit, *oid)),
            }
        }
        for batch in specs.chunks(PUSH_BATCH) {
            let mut args = vec!["push", "--quiet", "--no-verify", "--", &self.url];
            args.extend(batch.iter().map(String::as_str));
            self.git(store.path(), &args)?;
        }
        Ok(report)
    }

    /// Fetches `refspec` from the peer (objects checked by `fetch.fsckObjects`), after clearing
    /// quarantine refs that killed fetches left behind.
    fn fetch_into(&self, store: &Store, refspec: &str) -> Result<(), PeerError> {
        self.clean_quarantine(store);
        let args = [
            "fetch",
            "--no-tags",
            "--no-write-fetch-head",
            "--quiet",
            "--",
            &self.url,
            refspec,
        ];
        self.git(store.path(), &args).map(drop)
    }

    /// Removes quarantine refs that killed fetches left behind.
    fn clean_quarantine(&self, store: &Store) {
        match store.clean_quarantine() {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed the quarantine refs of {n} fetches that were killed"),
            Err(e) => tracing::warn!("cannot clear old quarantine refs: {e}"),
        }
    }

    /// Runs git in the store; returns its standard output, or its standard error as the error.
    fn git(&self, dir: &Path, args: &[&str]) -> Result<String, PeerError> {
        self.run_git(dir, None, args, None)
    }

    /// Runs git in the Git directory `dir` (with the object directory `objects`, if given, and
    /// `input` on its standard input).
    fn run_git(
        &self,
        dir: &Path,
        objects: Option<&Path>,
        args: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<String, PeerError> {
        let mut cmd = Command::new("git");
        if let Some(objects) = objects {
            cmd.env("GIT_OBJECT_DIRECTORY", objects);
        }
        if let Some(key) = &self.ssh_key {
            // Git runs ssh through the shell: quote the path for it.
            let quoted = key.display().to_string().replace('\'', "'\\''");
            cmd.env(
                "GIT_SSH_COMMAND",
                format!("ssh -i '{quoted}' -o IdentitiesOnly=yes -o BatchMode=yes"),
            );
        }
        // The fetch dies with this process: no git left running after a kill.
        // SAFETY: prctl, getppid and _exit are async-signal-safe; nothing is allocated between
        // fork and exec.
        let parent = std::process::id();
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // The parent may have died before the flag was set.
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd
            .arg("--git-dir")
            .arg(dir)
            .args([
                "-c",
                "fetch.fsckObjects=true",
                "-c",
                "core.askPass=",
                "-c",
                "credential.interactive=never",
            ])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PeerError::Git(self.url.clone(), format!("cannot run git: {e}")))?;
        let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(PeerError::Git(self.url.clone(), "git has no pipes".into()));
        };
        if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
            // Fed from a thread: git may answer before it has read everything.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
        }
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| PeerError::Git(self.url.clone(), e.to_string()))?
            {
                break status;
            }
            if self.timeout.is_some_and(|t| start.elapsed() > t) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PeerError::Timeout(self.url.clone(), self.timeout.unwrap_or_default()));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            let msg = err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PeerError::Git(self.url.clone(), msg));
        }
        Ok(out)
    }
}

/// A scratch Git directory in the store's directory, removed when dropped; those of processes
/// that died are removed by the next one.
struct Scratch(PathBuf);

/// The prefix of scratch directories' names.
const SCRATCH: &str = "grove-fetch-";

impl Scratch {
    fn new(store: &Path) -> Result<Self, PeerError> {
        let io = |e: std::io::Error| PeerError::Git(store.display().to_string(), e.to_string());
        for entry in std::fs::read_dir(store).map_err(io)?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(SCRATCH))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: signal 0 only checks that the process exists.
            let dead = unsafe { libc::kill(pid, 0) } != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
            if dead {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{SCRATCH}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = store.join(name);
        std::fs::create_dir(&dir).map_err(io)?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh quarantine namespace for one fetch.
fn incoming_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{INCOMING}/{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

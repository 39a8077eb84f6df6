//! Replication between Grove repositories with the real `git` (any URL Git speaks: a path,
//! `file://`, `ssh://`, smart HTTP).
//!
//! Fetches land in a quarantine namespace (`refs/grove/incoming/…`), never in `refs/nix/`
//! directly: each new path is read back, its references checked against its parents and its
//! NAR re-hashed against its NarHash, and only then are the `refs/nix/<hash>` refs created, in
//! one transaction. A ref that exists locally with another commit is never overwritten: the
//! mismatch is reported and skipped. Pushes are never forced for the same reason.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use git2::Oid;

use crate::peers::PeerError;
use crate::store::{Entry, Store, REF_PREFIX};
use crate::store_path::{StoreHash, StorePath};

/// Where fetched refs wait until they are checked.
const INCOMING: &str = "refs/grove/incoming";

/// How many refspecs one `git push` gets.
const PUSH_BATCH: usize = 1000;

/// A Git peer.
pub struct GitRemote {
    url: String,
    timeout: Option<Duration>,
}

/// What adopting fetched paths did.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Paths that are new in the store.
    pub added: Vec<StorePath>,
    /// Paths the store already had, with the same commit.
    pub present: usize,
    /// Paths the store has with other metadata (kept as they are): path, local, peer commit.
    pub conflicts: Vec<(StorePath, Oid, Oid)>,
    /// Paths refused, with why (their dependents are refused too).
    pub rejected: Vec<(StorePath, String)>,
}

/// What a push did.
#[derive(Debug, Default)]
pub struct Pushed {
    /// Paths the peer did not have and now has.
    pub pushed: Vec<StorePath>,
    /// Paths the peer had with the same commit.
    pub present: usize,
    /// Paths the peer has with another commit (left as they are): path, local, peer commit.
    pub conflicts: Vec<(StorePath, Oid, Oid)>,
}

impl GitRemote {
    /// A peer at `url`; `timeout` bounds lazy fetches (replication runs without one).
    pub fn new(url: &str, timeout: Option<Duration>) -> Self {
        GitRemote {
            url: url.to_string(),
            timeout,
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
            Ok(()) => Ok(Some(adopt_namespace(store, &ns, true)?)),
            Err(PeerError::Git(_, msg)) if msg.contains("couldn't find remote ref") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches every path the peer has.
    pub fn sync(&self, store: &Store) -> Result<Adopted, PeerError> {
        let ns = incoming_namespace();
        self.fetch_into(store, &format!("+{REF_PREFIX}*:{ns}/*"))?;
        adopt_namespace(store, &ns, false)
    }

    /// Pushes `entries` (callers pass whole closures) to the peer without overwriting anything.
    pub fn push(&self, store: &Store, entries: &[Entry]) -> Result<Pushed, PeerError> {
        let listing = self.git(
            store.path(),
            &["ls-remote", "--refs", "--", &self.url, &format!("{REF_PREFIX}*")],
        )?;
        let mut remote: BTreeMap<String, Oid> = BTreeMap::new();
        for line in listing.lines() {
            if let Some((oid, name)) = line.split_once('\t') {
                if let Ok(oid) = Oid::from_str(oid) {
                    remote.insert(name.to_string(), oid);
                }
            }
        }
        let mut report = Pushed::default();
        let mut specs = Vec::new();
        for e in entries {
            let name = format!("{REF_PREFIX}{}", e.info.path.hash());
            match remote.get(&name) {
                None => {
                    specs.push(format!("{}:{name}", e.commit));
                    report.pushed.push(e.info.path.clone());
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

    /// Fetches `refspec` from the peer (objects checked by `fetch.fsckObjects`).
    fn fetch_into(&self, store: &Store, refspec: &str) -> Result<(), PeerError> {
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

    /// Runs git in the store; returns its standard output, or its standard error as the error.
    fn git(&self, dir: &Path, args: &[&str]) -> Result<String, PeerError> {
        let mut child = Command::new("git")
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
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| PeerError::Git(self.url.clone(), format!("cannot run git: {e}")))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
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

/// A fresh quarantine namespace for one fetch.
fn incoming_namespace() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{INCOMING}/{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Checks every path reachable from the refs under `ns` and not yet in the store, adopts the
/// good ones as `refs/nix/<hash>` (or, if `all_or_nothing`, fails on the first bad one without
/// adopting any), and deletes `ns`.
fn adopt_namespace(store: &Store, ns: &str, all_or_nothing: bool) -> Result<Adopted, PeerError> {
    let repo = store.repo();
    let mut tips = Vec::new();
    for r in repo.references_glob(&format!("{ns}/*"))? {
        let r = r?;
        if let Ok(name) = r.name() {
            tips.push((name.to_string(), r.peel_to_commit()?.id()));
        }
    }
    let result = adopt(store, tips.iter().map(|(_, oid)| *oid).collect(), all_or_nothing);
    for (name, _) in &tips {
        if let Ok(mut r) = repo.find_reference(name) {
            let _ = r.delete();
        }
    }
    result
}

/// Adopts the commits reachable from `tips` (see the module docs).
fn adopt(store: &Store, tips: Vec<Oid>, all_or_nothing: bool) -> Result<Adopted, PeerError> {
    let repo = store.repo();
    let mut report = Adopted::default();
    let mut walk = repo.revwalk()?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
    for tip in &tips {
        walk.push(*tip)?;
    }
    // Commits the store's refs reach are already checked.
    walk.hide_glob(&format!("{REF_PREFIX}*"))?;
    let mut good: BTreeMap<Oid, StorePath> = BTreeMap::new();
    let mut bad: BTreeSet<Oid> = BTreeSet::new();
    let mut adopt_refs: Vec<(StoreHash, Oid, StorePath)> = Vec::new();
    for oid in walk {
        let oid = oid?;
        let verdict = check_commit(store, oid, &good, &bad);
        match verdict {
            Ok(entry) => {
                let path = entry.info.path.clone();
                match store.get(&path.hash())? {
                    Some(local) if local.commit == oid => report.present += 1,
                    Some(local) => report.conflicts.push((path.clone(), local.commit, oid)),
                    None => adopt_refs.push((path.hash(), oid, path.clone())),
                }
                good.insert(oid, path);
            }
            Err((path, why)) if all_or_nothing => {
                let what = path.map(|p| p.to_string()).unwrap_or_else(|| format!("commit {oid}"));
                return Err(PeerError::Invalid(format!("{what}: {why}")));
            }
            Err((path, why)) => {
                if let Some(path) = path {
                    report.rejected.push((path, why));
                }
                bad.insert(oid);
            }
        }
    }
    for tip in &tips {
        if repo.revparse_single(&tip.to_string()).is_ok() && !good.contains_key(tip) && !bad.contains(tip) {
            // Reachable from the store's refs: present already.
            report.present += 1;
        }
    }
    let mut tx = repo.transaction()?;
    for (hash, oid, path) in &adopt_refs {
        let name = format!("{REF_PREFIX}{hash}");
        tx.lock_ref(&name)?;
        match repo.refname_to_id(&name) {
            Ok(existing) if existing != *oid => report.conflicts.push((path.clone(), existing, *oid)),
            Ok(_) => report.present += 1,
            Err(_) => {
                tx.set_target(&name, *oid, None, "grove: fetch from peer")?;
                report.added.push(path.clone());
            }
        }
    }
    tx.commit()?;
    Ok(report)
}

/// Checks one fetched commit: Grove's layout, parents that are exactly its references' commits
/// (and all good), and contents that hash to its NarHash.
fn check_commit(
    store: &Store,
    oid: Oid,
    good: &BTreeMap<Oid, StorePath>,
    bad: &BTreeSet<Oid>,
) -> Result<Entry, (Option<StorePath>, String)> {
    let entry = store.entry_of_commit(oid).map_err(|e| (None, e.to_string()))?;
    let path = entry.info.path.clone();
    let fail = |why: String| (Some(path.clone()), why);
    let commit = store.repo().find_commit(oid).map_err(|e| fail(e.to_string()))?;
    let mut parents = BTreeSet::new();
    for parent in commit.parent_ids() {
        if bad.contains(&parent) {
            return Err(fail(format!("its reference in commit {parent} was refused")));
        }
        let parent_path = match good.get(&parent) {
            Some(p) => p.clone(),
            None => {
                store
                    .entry_of_commit(parent)
                    .map_err(|e| fail(e.to_string()))?
                    .info
                    .path
            }
        };
        parents.insert(parent_path);
    }
    let references: BTreeSet<StorePath> = entry.info.other_references().cloned().collect();
    if parents != references {
        return Err(fail("its commit's parents are not its references".into()));
    }
    store.check_contents(&entry).map_err(|e| fail(e.to_string()))?;
    Ok(entry)
}

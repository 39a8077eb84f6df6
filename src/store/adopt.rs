//! Adopting paths a `git fetch` brought into a quarantine namespace (`refs/grove/incoming/…`):
//! each new commit is read back, its parents checked to be exactly its references' commits and
//! its NAR re-hashed against its NarHash; only then do the good ones get `refs/nix/<hash>`
//! refs, references first (see [`super::refs`]). A ref that exists with another commit is never
//! moved.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use crate::nix::store_path::StorePath;

use super::error::StoreError;
use super::repo::{Entry, ObjectId, Store, REF_PREFIX};

/// Where fetched refs wait until they are checked.
pub const INCOMING: &str = "refs/grove/incoming";

/// What adopting fetched paths did.
#[derive(Debug, Default)]
pub struct Adopted {
    /// Paths that are new in the store.
    pub added: Vec<StorePath>,
    /// Paths the store already had, with the same commit.
    pub present: usize,
    /// Paths the store has with other metadata (kept as they are): path, local, peer commit.
    pub conflicts: Vec<(StorePath, ObjectId, ObjectId)>,
    /// Paths refused, with why (their dependents are refused too).
    pub rejected: Vec<(StorePath, String)>,
}

impl Store {
    /// Deletes quarantine refs left by fetches whose process died (a namespace is named after
    /// its fetching process); returns how many.
    pub fn clean_quarantine(&self) -> Result<usize, StoreError> {
        let mut dead = Vec::new();
        for r in self.repo.references_glob(&format!("{INCOMING}/*"))? {
            let r = r?;
            let Ok(name) = r.name() else { continue };
            let owner = name
                .strip_prefix(INCOMING)
                .and_then(|rest| rest.trim_start_matches('/').split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok());
            let alive =
                owner.is_some_and(|pid| pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                dead.push(name.to_string());
            }
        }
        for name in &dead {
            if let Ok(mut r) = self.repo.find_reference(name) {
                r.delete()?;
            }
        }
        Ok(dead.len())
    }

    /// Quarantine refs present now (from fetches under way, or dead ones not yet cleaned).
    pub fn quarantine_refs(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for r in self.repo.references_glob(&format!("{INCOMING}/*"))? {
            if let Ok(name) = r?.name() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    /// Checks every path reachable from the refs under `ns` and not yet in the store, adopts
    /// the good ones (or, if `all_or_nothing`, fails on the first bad one without adopting
    /// any), and deletes `ns`.
    pub fn adopt_namespace(&self, ns: &str, all_or_nothing: bool) -> Result<Adopted, StoreError> {
        let mut tips = Vec::new();
        for r in self.repo.references_glob(&format!("{ns}/*"))? {
            let r = r?;
            if let Ok(name) = r.name() {
                tips.push((name.to_string(), r.peel_to_commit()?.id()));
            }
        }
        // The quarantine refs go first: the objects stay, and adopting a large batch packs the
        // refs, after which deleting each quarantine ref would rewrite packed-refs.
        for (name, _) in &tips {
            if let Ok(mut r) = self.repo.find_reference(name) {
                let _ = r.delete();
            }
        }
        self.adopt(tips.iter().map(|(_, oid)| *oid).collect(), all_or_nothing)
    }

    /// Adopts the commits reachable from `tips` (see the module docs), whose objects a fetch
    /// wrote into this store's object directory without a ref (see
    /// `peers::git::GitRemote::fetch_paths_beside`).
    pub fn adopt(&self, tips: Vec<ObjectId>, all_or_nothing: bool) -> Result<Adopted, StoreError> {
        let mut report = Adopted::default();
        let mut good: BTreeMap<ObjectId, StorePath> = BTreeMap::new();
        let mut bad: BTreeSet<ObjectId> = BTreeSet::new();
        let mut adopt_refs: Vec<(StorePath, ObjectId)> = Vec::new();
        let (order, known_tips) = self.new_commits(&tips)?;
        report.present += known_tips;
        for oid in order {
            match self.check_commit(oid, &good, &bad) {
                Ok(entry) => {
                    let path = entry.info.path.clone();
                    match self.get(&path.hash())? {
                        Some(local) if local.commit == oid => report.present += 1,
                        Some(local) => report.conflicts.push((path.clone(), local.commit, oid)),
                        None => adopt_refs.push((path.clone(), oid)),
                    }
                    good.insert(oid, path);
                }
                Err((path, why)) if all_or_nothing => {
                    let what = path.map(|p| p.to_string()).unwrap_or_else(|| format!("commit {oid}"));
                    return Err(StoreError::Corrupt(what, why));
                }
                Err((path, why)) => {
                    if let Some(path) = path {
                        report.rejected.push((path, why));
                    }
                    bad.insert(oid);
                }
            }
        }
        let outcome = self.create_refs(&adopt_refs, "grove: fetch from peer")?;
        report.added = outcome.added;
        report.present += outcome.present;
        report.conflicts.extend(outcome.conflicts);
        Ok(report)
    }

    /// The commits reachable from `tips` that the store does not hold as the commit of its
    /// path's ref, references before the paths that refer to them; and how many tips it holds.
    /// The walk stops at commits the store holds, so its cost is the new commits, not the
    /// store's size (a walk that hides every ref of the store first costs that many refs,
    /// and libgit2 sorts them by date, which is the same for every Grove commit).
    fn new_commits(&self, tips: &[ObjectId]) -> Result<(Vec<ObjectId>, usize), StoreError> {
        let tip_set: HashSet<ObjectId> = tips.iter().copied().collect();
        let mut seen: HashSet<ObjectId> = HashSet::new();
        let mut order = Vec::new();
        let mut known_tips = 0;
        let mut stack: Vec<(ObjectId, bool)> = tips.iter().rev().map(|t| (*t, false)).collect();
        while let Some((oid, expanded)) = stack.pop() {
            if expanded {
                order.push(oid);
                continue;
            }
            if !seen.insert(oid) {
                continue;
            }
            if self.holds_commit(oid) {
                if tip_set.contains(&oid) {
                    known_tips += 1;
                }
                continue;
            }
            stack.push((oid, true));
            // A commit that cannot be read is reported when it is checked.
            if let Ok(parents) = self.parents(oid) {
                stack.extend(
                    parents
                        .into_iter()
                        .rev()
                        .filter(|p| !seen.contains(p))
                        .map(|p| (p, false)),
                );
            }
        }
        Ok((order, known_tips))
    }

    /// Whether `oid` is the commit of its path's ref here (found by the path its message names).
    fn holds_commit(&self, oid: ObjectId) -> bool {
        let Ok(commit) = self.repo.find_commit(oid) else {
            return false;
        };
        let first = commit.message_bytes().split(|b| *b == b'\n').next().unwrap_or_default();
        let Some(path) = std::str::from_utf8(first)
            .ok()
            .and_then(|s| s.parse::<StorePath>().ok())
        else {
            return false;
        };
        self.repo
            .refname_to_id(&format!("{REF_PREFIX}{}", path.hash()))
            .is_ok_and(|local| local == oid)
    }

    /// Checks one fetched commit: Grove's layout, parents that are exactly its references'
    /// commits (and all good), and contents that hash to its NarHash.
    fn check_commit(
        &self,
        oid: ObjectId,
        good: &BTreeMap<ObjectId, StorePath>,
        bad: &BTreeSet<ObjectId>,
    ) -> Result<Entry, (Option<StorePath>, String)> {
        let entry = self.entry_of_commit(oid).map_err(|e| (None, e.to_string()))?;
        let path = entry.info.path.clone();
        let fail = |why: String| (Some(path.clone()), why);
        let mut parents = BTreeSet::new();
        for parent in self.parents(oid).map_err(|e| fail(e.to_string()))? {
            if bad.contains(&parent) {
                return Err(fail(format!("its reference in commit {parent} was refused")));
            }
            let parent_path = match good.get(&parent) {
                Some(p) => p.clone(),
                None => self.entry_of_commit(parent).map_err(|e| fail(e.to_string()))?.info.path,
            };
            parents.insert(parent_path);
        }
        let references: BTreeSet<StorePath> = entry.info.other_references().cloned().collect();
        if parents != references {
            return Err(fail("its commit's parents are not its references".into()));
        }
        self.check_contents(&entry).map_err(|e| fail(e.to_string()))?;
        Ok(entry)
    }
}

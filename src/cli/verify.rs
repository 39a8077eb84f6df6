//! `grove verify`: re-hash every path from Git and check its references are there.

use anyhow::{bail, Result};

use crate::nix::store_path::StorePath;
use crate::store::Store;

use super::progress;

/// Checks every path; fails with a count if any is bad (each is printed as it is found).
pub fn verify(store: &Store) -> Result<()> {
    let paths = store.list()?;
    let bar = progress::bar(paths.len() as u64, false);
    let mut bad = Vec::new();
    for p in &paths {
        bar.set_message(p.name().to_string());
        if let Err(why) = check(store, p) {
            bar.suspend(|| eprintln!("MISMATCH {p}: {why:#}"));
            bad.push(p);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Nothing here blocks a write or a read, but each says something went wrong before.
    for lock in store.stale_locks()? {
        eprintln!("STALE LOCK {lock}: left by a writer that died (the next write of that ref removes it)");
    }
    for r in store.quarantine_refs()? {
        eprintln!("QUARANTINE {r}: left by a fetch (the next fetch removes it if its process is gone)");
    }
    if !bad.is_empty() {
        bail!("{} of {} paths failed verification", bad.len(), paths.len());
    }
    eprintln!("verified {} paths", paths.len());
    Ok(())
}

fn check(store: &Store, path: &StorePath) -> Result<()> {
    let entry = store.require(&path.to_string())?;
    store.check_contents(&entry)?;
    for r in entry.info.other_references() {
        if store.get(&r.hash())?.is_none() {
            bail!("reference {r} is missing");
        }
    }
    Ok(())
}

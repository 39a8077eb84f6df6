//! `grove fetch`, `sync` and `push`: paths from and to peers.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::nix::store_path::parse_spec;
use crate::peers::git::GitRemote;
use crate::peers::Peers;
use crate::store::Store;

/// The peers the config lists, for a store at `store_path`.
pub fn peers(store_path: &Path, config: &Config) -> Result<Arc<Peers>> {
    Ok(Arc::new(Peers::from_config(store_path, &config.store)?))
}

/// `grove fetch`: paths with their closures from the peers, bypassing the negative cache.
pub fn fetch(store_path: &Path, config: &Config, specs: &[String]) -> Result<()> {
    Store::open(store_path)?;
    let peers = Peers::from_config(store_path, &config.store)?;
    if peers.is_empty() {
        bail!("no peers: set store.remotes or store.upstreams in the config");
    }
    let mut missing = Vec::new();
    for spec in specs {
        let hash = parse_spec(spec)?;
        match peers.fetch_now(&hash) {
            Some(_) => println!("{}", Store::open(store_path)?.require(&hash.to_string())?.info.path),
            None => missing.push(spec.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!("no peer has {}", missing.join(", "));
    }
    Ok(())
}

/// `grove sync`: everything the Git peers have.
pub fn sync(store: &Store, config: &Config, remote: Option<String>) -> Result<()> {
    let remotes = match remote {
        Some(r) => vec![r],
        None if config.store.remotes.is_empty() => bail!("no REMOTE given and store.remotes is empty"),
        None => config.store.remotes.clone(),
    };
    for url in &remotes {
        let adopted = GitRemote::new(url, None, config.store.ssh_key_path())
            .sync(store)
            .with_context(|| format!("cannot sync from {url}"))?;
        for (path, ours, theirs) in &adopted.conflicts {
            eprintln!("conflict: {path}: {url} has commit {theirs}, this store {ours}; kept this store's");
        }
        for (path, why) in &adopted.rejected {
            eprintln!("refused: {path}: {why}");
        }
        eprintln!(
            "{url}: {} new paths, {} present, {} conflicts, {} refused",
            adopted.added.len(),
            adopted.present,
            adopted.conflicts.len(),
            adopted.rejected.len()
        );
    }
    Ok(())
}

/// `grove push`: closures to a Git peer, never forced.
pub fn push(store: &Store, config: &Config, remote: &str, specs: &[String]) -> Result<()> {
    let roots = if specs.is_empty() {
        store
            .list()?
            .iter()
            .map(|p| store.require(&p.to_string()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        specs.iter().map(|s| store.require(s)).collect::<Result<Vec<_>, _>>()?
    };
    let closure = store.closure(&roots)?;
    let pushed = GitRemote::new(remote, None, config.store.ssh_key_path())
        .push(store, &closure)
        .with_context(|| format!("cannot push to {remote}"))?;
    for (path, ours, theirs) in &pushed.conflicts {
        eprintln!("conflict: {path}: {remote} has commit {theirs}, this store {ours}; left as it is");
    }
    eprintln!(
        "{remote}: {} paths pushed, {} present, {} conflicts",
        pushed.added.len(),
        pushed.present,
        pushed.conflicts.len()
    );
    Ok(())
}

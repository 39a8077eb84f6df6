//! `grove fetch`, `sync` (and `sync --follow`, `store.follow`) and `push`: paths from and to peers.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::nix::store_path::parse_spec;
use crate::peers::follow::{follow as follow_loop, Follower, Step};
use crate::peers::git::GitRemote;
use crate::peers::Peers;
use crate::store::adopt::Adopted;
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
        eprintln!("{url}: {}", report_adopted(url, &adopted));
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

/// `grove sync --follow`: a read replica of REMOTE (or store.follow) until interrupted.
pub fn follow(store: &Store, config: &Config, remote: Option<String>, interval: Option<f64>) -> Result<()> {
    let url = match remote.or_else(|| config.store.follow.clone()) {
        Some(url) => url,
        None => match config.store.remotes.as_slice() {
            [one] => one.clone(),
            _ => bail!("--follow needs REMOTE (or store.follow, or exactly one store.remotes entry)"),
        },
    };
    let interval = match interval {
        Some(s) if !(0.01..=86_400.0).contains(&s) => bail!("--interval must be between 0.01 and 86400 seconds"),
        Some(s) => Duration::from_secs_f64(s),
        None => config.store.follow_interval(),
    };
    // Interrupting is safe at any point (fetches land in quarantine; refs come last), so
    // SIGINT and SIGTERM keep their default: the process ends, and git with it.
    let never = AtomicBool::new(false);
    let mut follower = Follower::new(&url, remote_timeout(config), config.store.ssh_key_path());
    eprintln!("following {url} every {interval:?}; stop with Ctrl-C");
    follow_loop(store, &mut follower, interval, &never, |step| print_step(&url, step));
    Ok(())
}

/// `store.follow` under `grove serve`: a thread that keeps the store in step with `primary`.
pub fn follow_in_background(store_path: &Path, config: &Config, primary: &str) -> Result<()> {
    let store = Store::open(store_path)?;
    let mut follower = Follower::new(primary, remote_timeout(config), config.store.ssh_key_path());
    let interval = config.store.follow_interval();
    let url = primary.to_string();
    eprintln!("following {url} every {interval:?} (store.follow)");
    std::thread::Builder::new()
        .name("follow".into())
        .spawn(move || {
            let never = AtomicBool::new(false);
            follow_loop(&store, &mut follower, interval, &never, |step| print_step(&url, step));
        })
        .context("cannot start the follower thread")?;
    Ok(())
}

fn remote_timeout(config: &Config) -> Duration {
    Duration::from_secs(config.store.remote_timeout_s.max(1))
}

fn print_step(url: &str, step: &Step) {
    eprintln!(
        "{url}: {}{}, {} announced but not there yet",
        if step.whole { "whole sync: " } else { "" },
        report_adopted(url, &step.adopted),
        step.pending
    );
}

/// Prints each conflict and refusal of a fetch from `url`; returns the one-line summary.
fn report_adopted(url: &str, a: &Adopted) -> String {
    for (path, ours, theirs) in &a.conflicts {
        eprintln!("conflict: {path}: {url} has commit {theirs}, this store {ours}; kept this store's");
    }
    for (path, why) in &a.rejected {
        eprintln!("refused: {path}: {why}");
    }
    format!(
        "{} new paths, {} present, {} conflicts, {} refused",
        a.added.len(),
        a.present,
        a.conflicts.len(),
        a.rejected.len()
    )
}

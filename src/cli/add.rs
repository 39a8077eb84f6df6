//! `grove add`: store paths with their closures, from the local Nix store (read from disk,
//! metadata from `nix path-info`) or from the Nix machines in `store.builders` (over ssh).
//! Everything goes into one batch: all of it becomes visible, or none.

use std::io::{self, BufReader, BufWriter, Write};

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use crate::config::Config;
use crate::nix::narinfo::{sort_by_references, PathInfo};
use crate::nix::store_path::StorePath;
use crate::sources::builders::Builder;
use crate::sources::localnix;
use crate::store::{export, Importer, Store};

use super::progress;

/// Adds the paths `args` name, with their closures.
pub fn add(store: &Store, config: &Config, args: &[String]) -> Result<()> {
    let key = config.store.ssh_key_path();
    let builders = config
        .store
        .builders
        .iter()
        .map(|url| Builder::parse(url, key.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let use_local = config.store.use_local_nix_daemon;
    if !use_local && builders.is_empty() {
        bail!(
            "store.use_local_nix_daemon is false, so grove add does not read the local Nix store, \
             and store.builders is empty: list the Nix machines to take paths from"
        );
    }
    let roots = args
        .iter()
        .map(|a| localnix::resolve_arg(a))
        .collect::<Result<Vec<_>, _>>()?;
    // Without builders the local store must have everything (and says so when it does not).
    let (local, remote): (Vec<StorePath>, Vec<StorePath>) = if builders.is_empty() {
        (roots, Vec::new())
    } else if use_local {
        roots.into_iter().partition(localnix::is_valid)
    } else {
        (Vec::new(), roots)
    };
    let mut imp = store.importer();
    let mut total = 0;
    if !local.is_empty() {
        let infos = sort_by_references(localnix::query_closure(&local)?, |i| i);
        total += infos.len();
        add_local(&mut imp, &infos)?;
    }
    for (builder, paths) in assign(&builders, remote)? {
        let bar = progress::bar(0, false);
        let paths_read = builder.export_closure(&paths, |stream| -> Result<Vec<StorePath>> {
            let mut stream = BufReader::with_capacity(1 << 18, stream);
            Ok(export::read(&mut imp, &mut stream, |p| {
                bar.inc(1);
                bar.set_message(p.name().to_string());
            })?)
        })?;
        bar.finish_and_clear();
        total += paths_read.len();
    }
    super::import::commit(imp, &progress::bar(0, false), "added", total)
}

/// Which builder each path comes from: the first that has it.
fn assign(builders: &[Builder], paths: Vec<StorePath>) -> Result<Vec<(&Builder, Vec<StorePath>)>> {
    let mut groups: Vec<(&Builder, Vec<StorePath>)> = Vec::new();
    for path in paths {
        let mut found = None;
        for b in builders {
            match b.has(&path) {
                Ok(true) => {
                    found = Some(b);
                    break;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("skipping {}: {e}", b.url()),
            }
        }
        let Some(b) = found else {
            bail!("neither the local Nix store nor any of store.builders has {path}");
        };
        match groups.iter_mut().find(|(g, _)| std::ptr::eq(*g, b)) {
            Some((_, list)) => list.push(path),
            None => groups.push((b, vec![path])),
        }
    }
    Ok(groups)
}

/// Adds paths from the local store (references first).
fn add_local(imp: &mut Importer<'_>, infos: &[PathInfo]) -> Result<()> {
    let todo: Vec<&PathInfo> = infos.iter().filter(|i| !imp.has(&i.path).unwrap_or(false)).collect();
    let bar = progress::bar(todo.iter().map(|i| i.nar_size).sum(), true);
    for info in &todo {
        bar.set_message(info.path.name().to_string());
        add_from_disk(imp, info, &bar).with_context(|| format!("adding {}", info.path))?;
    }
    bar.finish_and_clear();
    Ok(())
}

/// Streams a path from disk as a NAR (in a thread) into the importer, which checks it against
/// Nix's NarHash.
fn add_from_disk(imp: &mut Importer<'_>, info: &PathInfo, bar: &ProgressBar) -> Result<bool> {
    let (reader, writer) = io::pipe()?;
    let disk = localnix::on_disk(&info.path);
    std::thread::scope(|s| {
        let dumper = s.spawn(move || {
            let mut w = BufWriter::with_capacity(1 << 18, writer);
            localnix::dump_path(&disk, &mut w)?;
            w.flush().map_err(crate::nix::nar::NarError::Io)
        });
        let added = imp.add(info, &mut bar.wrap_read(BufReader::with_capacity(1 << 18, reader)));
        let dumped = dumper
            .join()
            .map_err(|_| anyhow::anyhow!("reading {} from disk panicked", info.path))?;
        match (added, dumped) {
            (Ok(added), Ok(())) => Ok(added),
            // The importer stopped reading: its error explains the dumper's broken pipe.
            (Err(e), Err(crate::nix::nar::NarError::Io(io))) if io.kind() == io::ErrorKind::BrokenPipe => Err(e.into()),
            (_, Err(e)) => Err(e.into()),
            (Err(e), Ok(())) => Err(e.into()),
        }
    })
}

//! `grove add`: store paths with their closures, from the local Nix store (read from disk,
//! metadata from `nix path-info`) or from the Nix machines in `store.builders` (over ssh).
//! Everything goes into one batch: all of it becomes visible, or none.

use std::io::{self, BufReader, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;

use crate::config::Config;
use crate::nix::narinfo::{sort_by_references, PathInfo};
use crate::nix::store_path::StorePath;
use crate::sources::builders::Builder;
use crate::sources::localnix;
use crate::store::{export, Contents, Importer, Store};

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
    let mut imp = store.batch_importer();
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

/// Adds paths from the local store (references first). Their contents are read, hashed and
/// compressed on every core, a path per thread, each thread into packs of its own; the commits
/// are then staged here in reference order. Nothing is visible before [`Importer::commit`].
fn add_local(imp: &mut Importer<'_>, infos: &[PathInfo]) -> Result<()> {
    let todo: Vec<&PathInfo> = infos.iter().filter(|i| !imp.has(&i.path).unwrap_or(false)).collect();
    if todo.is_empty() {
        return Ok(());
    }
    let bar = progress::bar(todo.iter().map(|i| i.nar_size).sum(), true);
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let store_dir = imp.store_dir().to_path_buf();
    let (tx, rx) = mpsc::channel::<(usize, Result<Contents>)>();
    let mut done: Vec<Option<Contents>> = vec![None; todo.len()];
    std::thread::scope(|s| -> Result<()> {
        let mut workers = Vec::new();
        for _ in 0..threads {
            let (tx, todo, next, failed, bar, dir) = (tx.clone(), &todo, &next, &failed, &bar, &store_dir);
            workers.push(s.spawn(move || -> Result<()> {
                let store = Store::open(dir)?;
                let writer = store.batch_importer();
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(info) = todo.get(i) else { break };
                    let written = write_from_disk(&writer, info, bar).with_context(|| format!("adding {}", info.path));
                    if written.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if tx.send((i, written)).is_err() {
                        break;
                    }
                }
                // The objects must exist before any commit naming them is made visible.
                Ok(writer.flush()?)
            }));
        }
        drop(tx);
        let mut staged = 0;
        let mut first_error = None;
        for (i, written) in rx {
            match written {
                Ok(contents) => done[i] = Some(contents),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
            while let Some(Some(contents)) = done.get(staged) {
                if first_error.is_none() {
                    let info = todo[staged];
                    bar.set_message(info.path.name().to_string());
                    if let Err(e) = imp
                        .stage(info, *contents)
                        .with_context(|| format!("adding {}", info.path))
                    {
                        failed.store(true, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                    }
                }
                staged += 1;
            }
        }
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a thread reading the Nix store panicked"))??;
        }
        match first_error {
            Some(e) => Err(e),
            None if staged == todo.len() => Ok(()),
            None => bail!("{} of {} paths were not read", todo.len() - staged, todo.len()),
        }
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// Streams a path from disk as a NAR (in a thread) into the writer's objects; its hash is
/// checked against Nix's NarHash when it is staged.
fn write_from_disk(objects: &Importer<'_>, info: &PathInfo, bar: &ProgressBar) -> Result<Contents> {
    let (reader, writer) = io::pipe()?;
    let disk = localnix::on_disk(&info.path);
    std::thread::scope(|s| {
        let dumper = s.spawn(move || {
            let mut w = BufWriter::with_capacity(1 << 18, writer);
            localnix::dump_path(&disk, &mut w)?;
            w.flush().map_err(crate::nix::nar::NarError::Io)
        });
        let added = objects.write_contents(&mut bar.wrap_read(BufReader::with_capacity(1 << 18, reader)));
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

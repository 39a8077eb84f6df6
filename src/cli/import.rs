//! `grove import`: paths from a `nix-store --export` stream or a `file://` binary cache.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use crate::nix::narinfo::sort_by_references;
use crate::sources::filecache;
use crate::store::{export, Importer, Store};

use super::progress;

/// Imports an export stream from `file` (standard input for `None` or `-`), all or nothing.
pub fn import_export(store: &Store, file: Option<&Path>) -> Result<()> {
    let input: Box<dyn Read> = match file {
        None => Box::new(io::stdin().lock()),
        Some(p) if p == Path::new("-") => Box::new(io::stdin().lock()),
        Some(p) => Box::new(File::open(p).with_context(|| format!("cannot open {}", p.display()))?),
    };
    let bar = progress::bar(0, false);
    let mut input = BufReader::with_capacity(1 << 18, input);
    let mut imp = store.batch_importer();
    let paths = export::read(&mut imp, &mut input, |p| {
        bar.inc(1);
        bar.set_message(p.name().to_string());
    })?;
    commit(imp, &bar, "imported", paths.len())
}

/// Imports every path of the `file://` cache at `dir`, all or nothing.
pub fn import_cache(store: &Store, dir: &Path) -> Result<()> {
    let infos = sort_by_references(filecache::read_narinfos(dir)?, |n| &n.info);
    let bar = progress::bar(infos.len() as u64, false);
    let mut imp = store.batch_importer();
    for ni in &infos {
        bar.set_message(ni.info.path.name().to_string());
        filecache::import_one(&mut imp, dir, ni)?;
        bar.inc(1);
    }
    commit(imp, &bar, "imported", infos.len())
}

/// Makes a batch of `total` paths visible and says how many were new, as `<verb> N paths`.
pub fn commit(imp: Importer<'_>, bar: &ProgressBar, verb: &str, total: usize) -> Result<()> {
    let added = imp.commit()?;
    bar.finish_and_clear();
    eprintln!(
        "{verb} {} paths ({} already present)",
        added.len(),
        total.saturating_sub(added.len())
    );
    Ok(())
}

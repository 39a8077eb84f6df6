//! Reading a `file://` binary cache as `nix copy --to file://DIR` writes it.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use crate::nix::narinfo::NarInfo;
use crate::store::{Importer, StoreError};

/// Errors reading a file cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file could not be read.
    #[error("{0}: {1}")]
    Io(String, io::Error),
    /// A narinfo does not parse.
    #[error("{0}: {1}")]
    NarInfo(String, crate::nix::narinfo::NarInfoError),
    /// A narinfo names something Grove cannot read.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// Storing a path failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads every narinfo of the cache at `dir`.
pub fn read_narinfos(dir: &Path) -> Result<Vec<NarInfo>, CacheError> {
    let io_err = |p: &Path, e| CacheError::Io(p.display().to_string(), e);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let p = entry.map_err(|e| io_err(dir, e))?.path();
        if p.extension().is_some_and(|x| x == "narinfo") {
            let text = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
            let ni = NarInfo::parse(&text).map_err(|e| CacheError::NarInfo(p.display().to_string(), e))?;
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if stem != ni.info.path.hash().to_string() {
                return Err(CacheError::Invalid(
                    p.display().to_string(),
                    format!("describes {}", ni.info.path),
                ));
            }
            out.push(ni);
        }
    }
    Ok(out)
}

/// Imports one narinfo's NAR (possibly compressed) from the cache at `dir`: its FileHash and
/// FileSize, when given, and NarHash/NarSize are checked. Returns whether the path was new.
pub fn import_one(importer: &mut Importer<'_>, dir: &Path, ni: &NarInfo) -> Result<bool, CacheError> {
    let what = ni.info.path.to_string();
    let url = ni
        .url
        .as_deref()
        .ok_or_else(|| CacheError::Invalid(what.clone(), "narinfo has no URL".into()))?;
    if url.starts_with('/') || url.split('/').any(|c| c == "..") {
        return Err(CacheError::Invalid(what, format!("URL '{url}' leaves the cache")));
    }
    let file_path = dir.join(url);
    let source = file_path.display().to_string();
    let file = File::open(&file_path).map_err(|e| CacheError::Io(source.clone(), e))?;
    let contents = importer.write_nar_file_of(ni, &source, BufReader::new(file))?;
    Ok(importer.stage(&ni.info, contents)?)
}

//! Asking the local Nix about store paths (`nix path-info --json --recursive`).

use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::nix::hash::{HashingWriter, NarHash};
use crate::nix::nar::{Encoder, NarError};
use crate::nix::narinfo::PathInfo;
use crate::nix::store_path::{StorePath, STORE_DIR};

/// Errors from querying Nix.
#[derive(Debug, thiserror::Error)]
pub enum LocalNixError {
    /// `nix` could not be started.
    #[error("cannot run 'nix' (is Nix installed?): {0}")]
    Spawn(std::io::Error),
    /// `nix` failed, e.g. for a path that is not valid.
    #[error("nix path-info failed: {0}")]
    Failed(String),
    /// The output did not parse.
    #[error("unexpected output from nix path-info: {0}")]
    Output(String),
    /// An argument that names no store path.
    #[error("{0} is not in {STORE_DIR}")]
    NotAStorePath(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInfo {
    path: String,
    nar_hash: String,
    nar_size: u64,
    #[serde(default)]
    references: Vec<String>,
    deriver: Option<String>,
    ca: Option<String>,
    #[serde(default)]
    signatures: Vec<String>,
}

impl RawInfo {
    fn into_info(self) -> Result<PathInfo, String> {
        let sp = |s: &str| s.parse::<StorePath>().map_err(|e| e.to_string());
        Ok(PathInfo {
            path: sp(&self.path)?,
            nar_hash: self
                .nar_hash
                .parse()
                .map_err(|e: crate::nix::hash::HashError| e.to_string())?,
            nar_size: self.nar_size,
            references: self.references.iter().map(|r| sp(r)).collect::<Result<_, _>>()?,
            deriver: self.deriver.as_deref().map(sp).transpose()?,
            ca: match self.ca.filter(|c| !c.is_empty()) {
                Some(ca) => Some(crate::nix::narinfo::check_ca(&ca).map(|()| ca)?),
                None => None,
            },
            sigs: self
                .signatures
                .iter()
                .map(|s| s.parse().map_err(|e: crate::nix::signing::KeyError| e.to_string()))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Maps an argument (a store path, a path inside one, or a symlink to one such as `./result`) to
/// its store path.
pub fn resolve_arg(arg: &str) -> Result<StorePath, LocalNixError> {
    let not = || LocalNixError::NotAStorePath(arg.to_string());
    let mut p = PathBuf::from(arg);
    if !p.starts_with(STORE_DIR) {
        p = std::fs::canonicalize(&p).map_err(|_| not())?;
    }
    let rel = p.strip_prefix(STORE_DIR).map_err(|_| not())?;
    let base = rel.components().next().ok_or_else(not)?;
    StorePath::from_base_name(&base.as_os_str().to_string_lossy()).map_err(|_| not())
}

/// Whether the local Nix store has `path` (`nix-store --check-validity`).
pub fn is_valid(path: &StorePath) -> bool {
    Command::new("nix-store")
        .arg("--check-validity")
        .arg(path.to_string())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The metadata of `paths` and their whole closures, as the local Nix records it.
pub fn query_closure(paths: &[StorePath]) -> Result<Vec<PathInfo>, LocalNixError> {
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
            "--recursive",
        ])
        .args(paths.iter().map(|p| p.to_string()))
        .output()
        .map_err(LocalNixError::Spawn)?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        return Err(LocalNixError::Failed(line.to_string()));
    }
    let raw: Vec<RawInfo> = serde_json::from_slice(&out.stdout).map_err(|e| LocalNixError::Output(e.to_string()))?;
    raw.into_iter()
        .map(|r| r.into_info().map_err(LocalNixError::Output))
        .collect()
}

/// Where a store path's contents are on disk.
pub fn on_disk(path: &StorePath) -> PathBuf {
    Path::new(STORE_DIR).join(path.base_name())
}

/// Serialises a path on disk as Nix's `nix-store --dump` does: entries sorted bytewise,
/// executable if the owner may execute, symlinks not followed.
pub fn dump_path(path: &Path, out: impl Write) -> Result<(), NarError> {
    let mut enc = Encoder::new(out)?;
    dump_node(path, &mut enc)
}

fn dump_node<W: Write>(path: &Path, enc: &mut Encoder<W>) -> Result<(), NarError> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = std::fs::symlink_metadata(path).map_err(ctx)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(ctx)?;
        enc.symlink(target.as_os_str().as_bytes())?;
    } else if ft.is_file() {
        let mut f = std::fs::File::open(path).map_err(ctx)?;
        enc.file(meta.permissions().mode() & 0o100 != 0, meta.len(), &mut f)
            .map_err(ctx)?;
    } else if ft.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(ctx)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(ctx)?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        enc.dir_start()?;
        for name in names {
            enc.entry_start(name.as_bytes())?;
            dump_node(&path.join(&name), enc)?;
            enc.entry_end()?;
        }
        enc.dir_end()?;
    } else {
        return Err(NarError::BadFileType(path.display().to_string()));
    }
    Ok(())
}

/// Hashes and sizes a path on disk as a NAR without keeping it.
pub fn hash_path(path: &Path) -> Result<(NarHash, u64), NarError> {
    let mut h = HashingWriter::new();
    dump_path(path, &mut h)?;
    Ok(h.finish())
}

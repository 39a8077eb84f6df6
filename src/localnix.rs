//! Asking the local Nix about store paths (`nix path-info --json --recursive`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::narinfo::PathInfo;
use crate::store_path::{StorePath, STORE_DIR};

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
                .map_err(|e: crate::hash::HashError| e.to_string())?,
            nar_size: self.nar_size,
            references: self.references.iter().map(|r| sp(r)).collect::<Result<_, _>>()?,
            deriver: self.deriver.as_deref().map(sp).transpose()?,
            ca: self.ca.filter(|c| !c.is_empty()),
            sigs: self
                .signatures
                .iter()
                .map(|s| s.parse().map_err(|e: crate::signing::KeyError| e.to_string()))
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

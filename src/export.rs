//! The `nix-store --export` / `--import` stream.
//!
//! Hand-written: no maintained crate reads or writes it, and it is a thin wrapper around NARs.
//! For each path: `u64 1`, the NAR, `u64 0x4558494e` ("NIXE"), the path, the reference count and
//! references, the deriver (or ""), and `u64 0` (no legacy signature); after the last path,
//! `u64 0`. Strings use NAR's encoding (length, bytes, zero padding to 8).

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use crate::nar::{padding, write_token, NarError};
use crate::narinfo::PathInfo;
use crate::store::{Entry, Importer, Store, StoreError};
use crate::store_path::StorePath;

/// Marks the metadata after each NAR.
pub const EXPORT_MAGIC: u64 = 0x4558_494e;

/// Errors of the export format.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The stream does not follow the format.
    #[error("not a 'nix-store --export' stream: {0}")]
    Format(String),
    /// The stream ended early.
    #[error("truncated export stream")]
    Truncated,
    /// Reading the stream failed.
    #[error("I/O: {0}")]
    Io(io::Error),
    /// Storing a path failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<io::Error> for ExportError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ExportError::Truncated
        } else {
            ExportError::Io(e)
        }
    }
}

/// Writes `entries` (references first) as one export stream.
pub fn write(store: &Store, entries: &[Entry], out: &mut dyn Write) -> Result<(), StoreError> {
    for e in entries {
        out.write_all(&1u64.to_le_bytes())?;
        store.write_nar(&e.root, out)?;
        out.write_all(&EXPORT_MAGIC.to_le_bytes())?;
        write_token(out, e.info.path.to_string().as_bytes())?;
        out.write_all(&(e.info.references.len() as u64).to_le_bytes())?;
        for r in &e.info.references {
            write_token(out, r.to_string().as_bytes())?;
        }
        let deriver = e.info.deriver.as_ref().map(|d| d.to_string()).unwrap_or_default();
        write_token(out, deriver.as_bytes())?;
        out.write_all(&0u64.to_le_bytes())?;
    }
    out.write_all(&0u64.to_le_bytes())?;
    Ok(())
}

fn read_u64(r: &mut dyn Read) -> Result<u64, ExportError> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_string(r: &mut dyn Read, max: u64) -> Result<String, ExportError> {
    let len = read_u64(r)?;
    if len > max {
        return Err(ExportError::Format(format!("string of {len} bytes is too long")));
    }
    let mut b = vec![0u8; (len + padding(len)) as usize];
    r.read_exact(&mut b)?;
    if b[len as usize..].iter().any(|&x| x != 0) {
        return Err(ExportError::Format("non-zero padding".into()));
    }
    b.truncate(len as usize);
    String::from_utf8(b).map_err(|_| ExportError::Format("string is not UTF-8".into()))
}

fn read_path(r: &mut dyn Read) -> Result<StorePath, ExportError> {
    let s = read_string(r, 4096)?;
    s.parse().map_err(|e| ExportError::Format(format!("{e}")))
}

/// Reads an export stream into `importer`, path by path, calling `progress` after each.
/// Nothing becomes visible until the caller commits the importer.
pub fn read(
    importer: &mut Importer<'_>,
    input: &mut dyn Read,
    mut progress: impl FnMut(&StorePath),
) -> Result<Vec<StorePath>, ExportError> {
    let mut paths = Vec::new();
    loop {
        match read_u64(input)? {
            0 => return Ok(paths),
            1 => {}
            n => return Err(ExportError::Format(format!("expected 0 or 1 before a path, found {n}"))),
        }
        let contents = importer.write_contents(input).map_err(|e| match e {
            StoreError::Nar(NarError::Truncated) => ExportError::Truncated,
            e => e.into(),
        })?;
        if read_u64(input)? != EXPORT_MAGIC {
            return Err(ExportError::Format("missing 'NIXE' marker after a NAR".into()));
        }
        let path = read_path(input)?;
        let count = read_u64(input)?;
        if count > 1 << 20 {
            return Err(ExportError::Format(format!("{count} references is implausible")));
        }
        let references = (0..count)
            .map(|_| read_path(input))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let deriver = read_string(input, 4096)?;
        let deriver = if deriver.is_empty() {
            None
        } else {
            Some(
                deriver
                    .parse()
                    .map_err(|e| ExportError::Format(format!("deriver: {e}")))?,
            )
        };
        if read_u64(input)? == 1 {
            read_string(input, 4096)?;
        }
        let info = PathInfo {
            path: path.clone(),
            nar_hash: contents.nar_hash,
            nar_size: contents.nar_size,
            references,
            deriver,
            ca: None,
            sigs: Vec::new(),
        };
        importer.stage(&info, contents)?;
        progress(&path);
        paths.push(path);
    }
}

//! `nix-store --export` streams into the store (the format is in [`crate::nix::export`]; the
//! read path writes them).

use std::io::Read;

use crate::nix::export::{ExportError, ExportReader};
use crate::nix::nar::NarError;
use crate::nix::narinfo::PathInfo;
use crate::nix::store_path::StorePath;

use super::error::StoreError;
use super::import::Importer;

/// Reads an export stream into `importer`, path by path, calling `progress` after each.
/// Nothing becomes visible until the caller commits the importer.
pub fn read(
    importer: &mut Importer<'_>,
    input: &mut dyn Read,
    mut progress: impl FnMut(&StorePath),
) -> Result<Vec<StorePath>, StoreError> {
    let mut reader = ExportReader::new(input);
    let mut paths = Vec::new();
    while reader.next_path()? {
        let contents = importer.write_contents(reader.input()).map_err(|e| match e {
            StoreError::Nar(NarError::Truncated) => StoreError::Export(ExportError::Truncated),
            e => e,
        })?;
        let trailer = reader.trailer()?;
        let info = PathInfo {
            path: trailer.path,
            nar_hash: contents.nar_hash,
            nar_size: contents.nar_size,
            references: trailer.references,
            deriver: trailer.deriver,
            ca: None,
            sigs: Vec::new(),
        };
        importer.stage(&info, contents)?;
        progress(&info.path);
        paths.push(info.path);
    }
    Ok(paths)
}

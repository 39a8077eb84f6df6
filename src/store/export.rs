//! `nix-store --export` streams into and out of the store (the format is in
//! [`crate::nix::export`]).

use std::io::{Read, Write};

use crate::nix::export::{self, ExportError, ExportReader};
use crate::nix::nar::NarError;
use crate::nix::narinfo::PathInfo;
use crate::nix::store_path::StorePath;

use super::error::StoreError;
use super::import::Importer;

/// Writes one path of an export stream: its NAR comes from `nar`, which writes it to the
/// writer it is given.
pub fn write_path(
    out: &mut dyn Write,
    info: &PathInfo,
    nar: impl FnOnce(&mut dyn Write) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    export::write_header(out)?;
    nar(out)?;
    export::write_trailer(out, info)?;
    Ok(())
}

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

//! The names of a binary cache's files, as they appear in its URLs: `nix-cache-info`,
//! `<hash>.narinfo`, `<hash>.ls` and `nar/<stem>.nar[.xz|.zst|.bz2]`. One parser for every
//! front end that meets them.

use std::fmt;

use super::compression::{Compression, UnknownCompression};
use super::store_path::{StoreHash, StorePathError, HASH_LEN};

/// Longest NAR file stem accepted (a nix32 SHA-256 is 52 characters).
const MAX_STEM: usize = 128;

/// A file of a binary cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFile {
    /// `nix-cache-info`.
    CacheInfo,
    /// `<hash>.narinfo`.
    NarInfo(StoreHash),
    /// `<hash>.ls`: the NAR listing.
    Listing(StoreHash),
    /// `nar/<stem>.nar[.ext]`.
    Nar(NarFile),
}

/// A NAR file: `nar/<stem>.nar<ext>`. Grove names the NARs it serves by the store path's hash;
/// clients uploading name theirs as they like (Nix uses the file's hash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NarFile {
    stem: String,
    /// How the file is compressed.
    pub compression: Compression,
}

/// A name that is not a file of a binary cache.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheFileError {
    /// No such kind of file.
    #[error("no such file: /{0}")]
    Unknown(String),
    /// A `.narinfo` or `.ls` whose stem is not a store path hash.
    #[error(transparent)]
    BadHash(#[from] StorePathError),
    /// A NAR stem that is empty, too long, or not alphanumeric.
    #[error("'{0}' is not a NAR file name")]
    BadNarName(String),
    /// A NAR extension that names no known compression.
    #[error(transparent)]
    Compression(#[from] UnknownCompression),
}

impl CacheFile {
    /// Parses a path relative to the cache root (no leading `/`).
    pub fn parse(path: &str) -> Result<Self, CacheFileError> {
        if path == "nix-cache-info" {
            return Ok(CacheFile::CacheInfo);
        }
        if let Some(file) = path.strip_prefix("nar/") {
            return NarFile::parse(file).map(CacheFile::Nar);
        }
        if let Some(hash) = path.strip_suffix(".narinfo") {
            return Ok(CacheFile::NarInfo(hash.parse()?));
        }
        if let Some(hash) = path.strip_suffix(".ls") {
            return Ok(CacheFile::Listing(hash.parse()?));
        }
        Err(CacheFileError::Unknown(path.to_string()))
    }
}

impl NarFile {
    /// The NAR Grove serves for the path with `hash`.
    pub fn of_path(hash: &StoreHash, compression: Compression) -> Self {
        NarFile {
            stem: hash.to_string(),
            compression,
        }
    }

    /// Parses `<stem>.nar[.ext]` (the part after `nar/`).
    pub fn parse(file: &str) -> Result<Self, CacheFileError> {
        let bad = || CacheFileError::BadNarName(file.to_string());
        let (stem, ext) = file.split_once(".nar").ok_or_else(bad)?;
        if stem.is_empty() || stem.len() > MAX_STEM || !stem.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad());
        }
        Ok(NarFile {
            stem: stem.to_string(),
            compression: Compression::from_extension(ext)?,
        })
    }

    /// The store path hash the stem names, when it is one (Grove's own NAR URLs).
    pub fn store_hash(&self) -> Option<StoreHash> {
        (self.stem.len() == HASH_LEN).then(|| self.stem.parse().ok()).flatten()
    }
}

impl fmt::Display for NarFile {
    /// The URL relative to the cache root: `nar/<stem>.nar<ext>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nar/{}.nar{}", self.stem, self.compression.extension())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0q43idch209zsdngl8yl79x0y79aajib";

    #[test]
    fn parses_every_kind() {
        let hash: StoreHash = H.parse().unwrap();
        assert_eq!(CacheFile::parse("nix-cache-info"), Ok(CacheFile::CacheInfo));
        assert_eq!(CacheFile::parse(&format!("{H}.narinfo")), Ok(CacheFile::NarInfo(hash)));
        assert_eq!(CacheFile::parse(&format!("{H}.ls")), Ok(CacheFile::Listing(hash)));
        let nar = NarFile::of_path(&hash, Compression::Zstd);
        assert_eq!(nar.to_string(), format!("nar/{H}.nar.zst"));
        assert_eq!(CacheFile::parse(&nar.to_string()), Ok(CacheFile::Nar(nar.clone())));
        assert_eq!(nar.store_hash(), Some(hash));
        let upload = NarFile::parse("1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz").unwrap();
        assert_eq!(upload.compression, Compression::Xz);
        assert_eq!(upload.store_hash(), None);
    }

    #[test]
    fn refuses_what_is_not_a_cache_file() {
        for bad in [
            "",
            "x",
            "nar/",
            "nar/.nar",
            "nar/a/b.nar",
            "nar/../x.nar",
            "nar/x.nr",
            "short.narinfo",
            "../x.ls",
        ] {
            assert!(CacheFile::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            CacheFile::parse("nar/abc.nar.gz"),
            Err(CacheFileError::Compression(_))
        ));
        assert!(matches!(CacheFile::parse("e.narinfo"), Err(CacheFileError::BadHash(_))));
    }
}

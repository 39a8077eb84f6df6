//! The NAR listing served as `/<hash>.ls`: Nix's `write-nar-listing` format, version 1, with
//! the byte offset of every file's contents in the NAR.

use std::collections::BTreeMap;

use serde::Serialize;

/// One node of a listing.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Listing {
    /// A regular file; its contents start at `nar_offset` in the NAR.
    Regular {
        /// Size in bytes.
        size: u64,
        /// Whether the executable bit is set.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        executable: bool,
        /// Offset of the first content byte in the NAR.
        #[serde(rename = "narOffset")]
        nar_offset: u64,
    },
    /// A symlink.
    Symlink {
        /// Its target.
        target: String,
    },
    /// A directory and its entries.
    Directory {
        /// Entries by name.
        entries: BTreeMap<String, Listing>,
    },
}

/// The top-level `.ls` document.
#[derive(Debug, Serialize)]
pub struct NarListing {
    /// Always 1.
    pub version: u32,
    /// The path's root node.
    pub root: Listing,
}

//! The NAR listing (`/<hash>.ls`, Nix's `write-nar-listing` format, version 1) and the byte
//! offset of every file's contents in a path's NAR, computed from the Git tree without
//! building the NAR.

use std::collections::BTreeMap;

use git2::FileMode;
use serde::Serialize;

use crate::nar::{padding, token_size, MAGIC};
use crate::store::{Root, Store, StoreError};

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

fn tok(s: &[u8]) -> u64 {
    token_size(s.len() as u64)
}

impl Store {
    /// The listing of a path's contents, with NAR offsets.
    pub fn listing(&self, root: &Root) -> Result<NarListing, StoreError> {
        let odb = self.repo().odb()?;
        let mut offset = tok(MAGIC);
        let root = self.list_node(&odb, root, &mut offset)?;
        Ok(NarListing { version: 1, root })
    }

    fn list_node(&self, odb: &git2::Odb<'_>, node: &Root, off: &mut u64) -> Result<Listing, StoreError> {
        *off += tok(b"(") + tok(b"type");
        let listing = match node.mode {
            FileMode::Tree => {
                *off += tok(b"directory");
                let children = self.children(node)?;
                let mut entries = BTreeMap::new();
                for (name, child) in children {
                    *off += tok(b"entry") + tok(b"(") + tok(b"name") + tok(&name) + tok(b"node");
                    let l = self.list_node(odb, &child, off)?;
                    *off += tok(b")");
                    entries.insert(String::from_utf8_lossy(&name).into_owned(), l);
                }
                Listing::Directory { entries }
            }
            FileMode::Link => {
                let target = self.repo().find_blob(node.oid)?.content().to_vec();
                *off += tok(b"symlink") + tok(b"target") + tok(&target);
                Listing::Symlink {
                    target: String::from_utf8_lossy(&target).into_owned(),
                }
            }
            mode => {
                let executable = mode == FileMode::BlobExecutable;
                let (size, _) = odb.read_header(node.oid)?;
                let size = size as u64;
                *off += tok(b"regular") + tok(b"contents") + 8;
                if executable {
                    *off += tok(b"executable") + tok(b"");
                }
                let nar_offset = *off;
                *off += size + padding(size);
                Listing::Regular {
                    size,
                    executable,
                    nar_offset,
                }
            }
        };
        *off += tok(b")");
        Ok(listing)
    }
}

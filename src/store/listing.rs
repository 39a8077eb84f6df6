//! A path's `.ls` listing with the NAR offset of every file, computed from the Git tree
//! without building the NAR.

use std::collections::BTreeMap;

use crate::nix::listing::{Listing, NarListing};
use crate::nix::nar::{padding, token_size, MAGIC};

use super::error::StoreError;
use super::repo::{Kind, Root, Store};

fn tok(s: &[u8]) -> u64 {
    token_size(s.len() as u64)
}

impl Store {
    /// The listing of a path's contents, with NAR offsets.
    pub fn listing(&self, root: &Root) -> Result<NarListing, StoreError> {
        let odb = self.repo.odb()?;
        let mut offset = tok(MAGIC);
        let root = self.list_node(&odb, root, &mut offset)?;
        Ok(NarListing { version: 1, root })
    }

    fn list_node(&self, odb: &git2::Odb<'_>, node: &Root, off: &mut u64) -> Result<Listing, StoreError> {
        *off += tok(b"(") + tok(b"type");
        let listing = match node.kind {
            Kind::Directory => {
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
            Kind::Symlink => {
                let target = self.repo.find_blob(node.oid)?.content().to_vec();
                *off += tok(b"symlink") + tok(b"target") + tok(&target);
                Listing::Symlink {
                    target: String::from_utf8_lossy(&target).into_owned(),
                }
            }
            kind => {
                let executable = kind == Kind::Executable;
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

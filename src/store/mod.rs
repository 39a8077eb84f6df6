//! The Git-backed store: every store path is a commit in a bare repository. This is the only
//! module that names git2.
//!
//! Layout (see `docs/design.md`):
//! * `refs/nix/<hash>` points at the path's commit;
//! * the commit's tree holds `out` (the path's contents: a tree, a blob with mode 100644/100755,
//!   or a symlink blob with mode 120000) and `narinfo` (the metadata as narinfo text, no URL);
//! * the commit's parents are the commits of the path's references, so a closure is exactly what
//!   is reachable from the ref; author, committer and time are fixed, so the same path with the
//!   same metadata is the same commit everywhere.
//!
//! Writes are atomic: an [`Importer`] writes objects as it parses and moves refs only in
//! [`Importer::commit`], through [`refs`] (references first, each ref atomically, announced to
//! every process's [`index`] before), so an error or a crash part-way leaves no path without
//! its references (only unreachable objects, which `git gc` prunes).

pub mod adopt;
mod error;
pub mod export;
pub mod import;
pub mod index;
pub mod layout;
mod listing;
mod locks;
pub mod maintain;
pub mod names;
mod objects;
mod pack;
mod packed_refs;
pub mod raw;
pub mod refs;
mod repo;

pub use error::StoreError;
pub use import::{Contents, Importer};
pub use index::PathIndex;
pub use repo::{BlobStream, Entry, Kind, ObjectId, Root, Store, NARINFO_ENTRY, OUT_ENTRY, REF_PREFIX};

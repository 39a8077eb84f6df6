//! Nix's formats, pure: hashes, store paths, NAR, narinfo, signatures, compression, export
//! streams, `.ls` listings and the names of binary-cache files. Nothing here touches Git, the
//! network or an async runtime; everything above builds on it.

pub mod cache_file;
pub mod compression;
pub mod export;
pub mod hash;
pub mod listing;
pub mod nar;
pub mod narinfo;
pub mod signing;
pub mod store_path;

//! Grove: a Nix binary cache whose store is a Git repository.
//!
//! Data flows one way: a request (CLI, HTTP, FUSE) goes through the read path in [`store`] to Git.

pub mod cli;
pub mod config;
pub mod export;
pub mod filecache;
pub mod fuse;
pub mod hash;
pub mod http;
pub mod layout;
pub mod listing;
pub mod localnix;
pub mod nar;
pub mod narinfo;
pub mod peers;
pub mod readpath;
pub mod replicate;
pub mod signing;
pub mod store;
pub mod store_path;
pub mod upstream;

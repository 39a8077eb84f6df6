//! Where paths come from besides peers, for the CLI: the local Nix store, `file://` binary
//! caches, and Nix machines reached over ssh (`store.builders`).

pub mod builders;
pub mod filecache;
pub mod localnix;

//! Grove: a Nix binary cache whose store is a Git repository.
//!
//! Layers, each using only those below it:
//! front ends ([`serve`], [`mount`], [`cli`]) → [`read`] (the one read path) → [`peers`]
//! (read-through and replication) → [`store`] (the Git store, the only module that names git2)
//! → [`nix`] (pure formats). [`sources`] (the local Nix, `file://` caches, builders) feed the
//! store for the CLI; [`config`] depends on nothing but [`nix`].

pub mod cli;
pub mod config;
pub mod mount;
pub mod nix;
pub mod peers;
pub mod read;
pub mod serve;
pub mod sources;
pub mod store;

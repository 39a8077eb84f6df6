//! The YAML configuration. Keys follow Gachix's where they mean the same, and Gachix's own
//! config files load (its `no-default` placeholder for a path means "not set").
//!
//! ```yaml
//! log_level: info
//! store:
//!   path: /var/lib/grove
//!   builders: [ "ssh://nix@build-1" ]    # Nix machines `grove add` takes paths from
//!   use_local_nix_daemon: true           # false: `grove add` never reads the local store
//!   ssh_private_key_path: /var/lib/grove/id_ed25519
//!   sign_private_key_path: /var/lib/grove/grove.key
//!   key_name: cache.example.org-1
//!   remotes: [ "file:///srv/other-grove", "http://peer:8080/git/" ]
//!   upstreams:
//!     - { url: "http://peer:8080", trusted_public_keys: [ "peer-1:base64..." ], timeout_s: 10 }
//!   negative_ttl_s: 60
//!   remote_timeout_s: 30
//!   follow: "http://primary:8080/git"   # a read replica of this primary (`grove serve` follows it)
//!   follow_interval_s: 1
//!   repack_interval_s: 600               # how often `grove serve` checks whether to repack
//! server:
//!   host: 127.0.0.1
//!   port: 8080
//!   priority: 40
//!   compression: none
//!   read_token: null
//!   write_token: s3cret
//!   nar_cache_mib: 256
//!   max_upload_mib: 65536
//!   io_timeout_s: 30
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::nix::compression::Compression;

/// What Gachix's README writes for a path that has no default.
const NO_DEFAULT: &str = "no-default";

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not valid YAML for the schema (unknown keys included).
    #[error("invalid config {0}: {1}")]
    Parse(PathBuf, String),
}

/// The whole configuration; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `error`, `warn`, `info`, `debug` or `trace` (or a `tracing` filter); `RUST_LOG` overrides.
    pub log_level: Option<String>,
    /// The store.
    pub store: StoreConfig,
    /// The HTTP server.
    pub server: ServerConfig,
}

/// `store:` keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The bare Git repository. Default: `$XDG_DATA_HOME/grove` (`~/.local/share/grove`).
    pub path: Option<PathBuf>,
    /// The cache's secret signing key. Default: `grove.key` inside the repository directory.
    pub sign_private_key_path: Option<PathBuf>,
    /// Name of a key `grove init` creates. Default: `grove-<hostname>-1`.
    pub key_name: Option<String>,
    /// Git peers (other Grove repositories): a path, `file://`, `ssh://` or Git smart HTTP URL.
    /// Missing paths are fetched from them; `grove sync` and `grove push` use them.
    pub remotes: Vec<String>,
    /// Nix binary caches missing paths are fetched from (after the Git peers).
    pub upstreams: Vec<UpstreamConfig>,
    /// Seconds a path no peer had is not asked for again.
    pub negative_ttl_s: u64,
    /// Seconds a Git peer may take to answer a lazy fetch.
    pub remote_timeout_s: u64,
    /// Nix machines `grove add` takes paths from over ssh (`ssh://[USER@]HOST[:PORT]`).
    pub builders: Vec<String>,
    /// Whether `grove add` may read the local Nix store (false on hosts without Nix).
    pub use_local_nix_daemon: bool,
    /// The ssh identity for builders and `ssh://` Git remotes.
    pub ssh_private_key_path: Option<PathBuf>,
    /// A primary Grove (a Git URL, e.g. `http://primary:8080/git`) that `grove serve` keeps
    /// this store in step with, as a read replica.
    pub follow: Option<String>,
    /// Seconds between two looks at the primary's new paths.
    pub follow_interval_s: f64,
    /// Seconds between two checks by `grove serve` of whether the repository needs packing
    /// (more than 6700 loose objects or 50 packs); 0 never checks.
    pub repack_interval_s: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: None,
            sign_private_key_path: None,
            key_name: None,
            remotes: Vec::new(),
            upstreams: Vec::new(),
            negative_ttl_s: 60,
            remote_timeout_s: 30,
            builders: Vec::new(),
            use_local_nix_daemon: true,
            ssh_private_key_path: None,
            follow: None,
            follow_interval_s: 1.0,
            repack_interval_s: 600,
        }
    }
}

impl StoreConfig {
    /// How often a replica looks at its primary (at least every 10 ms).
    pub fn follow_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.follow_interval_s.clamp(0.01, 86_400.0))
    }

    /// The ssh identity, if one is set.
    pub fn ssh_key_path(&self) -> Option<PathBuf> {
        set_path(&self.ssh_private_key_path)
    }
}

/// A configured path, unless it is Gachix's `no-default` placeholder.
fn set_path(path: &Option<PathBuf>) -> Option<PathBuf> {
    path.clone().filter(|p| p.as_os_str() != NO_DEFAULT)
}

/// One `store.upstreams` entry: a Nix binary cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The cache's base URL (`http://` or `https://`).
    pub url: String,
    /// Keys (`name:base64`) whose signature a path from this cache must carry.
    pub trusted_public_keys: Vec<String>,
    /// Seconds to wait for a narinfo; a NAR may take this plus a second per MiB.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_s: u64,
}

fn default_upstream_timeout() -> u64 {
    10
}

/// `server:` keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on.
    pub port: u16,
    /// `Priority` in `/nix-cache-info` (lower is preferred by Nix).
    pub priority: u32,
    /// How served NARs are compressed: `none` (default), `zstd` or `xz`.
    pub compression: Compression,
    /// Token clients must present to read (HTTP Basic password or Bearer); reads are public
    /// without one.
    pub read_token: Option<String>,
    /// Token clients must present to upload; uploads are refused without one.
    pub write_token: Option<String>,
    /// A file holding the read token (keeps secrets out of the config, e.g. on NixOS).
    pub read_token_file: Option<PathBuf>,
    /// A file holding the write token.
    pub write_token_file: Option<PathBuf>,
    /// MiB of memory for whole synthesised NARs kept for the next request (0 keeps none).
    pub nar_cache_mib: usize,
    /// Largest NAR an upload may carry, in MiB (uncompressed).
    pub max_upload_mib: u64,
    /// Seconds a client may take to send a request's headers, pause a request body, or take
    /// a part of a response; idle connections are closed after it too.
    pub io_timeout_s: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            priority: 40,
            compression: Default::default(),
            read_token: None,
            write_token: None,
            read_token_file: None,
            write_token_file: None,
            nar_cache_mib: 256,
            max_upload_mib: 64 << 10,
            io_timeout_s: 30,
        }
    }
}

impl ServerConfig {
    /// The read token, from `read_token` or `read_token_file`.
    pub fn read_token(&self) -> Result<Option<String>, ConfigError> {
        token(&self.read_token, &self.read_token_file)
    }

    /// The write token, from `write_token` or `write_token_file`.
    pub fn write_token(&self) -> Result<Option<String>, ConfigError> {
        token(&self.write_token, &self.write_token_file)
    }
}

fn token(inline: &Option<String>, file: &Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(t), _) => Ok(Some(t.clone()).filter(|t| !t.is_empty())),
        (None, Some(f)) => {
            let t = std::fs::read_to_string(f).map_err(|e| ConfigError::Read(f.clone(), e))?;
            Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty()))
        }
        (None, None) => Ok(None),
    }
}

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        Self::parse(&text).map_err(|e| ConfigError::Parse(path.into(), e))
    }

    /// Parses config text; an empty document is the default config.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string().lines().next().unwrap_or("").to_string())
    }

    /// The repository path: `override_path`, else `store.path`, else the default.
    pub fn store_path(&self, override_path: Option<&Path>) -> PathBuf {
        override_path
            .map(Path::to_path_buf)
            .or_else(|| set_path(&self.store.path))
            .unwrap_or_else(default_store_path)
    }

    /// The secret key path for a store at `store`.
    pub fn key_path(&self, store: &Path) -> PathBuf {
        set_path(&self.store.sign_private_key_path).unwrap_or_else(|| store.join("grove.key"))
    }

    /// The name for a newly generated key.
    pub fn key_name(&self) -> String {
        self.store.key_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host = host.trim();
            format!("grove-{}-1", if host.is_empty() { "local" } else { host })
        })
    }
}

fn default_store_path() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("grove")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gachix_style_keys() {
        let c = Config::parse(
            "log_level: debug\nstore:\n  path: /srv/g\n  sign_private_key_path: /k\n  remotes: [\"file:///x\"]\nserver:\n  host: 0.0.0.0\n  port: 9000\n",
        )
        .unwrap();
        assert_eq!(c.store_path(None), PathBuf::from("/srv/g"));
        assert_eq!(c.key_path(Path::new("/srv/g")), PathBuf::from("/k"));
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.store.remotes, vec!["file:///x"]);
        assert_eq!(c.store_path(Some(Path::new("/o"))), PathBuf::from("/o"));
    }

    #[test]
    fn reads_upstreams_in_flow_style() {
        let c = Config::parse(
            "store:\n  path: /var/lib/grove\n  remotes: [ \"file:///srv/other-grove\", \"http://peer:8080/git/\" ]\n  upstreams:\n    - { url: \"http://peer:8080\", trusted_public_keys: [ \"peer-1:abc\" ], timeout_s: 3 }\n    - { url: \"http://other\", trusted_public_keys: [] }\n",
        )
        .unwrap();
        assert_eq!(c.store.remotes.len(), 2);
        assert_eq!(c.store.upstreams[0].url, "http://peer:8080");
        assert_eq!(c.store.upstreams[0].trusted_public_keys, vec!["peer-1:abc"]);
        assert_eq!(c.store.upstreams[0].timeout_s, 3);
        assert_eq!(c.store.upstreams[1].timeout_s, 10);
        assert_eq!(c.store.negative_ttl_s, 60);
        assert!(Config::parse("store:\n  upstreams:\n    - { url: x, trusted_public_keys: [], bogus: 1 }\n").is_err());
    }

    /// The configuration block of Gachix's README, verbatim.
    const GACHIX_README: &str = "# possible values: trace, debug, info, warning, error
log_level: info
store:
  # The path of the Git repository where all packages will be stored
  path: ./cache
  # The set of Nix daemons to contact when adding packages
  builders: []
  # The set of Gachix peers (other Git replicas) to contact when adding packages
  remotes: []
  # The path to the private ssh key used for authenticating against builders and remotes
  ssh_private_key_path: no-default
  # Whether to use the Nix daemon on the machine where Gachix is run
  # Should be set to false if Gachix is run on a non Nix system
  use_local_nix_daemon: true
  # The path to the private key generated by `nix-store --generate-binary-cache-key`
  sign_private_key_path: no-default

server:
  # The ip address under which Gachix should listen
  host: localhost
  # The port under which Gachix should listen
  port: 8080
";

    #[test]
    fn loads_gachix_readme_config() {
        let c = Config::parse(GACHIX_README).unwrap();
        assert_eq!(c.store_path(None), PathBuf::from("./cache"));
        assert_eq!(c.key_path(Path::new("./cache")), PathBuf::from("./cache/grove.key"));
        assert_eq!(c.store.ssh_key_path(), None);
        assert!(c.store.use_local_nix_daemon && c.store.builders.is_empty() && c.store.remotes.is_empty());
        assert_eq!((c.server.host.as_str(), c.server.port), ("localhost", 8080));
        let c = Config::parse(
            "store:\n  builders: [ \"ssh://client\" ]\n  use_local_nix_daemon: false\n  ssh_private_key_path: /k\n",
        )
        .unwrap();
        assert_eq!(c.store.builders, vec!["ssh://client"]);
        assert!(!c.store.use_local_nix_daemon);
        assert_eq!(c.store.ssh_key_path(), Some(PathBuf::from("/k")));
    }

    #[test]
    fn empty_tokens_are_no_tokens() {
        let c = Config::parse("server:\n  write_token: \"\"\n  read_token: r\n").unwrap();
        assert_eq!(c.server.write_token().unwrap(), None);
        assert_eq!(c.server.read_token().unwrap().as_deref(), Some("r"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("store:\n  pathh: /x\n").unwrap_err();
        assert!(err.contains("pathh"), "{err}");
        let err = Config::parse("bogus: 1\n").unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        assert!(Config::parse("").is_ok());
    }
}

//! The cache's signing key on disk: created with the store, mode 0600, read when signing.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::config::Config;
use crate::nix::signing::SecretKey;
use crate::store::Store;

/// Creates the store if needed and the key if missing (mode 0600); returns the key.
pub fn init_store(store_path: &Path, key_path: &Path, config: &Config) -> Result<SecretKey> {
    Store::init(store_path).with_context(|| format!("creating store at {}", store_path.display()))?;
    if key_path.exists() {
        return load_key(key_path);
    }
    let key = SecretKey::generate(&config.key_name()).map_err(|e| anyhow::anyhow!("generating a signing key: {e}"))?;
    write_secret(key_path, &key.to_string())?;
    eprintln!("created signing key {}", key_path.display());
    Ok(key)
}

/// Reads the secret key at `path`.
pub fn load_key(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read signing key {} (run 'grove init')", path.display()))?;
    text.parse()
        .with_context(|| format!("bad signing key in {}", path.display()))
}

/// Writes a secret file atomically, readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

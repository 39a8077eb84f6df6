//! Nix store paths: `/nix/store/<32-char nix32 hash>-<name>`.

use std::fmt;
use std::str::FromStr;

use crate::nix::hash::{nix32_decode, nix32_encode};

/// The store directory Grove serves. Nix's default; other store dirs are not supported.
pub const STORE_DIR: &str = "/nix/store";

/// Length of the nix32 hash part of a store path's base name.
pub const HASH_LEN: usize = 32;

/// The longest name Nix accepts after the hash part.
pub const MAX_NAME_LEN: usize = 211;

/// Errors from parsing a store path, its hash part or its name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorePathError {
    /// The path is not under `/nix/store`.
    #[error("'{0}' is not in {STORE_DIR}")]
    NotInStore(String),
    /// The hash part is not 32 characters of Nix base32.
    #[error("'{0}' does not have a valid 32-character nix32 hash part")]
    BadHash(String),
    /// The name is empty, too long or has a character Nix forbids.
    #[error("'{0}' has an invalid name: {1}")]
    BadName(String, &'static str),
}

/// The 20-byte digest that names a store path (its first 32 characters).
///
/// Ordered as Nix orders the printed hashes: nix32 writes the digest as a little-endian number
/// from its most significant end with an ascending alphabet, so text order is the order of the
/// bytes compared from the last.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreHash(pub [u8; 20]);

impl Ord for StoreHash {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

impl PartialOrd for StoreHash {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl StoreHash {
    /// The digest as Nix prints it: 32 characters of Nix base32.
    pub fn to_nix32(&self) -> String {
        nix32_encode(&self.0)
    }
}

impl FromStr for StoreHash {
    type Err = StorePathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        nix32_decode(s, 20)
            .and_then(|b| b.try_into().ok())
            .map(StoreHash)
            .ok_or_else(|| StorePathError::BadHash(s.to_string()))
    }
}

impl fmt::Display for StoreHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32())
    }
}

impl fmt::Debug for StoreHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A store path: its hash and its name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    hash: StoreHash,
    name: String,
}

impl StorePath {
    /// Parses a base name `<hash>-<name>` (no directory).
    pub fn from_base_name(base: &str) -> Result<Self, StorePathError> {
        if base.len() < HASH_LEN + 2 || base.as_bytes()[HASH_LEN] != b'-' {
            return Err(StorePathError::BadHash(base.to_string()));
        }
        let hash = base[..HASH_LEN]
            .parse()
            .map_err(|_| StorePathError::BadHash(base.to_string()))?;
        let name = &base[HASH_LEN + 1..];
        validate_name(name).map_err(|why| StorePathError::BadName(base.to_string(), why))?;
        Ok(StorePath {
            hash,
            name: name.to_string(),
        })
    }

    /// The hash part.
    pub fn hash(&self) -> StoreHash {
        self.hash
    }

    /// The name after the hash part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> String {
        format!("{}-{}", self.hash, self.name)
    }
}

/// Resolves a store path, a base name `<hash>-<name>` or a bare hash part to a path's hash.
pub fn parse_spec(spec: &str) -> Result<StoreHash, StorePathError> {
    let base = spec
        .strip_prefix(STORE_DIR)
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or(spec);
    let hash = base
        .get(..HASH_LEN)
        .ok_or_else(|| StorePathError::BadHash(spec.to_string()))?;
    if base.len() > HASH_LEN {
        // A full base name must be valid as a whole, not just its first 32 characters.
        StorePath::from_base_name(base.split('/').next().unwrap_or(base))?;
    }
    hash.parse()
}

/// Checks a store path name against Nix's rules: 1 to 211 characters of
/// `[A-Za-z0-9+-._?=]`, and not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 211 characters");
    }
    if name == "." || name == ".." {
        return Err("name is '.' or '..'");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
    {
        return Err("names may only contain A-Z a-z 0-9 + - . _ ? =");
    }
    Ok(())
}

impl FromStr for StorePath {
    type Err = StorePathError;

    /// Parses a full path `/nix/store/<hash>-<name>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let base = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(s.to_string()))?;
        Self::from_base_name(base)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}-{}", self.hash, self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/0q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1";

    #[test]
    fn round_trip() {
        let p: StorePath = P.parse().unwrap();
        assert_eq!(p.name(), "nix-2.8.1");
        assert_eq!(p.hash().to_string(), "0q43idch209zsdngl8yl79x0y79aajib");
        assert_eq!(p.to_string(), P);
    }

    #[test]
    fn order_is_text_order() {
        let mut texts: Vec<String> = (0..200u32)
            .map(|i| {
                let mut d = [0u8; 20];
                d[..4].copy_from_slice(&i.wrapping_mul(2654435761).to_le_bytes());
                d[19] = (i % 7) as u8;
                format!("/nix/store/{}-n{}", StoreHash(d), i % 3)
            })
            .collect();
        let mut paths: Vec<StorePath> = texts.iter().map(|t| t.parse().unwrap()).collect();
        texts.sort();
        paths.sort();
        assert_eq!(paths.iter().map(|p| p.to_string()).collect::<Vec<_>>(), texts);
    }

    #[test]
    fn rejects_bad_paths() {
        let h = "0q43idch209zsdngl8yl79x0y79aajib";
        let long = "a".repeat(212);
        for bad in [
            "/nix/store/0q43idch209zsdngl8yl79x0y79aaji-x".to_string(),
            format!("/tmp/{h}-x"),
            format!("/nix/store/{h}-"),
            format!("/nix/store/{h}-a/b"),
            format!("/nix/store/{h}-.."),
            format!("/nix/store/{h}-a\0b"),
            format!("/nix/store/{h}-{long}"),
            format!("/nix/store/{h}x-abc"),
            "/nix/store/eq43idch209zsdngl8yl79x0y79aajib-x".to_string(),
        ] {
            assert!(bad.parse::<StorePath>().is_err(), "{bad:?}");
        }
        assert!(format!("/nix/store/{h}-{}", "a".repeat(211))
            .parse::<StorePath>()
            .is_ok());
    }
}

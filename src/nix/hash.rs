//! SHA-256 NAR hashes and Nix's base32 alphabet.
//!
//! Nix prints hashes as `sha256:<nixbase32>`; `nix path-info --json` may also print SRI
//! (`sha256-<base64>`) and old tools print `sha256:<hex>`. [`NarHash`] reads all three and always
//! writes the first.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use sha2::{Digest, Sha256};

/// Errors from parsing a hash string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HashError {
    /// The text is not a SHA-256 hash in a form Nix prints.
    #[error("invalid sha256 hash '{0}' (expected sha256:<nix32>, sha256:<hex> or sha256-<base64>)")]
    Invalid(String),
}

/// Encodes bytes in Nix's base32 (`0123456789abcdfghijklmnpqrsvwxyz`, least significant first).
pub fn nix32_encode(bytes: &[u8]) -> String {
    nix_base32::to_nix_base32(bytes)
}

/// Decodes Nix base32 text of exactly the length that `len` bytes encode to.
pub fn nix32_decode(text: &str, len: usize) -> Option<Vec<u8>> {
    if len == 0 || text.len() != (len * 8).div_ceil(5) {
        return None;
    }
    nix_base32::from_nix_base32(text).filter(|b| b.len() == len)
}

/// A SHA-256 digest of a NAR serialisation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// Hashes a byte slice.
    pub fn of(bytes: &[u8]) -> Self {
        NarHash(Sha256::digest(bytes).into())
    }

    /// The digest in Nix base32, without the `sha256:` prefix.
    pub fn to_nix32(&self) -> String {
        nix32_encode(&self.0)
    }
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for NarHash {
    type Err = HashError;

    fn from_str(s: &str) -> Result<Self, HashError> {
        let bad = || HashError::Invalid(s.to_string());
        let bytes = if let Some(rest) = s.strip_prefix("sha256:") {
            match rest.len() {
                52 => nix32_decode(rest, 32),
                64 => HEXLOWER_PERMISSIVE.decode(rest.as_bytes()).ok(),
                _ => None,
            }
        } else if let Some(rest) = s.strip_prefix("sha256-") {
            BASE64.decode(rest.as_bytes()).ok()
        } else {
            None
        };
        let bytes = bytes.ok_or_else(bad)?;
        Ok(NarHash(bytes.try_into().map_err(|_| bad())?))
    }
}

/// A writer that hashes and counts what passes through it.
#[derive(Default)]
pub struct HashingWriter {
    hasher: Sha256,
    len: u64,
}

impl HashingWriter {
    /// A fresh writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest and byte count so far.
    pub fn finish(self) -> (NarHash, u64) {
        (NarHash(self.hasher.finalize().into()), self.len)
    }
}

/// A reader that hashes and counts what is read through it: the one place a stream is hashed
/// as it is consumed (NAR parsing, compressed files checked against FileHash/FileSize).
pub struct HashingReader<R> {
    inner: R,
    hash: HashingWriter,
}

impl<R> HashingReader<R> {
    /// Hashes what is read from `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hash: HashingWriter::new(),
        }
    }

    /// The digest and byte count of what was read so far.
    pub fn finish(self) -> (NarHash, u64) {
        self.hash.finish()
    }
}

impl<R: std::io::Read> std::io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        std::io::Write::write_all(&mut self.hash, &buf[..n])?;
        Ok(n)
    }
}

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix32_matches_nix() {
        // `nix hash to-base32 sha256:ab3352…` as printed by Nix.
        let hex = "ab335240fd942ab8191c5e628cd4ff3903c577bda961fb75df08e0303a00527b";
        let h: NarHash = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(h.to_nix32(), "0ysj00x31q08vxsznqd9pmvwa0rrzza8qqjy3hcvhallzm054cxb");
        assert_eq!(h.to_string().parse::<NarHash>().unwrap(), h);
        let sri = format!("sha256-{}", BASE64.encode(&h.0));
        assert_eq!(sri.parse::<NarHash>().unwrap(), h);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "sha256:",
            "md5:abc",
            "sha256:0ysj00x31q08vxsznqd9pmvwa0rrzza8qqjy3hcvhallzm054cxe",
            "sha256:0ysj00x31q08vxsznqd9pmvwa0rrzza8qqjy3hcvhallzm054cx",
            "sha256-AAAA",
        ] {
            assert!(s.parse::<NarHash>().is_err(), "{s}");
        }
        assert!(nix32_decode("z", 0).is_none());
        assert!(nix32_decode("", 20).is_none());
    }
}

//! ed25519 keys and signatures in Nix's `name:base64` text form.
//!
//! A secret key file holds `name:base64(seed ‖ public)` (64 bytes), a public key
//! `name:base64(public)` (32 bytes), a signature `name:base64(signature)` (64 bytes), exactly
//! as `nix-store --generate-binary-cache-key` and narinfo `Sig:` lines write them.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Errors from parsing keys and signatures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not `name:base64` with a non-empty name.
    #[error("{what} is not of the form 'name:base64'")]
    Form { what: &'static str },
    /// The base64 part does not decode to the right number of bytes.
    #[error("{what} '{name}' does not hold {len} bytes of base64")]
    Length {
        what: &'static str,
        name: String,
        len: usize,
    },
    /// The bytes are not a valid ed25519 key.
    #[error("{what} '{name}' is not a valid ed25519 key")]
    Invalid { what: &'static str, name: String },
}

fn split<'a, const N: usize>(s: &'a str, what: &'static str) -> Result<(&'a str, [u8; N]), KeyError> {
    let (name, b64) = s.trim().split_once(':').ok_or(KeyError::Form { what })?;
    if name.is_empty() || b64.is_empty() {
        return Err(KeyError::Form { what });
    }
    let bytes = BASE64
        .decode(b64.as_bytes())
        .ok()
        .and_then(|b| <[u8; N]>::try_from(b).ok());
    let bytes = bytes.ok_or_else(|| KeyError::Length {
        what,
        name: name.to_string(),
        len: N,
    })?;
    Ok((name, bytes))
}

/// A named ed25519 signing key.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(SecretKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs a narinfo fingerprint.
    pub fn sign(&self, fingerprint: &str) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(fingerprint.as_bytes()).to_bytes(),
        }
    }
}

impl FromStr for SecretKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        const WHAT: &str = "secret key";
        let (name, bytes) = split::<64>(s, WHAT)?;
        let key = SigningKey::from_keypair_bytes(&bytes).map_err(|_| KeyError::Invalid {
            what: WHAT,
            name: name.to_string(),
        })?;
        Ok(SecretKey {
            name: name.to_string(),
            key,
        })
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(&self.key.to_keypair_bytes()))
    }
}

/// A named ed25519 public key, as listed in `trusted-public-keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sig` is this key's valid signature of `fingerprint`.
    pub fn verify(&self, fingerprint: &str, sig: &Signature) -> bool {
        sig.key_name == self.name
            && self
                .key
                .verify_strict(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig.bytes),
                )
                .is_ok()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        const WHAT: &str = "public key";
        let (name, bytes) = split::<32>(s, WHAT)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid {
            what: WHAT,
            name: name.to_string(),
        })?;
        Ok(PublicKey {
            name: name.to_string(),
            key,
        })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A narinfo signature: the signing key's name and 64 signature bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    /// The name of the key that made it.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }
}

impl FromStr for Signature {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split::<64>(s, "signature")?;
        Ok(Signature {
            key_name: name.to_string(),
            bytes,
        })
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(&self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip() {
        let sk = SecretKey::generate("test-1").unwrap();
        let sk2: SecretKey = sk.to_string().parse().unwrap();
        let pk: PublicKey = sk.public().to_string().parse().unwrap();
        let sig: Signature = sk2.sign("1;x").to_string().parse().unwrap();
        assert!(pk.verify("1;x", &sig));
        assert!(!pk.verify("1;y", &sig));
        let other = SecretKey::generate("test-1").unwrap().public();
        assert!(!other.verify("1;x", &sig));
    }

    #[test]
    fn rejects_malformed_keys() {
        for s in ["", "nocolon", ":AAAA", "name:", "name:!!!", "name:AAAA"] {
            assert!(s.parse::<SecretKey>().is_err(), "{s}");
            assert!(s.parse::<PublicKey>().is_err(), "{s}");
            assert!(s.parse::<Signature>().is_err(), "{s}");
        }
    }
}

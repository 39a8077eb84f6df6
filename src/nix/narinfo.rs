//! Path metadata and the `.narinfo` text format.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::nix::hash::NarHash;
use crate::nix::signing::{PublicKey, SecretKey, Signature};
use crate::nix::store_path::{StoreHash, StorePath};

/// Errors from parsing a narinfo.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NarInfoError {
    /// A line that is not `Key: value`.
    #[error("narinfo line {0}: not of the form 'Key: value'")]
    Line(usize),
    /// A line with a control character.
    #[error("narinfo line {0}: control character")]
    Control(usize),
    /// A required field is absent.
    #[error("narinfo lacks {0}")]
    Missing(&'static str),
    /// A field that does not parse.
    #[error("narinfo {field}: {why}")]
    Field { field: &'static str, why: String },
}

/// What Grove knows of a store path besides its contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The store path.
    pub path: StorePath,
    /// SHA-256 of the path's NAR.
    pub nar_hash: NarHash,
    /// Size of the path's NAR in bytes.
    pub nar_size: u64,
    /// Store paths this path refers to (possibly itself).
    pub references: BTreeSet<StorePath>,
    /// The derivation that built it, if known.
    pub deriver: Option<StorePath>,
    /// Content-address assertion (`fixed:…`, `text:…`), if any.
    pub ca: Option<String>,
    /// Signatures over the fingerprint.
    pub sigs: Vec<Signature>,
}

impl PathInfo {
    /// The text Nix signs: `1;<path>;<NarHash>;<NarSize>;<comma-joined full reference paths>`.
    pub fn fingerprint(&self) -> String {
        let refs: Vec<String> = self.references.iter().map(|r| r.to_string()).collect();
        format!("1;{};{};{};{}", self.path, self.nar_hash, self.nar_size, refs.join(","))
    }

    /// Adds this key's signature, replacing any earlier one by a key of the same name.
    pub fn sign(&mut self, key: &SecretKey) {
        self.sigs.retain(|s| s.key_name() != key.name());
        self.sigs.push(key.sign(&self.fingerprint()));
    }

    /// Whether any of `keys` made a valid signature of this path.
    pub fn verify(&self, keys: &[PublicKey]) -> bool {
        let fp = self.fingerprint();
        self.sigs.iter().any(|s| keys.iter().any(|k| k.verify(&fp, s)))
    }

    /// References other than the path itself.
    pub fn other_references(&self) -> impl Iterator<Item = &StorePath> {
        self.references.iter().filter(move |r| **r != self.path)
    }
}

/// A narinfo: path metadata and where the (possibly compressed) NAR is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// The path's metadata.
    pub info: PathInfo,
    /// The NAR's URL relative to the cache root, e.g. `nar/<hash>.nar.xz`.
    pub url: Option<String>,
    /// `none`, `xz`, `zstd`, `bzip2`, …
    pub compression: Option<String>,
    /// Hash of the file at `url`.
    pub file_hash: Option<NarHash>,
    /// Size of the file at `url`.
    pub file_size: Option<u64>,
}

impl NarInfo {
    /// Renders in the field order Nix writes.
    pub fn render(&self) -> String {
        let i = &self.info;
        let mut s = String::new();
        let _ = writeln!(s, "StorePath: {}", i.path);
        if let Some(url) = &self.url {
            let _ = writeln!(s, "URL: {url}");
        }
        if let Some(c) = &self.compression {
            let _ = writeln!(s, "Compression: {c}");
        }
        if let Some(h) = &self.file_hash {
            let _ = writeln!(s, "FileHash: {h}");
        }
        if let Some(n) = &self.file_size {
            let _ = writeln!(s, "FileSize: {n}");
        }
        let _ = writeln!(s, "NarHash: {}", i.nar_hash);
        let _ = writeln!(s, "NarSize: {}", i.nar_size);
        let refs: Vec<String> = i.references.iter().map(|r| r.base_name()).collect();
        let _ = writeln!(s, "References: {}", refs.join(" "));
        if let Some(d) = &i.deriver {
            let _ = writeln!(s, "Deriver: {}", d.base_name());
        }
        for sig in &i.sigs {
            let _ = writeln!(s, "Sig: {sig}");
        }
        if let Some(ca) = &i.ca {
            let _ = writeln!(s, "CA: {ca}");
        }
        s
    }

    /// Parses narinfo text. Unknown fields are ignored, as Nix does.
    pub fn parse(text: &str) -> Result<Self, NarInfoError> {
        let field = |field: &'static str, why: String| NarInfoError::Field { field, why };
        let base = |field: &'static str, v: &str| {
            StorePath::from_base_name(v).map_err(|e| NarInfoError::Field {
                field,
                why: e.to_string(),
            })
        };
        let (mut path, mut nar_hash, mut nar_size) = (None, None, None);
        let (mut url, mut compression, mut file_hash, mut file_size) = (None, None, None, None);
        let (mut deriver, mut sigs, mut ca) = (None, Vec::new(), None);
        let mut refs = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            // Lines may end in "\r\n"; any other control character is not narinfo (and would not
            // survive a render and a parse: found by fuzzing).
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            if line.chars().any(char::is_control) {
                return Err(NarInfoError::Control(n + 1));
            }
            let (k, v) = line.split_once(": ").ok_or(NarInfoError::Line(n + 1))?;
            match k {
                "StorePath" => path = Some(v.parse::<StorePath>().map_err(|e| field("StorePath", e.to_string()))?),
                "URL" => url = Some(v.to_string()),
                "Compression" => compression = Some(v.to_string()),
                "FileHash" => {
                    file_hash = Some(
                        v.parse()
                            .map_err(|e: crate::nix::hash::HashError| field("FileHash", e.to_string()))?,
                    )
                }
                "FileSize" => {
                    file_size = Some(
                        v.parse()
                            .map_err(|_| field("FileSize", format!("'{v}' is not a number")))?,
                    )
                }
                "NarHash" => {
                    nar_hash = Some(
                        v.parse()
                            .map_err(|e: crate::nix::hash::HashError| field("NarHash", e.to_string()))?,
                    )
                }
                "NarSize" => {
                    nar_size = Some(
                        v.parse()
                            .map_err(|_| field("NarSize", format!("'{v}' is not a number")))?,
                    )
                }
                "References" => {
                    for r in v.split_ascii_whitespace() {
                        refs.insert(base("References", r)?);
                    }
                }
                "Deriver" if v != "unknown-deriver" => deriver = Some(base("Deriver", v)?),
                "Sig" => sigs.push(
                    v.parse()
                        .map_err(|e: crate::nix::signing::KeyError| field("Sig", e.to_string()))?,
                ),
                "CA" if !v.is_empty() => {
                    check_ca(v).map_err(|why| field("CA", why))?;
                    ca = Some(v.to_string());
                }
                _ => {}
            }
        }
        Ok(NarInfo {
            info: PathInfo {
                path: path.ok_or(NarInfoError::Missing("StorePath"))?,
                nar_hash: nar_hash.ok_or(NarInfoError::Missing("NarHash"))?,
                nar_size: nar_size.ok_or(NarInfoError::Missing("NarSize"))?,
                references: refs,
                deriver,
                ca,
                sigs,
            },
            url,
            compression,
            file_hash,
            file_size,
        })
    }
}

/// Checks a content address as Nix writes it: `text:sha256:<hash>`, `fixed:<algo>:<hash>`,
/// `fixed:r:<algo>:<hash>` or `fixed:git:<algo>:<hash>`, the hash in nix32, hex or base64 of
/// the algorithm's length.
pub fn check_ca(ca: &str) -> Result<(), String> {
    let bad = || format!("'{ca}' is not a content address (text:sha256:…, fixed:[r:]ALGO:…)");
    let (method, rest) = ca.split_once(':').ok_or_else(bad)?;
    let rest = match method {
        "text" => rest.strip_prefix("sha256:").map(|h| ("sha256", h)),
        "fixed" => {
            let rest = rest
                .strip_prefix("r:")
                .or_else(|| rest.strip_prefix("git:"))
                .unwrap_or(rest);
            rest.split_once(':')
        }
        _ => None,
    };
    let (algo, hash) = rest.ok_or_else(bad)?;
    let len = match algo {
        "md5" => 16,
        "sha1" => 20,
        "sha256" => 32,
        "sha512" => 64,
        _ => return Err(bad()),
    };
    let decoded = if hash.len() == len * 2 {
        data_encoding::HEXLOWER_PERMISSIVE.decode(hash.as_bytes()).ok()
    } else if hash.len() == (len * 8).div_ceil(5) {
        crate::nix::hash::nix32_decode(hash, len)
    } else {
        data_encoding::BASE64.decode(hash.as_bytes()).ok()
    };
    match decoded {
        Some(b) if b.len() == len => Ok(()),
        _ => Err(bad()),
    }
}

/// Orders path infos so every path comes after the references it has among them.
pub fn sort_by_references<T>(items: Vec<T>, info: impl Fn(&T) -> &PathInfo) -> Vec<T> {
    let mut by_hash: BTreeMap<StoreHash, T> = items.into_iter().map(|t| (info(&t).path.hash(), t)).collect();
    let keys: Vec<StoreHash> = by_hash.keys().copied().collect();
    let mut order = Vec::with_capacity(keys.len());
    let mut state: BTreeMap<StoreHash, bool> = BTreeMap::new(); // false: visiting, true: done
    for k in keys {
        let mut stack = vec![(k, false)];
        while let Some((h, expanded)) = stack.pop() {
            if expanded {
                state.insert(h, true);
                order.push(h);
                continue;
            }
            if state.contains_key(&h) {
                continue;
            }
            state.insert(h, false);
            stack.push((h, true));
            if let Some(t) = by_hash.get(&h) {
                for r in info(t).other_references() {
                    if by_hash.contains_key(&r.hash()) && !state.contains_key(&r.hash()) {
                        stack.push((r.hash(), false));
                    }
                }
            }
        }
    }
    order.into_iter().filter_map(|h| by_hash.remove(&h)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "StorePath: /nix/store/0q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1
URL: nar/000y5y39fnxp2ijj8cmdgvmia6wwcrws1q6fbcr1fkf5rs2dm8lr.nar.xz
Compression: xz
FileHash: sha256:000y5y39fnxp2ijj8cmdgvmia6wwcrws1q6fbcr1fkf5rs2dm8lr
FileSize: 100
NarHash: sha256:11vwvgcxqjz2lk56j9j0643dmxwp8ips4i0cfchr70n4l0kan5d3
NarSize: 400
References: 0q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1 1q43idch209zsdngl8yl79x0y79aajib-glibc
Deriver: 2q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1.drv
";

    #[test]
    fn round_trip_and_fingerprint() {
        let ni = NarInfo::parse(TEXT).unwrap();
        assert_eq!(ni.render(), TEXT);
        assert_eq!(
            ni.info.fingerprint(),
            "1;/nix/store/0q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1;\
             sha256:11vwvgcxqjz2lk56j9j0643dmxwp8ips4i0cfchr70n4l0kan5d3;400;\
             /nix/store/0q43idch209zsdngl8yl79x0y79aajib-nix-2.8.1,/nix/store/1q43idch209zsdngl8yl79x0y79aajib-glibc"
        );
        assert_eq!(ni.info.other_references().count(), 1);
    }

    #[test]
    fn signing_replaces_own_signature() {
        let mut ni = NarInfo::parse(TEXT).unwrap();
        let k = SecretKey::generate("k-1").unwrap();
        ni.info.sign(&k);
        ni.info.sign(&k);
        assert_eq!(ni.info.sigs.len(), 1);
        assert!(ni.info.verify(&[k.public()]));
        let reparsed = NarInfo::parse(&ni.render()).unwrap();
        assert!(reparsed.info.verify(&[k.public()]));
        ni.info.nar_size += 1;
        assert!(!ni.info.verify(&[k.public()]));
    }

    #[test]
    fn content_addresses_as_nix_writes_them() {
        let h32 = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
        for ok in [
            format!("fixed:r:sha256:{h32}"),
            format!("fixed:sha256:{h32}"),
            format!("text:sha256:{h32}"),
            format!("fixed:sha1:{}", "a".repeat(40)),
            format!("fixed:git:sha1:{}", "a".repeat(40)),
        ] {
            assert_eq!(check_ca(&ok), Ok(()), "{ok}");
            assert!(NarInfo::parse(&format!("{TEXT}CA: {ok}\n")).is_ok());
        }
        for bad in [
            "garbage",
            "fixed:",
            "fixed:r:sha256:xyz",
            "text:sha1:aaaa",
            "fixed:sha257:aa",
            "nar:sha256:aa",
        ] {
            assert!(check_ca(bad).is_err(), "{bad}");
            assert!(NarInfo::parse(&format!("{TEXT}CA: {bad}\n")).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_fields() {
        assert_eq!(NarInfo::parse("garbage"), Err(NarInfoError::Line(1)));
        assert_eq!(
            NarInfo::parse(&TEXT.replace("NarSize: 400\n", "")),
            Err(NarInfoError::Missing("NarSize"))
        );
        assert!(NarInfo::parse(&TEXT.replace("NarSize: 400", "NarSize: x")).is_err());
        assert!(NarInfo::parse(&TEXT.replace("-glibc", "-gl/ibc")).is_err());
    }
}

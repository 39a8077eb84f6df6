//! Fetching from a Nix binary cache over HTTP (`store.upstreams`): a path's narinfo and NAR and
//! those of every reference the store lacks, each signature checked against the upstream's
//! trusted keys and each NAR against its NarHash/NarSize, imported in one atomic batch.

use std::collections::BTreeSet;
use std::io::BufReader;
use std::time::Duration;

use crate::config::UpstreamConfig;
use crate::nix::narinfo::{sort_by_references, NarInfo};
use crate::nix::signing::PublicKey;
use crate::nix::store_path::{StoreHash, StorePath};
use crate::store::{Contents, Importer, Store};

use super::error::PeerError;
use super::parallel::in_parallel;
use super::via::VIA_HEADER;

/// A NAR may take the timeout plus this long per MiB to arrive.
const NAR_SECONDS_PER_MIB: f64 = 1.0;

/// How many narinfos are requested at once while walking a closure.
const NARINFO_PARALLEL: usize = 8;

/// At most this many NARs are downloaded and parsed at once (and no more than the cores).
const MAX_PARSERS: usize = 4;

/// One upstream binary cache.
pub struct Upstream {
    base: String,
    keys: Vec<PublicKey>,
    timeout: Duration,
    agent: ureq::Agent,
}

impl Upstream {
    /// An upstream from its config; its keys must parse and there must be at least one.
    pub fn new(config: &UpstreamConfig) -> Result<Self, PeerError> {
        let base = config.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(PeerError::Config(format!(
                "upstream URL '{}' is not http:// or https://",
                config.url
            )));
        }
        let keys = config
            .trusted_public_keys
            .iter()
            .map(|k| {
                k.parse::<PublicKey>()
                    .map_err(|e| PeerError::Config(format!("upstream {base}: trusted key '{k}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(PeerError::Config(format!(
                "upstream {base} has no trusted_public_keys: nothing from it could be verified"
            )));
        }
        let timeout = Duration::from_secs(config.timeout_s.max(1));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .build()
            .into();
        Ok(Upstream {
            base,
            keys,
            timeout,
            agent,
        })
    }

    /// The upstream's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Fetches `hash` and the part of its closure the store lacks. `Ok(None)` if the upstream
    /// does not have it; an error (and nothing stored) if anything it sends is wrong. `via`
    /// goes out as the [`VIA_HEADER`].
    pub fn fetch(&self, store: &Store, hash: &StoreHash, via: &str) -> Result<Option<Vec<StorePath>>, PeerError> {
        let Some(first) = self.narinfo(hash, via)? else {
            return Ok(None);
        };
        // Breadth first, each level's narinfos requested in parallel (as Nix does): on a link
        // with latency a closure costs its depth in round trips, not its size.
        let mut seen = BTreeSet::from([first.info.path.hash()]);
        let mut wanted = Vec::new();
        let mut level = vec![first];
        while !level.is_empty() {
            let mut missing = Vec::new();
            for ni in &level {
                for r in ni.info.other_references() {
                    if seen.insert(r.hash()) && store.get(&r.hash())?.is_none() {
                        missing.push((r.clone(), ni.info.path.clone()));
                    }
                }
            }
            wanted.append(&mut level);
            level = self.narinfos(&missing, via)?;
        }
        let ordered = sort_by_references(wanted, |ni| &ni.info);
        self.import(store, &ordered, via).map(Some)
    }

    /// Downloads and imports `ordered` (references first) as one batch: NARs are parsed into Git
    /// objects in parallel (CPU bound: zlib and SHA-1 of every object), each through a repository
    /// handle of its own (handles are not shared between threads), then staged in order and
    /// committed at once.
    fn import(&self, store: &Store, ordered: &[NarInfo], via: &str) -> Result<Vec<StorePath>, PeerError> {
        let parsers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(MAX_PARSERS);
        let path = store.path();
        let contents = in_parallel(ordered, parsers, |ni| {
            self.parse(&Store::open(path)?.importer(), ni, via)
        })?;
        let mut importer = store.importer();
        for (ni, contents) in ordered.iter().zip(contents) {
            importer.stage(&ni.info, contents)?;
        }
        Ok(importer.commit()?)
    }

    /// The verified narinfos of `paths` (each with the path that refers to it), up to
    /// [`NARINFO_PARALLEL`] requests at once; every one must exist and describe the path asked for.
    fn narinfos(&self, paths: &[(StorePath, StorePath)], via: &str) -> Result<Vec<NarInfo>, PeerError> {
        in_parallel(paths, NARINFO_PARALLEL, |(path, referrer)| {
            let ni = self
                .narinfo(&path.hash(), via)?
                .ok_or_else(|| PeerError::Invalid(format!("{referrer} refers to {path}, which it does not have")))?;
            if ni.info.path != *path {
                return Err(PeerError::Invalid(format!(
                    "narinfo for {path} describes {}",
                    ni.info.path
                )));
            }
            Ok(ni)
        })
    }

    /// The verified narinfo of `hash`, or `None` on 404.
    fn narinfo(&self, hash: &StoreHash, via: &str) -> Result<Option<NarInfo>, PeerError> {
        let url = format!("{}/{hash}.narinfo", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .header(VIA_HEADER, via)
            .config()
            .timeout_global(Some(self.timeout))
            .build()
            .call()
            .map_err(|e| PeerError::Http(url.clone(), e.to_string()))?;
        match resp.status().as_u16() {
            200 => {}
            404 | 403 => return Ok(None),
            code => return Err(PeerError::Http(url, format!("HTTP status {code}"))),
        }
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| PeerError::Http(url.clone(), e.to_string()))?;
        let ni = NarInfo::parse(&text).map_err(|e| PeerError::Invalid(format!("{url}: {e}")))?;
        if ni.info.path.hash() != *hash {
            return Err(PeerError::Invalid(format!("{url} describes {}", ni.info.path)));
        }
        if !ni.info.verify(&self.keys) {
            return Err(PeerError::Signature(ni.info.path.to_string()));
        }
        Ok(Some(ni))
    }

    /// Downloads one path's NAR and parses it into Git objects (not yet referenced).
    fn parse(&self, importer: &Importer<'_>, ni: &NarInfo, via: &str) -> Result<Contents, PeerError> {
        let rel = ni
            .url
            .as_deref()
            .ok_or_else(|| PeerError::Invalid(format!("narinfo of {} has no URL", ni.info.path)))?;
        let url = if rel.starts_with("http://") || rel.starts_with("https://") {
            rel.to_string()
        } else {
            format!("{}/{}", self.base, rel.trim_start_matches('/'))
        };
        let mib = ni.file_size.unwrap_or(ni.info.nar_size) as f64 / (1 << 20) as f64;
        let deadline = self.timeout + Duration::from_secs_f64(mib * NAR_SECONDS_PER_MIB);
        let resp = self
            .agent
            .get(&url)
            .header(VIA_HEADER, via)
            .config()
            .timeout_global(Some(deadline))
            .build()
            .call()
            .map_err(|e| PeerError::Http(url.clone(), e.to_string()))?;
        if resp.status().as_u16() != 200 {
            return Err(PeerError::Http(url, format!("HTTP status {}", resp.status().as_u16())));
        }
        let body = BufReader::with_capacity(1 << 16, resp.into_body().into_reader());
        Ok(importer.write_nar_file_of(ni, &url, body)?)
    }
}

//! Fetching from a Nix binary cache over HTTP (`store.upstreams`): a path's narinfo and NAR and
//! those of every reference the store lacks, each signature checked against the upstream's
//! trusted keys and each NAR against its NarHash/NarSize, imported in one atomic batch.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::config::UpstreamConfig;
use crate::filecache::{parse_nar, sort_by_references, CacheError};
use crate::narinfo::NarInfo;
use crate::peers::{PeerError, VIA_HEADER};
use crate::signing::PublicKey;
use crate::store::{Contents, Importer, Store};
use crate::store_path::{StoreHash, StorePath};

/// A NAR may take the timeout plus this long per MiB to arrive.
const NAR_SECONDS_PER_MIB: f64 = 1.0;

/// How many narinfos are requested at once while walking a closure.
const NARINFO_PARALLEL: usize = 8;

/// At most this many NARs are downloaded and parsed at once (no more than the machine's cores).
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
        let mut wanted: BTreeMap<StoreHash, NarInfo> = BTreeMap::new();
        let mut level = vec![first];
        while !level.is_empty() {
            let mut missing: Vec<(StorePath, StorePath)> = Vec::new();
            for ni in &level {
                for r in ni.info.other_references() {
                    let h = r.hash();
                    if wanted.contains_key(&h)
                        || level.iter().any(|l| l.info.path.hash() == h)
                        || missing.iter().any(|(m, _)| m == r)
                        || store.get(&h)?.is_some()
                    {
                        continue;
                    }
                    missing.push((r.clone(), ni.info.path.clone()));
                }
            }
            for ni in level.drain(..) {
                wanted.insert(ni.info.path.hash(), ni);
            }
            level = self.narinfos(&missing, via)?;
        }
        let ordered = sort_by_references(wanted.into_values().collect(), |ni| &ni.info);
        self.import(store, &ordered, via).map(Some)
    }

    /// Downloads and imports `ordered` (references first) as one batch. Parsers, each with its
    /// own repository handle, download and parse NARs in parallel (parsing into Git objects is
    /// CPU bound); this thread stages the results in order and commits them all at once.
    fn import(&self, store: &Store, ordered: &[NarInfo], via: &str) -> Result<Vec<StorePath>, PeerError> {
        let parsers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, MAX_PARSERS)
            .min(ordered.len());
        let handles = (0..parsers)
            .map(|_| Store::open(store.path()))
            .collect::<Result<Vec<_>, _>>()?;
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let parsed: Mutex<Vec<Option<Result<Contents, PeerError>>>> =
            Mutex::new((0..ordered.len()).map(|_| None).collect());
        let ready = Condvar::new();
        std::thread::scope(|scope| {
            for handle in handles {
                let (next, stop, parsed, ready) = (&next, &stop, &parsed, &ready);
                scope.spawn(move || {
                    let importer = handle.importer();
                    // Every index taken is filled, so the stager never waits for one in vain.
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(ni) = ordered.get(i) else { return };
                        let result =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.parse(&importer, ni, via)))
                                .unwrap_or_else(|_| {
                                    Err(PeerError::Invalid(format!("parsing {} panicked", ni.info.path)))
                                });
                        let failed = result.is_err();
                        parsed.lock().expect("parse results")[i] = Some(result);
                        ready.notify_all();
                        if failed {
                            return;
                        }
                    }
                });
            }
            let result = (|| {
                let mut importer = store.importer();
                for (i, ni) in ordered.iter().enumerate() {
                    let mut slots = parsed.lock().expect("parse results");
                    let contents = loop {
                        match slots[i].take() {
                            Some(result) => break result?,
                            None => slots = ready.wait(slots).expect("parse results"),
                        }
                    };
                    drop(slots);
                    importer.stage(&ni.info, contents)?;
                }
                Ok(importer.commit()?)
            })();
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            result
        })
    }

    /// The verified narinfos of `paths` (each with the path that refers to it), fetched
    /// [`NARINFO_PARALLEL`] at a time; every one must exist and describe the path asked for.
    fn narinfos(&self, paths: &[(StorePath, StorePath)], via: &str) -> Result<Vec<NarInfo>, PeerError> {
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(NARINFO_PARALLEL) {
            let results: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(path, _)| scope.spawn(move || self.narinfo(&path.hash(), via)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a narinfo request panicked"))
                    .collect()
            });
            for ((path, referrer), result) in chunk.iter().zip(results) {
                let ni = result?.ok_or_else(|| {
                    PeerError::Invalid(format!("{referrer} refers to {path}, which it does not have"))
                })?;
                if ni.info.path != *path {
                    return Err(PeerError::Invalid(format!(
                        "narinfo for {path} describes {}",
                        ni.info.path
                    )));
                }
                out.push(ni);
            }
        }
        Ok(out)
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
        let size = ni.file_size.unwrap_or(ni.info.nar_size);
        let deadline = self.timeout + Duration::from_secs_f64(size as f64 / (1 << 20) as f64 * NAR_SECONDS_PER_MIB);
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
        parse_nar(importer, ni, &url, body).map_err(|e| match e {
            CacheError::Store(e) => PeerError::Store(e),
            other => PeerError::Invalid(other.to_string()),
        })
    }
}

//! Following a primary Grove as a read replica (`grove sync --follow`, `store.follow`).
//!
//! The first step is a whole `grove sync`. After it, each step reads only what the primary's
//! paths log (see [`crate::store::index`]) gained since the last step, over HTTP
//! (`<url>/grove-paths.log` with a `Range`) or from the file for a local primary, and fetches
//! just those paths over Git. A step therefore costs the new paths, not the primary's size: Git
//! negotiation over a million refs is never repeated. A primary without a log (over ssh, or not
//! a Grove) is followed by whole syncs.
//!
//! The primary announces a path before its ref exists, so a path may be read from the log
//! before it can be fetched: it is asked for again on the next steps, for up to
//! [`PENDING_FOR`], after which the primary's writer is taken to have failed. A whole sync
//! still runs every [`WHOLE_SYNC_EVERY`], for paths that reached the primary unannounced.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StoreHash;
use crate::store::adopt::Adopted;
use crate::store::index::{parse_records, read_log_at, PATHS_LOG};
use crate::store::{ObjectId, Store};

use super::error::PeerError;
use super::git::{GitRemote, NAMED_FETCH_LIMIT};

/// How long a path read from the log but not yet fetchable is asked for again.
const PENDING_FOR: Duration = Duration::from_secs(120);

/// How often a whole sync runs anyway: it finds paths the primary got without announcing them
/// (a `git push` into it), and costs a listing of the primary's refs.
const WHOLE_SYNC_EVERY: Duration = Duration::from_secs(600);

/// Up to this many new paths a step fetches beside the store (see
/// [`GitRemote::fetch_paths_beside`]), asking the primary for each one's references first.
const BESIDE_LIMIT: usize = 64;

/// How much of the log one step reads.
const LOG_PART: usize = 4 << 20;

/// Where the primary's paths log is read.
enum LogSource {
    /// `<url>/grove-paths.log` of a Grove served over HTTP.
    Http {
        url: String,
        auth: Option<String>,
        agent: ureq::Agent,
    },
    /// The log file of a primary on this machine.
    File(PathBuf),
    /// No log: every step is a whole sync.
    None,
}

/// What one step did.
#[derive(Debug, Default)]
pub struct Step {
    /// What was adopted.
    pub adopted: Adopted,
    /// Whether the step was a whole sync.
    pub whole: bool,
    /// Paths read from the log that could not be fetched yet.
    pub pending: usize,
}

/// A replica's view of one primary.
pub struct Follower {
    remote: GitRemote,
    log: LogSource,
    /// Where the next step reads the primary's log; `None` until a whole sync.
    offset: Option<u64>,
    pending: Vec<(StoreHash, Instant)>,
    /// When the last whole sync ran.
    last_whole: Option<Instant>,
}

impl Follower {
    /// Follows the primary at `url` (a Git URL; a Grove's `http://…/git` or a local store).
    pub fn new(url: &str, timeout: Duration, ssh_key: Option<PathBuf>) -> Self {
        let log = if url.starts_with("http://") || url.starts_with("https://") {
            let (url, auth) = split_credentials(url.trim_end_matches('/'));
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(timeout))
                .build()
                .into();
            LogSource::Http {
                url: format!("{url}/{PATHS_LOG}"),
                auth,
                agent,
            }
        } else if url.contains("://") && !url.starts_with("file://") {
            LogSource::None
        } else if url.contains(':') && !url.starts_with("file://") && !url.starts_with('/') {
            // scp-like `host:path`: ssh.
            LogSource::None
        } else {
            LogSource::File(PathBuf::from(url.trim_start_matches("file://")).join(PATHS_LOG))
        };
        Follower {
            remote: GitRemote::new(url, Some(timeout), ssh_key),
            log,
            offset: None,
            pending: Vec::new(),
            last_whole: None,
        }
    }

    /// The primary's URL.
    pub fn url(&self) -> &str {
        self.remote.url()
    }

    /// Brings the store up to date with the primary: a whole sync the first time (and when the
    /// primary's log was replaced), the paths its log gained since the last step afterwards.
    pub fn step(&mut self, store: &Store) -> Result<Step, PeerError> {
        let due = self.last_whole.is_none_or(|t| t.elapsed() > WHOLE_SYNC_EVERY);
        let Some(offset) = self.offset.filter(|_| !due) else {
            return self.whole_sync(store);
        };
        let (bytes, len) = self.read_log(offset)?;
        if len < offset {
            tracing::warn!(
                "{}: the paths log is shorter than before; syncing everything",
                self.url()
            );
            return self.whole_sync(store);
        }
        let mut fresh = Vec::new();
        let used = parse_records(&bytes, |h| fresh.push(h));
        let now = Instant::now();
        self.pending.retain(|(h, since)| {
            let keep = now.duration_since(*since) < PENDING_FOR;
            if !keep {
                tracing::warn!("{h} was announced by the primary but never appeared; no longer asked for");
            }
            keep
        });
        let mut wanted: Vec<(StoreHash, Instant)> = std::mem::take(&mut self.pending);
        for h in fresh {
            if store.commit_of_ref(&h)?.is_none() && !wanted.iter().any(|(w, _)| *w == h) {
                wanted.push((h, now));
            }
        }
        let mut step = Step::default();
        if wanted.len() > NAMED_FETCH_LIMIT {
            step.adopted = self.remote.sync(store)?;
            step.whole = true;
        } else if !wanted.is_empty() {
            let hashes: Vec<StoreHash> = wanted.iter().map(|(h, _)| *h).collect();
            step.adopted = match self.haves(store, &hashes) {
                Some(haves) => {
                    tracing::debug!("{}: {} paths, {} haves", self.url(), hashes.len(), haves.len());
                    self.remote.fetch_paths_beside(store, &hashes, &haves)?
                }
                None => self.remote.fetch_paths(store, &hashes)?,
            };
        }
        for (h, since) in wanted {
            if store.commit_of_ref(&h)?.is_none() {
                self.pending.push((h, since));
            }
        }
        step.pending = self.pending.len();
        self.offset = Some(offset + used as u64);
        Ok(step)
    }

    /// The commits this store holds of the references of `hashes` (read from the primary's
    /// narinfo), for a fetch that negotiates with those alone; `None` for a batch too large to
    /// ask about path by path, or when a path's references cannot be read (it is then fetched
    /// the plain way).
    fn haves(&self, store: &Store, hashes: &[StoreHash]) -> Option<Vec<ObjectId>> {
        if hashes.len() > BESIDE_LIMIT {
            return None;
        }
        // A local primary is opened once for the batch, not once a path.
        let primary = match &self.log {
            LogSource::File(log) => Some(Store::open(log.parent()?).ok()?),
            _ => None,
        };
        let mut haves = Vec::new();
        for h in hashes {
            for r in self.references(primary.as_ref(), h)? {
                if let Ok(Some(oid)) = store.commit_of_ref(&r) {
                    haves.push(oid);
                }
            }
        }
        haves.sort();
        haves.dedup();
        Some(haves)
    }

    /// The references of `hash` (itself excluded) as the primary's narinfo gives them
    /// (`primary`: the store of a local primary).
    fn references(&self, primary: Option<&Store>, hash: &StoreHash) -> Option<Vec<StoreHash>> {
        let info = match &self.log {
            LogSource::None => return None,
            LogSource::File(_) => primary?.get(hash).ok()??.info,
            LogSource::Http { url, auth, agent } => {
                let base = url.strip_suffix(&format!("/git/{PATHS_LOG}"))?;
                let mut req = agent.get(&format!("{base}/{hash}.narinfo"));
                if let Some(auth) = auth {
                    req = req.header("Authorization", auth);
                }
                let mut resp = req.call().ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let text = resp.body_mut().read_to_string().ok()?;
                NarInfo::parse(&text).ok()?.info
            }
        };
        Some(info.other_references().map(|p| p.hash()).collect())
    }

    /// A whole sync; the log's length is read first, so nothing added meanwhile is missed.
    fn whole_sync(&mut self, store: &Store) -> Result<Step, PeerError> {
        let len = match self.read_log(u64::MAX) {
            _ if matches!(self.log, LogSource::None) => None,
            Ok((_, len)) => Some(len),
            Err(PeerError::Invalid(why)) => {
                tracing::warn!("{}: {why}; following it by whole syncs", self.url());
                self.log = LogSource::None;
                None
            }
            Err(e) => return Err(e),
        };
        let adopted = self.remote.sync(store)?;
        self.offset = len;
        self.pending.clear();
        self.last_whole = Some(Instant::now());
        Ok(Step {
            adopted,
            whole: true,
            pending: 0,
        })
    }

    /// Up to [`LOG_PART`] bytes of the primary's log from `from`, and its whole length.
    fn read_log(&self, from: u64) -> Result<(Vec<u8>, u64), PeerError> {
        match &self.log {
            LogSource::None => Ok((Vec::new(), 0)),
            LogSource::File(path) => Ok(read_log_at(path, from, LOG_PART)?),
            LogSource::Http { url, auth, agent } => {
                let http = |e: String| PeerError::Http(url.clone(), e);
                let mut req = agent.get(url.as_str()).header("Range", &format!("bytes={from}-"));
                if let Some(auth) = auth {
                    req = req.header("Authorization", auth);
                }
                let mut resp = req.call().map_err(|e| http(e.to_string()))?;
                let total = |resp: &ureq::http::Response<ureq::Body>| {
                    resp.headers()
                        .get("content-range")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.rsplit_once('/'))
                        .and_then(|(_, n)| n.trim().parse::<u64>().ok())
                };
                match resp.status().as_u16() {
                    206 => {
                        let len = total(&resp).ok_or_else(|| http("206 without a length".into()))?;
                        let body = resp
                            .body_mut()
                            .with_config()
                            .limit(LOG_PART as u64 + 1)
                            .read_to_vec()
                            .map_err(|e| http(e.to_string()))?;
                        Ok((body, len))
                    }
                    // Nothing past `from`: the length says whether the log is longer or shorter.
                    416 => Ok((Vec::new(), total(&resp).unwrap_or(0))),
                    // The whole log (a request from 0 on a server that ignores ranges).
                    200 => {
                        let body = resp
                            .body_mut()
                            .with_config()
                            .limit(1 << 30)
                            .read_to_vec()
                            .map_err(|e| http(e.to_string()))?;
                        let len = body.len() as u64;
                        let start = (from.min(len)) as usize;
                        Ok((body[start..].to_vec(), len))
                    }
                    404 => Err(PeerError::Invalid(format!("{url} has no paths log"))),
                    s => Err(http(format!("status {s}"))),
                }
            }
        }
    }
}

/// Runs [`Follower::step`] every `interval` until `stop` is set, reporting each step that
/// changed something; an error (the primary is down) is logged and the next step tries again.
pub fn follow(
    store: &Store,
    follower: &mut Follower,
    interval: Duration,
    stop: &AtomicBool,
    mut report: impl FnMut(&Step),
) {
    let mut failing = false;
    while !stop.load(Ordering::Relaxed) {
        match follower.step(store) {
            Ok(step) => {
                if failing {
                    tracing::warn!("{}: following again", follower.url());
                    failing = false;
                }
                if step.whole || !step.adopted.added.is_empty() || !step.adopted.rejected.is_empty() {
                    report(&step);
                }
            }
            Err(e) => {
                // Said once per outage, not once per step.
                if !failing {
                    tracing::warn!("{}: {e}; retrying every {interval:?}", follower.url());
                }
                failing = true;
            }
        }
        std::thread::sleep(interval);
    }
}

/// `http://user:token@host/…` as the URL without credentials and a Basic authorization.
fn split_credentials(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rsplit_once('@') {
        Some((cred, host)) => (
            format!("{scheme}://{host}{}", &rest[host_end..]),
            Some(format!("Basic {}", data_encoding::BASE64.encode(cred.as_bytes()))),
        ),
        None => (url.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::split_credentials;

    #[test]
    fn credentials_move_to_a_header() {
        assert_eq!(split_credentials("http://h:1/git"), ("http://h:1/git".into(), None));
        let (url, auth) = split_credentials("http://u:t@h:1/git");
        assert_eq!(url, "http://h:1/git");
        assert_eq!(auth.as_deref(), Some("Basic dTp0"));
    }
}

//! `GET /<hash>.narinfo`: the signed narinfo, from the read path's cache when it has it.

use std::sync::Arc;

use hyper::{Method, Request, Response};

use crate::nix::store_path::StoreHash;

use super::body::{ok, Body};
use super::error::Reject;
use super::request::{blocking, via};
use super::state::Server;

/// The narinfo of `hash`, or 404.
pub async fn get<B>(
    server: Arc<Server>,
    method: &Method,
    hash: StoreHash,
    req: &Request<B>,
) -> Result<Response<Body>, Reject> {
    let text = match server.read.cached_narinfo_text(&hash) {
        Some(t) => Some(t),
        // Most requests are for paths the cache lacks: answered from memory, on this thread.
        None if !server.read.may_hold(&hash) && !server.read.reads_through() => None,
        // Git reads go to the blocking pool even though most take tens of microseconds: read
        // on the async threads, the ones that take long (a Git handle's first ref lookup
        // parses all of packed-refs) held up every connection of that thread. At 1M paths
        // that made the p99 of misses 50 ms instead of 2 ms.
        None => {
            let via = via(req);
            blocking(move || Ok(server.read.narinfo_text_via(&hash, &via)?)).await?
        }
    };
    let text = text.ok_or_else(|| Reject::NotFound(format!("{hash} is not in this cache")))?;
    Ok(ok(method, "text/x-nix-narinfo", text))
}

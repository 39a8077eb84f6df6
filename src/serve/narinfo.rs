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
        // Held here and nothing to wait for but the local Git store: read on this thread. A
        // narinfo is a ref, a commit, a tree and a small blob, read in tens of microseconds
        // from the page cache; handing it to the blocking pool and back cost more than that
        // (a third of the time of a hit not yet cached, measured at 100,000 paths).
        None if !server.read.reads_through() => server.read.narinfo_text(&hash)?,
        None => {
            let via = via(req);
            blocking(move || Ok(server.read.narinfo_text_via(&hash, &via)?)).await?
        }
    };
    let text = text.ok_or_else(|| Reject::NotFound(format!("{hash} is not in this cache")))?;
    Ok(ok(method, "text/x-nix-narinfo", text))
}

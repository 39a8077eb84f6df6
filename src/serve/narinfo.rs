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
        None => {
            let via = via(req);
            blocking(move || Ok(server.read.narinfo_text_via(&hash, &via)?)).await?
        }
    };
    let text = text.ok_or_else(|| Reject::NotFound(format!("{hash} is not in this cache")))?;
    Ok(ok(method, "text/x-nix-narinfo", text))
}

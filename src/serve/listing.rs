//! `GET /<hash>.ls`: the NAR listing with file offsets.

use std::sync::Arc;

use hyper::{Method, Request, Response};

use crate::nix::store_path::StoreHash;

use super::body::{ok, Body};
use super::error::Reject;
use super::request::{blocking, via};
use super::state::Server;

/// The listing of `hash`, or 404.
pub async fn get<B>(
    server: Arc<Server>,
    method: &Method,
    hash: StoreHash,
    req: &Request<B>,
) -> Result<Response<Body>, Reject> {
    let via = via(req);
    let json = blocking(move || {
        let Some(entry) = server.read.entry_via(&hash, &via)? else {
            return Ok(None);
        };
        let listing = server.read.listing(&entry)?;
        serde_json::to_vec(&listing)
            .map(Some)
            .map_err(|e| Reject::Internal(format!("serialising the listing of {hash}: {e}")))
    })
    .await?;
    let json = json.ok_or_else(|| Reject::NotFound(format!("{hash} is not in this cache")))?;
    Ok(ok(method, "application/json", json))
}

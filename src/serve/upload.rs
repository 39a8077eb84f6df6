//! Uploads from `nix copy --to`: `PUT /nar/<file>.nar[.xz|.zst|.bz2]` is parsed into Git
//! objects as it arrives and held as pending; `PUT /<hash>.narinfo` checks the narinfo against
//! its NAR (FileHash/FileSize, NarHash/NarSize) and references and creates the path's ref.
//! [`receive_nar`] and [`receive_narinfo`] are the whole upload path without HTTP.

use std::io::Read;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::nix::cache_file::{CacheFile, NarFile};
use crate::nix::narinfo::NarInfo;
use crate::nix::store_path::StoreHash;
use crate::store::import::{check_file, NarFileContents};
use crate::store::Store;

use super::body::{self, text, Body};
use super::error::Reject;
use super::pending::Pending;
use super::request::blocking;
use super::state::Server;

/// How much of a refused upload's body is still read before answering.
const DRAIN_ON_ERROR: u64 = 64 << 20;

/// Largest narinfo accepted in an upload.
const MAX_NARINFO: usize = 64 * 1024;

/// Parses an uploaded NAR file of at most `max` bytes (uncompressed) into Git objects, not yet
/// referenced.
pub fn receive_nar(store: &Store, file: &NarFile, body: impl Read, max: u64) -> Result<NarFileContents, Reject> {
    Ok(store.importer().write_nar_file(file.compression, body, max)?)
}

/// Checks an uploaded narinfo for `hash` against the NAR it names (taken from `pending`) and
/// adds the path. Returns whether it was new (`false`: present already).
pub fn receive_narinfo(store: &Store, hash: StoreHash, text: &[u8], pending: &Pending) -> Result<bool, Reject> {
    let text = std::str::from_utf8(text).map_err(|_| Reject::Bad("narinfo is not UTF-8".into()))?;
    let ni = NarInfo::parse(text).map_err(|e| Reject::Bad(e.to_string()))?;
    if ni.info.path.hash() != hash {
        return Err(Reject::Bad(format!(
            "narinfo for {} uploaded as {hash}.narinfo",
            ni.info.path
        )));
    }
    let url = ni
        .url
        .as_deref()
        .ok_or_else(|| Reject::Bad("narinfo has no URL".into()))?;
    let file = match CacheFile::parse(url) {
        Ok(CacheFile::Nar(file)) => file,
        _ => return Err(Reject::Bad(format!("narinfo URL '{url}' is not a NAR file"))),
    };
    let nar = pending.get(&file);
    let mut importer = store.importer();
    if importer.has(&ni.info.path)? {
        return Ok(false);
    }
    let nar = nar.ok_or_else(|| Reject::Bad(format!("{url} was not uploaded before this narinfo")))?;
    check_file(&ni, url, &nar)?;
    importer.stage(&ni.info, nar.contents)?;
    // Another upload of the same path may have made it visible meanwhile: then it is present.
    Ok(importer.commit()?.contains(&ni.info.path))
}

/// `PUT /nar/…`.
pub async fn put_nar(server: Arc<Server>, file: NarFile, req: Request<Incoming>) -> Result<Response<Body>, Reject> {
    let mut reader = body::reader(req.into_body(), server.options.io_timeout);
    let me = server.clone();
    let name = file.clone();
    let max = server.options.max_upload_bytes;
    let nar = blocking(move || {
        let received = me.read.with_store(|s| Ok(receive_nar(s, &name, &mut reader, max)))?;
        if received.is_err() {
            // Take (a bounded part of) the rest of the body, so that the client, still
            // sending, gets the answer rather than a reset connection.
            let _ = std::io::copy(
                &mut std::io::Read::take(&mut reader, DRAIN_ON_ERROR),
                &mut std::io::sink(),
            );
        }
        received
    })
    .await?;
    tracing::debug!("received {file} ({} bytes of NAR)", nar.contents.nar_size);
    server.uploads.insert(file, nar);
    Ok(text(StatusCode::OK, "stored"))
}

/// `PUT /<hash>.narinfo`.
pub async fn put_narinfo(
    server: Arc<Server>,
    hash: StoreHash,
    req: Request<Incoming>,
) -> Result<Response<Body>, Reject> {
    let collect = http_body_util::Limited::new(req.into_body(), MAX_NARINFO).collect();
    let body = tokio::time::timeout(server.options.io_timeout, collect)
        .await
        .map_err(|_| Reject::Timeout("the narinfo did not come in time".into()))?
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Reject::TooLarge(format!("narinfo larger than {MAX_NARINFO} bytes"))
            } else {
                Reject::Bad(format!("reading the narinfo: {e}"))
            }
        })?
        .to_bytes();
    let me = server.clone();
    let added = blocking(move || {
        me.read
            .with_store(|s| Ok(receive_narinfo(s, hash, &body, &me.uploads)))?
    })
    .await?;
    if added {
        tracing::info!("uploaded {hash}");
    }
    Ok(text(StatusCode::OK, if added { "added" } else { "present" }))
}

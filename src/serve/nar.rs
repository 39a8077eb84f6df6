//! `GET /nar/<hash>.nar[.zst|.xz]`: a path's NAR synthesised from Git and streamed, plain with
//! `Content-Length` and `Range`, or compressed on the fly.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::nix::cache_file::NarFile;
use crate::nix::compression::Compression;
use crate::store::StoreError;

use super::body::{self, full, header_value, ok, Body, ChannelWriter};
use super::error::Reject;
use super::range::{parse_range, RangeAnswer};
use super::request::{blocking, via};
use super::state::Server;

/// The NAR `file` names, or 404.
pub async fn get<B>(
    server: Arc<Server>,
    method: &Method,
    file: NarFile,
    req: &Request<B>,
) -> Result<Response<Body>, Reject> {
    let Some(hash) = file.store_hash() else {
        // Not one of ours: maybe an upload in progress (Nix asks before uploading).
        return if method == Method::HEAD && server.uploads.contains(&file) {
            Ok(ok(method, "application/x-nix-nar", Bytes::new()))
        } else {
            Err(Reject::NotFound(format!("no such NAR: {file}")))
        };
    };
    let compression = file.compression;
    if compression == Compression::None {
        if let Some(nar) = server.read.cached_nar(&hash) {
            let (mut resp, start, end) = nar_head(req, nar.len() as u64)?;
            if method != Method::HEAD {
                *resp.body_mut() = full(nar.slice(start as usize..end as usize));
            }
            return Ok(resp);
        }
    }
    let me = server.clone();
    let via = via(req);
    let entry = blocking(move || Ok(me.read.entry_via(&hash, &via)?)).await?;
    let entry = entry.ok_or_else(|| Reject::NotFound(format!("{hash} is not in this cache")))?;
    let size = entry.info.nar_size;
    let (mut resp, start, end) = if compression == Compression::None {
        nar_head(req, size)?
    } else {
        let mut resp = Response::new(full(Bytes::new()));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-nix-nar"));
        (resp, 0, size)
    };
    if method == Method::HEAD {
        return Ok(resp);
    }
    // A whole uncompressed NAR is kept for the next request if it fits the cache.
    let keep = compression == Compression::None && (start, end) == (0, size) && server.read.nar_cacheable(size);
    let (tx, stream) = body::channel();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter::new(tx, keep);
        let result = compression
            .encode(&mut out, |w| server.read.write_nar_range(&entry, start, end, w))
            .and_then(|out| out.flush().map_err(StoreError::from));
        match result {
            Ok(()) => {
                if let Some(copy) = out.take_copy().filter(|c| c.len() as u64 == size) {
                    server.read.remember_nar(hash, Bytes::from(copy));
                }
            }
            Err(e) => {
                tracing::warn!("streaming NAR of {} stopped: {e}", entry.info.path);
                out.fail(io::Error::other(e.to_string()));
            }
        }
    });
    *resp.body_mut() = stream;
    Ok(resp)
}

/// The headers of an uncompressed NAR response of `size` bytes, honouring a `Range` request:
/// the response (200 or 206, empty body) and the byte window to send.
fn nar_head<B>(req: &Request<B>, size: u64) -> Result<(Response<Body>, u64, u64), Reject> {
    let mut resp = Response::new(full(Bytes::new()));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-nix-nar"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end) = match range.map(|r| parse_range(r, size)) {
        None | Some(RangeAnswer::Whole) => (0, size),
        Some(RangeAnswer::Unsatisfiable) => return Err(Reject::Range(size)),
        Some(RangeAnswer::Part(start, end)) => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{}/{size}", end - 1)),
            );
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            (start, end)
        }
    };
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, header_value(&(end - start).to_string()));
    Ok((resp, start, end))
}

//! `GET /nar/<hash>.nar[.zst|.xz]`: a path's NAR synthesised from Git and streamed, plain with
//! `Content-Length` and `Range`, or compressed on the fly.

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::OwnedSemaphorePermit;

use crate::nix::cache_file::NarFile;
use crate::nix::compression::{Compression, StreamEncoder};
use crate::read::NarCursor;
use crate::store::{Entry, StoreError};

use super::body::{self, full, header_value, ok, Body, Producer};
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
    // Compressing costs seconds of CPU: only in the compression narinfo advertises.
    if compression != Compression::None && compression != server.read.compression() {
        return Err(Reject::NotFound(format!(
            "this cache serves NARs as .nar{}",
            server.read.compression().extension()
        )));
    }
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
    let keep = compression == Compression::None && (start, end) == (0, size) && server.read.reserve_nar_copy(size);
    // At most one NAR compressed per core at once; the others wait their turn.
    let permit = if compression == Compression::None {
        None
    } else {
        let waiting = server.compressors.clone().acquire_owned();
        let permit = tokio::time::timeout(server.options.io_timeout, waiting)
            .await
            .map_err(|_| Reject::Busy("every compressor is busy; try again".into()))?;
        Some(permit.map_err(|_| Reject::Internal("the compressor limit is closed".into()))?)
    };
    let encoder = StreamEncoder::new(compression).map_err(|e| Reject::Internal(format!("compressor: {e}")))?;
    let makers = server.chunk_makers.clone();
    *resp.body_mut() = body::produced(
        NarProducer {
            server,
            entry,
            at: start,
            end,
            encoder: Some(encoder),
            copy: keep.then(Vec::new),
            cursor: NarCursor::default(),
            _permit: permit,
        },
        makers,
    );
    Ok(resp)
}

/// Bytes of NAR read from Git for each chunk.
const RAW_CHUNK: u64 = 512 * 1024;

/// Makes a NAR response a chunk at a time (see [`body::produced`]).
struct NarProducer {
    server: Arc<Server>,
    entry: Entry,
    /// The next NAR byte to read.
    at: u64,
    end: u64,
    /// `None` once finished.
    encoder: Option<StreamEncoder>,
    /// Everything sent, when the whole NAR is to be kept (room reserved in the read path).
    copy: Option<Vec<u8>>,
    /// Where the NAR's blobs are being read.
    cursor: NarCursor,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for NarProducer {
    fn drop(&mut self) {
        // A body broken off: its partial copy goes, and so does its reservation.
        if self.copy.take().is_some() {
            self.server.read.release_nar_copy(self.entry.info.nar_size);
        }
    }
}

impl NarProducer {
    fn step(&mut self) -> Result<Option<Bytes>, StoreError> {
        loop {
            if self.encoder.is_none() {
                return Ok(None);
            }
            if self.at >= self.end {
                let rest = self
                    .encoder
                    .take()
                    .map(StreamEncoder::finish)
                    .transpose()?
                    .unwrap_or_default();
                return Ok((!rest.is_empty()).then(|| Bytes::from(rest)));
            }
            let to = (self.at + RAW_CHUNK).min(self.end);
            let raw = self
                .server
                .read
                .read_nar_at(&self.entry, self.at, to - self.at, &mut self.cursor)?;
            self.at = to;
            if let Some(copy) = &mut self.copy {
                copy.extend_from_slice(&raw);
            }
            if self.at >= self.end {
                // Now, not after the last chunk: a client stops reading at Content-Length, and
                // the body is dropped without being asked for its end.
                self.keep_copy();
            }
            if let Some(encoder) = self.encoder.as_mut() {
                encoder.write_all(&raw)?;
                let out = encoder.take();
                if !out.is_empty() {
                    return Ok(Some(Bytes::from(out)));
                }
            }
        }
    }

    /// Hands a complete copy of the NAR to the NAR cache, and gives back its reservation.
    fn keep_copy(&mut self) {
        if let Some(copy) = self.copy.take() {
            let size = self.entry.info.nar_size;
            self.server.read.release_nar_copy(size);
            if copy.len() as u64 == size {
                self.server
                    .read
                    .remember_nar(self.entry.info.path.hash(), Bytes::from(copy));
            }
        }
    }
}

impl Producer for NarProducer {
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.step().map_err(|e| {
            tracing::warn!("streaming NAR of {} stopped: {e}", self.entry.info.path);
            io::Error::other(e.to_string())
        })
    }
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

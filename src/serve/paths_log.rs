//! `GET /git/grove-paths.log`: the log of the paths this store announced (see
//! [`crate::store::index`]), which read replicas follow (`grove sync --follow`): they ask for
//! `Range: bytes=N-` from where they stopped and fetch just the new paths over Git.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::body::{full, header_value, Body};
use super::error::Reject;
use super::range::{parse_range, RangeAnswer};
use super::request::blocking;
use super::state::Server;

/// The most one response carries; a follower asks again for the rest.
const MAX_PART: usize = 4 << 20;

/// The log, or the part of it a `Range` asks for (at most [`MAX_PART`] bytes of it).
pub async fn get<B>(server: Arc<Server>, method: &Method, req: &Request<B>) -> Result<Response<Body>, Reject> {
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (from, len, data) = blocking(move || {
        let (_, len) = server.read.with_store(|s| s.paths_log(0, 0))?;
        let (from, max) = match range.map(|r| parse_range(&r, len)) {
            None | Some(RangeAnswer::Whole) => (0, usize::MAX),
            Some(RangeAnswer::Unsatisfiable) => return Err(Reject::Range(len)),
            Some(RangeAnswer::Part(start, end)) => (start, ((end - start) as usize).min(MAX_PART)),
        };
        let (data, _) = server.read.with_store(|s| s.paths_log(from, max))?;
        Ok((from, len, data))
    })
    .await?;
    let n = data.len() as u64;
    let partial = from > 0 || n < len;
    let mut resp = Response::new(if method == Method::HEAD {
        full(Vec::new())
    } else {
        full(data)
    });
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_LENGTH, header_value(&n.to_string()));
    if partial {
        headers.insert(
            header::CONTENT_RANGE,
            header_value(&format!("bytes {from}-{}/{len}", from + n - 1)),
        );
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

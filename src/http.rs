//! `grove serve`: the Nix binary-cache HTTP protocol over the read path.
//!
//! Reads: `GET|HEAD /nix-cache-info`, `/<hash>.narinfo`, `/nar/<hash>.nar[.zst|.xz]` (plain
//! NARs with `Content-Length` and `Range`), `/<hash>.ls`. Writes (`nix copy --to`):
//! `PUT /nar/<file>.nar[.xz|.zst|.bz2]` is parsed into Git objects at once and held as pending;
//! `PUT /<hash>.narinfo` checks it against its NAR and references and creates the path's ref.
//! Git work runs on tokio's blocking pool; NAR bodies flow through bounded channels, so memory
//! per request does not grow with the NAR.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use crate::hash::{HashingWriter, NarHash};
use crate::narinfo::NarInfo;
use crate::readpath::{Compression, ReadPath};
use crate::store::{Contents, StoreError};
use crate::store_path::{StoreHash, STORE_DIR};

type Body = BoxBody<Bytes, io::Error>;

/// Largest narinfo accepted in an upload.
const MAX_NARINFO: usize = 64 * 1024;
/// Uploaded NARs whose narinfo never came are forgotten after this long.
const PENDING_TTL: Duration = Duration::from_secs(3600);
/// Size of the chunks a NAR is streamed in.
const CHUNK: usize = 64 * 1024;

/// What the server needs besides the store.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `Priority` in `/nix-cache-info`.
    pub priority: u32,
    /// Token required for reads, if any.
    pub read_token: Option<String>,
    /// Token required for uploads; without one, uploads are refused.
    pub write_token: Option<String>,
}

struct Pending {
    contents: Contents,
    file_hash: NarHash,
    file_size: u64,
    created: Instant,
}

/// The server's shared state.
pub struct Server {
    read: ReadPath,
    options: Options,
    pending: Mutex<HashMap<String, Pending>>,
}

/// A request that cannot be answered as asked.
#[derive(Debug)]
enum Reject {
    NotFound(String),
    Bad(String),
    Unauthorized,
    Forbidden(String),
    Method,
    Range(u64),
    Unsupported(String),
    TooLarge,
    Internal(String),
}

impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Nar(_)
            | StoreError::HashMismatch { .. }
            | StoreError::SizeMismatch { .. }
            | StoreError::MissingReference { .. }
            | StoreError::BadPath(_) => Reject::Bad(e.to_string()),
            e => Reject::Internal(e.to_string()),
        }
    }
}

impl Reject {
    fn response(self) -> Response<Body> {
        let (status, msg) = match self {
            Reject::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Reject::Bad(m) => (StatusCode::BAD_REQUEST, m),
            Reject::Unauthorized => (StatusCode::UNAUTHORIZED, "missing or wrong token".into()),
            Reject::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Reject::Method => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into()),
            Reject::Range(size) => {
                let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable".into());
                r.headers_mut()
                    .insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
                return r;
            }
            Reject::Unsupported(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            Reject::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "narinfo too large".into()),
            Reject::Internal(m) => {
                tracing::error!("internal error: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        };
        let mut r = text(status, msg);
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"grove\""),
            );
        }
        r
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("header value is ASCII")
}

fn text(status: StatusCode, msg: String) -> Response<Body> {
    let mut r = Response::new(full(format!("{}\n", msg.lines().next().unwrap_or(""))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

/// A complete response with a known body; for HEAD, the same headers and no body.
fn ok(method: &Method, content_type: &'static str, data: impl Into<Bytes>) -> Response<Body> {
    let data = data.into();
    let len = data.len();
    let mut r = Response::new(if method == Method::HEAD {
        full(Bytes::new())
    } else {
        full(data)
    });
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    r
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Reject> + Send + 'static) -> Result<T, Reject> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Reject::Internal(format!("worker failed: {e}")))?
}

/// The Groves a read-through request passed through (see [`crate::peers::VIA_HEADER`]).
fn via<B>(req: &Request<B>) -> String {
    req.headers()
        .get(crate::peers::VIA_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn parse_hash(s: &str) -> Result<StoreHash, Reject> {
    s.parse()
        .map_err(|_| Reject::Bad(format!("'{s}' is not a store path hash")))
}

impl Server {
    /// A server over `read`.
    pub fn new(read: ReadPath, options: Options) -> Arc<Self> {
        Arc::new(Server {
            read,
            options,
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Serves connections from `listener` until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => { tracing::warn!("accept failed: {e}"); continue; }
                },
            };
            // Responses go out as a header write and body writes; without this, Nagle's
            // algorithm holds a small body back until the client's delayed ACK (~40 ms).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY for {peer}: {e}");
            }
            let server = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| server.clone().handle(req, peer));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("connection from {peer}: {e}");
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Result<Response<Body>, Infallible> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let resp = self.route(req).await.unwrap_or_else(Reject::response);
        tracing::debug!("{peer} {method} {path} {}", resp.status().as_u16());
        Ok(resp)
    }

    fn authorized(&self, req: &Request<Incoming>, token: Option<&str>) -> bool {
        let Some(token) = token else { return true };
        let Some(value) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if let Some(bearer) = value.strip_prefix("Bearer ") {
            return bearer.trim() == token;
        }
        value
            .strip_prefix("Basic ")
            .and_then(|b| data_encoding::BASE64.decode(b.trim().as_bytes()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(_, pass)| pass == token))
            .unwrap_or(false)
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Reject> {
        let method = req.method().clone();
        let path = req.uri().path().trim_start_matches('/').to_string();
        if method == Method::PUT {
            let opts = &self.options;
            if opts.write_token.is_none() {
                return Err(Reject::Forbidden("uploads are disabled: set server.write_token".into()));
            }
            if !self.authorized(&req, opts.write_token.as_deref()) {
                return Err(Reject::Unauthorized);
            }
            return if let Some(file) = path.strip_prefix("nar/") {
                self.put_nar(file.to_string(), req).await
            } else if let Some(hash) = path.strip_suffix(".narinfo") {
                self.put_narinfo(hash.to_string(), req).await
            } else {
                Err(Reject::NotFound(format!("cannot upload to /{path}")))
            };
        }
        let git = path == "git" || path.starts_with("git/");
        if method != Method::GET && method != Method::HEAD && !(git && method == Method::POST) {
            return Err(Reject::Method);
        }
        let opts = &self.options;
        let read_ok = self.authorized(&req, opts.read_token.as_deref())
            || opts
                .write_token
                .as_deref()
                .is_some_and(|w| self.authorized(&req, Some(w)));
        if !read_ok {
            return Err(Reject::Unauthorized);
        }
        if git {
            return self.git(req).await;
        }
        if path == "nix-cache-info" {
            let body = format!(
                "StoreDir: {STORE_DIR}\nWantMassQuery: 1\nPriority: {}\n",
                self.options.priority
            );
            return Ok(ok(&method, "text/x-nix-cache-info", body));
        }
        if let Some(file) = path.strip_prefix("nar/") {
            return self.get_nar(&method, file, &req).await;
        }
        if let Some(hash) = path.strip_suffix(".narinfo") {
            let hash = parse_hash(hash)?;
            let text = match self.read.cached_narinfo_text(&hash) {
                Some(t) => Some(t),
                None => {
                    let me = self.clone();
                    let via = via(&req);
                    blocking(move || Ok(me.read.narinfo_text_via(&hash, &via)?)).await?
                }
            };
            let text = text.ok_or_else(|| Reject::NotFound(format!("{hash} is not in this cache")))?;
            return Ok(ok(&method, "text/x-nix-narinfo", text));
        }
        if let Some(hash) = path.strip_suffix(".ls") {
            let hash = parse_hash(hash)?;
            let me = self.clone();
            let via = via(&req);
            let json = blocking(move || {
                let Some(entry) = me.read.entry_via(&hash, &via)? else {
                    return Ok(None);
                };
                let listing = me.read.listing(&entry)?;
                Ok(Some(
                    serde_json::to_vec(&listing).map_err(|e| Reject::Internal(e.to_string()))?,
                ))
            })
            .await?;
            let json = json.ok_or_else(|| Reject::NotFound(format!("{hash} is not in this cache")))?;
            return Ok(ok(&method, "application/json", json));
        }
        Err(Reject::NotFound(format!("no such resource: /{path}")))
    }

    /// Serves the repository read-only over Git's smart HTTP protocol by running the real
    /// `git http-backend` as a CGI program (pushes are refused: receive-pack is off for
    /// unauthenticated users).
    async fn git(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Reject> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let path_info = req.uri().path().strip_prefix("/git").unwrap_or("/").to_string();
        let header = |name: &header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut cmd = tokio::process::Command::new("git");
        cmd.arg("http-backend")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GIT_PROJECT_ROOT", self.read.store_dir())
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("PATH_INFO", if path_info.is_empty() { "/" } else { &path_info })
            .env("REQUEST_METHOD", req.method().as_str())
            .env("QUERY_STRING", req.uri().query().unwrap_or(""))
            .env("CONTENT_TYPE", header(&header::CONTENT_TYPE))
            .env("HTTP_CONTENT_ENCODING", header(&header::CONTENT_ENCODING))
            .env(
                "GIT_PROTOCOL",
                req.headers()
                    .get("git-protocol")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| Reject::Internal(format!("cannot run git http-backend: {e}")))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut body = req.into_body();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    if stdin.write_all(&data).await.is_err() {
                        return;
                    }
                }
            }
        });
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut resp = Response::new(full(Bytes::new()));
        loop {
            let mut line = String::new();
            if out
                .read_line(&mut line)
                .await
                .map_err(|e| Reject::Internal(e.to_string()))?
                == 0
            {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("status") {
                let code = value
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500);
                *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            } else if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                resp.headers_mut().append(n, v);
            }
        }
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, io::Error>>(8);
        tokio::spawn(async move {
            let _child = child;
            let mut buf = vec![0u8; CHUNK];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx
                            .send(Ok(Frame::data(Bytes::copy_from_slice(&buf[..n]))))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        *resp.body_mut() = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
        Ok(resp)
    }

    async fn get_nar(
        self: Arc<Self>,
        method: &Method,
        file: &str,
        req: &Request<Incoming>,
    ) -> Result<Response<Body>, Reject> {
        let (stem, ext) = file
            .split_once(".nar")
            .ok_or_else(|| Reject::NotFound(format!("no such NAR: {file}")))?;
        if stem.len() != 32 {
            // Not one of ours: maybe an upload in progress (Nix asks before uploading).
            let known = self.pending.lock().expect("poisoned").contains_key(file);
            return if known && method == Method::HEAD {
                Ok(ok(method, "application/x-nix-nar", Bytes::new()))
            } else {
                Err(Reject::NotFound(format!("no such NAR: {file}")))
            };
        }
        let hash = parse_hash(stem)?;
        let compression =
            Compression::from_extension(ext).ok_or_else(|| Reject::NotFound(format!("no such NAR: {file}")))?;
        if compression == Compression::None {
            if let Some(nar) = self.read.cached_nar(&hash) {
                let (mut resp, start, end) = nar_head(req, nar.len() as u64)?;
                if method != Method::HEAD {
                    *resp.body_mut() = full(nar.slice(start as usize..end as usize));
                }
                return Ok(resp);
            }
        }
        let me = self.clone();
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
        let keep = compression == Compression::None && (start, end) == (0, size) && self.read.nar_cacheable(size);
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, io::Error>>(8);
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
                copy: keep.then(Vec::new),
            };
            let result = (|| -> Result<(), StoreError> {
                match compression {
                    Compression::None => me.read.write_nar_range(&entry, start, end, &mut out)?,
                    Compression::Zstd => {
                        let mut enc = zstd::Encoder::new(&mut out, 3)?;
                        me.read.write_nar_range(&entry, 0, size, &mut enc)?;
                        enc.finish()?;
                    }
                    Compression::Xz => {
                        let mut enc = liblzma::write::XzEncoder::new(&mut out, 6);
                        me.read.write_nar_range(&entry, 0, size, &mut enc)?;
                        enc.finish()?;
                    }
                }
                out.flush()?;
                Ok(())
            })();
            match result {
                Ok(()) => {
                    if let Some(copy) = out.copy.take().filter(|c| c.len() as u64 == size) {
                        me.read.remember_nar(hash, Bytes::from(copy));
                    }
                }
                Err(e) => {
                    tracing::warn!("streaming NAR of {} stopped: {e}", entry.info.path);
                    let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                }
            }
        });
        *resp.body_mut() = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
        Ok(resp)
    }

    async fn put_nar(self: Arc<Self>, file: String, req: Request<Incoming>) -> Result<Response<Body>, Reject> {
        let valid = |stem: &str| !stem.is_empty() && stem.bytes().all(|c| c.is_ascii_alphanumeric());
        let (stem, ext) = file
            .split_once(".nar")
            .ok_or_else(|| Reject::Bad(format!("'{file}' is not a NAR file name")))?;
        if !valid(stem) {
            return Err(Reject::Bad(format!("'{file}' is not a NAR file name")));
        }
        let compression = match ext {
            "" => "none",
            ".xz" => "xz",
            ".zst" => "zstd",
            ".bz2" => "bzip2",
            other => return Err(Reject::Unsupported(format!("unsupported NAR compression '{other}'"))),
        };
        let reader = body_reader(req.into_body());
        let me = self.clone();
        let (contents, file_hash, file_size) = blocking(move || {
            let mut tee = HashingReader {
                inner: reader,
                hash: HashingWriter::new(),
            };
            let contents = {
                let dec = crate::filecache::decompressor(Some(compression), &mut tee)
                    .map_err(|e| Reject::Bad(e.to_string()))?;
                let mut nar = io::BufReader::with_capacity(CHUNK, dec);
                let contents = me.read.with_store(|s| s.importer().write_contents(&mut nar))?;
                let mut rest = [0u8; 1];
                if nar.read(&mut rest).map_err(|e| Reject::Bad(e.to_string()))? != 0 {
                    return Err(Reject::Bad("trailing data after the NAR".into()));
                }
                contents
            };
            io::copy(&mut tee, &mut io::sink()).map_err(|e| Reject::Bad(e.to_string()))?;
            let (h, n) = tee.hash.finish();
            Ok((contents, h, n))
        })
        .await?;
        let mut pending = self.pending.lock().expect("poisoned");
        pending.retain(|_, p| p.created.elapsed() < PENDING_TTL);
        pending.insert(
            format!("nar/{file}"),
            Pending {
                contents,
                file_hash,
                file_size,
                created: Instant::now(),
            },
        );
        tracing::debug!("received nar/{file} ({} bytes of NAR)", contents.nar_size);
        Ok(text(StatusCode::OK, "stored".into()))
    }

    async fn put_narinfo(self: Arc<Self>, hash: String, req: Request<Incoming>) -> Result<Response<Body>, Reject> {
        let hash = parse_hash(&hash)?;
        let body = http_body_util::Limited::new(req.into_body(), MAX_NARINFO)
            .collect()
            .await
            .map_err(|_| Reject::TooLarge)?
            .to_bytes();
        let text_body = std::str::from_utf8(&body).map_err(|_| Reject::Bad("narinfo is not UTF-8".into()))?;
        let ni = NarInfo::parse(text_body).map_err(|e| Reject::Bad(e.to_string()))?;
        if ni.info.path.hash() != hash {
            return Err(Reject::Bad(format!(
                "narinfo for {} uploaded as {hash}.narinfo",
                ni.info.path
            )));
        }
        let url = ni.url.clone().ok_or_else(|| Reject::Bad("narinfo has no URL".into()))?;
        let me = self.clone();
        let added = blocking(move || {
            me.read.with_store(|store| {
                let mut imp = store.importer();
                let pending = me.pending.lock().expect("poisoned").remove(&url);
                if imp.has(&ni.info.path)? {
                    return Ok(Ok(false));
                }
                let Some(p) = pending else {
                    return Ok(Err(Reject::Bad(format!("{url} was not uploaded before this narinfo"))));
                };
                if ni.file_hash.is_some_and(|h| h != p.file_hash) || ni.file_size.is_some_and(|n| n != p.file_size) {
                    return Ok(Err(Reject::Bad(format!(
                        "{url} does not match the narinfo's FileHash/FileSize"
                    ))));
                }
                imp.stage(&ni.info, p.contents)?;
                imp.commit()?;
                Ok(Ok(true))
            })?
        })
        .await?;
        if added {
            tracing::info!("uploaded {}", hash);
        }
        Ok(text(StatusCode::OK, if added { "added" } else { "present" }.into()))
    }
}

/// The headers of an uncompressed NAR response of `size` bytes, honouring a `Range` request:
/// the response (200 or 206, empty body) and the byte window to send.
fn nar_head(req: &Request<Incoming>, size: u64) -> Result<(Response<Body>, u64, u64), Reject> {
    let mut resp = Response::new(full(Bytes::new()));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-nix-nar"));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let (start, end) = match range {
        Some(r) => parse_range(r, size)?,
        None => (0, size),
    };
    if range.is_some() {
        headers.insert(header::CONTENT_RANGE, hv(&format!("bytes {start}-{}/{size}", end - 1)));
    }
    headers.insert(header::CONTENT_LENGTH, hv(&(end - start).to_string()));
    if range.is_some() {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok((resp, start, end))
}

/// Parses a single `Range: bytes=…` against a body of `size` bytes into `start..end`.
fn parse_range(value: &str, size: u64) -> Result<(u64, u64), Reject> {
    let bad = || Reject::Range(size);
    let spec = value.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    if spec.contains(',') {
        return Err(bad());
    }
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| bad())?;
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().map_err(|_| bad())?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>().map_err(|_| bad())?.saturating_add(1).min(size)
        };
        (start, end)
    };
    if start >= end || start >= size {
        return Err(bad());
    }
    Ok((start, end))
}

/// Sends what is written as body chunks of [`CHUNK`] bytes; fails once the client is gone.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Frame<Bytes>, io::Error>>,
    buf: Vec<u8>,
    /// Everything sent, when the caller wants to keep it.
    copy: Option<Vec<u8>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(copy) = &mut self.copy {
            copy.extend_from_slice(&self.buf);
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(Frame::data(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// A request body as a blocking reader, fed through a bounded channel.
fn body_reader(mut body: Incoming) -> BodyReader {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(8);
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue,
                },
                Err(e) => Err(io::Error::other(format!("reading the request body: {e}"))),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    BodyReader { rx, cur: Bytes::new() }
}

struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hash: HashingWriter,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Runs the server on `addr` until SIGINT or SIGTERM; `on_bound` is told the bound address.
pub fn run(read: ReadPath, options: Options, addr: &str, on_bound: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    use anyhow::Context;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        on_bound(listener.local_addr()?);
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            eprintln!("shutting down");
        };
        Server::new(read, options).serve(listener, shutdown).await;
        Ok(())
    })
}

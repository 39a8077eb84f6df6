//! `/git/…`: the repository read-only over Git's smart HTTP protocol, by running the real
//! `git http-backend` as a CGI program (pushes are refused: receive-pack is off for
//! unauthenticated users).

use std::io;
use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::body::{self, full, Body, CHUNK};
use super::error::Reject;
use super::state::Server;

/// Runs `git http-backend` for the request and streams its answer.
pub async fn serve(server: Arc<Server>, req: Request<Incoming>) -> Result<Response<Body>, Reject> {
    let path_info = req.uri().path().strip_prefix("/git").unwrap_or("/").to_string();
    // Only plain paths inside the repository: no `..`, no `.`, no escapes or backslashes.
    if path_info
        .split('/')
        .any(|seg| seg == ".." || seg == "." || seg.contains('%') || seg.contains('\\'))
    {
        return Err(Reject::Bad(format!("not a repository path: /git{path_info}")));
    }
    let permit = server
        .git_processes
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Reject::Internal("the git process limit is closed".into()))?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", server.read.store_dir())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", if path_info.is_empty() { "/" } else { &path_info })
        .env("REQUEST_METHOD", req.method().as_str())
        .env("QUERY_STRING", req.uri().query().unwrap_or(""))
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE.as_str()))
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING.as_str()))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Reject::Internal(format!("cannot run git http-backend: {e}")))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Reject::Internal("git http-backend has no pipes".into()));
    };
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::warn!("git http-backend: {line}");
        }
    });
    let timeout = server.options.io_timeout;
    let mut request_body = req.into_body();
    tokio::spawn(async move {
        // A body that stops coming ends the pump; git then sees the end of its input.
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(timeout, request_body.frame()).await {
            if let Ok(data) = frame.into_data() {
                if stdin.write_all(&data).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut out = tokio::io::BufReader::new(stdout);
    let mut resp = Response::new(full(Bytes::new()));
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(timeout, out.read_line(&mut line))
            .await
            .map_err(|_| Reject::Timeout("git http-backend did not answer in time".into()))?
            .map_err(|e| Reject::Internal(format!("reading git http-backend: {e}")))?;
        let line = line.trim_end();
        if n == 0 || line.is_empty() {
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
    let (tx, stream) = body::channel();
    tokio::spawn(async move {
        let _child = child;
        let _permit = permit;
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
                    let _ = tx.send(Err::<Frame<Bytes>, io::Error>(e)).await;
                    return;
                }
            }
        }
    });
    *resp.body_mut() = stream;
    Ok(resp)
}

//! Response bodies and request bodies: whole ones, ones made a chunk at a time on the blocking
//! pool as the client takes them, ones fed through a bounded channel, and request bodies read
//! as a blocking reader.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::sync::{mpsc, Semaphore};

/// The body of every response.
pub type Body = BoxBody<Bytes, io::Error>;

/// Size of the chunks a body is streamed in.
pub const CHUNK: usize = 64 * 1024;

/// How many chunks may wait in a channel.
const CHANNEL_CHUNKS: usize = 8;

/// A header value from text Grove made (ASCII); anything else becomes empty.
pub fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

/// A plain-text response of one line.
pub fn text(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{}\n", msg.lines().next().unwrap_or(""))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A complete response with a known body; for HEAD, the same headers and no body.
pub fn ok(method: &Method, content_type: &'static str, data: impl Into<Bytes>) -> Response<Body> {
    let data = data.into();
    let len = data.len();
    let mut r = Response::new(if method == Method::HEAD {
        full(Bytes::new())
    } else {
        full(data)
    });
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, header_value(&len.to_string()));
    r
}

/// A body fed by async code through the sender.
pub fn channel() -> (mpsc::Sender<io::Result<Frame<Bytes>>>, Body) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        tx,
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed(),
    )
}

/// Something that makes a response body a chunk at a time, blocking (Git reads, compression).
pub trait Producer: Send + 'static {
    /// The next chunk, or `None` at the end.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>>;
}

/// A body made by `producer` on the blocking pool, one chunk each time the client is ready
/// for more: a thread is held only while a chunk is made, and a client that stops reading
/// holds one chunk of memory and no thread.
///
/// At most `makers` chunks are made at once across all bodies, so that slow bodies never take
/// the whole blocking pool from other requests.
pub fn produced(producer: impl Producer, makers: Arc<Semaphore>) -> Body {
    // The mutex only makes the state `Sync`, as a boxed body must be; it is never contended.
    let chunks = futures_util::stream::unfold(Some(parking_lot::Mutex::new(producer)), move |state| {
        let makers = makers.clone();
        async move {
            let state = state?;
            let Ok(turn) = makers.acquire_owned().await else {
                return Some((Err(io::Error::other("the server is shutting down")), None));
            };
            let mut producer = state.into_inner();
            let made = tokio::task::spawn_blocking(move || {
                let chunk = producer.next_chunk();
                drop(turn);
                (producer, chunk)
            })
            .await;
            match made {
                Ok((producer, Ok(Some(chunk)))) => {
                    Some((Ok(Frame::data(chunk)), Some(parking_lot::Mutex::new(producer))))
                }
                Ok((_, Ok(None))) => None,
                Ok((_, Err(e))) => Some((Err(e), None)),
                Err(e) => Some((Err(io::Error::other(format!("making a response body: {e}"))), None)),
            }
        }
    });
    StreamBody::new(chunks).boxed()
}

/// A request body as a blocking reader, fed through a bounded channel. A body that pauses for
/// longer than `timeout` fails with [`io::ErrorKind::TimedOut`]; one the client breaks off,
/// with [`io::ErrorKind::ConnectionAborted`].
pub fn reader(mut body: Incoming, timeout: Duration) -> BodyReader {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    tokio::spawn(async move {
        loop {
            let frame = match tokio::time::timeout(timeout, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(_) => {
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the request body stopped for {timeout:?}"),
                    );
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue,
                },
                Err(e) => Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    format!("reading the request body: {e}"),
                )),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    BodyReader { rx, cur: Bytes::new() }
}

/// See [`reader`]; read it on a blocking thread.
pub struct BodyReader {
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

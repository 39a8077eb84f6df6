//! Response bodies and request bodies: whole ones, ones streamed from a blocking writer through
//! a bounded channel, and request bodies read as a blocking reader.

use std::io::{self, Read, Write};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use tokio::sync::mpsc;

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

/// A body fed by a [`ChannelWriter`] or by async code through the sender.
pub fn channel() -> (mpsc::Sender<io::Result<Frame<Bytes>>>, Body) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        tx,
        StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed(),
    )
}

/// Sends what is written (on a blocking thread) as body chunks of [`CHUNK`] bytes; fails once
/// the client is gone.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Frame<Bytes>>>,
    buf: Vec<u8>,
    /// Everything sent, when the caller wants to keep it.
    copy: Option<Vec<u8>>,
}

impl ChannelWriter {
    /// A writer into `tx`; with `keep`, it also keeps a copy of everything sent.
    pub fn new(tx: mpsc::Sender<io::Result<Frame<Bytes>>>, keep: bool) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            copy: keep.then(Vec::new),
        }
    }

    /// Ends the body with an error, so the client sees it cut short.
    pub fn fail(&self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }

    /// The copy of everything sent, if one was kept.
    pub fn take_copy(&mut self) -> Option<Vec<u8>> {
        self.copy.take()
    }
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
pub fn reader(mut body: Incoming) -> BodyReader {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
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

//! Why a request is refused, and the response each reason gets. Both mappings are exhaustive:
//! a new store error or reason forces a decision here. Clients get a one-line reason; a 500
//! says only `internal error`, with the details in the log.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::store::StoreError;

use super::body::{header_value, text, Body};

/// A request that cannot be answered as asked.
#[derive(Debug)]
pub enum Reject {
    /// 404.
    NotFound(String),
    /// 400: the request (or what it uploads) is malformed or inconsistent.
    Bad(String),
    /// 401: a token is needed and none or a wrong one came.
    Unauthorized,
    /// 403.
    Forbidden(String),
    /// 405.
    Method,
    /// 416, with the size of the whole body.
    Range(u64),
    /// 415.
    Unsupported(String),
    /// 413.
    TooLarge(String),
    /// 408: the request's body did not come in time.
    Timeout(String),
    /// 503: too busy to start this now; try again.
    Busy(String),
    /// 507: the disk is full (Nix retries 5xx, not 4xx).
    NoSpace,
    /// 500: details for the log only.
    Internal(String),
}

impl From<StoreError> for Reject {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Nar(_)
            | StoreError::Export(_)
            | StoreError::HashMismatch { .. }
            | StoreError::SizeMismatch { .. }
            | StoreError::BadFile(_)
            | StoreError::MissingReference { .. }
            | StoreError::NameMismatch { .. }
            | StoreError::BadPath(_) => Reject::Bad(e.to_string()),
            StoreError::TooLarge(_) => Reject::TooLarge(e.to_string()),
            StoreError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Reject::Timeout(e.to_string()),
            StoreError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionAborted => Reject::Bad(e.to_string()),
            StoreError::NoSpace(_) => {
                tracing::error!("{e}");
                Reject::NoSpace
            }
            StoreError::Unknown(_) => Reject::NotFound(e.to_string()),
            StoreError::Git(_)
            | StoreError::Io(_)
            | StoreError::NotAStore(_)
            | StoreError::Corrupt(..)
            | StoreError::BadMetadata(..) => Reject::Internal(e.to_string()),
        }
    }
}

impl Reject {
    /// The response: status and a one-line plain-text reason.
    pub fn response(self) -> Response<Body> {
        let (status, msg) = match self {
            Reject::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Reject::Bad(m) => (StatusCode::BAD_REQUEST, m),
            Reject::Unauthorized => (StatusCode::UNAUTHORIZED, "missing or wrong token".into()),
            Reject::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Reject::Method => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into()),
            Reject::Range(size) => {
                let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
                r.headers_mut()
                    .insert(header::CONTENT_RANGE, header_value(&format!("bytes */{size}")));
                return r;
            }
            Reject::Unsupported(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            Reject::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            Reject::Timeout(m) => (StatusCode::REQUEST_TIMEOUT, m),
            Reject::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            Reject::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, "no space left on device".into()),
            Reject::Internal(m) => {
                tracing::error!("internal error: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        };
        let mut r = text(status, &msg);
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"grove\""),
            );
        }
        r
    }
}

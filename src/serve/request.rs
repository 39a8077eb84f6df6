//! Small helpers of request handling.

use hyper::Request;

use super::error::Reject;

/// Runs blocking work (Git, peers) off the async workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, Reject> + Send + 'static) -> Result<T, Reject> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Reject::Internal(format!("worker failed: {e}")))?
}

/// The Groves a read-through request passed through (see [`crate::peers::VIA_HEADER`]).
pub fn via<B>(req: &Request<B>) -> String {
    req.headers()
        .get(crate::peers::VIA_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

//! The `grove-via` header: which Groves a read-through request passed through, so that peers
//! configured in a cycle answer from their own store instead of asking each other forever.

/// The HTTP request header that carries the Groves a read-through request passed through
/// (comma-separated instance ids).
pub const VIA_HEADER: &str = "grove-via";

/// Whether a request that passed through the Groves in `via` came from the Grove `id`.
pub fn is_loop(via: &str, id: &str) -> bool {
    via.split(',').any(|v| v.trim() == id)
}

/// The header value to send on after passing through the Grove `id`.
pub fn extend(via: &str, id: &str) -> String {
    if via.trim().is_empty() {
        id.to_string()
    } else {
        format!("{via},{id}")
    }
}

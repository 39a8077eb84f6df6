//! Tokens: `Authorization: Bearer TOKEN`, or HTTP Basic with the token as password (what Nix
//! sends from a netrc file).

use hyper::header;
use hyper::Request;
use subtle::ConstantTimeEq;

/// Whether the request carries `token` (always true when no token is required).
pub fn authorized<B>(req: &Request<B>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    presented(req).is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes())))
}

/// The token a request presents, if any. Schemes are matched case-insensitively.
fn presented<B>(req: &Request<B>) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = data_encoding::BASE64.decode(rest.as_bytes()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, pass)| pass.to_string());
    }
    None
}

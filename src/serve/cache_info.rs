//! `GET /nix-cache-info`.

use hyper::{Method, Response};

use crate::nix::store_path::STORE_DIR;

use super::body::{ok, Body};
use super::state::Server;

/// The cache's store dir, mass-query support and priority.
pub fn get(server: &Server, method: &Method) -> Response<Body> {
    let body = format!(
        "StoreDir: {STORE_DIR}\nWantMassQuery: 1\nPriority: {}\n",
        server.options.priority
    );
    ok(method, "text/x-nix-cache-info", body)
}

//! `/dashboard`: one page, compiled into the binary (nothing is fetched at run time), that
//! lists, creates, reconfigures and deletes basins and streams through the public API,
//! tails a chosen stream's latest records, and charts what `/metrics` reports; and
//! `/dashboard/server`, what the page shows of the server itself. The page only makes
//! same-origin requests, so it works with `--no-cors`, and it never holds an encryption
//! key, so encrypted records stay unreadable to it.

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use serde::Serialize;

use super::{full, Body};

const PAGE: &str = include_str!("index.html");

/// What the dashboard shows of the server: version, storage and the settings that bound it.
#[derive(Debug, Serialize)]
pub struct ServerInfo {
    pub version: &'static str,
    pub storage: String,
    pub shards: usize,
    pub tls: bool,
    pub cors: bool,
    pub append_inflight_bytes: u64,
    pub deletion_delay_ms: u64,
    pub drain_grace_ms: u64,
}

pub fn page() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from_static(PAGE.as_bytes())));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub fn server(info: &ServerInfo) -> Response<Body> {
    let body = serde_json::to_vec(info).expect("server info serializes");
    let mut resp = Response::new(full(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

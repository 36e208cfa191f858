//! `/health`, `/ping`, `/metrics`, and the account endpoints that are parsed and then
//! answered 501 (usage metrics, locations), as the reference does.

use std::rc::Rc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::Shard;

use super::access::Access;
use super::{full, ApiError, ApiResult, Body};
use sluice_shards::tokens::Operation;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub async fn health(shard: &Rc<Shard>) -> Response<Body> {
    match shard.health().await {
        Ok(()) => text(StatusCode::OK, "text/plain", "OK".to_owned()),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{e:?}"),
        ),
    }
}

/// The Prometheus text exposition of the whole server.
pub async fn prometheus(shard: &Rc<Shard>) -> ApiResult<Response<Body>> {
    let body = shard.scrape_metrics().await?;
    Ok(text(
        StatusCode::OK,
        sluice_shards::metrics::CONTENT_TYPE,
        body,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Interval {
    Minute,
    Hour,
    Day,
}

#[derive(Deserialize)]
#[allow(dead_code)] // parsed for validation only until usage metrics exist
struct MetricsQuery<S> {
    set: S,
    #[serde(default)]
    start: Option<u32>,
    #[serde(default)]
    end: Option<u32>,
    #[serde(default)]
    interval: Option<Interval>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum AccountSet {
    ActiveBasins,
    AccountOps,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum BasinSet {
    Storage,
    AppendOps,
    ReadOps,
    ReadThroughput,
    AppendThroughput,
    BasinOps,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StreamSet {
    Storage,
}

pub fn account_metrics(access: &Access, req: &Request<Incoming>) -> ApiResult<Response<Body>> {
    let _: MetricsQuery<AccountSet> = super::query(req.uri().query())?;
    access.allow(Operation::AccountMetrics)?;
    Err(ApiError::NotImplemented)
}

fn metrics_basin(raw: &str) -> ApiResult<BasinName> {
    super::path_segment(raw)?
        .parse()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))
}

pub fn basin_metrics(
    access: &Access,
    basin: &str,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = metrics_basin(basin)?;
    let _: MetricsQuery<BasinSet> = super::query(req.uri().query())?;
    access.basin(Operation::BasinMetrics, &basin)?;
    Err(ApiError::NotImplemented)
}

pub fn stream_metrics(
    access: &Access,
    basin: &str,
    stream: &str,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = metrics_basin(basin)?;
    let stream = super::path_segment(stream)?
        .parse::<StreamName>()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))?;
    let _: MetricsQuery<StreamSet> = super::query(req.uri().query())?;
    access.stream(Operation::StreamMetrics, &basin, stream)?;
    Err(ApiError::NotImplemented)
}

pub async fn set_default_location(req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let (_, body) = super::json_body(req).await?;
    let _: String = super::wire::parse(&body)?;
    Err(ApiError::NotImplemented)
}

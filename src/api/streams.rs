//! Handlers for `/v1/streams` (API §4). Every route needs `S2-Basin`, read first.

use std::rc::Rc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use sluice_shards::config::StreamConfigSpec;
use sluice_shards::names::{BasinName, StreamFilter, StreamName};
use sluice_shards::Shard;

use super::wire::{self, CreateStreamRequest, StreamConfigJson, StreamReconfigurationJson};
use super::{headers, ApiError, ApiResult, Body};

pub(super) fn target(raw: &str, req: &Request<Incoming>) -> ApiResult<(BasinName, StreamName)> {
    let basin = headers::basin(req.headers())?;
    let stream = super::path_segment(raw)?
        .parse()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))?;
    Ok((basin, stream))
}

pub async fn list(shard: &Rc<Shard>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let basin = headers::basin(req.headers())?;
    let list = super::list_request(req.uri().query(), StreamFilter::parse)?;
    let page = shard.list_streams(&basin, list).await?;
    let streams: Vec<_> = page.items.iter().map(wire::stream_info_value).collect();
    Ok(super::json(
        req.headers(),
        StatusCode::OK,
        &json!({ "streams": streams, "has_more": page.has_more }),
        None,
    ))
}

pub async fn create(shard: &Rc<Shard>, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let basin = headers::basin(req.headers())?;
    let token = headers::request_token(req.headers())?;
    let (parts, body) = super::json_body(req).await?;
    let request: CreateStreamRequest = wire::parse(&body)?;
    let spec = request.config.unwrap_or_default().validate()?;
    let (info, provision) = shard
        .create_stream(basin, request.stream, spec, token)
        .await?;
    Ok(super::json(
        &parts.headers,
        super::provision_status(provision, true),
        &wire::stream_info_value(&info),
        Some(provision),
    ))
}

pub async fn ensure(
    shard: &Rc<Shard>,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(raw, &req)?;
    let headers = req.headers().clone();
    let spec = match super::optional_json_body(req).await? {
        Some(body) => wire::parse::<StreamConfigJson>(&body)?.validate()?,
        None => StreamConfigSpec::default(),
    };
    let (info, provision) = shard.ensure_stream(basin, stream, spec).await?;
    Ok(super::json(
        &headers,
        super::provision_status(provision, false),
        &wire::stream_info_value(&info),
        Some(provision),
    ))
}

pub async fn get_config(
    shard: &Rc<Shard>,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(raw, &req)?;
    let config = shard.stream_config(&basin, &stream).await?;
    Ok(super::json(
        req.headers(),
        StatusCode::OK,
        &wire::stream_config_value(&config),
        None,
    ))
}

pub async fn reconfigure(
    shard: &Rc<Shard>,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(raw, &req)?;
    let (parts, body) = super::json_body(req).await?;
    let patch = wire::parse::<StreamReconfigurationJson>(&body)?.validate()?;
    let config = shard.reconfigure_stream(basin, stream, patch).await?;
    Ok(super::json(
        &parts.headers,
        StatusCode::OK,
        &wire::stream_config_value(&config),
        None,
    ))
}

pub async fn delete(
    shard: &Rc<Shard>,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(raw, &req)?;
    shard.delete_stream(basin, stream).await?;
    Ok(super::accepted())
}

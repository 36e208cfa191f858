//! Handlers for `/v1/streams` (API §4). Every route needs `S2-Basin`, read first.

use std::rc::Rc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use sluice_shards::config::StreamConfigSpec;
use sluice_shards::names::{BasinName, StreamFilter, StreamName};
use sluice_shards::Shard;

use super::access::Access;
use super::wire::{self, CreateStreamRequest, StreamConfigJson, StreamReconfigurationJson};
use super::{headers, ApiError, ApiResult, Body};
use sluice_shards::catalogue::{Page, StreamInfo};
use sluice_shards::tokens::{Operation, ResourceSet};

/// The basin and the stream's full name a stream route names, once `access` allows `op`
/// on them.
pub(super) fn target(
    access: &Access,
    op: Operation,
    raw: &str,
    req: &Request<Incoming>,
) -> ApiResult<(BasinName, StreamName)> {
    let basin = headers::basin(req.headers())?;
    let stream = super::path_segment(raw)?
        .parse()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))?;
    let stream = access.stream(op, &basin, stream)?;
    Ok((basin, stream))
}

/// A stream's info as the token's client sees it: its name without the auto-prefix.
fn info_value(access: &Access, info: &StreamInfo) -> serde_json::Value {
    let mut value = wire::stream_info_value(info);
    value["name"] = access.strip(info.name.as_str()).into();
    value
}

pub async fn list(
    shard: &Rc<Shard>,
    access: &Access,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = headers::basin(req.headers())?;
    access.basin(Operation::ListStreams, &basin)?;
    let list = super::visible_list_request(
        req.uri().query(),
        StreamFilter::parse,
        access.streams(),
        |name| access.full_stream_text(name),
    )?;
    let page = match list {
        Some(list) => shard.list_streams(&basin, list).await?.filtered(
            |s| access.may_see_stream(s.name.as_str()),
            matches!(access.streams(), Some(ResourceSet::Exact(_))),
        ),
        None => Page::default(),
    };
    let streams: Vec<_> = page.items.iter().map(|s| info_value(access, s)).collect();
    Ok(super::json(
        req.headers(),
        StatusCode::OK,
        &json!({ "streams": streams, "has_more": page.has_more }),
        None,
    ))
}

pub async fn create(
    shard: &Rc<Shard>,
    access: &Access,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = headers::basin(req.headers())?;
    let token = headers::request_token(req.headers())?;
    let (parts, body) = super::json_body(req).await?;
    let request: CreateStreamRequest = wire::parse(&body)?;
    let spec = request.config.unwrap_or_default().validate()?;
    let stream = access.stream(Operation::CreateStream, &basin, request.stream)?;
    let (info, provision) = shard.create_stream(basin, stream, spec, token).await?;
    Ok(super::json(
        &parts.headers,
        super::provision_status(provision, true),
        &info_value(access, &info),
        Some(provision),
    ))
}

pub async fn ensure(
    shard: &Rc<Shard>,
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(access, Operation::CreateStream, raw, &req)?;
    let headers = req.headers().clone();
    let spec = match super::optional_json_body(req).await? {
        Some(body) => wire::parse::<StreamConfigJson>(&body)?.validate()?,
        None => StreamConfigSpec::default(),
    };
    let (info, provision) = shard.ensure_stream(basin, stream, spec).await?;
    Ok(super::json(
        &headers,
        super::provision_status(provision, false),
        &info_value(access, &info),
        Some(provision),
    ))
}

pub async fn get_config(
    shard: &Rc<Shard>,
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(access, Operation::GetStreamConfig, raw, &req)?;
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
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(access, Operation::ReconfigureStream, raw, &req)?;
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
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = target(access, Operation::DeleteStream, raw, &req)?;
    shard.delete_stream(basin, stream).await?;
    Ok(super::accepted())
}

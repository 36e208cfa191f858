//! Handlers for `/v1/basins` (API §3.1–§3.6).

use std::rc::Rc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use sluice_shards::catalogue::Page;
use sluice_shards::names::{BasinFilter, BasinName};
use sluice_shards::Shard;

use super::access::Access;
use super::wire::{self, BasinReconfigurationJson, CreateBasinRequest, EnsureBasinRequest};
use super::{headers, ApiError, ApiResult, Body};
use sluice_shards::tokens::{Operation, ResourceSet};

fn basin_from_path(raw: &str) -> ApiResult<BasinName> {
    super::path_segment(raw)?
        .parse()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))
}

pub async fn list(
    shard: &Rc<Shard>,
    access: &Access,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    access.allow(Operation::ListBasins)?;
    let list = super::visible_list_request(
        req.uri().query(),
        BasinFilter::parse,
        access.basins(),
        str::to_owned,
    )?;
    let page = match list {
        Some(list) => shard.list_basins(list).await?.filtered(
            |b| access.may_see_basin(b.name.as_str()),
            matches!(access.basins(), Some(ResourceSet::Exact(_))),
        ),
        None => Page::default(),
    };
    let basins: Vec<_> = page.items.iter().map(wire::basin_info_value).collect();
    Ok(super::json(
        req.headers(),
        StatusCode::OK,
        &json!({ "basins": basins, "has_more": page.has_more }),
        None,
    ))
}

pub async fn create(
    shard: &Rc<Shard>,
    access: &Access,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let token = headers::request_token(req.headers())?;
    let (parts, body) = super::json_body(req).await?;
    let request: CreateBasinRequest = wire::parse(&body)?;
    let config = request.config.unwrap_or_default().validate()?;
    access.basin(Operation::CreateBasin, &request.basin)?;
    let (info, provision) = shard.create_basin(request.basin, config, token).await?;
    Ok(super::json(
        &parts.headers,
        super::provision_status(provision, true),
        &wire::basin_info_value(&info),
        Some(provision),
    ))
}

pub async fn ensure(
    shard: &Rc<Shard>,
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = basin_from_path(raw)?;
    access.basin(Operation::CreateBasin, &basin)?;
    let headers = req.headers().clone();
    let request: EnsureBasinRequest = match super::optional_json_body(req).await? {
        Some(body) => wire::parse(&body)?,
        None => EnsureBasinRequest::default(),
    };
    let config = request.config.unwrap_or_default().validate()?;
    let (info, provision) = shard.ensure_basin(basin, config).await?;
    Ok(super::json(
        &headers,
        super::provision_status(provision, false),
        &wire::basin_info_value(&info),
        Some(provision),
    ))
}

pub async fn get_config(
    shard: &Rc<Shard>,
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = basin_from_path(raw)?;
    access.basin(Operation::GetBasinConfig, &basin)?;
    let config = shard.basin_config(&basin).await?;
    Ok(super::json(
        req.headers(),
        StatusCode::OK,
        &wire::basin_config_value(&config),
        None,
    ))
}

pub async fn reconfigure(
    shard: &Rc<Shard>,
    access: &Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = basin_from_path(raw)?;
    access.basin(Operation::ReconfigureBasin, &basin)?;
    let (parts, body) = super::json_body(req).await?;
    let patch = wire::parse::<BasinReconfigurationJson>(&body)?.validate()?;
    let config = shard.reconfigure_basin(basin, patch).await?;
    Ok(super::json(
        &parts.headers,
        StatusCode::OK,
        &wire::basin_config_value(&config),
        None,
    ))
}

pub async fn delete(shard: &Rc<Shard>, access: &Access, raw: &str) -> ApiResult<Response<Body>> {
    let basin = basin_from_path(raw)?;
    access.basin(Operation::DeleteBasin, &basin)?;
    shard.delete_basin(basin).await?;
    Ok(super::accepted())
}

//! `/health`, `/ping`, `/metrics`, and the location endpoints, which are parsed and then
//! answered 501, as the reference does.

use std::rc::Rc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use sluice_shards::Shard;

use super::{full, ApiError, ApiResult, Body};

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
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", e.to_string()),
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

pub async fn set_default_location(req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let (_, body) = super::json_body(req).await?;
    let _: String = super::wire::parse(&body)?;
    Err(ApiError::NotImplemented)
}

//! The HTTP API: routing, request extraction in the reference's order (`S2-Basin`, path,
//! query, other headers, body), and responses. Handlers call the engine through the shard
//! the connection landed on; the engine relays stream work to the owning shard.

mod access;
mod basins;
mod body;
pub mod dashboard;
mod error;
mod headers;
pub mod inputs;
mod misc;
mod records;
mod streams;
mod tokens;
mod usage;
mod wire;

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use sluice_shards::catalogue::{list_limit, ListRequest, Provision};
use sluice_shards::names::FilterKind;
use sluice_shards::Shard;

use access::Access;
pub use access::RootToken;
pub use error::{ApiError, ApiResult};
use sluice_shards::tokens::{Operation, ResourceSet};

/// Response body type: any body that lives on one shard.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Settings of the API layer, shared by all shards.
#[derive(Debug, Clone)]
pub struct ApiContext {
    pub cors: bool,
    /// Whether `/dashboard` and `/dashboard/server` are served.
    pub dashboard: bool,
    /// Set when access tokens are enforced.
    pub root_token: Option<RootToken>,
    pub server: Arc<dashboard::ServerInfo>,
}

pub async fn handle(ctx: &ApiContext, shard: &Rc<Shard>, req: Request<Incoming>) -> Response<Body> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    if ctx.cors && req.method() == Method::OPTIONS {
        if let Some(method) = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD) {
            return preflight(origin, method.clone(), req.headers());
        }
    }
    let mut resp = route(ctx, shard, req)
        .await
        .unwrap_or_else(ApiError::into_response);
    if ctx.cors {
        allow_origin(resp.headers_mut(), origin);
    }
    resp
}

/// Permissive CORS: mirror the origin and allow credentials.
fn allow_origin(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// Answer a CORS preflight by allowing whatever method and headers it asks for.
fn preflight(origin: Option<HeaderValue>, method: HeaderValue, req: &HeaderMap) -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    let h = resp.headers_mut();
    allow_origin(h, origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method);
    if let Some(asked) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

async fn route(
    ctx: &ApiContext,
    shard: &Rc<Shard>,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
    let method = req.method().clone();
    let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed {
        method: method.clone(),
        path: path.clone(),
        allow,
    };
    match segments.as_slice() {
        ["health"] | ["ping"] => match method {
            Method::GET | Method::HEAD => Ok(misc::health(shard).await),
            _ => Err(not_allowed("GET")),
        },
        ["dashboard"] if ctx.dashboard => match method {
            Method::GET => Ok(dashboard::page()),
            _ => Err(not_allowed("GET")),
        },
        ["metrics"] => match method {
            Method::GET => misc::prometheus(shard).await,
            _ => Err(not_allowed("GET")),
        },
        _ => authenticated(ctx, shard, req, &segments, not_allowed).await,
    }
}

/// The routes that need an access token when enforcement is on.
async fn authenticated(
    ctx: &ApiContext,
    shard: &Rc<Shard>,
    req: Request<Incoming>,
    segments: &[&str],
    not_allowed: impl Fn(&'static str) -> ApiError,
) -> ApiResult<Response<Body>> {
    let access = &Access::authenticate(ctx.root_token.as_ref(), shard, req.headers()).await?;
    let method = req.method().clone();
    match segments {
        ["dashboard", "server"] if ctx.dashboard => match method {
            Method::GET => Ok(dashboard::server(&ctx.server)),
            _ => Err(not_allowed("GET")),
        },
        ["v1", "basins"] => match method {
            Method::GET => basins::list(shard, access, req).await,
            Method::POST => basins::create(shard, access, req).await,
            _ => Err(not_allowed("GET, POST")),
        },
        ["v1", "basins", name] => {
            let name = *name;
            match method {
                Method::GET => basins::get_config(shard, access, name, req).await,
                Method::PUT => basins::ensure(shard, access, name, req).await,
                Method::PATCH => basins::reconfigure(shard, access, name, req).await,
                Method::DELETE => basins::delete(shard, access, name).await,
                _ => Err(not_allowed("GET, PUT, PATCH, DELETE")),
            }
        }
        ["v1", "streams"] => match method {
            Method::GET => streams::list(shard, access, req).await,
            Method::POST => streams::create(shard, access, req).await,
            _ => Err(not_allowed("GET, POST")),
        },
        ["v1", "streams", name] => {
            let name = *name;
            match method {
                Method::GET => streams::get_config(shard, access, name, req).await,
                Method::PUT => streams::ensure(shard, access, name, req).await,
                Method::PATCH => streams::reconfigure(shard, access, name, req).await,
                Method::DELETE => streams::delete(shard, access, name, req).await,
                _ => Err(not_allowed("GET, PUT, PATCH, DELETE")),
            }
        }
        ["v1", "streams", name, "records"] => {
            let name = *name;
            match method {
                Method::GET => records::read(shard, access, name, req).await,
                Method::POST => records::append(shard, access, name, req).await,
                _ => Err(not_allowed("GET, POST")),
            }
        }
        ["v1", "streams", name, "records", "tail"] => {
            let name = *name;
            match method {
                Method::GET => records::check_tail(shard, access, name, req).await,
                _ => Err(not_allowed("GET")),
            }
        }
        ["v1", "access-tokens"] => match method {
            Method::GET => tokens::list(shard, access, &req).await,
            Method::POST => tokens::issue(shard, access, req).await,
            _ => Err(not_allowed("GET, POST")),
        },
        ["v1", "access-tokens", id] => match method {
            Method::DELETE => tokens::revoke(shard, access, id).await,
            _ => Err(not_allowed("DELETE")),
        },
        ["v1", "metrics"] => match method {
            Method::GET => usage::account(shard, access, &req).await,
            _ => Err(not_allowed("GET")),
        },
        ["v1", "metrics", basin] => match method {
            Method::GET => usage::basin(shard, access, basin, &req).await,
            _ => Err(not_allowed("GET")),
        },
        ["v1", "metrics", basin, stream] => match method {
            Method::GET => usage::stream(shard, access, basin, stream, &req).await,
            _ => Err(not_allowed("GET")),
        },
        ["v1", "locations"] => match method {
            Method::GET => {
                access.allow(Operation::ListLocations)?;
                Err(ApiError::NotImplemented)
            }
            _ => Err(not_allowed("GET")),
        },
        ["v1", "locations", "default"] => match method {
            Method::GET => {
                access.allow(Operation::GetDefaultLocation)?;
                Err(ApiError::NotImplemented)
            }
            Method::PUT => {
                access.allow(Operation::SetDefaultLocation)?;
                misc::set_default_location(req).await
            }
            _ => Err(not_allowed("GET, PUT")),
        },
        _ => Err(ApiError::NoRoute {
            method,
            path: req.uri().path().to_owned(),
        }),
    }
}

/// Percent-decode one raw path segment. `%2F` stays inside the segment.
fn path_segment(raw: &str) -> ApiResult<String> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::BadPath("path segment is not valid UTF-8".to_owned()))
}

/// The list query of API §2.3, with names checked by `parse_filter`.
#[derive(Debug, serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    start_after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub fn query<T: serde::de::DeserializeOwned>(req_query: Option<&str>) -> ApiResult<T> {
    let pairs = form_urlencoded::parse(req_query.unwrap_or("").as_bytes());
    serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
        .map_err(|e| ApiError::BadQuery(format!("Failed to deserialize query string: {e}")))
}

/// The list query of a token that sees only `visible`: the client's prefix and start
/// point (checked as given, then mapped by `full`, which adds an auto-prefix), narrowed to
/// the names the set can hold. `None` when it holds none of them. An exact set still
/// needs its items filtered.
fn visible_list_request<F>(
    raw: Option<&str>,
    parse_filter: impl Fn(&str, FilterKind) -> Result<F, sluice_shards::names::NameError>,
    visible: Option<&ResourceSet>,
    full: impl Fn(&str) -> String,
) -> ApiResult<Option<ListRequest<F>>> {
    let q: ListQuery = query(raw)?;
    let (prefix, start_after) = (
        q.prefix.unwrap_or_default(),
        q.start_after.unwrap_or_default(),
    );
    for (value, kind, field) in [
        (&prefix, FilterKind::Prefix, "prefix"),
        (&start_after, FilterKind::StartAfter, "start_after"),
    ] {
        parse_filter(value, kind).map_err(|e| {
            ApiError::BadQuery(format!("Failed to deserialize query string: {field}: {e}"))
        })?;
    }
    let prefix = full(&prefix);
    let start_after = if start_after.is_empty() {
        start_after
    } else {
        full(&start_after)
    };
    let narrowed = match visible {
        None => return Ok(None),
        Some(ResourceSet::Exact(name)) if name.starts_with(&prefix) => name.clone(),
        Some(ResourceSet::Prefix(p)) if prefix.starts_with(p.as_str()) => prefix,
        Some(ResourceSet::Prefix(p)) if p.starts_with(&prefix) => p.clone(),
        Some(_) => return Ok(None),
    };
    let (Ok(prefix), Ok(start_after)) = (
        parse_filter(&narrowed, FilterKind::Prefix),
        parse_filter(&start_after, FilterKind::StartAfter),
    ) else {
        return Ok(None);
    };
    Ok(Some(ListRequest {
        prefix,
        start_after,
        limit: list_limit(q.limit),
    }))
}

/// A JSON response, compressed per the request's `Accept-Encoding` when large.
fn json(
    request_headers: &HeaderMap,
    status: StatusCode,
    value: &serde_json::Value,
    provision: Option<Provision>,
) -> Response<Body> {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(p) = provision {
        let v = match p {
            Provision::Created => "created",
            Provision::Updated => "updated",
            Provision::Noop => "noop",
        };
        resp.headers_mut()
            .insert("s2-provision-result", HeaderValue::from_static(v));
    }
    body::respond(request_headers, resp, Bytes::from(value.to_string()))
}

/// 201 for a creation (or its idempotent replay), 200 for an update or no-op of an ensure.
fn provision_status(p: Provision, replay_is_created: bool) -> StatusCode {
    match p {
        Provision::Created => StatusCode::CREATED,
        Provision::Noop if replay_is_created => StatusCode::CREATED,
        Provision::Updated | Provision::Noop => StatusCode::OK,
    }
}

fn accepted() -> Response<Body> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// The body of a request that may carry optional JSON: absent without a content type, or
/// when empty; otherwise it must be declared JSON.
async fn optional_json_body(req: Request<Incoming>) -> ApiResult<Option<Bytes>> {
    let (parts, incoming) = req.into_parts();
    match headers::content_is_json(&parts.headers) {
        None => Ok(None),
        Some(false) => Err(ApiError::json_content_type_required()),
        Some(true) => {
            let bytes = body::read(&parts.headers, incoming, body::CONTROL_BODY_MAX_BYTES).await?;
            Ok((!bytes.is_empty()).then_some(bytes))
        }
    }
}

/// The body of a request that must carry JSON.
async fn json_body(req: Request<Incoming>) -> ApiResult<(http::request::Parts, Bytes)> {
    let (parts, incoming) = req.into_parts();
    if headers::content_is_json(&parts.headers) != Some(true) {
        return Err(ApiError::json_content_type_required());
    }
    let bytes = body::read(&parts.headers, incoming, body::CONTROL_BODY_MAX_BYTES).await?;
    Ok((parts, bytes))
}

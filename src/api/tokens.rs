//! Handlers for `/v1/access-tokens` (API §3.7): issue, list, revoke.

use std::rc::Rc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use sluice_shards::catalogue::Page;
use sluice_shards::clock::UnixNanos;
use sluice_shards::names::{
    BasinFilter, BasinName, FilterKind, NameError, StreamFilter, StreamName,
};
use sluice_shards::tokens::{Operation, ResourceSet, Scope, TokenId, TokenInfo};
use sluice_shards::Shard;

use super::access::Access;
use super::{wire, ApiError, ApiResult, Body};

#[derive(Deserialize)]
struct IssueRequest {
    id: String,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    auto_prefix_streams: Option<bool>,
    scope: Scope,
}

pub async fn issue(
    shard: &Rc<Shard>,
    access: &Access,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (parts, body) = super::json_body(req).await?;
    let request: IssueRequest = wire::parse(&body)?;
    let id: TokenId = request.id.parse().map_err(ApiError::Invalid)?;
    check_names(&request.scope)?;
    let expires_at = match request.expires_at.as_deref() {
        None => None,
        Some(text) => Some(parse_time(text)?),
    };
    access.token_id(Operation::IssueAccessToken, &id)?;
    let issuer = access.token();
    if !issuer.scope.covers(&request.scope) {
        return Err(ApiError::PermissionDenied(
            "An access token cannot issue one with permissions it does not have".to_owned(),
        ));
    }
    // A token lives no longer than the one that issued it; without a time, it inherits.
    let expires_at = match (expires_at, issuer.expires_at) {
        (None, limit) => limit,
        (Some(at), Some(limit)) if at > limit => {
            return Err(ApiError::PermissionDenied(
                "An access token cannot issue one that outlives it".to_owned(),
            ))
        }
        (Some(at), _) => Some(at),
    };
    let info = TokenInfo {
        id,
        expires_at,
        auto_prefix_streams: request.auto_prefix_streams.unwrap_or(false),
        scope: request.scope,
    };
    let secret = shard.issue_token(info).await?;
    Ok(super::json(
        &parts.headers,
        StatusCode::CREATED,
        &json!({ "access_token": secret }),
        None,
    ))
}

pub async fn list(
    shard: &Rc<Shard>,
    access: &Access,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    access.allow(Operation::ListAccessTokens)?;
    let list = super::visible_list_request(
        req.uri().query(),
        id_filter,
        access.access_tokens(),
        str::to_owned,
    )?;
    let page = match list {
        Some(list) => shard.list_tokens(list).await?.filtered(
            |t| access.may_see_token(t.id.as_str()),
            matches!(access.access_tokens(), Some(ResourceSet::Exact(_))),
        ),
        None => Page::default(),
    };
    let tokens: Vec<_> = page.items.iter().map(info_value).collect();
    Ok(super::json(
        req.headers(),
        StatusCode::OK,
        &json!({ "access_tokens": tokens, "has_more": page.has_more }),
        None,
    ))
}

pub async fn revoke(shard: &Rc<Shard>, access: &Access, raw: &str) -> ApiResult<Response<Body>> {
    let id: TokenId = super::path_segment(raw)?
        .parse()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))?;
    access.token_id(Operation::RevokeAccessToken, &id)?;
    shard.revoke_token(id).await?;
    let mut resp = Response::new(super::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    Ok(resp)
}

fn info_value(info: &TokenInfo) -> serde_json::Value {
    json!({
        "id": info.id.as_str(),
        "expires_at": info.expires_at.map(wire::rfc3339),
        "auto_prefix_streams": info.auto_prefix_streams,
        "scope": info.scope,
    })
}

/// A token id prefix or start point: at most 96 bytes, no NUL.
fn id_filter(s: &str, kind: FilterKind) -> Result<String, NameError> {
    let what = kind.label();
    if s.len() > 96 {
        return Err(NameError(format!(
            "access token id {what} must not exceed 96 bytes in length"
        )));
    }
    if s.contains('\0') {
        return Err(NameError(format!(
            "access token id {what} must not contain NUL bytes"
        )));
    }
    Ok(s.to_owned())
}

/// The names in a scope's resource sets must be names (or prefixes of names) the sets
/// could match.
fn check_names(scope: &Scope) -> ApiResult<()> {
    let invalid = |what: &str, e: String| ApiError::Invalid(format!("scope {what}: {e}"));
    match &scope.basins {
        Some(ResourceSet::Exact(name)) => {
            name.parse::<BasinName>()
                .map_err(|e| invalid("basins", e.to_string()))?;
        }
        Some(ResourceSet::Prefix(p)) => {
            BasinFilter::parse(p, FilterKind::Prefix).map_err(|e| invalid("basins", e.0))?;
        }
        None => {}
    }
    match &scope.streams {
        Some(ResourceSet::Exact(name)) => {
            name.parse::<StreamName>()
                .map_err(|e| invalid("streams", e.to_string()))?;
        }
        Some(ResourceSet::Prefix(p)) => {
            StreamFilter::parse(p, FilterKind::Prefix).map_err(|e| invalid("streams", e.0))?;
        }
        None => {}
    }
    match &scope.access_tokens {
        Some(ResourceSet::Exact(id)) => {
            id.parse::<TokenId>()
                .map_err(|e| invalid("access_tokens", e))?;
        }
        Some(ResourceSet::Prefix(p)) => {
            id_filter(p, FilterKind::Prefix).map_err(|e| invalid("access_tokens", e.0))?;
        }
        None => {}
    }
    Ok(())
}

fn parse_time(text: &str) -> ApiResult<UnixNanos> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::BadJson(format!("expires_at: {e}")))?;
    // Before the epoch is as expired as anything; validation says so.
    Ok(UnixNanos(
        u64::try_from(at.unix_timestamp_nanos()).unwrap_or(0),
    ))
}

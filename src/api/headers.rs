//! Reading request headers: media types, `S2-Basin`, `S2-Request-Token`.

use http::{header, HeaderMap};
use sluice_shards::catalogue::RequestToken;
use sluice_shards::names::BasinName;

use super::error::{ApiError, ApiResult};

/// A header's value as text; absent is `None`, non-UTF-8 is an error.
pub fn text<'a>(headers: &'a HeaderMap, name: &str) -> ApiResult<Option<&'a str>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::invalid_header(name, "not UTF-8")),
    }
}

/// The first media type of a `Content-Type`/`Accept` value, lowercased, without parameters.
fn first_media_type(value: &str) -> String {
    value
        .split(',')
        .next()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// `application/json` or any `application/*+json`.
fn is_json(media: &str) -> bool {
    match media.split_once('/') {
        Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

fn first_of(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(first_media_type)
}

/// `Content-Type: s2s/proto` (either part in any case): an S2S session.
pub fn is_s2s(headers: &HeaderMap) -> bool {
    first_of(headers, header::CONTENT_TYPE).is_some_and(|m| m == "s2s/proto")
}

fn is_protobuf(media: &str) -> bool {
    media == "application/protobuf" || media == "application/x-protobuf"
}

/// A protobuf request body.
pub fn content_is_protobuf(headers: &HeaderMap) -> bool {
    first_of(headers, header::CONTENT_TYPE).is_some_and(|m| is_protobuf(&m))
}

/// The first `Accept` media type asks for protobuf.
pub fn accepts_protobuf(headers: &HeaderMap) -> bool {
    first_of(headers, header::ACCEPT).is_some_and(|m| is_protobuf(&m))
}

/// The first `Accept` media type asks for server-sent events.
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    first_of(headers, header::ACCEPT).is_some_and(|m| m == "text/event-stream")
}

/// Whether the request declares a JSON body; `None` when it declares no content type.
pub fn content_is_json(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::CONTENT_TYPE)?;
    Some(value.to_str().is_ok_and(|v| is_json(&first_media_type(v))))
}

/// The basin named by the required `S2-Basin` header.
pub fn basin(headers: &HeaderMap) -> ApiResult<BasinName> {
    const NAME: &str = "s2-basin";
    let value = text(headers, NAME)?.ok_or_else(|| ApiError::missing_header(NAME))?;
    value.parse().map_err(|e| ApiError::invalid_header(NAME, e))
}

pub fn request_token(headers: &HeaderMap) -> ApiResult<Option<RequestToken>> {
    const NAME: &str = "s2-request-token";
    text(headers, NAME)?
        .map(|v| RequestToken::new(v.to_owned()).map_err(|e| ApiError::invalid_header(NAME, e)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert!(is_json(&first_media_type(
            "application/json; charset=utf-8"
        )));
        assert!(is_json(&first_media_type("Application/JSON")));
        assert!(is_json(&first_media_type("application/merge-patch+json")));
        assert!(!is_json(&first_media_type("text/plain, application/json")));
    }
}

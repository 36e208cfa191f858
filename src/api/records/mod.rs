//! Handlers for `/v1/streams/{stream}/records` (API §5): check tail, append (unary JSON or
//! protobuf, S2S session) and read (unary JSON or protobuf, SSE, S2S session).

mod append;
mod read;

use bytes::Bytes;
use futures::channel::mpsc;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use sluice_shards::config::StreamConfigSpec;
use sluice_shards::crypto::KeyMaterial;
use sluice_shards::Shard;

use super::wire::StreamConfigJson;
use super::{headers, ApiError, ApiResult, Body};
use crate::wire::json::Format;

pub use append::append;
pub use read::{read, ReadQuery};

/// Frames a streaming response may have queued before its producer waits.
const STREAM_BUFFER_FRAMES: usize = 8;

pub async fn check_tail(
    shard: &std::rc::Rc<Shard>,
    access: &super::access::Access,
    raw: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let (basin, stream) = super::streams::target(
        access,
        sluice_shards::tokens::Operation::CheckTail,
        raw,
        &req,
    )?;
    // Auto-creation here uses the basin defaults only; S2-Stream-Config is not consulted.
    let auto = sluice_shards::streamer::AutoCreate::OnRead(StreamConfigSpec::default());
    let tail = shard.check_tail(basin, stream, auto).await?;
    Ok(super::json(
        req.headers(),
        StatusCode::OK,
        &crate::wire::json::tail_json(tail),
        None,
    ))
}

pub fn format(headers: &HeaderMap) -> ApiResult<Format> {
    const NAME: &str = "s2-format";
    Format::from_header(headers::text(headers, NAME)?)
        .map_err(|v| ApiError::invalid_header(NAME, v))
}

/// The `S2-Encryption-Key` header, checked for shape; whether it fits the stream's cipher
/// is the engine's call.
pub fn encryption_key(headers: &HeaderMap) -> ApiResult<Option<KeyMaterial>> {
    const NAME: &str = "s2-encryption-key";
    headers::text(headers, NAME)?
        .map(|v| KeyMaterial::new(v).map_err(|e| ApiError::invalid_header(NAME, e)))
        .transpose()
}

/// The config a request would auto-create its stream with (`S2-Stream-Config`), validated
/// whether or not it is used.
pub fn stream_config_header(headers: &HeaderMap) -> ApiResult<StreamConfigSpec> {
    const NAME: &str = "s2-stream-config";
    let Some(value) = headers::text(headers, NAME)? else {
        return Ok(StreamConfigSpec::default());
    };
    let parsed: StreamConfigJson = serde_json::from_str(value)
        .map_err(|e| ApiError::invalid_header(NAME, format!("invalid JSON: {e}")))?;
    parsed
        .validate()
        .map_err(|e| ApiError::invalid_header(NAME, e))
}

/// A streaming response whose body is fed through the returned sender.
fn streaming(content_type: &'static str) -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER_FRAMES);
    let body = StreamBody::new(futures::StreamExt::map(rx, |b| {
        Ok::<_, std::io::Error>(Frame::data(b))
    }));
    let mut resp = Response::new(body.boxed_unsync());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (tx, resp)
}

//! Request bodies in (bounded, decompressed) and response bodies out (compressed when
//! large and the client accepts it), per WIRE §2.

use std::io::Read;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::error::{ApiError, ApiResult};
use super::Body;
use crate::wire::coding::Coding;

/// Largest control-plane request body, before and after decompression.
pub const CONTROL_BODY_MAX_BYTES: usize = 1024 * 1024;

/// Responses at most this large are sent uncompressed.
const COMPRESS_THRESHOLD_BYTES: usize = 1024;

fn request_coding(headers: &HeaderMap) -> ApiResult<Coding> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Coding::Identity);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::UnsupportedEncoding("<not UTF-8>".to_owned()))?;
    Coding::named(value)
        .ok_or_else(|| ApiError::UnsupportedEncoding(value.trim().to_ascii_lowercase()))
}

/// Read a whole request body of at most `limit` bytes, decompressing it per
/// `Content-Encoding` into at most `limit` bytes. A declared length over the limit is
/// refused before anything is read.
pub async fn read(headers: &HeaderMap, body: Incoming, limit: usize) -> ApiResult<Bytes> {
    let coding = request_coding(headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let raw = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::BodyRead(e.to_string())
            }
        })?
        .to_bytes();
    match coding {
        Coding::Identity => Ok(raw),
        Coding::Gzip => inflate(flate2::read::GzDecoder::new(&raw[..]), limit),
        Coding::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| ApiError::BodyRead(e.to_string()))?;
            inflate(decoder, limit)
        }
    }
}

/// Decompress without ever holding more than `limit + 1` bytes: a bomb is cut off early.
fn inflate(decoder: impl Read, limit: usize) -> ApiResult<Bytes> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BodyRead(format!("cannot decompress: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// A complete response with `bytes` as its body, compressed when it is large enough and
/// the request accepts gzip or zstd.
pub fn respond(
    request_headers: &HeaderMap,
    mut resp: Response<()>,
    bytes: Bytes,
) -> Response<Body> {
    let coding = if bytes.len() > COMPRESS_THRESHOLD_BYTES {
        Coding::accepted(request_headers)
    } else {
        Coding::Identity
    };
    let bytes = match coding {
        Coding::Identity => bytes,
        Coding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut enc, &bytes).expect("writing to memory");
            Bytes::from(enc.finish().expect("writing to memory"))
        }
        Coding::Zstd => Bytes::from(zstd::encode_all(&bytes[..], 1).expect("writing to memory")),
    };
    if coding != Coding::Identity {
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.name()),
        );
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    resp.map(|()| super::full(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bombs_are_cut_off() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let packed = zstd::encode_all(&zeros[..], 3).unwrap();
        let err =
            inflate(zstd::stream::read::Decoder::new(&packed[..]).unwrap(), 1024).unwrap_err();
        assert!(matches!(err, ApiError::PayloadTooLarge { .. }));
    }
}

//! Every error the API answers with, and the one place that maps each to an HTTP status
//! and an S2 error code.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use sluice_shards::error::ConditionFailed;
use sluice_shards::EngineError;

use super::Body;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadHeader(String),
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    BadQuery(String),
    #[error("{0}")]
    BadProto(String),
    #[error("Failed to decode S2S frame: {0}")]
    BadFrame(String),
    #[error("{0}")]
    Invalid(String),
    #[error("Not implemented")]
    NotImplemented,
    /// No usable access token (401).
    #[error("{0}")]
    Authn(String),
    /// The token does not permit the operation or resource (403).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("no route for {method} {path}")]
    NoRoute { method: http::Method, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        method: http::Method,
        path: String,
        allow: &'static str,
    },
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("unsupported content encoding `{0}`")]
    UnsupportedEncoding(String),
    #[error("failed to read the request body: {0}")]
    BodyRead(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl ApiError {
    pub fn json_content_type_required() -> ApiError {
        ApiError::BadJson("Expected request with `Content-Type: application/json`".to_owned())
    }

    pub fn missing_header(name: &str) -> ApiError {
        ApiError::BadHeader(format!("Missing header `{name}`"))
    }

    pub fn invalid_header(name: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::BadHeader(format!("Invalid header `{name}`: {reason}"))
    }

    /// HTTP status and S2 error code.
    fn status_code(&self) -> (StatusCode, &'static str) {
        use EngineError as E;
        match self {
            ApiError::BadHeader(_) => (StatusCode::BAD_REQUEST, "bad_header"),
            ApiError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            ApiError::BadPath(_) => (StatusCode::BAD_REQUEST, "bad_path"),
            ApiError::BadQuery(_) => (StatusCode::BAD_REQUEST, "bad_query"),
            ApiError::BadProto(_) => (StatusCode::BAD_REQUEST, "bad_proto"),
            ApiError::BadFrame(_) => (StatusCode::BAD_REQUEST, "bad_frame"),
            ApiError::BodyRead(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::NotImplemented => (StatusCode::NOT_IMPLEMENTED, "not_implemented"),
            ApiError::Authn(_) => (StatusCode::UNAUTHORIZED, "authn"),
            ApiError::PermissionDenied(_) => (StatusCode::FORBIDDEN, "permission_denied"),
            ApiError::NoRoute { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Engine(e) => match e {
                E::BasinNotFound(_) => (StatusCode::NOT_FOUND, "basin_not_found"),
                E::StreamNotFound { .. } => (StatusCode::NOT_FOUND, "stream_not_found"),
                E::TokenNotFound(_) => (StatusCode::NOT_FOUND, "access_token_not_found"),
                E::BasinAlreadyExists(_)
                | E::StreamAlreadyExists { .. }
                | E::TokenAlreadyExists(_) => (StatusCode::CONFLICT, "resource_already_exists"),
                E::BasinDeletionPending(_) => (StatusCode::CONFLICT, "basin_deletion_pending"),
                E::StreamDeletionPending { .. } => {
                    (StatusCode::CONFLICT, "stream_deletion_pending")
                }
                E::ConditionFailed(_) => {
                    (StatusCode::PRECONDITION_FAILED, "append_condition_failed")
                }
                E::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
                E::EncryptionKey(_) => (StatusCode::BAD_REQUEST, "bad_header"),
                E::DecryptionFailed => (StatusCode::BAD_REQUEST, "decryption_failed"),
                E::Unwritten(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "read_unwritten"),
                E::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                E::Storage(e) if e.is_unavailable() => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
                }
                E::Draining => (StatusCode::SERVICE_UNAVAILABLE, "server_draining"),
                E::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
            },
        }
    }

    /// The HTTP status and JSON body of this error: `{code, message}`, except 412 and 416,
    /// whose bodies say what the condition or the tail was (API §1.1). Also what S2S
    /// terminal frames and SSE error events carry.
    pub fn status_and_body(&self) -> (StatusCode, String) {
        let (status, code) = self.status_code();
        let body = match self {
            ApiError::Engine(EngineError::ConditionFailed(c)) => match c {
                ConditionFailed::FencingTokenMismatch(t) => {
                    serde_json::json!({ "fencing_token_mismatch": t.as_str() })
                }
                ConditionFailed::SeqNumMismatch(n) => serde_json::json!({ "seq_num_mismatch": n }),
            },
            ApiError::Engine(EngineError::Unwritten(tail)) => serde_json::json!({
                "tail": { "seq_num": tail.seq_num, "timestamp": tail.timestamp }
            }),
            _ => serde_json::json!({ "code": code, "message": self.to_string() }),
        };
        (status, body.to_string())
    }

    pub fn into_response(self) -> Response<Body> {
        let (status, body) = self.status_and_body();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let mut resp = Response::new(super::full(Bytes::from(body)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

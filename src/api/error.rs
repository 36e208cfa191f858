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

    /// What a client is told of a server-side failure: a stable message of our own,
    /// never the storage layer's (which can hold keys, paths and object-store replies).
    /// `None` where the message already is one.
    fn public_message(&self) -> Option<&'static str> {
        match self {
            ApiError::Engine(EngineError::Storage(e)) if e.is_unavailable() => {
                Some("The object store is not answering; try again")
            }
            ApiError::Engine(EngineError::Storage(_)) => {
                Some("The server could not read or write its storage")
            }
            ApiError::Engine(EngineError::Unavailable(message)) => Some(message),
            _ => None,
        }
    }

    /// The HTTP status and JSON body of this error: `{code, message}`, except 412 and 416,
    /// whose bodies say what the condition or the tail was (API §1.1). Also what S2S
    /// terminal frames and SSE error events carry. A server-side failure is logged here,
    /// in full, under an error id that its body's message also gives.
    pub fn status_and_body(&self) -> (StatusCode, String) {
        let (status, code) = self.status_code();
        if let Some(public) = self.public_message() {
            let id = error_id();
            tracing::warn!(%status, code, error_id = %id, error = %self, "request failed");
            let message = format!("{public} (error id {id})");
            let body = serde_json::json!({ "code": code, "message": message });
            return (status, body.to_string());
        }
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

/// A random id that ties a failure's body to its log line.
fn error_id() -> String {
    let mut id = [0u8; 8];
    // Without the OS random source the id is all zeros: still a log line to find.
    let _ = getrandom::fill(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shards::StorageError;

    fn body(e: ApiError) -> (StatusCode, serde_json::Value) {
        let (status, body) = e.status_and_body();
        (status, serde_json::from_str(&body).unwrap())
    }

    #[test]
    fn storage_failures_tell_clients_a_stable_message_and_an_error_id() {
        let corrupt = StorageError::Corrupt {
            key: b"\x19secret-key-bytes".to_vec(),
            reason: "bad index entry".to_owned(),
        };
        let (status, value) = body(ApiError::from(EngineError::Storage(corrupt)));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(value["code"], "storage");
        let message = value["message"].as_str().unwrap();
        assert!(
            message.starts_with("The server could not read or write its storage (error id "),
            "{message}"
        );
        assert!(!message.contains("secret-key-bytes") && !message.contains("index entry"));

        let timeout = StorageError::TimedOut(std::time::Duration::from_secs(4));
        let (status, value) = body(ApiError::from(EngineError::Storage(timeout)));
        assert_eq!(
            (status, value["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
        );
        let message = value["message"].as_str().unwrap();
        assert!(message.starts_with("The object store is not answering; try again (error id "));
        assert!(!message.contains("4s"), "{message}");

        // Two failures, two ids.
        let id = |v: &serde_json::Value| {
            v["message"]
                .as_str()
                .unwrap()
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        let again = body(ApiError::from(EngineError::Storage(
            StorageError::SidecarGone,
        )))
        .1;
        assert_ne!(id(&value), id(&again));
    }

    #[test]
    fn client_errors_keep_their_message() {
        let (status, value) = body(ApiError::Invalid("bad limit".to_owned()));
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(value["message"], "bad limit");
        let (status, value) = body(ApiError::from(EngineError::Draining));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(value["message"], "the server is shutting down");
    }
}

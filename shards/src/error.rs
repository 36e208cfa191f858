//! The engine's error type. Clonable so one failure can be handed to every waiter; mapped to
//! HTTP status and S2 code once, in the HTTP layer.

use std::sync::Arc;

use crate::names::{BasinName, StreamName};
use crate::records::{FencingToken, Position};
use crate::tokens::TokenId;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("basin `{0}` not found")]
    BasinNotFound(BasinName),
    #[error("basin `{0}` already exists")]
    BasinAlreadyExists(BasinName),
    #[error("basin `{0}` is being deleted")]
    BasinDeletionPending(BasinName),
    #[error("stream `{stream}` in basin `{basin}` not found")]
    StreamNotFound {
        basin: BasinName,
        stream: StreamName,
    },
    #[error("stream `{stream}` in basin `{basin}` already exists")]
    StreamAlreadyExists {
        basin: BasinName,
        stream: StreamName,
    },
    #[error("stream deletion pending")]
    StreamDeletionPending {
        basin: BasinName,
        stream: StreamName,
    },
    #[error("access token `{}` already exists", .0.as_str())]
    TokenAlreadyExists(TokenId),
    #[error("access token `{}` not found", .0.as_str())]
    TokenNotFound(TokenId),
    #[error("append condition failed")]
    ConditionFailed(ConditionFailed),
    /// The encryption key is missing or unusable for the stream's cipher (400 bad_header).
    #[error("{0}")]
    EncryptionKey(String),
    /// A stored record did not open with the key given (400).
    #[error("record decryption failed")]
    DecryptionFailed,
    /// Well-formed but semantically invalid input (422).
    #[error("{0}")]
    Invalid(String),
    /// A read starts past what it may read; carries the durable tail (416).
    #[error("read from an unwritten position")]
    Unwritten(Position),
    #[error("storage error: {0}")]
    Storage(#[from] StorageError),
    /// A shard or the storage sidecar is gone (shutting down, or it failed).
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// The server is shutting down: the client should reconnect elsewhere.
    #[error("the server is shutting down")]
    Draining,
}

/// Why an append's condition failed (412).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionFailed {
    /// The current fencing token, which the append did not match.
    FencingTokenMismatch(FencingToken),
    /// The seq_num the first record would have received.
    SeqNumMismatch(u64),
}

/// A failure of the storage sidecar: SlateDB, the object store, or undecodable data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Db(Arc<slatedb::Error>),
    #[error("object store: {0}")]
    ObjectStore(Arc<object_store::Error>),
    #[error("the storage sidecar has stopped")]
    SidecarGone,
    /// The object store (or SlateDB waiting on it) did not answer within the bound.
    #[error("the object store did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The object store failed its last health probe, for this reason.
    #[error("object store unreachable: {0}")]
    Unreachable(String),
    #[error("corrupt value under key {key:?}: {reason}")]
    Corrupt { key: Vec<u8>, reason: String },
}

impl StorageError {
    /// Whether the store is out of reach for now, as opposed to holding bad data: the
    /// client may retry (503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::SidecarGone
            | StorageError::TimedOut(_)
            | StorageError::Unreachable(_) => true,
            // Errors that say the store answered and refused, or that the data is missing,
            // are not a matter of waiting.
            StorageError::ObjectStore(e) => !matches!(
                **e,
                object_store::Error::NotFound { .. }
                    | object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
                    | object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::InvalidPath { .. }
                    | object_store::Error::UnknownConfigurationKey { .. }
            ),
            StorageError::Db(e) => e.kind() == slatedb::ErrorKind::Unavailable,
            StorageError::Corrupt { .. } => false,
        }
    }
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        StorageError::ObjectStore(Arc::new(e))
    }
}

impl From<slatedb::Error> for StorageError {
    fn from(e: slatedb::Error) -> Self {
        StorageError::Db(Arc::new(e))
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

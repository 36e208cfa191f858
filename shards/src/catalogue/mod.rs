//! The catalogue of basins and streams: their persisted metadata and the control-plane
//! operations on them. Changes to a basin run on the basin's owner shard and changes to a
//! stream on the stream's owner, each under a per-key lock, so no two changes to one name
//! interleave. Every change is acknowledged only once durable.

mod basins;
mod deletion;
mod streams;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::clock::UnixNanos;
use crate::config::{BasinConfig, Cipher, StreamConfig, StreamConfigSpec};
use crate::error::StorageError;
use crate::names::{BasinName, StreamName};

pub use deletion::resume_background_work;

/// Maximum page size of a list; larger or zero requests get this many.
pub const LIST_LIMIT_MAX: usize = 1000;

/// An `S2-Request-Token`: at most 36 bytes, any text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestToken(String);

pub const REQUEST_TOKEN_MAX_BYTES: usize = 36;

impl RequestToken {
    pub fn new(token: String) -> Result<RequestToken, String> {
        if token.len() > REQUEST_TOKEN_MAX_BYTES {
            return Err(format!(
                "request token must not exceed {REQUEST_TOKEN_MAX_BYTES} bytes in length"
            ));
        }
        Ok(RequestToken(token))
    }
}

/// What a create/ensure did, for the `s2-provision-result` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provision {
    Created,
    Updated,
    Noop,
}

/// The token and requested config of the request that created something, so that a retry
/// of that same request is recognised as a no-op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creation<C> {
    pub token: RequestToken,
    pub requested: C,
}

/// Value of a `01 basin` key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BasinMeta {
    pub config: BasinConfig,
    pub created_at: UnixNanos,
    pub deleted_at: Option<UnixNanos>,
    pub creation: Option<Creation<BasinConfig>>,
}

/// Value of a `02 basin 00 stream` key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamMeta {
    /// Stable identity of this incarnation of the name: a stream deleted and created again
    /// gets a new id, so nothing of the old one can leak into the new.
    pub id: StreamId,
    pub config: StreamConfig,
    pub cipher: Option<Cipher>,
    pub created_at: UnixNanos,
    pub deleted_at: Option<UnixNanos>,
    pub creation: Option<Creation<StreamConfigSpec>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(pub u128);

impl StreamId {
    fn random() -> StreamId {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).expect("the OS random source failed");
        StreamId(u128::from_be_bytes(b))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasinInfo {
    pub name: BasinName,
    pub created_at: UnixNanos,
    pub deleted_at: Option<UnixNanos>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: StreamName,
    pub created_at: UnixNanos,
    pub deleted_at: Option<UnixNanos>,
    pub cipher: Option<Cipher>,
}

/// A validated list request. `F` is the name filter type.
#[derive(Debug, Clone, Default)]
pub struct ListRequest<F> {
    pub prefix: F,
    pub start_after: F,
    /// Already clamped to `1..=LIST_LIMIT_MAX`.
    pub limit: usize,
}

/// Clamp a requested page size: 0 and anything above the maximum mean the maximum.
pub fn list_limit(requested: Option<usize>) -> usize {
    match requested {
        Some(n) if (1..=LIST_LIMIT_MAX).contains(&n) => n,
        _ => LIST_LIMIT_MAX,
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl crate::shard::Shard {
    /// One page of a name listing under `namespace`, plus one row if more follow: up to
    /// `limit + 1` key-value pairs in name order.
    pub(crate) async fn scan_listing(
        &self,
        namespace: &[u8],
        prefix: &[u8],
        start_after: &[u8],
        limit: usize,
    ) -> crate::error::Result<Vec<(Bytes, Bytes)>> {
        let Some(range) = crate::storage::keys::NameRange::new(namespace, prefix, start_after)
        else {
            return Ok(Vec::new());
        };
        Ok(self.storage.scan(range.start..range.end, limit + 1).await?)
    }
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page {
            items: Vec::new(),
            has_more: false,
        }
    }
}

impl<T> Page<T> {
    /// Keep the items `keep` accepts. `exhaustive` says the filter may have dropped
    /// items past the page too, so there is nothing more to promise.
    pub fn filtered(self, keep: impl Fn(&T) -> bool, exhaustive: bool) -> Page<T> {
        Page {
            items: self.items.into_iter().filter(|item| keep(item)).collect(),
            has_more: self.has_more && !exhaustive,
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("metadata serialises"))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(value).map_err(|e| StorageError::Corrupt {
        key: key.to_vec(),
        reason: e.to_string(),
    })
}

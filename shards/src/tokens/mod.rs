//! Access tokens: issued and revoked on the shard that owns the token id, verified on any
//! shard. Only a SHA-256 hash of a secret is stored; a secret is shown once, when issued.
//!
//! Each shard caches the tokens it has verified. A revocation deletes the token durably,
//! then has every shard forget it before it is acknowledged; a shard counts the
//! revocations it has seen, and a lookup that started before one is not cached, so a
//! token read just before its deletion cannot be cached just after.

pub mod scope;

use std::cell::{Cell, RefCell};
use std::num::NonZeroUsize;
use std::rc::Rc;

use base64::Engine as _;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use slatedb::WriteBatch;

use crate::catalogue::{ListRequest, Page};
use crate::clock::UnixNanos;
use crate::error::{EngineError, Result, StorageError};
use crate::shard::Shard;
use crate::storage::keys;
pub use scope::{OpGroup, Operation, ResourceSet, Scope};

/// Verified tokens each shard keeps.
pub const VERIFIED_CACHE_MAX: usize = 4096;
/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// The id under which the root token is listed. No other token can have it.
pub const ROOT_ID: &str = "root";

/// An access token id: 1–96 bytes, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 96 {
            return Err("access token id must be between 1 and 96 bytes in length".to_owned());
        }
        if s.contains('\0') {
            return Err("access token id must not contain NUL bytes".to_owned());
        }
        Ok(TokenId(s))
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> String {
        id.0
    }
}

impl std::str::FromStr for TokenId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TokenId::try_from(s.to_owned())
    }
}

/// What a token is: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: TokenId,
    pub expires_at: Option<UnixNanos>,
    pub auto_prefix_streams: bool,
    pub scope: Scope,
}

impl TokenInfo {
    /// The root token: everything, forever.
    pub fn root() -> TokenInfo {
        TokenInfo {
            id: TokenId(ROOT_ID.to_owned()),
            expires_at: None,
            auto_prefix_streams: false,
            scope: Scope::everything(),
        }
    }

    pub fn expired(&self, now: UnixNanos) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The prefix that auto-prefixing adds to stream names, if the token has it.
    pub fn stream_prefix(&self) -> Option<&str> {
        match (&self.scope.streams, self.auto_prefix_streams) {
            (Some(ResourceSet::Prefix(p)), true) => Some(p),
            _ => None,
        }
    }

    /// The checks S2 makes before a token is stored.
    pub fn validate(&self, now: UnixNanos) -> Result<()> {
        if self.auto_prefix_streams && !matches!(self.scope.streams, Some(ResourceSet::Prefix(_))) {
            return Err(EngineError::Invalid(
                "Auto prefixing is only allowed for streams with prefix matching".to_owned(),
            ));
        }
        if self.scope.permits_nothing() {
            return Err(EngineError::Invalid(
                "Access token permissions cannot be empty".to_owned(),
            ));
        }
        if self.expired(now) {
            return Err(EngineError::Invalid(
                "Access token expiration must be in the future".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The SHA-256 of a secret: how a token is found, and all that is stored of the secret.
pub type SecretHash = [u8; 32];

pub fn hash_secret(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// A token as stored under its id.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    info: TokenInfo,
    #[serde(with = "hex_hash")]
    secret_sha256: SecretHash,
    issued_at: UnixNanos,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("a secret hash is 64 hex digits");
        if text.len() != 64 {
            return Err(bad());
        }
        let mut hash = [0u8; 32];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(hash)
    }
}

/// What a shard remembers of the tokens it has verified.
pub(crate) struct VerifiedTokens {
    cache: RefCell<LruCache<SecretHash, Rc<TokenInfo>>>,
    /// Revocations this shard has applied; a lookup caches only if none came meanwhile.
    revocations: Cell<u64>,
}

impl VerifiedTokens {
    pub(crate) fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            cache: RefCell::new(LruCache::new(
                NonZeroUsize::new(capacity).expect("a cache holds at least one token"),
            )),
            revocations: Cell::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.cache.borrow().len()
    }
}

impl Shard {
    /// Store a new token and return its secret.
    pub async fn issue_token(self: &Rc<Self>, info: TokenInfo) -> Result<String> {
        info.validate(self.clock.now())?;
        if info.id.as_str() == ROOT_ID {
            return Err(EngineError::TokenAlreadyExists(info.id));
        }
        let mut random = [0u8; SECRET_BYTES];
        getrandom::fill(&mut random).map_err(|_| EngineError::Unavailable("no randomness"))?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let hash = hash_secret(&secret);
        let owner = self.placement.token_owner(&info.id);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard.token_locks.lock(info.id.clone()).await;
            let key = keys::token(&info.id);
            if shard.storage.get(key.clone()).await?.is_some() {
                return Err(EngineError::TokenAlreadyExists(info.id));
            }
            let stored = StoredToken {
                info,
                secret_sha256: hash,
                issued_at: shard.clock.now(),
            };
            let mut batch = WriteBatch::new();
            batch.put(&key, crate::catalogue::encode(&stored));
            batch.put(keys::token_by_secret(&hash), key.slice(1..));
            shard.storage.write(batch).await?;
            Ok(())
        })
        .await?;
        Ok(secret)
    }

    /// Tokens by id, the root token among them.
    pub async fn list_tokens(&self, req: ListRequest<String>) -> Result<Page<TokenInfo>> {
        let namespace = keys::tokens_namespace();
        let rows = self
            .scan_listing(
                &namespace,
                req.prefix.as_bytes(),
                req.start_after.as_bytes(),
                req.limit,
            )
            .await?;
        let mut items = Vec::with_capacity(rows.len() + 1);
        for (key, value) in rows {
            let stored: StoredToken = crate::catalogue::decode(&key, &value)?;
            items.push(stored.info);
        }
        let root = TokenInfo::root();
        if root.id.as_str().starts_with(req.prefix.as_str())
            && root.id.as_str() > req.start_after.as_str()
        {
            let at = items.partition_point(|t| t.id < root.id);
            items.insert(at, root);
        }
        let has_more = items.len() > req.limit;
        items.truncate(req.limit);
        Ok(Page { items, has_more })
    }

    /// Delete a token; once this returns, no shard accepts it.
    pub async fn revoke_token(self: &Rc<Self>, id: TokenId) -> Result<()> {
        if id.as_str() == ROOT_ID {
            return Err(EngineError::Invalid(
                "The root token cannot be revoked".to_owned(),
            ));
        }
        let owner = self.placement.token_owner(&id);
        let hash = self
            .on_owner(owner, move |shard| async move {
                let _guard = shard.token_locks.lock(id.clone()).await;
                let key = keys::token(&id);
                let Some(value) = shard.storage.get(key.clone()).await? else {
                    return Err(EngineError::TokenNotFound(id));
                };
                let stored: StoredToken = crate::catalogue::decode(&key, &value)?;
                let mut batch = WriteBatch::new();
                batch.delete(&key);
                batch.delete(keys::token_by_secret(&stored.secret_sha256));
                shard.storage.write(batch).await?;
                Ok(stored.secret_sha256)
            })
            .await?;
        for shard_id in 0..self.shard_count() {
            self.on_owner(shard_id, move |shard| async move {
                shard.forget_token(&hash);
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    fn forget_token(&self, hash: &SecretHash) {
        let verified = &self.verified_tokens;
        verified.revocations.set(verified.revocations.get() + 1);
        verified.cache.borrow_mut().pop(hash);
    }

    /// The token a secret belongs to, if it exists and has not expired.
    pub async fn verify_token(&self, secret: &str) -> Result<Option<Rc<TokenInfo>>> {
        let hash = hash_secret(secret);
        let now = self.clock.now();
        let verified = &self.verified_tokens;
        let cached = verified.cache.borrow_mut().get(&hash).cloned();
        if let Some(info) = cached {
            return Ok((!info.expired(now)).then_some(info));
        }
        let seen = verified.revocations.get();
        let Some(id) = self.storage.get(keys::token_by_secret(&hash)).await? else {
            return Ok(None);
        };
        let key = keys::token_from_id_bytes(&id);
        let Some(value) = self.storage.get(key.clone()).await? else {
            return Ok(None);
        };
        let stored: StoredToken = crate::catalogue::decode(&key, &value)?;
        if stored.secret_sha256 != hash {
            return Err(StorageError::Corrupt {
                key: key.to_vec(),
                reason: "the token's secret hash does not match its index".to_owned(),
            }
            .into());
        }
        let info = Rc::new(stored.info);
        if verified.revocations.get() == seen {
            verified.cache.borrow_mut().put(hash, info.clone());
        }
        Ok((!info.expired(now)).then_some(info))
    }
}

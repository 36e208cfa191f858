//! Who is asking and what they may do. With enforcement off every request acts with the
//! root token's scope; with `--root-token`, a request names its token in
//! `Authorization: Bearer`, and each handler checks its operation and the basins, streams
//! and token ids it touches here, before it calls the engine.
//!
//! An operation allowed here is also counted for the usage metrics, except appends and
//! reads, which are counted per batch where they are served.
//!
//! A token with `auto_prefix_streams` sees stream names relative to its scope's prefix:
//! [`Access::stream`] adds the prefix to every name it is given, and [`Access::strip`]
//! takes it off every name shown.

use std::rc::Rc;

use http::{header, HeaderMap};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, Command};
use sluice_shards::tokens::{self, scope::set_matches, Operation, ResourceSet, TokenId, TokenInfo};
use sluice_shards::usage::Counter;
use sluice_shards::Shard;

use super::{ApiError, ApiResult};

/// The root token's secret hash; set when enforcement is on.
#[derive(Debug, Clone)]
pub struct RootToken(tokens::SecretHash);

impl RootToken {
    pub fn new(secret: &str) -> RootToken {
        RootToken(tokens::hash_secret(secret))
    }
}

/// The token a request acts with.
#[derive(Clone)]
pub struct Access {
    token: Rc<TokenInfo>,
    /// Where the request's operations are counted.
    shard: Rc<Shard>,
}

impl Access {
    /// Whoever sent `headers`, or a 401.
    pub async fn authenticate(
        root: Option<&RootToken>,
        shard: &Rc<Shard>,
        headers: &HeaderMap,
    ) -> ApiResult<Access> {
        let Some(root) = root else {
            return Ok(Access::root(shard));
        };
        let secret = bearer(headers)?;
        if tokens::hash_secret(secret) == root.0 {
            return Ok(Access::root(shard));
        }
        match shard.verify_token(secret).await? {
            Some(token) => Ok(Access {
                token,
                shard: shard.clone(),
            }),
            None => Err(ApiError::Authn(
                "Access token is unknown, revoked or expired".to_owned(),
            )),
        }
    }

    fn root(shard: &Rc<Shard>) -> Access {
        thread_local! {
            static ROOT: Rc<TokenInfo> = Rc::new(TokenInfo::root());
        }
        Access {
            token: ROOT.with(Rc::clone),
            shard: shard.clone(),
        }
    }

    pub fn token(&self) -> &TokenInfo {
        &self.token
    }

    /// The operation, on no resource in particular.
    pub fn allow(&self, op: Operation) -> ApiResult<()> {
        self.permit(op)?;
        self.count(None, op);
        Ok(())
    }

    fn permit(&self, op: Operation) -> ApiResult<()> {
        if self.token.scope.permits(op) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "Operation `{}` is not permitted by the access token",
                op.as_str()
            )))
        }
    }

    fn count(&self, basin: Option<&BasinName>, op: Operation) {
        if !matches!(op, Operation::Append | Operation::Read) {
            self.shard.count_usage(basin, Counter::Op(op), 1);
        }
    }

    /// The operation, on a basin.
    pub fn basin(&self, op: Operation, basin: &BasinName) -> ApiResult<()> {
        self.permit_basin(op, basin)?;
        self.count(Some(basin), op);
        Ok(())
    }

    fn permit_basin(&self, op: Operation, basin: &BasinName) -> ApiResult<()> {
        self.permit(op)?;
        if self.may_see_basin(basin.as_str()) {
            Ok(())
        } else {
            Err(denied("basin", basin.as_str()))
        }
    }

    /// The operation, on a stream given by the name the client uses; returns its full name.
    pub fn stream(
        &self,
        op: Operation,
        basin: &BasinName,
        stream: StreamName,
    ) -> ApiResult<StreamName> {
        self.permit_basin(op, basin)?;
        let full = self.full_stream_name(stream)?;
        if set_matches(&self.token.scope.streams, full.as_str()) {
            self.count(Some(basin), op);
            Ok(full)
        } else {
            Err(denied("stream", self.strip(full.as_str())))
        }
    }

    /// The operation, on a token id.
    pub fn token_id(&self, op: Operation, id: &TokenId) -> ApiResult<()> {
        self.permit(op)?;
        if self.may_see_token(id.as_str()) {
            self.count(None, op);
            Ok(())
        } else {
            Err(denied("access token", id.as_str()))
        }
    }

    /// Command records need their own operation: an append cannot smuggle in a trim or a
    /// fence its token lacks.
    pub fn commands(&self, batch: &AppendBatch) -> ApiResult<()> {
        for record in batch.records() {
            match record.command() {
                Some(Command::Trim(_)) => self.permit(Operation::Trim)?,
                Some(Command::Fence(_)) => self.permit(Operation::Fence)?,
                None => {}
            }
        }
        Ok(())
    }

    pub fn may_see_basin(&self, basin: &str) -> bool {
        set_matches(&self.token.scope.basins, basin)
    }

    /// Whether a stream, by its full name, is visible to this token.
    pub fn may_see_stream(&self, full: &str) -> bool {
        set_matches(&self.token.scope.streams, full)
    }

    pub fn may_see_token(&self, id: &str) -> bool {
        set_matches(&self.token.scope.access_tokens, id)
    }

    pub fn basins(&self) -> Option<&ResourceSet> {
        self.token.scope.basins.as_ref()
    }

    pub fn streams(&self) -> Option<&ResourceSet> {
        self.token.scope.streams.as_ref()
    }

    pub fn access_tokens(&self) -> Option<&ResourceSet> {
        self.token.scope.access_tokens.as_ref()
    }

    /// A stream name (or list prefix) as the client gave it, with the auto-prefix added.
    pub fn full_stream_text(&self, name: &str) -> String {
        match self.token.stream_prefix() {
            Some(prefix) => format!("{prefix}{name}"),
            None => name.to_owned(),
        }
    }

    fn full_stream_name(&self, stream: StreamName) -> ApiResult<StreamName> {
        match self.token.stream_prefix() {
            None => Ok(stream),
            Some(_) => self
                .full_stream_text(stream.as_str())
                .parse()
                .map_err(|e| ApiError::Invalid(format!("prefixed stream name: {e}"))),
        }
    }

    /// A full stream name as this token's client sees it.
    pub fn strip<'a>(&self, full: &'a str) -> &'a str {
        match self.token.stream_prefix() {
            Some(prefix) => full.strip_prefix(prefix).unwrap_or(full),
            None => full,
        }
    }
}

fn denied(what: &str, name: &str) -> ApiError {
    ApiError::PermissionDenied(format!("The access token does not permit {what} `{name}`"))
}

/// The secret of `Authorization: Bearer <secret>`.
fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Authn("Missing `Authorization: Bearer` header".to_owned()))?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::Authn("Malformed `Authorization` header".to_owned()))?;
    match text.split_once(' ') {
        Some((scheme, secret)) if scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty() => {
            Ok(secret.trim())
        }
        _ => Err(ApiError::Authn(
            "Expected `Authorization: Bearer <token>`".to_owned(),
        )),
    }
}

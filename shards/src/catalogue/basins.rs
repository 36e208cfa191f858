//! Basin operations. Changes run on the basin's owner shard under the basin's lock; reads
//! run wherever the request landed.

use std::rc::Rc;

use slatedb::WriteBatch;

use super::{
    decode, deletion, encode, BasinInfo, BasinMeta, Creation, ListRequest, Page, Provision,
    RequestToken,
};
use crate::config::{BasinConfig, BasinReconfiguration};
use crate::error::{EngineError, Result};
use crate::names::{BasinFilter, BasinName};
use crate::shard::Shard;
use crate::storage::keys;

impl BasinMeta {
    fn info(&self, name: BasinName) -> BasinInfo {
        BasinInfo {
            name,
            created_at: self.created_at,
            deleted_at: self.deleted_at,
        }
    }
}

impl Shard {
    pub(crate) async fn basin_meta(&self, basin: &BasinName) -> Result<Option<BasinMeta>> {
        let key = keys::basin_meta(basin);
        match self.storage.get(key.clone()).await? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The basin's metadata, if it exists and is not being deleted.
    pub(crate) async fn active_basin(&self, basin: &BasinName) -> Result<BasinMeta> {
        match self.basin_meta(basin).await? {
            None => Err(EngineError::BasinNotFound(basin.clone())),
            Some(m) if m.deleted_at.is_some() => {
                Err(EngineError::BasinDeletionPending(basin.clone()))
            }
            Some(m) => Ok(m),
        }
    }

    async fn put_basin_meta(&self, basin: &BasinName, meta: &BasinMeta) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(keys::basin_meta(basin), encode(meta));
        self.storage.write(batch).await?;
        Ok(())
    }

    pub async fn list_basins(&self, req: ListRequest<BasinFilter>) -> Result<Page<BasinInfo>> {
        let namespace = keys::basins_namespace();
        let rows = self
            .scan_listing(
                &namespace,
                req.prefix.as_str().as_bytes(),
                req.start_after.as_str().as_bytes(),
                req.limit,
            )
            .await?;
        let has_more = rows.len() > req.limit;
        let mut items = Vec::with_capacity(rows.len().min(req.limit));
        for (key, value) in rows.into_iter().take(req.limit) {
            let meta: BasinMeta = decode(&key, &value)?;
            let name = keys::basin_from_key(&key).ok_or_else(|| corrupt_key(&key))?;
            items.push(meta.info(name));
        }
        Ok(Page { items, has_more })
    }

    pub async fn create_basin(
        self: &Rc<Self>,
        basin: BasinName,
        config: BasinConfig,
        token: Option<RequestToken>,
    ) -> Result<(BasinInfo, Provision)> {
        let owner = self.placement.basin_owner(&basin);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard.basin_locks.lock(basin.clone()).await;
            match shard.basin_meta(&basin).await? {
                Some(m) if m.deleted_at.is_some() => Err(EngineError::BasinDeletionPending(basin)),
                Some(m) => {
                    let replay = Creation {
                        token: token
                            .ok_or_else(|| EngineError::BasinAlreadyExists(basin.clone()))?,
                        requested: config,
                    };
                    if m.creation.as_ref() == Some(&replay) {
                        Ok((m.info(basin), Provision::Noop))
                    } else {
                        Err(EngineError::BasinAlreadyExists(basin))
                    }
                }
                None => {
                    let meta = BasinMeta {
                        creation: token.map(|token| Creation {
                            token,
                            requested: config.clone(),
                        }),
                        config,
                        created_at: shard.clock.now(),
                        deleted_at: None,
                    };
                    shard.put_basin_meta(&basin, &meta).await?;
                    Ok((meta.info(basin), Provision::Created))
                }
            }
        })
        .await
    }

    /// Create the basin, or replace its whole configuration with `config`.
    pub async fn ensure_basin(
        self: &Rc<Self>,
        basin: BasinName,
        config: BasinConfig,
    ) -> Result<(BasinInfo, Provision)> {
        let owner = self.placement.basin_owner(&basin);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard.basin_locks.lock(basin.clone()).await;
            match shard.basin_meta(&basin).await? {
                Some(m) if m.deleted_at.is_some() => Err(EngineError::BasinDeletionPending(basin)),
                Some(m) if m.config == config => Ok((m.info(basin), Provision::Noop)),
                Some(mut m) => {
                    m.config = config;
                    shard.put_basin_meta(&basin, &m).await?;
                    Ok((m.info(basin), Provision::Updated))
                }
                None => {
                    let meta = BasinMeta {
                        config,
                        created_at: shard.clock.now(),
                        deleted_at: None,
                        creation: None,
                    };
                    shard.put_basin_meta(&basin, &meta).await?;
                    Ok((meta.info(basin), Provision::Created))
                }
            }
        })
        .await
    }

    /// A basin's configuration; still answered while the basin is being deleted.
    pub async fn basin_config(&self, basin: &BasinName) -> Result<BasinConfig> {
        self.basin_meta(basin)
            .await?
            .map(|m| m.config)
            .ok_or_else(|| EngineError::BasinNotFound(basin.clone()))
    }

    pub async fn reconfigure_basin(
        self: &Rc<Self>,
        basin: BasinName,
        patch: BasinReconfiguration,
    ) -> Result<BasinConfig> {
        let owner = self.placement.basin_owner(&basin);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard.basin_locks.lock(basin.clone()).await;
            let mut meta = shard.active_basin(&basin).await?;
            let before = meta.config.clone();
            meta.config.reconfigure(&patch);
            if meta.config != before {
                shard.put_basin_meta(&basin, &meta).await?;
            }
            Ok(meta.config)
        })
        .await
    }

    /// Mark the basin deleted and queue the removal of its streams and then itself.
    pub async fn delete_basin(self: &Rc<Self>, basin: BasinName) -> Result<()> {
        let owner = self.placement.basin_owner(&basin);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard.basin_locks.lock(basin.clone()).await;
            let mut meta = shard
                .basin_meta(&basin)
                .await?
                .ok_or_else(|| EngineError::BasinNotFound(basin.clone()))?;
            if meta.deleted_at.is_some() {
                return Ok(());
            }
            meta.deleted_at = Some(shard.clock.now());
            let mut batch = WriteBatch::new();
            batch.put(keys::basin_meta(&basin), encode(&meta));
            batch.put(keys::basin_deletion(&basin), b"");
            shard.storage.write(batch).await?;
            deletion::schedule_basin_deletion(&shard, basin);
            Ok(())
        })
        .await
    }
}

pub(super) fn corrupt_key(key: &[u8]) -> EngineError {
    EngineError::Storage(crate::error::StorageError::Corrupt {
        key: key.to_vec(),
        reason: "undecodable name in key".to_owned(),
    })
}

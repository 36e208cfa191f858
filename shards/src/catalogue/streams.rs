//! Stream control-plane operations. Changes run on the stream's owner shard under the
//! stream's lock; reads run wherever the request landed.

use std::rc::Rc;

use bytes::Bytes;

use slatedb::WriteBatch;

use super::basins::corrupt_key;
use super::{
    decode, deletion, encode, BasinMeta, Creation, ListRequest, Page, Provision, RequestToken,
    StreamId, StreamInfo, StreamMeta,
};
use crate::config::{BasinConfig, StreamConfig, StreamConfigSpec, StreamReconfiguration};
use crate::error::{EngineError, Result};
use crate::names::{BasinName, StreamFilter, StreamName};
use crate::shard::Shard;
use crate::storage::keys;
use crate::streamer::AutoCreate;

/// Tries to create a stream while concurrent basin writes keep conflicting with it.
const CREATE_ATTEMPTS: usize = 8;

impl StreamMeta {
    fn info(&self, name: StreamName) -> StreamInfo {
        StreamInfo {
            name,
            created_at: self.created_at,
            deleted_at: self.deleted_at,
            cipher: self.cipher,
        }
    }
}

fn not_found(basin: &BasinName, stream: &StreamName) -> EngineError {
    EngineError::StreamNotFound {
        basin: basin.clone(),
        stream: stream.clone(),
    }
}

fn deletion_pending(basin: &BasinName, stream: &StreamName) -> EngineError {
    EngineError::StreamDeletionPending {
        basin: basin.clone(),
        stream: stream.clone(),
    }
}

impl Shard {
    pub(crate) async fn stream_meta(
        &self,
        basin: &BasinName,
        stream: &StreamName,
    ) -> Result<Option<StreamMeta>> {
        let key = keys::stream_meta(basin, stream);
        match self.storage.get(key.clone()).await? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    async fn put_stream_meta(
        &self,
        basin: &BasinName,
        stream: &StreamName,
        meta: &StreamMeta,
    ) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (key, value) in self.stream_meta_writes(basin, stream, meta) {
            batch.put(key, value);
        }
        self.storage.write(batch).await?;
        Ok(())
    }

    fn stream_meta_writes(
        &self,
        basin: &BasinName,
        stream: &StreamName,
        meta: &StreamMeta,
    ) -> Vec<(Bytes, Bytes)> {
        let mut writes = vec![(keys::stream_meta(basin, stream), encode(meta))];
        // Any config written with delete-on-empty on (re)schedules its check.
        let min_age = meta.config.delete_on_empty_min_age_secs;
        if min_age > 0 && meta.deleted_at.is_none() {
            let at = self
                .clock
                .now_millis()
                .saturating_add(min_age.saturating_mul(1000));
            writes.push((keys::doe_deadline(at, basin, stream), Bytes::new()));
        }
        writes
    }

    /// Write the metadata of a new incarnation of a stream: a fresh id, the basin's cipher.
    async fn put_new_stream(
        &self,
        basin: &BasinName,
        stream: &StreamName,
        config: StreamConfig,
        basin_config: &BasinConfig,
        creation: Option<Creation<StreamConfigSpec>>,
    ) -> Result<StreamMeta> {
        let meta = StreamMeta {
            id: StreamId::random(),
            config,
            cipher: basin_config.stream_cipher,
            created_at: self.clock.now(),
            deleted_at: None,
            creation,
        };
        // The basin is read again in the transaction that writes the stream: if its removal
        // commits first (it runs on the basin's owner, maybe another shard), this fails and
        // the basin's state is the answer; if this commits first, the removal sees the
        // stream and waits for it (decision 0001).
        for _ in 0..CREATE_ATTEMPTS {
            let txn = self.storage.serializable()?;
            let key = keys::basin_meta(basin);
            let basin_meta: BasinMeta = match txn.get(key.clone()).await? {
                Some(value) => decode(&key, &value)?,
                None => return Err(EngineError::BasinNotFound(basin.clone())),
            };
            if basin_meta.deleted_at.is_some() {
                return Err(EngineError::BasinDeletionPending(basin.clone()));
            }
            for (key, value) in self.stream_meta_writes(basin, stream, &meta) {
                txn.put(key, value)?;
            }
            if txn.commit().await? {
                return Ok(meta);
            }
        }
        Err(EngineError::Unavailable(
            "the basin kept changing while the stream was created",
        ))
    }

    pub async fn list_streams(
        &self,
        basin: &BasinName,
        req: ListRequest<StreamFilter>,
    ) -> Result<Page<StreamInfo>> {
        if self.basin_meta(basin).await?.is_none() {
            return Err(EngineError::BasinNotFound(basin.clone()));
        }
        self.scan_streams(basin, &req).await
    }

    pub(crate) async fn scan_streams(
        &self,
        basin: &BasinName,
        req: &ListRequest<StreamFilter>,
    ) -> Result<Page<StreamInfo>> {
        let namespace = keys::streams_namespace(basin);
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
            let meta: StreamMeta = decode(&key, &value)?;
            let (_, name) = keys::basin_stream_from_key(&key).ok_or_else(|| corrupt_key(&key))?;
            items.push(meta.info(name));
        }
        Ok(Page { items, has_more })
    }

    pub async fn create_stream(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
        spec: StreamConfigSpec,
        token: Option<RequestToken>,
    ) -> Result<(StreamInfo, Provision)> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard
                .stream_locks
                .lock((basin.clone(), stream.clone()))
                .await;
            let basin_meta = shard.active_basin(&basin).await?;
            match shard.stream_meta(&basin, &stream).await? {
                Some(m) if m.deleted_at.is_some() => Err(deletion_pending(&basin, &stream)),
                Some(m) => {
                    let already = || EngineError::StreamAlreadyExists {
                        basin: basin.clone(),
                        stream: stream.clone(),
                    };
                    let replay = Creation {
                        token: token.ok_or_else(already)?,
                        requested: spec,
                    };
                    if m.creation.as_ref() == Some(&replay) {
                        Ok((m.info(stream), Provision::Noop))
                    } else {
                        Err(already())
                    }
                }
                None => {
                    let config = spec.resolve(&basin_meta.config.default_stream_config);
                    let creation = token.map(|token| Creation {
                        token,
                        requested: spec,
                    });
                    let meta = shard
                        .put_new_stream(&basin, &stream, config, &basin_meta.config, creation)
                        .await?;
                    Ok((meta.info(stream), Provision::Created))
                }
            }
        })
        .await
    }

    /// Create the stream, or replace its configuration with `spec` resolved against the
    /// basin's current defaults.
    pub async fn ensure_stream(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
        spec: StreamConfigSpec,
    ) -> Result<(StreamInfo, Provision)> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard
                .stream_locks
                .lock((basin.clone(), stream.clone()))
                .await;
            let basin_meta = shard.active_basin(&basin).await?;
            let config = spec.resolve(&basin_meta.config.default_stream_config);
            match shard.stream_meta(&basin, &stream).await? {
                Some(m) if m.deleted_at.is_some() => Err(deletion_pending(&basin, &stream)),
                Some(m) if m.config == config => Ok((m.info(stream), Provision::Noop)),
                Some(mut m) => {
                    m.config = config;
                    shard.put_stream_meta(&basin, &stream, &m).await?;
                    shard.refresh_streamer(&(basin.clone(), stream.clone()), Some(&m));
                    Ok((m.info(stream), Provision::Updated))
                }
                None => {
                    let meta = shard
                        .put_new_stream(&basin, &stream, config, &basin_meta.config, None)
                        .await?;
                    Ok((meta.info(stream), Provision::Created))
                }
            }
        })
        .await
    }

    /// Create a missing stream for a data-plane request, if the basin allows it. Runs on
    /// the owner. A stream created meanwhile by someone else is fine.
    pub(crate) async fn create_for_data(
        self: &Rc<Self>,
        basin: &BasinName,
        stream: &StreamName,
        auto_create: AutoCreate,
    ) -> Result<()> {
        let _guard = self
            .stream_locks
            .lock((basin.clone(), stream.clone()))
            .await;
        let basin_meta = self.active_basin(basin).await?;
        let config = &basin_meta.config;
        let spec = match auto_create {
            AutoCreate::OnAppend(spec) if config.create_stream_on_append => spec,
            AutoCreate::OnRead(spec) if config.create_stream_on_read => spec,
            _ => return Err(not_found(basin, stream)),
        };
        match self.stream_meta(basin, stream).await? {
            Some(m) if m.deleted_at.is_some() => Err(deletion_pending(basin, stream)),
            Some(_) => Ok(()),
            None => {
                let resolved = spec.resolve(&config.default_stream_config);
                self.put_new_stream(basin, stream, resolved, config, None)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// A stream's resolved configuration. The basin is not consulted.
    pub async fn stream_config(
        &self,
        basin: &BasinName,
        stream: &StreamName,
    ) -> Result<StreamConfig> {
        match self.stream_meta(basin, stream).await? {
            None => Err(not_found(basin, stream)),
            Some(m) if m.deleted_at.is_some() => Err(deletion_pending(basin, stream)),
            Some(m) => Ok(m.config),
        }
    }

    pub async fn reconfigure_stream(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
        patch: StreamReconfiguration,
    ) -> Result<StreamConfig> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard
                .stream_locks
                .lock((basin.clone(), stream.clone()))
                .await;
            let basin_meta = shard.active_basin(&basin).await?;
            let mut meta = match shard.stream_meta(&basin, &stream).await? {
                None => return Err(not_found(&basin, &stream)),
                Some(m) if m.deleted_at.is_some() => return Err(deletion_pending(&basin, &stream)),
                Some(m) => m,
            };
            let before = meta.config.clone();
            meta.config
                .reconfigure(&patch, &basin_meta.config.default_stream_config);
            if meta.config != before {
                shard.put_stream_meta(&basin, &stream, &meta).await?;
                shard.refresh_streamer(&(basin.clone(), stream.clone()), Some(&meta));
            }
            Ok(meta.config)
        })
        .await
    }

    /// Mark the stream deleted and queue the removal of its data and metadata.
    pub async fn delete_stream(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
    ) -> Result<()> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let _guard = shard
                .stream_locks
                .lock((basin.clone(), stream.clone()))
                .await;
            let mut meta = shard
                .stream_meta(&basin, &stream)
                .await?
                .ok_or_else(|| not_found(&basin, &stream))?;
            if meta.deleted_at.is_some() {
                return Ok(());
            }
            meta.deleted_at = Some(shard.clock.now());
            let mut batch = WriteBatch::new();
            batch.put(keys::stream_meta(&basin, &stream), encode(&meta));
            batch.put(keys::stream_cleanup(&basin, &stream), b"");
            shard.storage.write(batch).await?;
            shard.refresh_streamer(&(basin.clone(), stream.clone()), Some(&meta));
            deletion::schedule_stream_cleanup(&shard, basin, stream);
            Ok(())
        })
        .await
    }
}

//! Background removal of deleted streams and basins.
//!
//! A delete is recorded durably (the metadata's `deleted_at` plus a queue marker) before it
//! is acknowledged; the removal itself runs later on the owner shard. Every step is
//! idempotent and the markers survive restarts, so a crash at any point only delays it:
//! at boot each shard picks up the markers it owns.

use crate::metrics::Job;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use slatedb::WriteBatch;
use tracing::{info, warn};

use super::{ListRequest, LIST_LIMIT_MAX};
use crate::backoff::Backoff;
use crate::error::{EngineError, Result};
use crate::names::{BasinName, StreamFilter, StreamName};
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};
use crate::storage::Pages;

/// Keys, and bytes of values read, per page of a range deletion.
const DELETE_PAGE_KEYS: usize = 10_000;
const DELETE_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// How often a cleanup waiting for the log's index to become durable looks again.
const LOG_DURABLE_POLL: Duration = Duration::from_millis(100);

pub(crate) fn schedule_stream_cleanup(shard: &Rc<Shard>, basin: BasinName, stream: StreamName) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(shard.options.deletion_delay).await;
        clean_up_stream_until_done(&shard, &basin, &stream).await;
    })
    .detach();
}

/// Remove a deleted stream, retrying with backoff until it is gone.
async fn clean_up_stream_until_done(shard: &Shard, basin: &BasinName, stream: &StreamName) {
    let mut backoff = Backoff::default();
    while !shard.try_stream_cleanup(basin, stream, &mut backoff).await {
        glommio::timer::sleep(Backoff::after(backoff.failures())).await;
    }
}

pub(crate) fn schedule_basin_deletion(shard: &Rc<Shard>, basin: BasinName) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        glommio::timer::sleep(shard.options.deletion_delay).await;
        let mut backoff = Backoff::default();
        loop {
            match shard.finish_basin_deletion(&basin).await {
                Ok(true) => break,
                // Streams remain; they are being cleaned up on their owners.
                Ok(false) => {
                    backoff.succeeded();
                    glommio::timer::sleep(shard.options.deletion_delay).await;
                }
                Err(e) => {
                    shard.metrics().job_failed(Job::BasinDeletion);
                    let wait = backoff.failed();
                    warn!(%basin, error = %e, ?wait, "basin deletion step failed; will retry");
                    glommio::timer::sleep(wait).await;
                }
            }
        }
    })
    .detach();
}

impl Shard {
    /// One try at removing a deleted stream; returns whether it is gone. A failure is
    /// counted and logged, with the wait before the next try.
    async fn try_stream_cleanup(
        &self,
        basin: &BasinName,
        stream: &StreamName,
        backoff: &mut Backoff,
    ) -> bool {
        match self.clean_up_stream(basin, stream).await {
            Ok(()) => true,
            Err(e) => {
                self.metrics().job_failed(Job::StreamDeletion);
                let wait = backoff.failed();
                warn!(%basin, %stream, error = %e, ?wait, "stream cleanup failed; will retry");
                false
            }
        }
    }

    /// Remove a deleted stream's runs, state and metadata, then its queue marker. The
    /// runs go first, in pages, so a crash midway leaves the marker to resume from.
    async fn clean_up_stream(&self, basin: &BasinName, stream: &StreamName) -> Result<()> {
        let key = (basin.clone(), stream.clone());
        let _guard = self.stream_locks.lock(key.clone()).await;
        let mut batch = WriteBatch::new();
        if let Some(meta) = self.stream_meta(basin, stream).await? {
            if meta.deleted_at.is_some() {
                // A run of the stream in a commit the durable watermark has not passed would
                // be replayed into the index after a crash, behind this cleanup.
                self.until_log_durable(self.storage.log_applied()).await;
                let id = meta.id.0;
                self.drop_runs(id, None).await?;
                // Timestamp entries of runs whose index write failed and never landed
                // whole are not reachable through the index.
                self.delete_range(keys::stream_id_range(KeyKind::TimestampIndex, id))
                    .await?;
                batch.delete(keys::stream_state(id));
                batch.delete(keys::stream_meta(basin, stream));
            }
        }
        batch.delete(keys::stream_cleanup(basin, stream));
        batch.delete(keys::trim_cleanup(basin, stream));
        self.storage.write(batch).await?;
        self.refresh_streamer(&key, None);
        self.metrics().job_done(Job::StreamDeletion);
        info!(%basin, %stream, "stream removed");
        Ok(())
    }

    /// Wait until the log's index is durable through `position`: within
    /// `storage::INDEX_FLUSH_INTERVAL` while the store answers.
    async fn until_log_durable(&self, position: u64) {
        while self.storage.log_durable() < position {
            glommio::timer::sleep(LOG_DURABLE_POLL).await;
        }
    }

    /// Delete every key in `range`, a page at a time. Each page starts after the last key
    /// deleted, so no scan walks over earlier pages' tombstones. Pages are applied without
    /// waiting for durability: the caller's final durable write (which removes its queue
    /// marker) makes them durable too, since the WAL is ordered, and a crash before it
    /// leaves the marker to start over from.
    pub(crate) async fn delete_range(&self, range: std::ops::Range<Bytes>) -> Result<()> {
        let mut pages = Pages::bounded(range, DELETE_PAGE_KEYS, DELETE_PAGE_BYTES);
        while let Some(rows) = pages.next(&self.storage).await? {
            let mut batch = WriteBatch::new();
            for (key, _) in &rows {
                batch.delete(key);
            }
            self.storage.apply(batch).await?;
        }
        Ok(())
    }

    /// One pass of a basin's deletion: delete every stream still in it; once none is left,
    /// remove the basin. Returns whether the basin is gone.
    async fn finish_basin_deletion(self: &Rc<Self>, basin: &BasinName) -> Result<bool> {
        let mut req = ListRequest {
            prefix: StreamFilter::default(),
            start_after: StreamFilter::default(),
            limit: LIST_LIMIT_MAX,
        };
        let mut any = false;
        loop {
            let page = self.scan_streams(basin, &req).await?;
            for info in &page.items {
                any = true;
                if info.deleted_at.is_none() {
                    match self.delete_stream(basin.clone(), info.name.clone()).await {
                        Ok(()) | Err(EngineError::StreamNotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            match page.items.last() {
                Some(last) if page.has_more => {
                    req.start_after = StreamFilter::parse(
                        last.name.as_str(),
                        crate::names::FilterKind::StartAfter,
                    )
                    .expect("a stream name is a valid filter");
                }
                _ => break,
            }
        }
        if any {
            return Ok(false);
        }
        let _guard = self.basin_locks.lock(basin.clone()).await;
        // Removed only if still empty at commit: a stream created on its own owner since
        // the scan (decision 0001) makes this fail, and a later tick deletes that stream.
        let txn = self.storage.serializable()?;
        let namespace = keys::streams_namespace(basin);
        if !txn
            .is_empty(namespace.clone()..keys::namespace_end(&namespace))
            .await?
        {
            return Ok(false);
        }
        txn.delete(keys::basin_meta(basin))?;
        txn.delete(keys::basin_deletion(basin))?;
        if !txn.commit().await? {
            return Ok(false);
        }
        self.metrics().job_done(Job::BasinDeletion);
        info!(%basin, "basin removed");
        Ok(true)
    }
}

/// Resume the cleanups that were queued before the last stop and are owned by `shard`,
/// in passes over the queue markers, a page at a time: each pass tries every stream
/// cleanup once, one after another rather than as a task each (a boot after many deletions
/// holds nothing per queued stream), and starts each basin's deletion task on the first.
/// A cleanup that fails stays queued for the next pass, after a backoff; the others go on.
pub async fn resume_background_work(shard: Rc<Shard>) {
    // Deletions from just before the stop stay "pending" for the configured delay, as they
    // would have without the restart.
    glommio::timer::sleep(shard.options.deletion_delay).await;
    let mut backoff = Backoff::default();
    let mut basins_started = false;
    loop {
        let mut complete = true;
        for kind in [KeyKind::StreamCleanup, KeyKind::BasinDeletion] {
            if kind == KeyKind::BasinDeletion && basins_started {
                continue;
            }
            match resume_kind(&shard, kind, &mut backoff).await {
                Ok(all_done) => complete &= all_done,
                Err(e) => {
                    warn!(error = %e, "scanning queued cleanups failed; will retry");
                    complete = false;
                    backoff.failed();
                    continue;
                }
            }
            basins_started |= kind == KeyKind::BasinDeletion;
        }
        if complete {
            return;
        }
        glommio::timer::sleep(Backoff::after(backoff.failures())).await;
    }
}

/// One pass over the queue markers of `kind`; returns whether every queued stream
/// cleanup in it succeeded.
async fn resume_kind(shard: &Rc<Shard>, kind: KeyKind, backoff: &mut Backoff) -> Result<bool> {
    let mut all_done = true;
    let mut pages = Pages::new(
        Bytes::from(vec![kind as u8])..Bytes::from(vec![kind as u8 + 1]),
        LIST_LIMIT_MAX,
    );
    while let Some(rows) = pages.next(&shard.storage).await? {
        for (key, _) in &rows {
            match kind {
                KeyKind::StreamCleanup => {
                    if let Some((basin, stream)) = keys::basin_stream_from_key(key) {
                        if shard.placement.stream_owner(&basin, &stream) == shard.id {
                            all_done &= shard.try_stream_cleanup(&basin, &stream, backoff).await;
                        }
                    }
                }
                KeyKind::BasinDeletion => {
                    if let Some(basin) = keys::basin_from_key(key) {
                        if shard.placement.basin_owner(&basin) == shard.id {
                            schedule_basin_deletion(shard, basin);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if all_done {
        backoff.succeeded();
    }
    Ok(all_done)
}

//! Per-shard background work on a steady tick: dropping trimmed runs from the index and
//! running due delete-on-empty checks. Both are driven by durable markers (`14` trim
//! cleanups, `13` deadlines), so they resume after a restart; every step is idempotent.

use crate::metrics::Job;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use slatedb::WriteBatch;
use tracing::{info, warn};

use crate::catalogue::LIST_LIMIT_MAX;
use crate::error::Result;
use crate::names::{BasinName, StreamName};
use crate::segments::index::BatchEntry;
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};

/// How often each shard looks for background work.
pub const BACKGROUND_TICK: Duration = Duration::from_secs(1);
/// A non-empty stream with delete-on-empty is checked again at most this much later.
const DOE_RECHECK_MAX_MS: u64 = 60_000;

pub(crate) async fn run(shard: Rc<Shard>) {
    // Trim cleanups queued before the last stop.
    while let Err(e) = shard.resume_trim_cleanups().await {
        warn!(error = %e, "scanning queued trim cleanups failed; retrying");
        glommio::timer::sleep(BACKGROUND_TICK).await;
    }
    loop {
        glommio::timer::sleep(BACKGROUND_TICK).await;
        if let Err(e) = shard.clean_up_trims().await {
            warn!(error = %e, "trim cleanup failed; will retry");
        }
        if let Err(e) = shard.run_due_doe_checks().await {
            warn!(error = %e, "delete-on-empty checks failed; will retry");
        }
    }
}

impl Shard {
    /// Pick up the trim cleanups queued before the last stop, a page of markers at a time.
    async fn resume_trim_cleanups(self: &Rc<Self>) -> Result<()> {
        let kind = KeyKind::TrimCleanup as u8;
        let mut start = Bytes::from(vec![kind]);
        let end = Bytes::from(vec![kind + 1]);
        loop {
            let rows = self
                .storage
                .scan(start.clone()..end.clone(), LIST_LIMIT_MAX)
                .await?;
            for (key, _) in &rows {
                let Some((basin, stream)) = keys::basin_stream_from_key(key) else {
                    continue;
                };
                if self.placement.stream_owner(&basin, &stream) != self.id {
                    continue;
                }
                // Loading the streamer marks it for cleanup if it has a trim point.
                if self.streamer(&basin, &stream).await?.is_none() {
                    let mut batch = WriteBatch::new();
                    batch.delete(key);
                    self.storage.write(batch).await?;
                }
            }
            match rows.last() {
                Some((last, _)) if rows.len() == LIST_LIMIT_MAX => start = keys::successor(last),
                _ => return Ok(()),
            }
        }
    }

    /// Remove records below the durable trim point of every loaded stream whose trim
    /// point moved.
    async fn clean_up_trims(self: &Rc<Self>) -> Result<()> {
        let due: Vec<_> = self
            .streamers
            .borrow()
            .iter()
            .filter(|(_, s)| s.borrow().trim_advanced)
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        for ((basin, stream), streamer) in due {
            let (id, trim_point, deleted) = {
                let mut s = streamer.borrow_mut();
                s.trim_advanced = false;
                (s.meta.id.0, s.durable_trim_point(), s.is_deleted())
            };
            if deleted {
                continue;
            }
            if let Err(e) = self.clean_up_trim(&basin, &stream, id, trim_point).await {
                // Due again on the next tick, not only after the next trim or a restart.
                streamer.borrow_mut().trim_advanced = true;
                return Err(e);
            }
            self.metrics().job_done(Job::TrimCleanup);
            info!(%basin, %stream, trim_point, "trimmed records removed");
        }
        Ok(())
    }

    async fn clean_up_trim(
        self: &Rc<Self>,
        basin: &BasinName,
        stream: &StreamName,
        id: u128,
        trim_point: u64,
    ) -> Result<()> {
        // Runs that end below the trim point; the one holding it stays.
        self.drop_runs(id, Some(trim_point)).await?;
        let mut batch = WriteBatch::new();
        batch.delete(keys::trim_cleanup(basin, stream));
        self.storage.write(batch).await?;
        Ok(())
    }

    async fn run_due_doe_checks(self: &Rc<Self>) -> Result<()> {
        let now = self.clock.now_millis();
        let rows = self
            .storage
            .scan(keys::doe_due(now), LIST_LIMIT_MAX)
            .await?;
        for (key, _) in rows {
            let Some((basin, stream)) = keys::doe_deadline_entry(&key) else {
                continue;
            };
            if self.placement.stream_owner(&basin, &stream) != self.id {
                continue;
            }
            let mut batch = WriteBatch::new();
            if let Some(next) = self.check_delete_on_empty(&basin, &stream, now).await? {
                batch.put(keys::doe_deadline(next, &basin, &stream), b"");
            }
            batch.delete(&key);
            self.storage.write(batch).await?;
        }
        Ok(())
    }

    /// Delete the stream if it is empty and idle for its `min_age`; otherwise say when to
    /// look again (`None`: never, the check no longer applies).
    async fn check_delete_on_empty(
        self: &Rc<Self>,
        basin: &BasinName,
        stream: &StreamName,
        now: u64,
    ) -> Result<Option<u64>> {
        let Some(streamer) = self.streamer(basin, stream).await? else {
            return Ok(None);
        };
        let (id, min_age_ms, created_ms, state, deleted) = {
            let s = streamer.borrow();
            (
                s.meta.id.0,
                s.meta
                    .config
                    .delete_on_empty_min_age_secs
                    .saturating_mul(1000),
                s.meta.created_at.as_millis(),
                s.durable_state().clone(),
                s.is_deleted(),
            )
        };
        if deleted || min_age_ms == 0 {
            return Ok(None);
        }
        let idle_since = created_ms.max(state.last_write_ms);
        let due = idle_since.saturating_add(min_age_ms);
        if now < due {
            return Ok(Some(due));
        }
        if self
            .has_live_records(id, state.trim_point, state.tail.seq_num, now)
            .await?
        {
            return Ok(Some(now + min_age_ms.min(DOE_RECHECK_MAX_MS)));
        }
        info!(%basin, %stream, "deleting empty stream");
        match self.delete_stream(basin.clone(), stream.clone()).await {
            Ok(()) | Err(crate::EngineError::StreamNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether any run holding records in `[from, end)` has one that has not expired by
    /// `now`.
    async fn has_live_records(&self, id: u128, from: u64, end: u64, now: u64) -> Result<bool> {
        if from >= end {
            return Ok(false);
        }
        let mut start = keys::batch_index(id, from);
        let stream_end = keys::stream_id_range(KeyKind::BatchIndex, id).end;
        loop {
            let rows = self
                .storage
                .scan(start.clone()..stream_end.clone(), LIST_LIMIT_MAX)
                .await?;
            for (_, value) in &rows {
                match BatchEntry::decode(value) {
                    Some(entry) if entry.first_seq_num >= end => return Ok(false),
                    Some(entry) if !entry.expired(now) => return Ok(true),
                    _ => {}
                }
            }
            match rows.last() {
                Some((last, _)) if rows.len() == LIST_LIMIT_MAX => {
                    start = keys::successor(last);
                }
                _ => return Ok(false),
            }
        }
    }
}

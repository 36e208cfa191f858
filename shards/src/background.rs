//! Per-shard background work on a steady tick: dropping trimmed runs from the index and
//! running due delete-on-empty checks. Both are driven by durable markers (`14` trim
//! cleanups, `13` deadlines), so they resume after a restart; every step is idempotent.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slatedb::WriteBatch;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::catalogue::LIST_LIMIT_MAX;
use crate::error::Result;
use crate::metrics::Job;
use crate::names::{BasinName, StreamName};
use crate::segments::index::BatchEntry;
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};
use crate::storage::Pages;

/// How often each shard looks for background work.
pub const BACKGROUND_TICK: Duration = Duration::from_secs(1);
/// A non-empty stream with delete-on-empty is checked again at most this much later.
const DOE_RECHECK_MAX_MS: u64 = 60_000;

pub(crate) async fn run(shard: Rc<Shard>) {
    // Trim cleanups queued before the last stop.
    let mut backoff = Backoff::default();
    while let Err(e) = shard.resume_trim_cleanups().await {
        let wait = backoff.failed();
        warn!(error = %e, ?wait, "scanning queued trim cleanups failed; will retry");
        glommio::timer::sleep(wait).await;
    }
    loop {
        glommio::timer::sleep(BACKGROUND_TICK).await;
        shard.clean_up_trims().await;
        if let Err(e) = shard.run_due_doe_checks().await {
            warn!(error = %e, "scanning due delete-on-empty checks failed; will retry");
        }
    }
}

impl Shard {
    /// Pick up the trim cleanups queued before the last stop, a page of markers at a time.
    /// A stream that cannot be loaded keeps its marker, for the next start.
    async fn resume_trim_cleanups(self: &Rc<Self>) -> Result<()> {
        let kind = KeyKind::TrimCleanup as u8;
        let range = Bytes::from(vec![kind])..Bytes::from(vec![kind + 1]);
        let mut pages = Pages::new(range, LIST_LIMIT_MAX);
        while let Some(rows) = pages.next(&self.storage).await? {
            for (key, _) in &rows {
                let Some((basin, stream)) = keys::basin_stream_from_key(key) else {
                    continue;
                };
                if self.placement.stream_owner(&basin, &stream) != self.id {
                    continue;
                }
                // Loading the streamer marks it for cleanup if it has a trim point.
                match self.streamer(&basin, &stream).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let mut batch = WriteBatch::new();
                        batch.delete(key);
                        self.storage.write(batch).await?;
                    }
                    Err(e) => {
                        self.metrics().job_failed(Job::TrimCleanup);
                        warn!(%basin, %stream, error = %e, "loading a stream to clean up its trim failed");
                    }
                }
            }
        }
        Ok(())
    }

    /// Remove records below the durable trim point of every loaded stream whose trim
    /// point moved. One that fails is due again after a backoff; the others go on.
    async fn clean_up_trims(self: &Rc<Self>) {
        let now = Instant::now();
        let due: Vec<_> = self
            .streamers
            .borrow()
            .iter()
            .filter(|(_, s)| {
                let s = s.borrow();
                s.trim_advanced && s.trim_retry_at.is_none_or(|at| at <= now)
            })
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
            match self.clean_up_trim(&basin, &stream, id, trim_point).await {
                Ok(()) => {
                    let mut s = streamer.borrow_mut();
                    s.trim_backoff.succeeded();
                    s.trim_retry_at = None;
                    drop(s);
                    self.metrics().job_done(Job::TrimCleanup);
                    info!(%basin, %stream, trim_point, "trimmed records removed");
                }
                Err(e) => {
                    // Due again after the backoff, not only after the next trim or a restart.
                    let mut s = streamer.borrow_mut();
                    s.trim_advanced = true;
                    let wait = s.trim_backoff.failed();
                    s.trim_retry_at = Some(Instant::now() + wait);
                    drop(s);
                    self.metrics().job_failed(Job::TrimCleanup);
                    warn!(%basin, %stream, error = %e, ?wait, "trim cleanup failed; will retry");
                }
            }
        }
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

    /// Run the delete-on-empty checks that are due, a page of them per tick. A check that
    /// fails is put off by a backoff that grows with its failures in a row, kept in its
    /// deadline marker's value, so that it delays no other check, across restarts too.
    async fn run_due_doe_checks(self: &Rc<Self>) -> Result<()> {
        let now = self.clock.now_millis();
        let rows = self
            .storage
            .scan(keys::doe_due(now), LIST_LIMIT_MAX)
            .await?;
        for (key, value) in rows {
            let Some((basin, stream)) = keys::doe_deadline_entry(&key) else {
                continue;
            };
            if self.placement.stream_owner(&basin, &stream) != self.id {
                continue;
            }
            let mut batch = WriteBatch::new();
            match self.check_delete_on_empty(&basin, &stream, now).await {
                Ok(next) => {
                    self.metrics().job_done(Job::DeleteOnEmptyCheck);
                    if let Some(next) = next {
                        batch.put(keys::doe_deadline(next, &basin, &stream), b"");
                    }
                }
                Err(e) => {
                    let failures = doe_failures(&value).saturating_add(1);
                    let wait = Backoff::after(failures);
                    self.metrics().job_failed(Job::DeleteOnEmptyCheck);
                    warn!(%basin, %stream, error = %e, ?wait, "delete-on-empty check failed; will retry");
                    let retry_at = now.saturating_add(wait.as_millis() as u64);
                    batch.put(
                        keys::doe_deadline(retry_at, &basin, &stream),
                        Bytes::copy_from_slice(&failures.to_be_bytes()),
                    );
                }
            }
            batch.delete(&key);
            if let Err(e) = self.storage.write(batch).await {
                warn!(%basin, %stream, error = %e, "rescheduling a delete-on-empty check failed");
            }
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
        let stream_end = keys::stream_id_range(KeyKind::BatchIndex, id).end;
        let mut pages = Pages::new(keys::batch_index(id, from)..stream_end, LIST_LIMIT_MAX);
        while let Some(rows) = pages.next(&self.storage).await? {
            for (_, value) in &rows {
                match BatchEntry::decode(value) {
                    Some(entry) if entry.first_seq_num >= end => return Ok(false),
                    Some(entry) if !entry.expired(now) => return Ok(true),
                    _ => {}
                }
            }
        }
        Ok(false)
    }
}

/// Failures in a row of a delete-on-empty check, from its deadline marker's value (empty
/// until one fails).
fn doe_failures(value: &[u8]) -> u32 {
    value.try_into().map_or(0, u32::from_be_bytes)
}

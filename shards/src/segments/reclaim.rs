//! Reclaiming space: runs leave the index when they are trimmed, expire, or their stream
//! is deleted, and a segment object goes once no reference to it is left.
//!
//! - Trims and deletions drop runs on the stream's owner ([`Shard::drop_runs`]): each
//!   run's index entry, timestamp entry and segment reference go in one durable write.
//! - The sweep, on shard 0 every [`RECLAIM_TICK`], walks segment records
//!   [`SWEEP_SEGMENTS_PER_TICK`] at a time: references whose runs have all expired are
//!   dropped (with their index entries), and a segment with no reference left is deleted,
//!   object first and record second, so a crash in between only repeats the delete. A
//!   segment's references only ever decrease once its record exists (both are written in
//!   one batch), so a segment seen empty stays empty.
//! - At start, objects that have no segment record and were not named by this process are
//!   orphans of a crash between a PUT and its index write, and are deleted.
//!
//! The bound: a segment is deleted within one full sweep after its last run was dropped,
//! i.e. within `segments / SWEEP_SEGMENTS_PER_TICK` ticks (a few seconds for a store of a
//! few thousand segments, a minute for 60,000).

use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use slatedb::WriteBatch;
use tracing::{debug, warn};

use super::index::{BatchEntry, SegmentRecord, SegmentRef};
use super::SegmentId;
use crate::error::{EngineError, Result, StorageError};
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};

/// How often shard 0 sweeps a page of segments.
pub const RECLAIM_TICK: Duration = Duration::from_secs(1);
/// Segment records one sweep step reads.
pub const SWEEP_SEGMENTS_PER_TICK: usize = 1000;
/// Index entries one step of dropping runs reads and deletes.
const DROP_PAGE_RUNS: usize = 5000;

/// Shard 0's reclaimer: orphans once, then the sweep forever.
pub(crate) async fn run(shard: Rc<Shard>) {
    if shard.id != 0 {
        return;
    }
    while let Err(e) = shard.delete_orphans().await {
        warn!(error = %e, "looking for orphaned segments failed; retrying");
        glommio::timer::sleep(RECLAIM_TICK).await;
    }
    let mut cursor: Option<Bytes> = None;
    loop {
        glommio::timer::sleep(RECLAIM_TICK).await;
        match shard.sweep(cursor.clone()).await {
            Ok(next) => cursor = next,
            Err(e) => warn!(error = %e, "segment sweep failed; will retry"),
        }
    }
}

fn corrupt(key: &[u8], reason: &str) -> EngineError {
    EngineError::Storage(StorageError::Corrupt {
        key: key.to_vec(),
        reason: reason.to_owned(),
    })
}

impl Shard {
    /// Drop the runs of stream `id` that end below `below` (every run if `None`): index
    /// entries, timestamp entries and segment references, durably, a page at a time.
    pub(crate) async fn drop_runs(&self, id: u128, below: Option<u64>) -> Result<()> {
        let all = keys::stream_id_range(KeyKind::BatchIndex, id);
        let end = match below {
            Some(seq_num) => keys::batch_index(id, seq_num),
            None => all.end,
        };
        let mut start = all.start;
        loop {
            let rows = self
                .storage
                .scan(start.clone()..end.clone(), DROP_PAGE_RUNS)
                .await?;
            let Some((last, _)) = rows.last() else {
                return Ok(());
            };
            let mut next = last.to_vec();
            next.push(0);
            let mut batch = WriteBatch::new();
            for (key, value) in &rows {
                let entry =
                    BatchEntry::decode(value).ok_or_else(|| corrupt(key, "bad index entry"))?;
                let last = entry.last_seq_num();
                batch.delete(key);
                batch.delete(keys::segment_ref(entry.segment.0, id, last));
                batch.delete(keys::timestamp_index(
                    id,
                    entry.last_timestamp,
                    entry.first_seq_num,
                ));
            }
            self.storage.write(batch).await?;
            start = Bytes::from(next);
        }
    }

    /// One step of the sweep, from `cursor` (a segment key); returns where the next starts.
    async fn sweep(&self, cursor: Option<Bytes>) -> Result<Option<Bytes>> {
        let range = keys::segments_range();
        let start = cursor.unwrap_or(range.start);
        let rows = self
            .storage
            .scan(start..range.end, SWEEP_SEGMENTS_PER_TICK)
            .await?;
        let now = self.clock.now_millis();
        for (key, value) in &rows {
            let Some(segment) = keys::segment_id_of(key).map(SegmentId) else {
                continue;
            };
            let Some(record) = SegmentRecord::decode(value) else {
                return Err(corrupt(key, "bad segment record"));
            };
            self.sweep_segment(segment, record, now).await?;
        }
        Ok(match rows.last() {
            Some((last, _)) if rows.len() == SWEEP_SEGMENTS_PER_TICK => {
                let mut next = last.to_vec();
                next.push(0);
                Some(Bytes::from(next))
            }
            _ => None,
        })
    }

    async fn sweep_segment(
        &self,
        segment: SegmentId,
        record: SegmentRecord,
        now: u64,
    ) -> Result<()> {
        let refs = self
            .storage
            .scan(
                keys::stream_id_range(KeyKind::SegmentRef, segment.0),
                usize::MAX,
            )
            .await?;
        let mut live_bytes = 0u64;
        let mut expired = WriteBatch::new();
        for (key, value) in &refs {
            let (Some(r), Some((id, last))) =
                (SegmentRef::decode(value), keys::segment_ref_entry(key))
            else {
                return Err(corrupt(key, "bad segment reference"));
            };
            if r.expired(now) {
                expired.delete(key);
                expired.delete(keys::batch_index(id, last));
                expired.delete(keys::timestamp_index(id, r.last_timestamp, r.first_seq_num));
            } else {
                live_bytes += u64::from(r.length);
            }
        }
        if !expired.is_empty() {
            self.storage.write(expired).await?;
        }
        if live_bytes == 0 {
            self.storage.delete_segment(segment).await?;
            let mut batch = WriteBatch::new();
            batch.delete(keys::segment(segment.0));
            self.storage.write(batch).await?;
            debug!(segment = %format!("{:032x}", segment.0), bytes = record.object_bytes, "segment reclaimed");
        }
        Ok(())
    }

    /// Delete segment objects that no segment record knows and that an earlier process
    /// wrote: a crash came between their PUT and their index write.
    async fn delete_orphans(&self) -> Result<()> {
        let mut known = HashSet::new();
        let range = keys::segments_range();
        let mut start = range.start.clone();
        loop {
            let rows = self
                .storage
                .scan(start.clone()..range.end.clone(), SWEEP_SEGMENTS_PER_TICK)
                .await?;
            known.extend(rows.iter().filter_map(|(k, _)| keys::segment_id_of(k)));
            match rows.last() {
                Some((last, _)) if rows.len() == SWEEP_SEGMENTS_PER_TICK => {
                    let mut next = last.to_vec();
                    next.push(0);
                    start = Bytes::from(next);
                }
                _ => break,
            }
        }
        for (segment, size) in self.storage.list_segments().await? {
            if known.contains(&segment.0) || self.storage.is_this_boots(segment) {
                continue;
            }
            self.storage.delete_segment(segment).await?;
            debug!(segment = %format!("{:032x}", segment.0), size, "orphaned segment deleted");
        }
        Ok(())
    }
}

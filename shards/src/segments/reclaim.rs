//! Reclaiming space: runs leave the index when they are trimmed, expire, or their stream
//! is deleted, and a segment object goes once no reference to it is left.
//!
//! - Trims and deletions drop runs on the stream's owner ([`Shard::drop_runs`]): each
//!   run's index entry, timestamp entry and segment reference go in one durable
//!   transaction, guarded against a compaction moving the run at the same moment.
//! - The sweep, on shard 0 every [`RECLAIM_TICK`], walks segment records
//!   [`SWEEP_SEGMENTS_PER_TICK`] at a time: references whose runs have all expired are
//!   dropped (with their index entries), and a segment with no reference left is deleted,
//!   object first and record second, so a crash in between only repeats the delete. A
//!   segment's references only ever decrease once its record exists (both are written in
//!   one batch), so a segment seen empty stays empty.
//! - At start, objects that have no segment record and were not named by this process are
//!   orphans, and are deleted: a compaction's copy whose index write never happened, or a
//!   commit of the log at or below the durable watermark (above it, start-up replay has
//!   written a record for every position, and later ones are this process's own).
//! - A commit of the log is deleted or compacted only once the durable watermark has passed
//!   it (decision 0011): until then a crash would replay it.
//! - Compaction bounds space amplification: a segment of at least [`COMPACT_MIN_BYTES`]
//!   whose live bytes fall below [`COMPACT_LIVE_PERCENT`] of its size has its live runs
//!   copied, as they are, into a new segment; one transaction then re-points each run whose
//!   index entry still names the old place (a run trimmed or deleted meanwhile conflicts
//!   or fails its guard, and stays dropped), and the old segment empties and goes on a
//!   later sweep. So at rest, every segment at least `COMPACT_MIN_BYTES` large is at least
//!   half live: stored bytes are at most 2× the live bytes plus less than
//!   `COMPACT_MIN_BYTES` per sparse small segment.
//!
//! The bound: a segment is deleted within one full sweep after its last run was dropped,
//! i.e. within `segments / SWEEP_SEGMENTS_PER_TICK` ticks (a few seconds for a store of a
//! few thousand segments, a minute for 60,000).

use crate::metrics::Job;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use slatedb::WriteBatch;
use tracing::{debug, warn};

use super::format::{self, HEADER_BYTES};
use super::index::{BatchEntry, SegmentRecord};
use super::SegmentId;
use crate::error::{EngineError, Result, StorageError};
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};
use crate::storage::Guarded;

/// How often shard 0 sweeps a page of segments.
pub const RECLAIM_TICK: Duration = Duration::from_secs(1);
/// Segment records one sweep step reads.
pub const SWEEP_SEGMENTS_PER_TICK: usize = 1000;
/// Segments smaller than this are never compacted: rewriting them buys little.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// A segment whose live share falls below this percentage is compacted.
pub const COMPACT_LIVE_PERCENT: u64 = 50;
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

/// A run still referencing the segment being swept: its stream, its entry, and the
/// reference's value (equal to the index entry's while the run is unmoved).
struct LiveRun {
    id: u128,
    entry: BatchEntry,
    value: Bytes,
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
            let next = keys::successor(last);
            let mut guards = Vec::with_capacity(rows.len());
            for (key, value) in &rows {
                let entry =
                    BatchEntry::decode(value).ok_or_else(|| corrupt(key, "bad index entry"))?;
                let last = entry.last_seq_num();
                // Guarded: a compaction may move the run (and its reference) meanwhile.
                guards.push(Guarded {
                    key: key.clone(),
                    expected: value.clone(),
                    puts: Vec::new(),
                    deletes: vec![
                        key.clone(),
                        keys::segment_ref(entry.segment.0, id, last),
                        keys::timestamp_index(id, entry.last_timestamp, entry.first_seq_num),
                    ],
                });
            }
            let count = guards.len();
            if self
                .storage
                .write_where_unchanged(guards, Vec::new())
                .await?
                == count
            {
                start = next;
            }
            // Otherwise a run moved under us: read the page again.
        }
    }

    /// One step of the sweep, from `cursor` (a segment key); returns where the next starts.
    /// A page of segment records and all their references are read in two scans, and the
    /// page's deletions go in three writes (expired runs, objects, records), whatever the
    /// number of segments in it.
    async fn sweep(&self, cursor: Option<Bytes>) -> Result<Option<Bytes>> {
        let range = keys::segments_range();
        let start = cursor.unwrap_or(range.start);
        let rows = self
            .storage
            .scan(start..range.end, SWEEP_SEGMENTS_PER_TICK)
            .await?;
        let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else {
            return Ok(None);
        };
        let (Some(first), Some(last)) = (keys::segment_id_of(first), keys::segment_id_of(last))
        else {
            return Err(corrupt(first, "bad segment key"));
        };
        let refs = self
            .storage
            .scan(
                keys::stream_id_range(KeyKind::SegmentRef, first).start
                    ..keys::stream_id_range(KeyKind::SegmentRef, last).end,
                usize::MAX,
            )
            .await?;
        let mut refs = refs.into_iter().peekable();
        let now = self.clock.now_millis();
        // A commit above the durable watermark may be replayed after a crash: it stays, and
        // its runs stay where they are, until the watermark passes it.
        let durable = self.storage.log_durable();
        let mut expired = WriteBatch::new();
        let mut empty = Vec::new();
        let mut sparse = Vec::new();
        for (key, value) in &rows {
            let (Some(segment), Some(record)) =
                (keys::segment_id_of(key), SegmentRecord::decode(value))
            else {
                return Err(corrupt(key, "bad segment record"));
            };
            let mut live_bytes = 0u64;
            let mut live = Vec::new();
            // References sort by segment: this segment's come next.
            while let Some((key, value)) =
                refs.next_if(|(k, _)| keys::segment_id_of(k).is_some_and(|s| s <= segment))
            {
                let (Some(entry), Some((id, last))) =
                    (BatchEntry::decode(&value), keys::segment_ref_entry(&key))
                else {
                    return Err(corrupt(&key, "bad segment reference"));
                };
                if keys::segment_id_of(&key) != Some(segment) {
                    continue;
                }
                if entry.expired(now) {
                    expired.delete(&key);
                    expired.delete(keys::batch_index(id, last));
                    expired.delete(keys::timestamp_index(
                        id,
                        entry.last_timestamp,
                        entry.first_seq_num,
                    ));
                } else {
                    live_bytes += u64::from(entry.length);
                    live.push(LiveRun { id, entry, value });
                }
            }
            if SegmentId(segment)
                .log_position()
                .is_some_and(|p| p > durable)
            {
                continue;
            }
            if live_bytes == 0 {
                empty.push((SegmentId(segment), record));
            } else if record.object_bytes >= COMPACT_MIN_BYTES
                && live_bytes * 100 < record.object_bytes * COMPACT_LIVE_PERCENT
            {
                sparse.push((SegmentId(segment), live));
            }
        }
        // Expired runs leave the index durably before any object they point into goes.
        if !expired.is_empty() {
            self.storage.write(expired).await?;
        }
        if !empty.is_empty() {
            futures::future::try_join_all(
                empty
                    .iter()
                    .map(|(segment, _)| self.storage.delete_segment(*segment)),
            )
            .await?;
            let mut records = WriteBatch::new();
            for (segment, record) in &empty {
                records.delete(keys::segment(segment.0));
                debug!(segment = %format!("{:032x}", segment.0), bytes = record.object_bytes, "segment reclaimed");
            }
            self.storage.write(records).await?;
            for (_, record) in &empty {
                self.metrics().job_done(Job::SegmentDeleted);
                self.metrics().reclaimed(record.object_bytes);
            }
        }
        for (segment, live) in sparse {
            self.compact(segment, live).await?;
        }
        Ok((rows.len() == SWEEP_SEGMENTS_PER_TICK).then(|| keys::successor(&keys::segment(last))))
    }

    /// Copy the live runs of `segment` into a new segment and re-point their index
    /// entries at it, each only if its entry still equals its reference (unmoved, not
    /// dropped).
    async fn compact(&self, segment: SegmentId, live: Vec<LiveRun>) -> Result<()> {
        let fetched = futures::future::try_join_all(live.iter().map(|run| {
            let start = u64::from(run.entry.offset);
            self.storage
                .get_segment_range(segment, start..start + u64::from(run.entry.length))
        }))
        .await?;
        let target = self.storage.new_segment_id();
        let mut payload = vec![format::encode_header(target)];
        let mut offset = HEADER_BYTES as u32;
        let mut guards = Vec::with_capacity(live.len());
        for (LiveRun { id, entry, value }, bytes) in live.into_iter().zip(fetched) {
            let last = entry.last_seq_num();
            let key = keys::batch_index(id, last);
            // Runs move byte for byte: the checksum does not cover where a run sits.
            format::check_run(bytes.clone(), id, entry.first_seq_num, entry.record_count)
                .map_err(|e| corrupt(&key, &e.to_string()))?;
            let moved = BatchEntry {
                segment: target,
                offset,
                ..entry
            };
            offset += entry.length;
            payload.push(bytes);
            let moved = moved.encode();
            guards.push(Guarded {
                key: key.clone(),
                expected: value,
                puts: vec![
                    (key, moved.clone()),
                    (keys::segment_ref(target.0, id, last), moved),
                ],
                deletes: vec![keys::segment_ref(segment.0, id, last)],
            });
        }
        let record = SegmentRecord {
            object_bytes: u64::from(offset),
            written_ms: self.clock.now_millis(),
        };
        self.storage
            .put_segment(target, payload.into_iter().collect())
            .await?;
        // The new segment's record goes in whatever happens to the guards, so a copy that
        // nothing ends up pointing to is swept like any empty segment.
        let always = vec![(keys::segment(target.0), record.encode())];
        match self.storage.write_where_unchanged(guards, always).await {
            Ok(moved) => {
                self.metrics().job_done(Job::SegmentCompacted);
                debug!(from = %format!("{:032x}", segment.0), to = %format!("{:032x}", target.0), moved, "segment compacted");
                Ok(())
            }
            Err(e) => {
                // A conflict with a concurrent trim or deletion: the next sweep tries again.
                let mut batch = WriteBatch::new();
                batch.put(keys::segment(target.0), record.encode());
                self.storage.write(batch).await?;
                Err(e.into())
            }
        }
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
                    start = keys::successor(last);
                }
                _ => break,
            }
        }
        let durable = self.storage.log_durable();
        for (segment, size) in self.storage.list_segments().await? {
            let in_flight = match segment.log_position() {
                Some(position) => position > durable,
                None => self.storage.is_this_boots(segment),
            };
            if known.contains(&segment.0) || in_flight {
                continue;
            }
            self.storage.delete_segment(segment).await?;
            debug!(segment = %format!("{:032x}", segment.0), size, "orphaned segment deleted");
        }
        Ok(())
    }
}

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

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use slatedb::WriteBatch;
use tracing::{debug, warn};

use super::format::{self, HEADER_BYTES};
use super::index::{BatchEntry, SegmentRecord};
use super::SegmentId;
use crate::backoff::Backoff;
use crate::error::{EngineError, Result, StorageError};
use crate::metrics::Job;
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};
use crate::storage::{Guarded, Pages, SegmentListing, INDEX_FLUSH_INTERVAL};

/// How often shard 0 sweeps a page of segments.
pub const RECLAIM_TICK: Duration = Duration::from_secs(1);
/// Segment records one sweep step reads.
pub const SWEEP_SEGMENTS_PER_TICK: usize = 1000;
/// Segment references one sweep step reads: a page of segments whose references run past
/// it is cut short at the segment where they do.
pub const SWEEP_REFS_PER_TICK: usize = 4096;
/// Tries of a one-segment page before the sweep steps past that segment.
const SWEEP_TRIES_PER_SEGMENT: u32 = 3;
/// The mover runs every this many ticks, as often as the index is made durable
/// (`INDEX_FLUSH_INTERVAL`): at light load one object and one durable index write to the
/// main store every 5 s, so with SlateDB's own flushes under one object write a second. A
/// run stays in the write-ahead store for at most about twice that while the mover keeps
/// up: until the index is durable, then until the mover's next run. While the store holds
/// [`MOVE_OBJECT_BYTES`] or more, it runs every tick.
const MOVE_EVERY_TICKS: u64 = 5;
/// How long an acknowledged run stays in the write-ahead store at most, while the main
/// store answers and the mover keeps up: until the index is durable, then until the
/// mover's next pass, then the pass itself (a tick). Its commit's object is deleted on the
/// pass after.
pub const WAL_STAY_MAX: Duration = INDEX_FLUSH_INTERVAL
    .saturating_add(RECLAIM_TICK.saturating_mul(MOVE_EVERY_TICKS as u32))
    .saturating_add(RECLAIM_TICK);
/// Pages of write-ahead commits the mover takes per pass at most: 8,000 commits a pass,
/// a pass every 5 s (every second under load).
const MOVER_PAGES_PER_TICK: usize = 8;
/// Bytes of live runs moved from the write-ahead store into one object of the main store,
/// at most (runs of one pass beyond it go in further objects). A commit is never split:
/// one larger than this (up to `COMMIT_BYTES_MAX`) moves alone, into an object its size.
pub const MOVE_OBJECT_BYTES: u64 = 64 << 20;
/// Object-store calls (ranged GETs, deletes) the reclaimer has in flight at once.
const STORE_CALLS_IN_FLIGHT: usize = 16;
/// Objects of the segment listing the orphan pass checks per tick.
pub const ORPHAN_PAGE_OBJECTS: usize = 1000;
/// Segments smaller than this are never compacted: rewriting them buys little.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// A segment whose live share falls below this percentage is compacted.
pub const COMPACT_LIVE_PERCENT: u64 = 50;
/// Index entries one step of dropping runs reads and deletes.
const DROP_PAGE_RUNS: usize = 5000;

/// Shard 0's reclaimer: every tick, one page of the sweep and, until the orphan pass is
/// done, one page of it. Neither waits for the other, and each backs off on its own.
pub(crate) async fn run(shard: Rc<Shard>) {
    if shard.id != 0 {
        return;
    }
    let mut orphans = Some(OrphanPass::default());
    let mut sweep = Sweep::over(|_| keys::segments_range(), false);
    // With a write-ahead store, its commits get a sweep of their own (the mover), so that
    // how long a run stays there does not grow with the main store's segments.
    let mut mover = Sweep::over(
        |shard| {
            let durable = shard.storage.log_durable();
            keys::segment(SegmentId::log(0).0)..keys::segment(SegmentId::log(durable + 1).0)
        },
        true,
    );
    // Whether the mover's last pass failed to move something: it then keeps to its
    // period rather than retrying every tick against a store that refuses.
    let mut mover_failed = false;
    for tick in 0u64.. {
        glommio::timer::sleep(RECLAIM_TICK).await;
        if let Some(pass) = &mut orphans {
            if pass.step(&shard).await {
                orphans = None;
            }
        }
        // Every few ticks at light load; every tick while a full object's worth waits, so
        // that under heavy load the mover keeps up rather than sleeping between passes.
        let backlog = !mover_failed && shard.storage.wal_bytes() >= MOVE_OBJECT_BYTES;
        if shard.storage.has_wal() && (tick % MOVE_EVERY_TICKS == 0 || backlog) {
            // Several pages while there is more, so that the mover keeps up with a busy log;
            // what they found moves together, into as few objects as the bound allows (one
            // object and one durable index write per pass at light load, not one a page).
            for _ in 0..MOVER_PAGES_PER_TICK {
                mover.step(&shard).await;
                if mover.cursor.is_none() || mover.retry_at.is_some() {
                    break;
                }
            }
            mover_failed = !shard.move_commits(std::mem::take(&mut mover.moving)).await;
        }
        sweep.step(&shard).await;
    }
}

/// Where the sweep is, and how it is doing. A page that fails is read again after a
/// backoff, half as large each time; one segment that keeps failing alone is stepped past
/// (the next round comes back to it).
struct Sweep {
    /// The segment records it walks, as of now.
    range: fn(&Shard) -> std::ops::Range<Bytes>,
    /// Whether it moves write-ahead commits into the main store (only the mover does: the
    /// round-robin sweep would move them every tick, one main-store object each).
    moves: bool,
    /// The commits its pages found to move, with their live runs, until the pass moves them.
    moving: Vec<(SegmentId, Vec<LiveRun>)>,
    cursor: Option<Bytes>,
    page: usize,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl Sweep {
    fn over(range: fn(&Shard) -> std::ops::Range<Bytes>, moves: bool) -> Sweep {
        Sweep {
            range,
            moves,
            moving: Vec::new(),
            cursor: None,
            page: SWEEP_SEGMENTS_PER_TICK,
            backoff: Backoff::default(),
            retry_at: None,
        }
    }

    async fn step(&mut self, shard: &Shard) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let range = (self.range)(shard);
        match shard
            .sweep(
                range,
                self.cursor.clone(),
                self.page,
                self.moves.then_some(&mut self.moving),
            )
            .await
        {
            Ok(next) => {
                shard.metrics().job_done(Job::SweepPage);
                self.cursor = next;
                self.page = (self.page * 2).min(SWEEP_SEGMENTS_PER_TICK);
                self.backoff.succeeded();
                self.retry_at = None;
            }
            Err(e) => {
                shard.metrics().job_failed(Job::SweepPage);
                let wait = self.backoff.failed();
                warn!(error = %e, page = self.page, ?wait, "segment sweep failed; will retry");
                if self.page > 1 {
                    self.page /= 2;
                } else if self.backoff.failures() >= SWEEP_TRIES_PER_SEGMENT {
                    self.step_past_one(shard).await;
                }
                self.retry_at = Some(Instant::now() + wait);
            }
        }
    }

    /// Move the cursor past the one segment at it, which failed alone time after time.
    async fn step_past_one(&mut self, shard: &Shard) {
        let range = (self.range)(shard);
        let start = self.cursor.clone().unwrap_or(range.start);
        if let Ok(rows) = shard.storage.scan(start..range.end, 1).await {
            if let Some((key, _)) = rows.first() {
                warn!(key = %hex(key), "a segment failed every sweep of it; skipped until the next round");
                self.cursor = Some(keys::successor(key));
                self.backoff.succeeded();
            }
        }
    }
}

/// The orphan pass: the segment listing, a page per tick, each checked against the
/// segment records. A failed page restarts the listing after a backoff (what was deleted
/// is gone; the rest is listed again).
#[derive(Default)]
struct OrphanPass {
    listing: Option<SegmentListing>,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl OrphanPass {
    /// One page; returns whether the pass is done.
    async fn step(&mut self, shard: &Shard) -> bool {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return false;
        }
        let listing = self
            .listing
            .get_or_insert_with(|| shard.storage.list_segments(ORPHAN_PAGE_OBJECTS));
        let result = match listing.next_page().await {
            None => return true,
            Some(Ok(page)) => shard.delete_orphans(page).await,
            Some(Err(e)) => Err(e.into()),
        };
        match result {
            Ok(()) => {
                shard.metrics().job_done(Job::OrphanPage);
                self.backoff.succeeded();
            }
            Err(e) => {
                shard.metrics().job_failed(Job::OrphanPage);
                let wait = self.backoff.failed();
                warn!(error = %e, ?wait, "looking for orphaned segments failed; will list again");
                self.listing = None;
                self.retry_at = Some(Instant::now() + wait);
            }
        }
        false
    }
}

/// `sources` grouped into objects of at most `bytes` of live runs each (a source larger than
/// that alone).
fn objects_of(
    sources: Vec<(SegmentId, Vec<LiveRun>)>,
    bytes: u64,
) -> Vec<Vec<(SegmentId, Vec<LiveRun>)>> {
    let mut objects: Vec<Vec<(SegmentId, Vec<LiveRun>)>> = Vec::new();
    let mut filled = u64::MAX;
    for (segment, live) in sources {
        let size: u64 = live.iter().map(|r| u64::from(r.entry.length)).sum();
        if filled.saturating_add(size) > bytes {
            objects.push(Vec::new());
            filled = 0;
        }
        filled += size;
        objects
            .last_mut()
            .expect("pushed above")
            .push((segment, live));
    }
    objects
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
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
        let mut pages = Pages::new(all.start..end, DROP_PAGE_RUNS);
        while let Some(rows) = pages.next(&self.storage).await? {
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
                != count
            {
                // A run moved under us: read the page again.
                pages.again_from(rows[0].0.clone());
            }
        }
        Ok(())
    }

    /// One step of the sweep over the segment records in `range`, from `cursor` (a segment
    /// key), at most `page` of them and [`SWEEP_REFS_PER_TICK`] references; returns where the next starts. The
    /// page's deletions go in three writes (expired runs, objects, records), whatever the
    /// number of segments in it. A segment that cannot be judged (a bad record or
    /// reference) or whose deletion or compaction fails is counted, logged and left for the
    /// next round; only a failure to read or write the page fails the step.
    ///
    /// With `moving` and a write-ahead store, a commit of the log that the durable watermark
    /// has passed is added to `moving` with its live runs, whatever their share of live
    /// bytes, for [`Shard::move_commits`].
    async fn sweep(
        &self,
        range: std::ops::Range<Bytes>,
        cursor: Option<Bytes>,
        page: usize,
        moving: Option<&mut Vec<(SegmentId, Vec<LiveRun>)>>,
    ) -> Result<Option<Bytes>> {
        let start = cursor.unwrap_or(range.start);
        let mut rows = self.storage.scan(start..range.end, page).await?;
        let mut more = rows.len() == page;
        let ids: Vec<Option<u128>> = rows.iter().map(|(k, _)| keys::segment_id_of(k)).collect();
        let (Some(Some(first)), Some(Some(last))) = (ids.first(), ids.last()) else {
            return match rows.first() {
                None => Ok(None),
                Some((key, _)) => Err(corrupt(key, "bad segment key")),
            };
        };
        let refs = self
            .storage
            .scan(
                keys::stream_id_range(KeyKind::SegmentRef, *first).start
                    ..keys::stream_id_range(KeyKind::SegmentRef, *last).end,
                SWEEP_REFS_PER_TICK,
            )
            .await?;
        // A full page of references may end inside a segment: judge only the segments
        // before it, or, when the first segment alone fills the page, drop what of it has
        // expired and judge it on a later round.
        let mut judged = rows.len();
        if refs.len() == SWEEP_REFS_PER_TICK {
            let cut = refs.last().and_then(|(k, _)| keys::segment_id_of(k));
            let before = ids.iter().take_while(|id| **id < cut).count();
            judged = before;
            rows.truncate(before.max(1));
            more = true;
        }
        let mut refs = refs.into_iter().peekable();
        let now = self.clock.now_millis();
        // A commit above the durable watermark may be replayed after a crash: it stays, and
        // its runs stay where they are, until the watermark passes it.
        let durable = self.storage.log_durable();
        let mut expired = WriteBatch::new();
        let mut empty = Vec::new();
        let mut sparse = Vec::new();
        let mut found = Vec::new();
        let wal = moving.is_some() && self.storage.has_wal();
        for (i, (key, value)) in rows.iter().enumerate() {
            let (Some(segment), Some(record)) =
                (keys::segment_id_of(key), SegmentRecord::decode(value))
            else {
                self.skip_segment(key, "bad segment record");
                continue;
            };
            let mut live_bytes = 0u64;
            let mut live = Vec::new();
            let mut bad = false;
            // References sort by segment: this segment's come next.
            while let Some((key, value)) =
                refs.next_if(|(k, _)| keys::segment_id_of(k).is_some_and(|s| s <= segment))
            {
                let (Some(entry), Some((id, last))) =
                    (BatchEntry::decode(&value), keys::segment_ref_entry(&key))
                else {
                    bad = true;
                    continue;
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
            if bad {
                self.skip_segment(key, "bad segment reference");
                continue;
            }
            if i >= judged
                || SegmentId(segment)
                    .log_position()
                    .is_some_and(|p| p > durable)
            {
                continue;
            }
            if live_bytes == 0 {
                empty.push((SegmentId(segment), record));
            } else if wal && SegmentId(segment).log_position().is_some() {
                found.push((SegmentId(segment), live));
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
        self.delete_empty(empty).await?;
        if let Some(moving) = moving {
            moving.extend(found);
        }
        for one in sparse {
            self.compact_or_count(vec![one]).await;
        }
        let next = rows.last().map(|(key, _)| keys::successor(key));
        Ok(next.filter(|_| more))
    }

    /// Move the live runs of write-ahead commits into objects of the main store of up to
    /// [`MOVE_OBJECT_BYTES`] each; the emptied commits are deleted by a later pass. Returns
    /// whether every object was moved.
    async fn move_commits(&self, moving: Vec<(SegmentId, Vec<LiveRun>)>) -> bool {
        let mut all = true;
        for sources in objects_of(moving, MOVE_OBJECT_BYTES) {
            all &= self.compact_or_count(sources).await;
        }
        all
    }

    /// Compact `sources` into one object; a failure is counted and logged, and the next
    /// round tries again. Returns whether it succeeded.
    async fn compact_or_count(&self, sources: Vec<(SegmentId, Vec<LiveRun>)>) -> bool {
        let first = sources[0].0;
        match self.compact(sources).await {
            Ok(()) => true,
            Err(e) => {
                self.metrics().job_failed(Job::SegmentCompacted);
                warn!(segment = %format!("{:032x}", first.0), error = %e, "compaction failed; tried again next round");
                false
            }
        }
    }

    /// A segment the sweep cannot judge: counted, logged, and left for the next round.
    fn skip_segment(&self, key: &[u8], why: &str) {
        self.metrics().job_failed(Job::SegmentDeleted);
        warn!(key = %hex(key), why, "segment skipped by the sweep");
    }

    /// Delete the objects of segments with nothing live, then the records of those whose
    /// object is gone: object first, so a crash in between only repeats the delete.
    async fn delete_empty(&self, empty: Vec<(SegmentId, SegmentRecord)>) -> Result<()> {
        if empty.is_empty() {
            return Ok(());
        }
        let deleted: Vec<_> = stream::iter(empty.iter())
            .map(|(id, _)| self.storage.delete_segment(*id))
            .buffered(STORE_CALLS_IN_FLIGHT)
            .collect()
            .await;
        let mut records = WriteBatch::new();
        let mut gone = Vec::new();
        for ((segment, record), result) in empty.into_iter().zip(deleted) {
            match result {
                Ok(()) => {
                    records.delete(keys::segment(segment.0));
                    debug!(segment = %format!("{:032x}", segment.0), bytes = record.object_bytes, "segment reclaimed");
                    if segment.log_position().is_some() {
                        self.storage.wal_counted(record.object_bytes, true);
                    }
                    gone.push(record);
                }
                Err(e) => {
                    self.metrics().job_failed(Job::SegmentDeleted);
                    warn!(segment = %format!("{:032x}", segment.0), error = %e, "deleting a segment failed; tried again next round");
                }
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        // Not made durable here: a record that comes back after a crash names an object
        // with no reference left, which the next round deletes again (already gone is
        // fine). So no object write of its own; it rides the next index flush.
        self.storage.apply(records).await?;
        for record in gone {
            self.metrics().job_done(Job::SegmentDeleted);
            self.metrics().reclaimed(record.object_bytes);
        }
        Ok(())
    }

    /// The bytes of `live` runs of `segment`, in order: one ranged GET from the first to the
    /// end of the last when that span is mostly live (a commit being moved, usually whole),
    /// else one per run.
    async fn fetch_runs(&self, segment: SegmentId, live: &[LiveRun]) -> Result<Vec<Bytes>> {
        let range = |run: &LiveRun| {
            let start = u64::from(run.entry.offset);
            start..start + u64::from(run.entry.length)
        };
        let (Some(first), Some(last)) = (live.first(), live.last()) else {
            return Ok(Vec::new());
        };
        let span = range(first).start..range(last).end;
        let live_bytes: u64 = live.iter().map(|r| u64::from(r.entry.length)).sum();
        let ordered = live
            .windows(2)
            .all(|w| range(&w[0]).end <= range(&w[1]).start);
        if ordered && span.end - span.start <= 2 * live_bytes {
            let whole = self
                .storage
                .get_segment_range(segment, span.clone())
                .await?;
            return Ok(live
                .iter()
                .map(|run| {
                    let r = range(run);
                    whole.slice((r.start - span.start) as usize..(r.end - span.start) as usize)
                })
                .collect());
        }
        Ok(stream::iter(live.iter())
            .map(|run| self.storage.get_segment_range(segment, range(run)))
            .buffered(STORE_CALLS_IN_FLIGHT)
            .try_collect()
            .await?)
    }

    /// Copy the live runs of `sources` (segments and their live runs) into one new
    /// segment and re-point their index entries at it, each only if its entry still equals
    /// its reference (unmoved, not dropped).
    async fn compact(&self, mut sources: Vec<(SegmentId, Vec<LiveRun>)>) -> Result<()> {
        // In the order they sit, so that a mostly live segment is read in one GET.
        for (_, live) in &mut sources {
            live.sort_by_key(|run| run.entry.offset);
        }
        let fetched: Vec<Vec<Bytes>> = stream::iter(sources.iter())
            .map(|(segment, live)| self.fetch_runs(*segment, live))
            .buffered(STORE_CALLS_IN_FLIGHT)
            .try_collect()
            .await?;
        let fetched = fetched.into_iter().flatten();
        let target = self.storage.new_segment_id();
        let mut payload = vec![format::encode_header(target)];
        let mut offset = HEADER_BYTES as u32;
        let runs = sources.len();
        let mut guards = Vec::new();
        let live = sources
            .into_iter()
            .flat_map(|(segment, live)| live.into_iter().map(move |run| (segment, run)));
        for ((segment, LiveRun { id, entry, value }), bytes) in live.zip(fetched) {
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
                debug!(sources = runs, to = %format!("{:032x}", target.0), moved, "segments compacted");
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

    /// Delete the objects of `page` (one page of the listing) that no segment record
    /// knows and that an earlier process wrote: a crash came between their PUT and their
    /// index write.
    async fn delete_orphans(&self, page: Vec<(SegmentId, u64)>) -> Result<()> {
        let durable = self.storage.log_durable();
        let candidates: Vec<(SegmentId, u64)> = page
            .into_iter()
            .filter(|(segment, _)| match segment.log_position() {
                Some(position) => position <= durable,
                None => !self.storage.is_this_boots(*segment),
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let known = self
            .storage
            .segment_records_exist(candidates.iter().map(|(id, _)| *id).collect())
            .await?;
        for ((segment, size), known) in candidates.into_iter().zip(known) {
            if !known {
                self.storage.delete_segment(segment).await?;
                debug!(segment = %format!("{:032x}", segment.0), size, "orphaned segment deleted");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit whose live runs take `bytes`, one run per MiB or less.
    fn commit(position: u64, bytes: u64) -> (SegmentId, Vec<LiveRun>) {
        let segment = SegmentId::log(position);
        let mut live = Vec::new();
        let (mut left, mut offset) = (bytes, HEADER_BYTES as u32);
        while left > 0 {
            let length = left.min(1 << 20) as u32;
            let entry = BatchEntry {
                segment,
                offset,
                length,
                first_seq_num: 0,
                record_count: 1,
                last_timestamp: 0,
                max_expiry_ms: None,
                metered_bytes: u64::from(length),
            };
            live.push(LiveRun {
                id: 1,
                entry,
                value: entry.encode(),
            });
            offset += length;
            left -= u64::from(length);
        }
        (segment, live)
    }

    fn sizes(objects: &[Vec<(SegmentId, Vec<LiveRun>)>]) -> Vec<u64> {
        objects
            .iter()
            .map(|sources| {
                sources
                    .iter()
                    .flat_map(|(_, live)| live.iter().map(|r| u64::from(r.entry.length)))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn moved_objects_are_filled_to_their_bound_and_never_past_it() {
        const MIB: u64 = 1 << 20;
        // 64 commits of 1 MiB fill one object exactly; the 65th starts another.
        let exact: Vec<_> = (1..=64).map(|p| commit(p, MIB)).collect();
        assert_eq!(sizes(&objects_of(exact, MOVE_OBJECT_BYTES)), [64 * MIB]);
        let over: Vec<_> = (1..=65).map(|p| commit(p, MIB)).collect();
        assert_eq!(sizes(&objects_of(over, MOVE_OBJECT_BYTES)), [64 * MIB, MIB]);
        // A commit never splits: one that would cross the bound starts the next object,
        // and one larger than the bound goes alone.
        let uneven = vec![
            commit(1, 40 * MIB),
            commit(2, 30 * MIB),
            commit(3, 70 * MIB),
            commit(4, MIB),
        ];
        assert_eq!(
            sizes(&objects_of(uneven, MOVE_OBJECT_BYTES)),
            [40 * MIB, 30 * MIB, 70 * MIB, MIB]
        );
    }
}

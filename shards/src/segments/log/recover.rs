//! Start-up, before any shard serves: fence the log, settle every position an earlier
//! writer may still write, and replay the commits after the durable watermark into the
//! index (decision 0011, parts 6 and 7).

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::PutPayload;
use slatedb::WriteBatch;

use super::commit::{self, Kind};
use super::committer::{put_run, LogStart};
use super::core::{RunInfo, COMMITS_IN_FLIGHT_MAX};
use super::replay::Replay;
use super::Watermark;
use crate::clock::Clock;
use crate::config::StorageClass;
use crate::error::{EngineError, Result, StorageError};
use crate::segments::index::{BatchEntry, SegmentRecord};
use crate::segments::SegmentId;
use crate::storage::{keys, Placed, Storage};
use crate::streamer::codec;

/// Positions after its fence that a starting writer settles with voids: more than any
/// writer has commits in flight, so an earlier writer still running meets the fence or a
/// void before it can write past them, and never acknowledges anything after the fence.
pub const FENCE_WINDOW: u64 = 64;
const _: () = assert!(FENCE_WINDOW > COMMITS_IN_FLIGHT_MAX as u64);

/// A log object's header and manifest.
type LogObject = (commit::Head, Vec<commit::Entry>);

/// Reads and writes of objects start-up has in flight at once.
const STARTUP_OBJECTS_IN_FLIGHT: usize = 16;

/// Fence the log, settle what an earlier writer may still write, replay what the index
/// lacks, and make it durable; returns where this writer's commits begin.
pub(crate) async fn recover(storage: &Storage, wall: &Clock) -> Result<LogStart> {
    let watermark = match storage.get(keys::log_watermark()).await? {
        Some(v) => {
            Watermark::decode(&v).ok_or_else(|| corrupt(&keys::log_watermark(), "watermark"))?
        }
        None => Watermark::default(),
    };
    // Take the position after the last one written; if another writer gets there first,
    // look again.
    let (fence, seen) = loop {
        let listed = storage.list_log(watermark.position).await?;
        let fence = listed.last().copied().unwrap_or(watermark.position) + 1;
        let object = commit::encode_marker_object(Kind::Fence, fence, fence);
        if let Placed::Created = storage.put_log(fence, PutPayload::from(object)).await? {
            break (fence, listed.into_iter().collect::<HashSet<u64>>());
        }
    };
    let last = fence + FENCE_WINDOW;
    let unseen = (watermark.position + 1..fence).filter(|p| !seen.contains(p));
    let settled: Vec<(u64, Placed)> = stream::iter(unseen.chain(fence + 1..=last))
        .map(|position| async move {
            let void = commit::encode_marker_object(Kind::Void, position, fence);
            let placed = storage.put_log(position, PutPayload::from(void)).await?;
            Ok::<_, StorageError>((position, placed))
        })
        .buffered(STARTUP_OBJECTS_IN_FLIGHT)
        .try_collect()
        .await?;
    tracing::info!(
        watermark = watermark.position,
        fence,
        voids = settled
            .iter()
            .filter(|(_, p)| *p == Placed::Created)
            .count(),
        "log fenced"
    );

    // Every position up to the fence now holds an object: replay them in order.
    let objects: Vec<(u64, Option<LogObject>)> = stream::iter(watermark.position + 1..fence)
        .map(|position| async move {
            Ok::<_, StorageError>((position, storage.read_log(position).await?))
        })
        .buffered(STARTUP_OBJECTS_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut replay: Replay<(u64, u32, commit::Entry)> = Replay::new(watermark.epoch);
    let mut tails: HashMap<u128, u64> = HashMap::new();
    let mut records: Vec<(u64, u64)> = Vec::new();
    for (position, object) in objects {
        let Some((head, entries)) = object else {
            // Settled above, so only a store that lost an object gets here.
            return Err(corrupt(
                &keys::segment(SegmentId::log(position).0),
                "log object missing",
            ));
        };
        let mut offset = head.runs_offset() as u64;
        let mut runs = Vec::with_capacity(entries.len());
        for entry in entries {
            if let std::collections::hash_map::Entry::Vacant(slot) = tails.entry(entry.stream_id) {
                slot.insert(durable_tail(storage, entry.stream_id).await?);
            }
            let info = RunInfo {
                stream: entry.stream_id,
                generation: 0,
                first_seq_num: entry.first_seq_num,
                record_count: entry.record_count,
                bytes: entry.length as usize,
                class: StorageClass::Express,
                oldest_ms: 0,
            };
            let at = offset as u32;
            offset += u64::from(entry.length);
            runs.push((info, (position, at, entry)));
        }
        records.push((position, offset));
        replay.object(head.kind, head.epoch, runs, |stream| {
            tails.get(&stream).copied().unwrap_or(0)
        });
    }

    let mut batch = WriteBatch::new();
    let mut replayed_runs = 0usize;
    for (stream, replayed) in replay.finish() {
        for (info, (position, offset, entry)) in &replayed.runs {
            let index = BatchEntry {
                segment: SegmentId::log(*position),
                offset: *offset,
                length: entry.length,
                first_seq_num: info.first_seq_num,
                record_count: info.record_count,
                last_timestamp: entry.last_timestamp,
                max_expiry_ms: entry.max_expiry_ms,
                metered_bytes: entry.metered_bytes,
            };
            put_run(&mut batch, stream, &index, entry);
            replayed_runs += 1;
        }
    }
    // Every settled position gets a segment record, so the sweep deletes what holds
    // nothing live (voids, fences, commits of fenced writers, failed ones).
    let written_ms = wall.now_millis();
    let mut record = |position: u64, object_bytes: u64| {
        let record = SegmentRecord {
            object_bytes,
            written_ms,
        };
        batch.put(keys::segment(SegmentId::log(position).0), record.encode());
    };
    for &(position, bytes) in &records {
        record(position, bytes);
    }
    record(fence, commit::HEADER_BYTES as u64);
    for &(position, placed) in &settled {
        if position > fence {
            let bytes = match placed {
                Placed::Created => commit::HEADER_BYTES as u64,
                Placed::Taken(head) => head.runs_offset() as u64,
            };
            record(position, bytes);
        }
    }
    batch.put(
        keys::log_watermark(),
        Watermark {
            position: last,
            epoch: fence,
        }
        .encode(),
    );
    storage.write(batch).await?;
    storage.set_log_durable(last);
    tracing::info!(
        from = watermark.position + 1,
        to = fence - 1,
        runs = replayed_runs,
        "log replayed"
    );
    Ok(LogStart {
        next_position: last + 1,
        epoch: fence,
    })
}

/// The tail of a stream's durable state; 0 for a stream never written.
async fn durable_tail(storage: &Storage, stream: u128) -> Result<u64> {
    let key = keys::stream_state(stream);
    match storage.get(key.clone()).await? {
        Some(v) => Ok(codec::decode_state(v)
            .map_err(|e| corrupt(&key, e.0))?
            .tail
            .seq_num),
        None => Ok(0),
    }
}

fn corrupt(key: &[u8], reason: &str) -> EngineError {
    EngineError::Storage(StorageError::Corrupt {
        key: key.to_vec(),
        reason: reason.to_owned(),
    })
}

/// What start-up found lost with a write-ahead store: commits whose object is gone while
/// the index still points into them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalLoss {
    /// The store is not the one the index was written with.
    pub replaced: bool,
    pub commits: u64,
    pub records: u64,
    pub streams: usize,
}

/// With a write-ahead store: count the bytes of the commits it holds, and drop from the
/// index every run of a commit whose object is no longer there (the store was lost or wiped while the server was stopped), so that the
/// server serves what the main store holds instead of failing reads into the gap; the
/// stream's tail stays where it was. Says in the log what was lost. Nothing to do when the
/// log lives with the data.
pub(crate) async fn forget_lost_commits(storage: &Storage) -> Result<WalLoss> {
    let mut loss = WalLoss::default();
    if !storage.has_wal() {
        return Ok(loss);
    }
    // The store and the index each keep the store's id: a store that lacks the id the
    // index has is not the one the index was written with (lost, wiped or replaced).
    let known = storage.get(keys::wal_store_id()).await?;
    let found = storage.wal_store_id().await?;
    let replaced = known.is_some() && found != known;
    if found.is_none() || replaced {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|_| EngineError::Unavailable("the OS random source failed"))?;
        let id = bytes::Bytes::copy_from_slice(&id);
        storage.set_wal_store_id(id.clone()).await?;
        let mut batch = WriteBatch::new();
        batch.put(keys::wal_store_id(), id);
        storage.write(batch).await?;
    } else if known.is_none() {
        let mut batch = WriteBatch::new();
        batch.put(keys::wal_store_id(), found.clone().unwrap_or_default());
        storage.write(batch).await?;
    }
    loss.replaced = replaced;
    let mut streams = HashSet::new();
    let log = keys::segment(SegmentId::log(0).0)..keys::segment(SegmentId::log(u64::MAX).0);
    let mut pages = crate::storage::Pages::new(log, crate::catalogue::LIST_LIMIT_MAX);
    while let Some(rows) = pages.next(storage).await? {
        let positions: Vec<(u64, u64)> = rows
            .iter()
            .filter_map(|(key, value)| {
                let position = SegmentId(keys::segment_id_of(key)?).log_position()?;
                Some((position, SegmentRecord::decode(value)?.object_bytes))
            })
            .collect();
        let found: Vec<(u64, bool)> = stream::iter(positions)
            .map(|(position, bytes)| async move {
                let found = storage.log_exists(position).await?;
                if found {
                    // What the committer counts the store's fill from.
                    storage.wal_counted(bytes, false);
                }
                Ok::<_, StorageError>((position, found))
            })
            .buffered(STARTUP_OBJECTS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (position, _) in found.into_iter().filter(|(_, found)| !found) {
            let segment = SegmentId::log(position);
            let mut batch = WriteBatch::new();
            let mut runs_lost = 0u64;
            let refs = keys::stream_id_range(keys::KeyKind::SegmentRef, segment.0);
            let mut runs = crate::storage::Pages::new(refs, crate::catalogue::LIST_LIMIT_MAX);
            while let Some(refs) = runs.next(storage).await? {
                for (key, value) in &refs {
                    let (Some(entry), Some((id, last))) =
                        (BatchEntry::decode(value), keys::segment_ref_entry(key))
                    else {
                        return Err(corrupt(key, "segment reference"));
                    };
                    batch.delete(key);
                    batch.delete(keys::batch_index(id, last));
                    batch.delete(keys::timestamp_index(
                        id,
                        entry.last_timestamp,
                        entry.first_seq_num,
                    ));
                    loss.records += u64::from(entry.record_count);
                    runs_lost += 1;
                    streams.insert(id);
                }
            }
            batch.delete(keys::segment(segment.0));
            storage.write(batch).await?;
            // A commit with nothing left in it (moved, and deleted but for its record) was
            // not lost.
            if runs_lost > 0 {
                loss.commits += 1;
            }
        }
    }
    loss.streams = streams.len();
    if loss.commits > 0 || loss.replaced {
        tracing::warn!(
            commits = loss.commits,
            records = loss.records,
            streams = loss.streams,
            replaced = loss.replaced,
            "the write-ahead store has lost commits that had not moved to the main store: \
             the records counted here are gone from their streams (each keeps its tail), \
             and with a lost or replaced store, so are any acknowledged in the last seconds \
             before the stop, which the index had not yet made durable; serving what the \
             main store holds"
        );
    }
    Ok(loss)
}

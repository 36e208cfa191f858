//! The committer: one task per server, on the storage sidecar, that writes every shard's
//! sealed runs to the log (decision 0011).
//!
//! Shards encode and seal runs on their own cores; the committer asks the shards that hold
//! open runs to seal them when a commit is due ([`core::due_ms`]), waits a little for
//! their answers, assembles one object from every answer by reference (no record byte is
//! copied or read here), and PUTs it create-only at the next log position. As PUTs finish,
//! in any order, the pure [`Core`] resolves commits in position order; for each, the
//! committer applies its index batch to SlateDB (the live runs' index entries,
//! references, timestamp entries, stream states and markers, the segment record and the
//! watermark: visible at once, durable on SlateDB's cadence) and only then sends every
//! shard the verdicts on its runs, which its streamers turn into acks or failures.
//!
//! Its work per commit is one header, one index value and a few keys per run; its memory is
//! the runs in flight, which the shards' admission budgets bound.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc as shard_mpsc;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use object_store::PutPayload;
use slatedb::WriteBatch;
use tokio::sync::mpsc;

use super::commit::{self, Kind};
use super::core::{
    Backlog, Cadence, Core, Outcome, Resolved, RunInfo, Verdict, COMMIT_TARGET_BYTES,
};
use super::Watermark;
use crate::clock::Clock;
use crate::config::StorageClass;
use crate::error::{EngineError, StorageError};
use crate::placement::ShardId;
use crate::segments::format;
use crate::segments::index::{BatchEntry, SegmentRecord};
use crate::segments::SegmentId;
use crate::storage::{keys, Placed, Storage};

/// How long the committer waits for the shards it asked to seal before it commits what
/// it has; a shard that answers later rides the next commit.
pub(crate) const SEAL_WAIT_MAX: Duration = Duration::from_millis(10);

/// How often a committer held back by a full write-ahead store looks again.
const WAL_FULL_RECHECK_MS: u64 = 20;

/// A run a shard sealed, with everything the commit and its index need.
pub(crate) struct SealedRun {
    /// The shard's own name for it, to tell it the verdict.
    pub id: u64,
    pub info: RunInfo,
    /// The run header (with its checksum) and its records.
    pub header: Bytes,
    pub chunks: Vec<Bytes>,
    /// Its manifest entry, and that entry encoded.
    pub entry: commit::Entry,
    pub entry_bytes: Bytes,
}

/// What a shard tells the committer.
pub(crate) enum ToCommitter {
    /// The runs it sealed when asked (perhaps none).
    Sealed {
        shard: ShardId,
        runs: Vec<SealedRun>,
    },
    /// It has failed its appends of `generation` of `stream` and resequenced: no run of
    /// that generation will come.
    Close { stream: u128, generation: u64 },
    /// It has open runs again: time to see when the next commit is due.
    Opened,
}

/// What the committer tells a shard.
pub(crate) enum ToShard {
    /// Seal the open runs and send them.
    Seal,
    /// The fate of runs the shard sealed, in the order their commits resolved.
    Verdicts(Vec<RunVerdict>),
}

pub(crate) struct RunVerdict {
    pub id: u64,
    pub outcome: Placement,
}

/// Where a run now lives (segment and offset), if it is live: indexed, to be acknowledged;
/// else why it failed.
pub(crate) type Placement = Result<(SegmentId, u32), EngineError>;

/// What a shard holds unsealed, for the committer to know when a commit is due without
/// asking. Written by the shard, read by the committer.
#[derive(Debug)]
pub(crate) struct OpenRuns {
    /// When the oldest open express (standard) append arrived, in the log's milliseconds;
    /// `u64::MAX` when there is none.
    express_since_ms: AtomicU64,
    standard_since_ms: AtomicU64,
    bytes: AtomicUsize,
}

impl Default for OpenRuns {
    fn default() -> OpenRuns {
        OpenRuns {
            express_since_ms: AtomicU64::new(u64::MAX),
            standard_since_ms: AtomicU64::new(u64::MAX),
            bytes: AtomicUsize::new(0),
        }
    }
}

impl OpenRuns {
    /// An append of `bytes` arrived at `now_ms`; returns whether the next commit may now
    /// be due sooner than the committer thinks (the first open run, or the first express
    /// one), so that it should look again.
    pub(crate) fn add(&self, class: StorageClass, now_ms: u64, bytes: usize) -> bool {
        let was_empty = self.is_empty();
        let since = match class {
            StorageClass::Express => &self.express_since_ms,
            StorageClass::Standard => &self.standard_since_ms,
        };
        let first_of_class = since.fetch_min(now_ms, Ordering::AcqRel) == u64::MAX;
        let bytes_before = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        let filled =
            bytes_before < COMMIT_TARGET_BYTES && bytes_before + bytes >= COMMIT_TARGET_BYTES;
        was_empty || (first_of_class && class == StorageClass::Express) || filled
    }

    pub(crate) fn clear(&self) {
        self.express_since_ms.store(u64::MAX, Ordering::Release);
        self.standard_since_ms.store(u64::MAX, Ordering::Release);
        self.bytes.store(0, Ordering::Release);
    }

    fn is_empty(&self) -> bool {
        self.express_since_ms.load(Ordering::Acquire) == u64::MAX
            && self.standard_since_ms.load(Ordering::Acquire) == u64::MAX
    }

    fn backlog(&self) -> Backlog {
        let mut backlog = Backlog {
            bytes: self.bytes.load(Ordering::Acquire),
            ..Backlog::default()
        };
        let express = self.express_since_ms.load(Ordering::Acquire);
        let standard = self.standard_since_ms.load(Ordering::Acquire);
        if express != u64::MAX {
            backlog.add(StorageClass::Express, express, 0);
        }
        if standard != u64::MAX {
            backlog.add(StorageClass::Standard, standard, 0);
        }
        backlog
    }
}

/// The log's clock: milliseconds since the committer started, on every thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogClock(Instant);

impl LogClock {
    pub(crate) fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    pub(crate) fn ms_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.0).as_millis() as u64
    }
}

/// One shard's end of the log: how it sends sealed runs and closes, what it announces,
/// and where the committer's messages arrive.
pub(crate) struct ShardLink {
    pub shard: ShardId,
    pub to_committer: mpsc::UnboundedSender<ToCommitter>,
    pub open: Arc<OpenRuns>,
    pub from_committer: shard_mpsc::UnboundedReceiver<ToShard>,
    pub clock: LogClock,
}

/// Where the log resumes after start-up replay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogStart {
    /// The position of the first commit.
    pub next_position: u64,
    /// This writer's epoch: the position of its fence.
    pub epoch: u64,
}

/// Start the committer on the sidecar; one link for each of `shard_count` shards.
pub(crate) fn start(
    storage: &Storage,
    wall: Clock,
    cadence: Cadence,
    wal_bytes_max: u64,
    shard_count: usize,
    from: LogStart,
) -> Vec<ShardLink> {
    let clock = LogClock(Instant::now());
    let (to_committer, inbox) = mpsc::unbounded_channel();
    let mut links = Vec::with_capacity(shard_count);
    let mut shards = Vec::with_capacity(shard_count);
    for shard in 0..shard_count {
        let (to_shard, from_committer) = shard_mpsc::unbounded();
        let open = Arc::new(OpenRuns::default());
        shards.push((to_shard, open.clone()));
        links.push(ShardLink {
            shard,
            to_committer: to_committer.clone(),
            open,
            from_committer,
            clock,
        });
    }
    let committer = Committer {
        storage: storage.clone(),
        core: Core::new(cadence, from.next_position),
        epoch: from.epoch,
        shards,
        clock,
        wall,
        wal_bytes_max,
        errors: Vec::new(),
    };
    storage.runtime().spawn(committer.run(inbox));
    links
}

type PutDone = (u64, Result<Placed, StorageError>);

struct Committer {
    storage: Storage,
    core: Core<SealedRun>,
    epoch: u64,
    shards: Vec<(shard_mpsc::UnboundedSender<ToShard>, Arc<OpenRuns>)>,
    clock: LogClock,
    /// The engine's wall clock, for segment records.
    wall: Clock,
    /// Past this many bytes in a write-ahead store, no commit starts until the mover has
    /// made room.
    wal_bytes_max: u64,
    /// Why commits failed, by position, until they resolve.
    errors: Vec<(u64, EngineError)>,
}

/// Shards asked to seal, and until when they are waited for.
struct Sealing {
    waiting_for: HashSet<ShardId>,
    until: tokio::time::Instant,
}

impl Committer {
    async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<ToCommitter>) {
        let mut puts = FuturesUnordered::new();
        let mut sealing: Option<Sealing> = None;
        let mut shards_gone = false;
        loop {
            if shards_gone && puts.is_empty() {
                return;
            }
            let wake_at = match &sealing {
                Some(s) if s.waiting_for.is_empty() => Some(tokio::time::Instant::now()),
                Some(s) => Some(s.until),
                None => self.due(shards_gone).map(|due_ms| {
                    let wait = due_ms.saturating_sub(self.clock.now_ms());
                    tokio::time::Instant::now() + Duration::from_millis(wait)
                }),
            };
            // Due now: act at once. A timer would round up to the next millisecond tick of
            // tokio's wheel, twice a commit, which on local storage is most of an ack.
            if wake_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                if let Some(put) = self.on_time(&mut sealing) {
                    puts.push(put);
                }
                continue;
            }
            let timer = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                message = inbox.recv(), if !shards_gone => match message {
                    Some(ToCommitter::Sealed { shard, runs }) => {
                        for run in runs {
                            let info = run.info;
                            self.core.submit(info, run);
                        }
                        if let Some(s) = &mut sealing {
                            s.waiting_for.remove(&shard);
                        }
                        self.fail_abandoned();
                    }
                    Some(ToCommitter::Close { stream, generation }) => {
                        self.core.close(stream, generation);
                    }
                    Some(ToCommitter::Opened) => {}
                    None => shards_gone = true,
                },
                Some((position, placed)) = puts.next(), if !puts.is_empty() => {
                    self.finish_put(position, placed).await;
                }
                () = timer => {
                    if let Some(put) = self.on_time(&mut sealing) {
                        puts.push(put);
                    }
                }
            }
        }
    }

    /// What to do when the timer is due: ask the shards with open runs to seal them, or,
    /// once they have answered or been waited for long enough (or none had any), commit.
    fn on_time(
        &mut self,
        sealing: &mut Option<Sealing>,
    ) -> Option<futures::future::BoxFuture<'static, PutDone>> {
        if self.wal_full() && !self.core.is_stopped() {
            // Sealed runs wait in the core; the timer comes from `due` again.
            *sealing = None;
            return None;
        }
        if sealing.take().is_none() {
            let asked = self.ask_to_seal();
            if !asked.is_empty() {
                *sealing = Some(Sealing {
                    waiting_for: asked,
                    until: tokio::time::Instant::now() + SEAL_WAIT_MAX,
                });
                return None;
            }
        }
        self.start_commit()
    }

    /// When the next commit is due, counting what shards hold open (nothing, once they
    /// are gone). Once fenced, open runs are asked for at once, to be failed.
    fn due(&self, shards_gone: bool) -> Option<u64> {
        let open = |(to_shard, open): &(shard_mpsc::UnboundedSender<ToShard>, Arc<OpenRuns>)| {
            !shards_gone && !to_shard.is_closed() && !open.is_empty()
        };
        if self.core.is_stopped() {
            return self.shards.iter().any(open).then_some(0);
        }
        if self.wal_full() {
            // Runs wait in the shards, and appends behind them for admission; look again.
            return self
                .shards
                .iter()
                .any(open)
                .then(|| self.clock.now_ms() + WAL_FULL_RECHECK_MS);
        }
        let unsealed = self
            .shards
            .iter()
            .filter(|s| open(s))
            .fold(Backlog::default(), |b, (_, open)| b.merge(open.backlog()));
        self.core.due_ms(unsealed)
    }

    fn wal_full(&self) -> bool {
        self.storage.wal_bytes() >= self.wal_bytes_max
    }

    /// Ask every shard with open runs to seal them; returns which were asked.
    fn ask_to_seal(&self) -> HashSet<ShardId> {
        let mut asked = HashSet::new();
        for (shard, (to_shard, open)) in self.shards.iter().enumerate() {
            if !open.is_empty() && to_shard.unbounded_send(ToShard::Seal).is_ok() {
                asked.insert(shard);
            }
        }
        asked
    }

    /// Start a commit of what waits: lay it out and PUT it.
    fn start_commit(&mut self) -> Option<futures::future::BoxFuture<'static, PutDone>> {
        let now_ms = self.clock.now_ms();
        let epoch = self.epoch;
        let (position, runs) = self.core.start(now_ms)?;
        let manifest: Vec<Bytes> = runs.iter().map(|(_, r)| r.entry_bytes.clone()).collect();
        let mut parts = Vec::with_capacity(2 + manifest.len() + runs.len() * 3);
        parts.push(commit::encode_header(
            Kind::Commit,
            position,
            epoch,
            &manifest,
        ));
        parts.extend(manifest);
        for (_, run) in runs {
            parts.push(run.header.clone());
            parts.extend(run.chunks.iter().cloned());
        }
        let payload: PutPayload = parts.into_iter().collect();
        let storage = self.storage.clone();
        Some(Box::pin(async move {
            (position, storage.put_log(position, payload).await)
        }))
    }

    async fn finish_put(&mut self, position: u64, placed: Result<Placed, StorageError>) {
        let outcome = match placed {
            Ok(Placed::Created) => Outcome::Written,
            // A retry of this writer's own PUT whose first answer was lost.
            Ok(Placed::Taken(head)) if head.kind == Kind::Commit && head.epoch == self.epoch => {
                Outcome::Written
            }
            Ok(Placed::Taken(head)) => {
                tracing::error!(
                    position,
                    epoch = head.epoch,
                    "another server has taken over the log: no more appends are acknowledged"
                );
                self.errors.push((
                    position,
                    EngineError::Unavailable("another server has taken over this store"),
                ));
                Outcome::Fenced
            }
            Err(e) => {
                self.errors.push((position, EngineError::from(e)));
                Outcome::Failed
            }
        };
        for resolved in self.core.complete(position, outcome) {
            self.index_and_answer(resolved).await;
        }
        self.fail_abandoned();
    }

    /// Once fenced, runs waiting for a commit will never get one: fail them.
    fn fail_abandoned(&mut self) {
        let abandoned = self.core.abandon_waiting();
        if abandoned.is_empty() {
            return;
        }
        let error = EngineError::Unavailable("another server has taken over this store");
        let verdicts = abandoned
            .into_iter()
            .map(|(_, run)| (run, Err(error.clone())))
            .collect();
        self.answer(verdicts);
    }

    /// Apply a resolved commit's index batch, then tell the shards.
    async fn index_and_answer(&mut self, resolved: Resolved<SealedRun>) {
        let Resolved {
            position,
            written,
            runs,
        } = resolved;
        let error = match self.errors.iter().position(|(p, _)| *p == position) {
            Some(i) => self.errors.swap_remove(i).1,
            None => EngineError::Unavailable("an earlier append of the stream failed"),
        };
        let segment = SegmentId::log(position);
        let manifest_len: usize = runs.iter().map(|(_, r, _)| r.entry_bytes.len()).sum();
        let mut offset = commit::HEADER_BYTES + manifest_len;
        let mut batch = WriteBatch::new();
        let mut verdicts = Vec::with_capacity(runs.len());
        for (info, run, verdict) in runs {
            let at = offset;
            offset += run.entry.length as usize;
            if verdict == Verdict::Failed {
                verdicts.push((run, Err(error.clone())));
                continue;
            }
            let entry = &run.entry;
            let index = BatchEntry {
                segment,
                offset: format::len32(at),
                length: entry.length,
                first_seq_num: entry.first_seq_num,
                record_count: entry.record_count,
                last_timestamp: entry.last_timestamp,
                max_expiry_ms: entry.max_expiry_ms,
                metered_bytes: entry.metered_bytes,
            };
            put_run(&mut batch, info.stream, &index, entry);
            verdicts.push((run, Ok((segment, format::len32(at)))));
        }
        let record = SegmentRecord {
            object_bytes: offset as u64,
            written_ms: self.wall.now_millis(),
        };
        batch.put(keys::segment(segment.0), record.encode());
        batch.put(
            keys::log_watermark(),
            Watermark {
                position,
                epoch: self.epoch,
            }
            .encode(),
        );
        if let Err(e) = self.storage.apply_index(batch, position).await {
            // SlateDB refuses writes only once it is closed, fenced, or has kept an upload
            // error as fatal: nothing more can be indexed, so nothing more is acknowledged
            // until a restart, which replays this commit and any other that landed. Its
            // appends may then appear: they are answered with a storage error, which
            // promises nothing.
            tracing::error!(error = %e, position, "applying the log's index failed");
            self.core.halt();
            let error = EngineError::from(e);
            for verdict in &mut verdicts {
                verdict.1 = Err(error.clone());
            }
        }
        debug_assert!(
            written || verdicts.iter().all(|(_, v)| v.is_err()),
            "only a written commit has live runs"
        );
        self.answer(verdicts);
    }

    /// Send each shard its verdicts, in order.
    fn answer(&self, verdicts: Vec<(SealedRun, Placement)>) {
        let mut per_shard: Vec<Vec<RunVerdict>> = self.shards.iter().map(|_| Vec::new()).collect();
        for (run, outcome) in verdicts {
            let shard = run_shard(&run);
            if let Some(list) = per_shard.get_mut(shard) {
                list.push(RunVerdict {
                    id: run.id,
                    outcome,
                });
            }
        }
        for ((to_shard, _), verdicts) in self.shards.iter().zip(per_shard) {
            if !verdicts.is_empty() {
                // A shard that has stopped has no one left to tell.
                let _ = to_shard.unbounded_send(ToShard::Verdicts(verdicts));
            }
        }
    }
}

/// Which shard sealed a run: the high 16 bits of its id.
fn run_shard(run: &SealedRun) -> ShardId {
    (run.id >> 48) as ShardId
}

/// A run id for shard `shard`'s `n`th run.
pub(crate) fn run_id(shard: ShardId, n: u64) -> u64 {
    (shard as u64) << 48 | (n & ((1 << 48) - 1))
}

/// The keys that index one run and account for it: its batch-index entry, its segment
/// reference, its timestamp entry, its stream's state after it and its markers.
pub(crate) fn put_run(
    batch: &mut WriteBatch,
    stream: u128,
    index: &BatchEntry,
    entry: &commit::Entry,
) {
    let last = index.last_seq_num();
    let value = index.encode();
    batch.put(keys::batch_index(stream, last), value.clone());
    batch.put(keys::segment_ref(index.segment.0, stream, last), value);
    batch.put(
        keys::timestamp_index(stream, index.last_timestamp, index.first_seq_num),
        b"",
    );
    batch.put(keys::stream_state(stream), entry.state.clone());
    for marker in &entry.markers {
        batch.put(marker, b"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_runs_tell_the_committer_when_a_commit_may_be_due_sooner() {
        let open = OpenRuns::default();
        assert!(open.is_empty());
        assert!(
            open.add(StorageClass::Standard, 10, 100),
            "the first open run"
        );
        assert!(!open.add(StorageClass::Standard, 20, 100), "nothing sooner");
        assert!(
            open.add(StorageClass::Express, 30, 100),
            "the first express one"
        );
        assert!(!open.add(StorageClass::Express, 40, 100), "nothing sooner");
        assert!(
            open.add(StorageClass::Standard, 50, COMMIT_TARGET_BYTES),
            "a full commit's worth"
        );
        let backlog = open.backlog();
        assert_eq!(backlog.oldest_standard_ms, Some(10));
        assert_eq!(backlog.oldest_express_ms, Some(30));
        assert_eq!(backlog.bytes, 400 + COMMIT_TARGET_BYTES);
        open.clear();
        assert!(open.is_empty());
        assert_eq!(open.backlog(), Backlog::default());
        // Standard runs alone count their bytes too.
        open.add(StorageClass::Standard, 60, 7);
        assert_eq!(open.backlog().bytes, 7);
    }

    #[test]
    fn run_ids_name_their_shard() {
        let run = |id| SealedRun {
            id,
            info: RunInfo {
                stream: 1,
                generation: 1,
                first_seq_num: 0,
                record_count: 1,
                bytes: 1,
                class: StorageClass::Express,
                oldest_ms: 0,
            },
            header: Bytes::new(),
            chunks: Vec::new(),
            entry: commit::Entry {
                length: 40,
                stream_id: 1,
                first_seq_num: 0,
                record_count: 1,
                last_timestamp: 0,
                max_expiry_ms: None,
                metered_bytes: 0,
                state: Bytes::new(),
                markers: Vec::new(),
            },
            entry_bytes: Bytes::new(),
        };
        assert_eq!(run_shard(&run(run_id(7, 12345))), 7);
        assert_eq!(run_shard(&run(run_id(0, u64::MAX))), 0);
    }
}

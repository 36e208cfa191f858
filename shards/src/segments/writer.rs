//! Each shard's half of the log: the open runs its streams' appends are encoded into, and
//! what becomes of them once the server's committer (`log::committer`) has their verdict.
//!
//! An append arrives already sequenced (by its streamer) as a [`Part`]: its records encoded
//! as run body chunks, and the stream state after it. Parts of one stream join that
//! stream's open run. When the committer asks, the shard seals its open runs: each gets its
//! run header (whose checksum covers its records: the shard reads the record bytes, the
//! committer never does) and its manifest entry, and goes to the committer. A run of a
//! generation that failed since it began is dropped instead: its appends were failed with
//! that generation.
//!
//! When a verdict comes back (in the order the commits resolved): a live run is durable
//! and indexed, so it joins the shard's cache of recent runs and its streamer acknowledges
//! its appends in order; a failed run fails its appends and everything its streamer has in
//! flight after them, which then resequences from its durable state, and the shard tells
//! the committer that the generation is closed (a late run of it can no longer come).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::StreamExt;

use super::format::{self, RUN_HEADER_BYTES};
use super::log::commit;
use super::log::committer::{self, LogClock, OpenRuns, SealedRun, ShardLink, ToCommitter, ToShard};
use super::log::core::RunInfo;
use super::reader::SegmentCache;
use crate::config::StorageClass;
use crate::error::EngineError;
use crate::metrics::ShardMetrics;
use crate::placement::ShardId;
use crate::streamer::codec::{self, StreamState};
use crate::streamer::Streamer;

/// Record bytes past which a stream's open run takes no more appends: the next starts a new
/// run in the same commit. A read fetches whole runs, so this bounds what one record
/// costs to read (a run holds at least one append, so it can be one append's size, at
/// most 1 MiB of metered bytes, above it). The size of a commit's target: at 1 MiB, runs
/// of large appends were cut at nearly every append and the 64 KiB entry of `make bench`
/// ran at 0.87x; at this size it is within noise of no cut at all.
pub const RUN_BYTES_MAX: usize = 8 << 20;

/// What one append hands the writer once its streamer has sequenced it.
pub(crate) struct Part {
    pub streamer: Rc<RefCell<Streamer>>,
    pub stream_id: u128,
    /// The streamer's generation when it sequenced this append.
    pub generation: u64,
    pub ticket: u64,
    pub class: StorageClass,
    pub first_seq_num: u64,
    pub record_count: u32,
    pub chunks: Vec<Bytes>,
    pub bytes: usize,
    /// The append's metered size.
    pub metered_bytes: u64,
    pub last_timestamp: u64,
    pub expires_at_ms: Option<u64>,
    /// The stream state once this append is durable.
    pub state: StreamState,
    /// Empty-valued keys that become durable with the append (trim and delete-on-empty
    /// markers).
    pub markers: Vec<Bytes>,
}

/// One stream's open records, until the shard seals them.
struct Run {
    streamer: Rc<RefCell<Streamer>>,
    stream_id: u128,
    generation: u64,
    class: StorageClass,
    first_seq_num: u64,
    record_count: u32,
    chunks: Vec<Bytes>,
    bytes: usize,
    metered_bytes: u64,
    last_timestamp: u64,
    /// `None` once any record in the run never expires.
    max_expiry_ms: Option<u64>,
    tickets: Vec<u64>,
    /// When each ticket's append reached the writer, for the append-to-durable latency.
    arrived: Vec<Instant>,
    state: StreamState,
    markers: Vec<Bytes>,
}

impl Run {
    fn new(part: Part) -> Run {
        Run {
            streamer: part.streamer,
            stream_id: part.stream_id,
            generation: part.generation,
            class: part.class,
            first_seq_num: part.first_seq_num,
            record_count: part.record_count,
            chunks: part.chunks,
            bytes: part.bytes,
            metered_bytes: part.metered_bytes,
            last_timestamp: part.last_timestamp,
            max_expiry_ms: part.expires_at_ms,
            tickets: vec![part.ticket],
            arrived: vec![Instant::now()],
            state: part.state,
            markers: part.markers,
        }
    }

    fn extend(&mut self, part: Part) {
        debug_assert_eq!(
            self.first_seq_num + u64::from(self.record_count),
            part.first_seq_num,
            "a run is dense"
        );
        self.record_count += part.record_count;
        self.chunks.extend(part.chunks);
        self.bytes += part.bytes;
        self.metered_bytes += part.metered_bytes;
        self.last_timestamp = part.last_timestamp;
        self.max_expiry_ms = match (self.max_expiry_ms, part.expires_at_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        // A stream's class may change under it; the most urgent one wins.
        if part.class == StorageClass::Express {
            self.class = StorageClass::Express;
        }
        self.tickets.push(part.ticket);
        self.arrived.push(Instant::now());
        self.state = part.state;
        self.markers.extend(part.markers);
    }

    fn is_current(&self) -> bool {
        self.streamer.borrow().generation() == self.generation
    }
}

/// A run handed to the committer, until its verdict.
struct Sealed {
    streamer: Rc<RefCell<Streamer>>,
    stream_id: u128,
    generation: u64,
    tickets: Vec<u64>,
    arrived: Vec<Instant>,
    chunks: Vec<Bytes>,
}

/// The writer a shard's streamers hand their appends to.
pub(crate) struct SegmentWriter {
    shard: ShardId,
    open: RefCell<Vec<Run>>,
    by_stream: RefCell<HashMap<u128, usize>>,
    sealed: RefCell<HashMap<u64, Sealed>>,
    runs_sealed: Cell<u64>,
    to_committer: tokio::sync::mpsc::UnboundedSender<ToCommitter>,
    /// What the committer sees of the open runs.
    announced: Arc<OpenRuns>,
    clock: LogClock,
}

impl SegmentWriter {
    /// The shard's writer, and its task that answers the committer.
    pub(crate) fn start(
        link: ShardLink,
        cache: Rc<RefCell<SegmentCache>>,
        metrics: Rc<ShardMetrics>,
    ) -> Rc<SegmentWriter> {
        let writer = Rc::new(SegmentWriter {
            shard: link.shard,
            open: RefCell::new(Vec::new()),
            by_stream: RefCell::new(HashMap::new()),
            sealed: RefCell::new(HashMap::new()),
            runs_sealed: Cell::new(0),
            to_committer: link.to_committer,
            announced: link.open,
            clock: link.clock,
        });
        glommio::spawn_local(serve(
            Rc::downgrade(&writer),
            link.from_committer,
            cache,
            metrics,
        ))
        .detach();
        writer
    }

    /// Add a sequenced append to its stream's open run. Never waits.
    pub(crate) fn append(&self, part: Part) {
        let now_ms = self.clock.now_ms();
        if self.announced.add(part.class, now_ms, part.bytes) {
            let _ = self.to_committer.send(ToCommitter::Opened);
        }
        let mut open = self.open.borrow_mut();
        let mut by_stream = self.by_stream.borrow_mut();
        match by_stream.get(&part.stream_id) {
            // A full run stays as it is and the stream starts another, so that no read
            // fetches more than about a run's bound for one record.
            Some(&i)
                if open[i].generation == part.generation
                    && open[i].bytes + part.bytes > RUN_BYTES_MAX =>
            {
                by_stream.insert(part.stream_id, open.len());
                open.push(Run::new(part));
            }
            Some(&i) if open[i].generation == part.generation => open[i].extend(part),
            Some(&i) => {
                // The stream failed and resequenced from its durable tail since this run
                // began: what the run holds was already failed, so it is dropped.
                open[i] = Run::new(part);
            }
            None => {
                by_stream.insert(part.stream_id, open.len());
                open.push(Run::new(part));
            }
        }
    }

    /// Seal the open runs and hand them to the committer (none, if none are open: it is
    /// waiting for the answer).
    fn seal(&self) {
        let open = std::mem::take(&mut *self.open.borrow_mut());
        self.by_stream.borrow_mut().clear();
        self.announced.clear();
        let mut runs = Vec::with_capacity(open.len());
        let mut sealed = self.sealed.borrow_mut();
        for run in open {
            if !run.is_current() {
                continue;
            }
            let header = format::encode_run_header(
                run.stream_id,
                run.first_seq_num,
                run.record_count,
                &run.chunks,
            );
            let length = RUN_HEADER_BYTES + run.bytes;
            let entry = commit::Entry {
                length: format::len32(length),
                stream_id: run.stream_id,
                first_seq_num: run.first_seq_num,
                record_count: run.record_count,
                last_timestamp: run.last_timestamp,
                max_expiry_ms: run.max_expiry_ms,
                metered_bytes: run.metered_bytes,
                state: codec::encode_state(&run.state),
                markers: run.markers,
            };
            let entry_bytes = entry.encode();
            let n = self.runs_sealed.get();
            self.runs_sealed.set(n + 1);
            let id = committer::run_id(self.shard, n);
            let info = RunInfo {
                stream: run.stream_id,
                generation: run.generation,
                first_seq_num: run.first_seq_num,
                record_count: run.record_count,
                bytes: length + entry_bytes.len(),
                class: run.class,
                oldest_ms: run
                    .arrived
                    .first()
                    .map_or_else(|| self.clock.now_ms(), |&t| self.clock.ms_of(t)),
            };
            sealed.insert(
                id,
                Sealed {
                    streamer: run.streamer,
                    stream_id: run.stream_id,
                    generation: run.generation,
                    tickets: run.tickets,
                    arrived: run.arrived,
                    chunks: run.chunks.clone(),
                },
            );
            runs.push(SealedRun {
                id,
                info,
                header,
                chunks: run.chunks,
                entry,
                entry_bytes,
            });
        }
        let _ = self.to_committer.send(ToCommitter::Sealed {
            shard: self.shard,
            runs,
        });
    }

    /// Act on the committer's verdicts, in their order.
    fn settle(
        &self,
        verdicts: Vec<committer::RunVerdict>,
        cache: &RefCell<SegmentCache>,
        metrics: &ShardMetrics,
    ) {
        for verdict in verdicts {
            let Some(run) = self.sealed.borrow_mut().remove(&verdict.id) else {
                continue;
            };
            let current = run.streamer.borrow().generation() == run.generation;
            match verdict.outcome {
                Ok((segment, offset)) => {
                    debug_assert!(current, "a live run is of its stream's generation");
                    cache.borrow_mut().insert(segment, offset, run.chunks);
                    if current {
                        run.streamer.borrow_mut().complete(&run.tickets, Ok(()));
                    }
                    for arrived in &run.arrived {
                        metrics.durable(arrived.elapsed());
                    }
                }
                Err(error) => {
                    if current {
                        run.streamer.borrow_mut().complete(&run.tickets, Err(error));
                    }
                    let _ = self.to_committer.send(ToCommitter::Close {
                        stream: run.stream_id,
                        generation: run.generation,
                    });
                }
            }
        }
    }

    /// Fail every run handed to the committer that has no verdict yet: the committer is
    /// gone.
    fn fail_sealed(&self) {
        let sealed: Vec<Sealed> = self.sealed.borrow_mut().drain().map(|(_, s)| s).collect();
        let error = EngineError::Unavailable("the log's committer has stopped");
        for run in sealed {
            if run.streamer.borrow().generation() == run.generation {
                run.streamer
                    .borrow_mut()
                    .complete(&run.tickets, Err(error.clone()));
            }
        }
    }
}

/// The shard's side of the conversation with the committer.
async fn serve(
    writer: std::rc::Weak<SegmentWriter>,
    mut from_committer: mpsc::UnboundedReceiver<ToShard>,
    cache: Rc<RefCell<SegmentCache>>,
    metrics: Rc<ShardMetrics>,
) {
    while let Some(message) = from_committer.next().await {
        let Some(writer) = writer.upgrade() else {
            return;
        };
        match message {
            ToShard::Seal => writer.seal(),
            ToShard::Verdicts(verdicts) => writer.settle(verdicts, &cache, &metrics),
        }
    }
    if let Some(writer) = writer.upgrade() {
        writer.fail_sealed();
    }
}

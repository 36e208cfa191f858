//! Each shard's segment writer: the open segment its streams' appends are encoded into, and
//! the group commit that makes them durable.
//!
//! An append arrives already sequenced (by its streamer) as a [`Part`]: its records encoded
//! as run body chunks, and the stream state after it. Parts of one stream join that
//! stream's run in the open segment. The committer, one task per shard, then:
//!
//! 1. seals the open segment and PUTs it (`PutMode::Create`) as soon as nothing is waiting
//!    for a PUT or an index write and its oldest append has waited the configured linger
//!    (zero by default), or at once when it reaches [`SEGMENT_TARGET_BYTES`] (up to
//!    [`SEGMENT_PUTS_IN_FLIGHT_MAX`] PUTs at a time);
//! 2. writes, in segment order and one write at a time, the index entries, references,
//!    stream states and segment records of every segment whose PUT has finished, as one
//!    durable SlateDB batch;
//! 3. completes each run's appends, which the streamers acknowledge in order.
//!
//! So an ack means: its segment is durable, and so is the index entry that points into it.
//!
//! Failure: a PUT that fails fails every append in the segment; their streamers fail what
//! they have in flight after them and bump their generation, and runs of an older
//! generation are never indexed, nor a stream's runs behind its failed one in the same
//! index write, so a later segment cannot put a record behind a gap. An
//! index write that fails fails its appends the same way, and because it may still have
//! landed, the next index write deletes its entries and restores those streams' durable
//! state. A segment that failed either way gets a segment record anyway, so the reclaimer
//! deletes the object if it exists.
//!
//! Back of the envelope for the size bound: an S3 PUT costs about $5 per million and takes
//! tens of milliseconds plus size over bandwidth; at 8 MiB a shard at 1 GB/s issues ~125
//! PUTs a second (~$2.25/hour) and each upload takes ~100 ms at ~80 MB/s per connection,
//! so four in flight keep up. Under light load segments are as small as what arrived
//! during the previous commit, which keeps an idle server's ack one PUT plus one index
//! write long. Every commit is two object writes (the segment and SlateDB's WAL), so on a
//! store that bills per request the linger trades ack latency for fewer, larger segments.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use object_store::PutPayload;
use slatedb::WriteBatch;

use super::format::{self, HEADER_BYTES, RUN_HEADER_BYTES};
use super::index::{BatchEntry, SegmentRecord};
use super::reader::SegmentCache;
use super::SegmentId;
use crate::clock::Clock;
use crate::error::{EngineError, Result, StorageError};
use crate::metrics::ShardMetrics;
use crate::storage::{keys, Storage};
use crate::streamer::codec::{self, StreamState};
use crate::streamer::Streamer;

/// A segment is sealed and PUT once this many bytes are waiting, even while other PUTs of
/// the shard are in flight.
pub const SEGMENT_TARGET_BYTES: usize = 8 << 20;
/// PUTs one shard has in flight at once.
pub const SEGMENT_PUTS_IN_FLIGHT_MAX: usize = 4;
/// A segment is sealed at this size whatever is in flight, so offsets fit in 32 bits. Only
/// an admission budget far above the default lets an open segment grow this large.
pub const SEGMENT_BYTES_MAX: usize = 256 << 20;

/// What one append hands the writer once its streamer has sequenced it.
pub(crate) struct Part {
    pub streamer: Rc<RefCell<Streamer>>,
    pub stream_id: u128,
    /// The streamer's generation when it sequenced this append (see the module docs).
    pub generation: u64,
    pub ticket: u64,
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

/// One stream's records in one segment.
struct Run {
    streamer: Rc<RefCell<Streamer>>,
    stream_id: u128,
    generation: u64,
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
        self.tickets.push(part.ticket);
        self.arrived.push(Instant::now());
        self.state = part.state;
        self.markers.extend(part.markers);
    }

    fn is_current(&self) -> bool {
        let s = self.streamer.borrow();
        s.generation() == self.generation
    }

    fn complete(&self, result: Result<()>) {
        self.streamer.borrow_mut().complete(&self.tickets, result);
    }
}

#[derive(Default)]
struct OpenSegment {
    runs: Vec<Run>,
    by_stream: HashMap<u128, usize>,
    bytes: usize,
    /// When the oldest append still in it arrived.
    since: Option<Instant>,
}

struct Sealed {
    id: SegmentId,
    runs: Vec<(Run, BatchEntry)>,
    record: SegmentRecord,
}

/// Index keys of a run whose index write failed and may yet have landed.
struct Ambiguous {
    streamer: Rc<RefCell<Streamer>>,
    stream_id: u128,
    keys: [Bytes; 3],
}

/// The writer a shard's streamers hand their appends to.
pub(crate) struct SegmentWriter {
    open: RefCell<OpenSegment>,
    wake: RefCell<mpsc::Sender<()>>,
}

impl SegmentWriter {
    /// Start the shard's writer and its committer task.
    pub(crate) fn start(
        storage: Storage,
        clock: Clock,
        cache: Rc<RefCell<SegmentCache>>,
        linger: Duration,
        metrics: Rc<ShardMetrics>,
    ) -> Rc<SegmentWriter> {
        let (wake, woken) = mpsc::channel(1);
        let writer = Rc::new(SegmentWriter {
            open: RefCell::new(OpenSegment::default()),
            wake: RefCell::new(wake),
        });
        let committer = Committer {
            writer: writer.clone(),
            storage,
            clock,
            cache,
            linger,
            metrics,
            puts: FuturesOrdered::new(),
            resolved: Vec::new(),
            indexing: None,
            unrecorded: Vec::new(),
            ambiguous: Vec::new(),
        };
        glommio::spawn_local(committer.run(woken)).detach();
        writer
    }

    /// Add a sequenced append to the open segment. Never waits; the committer picks it up.
    pub(crate) fn append(&self, part: Part) {
        let mut open = self.open.borrow_mut();
        open.bytes += part.bytes;
        open.since.get_or_insert_with(Instant::now);
        let open = &mut *open;
        match open.by_stream.get(&part.stream_id) {
            Some(&i) if open.runs[i].generation == part.generation => open.runs[i].extend(part),
            Some(&i) => {
                // The stream failed and resequenced from its durable tail since this run
                // began: what the run holds was already failed, so it is dropped.
                open.bytes -= open.runs[i].bytes;
                open.runs[i] = Run::new(part);
            }
            None => {
                open.by_stream.insert(part.stream_id, open.runs.len());
                open.runs.push(Run::new(part));
            }
        }
        // A full channel means a wakeup is already pending.
        let _ = self.wake.borrow_mut().try_send(());
    }
}

type PutDone = (Sealed, std::result::Result<(), StorageError>);

/// What the index write in flight carries, to finish it with.
struct IndexJob {
    runs: Vec<(Run, BatchEntry)>,
    records: Vec<(SegmentId, SegmentRecord)>,
    ambiguous: Vec<Ambiguous>,
    write: LocalBoxFuture<'static, std::result::Result<(), StorageError>>,
}

struct Committer {
    writer: Rc<SegmentWriter>,
    storage: Storage,
    clock: Clock,
    cache: Rc<RefCell<SegmentCache>>,
    linger: Duration,
    metrics: Rc<ShardMetrics>,
    puts: FuturesOrdered<LocalBoxFuture<'static, PutDone>>,
    /// Segments whose PUT finished, in segment order, waiting for the index write.
    resolved: Vec<PutDone>,
    indexing: Option<IndexJob>,
    /// Segment records still to write: of failed PUTs and failed index writes.
    unrecorded: Vec<(SegmentId, SegmentRecord)>,
    ambiguous: Vec<Ambiguous>,
}

enum Event {
    Indexed(std::result::Result<(), StorageError>),
    Put(PutDone),
    Woken,
    Lingered,
    Stopped,
}

impl Committer {
    async fn run(mut self, mut woken: mpsc::Receiver<()>) {
        loop {
            let lingering_until = self.start_puts();
            self.start_index();
            let event = {
                let indexing = &mut self.indexing;
                let puts = &mut self.puts;
                let index_done = async move {
                    match indexing {
                        Some(job) => (&mut job.write).await,
                        None => futures::future::pending().await,
                    }
                }
                .fuse();
                let put_done = async move {
                    match puts.next().await {
                        Some(done) => done,
                        None => futures::future::pending().await,
                    }
                }
                .fuse();
                let wake = woken.next().fuse();
                let lingered = async move {
                    match lingering_until {
                        Some(at) => {
                            glommio::timer::sleep(at.saturating_duration_since(Instant::now()))
                                .await
                        }
                        None => futures::future::pending().await,
                    }
                }
                .fuse();
                futures::pin_mut!(index_done, put_done, wake, lingered);
                futures::select_biased! {
                    result = index_done => Event::Indexed(result),
                    done = put_done => Event::Put(done),
                    signal = wake => if signal.is_some() { Event::Woken } else { Event::Stopped },
                    () = lingered => Event::Lingered,
                }
            };
            match event {
                Event::Indexed(result) => self.finish_index(result),
                Event::Put(done) => {
                    if done.1.is_ok() {
                        let mut cache = self.cache.borrow_mut();
                        for (run, entry) in &done.0.runs {
                            cache.insert(entry.segment, entry.offset, run.chunks.clone());
                        }
                    }
                    self.resolved.push(done);
                }
                Event::Woken | Event::Lingered => {}
                Event::Stopped => return,
            }
        }
    }

    /// Seal and PUT what is due; returns when the open segment's linger ends, if that is
    /// all it waits for.
    fn start_puts(&mut self) -> Option<Instant> {
        loop {
            let (open_bytes, since, runs_waiting) = {
                let open = self.writer.open.borrow();
                (open.bytes, open.since, !open.runs.is_empty())
            };
            let idle = self.puts.is_empty() && self.resolved.is_empty();
            let full =
                open_bytes >= SEGMENT_TARGET_BYTES && self.puts.len() < SEGMENT_PUTS_IN_FLIGHT_MAX;
            if !runs_waiting || !(idle || full || open_bytes >= SEGMENT_BYTES_MAX) {
                return None;
            }
            let lingered_at = since.map(|t| t + self.linger);
            if let Some(at) = lingered_at.filter(|&at| idle && !full && at > Instant::now()) {
                return Some(at);
            }
            let open = std::mem::take(&mut *self.writer.open.borrow_mut());
            let (sealed, payload) = self.seal(open);
            let storage = self.storage.clone();
            self.puts.push_back(Box::pin(async move {
                let result = storage.put_segment(sealed.id, payload).await;
                (sealed, result)
            }));
        }
    }

    /// Lay out the open segment's runs behind a header, and locate each one.
    fn seal(&self, open: OpenSegment) -> (Sealed, PutPayload) {
        let id = self.storage.new_segment_id();
        let mut payload = vec![format::encode_header(id)];
        let mut offset = HEADER_BYTES;
        let mut runs = Vec::with_capacity(open.runs.len());
        for run in open.runs {
            let header = format::encode_run_header(
                run.stream_id,
                run.first_seq_num,
                run.record_count,
                &run.chunks,
            );
            let length = RUN_HEADER_BYTES + run.bytes;
            let entry = BatchEntry {
                segment: id,
                offset: offset as u32,
                length: length as u32,
                first_seq_num: run.first_seq_num,
                record_count: run.record_count,
                last_timestamp: run.last_timestamp,
                max_expiry_ms: run.max_expiry_ms,
                metered_bytes: run.metered_bytes,
            };
            payload.push(header);
            payload.extend(run.chunks.iter().cloned());
            offset += length;
            runs.push((run, entry));
        }
        debug_assert!(
            offset <= u32::MAX as usize,
            "segment offsets fit in 32 bits"
        );
        let record = SegmentRecord {
            object_bytes: offset as u64,
            written_ms: self.clock.now_millis(),
        };
        (Sealed { id, runs, record }, payload.into_iter().collect())
    }

    /// Index every segment whose PUT finished, in order, in one durable write.
    fn start_index(&mut self) {
        if self.indexing.is_some() || self.resolved.is_empty() {
            return;
        }
        let mut records = std::mem::take(&mut self.unrecorded);
        let mut live = Vec::new();
        // Streams with a run in a failed PUT of this pass. The failure is released (and
        // their generation bumped) only once their earlier runs, indexed by this very
        // write, complete; until then their later runs still look current, so they are
        // left out here: indexing one would put records behind the gap.
        let mut failed: HashSet<u128> = HashSet::new();
        for (sealed, result) in std::mem::take(&mut self.resolved) {
            records.push((sealed.id, sealed.record));
            match result {
                Err(e) => {
                    let error = EngineError::from(e);
                    for (run, _) in &sealed.runs {
                        if run.is_current() {
                            failed.insert(run.stream_id);
                            run.complete(Err(error.clone()));
                        }
                    }
                }
                // Checked in segment order, after any earlier failure has bumped the
                // generations of the streams it failed.
                Ok(()) => live.extend(
                    sealed
                        .runs
                        .into_iter()
                        .filter(|(run, _)| run.is_current() && !failed.contains(&run.stream_id)),
                ),
            }
        }
        let ambiguous = std::mem::take(&mut self.ambiguous);
        let mut batch = WriteBatch::new();
        for a in &ambiguous {
            for key in &a.keys {
                batch.delete(key);
            }
            let s = a.streamer.borrow();
            if !s.is_deleted() {
                batch.put(
                    keys::stream_state(a.stream_id),
                    codec::encode_state(s.durable_state()),
                );
            }
        }
        for (id, record) in &records {
            batch.put(keys::segment(id.0), record.encode());
        }
        let mut runs = Vec::with_capacity(live.len());
        // Paired with the reader's check that a stream's index entries never overlap.
        let mut next_seq_num: HashMap<u128, u64> = HashMap::new();
        for (run, entry) in live {
            let id = run.stream_id;
            let last = entry.last_seq_num();
            if cfg!(debug_assertions) {
                let expected = *next_seq_num
                    .entry(id)
                    .or_insert_with(|| run.streamer.borrow().durable_tail().seq_num);
                debug_assert_eq!(
                    run.first_seq_num, expected,
                    "a run is indexed right after what is durable"
                );
                next_seq_num.insert(id, entry.end_seq_num());
            }
            // The reference holds the index entry's value (`segments::index`).
            let value = entry.encode();
            batch.put(keys::batch_index(id, last), value.clone());
            batch.put(keys::segment_ref(entry.segment.0, id, last), value);
            batch.put(
                keys::timestamp_index(id, entry.last_timestamp, entry.first_seq_num),
                b"",
            );
            batch.put(keys::stream_state(id), codec::encode_state(&run.state));
            for marker in &run.markers {
                batch.put(marker, b"");
            }
            runs.push((run, entry));
        }
        let storage = self.storage.clone();
        self.indexing = Some(IndexJob {
            runs,
            records,
            ambiguous,
            write: Box::pin(async move { storage.write(batch).await }),
        });
    }

    fn finish_index(&mut self, result: std::result::Result<(), StorageError>) {
        let Some(job) = self.indexing.take() else {
            return;
        };
        match result {
            Ok(()) => {
                for (run, _) in &job.runs {
                    run.complete(Ok(()));
                    for arrived in &run.arrived {
                        self.metrics.durable(arrived.elapsed());
                    }
                }
            }
            Err(e) => {
                let error = EngineError::from(e);
                self.unrecorded.extend(job.records);
                self.ambiguous.extend(job.ambiguous);
                for (run, entry) in job.runs {
                    run.complete(Err(error.clone()));
                    let (id, last) = (run.stream_id, entry.last_seq_num());
                    let keys = [
                        keys::batch_index(id, last),
                        keys::segment_ref(entry.segment.0, id, last),
                        keys::timestamp_index(id, entry.last_timestamp, entry.first_seq_num),
                    ];
                    self.ambiguous.push(Ambiguous {
                        streamer: run.streamer,
                        stream_id: run.stream_id,
                        keys,
                    });
                }
            }
        }
    }
}

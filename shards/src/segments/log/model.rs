//! The commit core and replay together, over random interleavings, against an independent
//! model of what clients were told.
//!
//! Streamers on two shards sequence appends into open runs; shards seal them and hand them
//! to the core through a FIFO each, as the mesh would; the core starts commits whose PUTs
//! finish in any order (written, failed without landing, failed but landed all the same,
//! or met a newer writer); resolved commits are indexed (a SlateDB model whose durable
//! prefix advances on flushes) before their verdicts go back to the shards through a FIFO
//! each, where streamers acknowledge in order or fail what they have in flight, resequence,
//! and close the failed generation. Then the process crashes: PUTs in flight land or not,
//! and replay runs over the positions above the durable watermark.
//!
//! What must hold, at every step and after replay:
//! - acknowledgements of a stream are in order and dense, each only after its commit was
//!   written and its run indexed; nothing is acknowledged after the writer was fenced;
//! - the index holds only live runs, dense per stream;
//! - after replay, every stream starts with exactly its acknowledged records, and anything
//!   after them is records of appends that were answered with a failure or never answered,
//!   each at most once.

use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::commit::Kind;
use super::core::{Cadence, Core, Outcome, RunInfo, Verdict};
use super::replay::Replay;
use crate::config::StorageClass;

const STREAMS: usize = 3;
const SHARDS: usize = 2;
const EPOCH: u64 = 1;

fn shard_of(stream: usize) -> usize {
    stream % SHARDS
}

#[derive(Debug, Clone)]
enum Step {
    Append { stream: usize, records: usize },
    Seal { shard: usize },
    Deliver { shard: usize },
    Start,
    Finish { pick: usize, fate: Fate },
    Complete { shard: usize },
    Flush,
}

#[derive(Debug, Clone, Copy)]
enum Fate {
    Written,
    FailedAbsent,
    /// Reported failed (a timeout, a lost answer) but the object is there.
    FailedLanded,
    Fenced,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..STREAMS, 1usize..4).prop_map(|(stream, records)| Step::Append { stream, records }),
        3 => (0..SHARDS).prop_map(|shard| Step::Seal { shard }),
        4 => (0..SHARDS).prop_map(|shard| Step::Deliver { shard }),
        2 => Just(Step::Start),
        4 => (0usize..4, prop_oneof![
            12 => Just(Fate::Written),
            2 => Just(Fate::FailedAbsent),
            2 => Just(Fate::FailedLanded),
            1 => Just(Fate::Fenced),
        ]).prop_map(|(pick, fate)| Step::Finish { pick, fate }),
        5 => (0..SHARDS).prop_map(|shard| Step::Complete { shard }),
        1 => Just(Step::Flush),
    ]
}

/// A sealed run: the records it holds and the appends they came in.
#[derive(Debug, Clone)]
struct Payload {
    records: Vec<u64>,
    appends: Vec<usize>,
}

struct Append {
    id: usize,
    first: u64,
    records: Vec<u64>,
}

struct OpenRun {
    generation: u64,
    first: u64,
    payload: Payload,
}

#[derive(Default)]
struct Streamer {
    generation: u64,
    assigned: u64,
    durable: u64,
    in_flight: VecDeque<Append>,
    open: Option<OpenRun>,
    /// What clients were told was acknowledged, record by record.
    acked: Vec<u64>,
}

enum ToCore {
    Run(RunInfo, Payload),
    Close(u128, u64),
}

struct World {
    next_generation: u64,
    next_record: u64,
    next_append: usize,
    streamers: Vec<Streamer>,
    to_core: Vec<VecDeque<ToCore>>,
    to_shard: Vec<VecDeque<(RunInfo, Payload, Verdict)>>,
    core: Core<Payload>,
    puts: Vec<(u64, Vec<(RunInfo, Payload)>)>,
    /// Objects in the store, by position.
    objects: HashMap<u64, Vec<(RunInfo, Payload)>>,
    /// Index batches applied, in order: (position, live runs).
    index: Vec<(u64, Vec<(RunInfo, Payload)>)>,
    durable_batches: usize,
    /// Runs indexed per stream, in order (what readers would find).
    indexed: Vec<Vec<(RunInfo, Payload)>>,
    /// Each append's records.
    records_of: HashMap<usize, Vec<u64>>,
    /// Appends answered with a failure.
    failed: HashSet<usize>,
    /// The lowest position whose PUT met a newer writer.
    fenced_at: Option<u64>,
    now_ms: u64,
}

impl World {
    fn new() -> World {
        let mut world = World {
            next_generation: 1,
            next_record: 0,
            next_append: 0,
            streamers: (0..STREAMS).map(|_| Streamer::default()).collect(),
            to_core: (0..SHARDS).map(|_| VecDeque::new()).collect(),
            to_shard: (0..SHARDS).map(|_| VecDeque::new()).collect(),
            core: Core::new(Cadence::Bucket, 1),
            puts: Vec::new(),
            objects: HashMap::new(),
            index: Vec::new(),
            durable_batches: 0,
            indexed: (0..STREAMS).map(|_| Vec::new()).collect(),
            records_of: HashMap::new(),
            failed: HashSet::new(),
            fenced_at: None,
            now_ms: 0,
        };
        for s in 0..STREAMS {
            world.streamers[s].generation = world.take_generation();
        }
        world
    }

    fn take_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn apply(&mut self, step: Step) {
        self.now_ms += 1;
        match step {
            Step::Append { stream, records } => self.append(stream, records),
            Step::Seal { shard } => self.seal(shard),
            Step::Deliver { shard } => match self.to_core[shard].pop_front() {
                Some(ToCore::Run(info, payload)) => self.core.submit(info, payload),
                Some(ToCore::Close(stream, generation)) => self.core.close(stream, generation),
                None => {}
            },
            Step::Start => {
                if let Some((position, runs)) = self.core.start(self.now_ms) {
                    let runs = runs.to_vec();
                    self.puts.push((position, runs));
                }
            }
            Step::Finish { pick, fate } => {
                if self.puts.is_empty() {
                    return;
                }
                let (position, runs) = self.puts.remove(pick % self.puts.len());
                let outcome = match fate {
                    Fate::Written => Outcome::Written,
                    Fate::FailedAbsent => Outcome::Failed,
                    Fate::FailedLanded => Outcome::Failed,
                    Fate::Fenced => Outcome::Fenced,
                };
                if matches!(fate, Fate::Written | Fate::FailedLanded) {
                    self.objects.insert(position, runs);
                }
                if matches!(fate, Fate::Fenced) {
                    self.fenced_at = Some(self.fenced_at.map_or(position, |f| f.min(position)));
                }
                for resolved in self.core.complete(position, outcome) {
                    self.index_and_answer(resolved.position, resolved.written, resolved.runs);
                }
            }
            Step::Complete { shard } => {
                if let Some((info, payload, verdict)) = self.to_shard[shard].pop_front() {
                    self.verdict(info, payload, verdict);
                }
            }
            Step::Flush => self.durable_batches = self.index.len(),
        }
        // Once fenced, what waits for a commit will never get one.
        for (info, payload) in self.core.abandon_waiting() {
            let shard = shard_of(info.stream as usize);
            self.to_shard[shard].push_back((info, payload, Verdict::Failed));
        }
    }

    fn append(&mut self, stream: usize, count: usize) {
        let records: Vec<u64> = (0..count as u64).map(|i| self.next_record + i).collect();
        self.next_record += count as u64;
        let id = self.next_append;
        self.next_append += 1;
        self.records_of.insert(id, records.clone());
        let s = &mut self.streamers[stream];
        let first = s.assigned;
        s.assigned += count as u64;
        s.in_flight.push_back(Append {
            id,
            first,
            records: records.clone(),
        });
        match &mut s.open {
            Some(open) if open.generation == s.generation => {
                open.payload.records.extend(&records);
                open.payload.appends.push(id);
            }
            _ => {
                s.open = Some(OpenRun {
                    generation: s.generation,
                    first,
                    payload: Payload {
                        records,
                        appends: vec![id],
                    },
                })
            }
        }
    }

    fn seal(&mut self, shard: usize) {
        for stream in (0..STREAMS).filter(|&s| shard_of(s) == shard) {
            let s = &mut self.streamers[stream];
            let Some(open) = s.open.take() else { continue };
            // A run of a failed generation is dropped: its appends were failed already.
            if open.generation != s.generation {
                continue;
            }
            let info = RunInfo {
                stream: stream as u128,
                generation: open.generation,
                first_seq_num: open.first,
                record_count: open.payload.records.len() as u32,
                bytes: open.payload.records.len(),
                class: StorageClass::Express,
                oldest_ms: self.now_ms,
            };
            self.to_core[shard].push_back(ToCore::Run(info, open.payload));
        }
    }

    /// A resolved commit: its live runs are indexed (one batch with the watermark), and
    /// only then do its verdicts go back to the shards.
    fn index_and_answer(
        &mut self,
        position: u64,
        written: bool,
        runs: Vec<(RunInfo, Payload, Verdict)>,
    ) {
        let mut live = Vec::new();
        for (info, payload, verdict) in runs {
            if verdict == Verdict::Live {
                assert!(written, "a live run's commit was written");
                assert!(
                    self.fenced_at.is_none_or(|f| position < f),
                    "nothing at or after a fenced position is live"
                );
                let indexed = &mut self.indexed[info.stream as usize];
                let end = indexed.last().map_or(0, |(i, _)| i.end_seq_num());
                assert_eq!(info.first_seq_num, end, "the index is dense");
                indexed.push((info, payload.clone()));
                live.push((info, payload.clone()));
            }
            self.to_shard[shard_of(info.stream as usize)].push_back((info, payload, verdict));
        }
        self.index.push((position, live));
    }

    fn verdict(&mut self, info: RunInfo, payload: Payload, verdict: Verdict) {
        let stream = info.stream as usize;
        let generation = {
            let s = &self.streamers[stream];
            s.generation
        };
        match verdict {
            Verdict::Live => {
                assert_eq!(
                    info.generation, generation,
                    "a live run reaches a streamer of its generation"
                );
                let s = &mut self.streamers[stream];
                for &id in &payload.appends {
                    let append = s.in_flight.pop_front().expect("acked append in flight");
                    assert_eq!(append.id, id, "acks go out in order");
                    assert_eq!(append.first, s.durable, "acks are dense");
                    s.durable += append.records.len() as u64;
                    s.acked.extend(&append.records);
                }
                let indexed: Vec<u64> = self.indexed[stream]
                    .iter()
                    .flat_map(|(_, p)| p.records.clone())
                    .collect();
                assert!(
                    indexed.starts_with(&s.acked),
                    "an ack goes out only after its run is indexed"
                );
            }
            Verdict::Failed => {
                if info.generation == generation {
                    let next = self.take_generation();
                    let s = &mut self.streamers[stream];
                    for append in s.in_flight.drain(..) {
                        self.failed.insert(append.id);
                    }
                    s.generation = next;
                    s.assigned = s.durable;
                }
                let shard = shard_of(stream);
                self.to_core[shard].push_back(ToCore::Close(info.stream, info.generation));
            }
        }
    }

    /// The process dies: PUTs in flight land or not, then replay over what is above the
    /// durable watermark. Returns each stream's records after replay.
    fn crash_and_replay(self, landing: &[bool]) -> (Vec<Vec<u64>>, World) {
        let mut objects = self.objects.clone();
        for (i, (position, runs)) in self.puts.iter().enumerate() {
            if landing.get(i).copied().unwrap_or(false) {
                objects.insert(*position, runs.clone());
            }
        }
        let durable = &self.index[..self.durable_batches];
        let watermark = durable.last().map_or(0, |(p, _)| *p);
        let mut durable_runs: Vec<Vec<(RunInfo, Payload)>> =
            (0..STREAMS).map(|_| Vec::new()).collect();
        for (_, runs) in durable {
            for (info, payload) in runs {
                durable_runs[info.stream as usize].push((*info, payload.clone()));
            }
        }
        let durable_tail = |stream: u128| {
            durable_runs[stream as usize]
                .last()
                .map_or(0, |(i, _)| i.end_seq_num())
        };
        let mut replay = Replay::new(EPOCH);
        let highest = objects.keys().copied().max().unwrap_or(0);
        for position in watermark + 1..=highest {
            match objects.get(&position) {
                Some(runs) => replay.object(Kind::Commit, EPOCH, runs.clone(), durable_tail),
                None => replay.object(Kind::Void, 0, Vec::new(), durable_tail),
            }
        }
        let replayed = replay.finish();
        let mut after = Vec::new();
        for (stream, runs) in durable_runs.iter().enumerate() {
            let mut records: Vec<u64> = runs.iter().flat_map(|(_, p)| p.records.clone()).collect();
            if let Some(r) = replayed.get(&(stream as u128)) {
                assert_eq!(r.durable_tail, records.len() as u64);
                let mut at = r.durable_tail;
                for (info, payload) in &r.runs {
                    assert_eq!(info.first_seq_num, at, "replayed runs are dense");
                    at = info.end_seq_num();
                    records.extend(&payload.records);
                }
            }
            after.push(records);
        }
        (after, self)
    }
}

fn check_after_replay(world: &World, after: &[Vec<u64>]) {
    let append_of: HashMap<u64, usize> = world
        .records_of
        .iter()
        .flat_map(|(&append, records)| records.iter().map(move |&r| (r, append)))
        .collect();
    let acked: HashSet<u64> = world
        .streamers
        .iter()
        .flat_map(|s| s.acked.iter().copied())
        .collect();
    for (stream, records) in after.iter().enumerate() {
        let stream_acked = &world.streamers[stream].acked;
        assert!(
            records.starts_with(stream_acked),
            "stream {stream}: acknowledged records lost or moved: {records:?}, acknowledged \
             {stream_acked:?}"
        );
        let mut seen = HashSet::new();
        for r in records {
            assert!(
                seen.insert(*r),
                "stream {stream}: record {r} twice: {records:?}"
            );
        }
        for r in &records[stream_acked.len()..] {
            assert!(
                !acked.contains(r),
                "stream {stream}: acknowledged record {r} after the acknowledged prefix"
            );
            let append = append_of[r];
            let unanswered = world.streamers[stream]
                .in_flight
                .iter()
                .any(|a| a.id == append);
            assert!(
                world.failed.contains(&append) || unanswered,
                "stream {stream}: record {r} of append {append}, which was neither failed \
                 nor in flight, follows the acknowledged prefix"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn acks_index_and_replay_agree(
        steps in prop::collection::vec(step(), 1..160),
        landing in prop::collection::vec(any::<bool>(), 16),
    ) {
        let mut world = World::new();
        for step in steps {
            world.apply(step);
        }
        let (after, world) = world.crash_and_replay(&landing);
        check_after_replay(&world, &after);
    }
}

//! The process stops at each step of a commit, and of start-up replay, and the same store
//! is opened again (decision 0011).
//!
//! Each run acknowledges some appends, then stops at one step with more in flight:
//! - before the PUT: commits fail without landing;
//! - with the PUT landed but unanswered: commits land, and are reported failed;
//! - with the index applied but not durable: commits land and are acknowledged, and
//!   SlateDB never makes their index durable;
//! - halfway through replay: the next start fences and settles the log, then cannot read
//!   it and gives up, and the start after it replays.
//!
//! Every stop ends the process with nothing more made durable (SlateDB's uploads fail from
//! then on, as if it had died). Then, on the same objects: every acknowledged record is
//! there byte for byte at its place, anything after them is records of appends that were
//! answered with a failure (which promises nothing) or never answered, nothing appears
//! twice, and appends continue at the tail.

mod common;

use common::faulty_store::{Fault, FaultyStore};

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::ObjectStore;
use sluice_shards::config::{BasinConfig, StreamConfigSpec};
use sluice_shards::executors::spawn_shards;
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord, SequencedRecord};
use sluice_shards::storage::{Sidecar, DB_PATH};
use sluice_shards::streamer::AutoCreate;
use sluice_shards::{EngineError, EngineOptions, Shard};

const STREAMS: usize = 3;
const ACKED_FIRST: usize = 8;
const THEN: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    BeforeThePut,
    PutLandedUnanswered,
    IndexNotDurable,
    HalfwayThroughReplay,
}

fn basin() -> BasinName {
    "crash-points".parse().unwrap()
}

fn stream(i: usize) -> StreamName {
    format!("s{i}").parse().unwrap()
}

fn body(stream: usize, n: usize) -> Bytes {
    Bytes::from(format!("s{stream}-append-{n}"))
}

fn batch(stream: usize, n: usize) -> AppendBatch {
    let record = AppendRecord {
        timestamp: None,
        headers: Vec::new(),
        body: body(stream, n),
    };
    AppendBatch::new(vec![record], None, None).unwrap()
}

/// What a stream's client was told: bodies acknowledged, in order, and bodies answered
/// with an error or not at all.
#[derive(Debug, Default, Clone)]
struct Told {
    acked: Vec<Bytes>,
    not_acked: HashSet<Bytes>,
}

async fn append_all(shard: &Rc<Shard>, from: usize, count: usize, told: &mut [Told]) {
    let mut pending = Vec::new();
    for n in from..from + count {
        for (i, t) in told.iter_mut().enumerate() {
            match shard
                .append(basin(), stream(i), batch(i, n), None, AutoCreate::No)
                .await
            {
                Ok(p) => pending.push((i, n, p)),
                Err(_) => {
                    t.not_acked.insert(body(i, n));
                }
            }
        }
    }
    for (i, n, p) in pending {
        match p.wait().await {
            Ok(_) => told[i].acked.push(body(i, n)),
            Err(e) => {
                assert!(
                    matches!(e, EngineError::Storage(_) | EngineError::Unavailable(_)),
                    "an append that reached a commit is answered with a storage error: {e}"
                );
                told[i].not_acked.insert(body(i, n));
            }
        }
    }
}

/// Run until `stop`, and end the process there; what each stream's client was told.
fn run_until(store: Arc<FaultyStore>, stop: Stop) -> Vec<Told> {
    let (fault, hold_wal) = (store.fault.clone(), store.hold_wal.clone());
    common::on_one_shard(store, EngineOptions::default(), move |shard| {
        let (fault, hold_wal) = (fault.clone(), hold_wal.clone());
        async move {
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            for i in 0..STREAMS {
                shard
                    .create_stream(basin(), stream(i), StreamConfigSpec::default(), None)
                    .await
                    .unwrap();
            }
            let mut told = vec![Told::default(); STREAMS];
            append_all(&shard, 0, ACKED_FIRST, &mut told).await;
            for t in &told {
                assert_eq!(t.acked.len(), ACKED_FIRST, "acknowledged before the stop");
            }
            let step = match stop {
                Stop::BeforeThePut => Fault::SegmentPutFails,
                Stop::PutLandedUnanswered => Fault::SegmentPutLies,
                Stop::IndexNotDurable | Stop::HalfwayThroughReplay => {
                    hold_wal.store(true, Ordering::SeqCst);
                    Fault::None
                }
            };
            fault.store(step as u8, Ordering::SeqCst);
            append_all(&shard, ACKED_FIRST, THEN, &mut told).await;
            // The process ends here: nothing more of SlateDB becomes durable.
            fault.store(Fault::IndexWriteFails as u8, Ordering::SeqCst);
            hold_wal.store(false, Ordering::SeqCst);
            told
        }
    })
}

/// Start on `store` and expect the start to fail.
fn start_fails(store: Arc<dyn ObjectStore>) -> String {
    let sidecar = Sidecar::open_with_store(store, DB_PATH, 2).expect("open storage");
    let error = match spawn_shards(1, sidecar.storage(), EngineOptions::default(), |_| async {}) {
        Ok(handles) => {
            for h in handles {
                let _ = h.join();
            }
            panic!("the start succeeded");
        }
        Err(e) => e.to_string(),
    };
    let _ = sidecar.close();
    error
}

fn check(stop: Stop) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = Arc::new(FaultyStore::new(inner.clone(), Arc::new(AtomicU8::new(0))));
    let told = run_until(store, stop);
    match stop {
        Stop::BeforeThePut | Stop::PutLandedUnanswered => {
            for t in &told {
                assert_eq!(
                    t.acked.len(),
                    ACKED_FIRST,
                    "{stop:?}: nothing after the stop is acknowledged"
                );
            }
        }
        Stop::IndexNotDurable | Stop::HalfwayThroughReplay => {
            for t in &told {
                assert_eq!(
                    t.acked.len(),
                    ACKED_FIRST + THEN,
                    "{stop:?}: acknowledged without a durable index"
                );
            }
        }
    }
    if stop == Stop::HalfwayThroughReplay {
        let faulty = Arc::new(FaultyStore::new(
            inner.clone(),
            Arc::new(AtomicU8::new(Fault::GetFails as u8)),
        ));
        let error = start_fails(faulty);
        assert!(error.contains("recovering the log"), "{error}");
    }

    let (stored, appended): (Vec<Vec<SequencedRecord>>, Vec<u64>) =
        common::on_one_shard(inner, EngineOptions::default(), |shard| async move {
            let mut stored = Vec::new();
            let mut appended = Vec::new();
            for i in 0..STREAMS {
                let records = common::read_from(&shard, basin(), stream(i), 0).await;
                let tail = shard
                    .check_tail(basin(), stream(i), AutoCreate::No)
                    .await
                    .unwrap()
                    .seq_num;
                assert_eq!(
                    tail,
                    records.len() as u64,
                    "the tail is where the records end"
                );
                let ack = shard
                    .append(basin(), stream(i), batch(i, 1000), None, AutoCreate::No)
                    .await
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
                assert_eq!(ack.start.seq_num, tail, "appends continue at the tail");
                stored.push(records);
                appended.push(ack.start.seq_num);
            }
            (stored, appended)
        });
    for (i, (records, t)) in stored.iter().zip(&told).enumerate() {
        let bodies: Vec<Bytes> = records.iter().map(|r| r.body.clone()).collect();
        assert!(
            bodies.starts_with(&t.acked),
            "{stop:?}: stream {i} lost or moved acknowledged records: {bodies:?}"
        );
        for (seq, r) in records.iter().enumerate() {
            assert_eq!(r.seq_num, seq as u64, "{stop:?}: stream {i} is dense");
        }
        let mut seen = HashSet::new();
        for b in &bodies {
            assert!(
                seen.insert(b.clone()),
                "{stop:?}: stream {i} holds {b:?} twice"
            );
        }
        for b in &bodies[t.acked.len()..] {
            assert!(
                t.not_acked.contains(b),
                "{stop:?}: stream {i} holds {b:?}, which no client was told failed"
            );
        }
        if stop == Stop::BeforeThePut {
            assert_eq!(bodies, t.acked, "{stop:?}: what never landed cannot appear");
        }
        assert_eq!(appended[i], records.len() as u64);
    }
}

#[test]
fn a_stop_before_the_put() {
    check(Stop::BeforeThePut);
}

#[test]
fn a_stop_with_the_put_landed_but_unanswered() {
    check(Stop::PutLandedUnanswered);
}

#[test]
fn a_stop_with_the_index_applied_but_not_durable() {
    check(Stop::IndexNotDurable);
}

#[test]
fn a_stop_halfway_through_replay() {
    check(Stop::HalfwayThroughReplay);
}

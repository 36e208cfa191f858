//! The segment log against a faulty object store, and reclaiming its space.
//!
//! Faults: a segment PUT that fails, one that lands but reports failure, an index write
//! that fails, and ranged GETs that fail or return short or damaged bytes. What must hold
//! for each: a clear error, acknowledgements a dense prefix, nothing unacknowledged
//! visible after reopening, no panic. Reclaiming: trims, expiry, stream and basin deletion
//! each bring the store's segment objects and bytes back down.

mod common;

use common::faulty_store::{Fault, FaultyStore, SEGMENTS_ROOT};

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::path::Path;
use slatedb::object_store::{ObjectMeta, ObjectStore};
use sluice_shards::catalogue::StreamMeta;
use sluice_shards::clock::Clock;
use sluice_shards::config::{BasinConfig, RetentionPolicy, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord, Header, SequencedRecord};
use sluice_shards::segments::index::BatchEntry;
use sluice_shards::segments::{RUN_BYTES_MAX, STANDARD_LINGER_MS, SWEEP_SEGMENTS_PER_TICK};
use sluice_shards::storage::keys::{self, KeyKind};
use sluice_shards::storage::Storage;
use sluice_shards::streamer::{AutoCreate, ReadItem, ReadLimits, ReadRequest, ReadStart};
use sluice_shards::{EngineError, EngineOptions, Shard, StorageError};

const STREAMS: usize = 8;
const ACKED_FIRST: usize = 5;
const IN_FLIGHT: usize = 10;

fn basin() -> BasinName {
    "segment-basin".parse().unwrap()
}

fn stream(i: usize) -> StreamName {
    format!("s{i}").parse().unwrap()
}

fn body(stream: usize, seq: usize) -> Bytes {
    Bytes::from(format!("stream-{stream}-record-{seq}"))
}

fn batch(stream: usize, seq: usize) -> AppendBatch {
    let record = AppendRecord {
        timestamp: None,
        headers: Vec::new(),
        body: body(stream, seq),
    };
    AppendBatch::new(vec![record], None, None).unwrap()
}

fn big_batch(fill: u8) -> AppendBatch {
    let record = AppendRecord {
        timestamp: None,
        headers: vec![Header {
            name: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        }],
        body: Bytes::from(vec![fill; 256 << 10]),
    };
    AppendBatch::new(vec![record], None, None).unwrap()
}

async fn setup(shard: &Rc<Shard>, spec: StreamConfigSpec, streams: usize) {
    let _ = shard
        .create_basin(basin(), BasinConfig::default(), None)
        .await;
    for i in 0..streams {
        shard
            .create_stream(basin(), stream(i), spec.clone(), None)
            .await
            .unwrap();
    }
}

async fn append_now(shard: &Rc<Shard>, i: usize, b: AppendBatch) -> Result<u64, EngineError> {
    let pending = shard
        .append(basin(), stream(i), b, None, AutoCreate::No)
        .await?;
    pending.wait().await.map(|ack| ack.start.seq_num)
}

fn faulty(fault: &Arc<AtomicU8>) -> (Arc<dyn ObjectStore>, Arc<FaultyStore>) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = Arc::new(FaultyStore::new(inner.clone(), fault.clone()));
    (inner, store)
}

/// Per stream: the results of `ACKED_FIRST` appends, then of `IN_FLIGHT` more submitted
/// together across all streams while `fault` holds; then the tails, then (with the fault
/// cleared) one more append per stream.
type Outcome = (
    Vec<Vec<Result<u64, EngineError>>>,
    Vec<u64>,
    Vec<Result<u64, EngineError>>,
);

fn run_under_fault(store: Arc<dyn ObjectStore>, fault: Arc<AtomicU8>, kind: Fault) -> Outcome {
    common::on_one_shard(store, EngineOptions::default(), move |shard| {
        let fault = fault.clone();
        async move {
            setup(&shard, StreamConfigSpec::default(), STREAMS).await;
            let mut results: Vec<Vec<_>> = vec![Vec::new(); STREAMS];
            for seq in 0..ACKED_FIRST {
                for (i, r) in results.iter_mut().enumerate() {
                    r.push(append_now(&shard, i, batch(i, seq)).await);
                }
            }
            fault.store(kind as u8, Ordering::SeqCst);
            let mut pending = Vec::new();
            for seq in ACKED_FIRST..ACKED_FIRST + IN_FLIGHT {
                for i in 0..STREAMS {
                    let p = shard
                        .append(basin(), stream(i), batch(i, seq), None, AutoCreate::No)
                        .await;
                    pending.push((i, p));
                }
            }
            for (i, p) in pending {
                results[i].push(match p {
                    Ok(p) => p.wait().await.map(|a| a.start.seq_num),
                    Err(e) => Err(e),
                });
            }
            let mut tails = Vec::new();
            for i in 0..STREAMS {
                let tail = shard
                    .check_tail(basin(), stream(i), AutoCreate::No)
                    .await
                    .unwrap();
                tails.push(tail.seq_num);
            }
            fault.store(Fault::None as u8, Ordering::SeqCst);
            let mut after = Vec::new();
            for (i, &tail) in tails.iter().enumerate() {
                after.push(append_now(&shard, i, batch(i, tail as usize)).await);
            }
            (results, tails, after)
        }
    })
}

fn read_all(store: Arc<dyn ObjectStore>) -> Vec<Vec<SequencedRecord>> {
    common::on_one_shard(store, EngineOptions::default(), |shard| async move {
        let mut out = Vec::new();
        for i in 0..STREAMS {
            out.push(common::read_from(&shard, basin(), stream(i), 0).await);
        }
        out
    })
}

/// The checks every commit fault shares: the failed appends and everything after them
/// fail with storage errors, the tail falls back, appending resumes at the durable tail
/// once the store works again, and after reopening each stream holds exactly what was
/// acknowledged (a failed commit is never indexed, and the live server's index batch,
/// durable at the close, carries the watermark past it).
fn check_write_fault(kind: Fault) -> Arc<FaultyStore> {
    let fault = Arc::new(AtomicU8::new(0));
    let (inner, store) = faulty(&fault);
    let (results, tails, after) = run_under_fault(store.clone(), fault, kind);
    let mut acked = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let n = r.iter().take_while(|r| r.is_ok()).count();
        assert!(
            n >= ACKED_FIRST,
            "{kind:?}: appends before the fault were acknowledged"
        );
        assert!(
            n < r.len(),
            "{kind:?}: the fault failed stream {i}'s appends in flight"
        );
        assert!(
            r[n..]
                .iter()
                .all(|r| matches!(r, Err(EngineError::Storage(_)))),
            "{kind:?}: after a failure only storage errors follow: {r:?}"
        );
        for (seq, result) in r[..n].iter().enumerate() {
            assert_eq!(
                result.as_ref().ok(),
                Some(&(seq as u64)),
                "{kind:?}: acks dense"
            );
        }
        assert_eq!(
            tails[i], n as u64,
            "{kind:?}: the tail fell back to the durable one"
        );
        assert_eq!(
            after[i].as_ref().ok(),
            Some(&(n as u64)),
            "{kind:?}: appending resumes at the durable tail: {:?}",
            after[i]
        );
        acked.push(n + 1);
    }
    let stored = read_all(inner);
    for (i, records) in stored.iter().enumerate() {
        assert!(
            records.len() >= acked[i],
            "{kind:?}: stream {i} lost acknowledged records"
        );
        assert_eq!(
            records.len(),
            acked[i],
            "{kind:?}: stream {i} shows unacknowledged records"
        );
        for (seq, r) in records.iter().enumerate() {
            assert_eq!(r.seq_num, seq as u64, "{kind:?}: no gap, no duplicate");
            assert_eq!(r.body, body(i, seq), "{kind:?}: byte for byte");
        }
    }
    store
}

#[test]
fn a_failed_segment_put_fails_its_appends_and_hides_them() {
    check_write_fault(Fault::SegmentPutFails);
}

#[test]
fn a_segment_put_that_lands_but_reports_failure_is_never_read_and_is_reclaimed() {
    let store = check_write_fault(Fault::SegmentPutLies);
    let lied = store.lied_about.lock().unwrap().clone();
    assert!(!lied.is_empty(), "the fault hit segment PUTs");
    // The store reopened by `read_all` sweeps what it finds; give it a run of its own.
    let inner = store.inner.clone();
    let left = common::on_one_shard(inner.clone(), EngineOptions::default(), move |_shard| {
        let (inner, lied) = (inner.clone(), lied.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let names = segment_names(&inner).await;
                let left: Vec<_> = lied
                    .iter()
                    .filter(|p| names.contains(*p))
                    .cloned()
                    .collect();
                if left.is_empty() || Instant::now() > deadline {
                    return left;
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    assert!(
        left.is_empty(),
        "objects of failed PUTs were never reclaimed: {left:?}"
    );
}

#[test]
fn damaged_or_failed_reads_are_clear_errors() {
    let fault = Arc::new(AtomicU8::new(0));
    let (_inner, store) = faulty(&fault);
    let options = EngineOptions {
        // Every read goes to the store.
        segment_cache_bytes: 0,
        ..EngineOptions::default()
    };
    let outcomes = common::on_one_shard(store, options, move |shard| {
        let fault = fault.clone();
        async move {
            setup(&shard, StreamConfigSpec::default(), 1).await;
            for fill in 0..4u8 {
                append_now(&shard, 0, big_batch(fill)).await.unwrap();
            }
            let mut outcomes = Vec::new();
            for kind in [
                Fault::GetFails,
                Fault::GetTruncated,
                Fault::GetCorrupt,
                Fault::None,
            ] {
                fault.store(kind as u8, Ordering::SeqCst);
                outcomes.push((kind, read_result(&shard).await));
            }
            outcomes
        }
    });
    for (kind, outcome) in outcomes {
        match kind {
            Fault::None => {
                let records = outcome.expect("reads work again once the store does");
                assert_eq!(records.len(), 4);
                for (i, r) in records.iter().enumerate() {
                    assert_eq!(r.body, Bytes::from(vec![i as u8; 256 << 10]));
                }
            }
            Fault::GetFails => assert!(
                matches!(
                    outcome,
                    Err(EngineError::Storage(StorageError::ObjectStore(_)))
                ),
                "{kind:?}: {outcome:?}"
            ),
            _ => assert!(
                matches!(
                    outcome,
                    Err(EngineError::Storage(StorageError::Corrupt { .. }))
                ),
                "{kind:?}: {outcome:?}"
            ),
        }
    }
}

async fn read_result(shard: &Rc<Shard>) -> Result<Vec<SequencedRecord>, EngineError> {
    let request = ReadRequest {
        start: ReadStart::SeqNum(0),
        clamp: true,
        limits: ReadLimits {
            count: Some(100),
            ..Default::default()
        },
        wait: None,
        key: None,
    };
    let mut session = shard
        .read(basin(), stream(0), request, AutoCreate::No)
        .await?;
    let mut out = Vec::new();
    while let Some(item) = session.items.next().await {
        match item {
            ReadItem::Batch(b) => out.extend(b.records),
            ReadItem::Heartbeat(_) => {}
            ReadItem::Error(e) => return Err(e),
        }
    }
    Ok(out)
}

async fn segment_names(store: &Arc<dyn ObjectStore>) -> HashSet<Path> {
    segments_in(store)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

async fn segments_in(store: &Arc<dyn ObjectStore>) -> Vec<(Path, u64)> {
    let root = Path::from(SEGMENTS_ROOT);
    let listed: Vec<ObjectMeta> = store.list(Some(&root)).try_collect().await.unwrap();
    listed.into_iter().map(|m| (m.location, m.size)).collect()
}

/// Bytes of segment objects in the store.
async fn segment_bytes(store: &Arc<dyn ObjectStore>) -> u64 {
    segments_in(store).await.iter().map(|(_, size)| size).sum()
}

/// Poll until the store's segment bytes are at most `bound`; the bytes last seen.
async fn bytes_fall_to(store: &Arc<dyn ObjectStore>, bound: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = segment_bytes(store).await;
        if bytes <= bound || Instant::now() > deadline {
            return bytes;
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

const MIB: u64 = 1 << 20;

#[test]
fn trims_expiry_and_deletions_give_the_bytes_back() {
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        deletion_delay: Duration::from_millis(100),
        ..EngineOptions::default()
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let observed = common::on_one_shard(store.clone(), options, move |shard| {
        let (store, clock) = (store.clone(), clock.clone());
        async move {
            let mut seen = Vec::new();
            setup(&shard, StreamConfigSpec::default(), 3).await;
            let hour = NonZeroU64::new(3600).unwrap();
            shard
                .create_stream(
                    basin(),
                    "expiring".parse().unwrap(),
                    StreamConfigSpec {
                        retention_policy: Some(RetentionPolicy::Age(hour)),
                        ..Default::default()
                    },
                    None,
                )
                .await
                .unwrap();
            // 4 MiB into each of three streams and the expiring one: 16 MiB.
            for n in 0..16u8 {
                for i in 0..3 {
                    append_now(&shard, i, big_batch(n)).await.unwrap();
                }
                shard
                    .append(
                        basin(),
                        "expiring".parse().unwrap(),
                        big_batch(n),
                        None,
                        AutoCreate::No,
                    )
                    .await
                    .unwrap()
                    .wait()
                    .await
                    .unwrap();
            }
            let full = segment_bytes(&store).await;
            seen.push(("appended", full));

            // Trim stream 0 to its last record: its other 15 runs go.
            append_now(&shard, 0, common::trim_to(15)).await.unwrap();
            seen.push(("trimmed", bytes_fall_to(&store, full - 3 * MIB).await));
            assert_eq!(
                common::read_from(&shard, basin(), stream(0), 0).await.len(),
                2
            );

            // Two hours on, the expiring stream's records are all past retention.
            clock.advance(Duration::from_secs(7200));
            seen.push(("expired", bytes_fall_to(&store, full - 7 * MIB).await));
            assert!(
                common::read_from(&shard, basin(), "expiring".parse().unwrap(), 0)
                    .await
                    .is_empty()
            );

            shard.delete_stream(basin(), stream(1)).await.unwrap();
            seen.push((
                "stream deleted",
                bytes_fall_to(&store, full - 11 * MIB).await,
            ));
            assert_eq!(
                common::read_from(&shard, basin(), stream(2), 0).await.len(),
                16
            );

            shard.delete_basin(basin()).await.unwrap();
            seen.push(("basin deleted", bytes_fall_to(&store, 0).await));
            (full, seen)
        }
    });
    let (full, seen) = observed;
    assert!(full >= 16 * MIB, "the appends are in segments: {seen:?}");
    let bound = |stage: &str| match stage {
        "trimmed" => full - 3 * MIB,
        "expired" => full - 7 * MIB,
        "stream deleted" => full - 11 * MIB,
        _ => 0,
    };
    for (stage, bytes) in &seen[1..] {
        assert!(
            *bytes <= bound(stage),
            "after {stage}: {bytes} bytes left of {full}: {seen:?}"
        );
    }
}

/// The segment each of stream `name`'s runs lives in, in seq_num order.
async fn run_segments(storage: &Storage, name: &StreamName) -> Vec<u128> {
    let meta = storage
        .get(keys::stream_meta(&basin(), name))
        .await
        .unwrap()
        .expect("stream metadata");
    let meta: StreamMeta = serde_json::from_slice(&meta).unwrap();
    let rows = storage
        .scan(
            keys::stream_id_range(KeyKind::BatchIndex, meta.id.0),
            usize::MAX,
        )
        .await
        .unwrap();
    rows.iter()
        .map(|(_, v)| BatchEntry::decode(v).expect("index entry").segment.0)
        .collect()
}

#[test]
fn a_mostly_dead_segment_is_compacted_without_changing_reads() {
    let options = EngineOptions {
        deletion_delay: Duration::from_millis(100),
        ..EngineOptions::default()
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (before, after, records, left) =
        common::with_storage(store.clone(), options, move |shard, storage| {
            let store = store.clone();
            async move {
                setup(&shard, StreamConfigSpec::default(), 2).await;
                for i in 0..2 {
                    append_now(&shard, i, batch(i, 0)).await.unwrap();
                }
                // Submitted together, so both runs share one segment: 768 KiB of stream 0
                // and 256 KiB of stream 1.
                let dead = AppendBatch::new(
                    (0..3)
                        .map(|n| big_batch(n).into_records().remove(0))
                        .collect(),
                    None,
                    None,
                )
                .unwrap();
                let p0 = shard
                    .append(basin(), stream(0), dead, None, AutoCreate::No)
                    .await
                    .unwrap();
                let p1 = shard
                    .append(basin(), stream(1), big_batch(7), None, AutoCreate::No)
                    .await
                    .unwrap();
                p0.wait().await.unwrap();
                p1.wait().await.unwrap();
                let before = run_segments(&storage, &stream(1)).await;
                assert_eq!(
                    run_segments(&storage, &stream(0)).await[1],
                    before[1],
                    "both runs went into one segment"
                );
                shard.delete_stream(basin(), stream(0)).await.unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut after = before.clone();
                while Instant::now() < deadline {
                    after = run_segments(&storage, &stream(1)).await;
                    let names = segments_in(&store).await;
                    let old_gone = !names
                        .iter()
                        .any(|(p, _)| p.as_ref().ends_with(&format!("{:016x}", before[1] as u64)));
                    if after[1] != before[1] && old_gone {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
                let records = common::read_from(&shard, basin(), stream(1), 0).await;
                (before, after, records, segment_bytes(&store).await)
            }
        });
    assert_ne!(
        after[1], before[1],
        "the live run was moved to a new segment"
    );
    assert_eq!(
        after[0], before[0],
        "runs in segments that are all live stay"
    );
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].body, body(1, 0));
    assert_eq!(records[1].body, Bytes::from(vec![7u8; 256 << 10]));
    assert!(
        left < 600 << 10,
        "the dead megabyte was given back: {left} bytes of segments left"
    );
}

#[test]
fn the_sweep_pages_through_more_segments_than_one_step_reads() {
    let options = EngineOptions {
        deletion_delay: Duration::from_millis(100),
        ..EngineOptions::default()
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (written, left) = common::on_one_shard(store.clone(), options, move |shard| {
        let store = store.clone();
        async move {
            setup(&shard, StreamConfigSpec::default(), 1).await;
            // One awaited append is one segment: more than a sweep step's page.
            for seq in 0..SWEEP_SEGMENTS_PER_TICK + 200 {
                append_now(&shard, 0, batch(0, seq)).await.unwrap();
            }
            let written = segments_in(&store).await.len();
            shard.delete_stream(basin(), stream(0)).await.unwrap();
            bytes_fall_to(&store, 0).await;
            (written, segments_in(&store).await.len())
        }
    });
    assert!(
        written > SWEEP_SEGMENTS_PER_TICK,
        "{written} segments written"
    );
    assert_eq!(left, 0, "segments beyond the first page were reclaimed too");
}

/// Standard appends wait for the linger and share one commit; an express append takes
/// the standard ones waiting with it at once; a full commit does not wait.
#[test]
fn standard_appends_gather_into_one_commit_and_ride_an_express_one() {
    let linger = Duration::from_millis(STANDARD_LINGER_MS);
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let observed = store.clone();
    common::on_one_shard(store, EngineOptions::default(), move |shard| {
        let store = observed.clone();
        async move {
            let standard = StreamConfigSpec {
                storage_class: Some("standard".to_owned()),
                ..StreamConfigSpec::default()
            };
            setup(&shard, standard, 3).await;
            shard
                .create_stream(basin(), stream(3), StreamConfigSpec::default(), None)
                .await
                .unwrap();
            let appended = |streams: std::ops::Range<usize>, gap: Duration| {
                let shard = shard.clone();
                async move {
                    let mut pending = Vec::new();
                    for i in streams {
                        let p = shard.append(basin(), stream(i), batch(i, 0), None, AutoCreate::No);
                        pending.push(p.await.unwrap());
                        glommio::timer::sleep(gap).await;
                    }
                    pending
                }
            };

            let before = segment_names(&store).await.len();
            let started = Instant::now();
            for p in appended(0..3, Duration::from_millis(50)).await {
                p.wait().await.unwrap();
            }
            let took = started.elapsed();
            assert!(
                took >= linger,
                "standard appends acked after {took:?}, within the linger"
            );
            assert_eq!(
                segment_names(&store).await.len(),
                before + 1,
                "three standard appends within the linger share one commit"
            );

            let before = segment_names(&store).await.len();
            let started = Instant::now();
            let mut pending = appended(0..3, Duration::ZERO).await;
            pending.extend(appended(3..4, Duration::ZERO).await);
            for p in pending {
                p.wait().await.unwrap();
            }
            let took = started.elapsed();
            assert!(
                took < linger,
                "standard appends with an express one acked after {took:?}: they waited"
            );
            assert_eq!(
                segment_names(&store).await.len(),
                before + 1,
                "the express commit carried the standard appends"
            );

            // 10 MiB is past COMMIT_TARGET_BYTES (8 MiB): committed without waiting.
            let started = Instant::now();
            let mut pending = Vec::new();
            for n in 0..40u8 {
                let i = usize::from(n % 3);
                let p = shard.append(basin(), stream(i), big_batch(n), None, AutoCreate::No);
                pending.push(p.await.unwrap());
            }
            let first = pending.remove(0);
            first.wait().await.unwrap();
            let took = started.elapsed();
            assert!(
                took < linger,
                "the first of 10 MiB of standard appends was acked after {took:?}: a full commit waited"
            );
            for p in pending {
                p.wait().await.unwrap();
            }
        }
    });
}

/// Many large appends to one stream while a commit is held all go in the next commit, as
/// runs of at most `RUN_BYTES_MAX` (plus one append), so a read of one record fetches at
/// most about that; the records read back whole and in order across the runs.
#[test]
fn a_stream_s_runs_are_cut_at_their_bound_within_one_commit() {
    // Three runs' worth of 256 KiB records.
    const APPENDS: usize = 3 * RUN_BYTES_MAX / (256 << 10);
    let (_, store) = faulty(&Arc::new(AtomicU8::new(Fault::None as u8)));
    let hold = store.hold_segment_puts.clone();
    common::with_storage(store, EngineOptions::default(), move |shard, storage| {
        let hold = hold.clone();
        async move {
            setup(&shard, StreamConfigSpec::default(), 1).await;
            append_now(&shard, 0, big_batch(0)).await.unwrap();
            // One commit held: everything after it waits in the stream's open runs.
            hold.store(true, Ordering::SeqCst);
            let blocker = glommio::spawn_local({
                let shard = shard.clone();
                async move { append_now(&shard, 0, big_batch(1)).await }
            });
            glommio::timer::sleep(Duration::from_millis(50)).await;
            let appends: Vec<_> = (0..APPENDS)
                .map(|i| {
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        append_now(&shard, 0, big_batch((2 + i) as u8)).await
                    })
                })
                .collect();
            glommio::timer::sleep(Duration::from_millis(200)).await;
            hold.store(false, Ordering::SeqCst);
            blocker.await.unwrap();
            for append in appends {
                append.await.unwrap();
            }
            let meta = storage
                .get(keys::stream_meta(&basin(), &stream(0)))
                .await
                .unwrap()
                .unwrap();
            let id = serde_json::from_slice::<StreamMeta>(&meta).unwrap().id.0;
            let entries: Vec<BatchEntry> = storage
                .scan(keys::stream_id_range(KeyKind::BatchIndex, id), usize::MAX)
                .await
                .unwrap()
                .iter()
                .map(|(_, v)| BatchEntry::decode(v).unwrap())
                .collect();
            let one_append = (256 << 10) + 1024;
            for entry in &entries {
                assert!(
                    entry.length as usize <= RUN_BYTES_MAX + one_append,
                    "a run of {} bytes",
                    entry.length
                );
            }
            let last_commit = entries.last().unwrap().segment;
            let in_last = entries.iter().filter(|e| e.segment == last_commit).count();
            assert!(
                in_last >= APPENDS * (256 << 10) / RUN_BYTES_MAX,
                "the held appends went in {in_last} runs of the last commit: {entries:?}"
            );
            let records = common::read_from(&shard, basin(), stream(0), 0).await;
            let fills: Vec<u8> = records.iter().map(|r| r.body[0]).collect();
            let expected: Vec<u8> = (0..APPENDS + 2).map(|i| i as u8).collect();
            assert_eq!(fills, expected);
        }
    });
}

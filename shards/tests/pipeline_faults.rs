//! The append pipeline under storage faults: an object store that starts refusing the
//! log's commits while appends are in flight, one that fails a commit between two that
//! succeed, and one that refuses SlateDB's own uploads (which appends no longer wait for).
//!
//! What must hold: acknowledgements form a dense prefix (no ack after a failure), the
//! failed appends and everything after them fail, the tail falls back to the last durable
//! position, and after reopening the same store every acknowledged record is there, in
//! place, with nothing missing below the tail.

mod common;

use common::faulty_store::{Fault, FaultyStore};

use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::ObjectStore;
use sluice_shards::config::{BasinConfig, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord, SequencedRecord};
use sluice_shards::segments::{Cadence, EXPRESS_COMMIT_SPACING_MS};
use sluice_shards::streamer::AutoCreate;
use sluice_shards::{EngineOptions, Shard};

const DURABLE_FIRST: usize = 20;
const IN_FLIGHT: usize = 30;

fn names() -> (BasinName, StreamName) {
    ("fault-basin".parse().unwrap(), "faulty".parse().unwrap())
}

async fn create_the_stream(shard: &Rc<Shard>) -> (BasinName, StreamName) {
    let (basin, stream) = names();
    shard
        .create_basin(basin.clone(), BasinConfig::default(), None)
        .await
        .unwrap();
    shard
        .create_stream(
            basin.clone(),
            stream.clone(),
            StreamConfigSpec::default(),
            None,
        )
        .await
        .unwrap();
    (basin, stream)
}

fn one_record(i: usize) -> AppendBatch {
    let record = AppendRecord {
        timestamp: None,
        headers: Vec::new(),
        body: Bytes::from(format!("record-{i}")),
    };
    AppendBatch::new(vec![record], None, None).unwrap()
}

#[test]
fn a_failed_write_fails_the_rest_of_the_pipeline_and_loses_nothing_acknowledged() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = Arc::new(AtomicU8::new(Fault::None as u8));
    let store = Arc::new(FaultyStore::new(inner.clone(), fault.clone()));

    let (results, tail_after) =
        common::on_one_shard(store, EngineOptions::default(), move |shard| {
            let fault = fault.clone();
            async move {
                let (basin, stream) = create_the_stream(&shard).await;
                let mut results = Vec::new();
                for i in 0..DURABLE_FIRST {
                    let pending = shard
                        .append(
                            basin.clone(),
                            stream.clone(),
                            one_record(i),
                            None,
                            AutoCreate::No,
                        )
                        .await
                        .unwrap();
                    results.push(pending.wait().await.map(|ack| ack.start.seq_num));
                }
                // From here every commit fails; submit without waiting, so all are in
                // flight together.
                fault.store(Fault::SegmentPutFails as u8, Ordering::SeqCst);
                let mut pending = Vec::new();
                for i in DURABLE_FIRST..DURABLE_FIRST + IN_FLIGHT {
                    match shard
                        .append(
                            basin.clone(),
                            stream.clone(),
                            one_record(i),
                            None,
                            AutoCreate::No,
                        )
                        .await
                    {
                        Ok(p) => pending.push(Ok(p)),
                        Err(e) => pending.push(Err(e)),
                    }
                }
                for p in pending {
                    results.push(match p {
                        Ok(p) => p.wait().await.map(|ack| ack.start.seq_num),
                        Err(e) => Err(e),
                    });
                }
                let tail = shard
                    .check_tail(basin, stream, AutoCreate::No)
                    .await
                    .map(|t| t.seq_num);
                (results, tail)
            }
        });

    let acked = results.iter().take_while(|r| r.is_ok()).count();
    assert!(
        results[acked..].iter().all(|r| r.is_err()),
        "an append was acknowledged after an earlier one failed: {results:?}"
    );
    assert!(
        acked >= DURABLE_FIRST,
        "the appends before the fault were acknowledged"
    );
    assert!(
        acked < results.len(),
        "the fault failed the appends in flight"
    );
    for (i, r) in results[..acked].iter().enumerate() {
        assert_eq!(
            r.as_ref().ok(),
            Some(&(i as u64)),
            "acks are dense and in order"
        );
    }
    if let Ok(tail) = tail_after {
        assert_eq!(
            tail, acked as u64,
            "the tail fell back to the last durable position"
        );
    }

    // Reopen the same objects without the fault: everything acknowledged is there.
    let records: Vec<SequencedRecord> =
        common::on_one_shard(inner, EngineOptions::default(), |shard| async move {
            let (basin, stream) = names();
            common::read_from(&shard, basin, stream, 0).await
        });
    assert!(
        records.len() >= acked,
        "acknowledged records survive: {} < {acked}",
        records.len()
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq_num, i as u64, "no gap, no duplicate");
        assert_eq!(r.body, Bytes::from(format!("record-{i}")));
    }
}

/// Three commits of one stream are in flight at once and the middle one fails, while the
/// third succeeds: commits resolve in position order, so the third's appends fail too (its
/// records would sit behind the gap), and after a restart the stream ends at its last ack.
#[test]
fn a_failed_commit_between_two_that_succeeded_leaves_no_gap() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = Arc::new(AtomicU8::new(Fault::None as u8));
    let store = Arc::new(FaultyStore::new(inner.clone(), fault));
    let (hold, fail_put, puts) = (
        store.hold_segment_puts.clone(),
        store.fail_segment_put.clone(),
        store.segment_puts.clone(),
    );
    // A bucket's cadence: commits start on the spacing, whether or not one is in flight.
    let options = EngineOptions {
        commit_cadence: Cadence::Bucket,
        ..EngineOptions::default()
    };
    let (results, tail) = common::on_one_shard(store, options, move |shard| {
        let (hold, fail_put, puts) = (hold.clone(), fail_put.clone(), puts.clone());
        async move {
            let (basin, stream) = create_the_stream(&shard).await;
            let append = |batch| {
                let (shard, basin, stream) = (shard.clone(), basin.clone(), stream.clone());
                async move {
                    shard
                        .append(basin, stream, batch, None, AutoCreate::No)
                        .await
                        .unwrap()
                }
            };
            append(one_record(0)).await.wait().await.unwrap();
            hold.store(true, Ordering::SeqCst);
            let before = puts.load(Ordering::SeqCst);
            // The second of the three commits fails.
            fail_put.store(before + 2, Ordering::SeqCst);
            let mut pending = Vec::new();
            for i in 1..4 {
                pending.push(append(one_record(i)).await);
                // Past the commit spacing, so each append is a commit of its own.
                glommio::timer::sleep(std::time::Duration::from_millis(
                    3 * EXPRESS_COMMIT_SPACING_MS,
                ))
                .await;
            }
            hold.store(false, Ordering::SeqCst);
            let mut results = Vec::new();
            for p in pending {
                results.push(p.wait().await.map(|ack| ack.end.seq_num));
            }
            // The third append fails with the second (its streamer fails what follows a
            // failure) possibly before its own PUT is answered.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while puts.load(Ordering::SeqCst) < before + 3 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "three commits were in flight: {} answered",
                    puts.load(Ordering::SeqCst) - before
                );
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(
                puts.load(Ordering::SeqCst),
                before + 3,
                "three commits, no more"
            );
            let tail = shard
                .check_tail(basin, stream, AutoCreate::No)
                .await
                .unwrap()
                .seq_num;
            (results, tail)
        }
    });
    assert!(
        results[0].is_ok(),
        "the first commit succeeded: {results:?}"
    );
    assert!(
        results[1].is_err() && results[2].is_err(),
        "the failed commit and the one after it fail: {results:?}"
    );
    assert_eq!(tail, 2, "the tail is the last acknowledged one");

    // After a restart the stream ends where its acks did, with every record readable.
    let (records, tail): (Vec<SequencedRecord>, u64) =
        common::on_one_shard(inner, EngineOptions::default(), |shard| async move {
            let (basin, stream) = names();
            let tail = shard
                .check_tail(basin.clone(), stream.clone(), AutoCreate::No)
                .await
                .unwrap()
                .seq_num;
            (common::read_from(&shard, basin, stream, 0).await, tail)
        });
    assert_eq!(tail, 2, "the durable tail is the last acknowledged one");
    let bodies: Vec<Bytes> = records.iter().map(|r| r.body.clone()).collect();
    assert_eq!(
        bodies,
        vec![Bytes::from("record-0"), Bytes::from("record-1")]
    );
}

/// SlateDB's own uploads are held, so nothing of the index becomes durable: appends are
/// acknowledged all the same once their commit is. Then those uploads fail, so the process
/// ends with the index never made durable, as after a crash, and replay puts every
/// acknowledged record back in place.
#[test]
fn appends_are_acknowledged_on_their_commit_alone_and_replayed_after_a_crash() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let fault = Arc::new(AtomicU8::new(Fault::None as u8));
    let store = Arc::new(FaultyStore::new(inner.clone(), fault.clone()));
    let hold_wal = store.hold_wal.clone();
    const APPENDS: usize = 30;
    let acked = common::on_one_shard(store, EngineOptions::default(), move |shard| {
        let (fault, hold_wal) = (fault.clone(), hold_wal.clone());
        async move {
            let (basin, stream) = create_the_stream(&shard).await;
            hold_wal.store(true, Ordering::SeqCst);
            let mut acked = Vec::new();
            for i in 0..APPENDS {
                let ack = shard
                    .append(
                        basin.clone(),
                        stream.clone(),
                        one_record(i),
                        None,
                        AutoCreate::No,
                    )
                    .await
                    .unwrap()
                    .wait()
                    .await
                    .expect("acknowledged without SlateDB's uploads");
                acked.push(ack.start.seq_num);
            }
            fault.store(Fault::IndexWriteFails as u8, Ordering::SeqCst);
            hold_wal.store(false, Ordering::SeqCst);
            acked
        }
    });
    assert_eq!(acked, (0..APPENDS as u64).collect::<Vec<_>>());
    let records: Vec<SequencedRecord> =
        common::on_one_shard(inner, EngineOptions::default(), |shard| async move {
            let (basin, stream) = names();
            common::read_from(&shard, basin, stream, 0).await
        });
    let bodies: Vec<Bytes> = records.iter().map(|r| r.body.clone()).collect();
    let expected: Vec<Bytes> = (0..APPENDS)
        .map(|i| Bytes::from(format!("record-{i}")))
        .collect();
    assert_eq!(bodies, expected, "every acknowledged record, in place");
}

/// How a session hands its two inputs after the failing one to the owner.
#[derive(Debug, Clone, Copy)]
enum Trips {
    /// Both inputs in one trip: the second waits for admission inside it.
    One,
    /// One trip each: the second trip waits for admission while the first is in flight.
    Two,
}

/// An append session ends at its first failure: an input still on its way to the owner when
/// an earlier one fails in storage (here, waiting for admission behind it) is refused, not
/// sequenced where the failed one was. Otherwise the failure resets the stream to its
/// durable tail and the later input becomes durable behind the hole, though its client was
/// told it failed. Another session on the same stream goes on.
#[test]
fn a_session_sequences_nothing_after_one_of_its_inputs_failed() {
    for trips in [Trips::One, Trips::Two] {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let store = Arc::new(FaultyStore::new(inner.clone(), fault));
        let (fail_put, puts) = (store.fail_segment_put.clone(), store.segment_puts.clone());
        // One append in flight at a time: each takes the shard's whole admission budget.
        let options = EngineOptions {
            append_inflight_bytes: 1,
            ..EngineOptions::default()
        };
        let (first, failed, after, tail, other) =
            common::on_one_shard(store, options.clone(), move |shard| {
                let (fail_put, puts) = (fail_put.clone(), puts.clone());
                async move {
                    let (basin, stream) = create_the_stream(&shard).await;
                    let session = shard
                        .prepare_append(basin.clone(), stream.clone(), None, AutoCreate::No)
                        .await
                        .unwrap();
                    let mut results = shard
                        .append_in_order(&session, vec![one_record(0)], AutoCreate::No)
                        .await;
                    let first = results.pop().unwrap().unwrap().wait().await;
                    // The next segment PUT fails: the one carrying the session's next input.
                    fail_put.store(puts.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
                    let results = match trips {
                        Trips::One => {
                            shard
                                .append_in_order(
                                    &session,
                                    vec![one_record(1), one_record(2)],
                                    AutoCreate::No,
                                )
                                .await
                        }
                        Trips::Two => {
                            let mut results = shard
                                .append_in_order(&session, vec![one_record(1)], AutoCreate::No)
                                .await;
                            assert!(!session.has_failed(), "the failing input is in flight");
                            results.extend(
                                shard
                                    .append_in_order(&session, vec![one_record(2)], AutoCreate::No)
                                    .await,
                            );
                            results
                        }
                    };
                    let mut outcomes = Vec::new();
                    for result in results {
                        outcomes.push(match result {
                            Ok(pending) => pending.wait().await.map(|ack| ack.start.seq_num),
                            Err(e) => Err(e),
                        });
                    }
                    let failed = outcomes.remove(0);
                    let after = outcomes;
                    let tail = shard
                        .check_tail(basin.clone(), stream.clone(), AutoCreate::No)
                        .await
                        .unwrap()
                        .seq_num;
                    // A new session, as a client that reconnects would open.
                    let other = shard
                        .append(basin, stream, one_record(3), None, AutoCreate::No)
                        .await
                        .unwrap()
                        .wait()
                        .await
                        .map(|ack| ack.start.seq_num);
                    (
                        first.map(|ack| ack.start.seq_num),
                        failed,
                        after,
                        tail,
                        other,
                    )
                }
            });
        assert_eq!(
            first.ok(),
            Some(0),
            "{trips:?}: the first input is acknowledged"
        );
        assert!(
            failed.is_err(),
            "{trips:?}: the PUT failed the second input"
        );
        assert_eq!(
            after.len(),
            1,
            "{trips:?}: the third input is answered once: {after:?}"
        );
        let refused = after[0].as_ref().expect_err("the third input is refused");
        assert_eq!(
            refused.to_string(),
            failed.as_ref().unwrap_err().to_string(),
            "{trips:?}: refused with the session's first error"
        );
        assert_eq!(tail, 1, "{trips:?}: the tail stays after the first input");
        assert_eq!(
            other.ok(),
            Some(1),
            "{trips:?}: another session appends right after the first input"
        );

        // After a restart: the first input, then the other session's; nothing of the third.
        let records: Vec<SequencedRecord> =
            common::on_one_shard(inner, options, |shard| async move {
                let (basin, stream) = names();
                common::read_from(&shard, basin, stream, 0).await
            });
        let bodies: Vec<Bytes> = records.iter().map(|r| r.body.clone()).collect();
        assert_eq!(
            bodies,
            vec![Bytes::from("record-0"), Bytes::from("record-3")],
            "{trips:?}: what the stream holds after a restart"
        );
    }
}

//! The append pipeline under storage faults: an object store that starts refusing
//! write-ahead-log uploads while appends are in flight.
//!
//! What must hold: acknowledgements form a dense prefix (no ack after a failure), the
//! failed appends and everything after them fail, the tail falls back to the last durable
//! position, and after reopening the same store every acknowledged record is there, in
//! place, with nothing missing below the tail.

mod common;

use common::faulty_store::{Fault, FaultyStore};

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::ObjectStore;
use sluice_shards::config::{BasinConfig, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord, SequencedRecord};
use sluice_shards::streamer::AutoCreate;
use sluice_shards::EngineOptions;

const DURABLE_FIRST: usize = 20;
const IN_FLIGHT: usize = 30;

fn names() -> (BasinName, StreamName) {
    ("fault-basin".parse().unwrap(), "faulty".parse().unwrap())
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
                // From here every WAL upload fails; submit without waiting, so all are in
                // flight together.
                fault.store(Fault::IndexWriteFails as u8, Ordering::SeqCst);
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

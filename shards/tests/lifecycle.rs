//! Data over time, checked against what is stored: trimmed and deleted records leave the
//! database, and ages (retention, delete-on-empty) follow the engine's clock, so a day
//! passes in a moment.

mod common;

use common::eventually;

use common::faulty_store::{Fault, FaultyStore};

use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::ObjectStore;
use sluice_shards::catalogue::StreamMeta;
use sluice_shards::clock::Clock;
use sluice_shards::config::{BasinConfig, RetentionPolicy, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord, SequencedRecord};
use sluice_shards::storage::keys::{self, KeyKind};
use sluice_shards::storage::{Storage, STORE_WAIT_MAX};
use sluice_shards::streamer::AutoCreate;
use sluice_shards::{EngineError, EngineOptions, Shard};

fn basin() -> BasinName {
    "lifecycle-basin".parse().unwrap()
}

fn stream(name: &str) -> StreamName {
    name.parse().unwrap()
}

fn records(from: usize, n: usize) -> AppendBatch {
    let records = (from..from + n)
        .map(|i| AppendRecord {
            timestamp: None,
            headers: Vec::new(),
            body: Bytes::from(format!("record-{i}")),
        })
        .collect();
    AppendBatch::new(records, None, None).unwrap()
}

async fn append(shard: &Rc<Shard>, name: &str, batch: AppendBatch) {
    shard
        .append(basin(), stream(name), batch, None, AutoCreate::No)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
}

async fn create(shard: &Rc<Shard>, name: &str, spec: StreamConfigSpec) {
    shard
        .create_stream(basin(), stream(name), spec, None)
        .await
        .unwrap();
}

async fn read_from(shard: &Rc<Shard>, name: &str, seq_num: u64) -> Vec<SequencedRecord> {
    common::read_from(shard, basin(), stream(name), seq_num).await
}

/// How many keys of `kind` stream `id` still has in storage; with a range, the batch-index
/// entries of runs ending in it.
async fn stored(storage: &Storage, kind: KeyKind, id_range: (u128, Option<(u64, u64)>)) -> usize {
    let (id, seqs) = id_range;
    let range = match seqs {
        Some((from, to)) => keys::batch_index(id, from)..keys::batch_index(id, to),
        None => keys::stream_id_range(kind, id),
    };
    storage.scan(range, usize::MAX).await.unwrap().len()
}

/// The sum of the Prometheus samples whose line starts with `family` and names `label`.
async fn counted(shard: &Rc<Shard>, family: &str, label: &str) -> u64 {
    let text = shard.scrape_metrics().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(&format!("\"{label}\"")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

async fn stream_id(storage: &Storage, name: &str) -> u128 {
    let meta = storage
        .get(keys::stream_meta(&basin(), &stream(name)))
        .await
        .unwrap()
        .expect("stream metadata");
    let meta: StreamMeta = serde_json::from_slice(&meta).expect("stream metadata decodes");
    meta.id.0
}

/// A trim cleanup that fails (its write outlasts the storage bound while the store is
/// held) is due again on a later tick, not only after the next trim or a restart.
#[test]
fn a_failed_trim_cleanup_is_tried_again_once_the_store_answers() {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = Arc::new(FaultyStore::new(
        inner,
        Arc::new(AtomicU8::new(Fault::None as u8)),
    ));
    let hold_wal = store.hold_wal.clone();
    common::on_one_shard(store, EngineOptions::default(), move |shard| {
        let hold_wal = hold_wal.clone();
        async move {
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            create(&shard, "t", StreamConfigSpec::default()).await;
            for batch in 0..3 {
                append(&shard, "t", records(batch * 100, 100)).await;
            }
            let cleanups = || counted(&shard, "sluice_background_jobs_total{", "trim_cleanup");
            let failed_writes = || {
                counted(
                    &shard,
                    "sluice_storage_operation_errors_total{",
                    "slatedb_write",
                )
            };
            // Hold the store with a trim's cleanup due until the cleanup's write has
            // failed. A tick may have begun the cleanup before the hold and finish it;
            // then the next trim is held instead.
            let mut done_before = 0;
            let mut failed_while_held = false;
            for trim_point in [100, 200, 250] {
                done_before = cleanups().await;
                let failed_before = failed_writes().await;
                append(&shard, "t", common::trim_to(trim_point)).await;
                hold_wal.store(true, Ordering::SeqCst);
                // Past the bound of the write the cleanup issues within a tick.
                glommio::timer::sleep(STORE_WAIT_MAX + Duration::from_secs(2)).await;
                if cleanups().await == done_before && failed_writes().await > failed_before {
                    failed_while_held = true;
                    break;
                }
                hold_wal.store(false, Ordering::SeqCst);
            }
            assert!(
                failed_while_held,
                "no cleanup failed while the store was held"
            );

            hold_wal.store(false, Ordering::SeqCst);
            let cleaned = eventually(Duration::from_secs(10), || async {
                cleanups().await > done_before
            })
            .await;
            assert!(cleaned, "the failed cleanup was not tried again");
        }
    });
}

#[test]
fn trimmed_and_deleted_records_leave_storage() {
    let options = EngineOptions {
        deletion_delay: Duration::from_millis(100),
        ..EngineOptions::default()
    };
    common::with_storage(
        Arc::new(InMemory::new()),
        options,
        |shard, storage| async move {
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            create(&shard, "t", StreamConfigSpec::default()).await;
            for batch in 0..5 {
                append(&shard, "t", records(batch * 1000, 1000)).await;
            }
            append(&shard, "t", common::trim_to(4000)).await;
            let id = stream_id(&storage, "t").await;

            // Reads skip the trimmed records at once; storage loses them in the background.
            assert_eq!(read_from(&shard, "t", 0).await[0].seq_num, 4000);
            let gone =
                eventually(Duration::from_secs(10), || {
                    let storage = storage.clone();
                    async move {
                        stored(&storage, KeyKind::BatchIndex, (id, Some((0, 4000)))).await == 0
                    }
                })
                .await;
            assert!(gone, "runs below the trim point are still indexed");
            assert_eq!(
                stored(&storage, KeyKind::BatchIndex, (id, Some((4000, 5001)))).await,
                2,
                "the runs at and above the trim point (and the trim record's) are kept"
            );
            let kept =
                read_from(&shard, "t", 4000).await.len() + read_from(&shard, "t", 5000).await.len();
            assert_eq!(
                kept, 1001,
                "records at and above the trim point (and the trim record) are kept"
            );
            let index_left = stored(&storage, KeyKind::TimestampIndex, (id, None)).await;
            assert!(
                index_left <= 2,
                "index entries of trimmed batches remain: {index_left}"
            );

            // Deleting the stream removes every key it had.
            shard.delete_stream(basin(), stream("t")).await.unwrap();
            let all_gone = eventually(Duration::from_secs(10), || {
                let storage = storage.clone();
                async move {
                    let mut left = 0;
                    for kind in [
                        KeyKind::BatchIndex,
                        KeyKind::TimestampIndex,
                        KeyKind::StreamState,
                    ] {
                        left += stored(&storage, kind, (id, None)).await;
                    }
                    left == 0
                        && storage
                            .get(keys::stream_meta(&basin(), &stream("t")))
                            .await
                            .unwrap()
                            .is_none()
                }
            })
            .await;
            assert!(all_gone, "a deleted stream left keys behind");
        },
    );
}

#[test]
fn ages_follow_the_engine_clock() {
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        deletion_delay: Duration::from_millis(100),
        ..EngineOptions::default()
    };
    common::on_one_shard(Arc::new(InMemory::new()), options, move |shard| {
        let clock = clock.clone();
        async move {
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            let day = NonZeroU64::new(86_400).unwrap();
            create(
                &shard,
                "kept-a-day",
                StreamConfigSpec {
                    retention_policy: Some(RetentionPolicy::Age(day)),
                    ..Default::default()
                },
            )
            .await;
            create(
                &shard,
                "empty-for-an-hour",
                StreamConfigSpec {
                    delete_on_empty_min_age_secs: Some(3600),
                    ..Default::default()
                },
            )
            .await;
            append(&shard, "kept-a-day", records(0, 10)).await;
            assert_eq!(read_from(&shard, "kept-a-day", 0).await.len(), 10);

            // Half an hour: nothing expires and the empty stream is too young to delete.
            clock.advance(Duration::from_secs(1800));
            glommio::timer::sleep(Duration::from_millis(2500)).await;
            assert!(shard
                .stream_config(&basin(), &stream("empty-for-an-hour"))
                .await
                .is_ok());

            // A day later: the records have expired, the tail stays, and the empty stream
            // has been deleted.
            clock.advance(Duration::from_secs(86_400));
            assert!(read_from(&shard, "kept-a-day", 0).await.is_empty());
            let tail = shard
                .check_tail(basin(), stream("kept-a-day"), AutoCreate::No)
                .await
                .unwrap();
            assert_eq!(tail.seq_num, 10);
            let deleted = eventually(Duration::from_secs(10), || {
                let shard = shard.clone();
                async move {
                    matches!(
                        shard
                            .stream_config(&basin(), &stream("empty-for-an-hour"))
                            .await,
                        Err(EngineError::StreamDeletionPending { .. })
                            | Err(EngineError::StreamNotFound { .. })
                    )
                }
            })
            .await;
            assert!(deleted, "the empty stream outlived its min_age");
            // The stream with records is not deleted by anything.
            assert!(shard
                .stream_config(&basin(), &stream("kept-a-day"))
                .await
                .is_ok());
        }
    });
}

/// B-246: an AES-256-GCM stream cannot seal a record past seq_num 2^32−1. The stream is
/// moved close to the limit by writing its stored state directly, since appending four
/// billion records is not a test.
#[test]
fn aes_gcm_streams_stop_at_the_32_bit_seq_num_limit() {
    use base64::Engine as _;
    use sluice_shards::config::Cipher;
    use sluice_shards::crypto::KeyMaterial;
    use sluice_shards::records::Position;
    use sluice_shards::streamer::codec::{encode_state, StreamState};

    common::with_storage(
        Arc::new(InMemory::new()),
        EngineOptions::default(),
        |shard, storage| async move {
            let config = BasinConfig {
                stream_cipher: Some(Cipher::Aes256Gcm),
                ..BasinConfig::default()
            };
            shard.create_basin(basin(), config, None).await.unwrap();
            create(&shard, "gcm", StreamConfigSpec::default()).await;
            let id = stream_id(&storage, "gcm").await;
            let near_limit = StreamState {
                tail: Position {
                    seq_num: u64::from(u32::MAX),
                    timestamp: 0,
                },
                ..StreamState::default()
            };
            let mut batch = slatedb::WriteBatch::new();
            batch.put(keys::stream_state(id), encode_state(&near_limit));
            storage.write(batch).await.unwrap();

            let key =
                KeyMaterial::new(&base64::engine::general_purpose::STANDARD.encode([3u8; 32]))
                    .unwrap();
            let append = |n: usize| {
                let (shard, key) = (shard.clone(), key.clone());
                async move {
                    match shard
                        .append(
                            basin(),
                            stream("gcm"),
                            records(0, n),
                            Some(key),
                            AutoCreate::No,
                        )
                        .await
                    {
                        Ok(pending) => pending.wait().await,
                        Err(e) => Err(e),
                    }
                }
            };
            match append(2).await {
                Err(EngineError::Invalid(message)) => assert_eq!(
                    message,
                    "max assignable sequence number is 4294967295; attempted 4294967296"
                ),
                other => panic!("expected the seq_num limit, got {other:?}"),
            }
            // The last position below the limit is still usable.
            let ack = append(1).await.unwrap();
            assert_eq!(ack.start.seq_num, u64::from(u32::MAX));
        },
    );
}

#[test]
fn health_fails_once_the_shard_starts_draining() {
    common::on_one_shard(
        Arc::new(InMemory::new()),
        EngineOptions::default(),
        |shard| async move {
            shard.health().await.expect("healthy before the drain");
            let drained = shard.drained();
            shard.begin_drain();
            // The drain signal fires for anyone waiting on it.
            glommio::timer::timeout(Duration::from_secs(5), async {
                drained.await;
                Ok(())
            })
            .await
            .expect("the drain signal fired");
            assert!(matches!(shard.health().await, Err(EngineError::Draining)));
        },
    );
}

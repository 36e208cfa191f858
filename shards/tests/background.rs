//! Background work always makes progress: every pass pages within its bounds, and one item
//! that keeps failing delays only itself (decision 0012).

mod common;

use common::eventually;

use common::faulty_store::{Fault, FaultyStore, SEGMENTS_ROOT};

use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::path::Path;
use slatedb::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use slatedb::WriteBatch;
use sluice_shards::catalogue::StreamMeta;
use sluice_shards::clock::Clock;
use sluice_shards::config::{BasinConfig, RetentionPolicy, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord};
use sluice_shards::segments::reclaim::{
    ORPHAN_PAGE_OBJECTS, SWEEP_REFS_PER_TICK, SWEEP_SEGMENTS_PER_TICK,
};
use sluice_shards::storage::keys::{self, KeyKind};
use sluice_shards::storage::Storage;
use sluice_shards::streamer::AutoCreate;
use sluice_shards::{EngineOptions, Shard};

fn basin(name: &str) -> BasinName {
    format!("bg-{name}-basin").parse().unwrap()
}

fn stream(name: &str) -> StreamName {
    name.parse().unwrap()
}

fn one_record(body: &str) -> AppendBatch {
    let record = AppendRecord {
        timestamp: None,
        headers: Vec::new(),
        body: Bytes::from(body.to_owned()),
    };
    AppendBatch::new(vec![record], None, None).unwrap()
}

async fn append(shard: &Rc<Shard>, b: &str, s: &str, body: &str) {
    shard
        .append(basin(b), stream(s), one_record(body), None, AutoCreate::No)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
}

fn expiring_in_an_hour() -> StreamConfigSpec {
    StreamConfigSpec {
        retention_policy: Some(RetentionPolicy::Age(NonZeroU64::new(3600).unwrap())),
        ..Default::default()
    }
}

async fn count(storage: &Storage, range: std::ops::Range<Bytes>) -> usize {
    storage.scan(range, usize::MAX).await.unwrap().len()
}

/// The sum of the samples of `family` whose labels include `label`.
async fn counted(shard: &Rc<Shard>, family: &str, label: &str) -> f64 {
    let text = shard.scrape_metrics().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(family) && l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Scans so far that returned more than `rows` rows (`rows` is a bucket bound).
async fn scans_over(shard: &Rc<Shard>, rows: usize) -> f64 {
    let all = counted(shard, "sluice_storage_scan_rows_bucket", "le=\"+Inf\"").await;
    let within = counted(
        shard,
        "sluice_storage_scan_rows_bucket",
        &format!("le=\"{rows}\""),
    )
    .await;
    all - within
}

async fn stream_id(storage: &Storage, b: &str, s: &str) -> u128 {
    let meta = storage
        .get(keys::stream_meta(&basin(b), &stream(s)))
        .await
        .unwrap()
        .expect("stream metadata");
    let meta: StreamMeta = serde_json::from_slice(&meta).unwrap();
    meta.id.0
}

/// More references than one sweep step reads, in fewer segments than one page of them:
/// the page is cut where its references run out, no scan reads past its bound, and every
/// expired segment still goes.
#[test]
fn the_sweep_reads_references_a_page_at_a_time_and_reclaims_them_all() {
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        ..EngineOptions::default()
    };
    common::with_storage(Arc::new(InMemory::new()), options, move |shard, storage| {
        let clock = clock.clone();
        async move {
            const STREAMS: usize = 24;
            shard
                .create_basin(basin("sweep"), BasinConfig::default(), None)
                .await
                .unwrap();
            let names: Vec<String> = (0..STREAMS).map(|i| format!("s{i:02}")).collect();
            for name in &names {
                shard
                    .create_stream(basin("sweep"), stream(name), expiring_in_an_hour(), None)
                    .await
                    .unwrap();
            }
            // Appends to every stream at once share commits: many runs per segment.
            let mut round = 0;
            while count(
                &storage,
                keys::stream_id_range(KeyKind::SegmentRef, 0).start
                    ..keys::stream_id_range(KeyKind::SegmentRef, u128::MAX).end,
            )
            .await
                <= SWEEP_REFS_PER_TICK
            {
                let body = format!("round-{round}");
                futures::future::join_all(
                    names
                        .iter()
                        .map(|name| append(&shard, "sweep", name, &body)),
                )
                .await;
                round += 1;
            }
            let segments = count(&storage, keys::segments_range()).await;
            assert!(
                segments < SWEEP_SEGMENTS_PER_TICK,
                "{segments} segments for {round} rounds: the appends did not share commits"
            );
            let over_before = scans_over(&shard, SWEEP_REFS_PER_TICK).await;

            clock.advance(Duration::from_secs(7200));
            let reclaimed = eventually(Duration::from_secs(30), || async {
                count(&storage, keys::segments_range()).await == 0
            })
            .await;
            assert!(
                reclaimed,
                "{} of {segments} segments left",
                count(&storage, keys::segments_range()).await
            );
            assert_eq!(
                scans_over(&shard, SWEEP_REFS_PER_TICK).await - over_before,
                0.0,
                "a scan read more than {SWEEP_REFS_PER_TICK} rows"
            );
            assert!(
                counted(&shard, "sluice_background_jobs_total{", "\"sweep_page\"").await >= 2.0
            );
        }
    });
}

/// The orphan pass's listing failing does not hold up the sweep.
#[test]
fn the_sweep_goes_on_while_the_segment_listing_fails() {
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        ..EngineOptions::default()
    };
    let store = Arc::new(FaultyStore::new(
        Arc::new(InMemory::new()),
        Arc::new(AtomicU8::new(Fault::None as u8)),
    ));
    store.fail_list.store(true, Ordering::SeqCst);
    common::with_storage(store, options, move |shard, storage| {
        let clock = clock.clone();
        async move {
            shard
                .create_basin(basin("listing"), BasinConfig::default(), None)
                .await
                .unwrap();
            shard
                .create_stream(basin("listing"), stream("s"), expiring_in_an_hour(), None)
                .await
                .unwrap();
            for i in 0..20 {
                append(&shard, "listing", "s", &format!("r{i}")).await;
            }
            assert!(count(&storage, keys::segments_range()).await > 0);
            clock.advance(Duration::from_secs(7200));
            let reclaimed = eventually(Duration::from_secs(30), || async {
                count(&storage, keys::segments_range()).await == 0
            })
            .await;
            assert!(
                reclaimed,
                "expired segments stayed while the listing failed"
            );
            assert!(
                counted(
                    &shard,
                    "sluice_background_failures_total{",
                    "\"orphan_page\""
                )
                .await
                    >= 1.0
            );
        }
    });
}

/// Orphans from an earlier process, more than one page of the listing of them: all go, a
/// page at a time, and nothing with a record does.
#[test]
fn orphans_are_found_a_page_at_a_time() {
    const ORPHANS: usize = 2 * ORPHAN_PAGE_OBJECTS + 500;
    let inner = Arc::new(InMemory::new());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..ORPHANS {
            let path = Path::from(format!("{SEGMENTS_ROOT}/7777777777777777/{i:016x}"));
            inner
                .put(&path, PutPayload::from_static(b"orphan"))
                .await
                .unwrap();
        }
    });
    let store: Arc<dyn ObjectStore> = inner.clone();
    common::with_storage(
        store,
        EngineOptions::default(),
        move |shard, storage| async move {
            shard
                .create_basin(basin("orphans"), BasinConfig::default(), None)
                .await
                .unwrap();
            shard
                .create_stream(
                    basin("orphans"),
                    stream("s"),
                    StreamConfigSpec::default(),
                    None,
                )
                .await
                .unwrap();
            append(&shard, "orphans", "s", "kept").await;
            let gone = eventually(Duration::from_secs(30), || async {
                counted(&shard, "sluice_background_jobs_total{", "\"orphan_page\"").await >= 3.0
            })
            .await;
            assert!(gone, "the orphan pass did not go through its pages");
            let records = count(&storage, keys::segments_range()).await;
            assert!(records > 0);
            records
        },
    );
    let left: Vec<_> = rt.block_on(async {
        inner
            .list(Some(&Path::from(SEGMENTS_ROOT)))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    });
    let orphans_left = left
        .iter()
        .filter(|m| m.location.as_ref().contains("7777777777777777"))
        .count();
    assert_eq!(orphans_left, 0, "orphans left");
    assert!(
        !left.is_empty(),
        "the segments that have records were deleted too"
    );
}

/// Cleanups queued before a stop, one of which fails every time (its stream's index holds
/// a corrupt entry): the others, and a basin's deletion queued after them, complete.
#[test]
fn a_cleanup_that_always_fails_delays_only_itself() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let queued = EngineOptions {
        deletion_delay: Duration::from_secs(3600),
        ..EngineOptions::default()
    };
    common::with_storage(store.clone(), queued, |shard, storage| async move {
        for b in ["keep", "gone"] {
            shard
                .create_basin(basin(b), BasinConfig::default(), None)
                .await
                .unwrap();
        }
        for (b, s) in [
            ("keep", "a-poisoned"),
            ("keep", "b"),
            ("keep", "c"),
            ("gone", "x"),
        ] {
            shard
                .create_stream(basin(b), stream(s), StreamConfigSpec::default(), None)
                .await
                .unwrap();
            append(&shard, b, s, "record").await;
        }
        let poisoned = stream_id(&storage, "keep", "a-poisoned").await;
        let mut batch = WriteBatch::new();
        batch.put(
            keys::batch_index(poisoned, u64::MAX - 1),
            b"not an index entry",
        );
        storage.write(batch).await.unwrap();
        for s in ["a-poisoned", "b", "c"] {
            shard.delete_stream(basin("keep"), stream(s)).await.unwrap();
        }
        shard.delete_basin(basin("gone")).await.unwrap();
    });
    let resumed = EngineOptions {
        deletion_delay: Duration::from_millis(100),
        ..EngineOptions::default()
    };
    common::with_storage(store, resumed, |shard, storage| async move {
        let meta = |b: &'static str, s: &'static str| {
            let storage = storage.clone();
            async move {
                storage
                    .get(keys::stream_meta(&basin(b), &stream(s)))
                    .await
                    .unwrap()
                    .is_some()
            }
        };
        let done = eventually(Duration::from_secs(30), || async {
            !meta("keep", "b").await
                && !meta("keep", "c").await
                && !meta("gone", "x").await
                && storage
                    .get(keys::basin_meta(&basin("gone")))
                    .await
                    .unwrap()
                    .is_none()
        })
        .await;
        assert!(done, "the cleanups behind the failing one did not complete");
        assert!(
            meta("keep", "a-poisoned").await,
            "the poisoned stream cannot be removed"
        );
        assert!(
            counted(
                &shard,
                "sluice_background_failures_total{",
                "\"stream_deletion\""
            )
            .await
                >= 1.0
        );
    });
}

/// A delete-on-empty check that fails every time (its stream's metadata is corrupt) is put
/// off with backoff, and the check due after it still runs.
#[test]
fn a_delete_on_empty_check_that_always_fails_delays_only_itself() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        deletion_delay: Duration::from_millis(100),
        ..EngineOptions::default()
    };
    let empty_for_a_minute = StreamConfigSpec {
        delete_on_empty_min_age_secs: Some(60),
        ..Default::default()
    };
    common::with_storage(store.clone(), options.clone(), move |shard, storage| {
        let spec = empty_for_a_minute.clone();
        async move {
            shard
                .create_basin(basin("doe"), BasinConfig::default(), None)
                .await
                .unwrap();
            for s in ["a-bad", "b-good"] {
                shard
                    .create_stream(basin("doe"), stream(s), spec.clone(), None)
                    .await
                    .unwrap();
            }
            let mut batch = WriteBatch::new();
            batch.put(
                keys::stream_meta(&basin("doe"), &stream("a-bad")),
                b"{not json",
            );
            storage.write(batch).await.unwrap();
        }
    });
    clock.advance(Duration::from_secs(120));
    common::with_storage(store, options, |shard, storage| async move {
        let deleted = eventually(Duration::from_secs(30), || async {
            storage
                .get(keys::stream_meta(&basin("doe"), &stream("b-good")))
                .await
                .unwrap()
                .is_none()
        })
        .await;
        assert!(deleted, "the check due after the failing one did not run");
        assert!(
            counted(
                &shard,
                "sluice_background_failures_total{",
                "\"delete_on_empty_check\""
            )
            .await
                >= 1.0
        );
    });
}

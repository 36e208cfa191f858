//! A write-ahead store apart from the main one: commits are written and acknowledged
//! there, read from there until their runs move to the main store within seconds (and
//! read throughout the move), and after a restart; a lost store costs only what had not
//! moved; a full one holds appends back; a pass of the mover packs its commits together.

mod common;

use common::eventually;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use slatedb::object_store::memory::InMemory;
use slatedb::object_store::path::Path;
use slatedb::object_store::ObjectStore;
use sluice_shards::config::{BasinConfig, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord};
use sluice_shards::segments::reclaim::WAL_STAY_MAX;
use sluice_shards::streamer::AutoCreate;
use sluice_shards::{EngineOptions, Shard};

const APPENDS: usize = 40;

fn basin() -> BasinName {
    "wal-tier-basin".parse().unwrap()
}

fn stream() -> StreamName {
    "events".parse().unwrap()
}

async fn setup(shard: &Rc<Shard>) {
    shard
        .create_basin(basin(), BasinConfig::default(), None)
        .await
        .unwrap();
    shard
        .create_stream(basin(), stream(), StreamConfigSpec::default(), None)
        .await
        .unwrap();
}

async fn append(shard: &Rc<Shard>, i: usize) {
    let record = AppendRecord {
        timestamp: None,
        headers: Vec::new(),
        body: Bytes::from(format!("record-{i}")),
    };
    let batch = AppendBatch::new(vec![record], None, None).unwrap();
    shard
        .append(basin(), stream(), batch, None, AutoCreate::No)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
}

async fn bodies(shard: &Rc<Shard>) -> Vec<String> {
    common::read_from(shard, basin(), stream(), 0)
        .await
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect()
}

fn expected() -> Vec<String> {
    (0..APPENDS).map(|i| format!("record-{i}")).collect()
}

/// Segment objects in `store`: (commits of the log, other segments).
async fn objects(store: &Arc<dyn ObjectStore>) -> (usize, usize) {
    let all: Vec<_> = store
        .list(Some(&Path::from(common::faulty_store::SEGMENTS_ROOT)))
        .try_collect()
        .await
        .unwrap();
    let log = all
        .iter()
        .filter(|m| m.location.as_ref().contains("/0000000000000000/"))
        .count();
    (log, all.len() - log)
}

#[test]
fn commits_are_acknowledged_in_the_wal_store_and_move_to_the_main_store() {
    let main: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let wal: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (m, w) = (main.clone(), wal.clone());
    common::with_wal_storage(main, wal, EngineOptions::default(), move |shard, _| {
        let (main, wal) = (m.clone(), w.clone());
        async move {
            setup(&shard).await;
            for i in 0..APPENDS {
                append(&shard, i).await;
            }
            let (wal_commits, _) = objects(&wal).await;
            let (main_commits, _) = objects(&main).await;
            assert!(
                wal_commits >= APPENDS,
                "{wal_commits} commits in the WAL store"
            );
            assert_eq!(main_commits, 0, "commits went to the main store");
            assert_eq!(bodies(&shard).await, expected(), "read from the WAL store");

            // A reader reads the stream over and over while its runs move and their
            // commits go: every read sees every record, whichever store it comes from.
            let moving = Rc::new(std::cell::Cell::new(true));
            let reader = glommio::spawn_local({
                let (shard, moving) = (shard.clone(), moving.clone());
                async move {
                    let mut reads = 0;
                    while moving.get() {
                        assert_eq!(bodies(&shard).await, expected(), "read {reads}");
                        reads += 1;
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                    }
                    reads
                }
            });
            // Each run moves within WAL_STAY_MAX of its ack; its emptied commit is deleted
            // on the mover's next pass, 5 s later: all gone well within twice the bound.
            let moved = eventually(2 * WAL_STAY_MAX, || async {
                objects(&wal).await.0 == 0 && objects(&main).await.1 > 0
            })
            .await;
            moving.set(false);
            let reads = reader.await;
            assert!(reads >= 50, "only {reads} reads while the runs moved");
            let (left, main_segments) = (objects(&wal).await.0, objects(&main).await.1);
            assert!(
                moved,
                "{left} commits left in the WAL store, {main_segments} segments in the main one"
            );
            assert!(
                main_segments <= 3,
                "{main_segments} objects in the main store for {APPENDS} appends"
            );
            assert_eq!(bodies(&shard).await, expected(), "read from the main store");
        }
    });
}

/// Records still in the WAL store when the server stops read back after a restart. (A
/// clean stop: replay after kill -9 is `crash::kill9_cycles_…_with_a_local_wal_…`, end to
/// end.)
#[test]
fn records_still_in_the_wal_store_read_back_after_a_restart() {
    let main: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let wal: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    common::with_wal_storage(
        main.clone(),
        wal.clone(),
        EngineOptions::default(),
        |shard, _| async move {
            setup(&shard).await;
            for i in 0..APPENDS {
                append(&shard, i).await;
            }
        },
    );
    common::with_wal_storage(main, wal, EngineOptions::default(), |shard, _| async move {
        assert_eq!(bodies(&shard).await, expected());
    });
}

/// The write-ahead store lost while stopped: the server starts, serves what had moved to
/// the main store, keeps each stream's tail, and takes appends after it.
#[test]
fn a_lost_wal_store_loses_only_what_had_not_moved() {
    let main: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let wal: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let w = wal.clone();
    let unmoved = common::with_wal_storage(
        main.clone(),
        wal,
        EngineOptions::default(),
        move |shard, _| {
            let wal = w.clone();
            async move {
                setup(&shard).await;
                for i in 0..APPENDS / 2 {
                    append(&shard, i).await;
                }
                let moved = eventually(Duration::from_secs(30), || async {
                    objects(&wal).await.0 == 0
                })
                .await;
                assert!(moved, "the first half did not move");
                for i in APPENDS / 2..APPENDS {
                    append(&shard, i).await;
                }
                // Commits still in the WAL store as it stops (the second half, unless the
                // index became durable and the mover ran meanwhile).
                objects(&wal).await.0
            }
        },
    );
    let empty: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    common::with_wal_storage(
        main,
        empty,
        EngineOptions::default(),
        move |shard, _| async move {
            let served = bodies(&shard).await;
            if unmoved > 0 {
                assert!(served.len() < APPENDS, "nothing was lost: {served:?}");
            }
            assert!(
                served.len() >= APPENDS / 2 && served.iter().zip(expected()).all(|(a, b)| *a == b),
                "served {served:?}"
            );
            let tail = shard
                .check_tail(basin(), stream(), AutoCreate::No)
                .await
                .unwrap();
            assert_eq!(tail.seq_num, APPENDS as u64, "the tail stays");
            append(&shard, APPENDS).await;
            let after = bodies(&shard).await;
            assert_eq!(after.last().map(String::as_str), Some("record-40"));
        },
    );
}

/// The main store refusing writes while appends go on: the write-ahead store fills to its
/// bound and then appends wait (none fails); once the main store takes writes again, the
/// mover drains the WAL store and the waiting appends are acknowledged.
#[test]
fn a_full_wal_store_holds_appends_back_until_the_mover_drains_it() {
    use common::faulty_store::{Fault, FaultyStore};
    use std::sync::atomic::{AtomicU8, Ordering};
    const BOUND: u64 = 64 << 10;
    let fault = Arc::new(AtomicU8::new(Fault::SegmentPutFails as u8));
    let main = Arc::new(FaultyStore::new(Arc::new(InMemory::new()), fault.clone()));
    let wal: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let options = EngineOptions {
        wal_bytes_max: BOUND,
        ..EngineOptions::default()
    };
    common::with_wal_storage(main, wal, options, move |shard, storage| {
        let fault = fault.clone();
        async move {
            setup(&shard).await;
            let big = |i: usize| {
                let record = AppendRecord {
                    timestamp: None,
                    headers: Vec::new(),
                    body: Bytes::from(vec![b'a' + (i % 26) as u8; 4096]),
                };
                AppendBatch::new(vec![record], None, None).unwrap()
            };
            // Fill the WAL store: one append at a time until one is held back.
            let mut acked = 0;
            let (held, answered) = loop {
                let pending = shard
                    .append(basin(), stream(), big(acked), None, AutoCreate::No)
                    .await
                    .unwrap();
                let answered = Rc::new(std::cell::Cell::new(false));
                let ack = glommio::spawn_local({
                    let answered = answered.clone();
                    async move {
                        let ack = pending.wait().await;
                        answered.set(true);
                        ack
                    }
                });
                glommio::timer::sleep(Duration::from_millis(300)).await;
                if !answered.get() {
                    break (ack, answered);
                }
                ack.await.unwrap();
                acked += 1;
                assert!(acked < 100, "the WAL store never filled");
            };
            let filled = storage.wal_bytes();
            assert!(filled >= BOUND, "held back at {filled} bytes");
            assert!(
                filled < BOUND + (16 << 10),
                "{filled} bytes past a {BOUND}-byte bound"
            );
            // Held, not failed, while the main store refuses.
            glommio::timer::sleep(Duration::from_secs(2)).await;
            assert!(!answered.get(), "the held append was answered");
            fault.store(Fault::None as u8, Ordering::SeqCst);
            let ack = held.await.expect("acknowledged once the mover made room");
            assert_eq!(ack.start.seq_num, acked as u64);
            let drained = eventually(Duration::from_secs(30), || async {
                storage.wal_bytes() < BOUND / 2
            })
            .await;
            assert!(
                drained,
                "{} bytes left in the WAL store",
                storage.wal_bytes()
            );
            assert_eq!(
                common::read_from(&shard, basin(), stream(), 0).await.len(),
                acked + 1
            );
        }
    });
}

/// Commits from several of the mover's pages of one pass go into one main-store object
/// (and one durable index write), not one object a page: the main store refuses segment
/// writes while more than a page (1,000) of commits gathers, then takes them.
#[test]
fn one_mover_pass_moves_many_pages_of_commits_into_one_object() {
    use common::faulty_store::{Fault, FaultyStore};
    use sluice_shards::segments::reclaim::SWEEP_SEGMENTS_PER_TICK;
    use std::sync::atomic::{AtomicU8, Ordering};
    let commits = SWEEP_SEGMENTS_PER_TICK + SWEEP_SEGMENTS_PER_TICK / 5;
    let fault = Arc::new(AtomicU8::new(Fault::SegmentPutFails as u8));
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let main = Arc::new(FaultyStore::new(inner.clone(), fault.clone()));
    let wal: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    common::with_wal_storage(
        main,
        wal,
        EngineOptions::default(),
        move |shard, storage| {
            let (fault, inner) = (fault.clone(), inner.clone());
            async move {
                setup(&shard).await;
                // One at a time: each its own commit.
                for i in 0..commits {
                    append(&shard, i).await;
                }
                // All of them durable in the index, so that the next pass may take them all.
                let applied = storage.log_applied();
                let durable = eventually(Duration::from_secs(15), || async {
                    storage.log_durable() >= applied
                })
                .await;
                assert!(durable, "the index did not become durable");
                assert_eq!(
                    objects(&inner).await.1,
                    0,
                    "a segment reached the main store"
                );
                fault.store(Fault::None as u8, Ordering::SeqCst);
                let moved = eventually(Duration::from_secs(30), || async {
                    objects(&inner).await.1 > 0
                })
                .await;
                assert!(moved, "nothing moved");
                // Let a further pass run: it must find nothing left to move.
                glommio::timer::sleep(Duration::from_secs(6)).await;
                assert_eq!(
                    objects(&inner).await.1,
                    1,
                    "main-store objects for {commits} commits moved in one pass"
                );
                let mut read = Vec::new();
                while read.len() < commits {
                    let more =
                        common::read_from(&shard, basin(), stream(), read.len() as u64).await;
                    assert!(!more.is_empty(), "read stopped at {}", read.len());
                    read.extend(more.into_iter().map(|r| r.body));
                }
                let wanted: Vec<Bytes> = (0..commits)
                    .map(|i| Bytes::from(format!("record-{i}")))
                    .collect();
                assert_eq!(read, wanted);
            }
        },
    );
}

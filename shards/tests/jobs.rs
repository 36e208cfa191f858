//! Jobs from other shards are bounded: a shard runs at most `jobs_in_flight_max` of them at
//! once, and the rest wait in its inbox until a slot frees, then run, none lost. Waiting
//! for admission is not a job: it holds no slot.

mod common;

use common::faulty_store::{Fault, FaultyStore};

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use slatedb::object_store::memory::InMemory;
use sluice_shards::config::{BasinConfig, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::placement::Placement;
use sluice_shards::records::{AppendBatch, AppendRecord};
use sluice_shards::storage::Storage;
use sluice_shards::streamer::AutoCreate;
use sluice_shards::tokens::{Scope, TokenId, TokenInfo};
use sluice_shards::EngineOptions;

const BOUND: usize = 2;
const CREATES: usize = 6;
const APPENDS: usize = 6;

fn basin() -> BasinName {
    "jobs-basin".parse().unwrap()
}

/// A stream that shard 1 owns, so that shard 0's appends to it are jobs on shard 1.
fn remote_stream() -> StreamName {
    let placement = Placement::new(2);
    (0..)
        .map(|i| format!("s{i}").parse::<StreamName>().unwrap())
        .find(|s| placement.stream_owner(&basin(), s) == 1)
        .unwrap()
}

fn running_on_shard_1(storage: &Storage) -> u64 {
    let text = storage.metrics().encode(2);
    let line = text
        .lines()
        .find(|l| l.starts_with("sluice_shard_jobs_running{shard=\"1\"}"))
        .unwrap_or_else(|| panic!("no jobs gauge for shard 1 in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn held_store() -> Arc<FaultyStore> {
    Arc::new(FaultyStore::new(
        Arc::new(InMemory::new()),
        Arc::new(AtomicU8::new(Fault::None as u8)),
    ))
}

/// Streams that shard 1 owns.
fn remote_streams(n: usize) -> Vec<StreamName> {
    let placement = Placement::new(2);
    (0..)
        .map(|i| format!("s{i}").parse::<StreamName>().unwrap())
        .filter(|s| placement.stream_owner(&basin(), s) == 1)
        .take(n)
        .collect()
}

#[test]
fn a_shard_runs_at_most_the_bound_of_jobs_and_the_rest_wait_their_turn() {
    let options = EngineOptions {
        jobs_in_flight_max: BOUND,
        ..EngineOptions::default()
    };
    let store = held_store();
    let hold_wal = store.hold_wal.clone();
    common::on_two_shards(store, options, move |shard, storage| {
        let hold_wal = hold_wal.clone();
        async move {
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            // Every create is a job on shard 1 that waits for a durable write, held.
            hold_wal.store(true, Ordering::SeqCst);
            let done = Rc::new(Cell::new(false));
            let sampler = {
                let (done, storage) = (done.clone(), storage.clone());
                glommio::spawn_local(async move {
                    let mut most = 0;
                    while !done.get() {
                        most = most.max(running_on_shard_1(&storage));
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                    most
                })
            };
            let creates: Vec<_> = remote_streams(CREATES)
                .into_iter()
                .map(|stream| {
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        shard
                            .create_stream(basin(), stream, StreamConfigSpec::default(), None)
                            .await
                    })
                })
                .collect();
            glommio::timer::sleep(Duration::from_millis(500)).await;
            hold_wal.store(false, Ordering::SeqCst);
            for create in creates {
                create.await.expect("every create ran once");
            }
            done.set(true);
            let most = sampler.await;
            assert_eq!(
                most, BOUND as u64,
                "jobs running on shard 1 at most: the bound must be reached and never passed"
            );
            assert_eq!(running_on_shard_1(&storage), 0);
        }
    });
}

/// Appends waiting for the owner's byte budget hold no job slot: with the budget taken
/// and more appends waiting than there are slots, a scrape (a job on every shard) and a
/// revocation (a job on every shard too) complete before any of the appends is answered.
#[test]
fn appends_waiting_for_admission_hold_no_job_slot() {
    let options = EngineOptions {
        jobs_in_flight_max: BOUND,
        // One admission unit per shard: the first append takes it until its commit ends.
        append_inflight_bytes: 2,
        ..EngineOptions::default()
    };
    let store = held_store();
    let hold_puts = store.hold_segment_puts.clone();
    common::on_two_shards(store, options, move |shard, _| {
        let hold_puts = hold_puts.clone();
        async move {
            let stream = remote_stream();
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            shard
                .create_stream(basin(), stream.clone(), StreamConfigSpec::default(), None)
                .await
                .unwrap();
            let token: TokenId = "waiting-appends".parse().unwrap();
            shard
                .issue_token(TokenInfo {
                    id: token.clone(),
                    expires_at: None,
                    auto_prefix_streams: false,
                    scope: Scope::everything(),
                })
                .await
                .unwrap();

            hold_puts.store(true, Ordering::SeqCst);
            let answered = Rc::new(Cell::new(0));
            let appends: Vec<_> = (0..APPENDS)
                .map(|i| {
                    let (shard, stream, answered) =
                        (shard.clone(), stream.clone(), answered.clone());
                    glommio::spawn_local(async move {
                        let record = AppendRecord {
                            timestamp: None,
                            headers: Vec::new(),
                            body: Bytes::from(format!("r{i}")),
                        };
                        let batch = AppendBatch::new(vec![record], None, None).unwrap();
                        let result = match shard
                            .append(basin(), stream, batch, None, AutoCreate::No)
                            .await
                        {
                            Ok(pending) => pending.wait().await.map(|_| ()),
                            Err(e) => Err(e),
                        };
                        answered.set(answered.get() + 1);
                        result
                    })
                })
                .collect();
            // Let every append reach shard 1: one admitted, the rest waiting.
            glommio::timer::sleep(Duration::from_millis(300)).await;
            shard.scrape_metrics().await.unwrap();
            shard.revoke_token(token).await.unwrap();
            assert_eq!(
                answered.get(),
                0,
                "the scrape and the revocation waited for appends to be answered"
            );
            hold_puts.store(false, Ordering::SeqCst);
            for append in appends {
                // Answered either way; the held commit may have timed out.
                let _ = append.await;
            }
            assert_eq!(answered.get(), APPENDS);
        }
    });
}

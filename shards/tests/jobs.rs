//! Jobs from other shards are bounded: a shard runs at most `jobs_in_flight_max` of them at
//! once, and the rest wait in its inbox until a slot frees, then run, none lost.

mod common;

use std::cell::Cell;
use std::rc::Rc;
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
use sluice_shards::EngineOptions;

const BOUND: usize = 2;
const APPENDS: u64 = 6;

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

fn standard() -> StreamConfigSpec {
    StreamConfigSpec {
        storage_class: Some("standard".to_owned()),
        ..StreamConfigSpec::default()
    }
}

#[test]
fn a_shard_runs_at_most_the_bound_of_jobs_and_the_rest_wait_their_turn() {
    let options = EngineOptions {
        jobs_in_flight_max: BOUND,
        // One admission unit per shard, and a standard stream whose commits wait: every
        // append's job waits for the append before it to be acknowledged.
        append_inflight_bytes: 2,
        ..EngineOptions::default()
    };
    common::on_two_shards(
        Arc::new(InMemory::new()),
        options,
        |shard, storage| async move {
            let stream = remote_stream();
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            shard
                .create_stream(basin(), stream.clone(), standard(), None)
                .await
                .unwrap();

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
            let appends: Vec<_> = (0..APPENDS)
                .map(|i| {
                    let (shard, stream) = (shard.clone(), stream.clone());
                    glommio::spawn_local(async move {
                        let record = AppendRecord {
                            timestamp: None,
                            headers: Vec::new(),
                            body: Bytes::from(format!("r{i}")),
                        };
                        let batch = AppendBatch::new(vec![record], None, None).unwrap();
                        let pending = shard
                            .append(basin(), stream, batch, None, AutoCreate::No)
                            .await
                            .unwrap();
                        pending.wait().await.unwrap().start.seq_num
                    })
                })
                .collect();
            let mut seq_nums = Vec::new();
            for append in appends {
                seq_nums.push(append.await);
            }
            done.set(true);
            let most = sampler.await;
            seq_nums.sort_unstable();
            assert_eq!(
                seq_nums,
                (0..APPENDS).collect::<Vec<_>>(),
                "every append ran once"
            );
            assert_eq!(
                most, BOUND as u64,
                "jobs running on shard 1 at most: the bound must be reached and never passed"
            );
            assert_eq!(running_on_shard_1(&storage), 0);
        },
    );
}

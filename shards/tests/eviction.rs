//! Loaded streamers are bounded: past `EngineOptions::streamers_max`, idle ones are
//! unloaded, least recently used first, and reload from storage with nothing lost, while
//! a busy one (here, followed by a tailing reader) stays loaded and keeps its followers.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use slatedb::object_store::memory::InMemory;
use sluice_shards::config::{BasinConfig, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord};
use sluice_shards::streamer::{
    AutoCreate, ReadItem, ReadLimits, ReadRequest, ReadSession, ReadStart,
};
use sluice_shards::{EngineOptions, Shard};

const BOUND: usize = 4;
const STREAMS: usize = 12;
const WAIT: Duration = Duration::from_secs(10);

fn basin() -> BasinName {
    "eviction-basin".parse().unwrap()
}

fn stream(i: usize) -> StreamName {
    format!("s{i}").parse().unwrap()
}

async fn append(shard: &Rc<Shard>, i: usize, body: String) -> u64 {
    let record = AppendRecord {
        timestamp: None,
        headers: Vec::new(),
        body: Bytes::from(body),
    };
    let batch = AppendBatch::new(vec![record], None, None).unwrap();
    let pending = shard
        .append(basin(), stream(i), batch, None, AutoCreate::No)
        .await
        .unwrap();
    pending.wait().await.unwrap().start.seq_num
}

/// `sluice_streamers_loaded` of the only shard, from a scrape.
async fn loaded(shard: &Rc<Shard>) -> usize {
    let text = shard.scrape_metrics().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("sluice_streamers_loaded{"))
        .unwrap_or_else(|| panic!("no sluice_streamers_loaded in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The next `n` record bodies a session delivers, skipping heartbeats.
async fn next_bodies(session: &mut ReadSession, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let item = glommio::timer::timeout(WAIT, async { Ok(session.items.next().await) })
            .await
            .unwrap_or_else(|_| panic!("no record within {WAIT:?} after {out:?}"));
        match item {
            Some(ReadItem::Batch(batch)) => out.extend(
                batch
                    .records
                    .into_iter()
                    .map(|r| String::from_utf8(r.body.to_vec()).unwrap()),
            ),
            Some(ReadItem::Heartbeat(_)) => {}
            Some(ReadItem::Error(e)) => panic!("read failed: {e}"),
            None => panic!("the session ended after {out:?}"),
        }
    }
    out
}

fn read_from_start(limits: ReadLimits, wait: Option<Duration>) -> ReadRequest {
    ReadRequest {
        start: ReadStart::SeqNum(0),
        clamp: true,
        limits,
        wait,
        key: None,
    }
}

#[test]
fn idle_streamers_are_unloaded_past_the_bound_and_reload_with_nothing_lost() {
    let options = EngineOptions {
        streamers_max: BOUND,
        ..EngineOptions::default()
    };
    common::on_one_shard(Arc::new(InMemory::new()), options, |shard| async move {
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
        // A tailing reader keeps stream 0 busy.
        let follow = read_from_start(ReadLimits::default(), None);
        let mut follower = shard
            .read(basin(), stream(0), follow, AutoCreate::No)
            .await
            .unwrap();
        for round in 0..2u64 {
            for i in 0..STREAMS {
                // A reloaded streamer appends at its durable tail.
                assert_eq!(append(&shard, i, format!("{i}-{round}")).await, round);
                let n = loaded(&shard).await;
                assert!(n <= BOUND, "{n} streamers loaded after touching s{i}");
            }
        }
        assert_eq!(loaded(&shard).await, BOUND, "evicted only past the bound");
        // Stream 0 was never swapped for a reloaded copy: its follower saw both appends.
        assert_eq!(next_bodies(&mut follower, 2).await, ["0-0", "0-1"]);
        for i in 0..STREAMS {
            let request = read_from_start(
                ReadLimits {
                    count: Some(10),
                    ..Default::default()
                },
                Some(Duration::ZERO),
            );
            let mut session = shard
                .read(basin(), stream(i), request, AutoCreate::No)
                .await
                .unwrap();
            assert_eq!(
                next_bodies(&mut session, 2).await,
                [format!("{i}-0"), format!("{i}-1")]
            );
        }
    });
}

//! Usage metering on real shards: counts land in the minute the engine's clock says,
//! exactly once, however often they are flushed; buckets past the retention period are deleted; storage is
//! the metered bytes a stream still holds after trims, expiry and deletion.

mod common;

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use slatedb::object_store::memory::InMemory;
use sluice_shards::clock::Clock;
use sluice_shards::config::{BasinConfig, RetentionPolicy, StreamConfigSpec};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord};
use sluice_shards::storage::keys;
use sluice_shards::streamer::AutoCreate;
use sluice_shards::tokens::Operation;
use sluice_shards::usage::{Counter, UsageRow, MINUTE_SECS, USAGE_RETENTION};
use sluice_shards::{EngineError, EngineOptions, Shard};

fn basin() -> BasinName {
    "usage-basin".parse().unwrap()
}

fn stream(name: &str) -> StreamName {
    name.parse().unwrap()
}

/// `n` records of `body_len` bytes each: `n * (8 + body_len)` metered bytes.
fn batch(n: usize, body_len: usize) -> AppendBatch {
    let records = (0..n)
        .map(|_| AppendRecord {
            timestamp: None,
            headers: Vec::new(),
            body: Bytes::from(vec![b'x'; body_len]),
        })
        .collect();
    AppendBatch::new(records, None, None).unwrap()
}

async fn append(shard: &Rc<Shard>, name: &str, batch: AppendBatch) -> u64 {
    let bytes = batch.metered_bytes() as u64;
    shard
        .append(basin(), stream(name), batch, None, AutoCreate::No)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    bytes
}

/// Sums of `rows` by (minute, basin, counter).
fn summed(rows: Vec<UsageRow>) -> BTreeMap<(u64, String, Counter), u64> {
    let mut out = BTreeMap::new();
    for row in rows {
        *out.entry((row.minute_secs, row.basin, row.counter))
            .or_insert(0) += row.count;
    }
    out
}

fn now_minute(clock: &Clock) -> u64 {
    clock.now_millis() / 1000 / MINUTE_SECS * MINUTE_SECS
}

/// Moves the clock to the start of the next minute, so a test's counts are not split by a
/// minute boundary passing in real time.
fn to_next_minute(clock: &Clock) -> u64 {
    let minute_ms = MINUTE_SECS * 1000;
    let now = clock.now_millis();
    clock.advance(Duration::from_millis(minute_ms - now % minute_ms));
    now_minute(clock)
}

#[test]
fn counts_land_in_their_minute_once() {
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        ..EngineOptions::default()
    };
    common::on_two_shards(Arc::new(InMemory::new()), options, move |shard, _| {
        let clock = clock.clone();
        async move {
            let first = to_next_minute(&clock);
            shard.count_usage(Some(&basin()), Counter::Op(Operation::CreateStream), 2);
            shard.count_usage(None, Counter::Op(Operation::ListBasins), 1);
            shard.count_append(&basin(), 100);
            shard.count_append(&basin(), 50);
            // A query flushes every shard; a second query sees the same counts, not twice.
            for _ in 0..2 {
                let rows = summed(shard.usage_rows(first, first + MINUTE_SECS).await.unwrap());
                let b = || basin().as_str().to_owned();
                let expected = BTreeMap::from([
                    ((first, b(), Counter::Op(Operation::CreateStream)), 2),
                    (
                        (first, String::new(), Counter::Op(Operation::ListBasins)),
                        1,
                    ),
                    ((first, b(), Counter::Op(Operation::Append)), 2),
                    ((first, b(), Counter::AppendBytes), 150),
                ]);
                assert_eq!(rows, expected);
            }

            // The next minute is a bucket of its own; the first is final and unchanged.
            clock.advance(Duration::from_secs(MINUTE_SECS));
            shard.count_read(&basin(), 7);
            let second = now_minute(&clock);
            assert_eq!(second, first + MINUTE_SECS);
            let rows = summed(shard.usage_rows(first, second + MINUTE_SECS).await.unwrap());
            assert_eq!(rows.len(), 6, "{rows:?}");
            assert_eq!(
                rows[&(second, basin().as_str().to_owned(), Counter::ReadBytes)],
                7
            );
            assert_eq!(
                rows[&(first, basin().as_str().to_owned(), Counter::AppendBytes)],
                150
            );
            // A range is of minute starts: `second..` leaves the first minute out.
            let later = summed(shard.usage_rows(second, second + 1).await.unwrap());
            assert_eq!(later.len(), 2, "{later:?}");
        }
    });
}

#[test]
fn buckets_past_the_retention_period_are_deleted() {
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        ..EngineOptions::default()
    };
    common::with_storage(Arc::new(InMemory::new()), options, move |shard, storage| {
        let clock = clock.clone();
        async move {
            let old = to_next_minute(&clock);
            shard.count_usage(None, Counter::Op(Operation::ListBasins), 1);
            shard.flush_usage().await.unwrap();
            clock.advance(USAGE_RETENTION - Duration::from_secs(120));
            shard.count_usage(None, Counter::Op(Operation::ListBasins), 1);
            shard.flush_usage().await.unwrap();
            let all = || keys::usage_range(0, u64::MAX);
            assert_eq!(storage.scan(all(), usize::MAX).await.unwrap().len(), 2);
            // Not yet 90 days old: kept.
            shard.expire_usage().await.unwrap();
            assert_eq!(storage.scan(all(), usize::MAX).await.unwrap().len(), 2);

            clock.advance(Duration::from_secs(240));
            shard.expire_usage().await.unwrap();
            let left = storage.scan(all(), usize::MAX).await.unwrap();
            assert_eq!(left.len(), 1, "only the recent bucket is left");
            assert!(keys::usage_minute(&left[0].0).unwrap() > old);
        }
    });
}

#[test]
fn storage_is_what_a_stream_still_holds() {
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        deletion_delay: Duration::from_millis(50),
        ..EngineOptions::default()
    };
    common::on_two_shards(Arc::new(InMemory::new()), options, move |shard, _| {
        let clock = clock.clone();
        async move {
            shard
                .create_basin(basin(), BasinConfig::default(), None)
                .await
                .unwrap();
            let hour = StreamConfigSpec {
                retention_policy: Some(RetentionPolicy::Age(NonZeroU64::new(3600).unwrap())),
                ..Default::default()
            };
            for (name, spec) in [("kept", StreamConfigSpec::default()), ("expiring", hour)] {
                shard
                    .create_stream(basin(), stream(name), spec, None)
                    .await
                    .unwrap();
            }
            let measure = |name: &'static str| {
                let shard = shard.clone();
                async move { shard.stream_stored_bytes(basin(), stream(name)).await }
            };
            assert_eq!(measure("kept").await.unwrap(), 0);

            let first = append(&shard, "kept", batch(10, 100)).await;
            let second = append(&shard, "kept", batch(5, 20)).await;
            assert_eq!((first, second), (1080, 140));
            assert_eq!(measure("kept").await.unwrap(), first + second);
            let expiring = append(&shard, "expiring", batch(3, 2)).await;
            assert_eq!(measure("expiring").await.unwrap(), expiring);
            let by_stream = shard.basin_stored_bytes(&basin()).await.unwrap();
            assert_eq!(
                by_stream,
                vec![
                    (stream("expiring"), expiring),
                    (stream("kept"), first + second)
                ]
            );

            // A trim past the first batch: it no longer counts. The trim record does.
            let trim = append(&shard, "kept", common::trim_to(10)).await;
            assert_eq!(measure("kept").await.unwrap(), second + trim);

            // Expired records count no more.
            clock.advance(Duration::from_secs(3601));
            assert_eq!(measure("expiring").await.unwrap(), 0);

            // A deleted stream holds nothing.
            shard.delete_stream(basin(), stream("kept")).await.unwrap();
            assert!(matches!(
                measure("kept").await,
                Ok(0) | Err(EngineError::StreamNotFound { .. })
            ));
            let by_stream = shard.basin_stored_bytes(&basin()).await.unwrap();
            assert!(
                by_stream.iter().all(|(_, bytes)| *bytes == 0),
                "{by_stream:?}"
            );
        }
    });
}

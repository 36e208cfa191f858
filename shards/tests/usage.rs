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
use sluice_shards::usage::{
    Counter, UsageSums, HOUR_SECS, MINUTE_SECS, QUERY_BUCKETS_MAX, USAGE_RETENTION,
};
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

/// Every count of `basin` (`""`: no basin) by minute, over the minutes in `from..to`.
async fn minutes(shard: &Rc<Shard>, basin: &str, from: u64, to: u64) -> UsageSums {
    let (width, sums) = shard
        .usage_sums(Some(basin), from, to, MINUTE_SECS, |_| true)
        .await
        .unwrap();
    assert_eq!(width, MINUTE_SECS);
    sums
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
            let b = basin().as_str().to_owned();
            for _ in 0..2 {
                let expected = BTreeMap::from([
                    ((first, Counter::Op(Operation::CreateStream)), 2),
                    ((first, Counter::Op(Operation::Append)), 2),
                    ((first, Counter::AppendBytes), 150),
                ]);
                assert_eq!(
                    minutes(&shard, &b, first, first + MINUTE_SECS).await,
                    expected
                );
                let account = BTreeMap::from([((first, Counter::Op(Operation::ListBasins)), 1)]);
                assert_eq!(
                    minutes(&shard, "", first, first + MINUTE_SECS).await,
                    account
                );
            }

            // The next minute is a bucket of its own; the first is final and unchanged.
            clock.advance(Duration::from_secs(MINUTE_SECS));
            shard.count_read(&basin(), 7);
            let second = now_minute(&clock);
            assert_eq!(second, first + MINUTE_SECS);
            let rows = minutes(&shard, &b, first, second + MINUTE_SECS).await;
            assert_eq!(rows.len(), 5, "{rows:?}");
            assert_eq!(rows[&(second, Counter::ReadBytes)], 7);
            assert_eq!(rows[&(first, Counter::AppendBytes)], 150);
            // A range is of minute starts: `second..` leaves the first minute out.
            let later = minutes(&shard, &b, second, second + 1).await;
            assert_eq!(later.len(), 2, "{later:?}");
            let active = shard.active_basins(first, second + 1).await.unwrap();
            assert_eq!(active.into_iter().collect::<Vec<_>>(), [b]);
        }
    });
}

/// A 90-day query over many basins and minutes (and writers) reads only its basin's keys
/// and holds at most `QUERY_BUCKETS_MAX` sums per counter: its minutes roll up into hours.
/// Its sums are exactly what the minute rows it covers add up to.
#[test]
fn a_ninety_day_query_is_summed_within_its_bound() {
    const BASINS: usize = 12;
    const WRITERS: u16 = 2;
    const EVERY_MINUTES: u64 = 29;
    let clock = Clock::system();
    let options = EngineOptions {
        clock: clock.clone(),
        ..EngineOptions::default()
    };
    common::with_storage(Arc::new(InMemory::new()), options, move |shard, storage| {
        let clock = clock.clone();
        async move {
            let now = to_next_minute(&clock);
            let start = now - 90 * 86_400;
            let basins: Vec<String> = (0..BASINS).map(|i| format!("usage-basin-{i:02}")).collect();
            // Counts of one minute of one basin from one writer: `append-ops` (n) and
            // `append-bytes` (100 n), n depending on all three.
            let count =
                |b: usize, minute: u64, w: u16| 1 + (b as u64 + minute / 60 + u64::from(w)) % 7;
            let mut expected: BTreeMap<(u64, Counter), u64> = BTreeMap::new();
            let mut keys_written = 0;
            let mut minute = start;
            let mut batch = slatedb::WriteBatch::new();
            while minute < now {
                for (b, name) in basins.iter().enumerate() {
                    for w in 0..WRITERS {
                        let n = count(b, minute, w);
                        let mut value = vec![2u8, 0, 2];
                        for (counter, c) in [("append", n), ("append-bytes", 100 * n)] {
                            value.push(counter.len() as u8);
                            value.extend_from_slice(counter.as_bytes());
                            value.extend_from_slice(&c.to_be_bytes());
                        }
                        batch.put(keys::usage(name, minute, 7 + u64::from(w), w), value);
                        keys_written += 1;
                        if b == 3 {
                            let hour = minute / HOUR_SECS * HOUR_SECS;
                            *expected
                                .entry((hour, Counter::Op(Operation::Append)))
                                .or_insert(0) += n;
                        }
                    }
                }
                if keys_written % 2400 == 0 {
                    storage.write(std::mem::take(&mut batch)).await.unwrap();
                }
                minute += EVERY_MINUTES * MINUTE_SECS;
            }
            storage.write(batch).await.unwrap();
            let rows_read = || async {
                let text = shard.scrape_metrics().await.unwrap();
                text.lines()
                    .find(|l| l.starts_with("sluice_storage_scan_rows_sum"))
                    .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                    .unwrap()
            };
            let before = rows_read().await;
            let (width, sums) = shard
                .usage_sums(Some(&basins[3]), start, now, MINUTE_SECS, |c| {
                    c == Counter::Op(Operation::Append)
                })
                .await
                .unwrap();
            let read = rows_read().await - before;
            assert_eq!(width, HOUR_SECS, "90 days of minutes roll up into hours");
            assert!(
                sums.len() as u64 <= QUERY_BUCKETS_MAX,
                "{} sums",
                sums.len()
            );
            assert_eq!(sums, expected);
            // Every scan counts, background work's too: well under twice its basin's keys
            // (reading every basin's would be twelve times).
            let one_basin = (keys_written / BASINS) as f64;
            assert!(
                read < 2.0 * one_basin,
                "the query read {read} rows for {one_basin} keys of its basin"
            );
        }
    });
}

/// Counts written in the layout before this one (a key per minute and writer, all basins
/// in its value) are moved at start and query as before.
#[test]
fn counts_in_the_old_layout_are_moved_at_start() {
    let store: Arc<dyn slatedb::object_store::ObjectStore> = Arc::new(InMemory::new());
    let minute = 1_800_000_000 / MINUTE_SECS * MINUTE_SECS;
    common::with_storage(
        store.clone(),
        EngineOptions::default(),
        move |_, storage| async move {
            // version 1, 2 entries: (usage-basin, append, 5), ("", list-basins, 2)
            let mut value = vec![1u8, 0, 0, 0, 2];
            for (basin, counter, count) in [("usage-basin", "append", 5u64), ("", "list-basins", 2)]
            {
                value.push(basin.len() as u8);
                value.extend_from_slice(basin.as_bytes());
                value.push(counter.len() as u8);
                value.extend_from_slice(counter.as_bytes());
                value.extend_from_slice(&count.to_be_bytes());
            }
            let mut key = vec![0x07];
            key.extend_from_slice(&minute.to_be_bytes());
            key.extend_from_slice(&42u64.to_be_bytes());
            key.extend_from_slice(&3u16.to_be_bytes());
            let mut batch = slatedb::WriteBatch::new();
            batch.put(key, value);
            storage.write(batch).await.unwrap();
        },
    );
    common::with_storage(
        store,
        EngineOptions::default(),
        move |shard, storage| async move {
            let old = storage
                .scan(keys::minute_usage_all(), usize::MAX)
                .await
                .unwrap();
            assert!(old.is_empty(), "old-layout keys left: {old:?}");
            let basin_sums = minutes(&shard, "usage-basin", minute, minute + 1).await;
            assert_eq!(
                basin_sums,
                BTreeMap::from([((minute, Counter::Op(Operation::Append)), 5)])
            );
            let account = minutes(&shard, "", minute, minute + 1).await;
            assert_eq!(
                account,
                BTreeMap::from([((minute, Counter::Op(Operation::ListBasins)), 2)])
            );
        },
    );
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
            let all = keys::usage_all;
            assert_eq!(storage.scan(all(), usize::MAX).await.unwrap().len(), 2);
            // Not yet 90 days old: kept.
            shard.expire_usage().await.unwrap();
            assert_eq!(storage.scan(all(), usize::MAX).await.unwrap().len(), 2);

            clock.advance(Duration::from_secs(240));
            shard.expire_usage().await.unwrap();
            let left = storage.scan(all(), usize::MAX).await.unwrap();
            assert_eq!(left.len(), 1, "only the recent bucket is left");
            assert!(keys::usage_entry(&left[0].0).unwrap().1 > old);
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
            let in_basin = shard.basin_stored_bytes(&basin()).await.unwrap();
            assert_eq!(in_basin, expiring + first + second);

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
            assert_eq!(shard.basin_stored_bytes(&basin()).await.unwrap(), 0);
        }
    });
}

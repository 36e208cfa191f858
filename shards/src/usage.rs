//! Usage metering for the metrics API: operations and metered bytes per basin, counted in
//! per-minute buckets, and the metered bytes each stream holds.
//!
//! Each shard counts what it serves in memory, with no sharing, and every
//! [`USAGE_FLUSH_INTERVAL`] writes each open minute's counts of each basin under its own
//! key (`1b basin 00 minute boot_id shard`): a writer only ever overwrites its own
//! cumulative counts, so there is no read-modify-write and no contention between shards
//! or across restarts. A minute leaves memory once it is over and written. A query first
//! has every shard write what it holds, then sums the keys of the one basin and the
//! minutes asked for as it scans them, into at most [`QUERY_BUCKETS_MAX`] buckets per
//! counter (a range with more minutes than that is summed by hour, or by day), so it sees
//! everything counted before it and holds a bounded amount whatever the range. Counts not
//! yet written when a process is killed are lost (at most one flush interval's worth); a
//! clean shutdown writes them.
//!
//! Buckets older than [`USAGE_RETENTION`] are deleted by shard 0, a page at a time.
//!
//! Storage is not bucketed: it is measured when asked, as the metered bytes of the runs a
//! stream still holds (at or above its trim point, not expired), and a deleted stream
//! holds nothing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use glommio::sync::Semaphore;
use slatedb::WriteBatch;
use tracing::warn;

use crate::catalogue::{ListRequest, LIST_LIMIT_MAX};
use crate::error::{EngineError, Result, StorageError};
use crate::names::{BasinName, FilterKind, StreamFilter, StreamName};
use crate::segments::index::BatchEntry;
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};
use crate::storage::{Pages, Storage};
use crate::tokens::Operation;

/// How often each shard writes its counts.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How long buckets are kept.
pub const USAGE_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Seconds in a bucket.
pub const MINUTE_SECS: u64 = 60;
/// Seconds in the wider buckets a query may sum into.
pub const HOUR_SECS: u64 = 3600;
pub const DAY_SECS: u64 = 86_400;
/// Most buckets one query sums each counter into; a range with more minutes (or hours)
/// than this is summed by hour (or by day). Three days of minutes, all of 90 days by hour.
pub const QUERY_BUCKETS_MAX: u64 = 4320;
/// Expired bucket keys one retention step deletes.
const RETENTION_PAGE: usize = 1000;
/// Index entries one step of measuring a stream reads.
const MEASURE_PAGE: usize = 5000;
/// Version byte of the old layout's bucket value (every basin of a minute in one value).
const MINUTE_BUCKET_VERSION: u8 = 1;
/// Version byte of a basin's counts in a minute.
const COUNTS_VERSION: u8 = 2;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// Requests of an operation; for appends and reads, batches appended or sent.
    Op(Operation),
    /// Metered bytes appended.
    AppendBytes,
    /// Metered bytes sent to readers.
    ReadBytes,
}

impl Counter {
    /// Persisted: never rename.
    fn name(self) -> &'static str {
        match self {
            Counter::Op(op) => op.as_str(),
            Counter::AppendBytes => "append-bytes",
            Counter::ReadBytes => "read-bytes",
        }
    }

    fn from_name(name: &str) -> Option<Counter> {
        match name {
            "append-bytes" => Some(Counter::AppendBytes),
            "read-bytes" => Some(Counter::ReadBytes),
            _ => name.parse().ok().map(Counter::Op),
        }
    }
}

/// Counts of one minute, by basin ("" for operations on no basin) and counter.
type Bucket = HashMap<(String, Counter), u64>;

/// One shard's counts not yet final in storage.
pub(crate) struct Usage {
    open: RefCell<BTreeMap<u64, Bucket>>,
    /// One permit: flushes run one at a time, so an older snapshot never overwrites a newer
    /// one.
    flushing: Rc<Semaphore>,
    /// Set when something was counted since the last flush began.
    dirty: Cell<bool>,
}

impl Usage {
    pub(crate) fn new() -> Usage {
        Usage {
            open: RefCell::new(BTreeMap::new()),
            flushing: Rc::new(Semaphore::new(1)),
            dirty: Cell::new(false),
        }
    }
}

/// A query's sums: by bucket start (epoch seconds) and counter.
pub type UsageSums = BTreeMap<(u64, Counter), u64>;

/// The bucket width, in seconds, a query over `span_secs` sums into: `asked`, or the first
/// of an hour and a day at least as wide that keeps it within [`QUERY_BUCKETS_MAX`].
pub fn query_interval(asked_secs: u64, span_secs: u64) -> u64 {
    [MINUTE_SECS, HOUR_SECS, DAY_SECS]
        .into_iter()
        .filter(|&width| width >= asked_secs)
        .find(|&width| span_secs / width < QUERY_BUCKETS_MAX)
        .unwrap_or(DAY_SECS)
}

impl Shard {
    /// Count `n` of `counter` against `basin` (`None`: an account operation on no basin).
    pub fn count_usage(&self, basin: Option<&BasinName>, counter: Counter, n: u64) {
        let minute = self.clock.now_millis() / 1000 / MINUTE_SECS * MINUTE_SECS;
        let basin = basin.map_or_else(String::new, |b| b.as_str().to_owned());
        *self
            .usage
            .open
            .borrow_mut()
            .entry(minute)
            .or_default()
            .entry((basin, counter))
            .or_insert(0) += n;
        self.usage.dirty.set(true);
    }

    /// An append batch of `bytes` metered bytes was acknowledged.
    pub fn count_append(&self, basin: &BasinName, bytes: u64) {
        self.count_usage(Some(basin), Counter::Op(Operation::Append), 1);
        self.count_usage(Some(basin), Counter::AppendBytes, bytes);
    }

    /// A batch of `bytes` metered bytes went to a reader.
    pub fn count_read(&self, basin: &BasinName, bytes: u64) {
        self.count_usage(Some(basin), Counter::Op(Operation::Read), 1);
        self.count_usage(Some(basin), Counter::ReadBytes, bytes);
    }

    /// Write every open minute's counts; forget the minutes that are over.
    pub async fn flush_usage(&self) -> Result<()> {
        let flushing = self.usage.flushing.clone();
        let _one_at_a_time = flushing
            .acquire_permit(1)
            .await
            .map_err(|_| EngineError::Unavailable("shard stopped"))?;
        if !self.usage.dirty.replace(false) {
            return Ok(());
        }
        let snapshot: Vec<(u64, Vec<(String, Bytes)>)> = self
            .usage
            .open
            .borrow()
            .iter()
            .map(|(&minute, bucket)| (minute, encode_by_basin(bucket)))
            .collect();
        let mut batch = WriteBatch::new();
        let (boot, shard) = (self.storage.boot_id(), self.id as u16);
        for (minute, basins) in &snapshot {
            for (basin, value) in basins {
                batch.put(keys::usage(basin, *minute, boot, shard), value);
            }
        }
        if let Err(e) = self.storage.write(batch).await {
            self.usage.dirty.set(true);
            return Err(e.into());
        }
        // Minutes before the current one receive no more counts: written, they are final.
        let current = self.clock.now_millis() / 1000 / MINUTE_SECS * MINUTE_SECS;
        let mut open = self.usage.open.borrow_mut();
        for (minute, _) in snapshot {
            if minute < current {
                open.remove(&minute);
            }
        }
        if !open.is_empty() {
            // The current minute stays open and is written again next time.
            self.usage.dirty.set(true);
        }
        Ok(())
    }

    /// Have every shard write what it holds, so that a query sees everything counted
    /// before it.
    async fn flush_all_usage(self: &Rc<Self>) -> Result<()> {
        for owner in 0..self.shard_count() {
            self.on_owner(owner, |shard| async move { shard.flush_usage().await })
                .await?;
        }
        Ok(())
    }

    /// The counts of `basin` (`""`: operations on no basin; `None`: every basin and none)
    /// that `wanted` picks, over the minutes starting in `from_secs..to_secs`, across all
    /// shards and earlier processes, summed by bucket of
    /// [`query_interval`]`(interval_secs, span)` as they are read. Returns that width and
    /// the sums: at most [`QUERY_BUCKETS_MAX`] entries per counter picked, whatever the
    /// range and however many basins and writers counted.
    pub async fn usage_sums(
        self: &Rc<Self>,
        basin: Option<&str>,
        from_secs: u64,
        to_secs: u64,
        interval_secs: u64,
        wanted: impl Fn(Counter) -> bool,
    ) -> Result<(u64, UsageSums)> {
        self.flush_all_usage().await?;
        let width = query_interval(interval_secs, to_secs.saturating_sub(from_secs));
        let mut sums = UsageSums::new();
        let basin_asked = basin.is_some();
        let mut basin = match basin {
            Some(basin) => Some(basin.to_owned()),
            None => self.next_usage_basin(None).await?,
        };
        while let Some(name) = basin {
            let mut pages =
                Pages::new(keys::usage_range(&name, from_secs, to_secs), LIST_LIMIT_MAX);
            while let Some(page) = pages.next(&self.storage).await? {
                for (key, value) in &page {
                    let (_, minute) = keys::usage_entry(key).ok_or_else(|| corrupt(key, "key"))?;
                    for (counter, count) in
                        decode_counts(value.clone()).ok_or_else(|| corrupt(key, "value"))?
                    {
                        if wanted(counter) {
                            *sums.entry((minute / width * width, counter)).or_insert(0) += count;
                        }
                    }
                }
            }
            basin = if basin_asked {
                None
            } else {
                self.next_usage_basin(Some(&name)).await?
            };
        }
        Ok((width, sums))
    }

    /// The first basin (`""` included) after `after` with usage keys.
    async fn next_usage_basin(&self, after: Option<&str>) -> Result<Option<String>> {
        let all = keys::usage_all();
        let from = after.map_or(all.start, keys::usage_basin_end);
        let first = self.storage.scan(from..all.end, 1).await?;
        let Some((key, _)) = first.first() else {
            return Ok(None);
        };
        let (basin, _) = keys::usage_entry(key).ok_or_else(|| corrupt(key, "key"))?;
        Ok(Some(basin.to_owned()))
    }

    /// The basins with any count in the minutes starting in `from_secs..to_secs`. Reads
    /// at most two keys per basin that counted anything within the retention period.
    pub async fn active_basins(
        self: &Rc<Self>,
        from_secs: u64,
        to_secs: u64,
    ) -> Result<BTreeSet<String>> {
        self.flush_all_usage().await?;
        let mut active = BTreeSet::new();
        let mut basin = self.next_usage_basin(None).await?;
        while let Some(name) = basin {
            if !name.is_empty()
                && !self
                    .storage
                    .scan(keys::usage_range(&name, from_secs, to_secs), 1)
                    .await?
                    .is_empty()
            {
                active.insert(name.clone());
            }
            basin = self.next_usage_basin(Some(&name)).await?;
        }
        Ok(active)
    }

    /// Delete up to a page of buckets older than the retention period, a basin's at a
    /// time; whether any may be left.
    pub async fn expire_usage(&self) -> Result<bool> {
        let now_secs = self.clock.now_millis() / 1000;
        let Some(cutoff) = now_secs.checked_sub(USAGE_RETENTION.as_secs()) else {
            return Ok(false);
        };
        let mut batch = WriteBatch::new();
        let mut deleted = 0;
        let mut basin = self.next_usage_basin(None).await?;
        while let Some(name) = basin {
            let expired = self
                .storage
                .scan(
                    keys::usage_range(&name, 0, cutoff),
                    RETENTION_PAGE - deleted,
                )
                .await?;
            for (key, _) in &expired {
                batch.delete(key);
            }
            deleted += expired.len();
            if deleted == RETENTION_PAGE {
                break;
            }
            basin = self.next_usage_basin(Some(&name)).await?;
        }
        if deleted > 0 {
            self.storage.write(batch).await?;
        }
        Ok(deleted == RETENTION_PAGE)
    }

    /// The metered bytes a stream holds; 0 once it is being deleted.
    pub async fn stream_stored_bytes(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
    ) -> Result<u64> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let Some(streamer) = shard.streamer(&basin, &stream).await? else {
                return Err(EngineError::StreamNotFound { basin, stream });
            };
            let (id, trim_point) = {
                let s = streamer.borrow();
                if s.is_deleted() {
                    return Ok(0);
                }
                (s.meta.id.0, s.durable_trim_point())
            };
            shard.measure_runs(id, trim_point).await
        })
        .await
    }

    /// The metered bytes of a stream's runs that end at or above `trim_point` and have not
    /// expired.
    async fn measure_runs(&self, id: u128, trim_point: u64) -> Result<u64> {
        let end = keys::stream_id_range(KeyKind::BatchIndex, id).end;
        let mut pages = Pages::new(keys::batch_index(id, trim_point)..end, MEASURE_PAGE);
        let now_ms = self.clock.now_millis();
        let mut total = 0u64;
        while let Some(rows) = pages.next(&self.storage).await? {
            for (key, value) in &rows {
                let entry = BatchEntry::decode(value).ok_or_else(|| corrupt(key, "batch entry"))?;
                if !entry.expired(now_ms) {
                    total += entry.metered_bytes;
                }
            }
        }
        Ok(total)
    }

    /// The metered bytes every stream of a basin holds, summed as the streams are listed
    /// (a page of them held at a time).
    pub async fn basin_stored_bytes(self: &Rc<Self>, basin: &BasinName) -> Result<u64> {
        let mut total = 0u64;
        let mut after = StreamFilter::default();
        loop {
            let request = ListRequest {
                prefix: StreamFilter::default(),
                start_after: after,
                limit: LIST_LIMIT_MAX,
            };
            let page = self.list_streams(basin, request).await?;
            for info in page.items.iter().filter(|info| info.deleted_at.is_none()) {
                match self
                    .stream_stored_bytes(basin.clone(), info.name.clone())
                    .await
                {
                    Ok(bytes) => total += bytes,
                    // Deleted since it was listed.
                    Err(EngineError::StreamNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.items.last() {
                Some(last) if page.has_more => {
                    after = StreamFilter::parse(last.name.as_str(), FilterKind::StartAfter)
                        .map_err(|e| EngineError::Invalid(e.0))?;
                }
                _ => return Ok(total),
            }
        }
    }
}

/// Each shard's flusher; shard 0 also deletes expired buckets.
pub(crate) async fn run(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(USAGE_FLUSH_INTERVAL).await;
        if let Err(e) = shard.flush_usage().await {
            warn!(error = %e, "writing usage counts failed; will retry");
        }
        if shard.id == 0 {
            loop {
                match shard.expire_usage().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        warn!(error = %e, "deleting expired usage buckets failed; will retry");
                        break;
                    }
                }
            }
        }
    }
}

fn corrupt(key: &[u8], what: &str) -> EngineError {
    StorageError::Corrupt {
        key: key.to_vec(),
        reason: format!("undecodable usage {what}"),
    }
    .into()
}

/// Each basin's counts of one minute's bucket, encoded: `version(1) = 2 | entries(2) |
/// (counter_len(1) counter count(8))*`.
fn encode_by_basin(bucket: &Bucket) -> Vec<(String, Bytes)> {
    let mut by_basin: BTreeMap<&str, Vec<(Counter, u64)>> = BTreeMap::new();
    for ((basin, counter), count) in bucket {
        by_basin.entry(basin).or_default().push((*counter, *count));
    }
    by_basin
        .into_iter()
        .map(|(basin, counts)| (basin.to_owned(), encode_counts(&counts)))
        .collect()
}

fn encode_counts(counts: &[(Counter, u64)]) -> Bytes {
    let mut v = BytesMut::with_capacity(3 + counts.len() * 32);
    v.put_u8(COUNTS_VERSION);
    // Fewer counters than `Operation`s and two byte counts: always fits.
    v.put_u16(counts.len() as u16);
    for (counter, count) in counts {
        let name = counter.name();
        v.put_u8(name.len() as u8);
        v.put_slice(name.as_bytes());
        v.put_u64(*count);
    }
    v.freeze()
}

fn decode_counts(mut v: Bytes) -> Option<Vec<(Counter, u64)>> {
    if v.remaining() < 3 || v.get_u8() != COUNTS_VERSION {
        return None;
    }
    let entries = usize::from(v.get_u16());
    let mut out = Vec::with_capacity(entries.min(v.remaining()));
    for _ in 0..entries {
        let counter = Counter::from_name(&short_text(&mut v)?)?;
        if v.remaining() < 8 {
            return None;
        }
        out.push((counter, v.get_u64()));
    }
    v.is_empty().then_some(out)
}

fn short_text(v: &mut Bytes) -> Option<String> {
    let len = usize::from(*v.first()?);
    v.advance(1);
    if v.remaining() < len {
        return None;
    }
    String::from_utf8(v.split_to(len).to_vec()).ok()
}

/// The old layout's value: `version(1) = 1 | entries(4) | (basin_len(1) basin
/// counter_len(1) counter count(8))*`.
fn decode_minute_bucket(mut v: Bytes) -> Option<Vec<(String, Counter, u64)>> {
    if v.remaining() < 5 || v.get_u8() != MINUTE_BUCKET_VERSION {
        return None;
    }
    let entries = v.get_u32() as usize;
    let mut out = Vec::with_capacity(entries.min(v.remaining()));
    for _ in 0..entries {
        let basin = short_text(&mut v)?;
        let counter = Counter::from_name(&short_text(&mut v)?)?;
        if v.remaining() < 8 {
            return None;
        }
        out.push((basin, counter, v.get_u64()));
    }
    v.is_empty().then_some(out)
}

/// Move counts written in the old layout (one key per minute and writer, every basin in
/// its value) to the current one, a page at a time, each key's move in one batch. Runs at
/// start, before any shard serves; a value that does not decode is dropped with a warning
/// (it could not be queried either).
pub(crate) async fn migrate_minute_layout(storage: &Storage) -> Result<()> {
    let mut pages = Pages::new(keys::minute_usage_all(), LIST_LIMIT_MAX);
    while let Some(page) = pages.next(storage).await? {
        let mut batch = WriteBatch::new();
        for (key, value) in &page {
            batch.delete(key);
            let (Some((minute, boot, shard)), Some(rows)) = (
                keys::minute_usage_entry(key),
                decode_minute_bucket(value.clone()),
            ) else {
                warn!(key = ?key, "dropping an undecodable usage bucket of the old layout");
                continue;
            };
            let mut bucket = Bucket::new();
            for (basin, counter, count) in rows {
                *bucket.entry((basin, counter)).or_insert(0) += count;
            }
            for (basin, value) in encode_by_basin(&bucket) {
                batch.put(keys::usage(&basin, minute, boot, shard), value);
            }
        }
        storage.write(batch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_reject_damage() {
        let mut bucket = Bucket::new();
        bucket.insert(("my-basin".to_owned(), Counter::Op(Operation::Append)), 3);
        bucket.insert((String::new(), Counter::Op(Operation::ListBasins)), 1);
        bucket.insert(("my-basin".to_owned(), Counter::ReadBytes), 1 << 40);
        let encoded = encode_by_basin(&bucket);
        let basins: Vec<&str> = encoded.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(basins, ["", "my-basin"]);
        let mut decoded = decode_counts(encoded[1].1.clone()).expect("decodes");
        decoded.sort();
        assert_eq!(
            decoded,
            [
                (Counter::Op(Operation::Append), 3),
                (Counter::ReadBytes, 1 << 40)
            ]
        );
        let value = &encoded[1].1;
        for cut in 0..value.len() {
            assert_eq!(
                decode_counts(value.slice(..cut)),
                None,
                "truncated at {cut}"
            );
        }
        let mut longer = value.to_vec();
        longer.push(0);
        assert_eq!(decode_counts(longer.into()), None);
    }

    #[test]
    fn wide_ranges_sum_into_wider_buckets() {
        let days = |n: u64| n * DAY_SECS;
        assert_eq!(query_interval(MINUTE_SECS, days(1)), MINUTE_SECS);
        assert_eq!(query_interval(MINUTE_SECS, days(3) - 1), MINUTE_SECS);
        assert_eq!(query_interval(MINUTE_SECS, days(3)), HOUR_SECS);
        assert_eq!(query_interval(MINUTE_SECS, days(90)), HOUR_SECS);
        assert_eq!(query_interval(HOUR_SECS, days(1)), HOUR_SECS);
        assert_eq!(query_interval(DAY_SECS, days(1)), DAY_SECS);
        assert_eq!(query_interval(MINUTE_SECS, days(200)), DAY_SECS);
        assert_eq!(query_interval(HOUR_SECS, days(90)), HOUR_SECS);
    }

    #[test]
    fn every_counter_name_parses_back() {
        for op in Operation::all() {
            assert_eq!(
                Counter::from_name(Counter::Op(op).name()),
                Some(Counter::Op(op))
            );
        }
        for counter in [Counter::AppendBytes, Counter::ReadBytes] {
            assert_eq!(Counter::from_name(counter.name()), Some(counter));
        }
        assert_eq!(Counter::from_name("no-such-counter"), None);
    }
}

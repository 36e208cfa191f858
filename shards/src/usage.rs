//! Usage metering for the metrics API: operations and metered bytes per basin, counted in
//! per-minute buckets, and the metered bytes each stream holds.
//!
//! Each shard counts what it serves in memory, with no sharing, and every
//! [`USAGE_FLUSH_INTERVAL`] writes each open minute's counts under its own key
//! (`07 minute boot_id shard`): a writer only ever overwrites its own cumulative counts, so
//! there is no read-modify-write and no contention between shards or across restarts. A
//! minute leaves memory once it is over and written. A query first has every shard write
//! what it holds, then sums the keys of the minutes asked for, so it sees everything
//! counted before it. Counts not yet written when a process is killed are lost (at most one
//! flush interval's worth); a clean shutdown writes them.
//!
//! Buckets older than [`USAGE_RETENTION`] are deleted by shard 0, a page at a time.
//!
//! Storage is not bucketed: it is measured when asked, as the metered bytes of the runs a
//! stream still holds (at or above its trim point, not expired), and a deleted stream
//! holds nothing.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
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
use crate::storage::Pages;
use crate::tokens::Operation;

/// How often each shard writes its counts.
pub const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// How long buckets are kept.
pub const USAGE_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Seconds in a bucket.
pub const MINUTE_SECS: u64 = 60;
/// Expired bucket keys one retention step deletes.
const RETENTION_PAGE: usize = 1000;
/// Index entries one step of measuring a stream reads.
const MEASURE_PAGE: usize = 5000;
/// Version byte of a bucket value.
const BUCKET_VERSION: u8 = 1;

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

/// One writer's count of one counter of one basin in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub minute_secs: u64,
    pub basin: String,
    pub counter: Counter,
    pub count: u64,
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
        let snapshot: Vec<(u64, Bytes)> = self
            .usage
            .open
            .borrow()
            .iter()
            .map(|(&minute, bucket)| (minute, encode_bucket(bucket)))
            .collect();
        let mut batch = WriteBatch::new();
        let (boot, shard) = (self.storage.boot_id(), self.id as u16);
        for (minute, value) in &snapshot {
            batch.put(keys::usage(*minute, boot, shard), value);
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

    /// Every count of the minutes starting in `from_secs..to_secs`, across all shards
    /// and earlier processes, after every shard has written what it holds.
    pub async fn usage_rows(
        self: &Rc<Self>,
        from_secs: u64,
        to_secs: u64,
    ) -> Result<Vec<UsageRow>> {
        for owner in 0..self.shard_count() {
            self.on_owner(owner, |shard| async move { shard.flush_usage().await })
                .await?;
        }
        let mut rows = Vec::new();
        let mut pages = Pages::new(keys::usage_range(from_secs, to_secs), LIST_LIMIT_MAX);
        while let Some(page) = pages.next(&self.storage).await? {
            for (key, value) in &page {
                let minute_secs = keys::usage_minute(key).ok_or_else(|| corrupt(key, "key"))?;
                for (basin, counter, count) in
                    decode_bucket(value.clone()).ok_or_else(|| corrupt(key, "value"))?
                {
                    rows.push(UsageRow {
                        minute_secs,
                        basin,
                        counter,
                        count,
                    });
                }
            }
        }
        Ok(rows)
    }

    /// Delete a page of buckets older than the retention period; whether any were left.
    pub async fn expire_usage(&self) -> Result<bool> {
        let now_secs = self.clock.now_millis() / 1000;
        let Some(cutoff) = now_secs.checked_sub(USAGE_RETENTION.as_secs()) else {
            return Ok(false);
        };
        let expired = self
            .storage
            .scan(keys::usage_range(0, cutoff), RETENTION_PAGE)
            .await?;
        if expired.is_empty() {
            return Ok(false);
        }
        let mut batch = WriteBatch::new();
        for (key, _) in &expired {
            batch.delete(key);
        }
        self.storage.write(batch).await?;
        Ok(expired.len() == RETENTION_PAGE)
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

    /// The metered bytes of every stream of a basin, by stream name.
    pub async fn basin_stored_bytes(
        self: &Rc<Self>,
        basin: &BasinName,
    ) -> Result<Vec<(StreamName, u64)>> {
        let mut out = Vec::new();
        let mut after = StreamFilter::default();
        loop {
            let request = ListRequest {
                prefix: StreamFilter::default(),
                start_after: after,
                limit: LIST_LIMIT_MAX,
            };
            let page = self.list_streams(basin, request).await?;
            for info in &page.items {
                let bytes = match info.deleted_at {
                    Some(_) => 0,
                    None => match self
                        .stream_stored_bytes(basin.clone(), info.name.clone())
                        .await
                    {
                        Ok(bytes) => bytes,
                        // Deleted since it was listed.
                        Err(EngineError::StreamNotFound { .. }) => 0,
                        Err(e) => return Err(e),
                    },
                };
                out.push((info.name.clone(), bytes));
            }
            match page.items.last() {
                Some(last) if page.has_more => {
                    after = StreamFilter::parse(last.name.as_str(), FilterKind::StartAfter)
                        .map_err(|e| EngineError::Invalid(e.0))?;
                }
                _ => return Ok(out),
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

/// `version(1) | entries(4) | (basin_len(1) basin counter_len(1) counter count(8))*`
fn encode_bucket(bucket: &Bucket) -> Bytes {
    let mut v = BytesMut::with_capacity(5 + bucket.len() * 40);
    v.put_u8(BUCKET_VERSION);
    v.put_u32(bucket.len() as u32);
    for ((basin, counter), count) in bucket {
        let name = counter.name();
        v.put_u8(basin.len() as u8);
        v.put_slice(basin.as_bytes());
        v.put_u8(name.len() as u8);
        v.put_slice(name.as_bytes());
        v.put_u64(*count);
    }
    v.freeze()
}

fn decode_bucket(mut v: Bytes) -> Option<Vec<(String, Counter, u64)>> {
    if v.remaining() < 5 || v.get_u8() != BUCKET_VERSION {
        return None;
    }
    let entries = v.get_u32() as usize;
    let mut out = Vec::with_capacity(entries.min(v.remaining()));
    let text = |v: &mut Bytes| -> Option<String> {
        let len = usize::from(*v.first()?);
        v.advance(1);
        if v.remaining() < len {
            return None;
        }
        String::from_utf8(v.split_to(len).to_vec()).ok()
    };
    for _ in 0..entries {
        let basin = text(&mut v)?;
        let counter = Counter::from_name(&text(&mut v)?)?;
        if v.remaining() < 8 {
            return None;
        }
        out.push((basin, counter, v.get_u64()));
    }
    v.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_and_reject_damage() {
        let mut bucket = Bucket::new();
        bucket.insert(("my-basin".to_owned(), Counter::Op(Operation::Append)), 3);
        bucket.insert((String::new(), Counter::Op(Operation::ListBasins)), 1);
        bucket.insert(("my-basin".to_owned(), Counter::ReadBytes), 1 << 40);
        let encoded = encode_bucket(&bucket);
        let mut decoded = decode_bucket(encoded.clone()).expect("decodes");
        decoded.sort();
        let mut expected: Vec<_> = bucket.into_iter().map(|((b, c), n)| (b, c, n)).collect();
        expected.sort();
        assert_eq!(decoded, expected);
        for cut in 0..encoded.len() {
            assert_eq!(
                decode_bucket(encoded.slice(..cut)),
                None,
                "truncated at {cut}"
            );
        }
        let mut longer = encoded.to_vec();
        longer.push(0);
        assert_eq!(decode_bucket(longer.into()), None);
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

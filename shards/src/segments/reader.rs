//! Reading records back: the batch index says which runs hold a range of seq_nums, and
//! their bytes come from the shard's cache of recent runs or from ranged GETs of their
//! segments (adjacent runs of one segment in one GET, several GETs at once).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use super::format;
use super::index::BatchEntry;
use super::SegmentId;
use crate::config::Cipher;
use crate::crypto::EncryptionKey;
use crate::error::{EngineError, Result, StorageError};
use crate::records::SequencedRecord;
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};
use crate::streamer::codec;

/// Bytes of recent runs each shard keeps in memory, so that readers just behind the tail
/// (and followers of sealed streams) are served without a GET.
pub const SEGMENT_CACHE_BYTES_MAX: usize = 32 << 20;
/// Index entries one read step looks at.
const RUNS_PER_READ_MAX: usize = 64;

/// Recently written runs, by segment and offset, evicted oldest first once their bytes
/// pass the bound.
pub(crate) struct SegmentCache {
    bytes_max: usize,
    bytes: usize,
    runs: HashMap<(SegmentId, u32), Vec<Bytes>>,
    order: VecDeque<((SegmentId, u32), usize)>,
}

impl SegmentCache {
    pub(crate) fn new(bytes_max: usize) -> SegmentCache {
        SegmentCache {
            bytes_max,
            bytes: 0,
            runs: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Keep the body of the run at `offset` of `segment`.
    pub(crate) fn insert(&mut self, segment: SegmentId, offset: u32, chunks: Vec<Bytes>) {
        let size: usize = chunks.iter().map(Bytes::len).sum();
        if size > self.bytes_max {
            return;
        }
        if self.runs.insert((segment, offset), chunks).is_some() {
            return;
        }
        self.order.push_back(((segment, offset), size));
        self.bytes += size;
        while self.bytes > self.bytes_max {
            let Some((key, size)) = self.order.pop_front() else {
                break;
            };
            self.runs.remove(&key);
            self.bytes -= size;
        }
    }

    /// The body of a cached run, as one buffer.
    pub(crate) fn get(&mut self, segment: SegmentId, offset: u32) -> Option<Bytes> {
        let chunks = self.runs.get_mut(&(segment, offset))?;
        // Join once: later reads of the same run share the joined copy.
        let whole = format::concat(chunks);
        *chunks = vec![whole.clone()];
        Some(whole)
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Shard {
    /// Live (unexpired) records of stream `id` in `[from, end)`, at most `max_records` of
    /// them and stopping once their metered bytes reach `max_bytes` (so a caller's byte
    /// limit can always be met from what is returned). Also returns the seq_num after the
    /// last record looked at, so a stretch of only expired or trimmed records still makes
    /// progress.
    pub(crate) async fn scan_records(
        &self,
        id: u128,
        from: u64,
        end: u64,
        max_records: usize,
        max_bytes: usize,
        key: Option<&(Cipher, EncryptionKey)>,
    ) -> Result<(Vec<SequencedRecord>, u64)> {
        if from >= end {
            return Ok((Vec::new(), from));
        }
        let stream_end = keys::stream_id_range(KeyKind::BatchIndex, id).end;
        let rows = self
            .storage
            .scan(keys::batch_index(id, from)..stream_end, RUNS_PER_READ_MAX)
            .await?;
        let now = self.clock.now_millis();
        let mut wanted = Vec::new();
        let mut planned_bytes = 0usize;
        let mut planned_records = 0usize;
        let mut next = end;
        let mut previous_end = 0;
        for (row_key, value) in rows {
            let entry =
                BatchEntry::decode(&value).ok_or_else(|| corrupt(&row_key, "bad index entry"))?;
            // Paired with the writer's check that a run is indexed right after what is
            // durable; expired runs may leave gaps, never overlaps.
            debug_assert!(
                entry.first_seq_num >= previous_end,
                "index entries of a stream never overlap"
            );
            previous_end = entry.end_seq_num();
            if entry.first_seq_num >= end {
                break;
            }
            if planned_records >= max_records || planned_bytes >= max_bytes {
                next = entry.first_seq_num.max(from);
                break;
            }
            next = entry.end_seq_num().min(end);
            if entry.expired(now) {
                continue;
            }
            let first = entry.first_seq_num.max(from);
            planned_records += (entry.end_seq_num().min(end) - first) as usize;
            planned_bytes += entry.length as usize;
            wanted.push(entry);
        }
        let bodies = self.run_bodies(id, &wanted).await?;
        let mut records = Vec::new();
        let mut bytes = 0usize;
        for (entry, body) in wanted.iter().zip(bodies) {
            let values = format::split_records(body, entry.record_count)
                .map_err(|e| corrupt_run(entry, &e.to_string()))?;
            for (i, value) in values.into_iter().enumerate() {
                let seq_num = entry.first_seq_num + i as u64;
                if seq_num < from || seq_num >= end {
                    continue;
                }
                if records.len() >= max_records || bytes >= max_bytes {
                    return Ok((records, seq_num));
                }
                let stored = decode(id, seq_num, value, key)?;
                if stored.expires_at_ms.is_none_or(|at| at > now) {
                    bytes += stored.record.metered_bytes();
                    records.push(stored.record);
                }
            }
        }
        Ok((records, next))
    }

    /// The bodies of `entries` (runs of stream `id`), from the cache or the store.
    async fn run_bodies(&self, id: u128, entries: &[BatchEntry]) -> Result<Vec<Bytes>> {
        let mut bodies: Vec<Option<Bytes>> = {
            let mut cache = self.segment_cache.borrow_mut();
            entries
                .iter()
                .map(|e| cache.get(e.segment, e.offset))
                .collect()
        };
        // Adjacent runs of one segment that the cache lacks: one GET each stretch.
        let mut gets: Vec<(SegmentId, u64, u64, Vec<usize>)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if bodies[i].is_some() {
                continue;
            }
            let start = u64::from(e.offset);
            let end = start + u64::from(e.length);
            match gets.last_mut() {
                Some((segment, _, last_end, members))
                    if *segment == e.segment && *last_end == start =>
                {
                    *last_end = end;
                    members.push(i);
                }
                _ => gets.push((e.segment, start, end, vec![i])),
            }
        }
        let fetched = futures::future::try_join_all(gets.iter().map(|(segment, start, end, _)| {
            self.storage.get_segment_range(*segment, *start..*end)
        }))
        .await?;
        for ((_, start, _, members), bytes) in gets.iter().zip(fetched) {
            for &i in members {
                let e = &entries[i];
                let at = (u64::from(e.offset) - start) as usize;
                let run = bytes.slice(at..at + e.length as usize);
                let body = format::check_run(run, id, e.first_seq_num, e.record_count)
                    .map_err(|err| corrupt_run(e, &err.to_string()))?;
                bodies[i] = Some(body);
            }
        }
        Ok(bodies.into_iter().map(|b| b.unwrap_or_default()).collect())
    }
}

fn corrupt(key: &[u8], reason: &str) -> EngineError {
    EngineError::Storage(StorageError::Corrupt {
        key: key.to_vec(),
        reason: reason.to_owned(),
    })
}

fn corrupt_run(entry: &BatchEntry, reason: &str) -> EngineError {
    EngineError::Storage(StorageError::Corrupt {
        key: format!("segment {:032x} @{}", entry.segment.0, entry.offset).into_bytes(),
        reason: reason.to_owned(),
    })
}

fn decode(
    id: u128,
    seq_num: u64,
    value: Bytes,
    cipher_key: Option<&(Cipher, EncryptionKey)>,
) -> Result<codec::StoredRecord> {
    codec::decode_record(id, seq_num, value, cipher_key).map_err(|e| match e {
        codec::DecodeError::Undecodable(reason) => EngineError::Storage(StorageError::Corrupt {
            key: format!("record {seq_num} of stream {id:032x}").into_bytes(),
            reason: reason.to_owned(),
        }),
        codec::DecodeError::DecryptionFailed => EngineError::DecryptionFailed,
        codec::DecodeError::KeyRequired(cipher) => EngineError::EncryptionKey(format!(
            "missing encryption key for stream cipher '{}'",
            cipher.name()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_evicts_oldest_first_at_its_bound() {
        let mut cache = SegmentCache::new(100);
        let run = |n: usize| {
            vec![
                Bytes::from(vec![1u8; n / 2]),
                Bytes::from(vec![2u8; n - n / 2]),
            ]
        };
        cache.insert(SegmentId(1), 0, run(40));
        cache.insert(SegmentId(1), 40, run(40));
        assert_eq!(cache.bytes(), 80);
        let joined = cache.get(SegmentId(1), 0).unwrap();
        assert_eq!(joined.len(), 40);
        assert_eq!(&joined[..20], &[1u8; 20]);
        cache.insert(SegmentId(2), 0, run(40));
        assert_eq!(cache.bytes(), 80, "bound of 100 bytes held");
        assert!(
            cache.get(SegmentId(1), 0).is_none(),
            "the oldest run went first"
        );
        assert!(cache.get(SegmentId(1), 40).is_some());
        assert!(cache.get(SegmentId(2), 0).is_some());
        cache.insert(SegmentId(3), 0, run(101));
        assert!(
            cache.get(SegmentId(3), 0).is_none(),
            "a run larger than the cache is not kept"
        );
        cache.insert(SegmentId(4), 0, run(100));
        assert_eq!(cache.bytes(), 100);
        assert!(cache.get(SegmentId(2), 0).is_none());
    }
}

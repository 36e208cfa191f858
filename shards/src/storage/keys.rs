//! The SlateDB key layout. Every persisted key starts with a one-byte kind.
//!
//! | kind | key                                          | value                       |
//! |------|----------------------------------------------|-----------------------------|
//! | 0x01 | `01 basin`                                   | [`BasinMeta`] as JSON        |
//! | 0x02 | `02 basin 00 stream`                         | [`StreamMeta`] as JSON       |
//! | 0x03 | `03 basin`                                   | empty: basin deletion queued |
//! | 0x04 | `04 basin 00 stream`                         | empty: stream cleanup queued |
//! | 0x05 | `05 token_id`                                | access token (`tokens`), JSON: info and SHA-256 of its secret |
//! | 0x06 | `06 sha256(secret)(32)`                      | the token id with that secret |
//! | 0x07 | `07 minute_secs(8) boot_id(8) shard(2)`      | one shard's usage counts for that minute (`usage`) |
//! | 0x11 | `11 id(16) last_timestamp(8) first_seq(8)`   | empty: one per run           |
//! | 0x12 | `12 id(16)`                                  | stream state (`streamer::codec`) |
//! | 0x13 | `13 deadline_ms(8) basin 00 stream`          | empty: delete-on-empty check due |
//! | 0x14 | `14 basin 00 stream`                         | empty: trimmed records to remove |
//! | 0x17 | `17 segment_id(16)`                          | segment record (`segments::index`) |
//! | 0x18 | `18 id(16) last_seq(8)`                      | batch index entry (`segments::index`) |
//! | 0x19 | `19 segment_id(16) id(16) last_seq(8)`       | segment reference (`segments::index`) |
//! | 0x1a | `1a`                                         | log watermark (`segments::log`): position(8) epoch(8) |
//!
//! Record payloads are not here: they live in segment objects (`segments::format`), and a
//! run of one stream's records is found through its `18` entry. `0x10` (records stored in
//! SlateDB, before segments) is retired and never reused.
//!
//! Integers are big-endian so keys sort numerically. `id` is the stream's random 128-bit
//! id (`StreamMeta::id`), so records never depend on names. The `11` index has one entry
//! per run keyed by the batch's last timestamp: timestamps never decrease along a
//! stream, so the first entry with `last_timestamp >= T` names the batch holding the first
//! record at or after `T`.
//!
//! Names never contain NUL, so `00` separates basin from stream and keeps streams of one
//! basin contiguous and sorted by name. Nothing here depends on the shard count.
//!
//! [`BasinMeta`]: crate::catalogue::BasinMeta
//! [`StreamMeta`]: crate::catalogue::StreamMeta

use bytes::{BufMut, Bytes, BytesMut};

use crate::names::{BasinName, StreamName};
use crate::tokens::{SecretHash, TokenId};

/// Key kinds. Persisted: never renumber.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    BasinMeta = 0x01,
    StreamMeta = 0x02,
    BasinDeletion = 0x03,
    StreamCleanup = 0x04,
    Token = 0x05,
    TokenBySecret = 0x06,
    /// The layout before `UsageByBasin`: one key per minute and writer, all basins in its
    /// value. Only start-up migration reads it.
    Usage = 0x07,
    TimestampIndex = 0x11,
    StreamState = 0x12,
    DeleteOnEmptyDeadline = 0x13,
    TrimCleanup = 0x14,
    Segment = 0x17,
    BatchIndex = 0x18,
    SegmentRef = 0x19,
    LogWatermark = 0x1a,
    UsageByBasin = 0x1b,
    WalStoreId = 0x1c,
}

const SEPARATOR: u8 = 0x00;

fn with_kind(kind: KeyKind, rest: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(1 + rest.len());
    k.put_u8(kind as u8);
    k.put_slice(rest);
    k.freeze()
}

fn basin_stream(kind: KeyKind, basin: &BasinName, stream: &[u8]) -> Bytes {
    let mut k = BytesMut::with_capacity(2 + basin.as_str().len() + stream.len());
    k.put_u8(kind as u8);
    k.put_slice(basin.as_str().as_bytes());
    k.put_u8(SEPARATOR);
    k.put_slice(stream);
    k.freeze()
}

/// The first key after `key` in byte order: where the next page of a scan starts.
/// The end of the range of keys that start with `namespace`.
pub fn namespace_end(namespace: &[u8]) -> Bytes {
    prefix_end(namespace, b"")
}

pub fn successor(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

pub fn basin_meta(basin: &BasinName) -> Bytes {
    with_kind(KeyKind::BasinMeta, basin.as_str().as_bytes())
}

pub fn basin_deletion(basin: &BasinName) -> Bytes {
    with_kind(KeyKind::BasinDeletion, basin.as_str().as_bytes())
}

pub fn stream_meta(basin: &BasinName, stream: &StreamName) -> Bytes {
    basin_stream(KeyKind::StreamMeta, basin, stream.as_str().as_bytes())
}

pub fn stream_cleanup(basin: &BasinName, stream: &StreamName) -> Bytes {
    basin_stream(KeyKind::StreamCleanup, basin, stream.as_str().as_bytes())
}

pub fn trim_cleanup(basin: &BasinName, stream: &StreamName) -> Bytes {
    basin_stream(KeyKind::TrimCleanup, basin, stream.as_str().as_bytes())
}

/// A delete-on-empty check of a stream due at `deadline_ms`. Sorted by deadline, so the
/// due checks are one range scan.
pub fn doe_deadline(deadline_ms: u64, basin: &BasinName, stream: &StreamName) -> Bytes {
    let mut k = BytesMut::with_capacity(11 + basin.as_str().len() + stream.as_str().len());
    k.put_u8(KeyKind::DeleteOnEmptyDeadline as u8);
    k.put_u64(deadline_ms);
    k.put_slice(basin.as_str().as_bytes());
    k.put_u8(SEPARATOR);
    k.put_slice(stream.as_str().as_bytes());
    k.freeze()
}

/// Every delete-on-empty check due at or before `now_ms`.
pub fn doe_due(now_ms: u64) -> std::ops::Range<Bytes> {
    let start = Bytes::from_static(&[KeyKind::DeleteOnEmptyDeadline as u8]);
    let mut end = BytesMut::with_capacity(9);
    end.put_u8(KeyKind::DeleteOnEmptyDeadline as u8);
    end.put_u64(now_ms.saturating_add(1));
    start..end.freeze()
}

/// `(basin, stream)` of a `13` deadline key.
pub fn doe_deadline_entry(key: &[u8]) -> Option<(BasinName, StreamName)> {
    let rest = key.get(9..)?;
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(KeyKind::DeleteOnEmptyDeadline as u8);
    k.extend_from_slice(rest);
    basin_stream_from_key(&k)
}

fn with_id(kind: KeyKind, id: u128, extra: &[u64]) -> Bytes {
    let mut k = BytesMut::with_capacity(17 + 8 * extra.len());
    k.put_u8(kind as u8);
    k.put_u128(id);
    for n in extra {
        k.put_u64(*n);
    }
    k.freeze()
}

/// The batch-index key of the run of stream `id` that ends at `last_seq_num`.
pub fn batch_index(id: u128, last_seq_num: u64) -> Bytes {
    with_id(KeyKind::BatchIndex, id, &[last_seq_num])
}

/// The last seq_num at the end of a `18` batch-index key.
pub fn batch_index_last_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(17..25)?.try_into().ok()?))
}

pub fn segment(segment_id: u128) -> Bytes {
    with_id(KeyKind::Segment, segment_id, &[])
}

/// The one key that says how far the log is indexed: every position up to it is.
pub fn log_watermark() -> Bytes {
    with_kind(KeyKind::LogWatermark, &[])
}

/// The id of the write-ahead store the index was written with (`1c`).
pub fn wal_store_id() -> Bytes {
    with_kind(KeyKind::WalStoreId, &[])
}

/// The segment id of a `17` or `19` key.
pub fn segment_id_of(key: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(key.get(1..17)?.try_into().ok()?))
}

/// Every `17` segment record.
pub fn segments_range() -> std::ops::Range<Bytes> {
    let kind = KeyKind::Segment as u8;
    Bytes::from(vec![kind])..Bytes::from(vec![kind + 1])
}

/// The reference of segment `segment_id` held by the run of stream `id` ending at
/// `last_seq_num`.
pub fn segment_ref(segment_id: u128, id: u128, last_seq_num: u64) -> Bytes {
    let mut k = BytesMut::with_capacity(41);
    k.put_u8(KeyKind::SegmentRef as u8);
    k.put_u128(segment_id);
    k.put_u128(id);
    k.put_u64(last_seq_num);
    k.freeze()
}

/// `(stream id, last_seq_num)` of a `19` reference key.
pub fn segment_ref_entry(key: &[u8]) -> Option<(u128, u64)> {
    let id = u128::from_be_bytes(key.get(17..33)?.try_into().ok()?);
    let last = u64::from_be_bytes(key.get(33..41)?.try_into().ok()?);
    Some((id, last))
}

pub fn timestamp_index(id: u128, last_timestamp: u64, first_seq_num: u64) -> Bytes {
    with_id(
        KeyKind::TimestampIndex,
        id,
        &[last_timestamp, first_seq_num],
    )
}

/// `(last_timestamp, first_seq_num)` of a `11` index key.
pub fn timestamp_index_entry(key: &[u8]) -> Option<(u64, u64)> {
    let ts = u64::from_be_bytes(key.get(17..25)?.try_into().ok()?);
    let seq = u64::from_be_bytes(key.get(25..33)?.try_into().ok()?);
    Some((ts, seq))
}

pub fn stream_state(id: u128) -> Bytes {
    with_id(KeyKind::StreamState, id, &[])
}

/// Every key of one kind that belongs to stream `id`: `[kind id, kind id+1)`.
pub fn stream_id_range(kind: KeyKind, id: u128) -> std::ops::Range<Bytes> {
    let start = with_id(kind, id, &[]);
    let end = match id.checked_add(1) {
        Some(next) => with_id(kind, next, &[]),
        None => Bytes::from(vec![kind as u8 + 1]),
    };
    start..end
}

/// The half-open key range `[start, end)` of names in a sorted namespace that start with
/// `prefix` and sort strictly after `start_after`.
pub struct NameRange {
    pub start: Bytes,
    pub end: Bytes,
}

impl NameRange {
    /// `namespace` is the key prefix shared by every name in the listing (e.g. `01`, or
    /// `02 basin 00`).
    pub fn new(namespace: &[u8], prefix: &[u8], start_after: &[u8]) -> Option<NameRange> {
        let mut start = BytesMut::from(namespace);
        start.put_slice(prefix);
        let mut after = BytesMut::from(namespace);
        after.put_slice(start_after);
        // The smallest key strictly greater than `after` is `after` followed by a zero byte.
        after.put_u8(0);
        let start = if !start_after.is_empty() && after[..] > start[..] {
            after.freeze()
        } else {
            start.freeze()
        };
        let end = prefix_end(namespace, prefix);
        (start < end).then_some(NameRange { start, end })
    }
}

/// The first key after every key that starts with `namespace ++ prefix`.
fn prefix_end(namespace: &[u8], prefix: &[u8]) -> Bytes {
    let mut end: Vec<u8> = [namespace, prefix].concat();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // Unreachable for our namespaces, which always start with a kind byte below 0xff.
    Bytes::from_static(&[u8::MAX; 2])
}

pub fn token(id: &TokenId) -> Bytes {
    with_kind(KeyKind::Token, id.as_str().as_bytes())
}

/// The `05` key of the id bytes a `06` entry holds.
pub fn token_from_id_bytes(id: &[u8]) -> Bytes {
    with_kind(KeyKind::Token, id)
}

pub fn token_by_secret(hash: &SecretHash) -> Bytes {
    with_kind(KeyKind::TokenBySecret, hash)
}

/// One writer's usage counts for one minute: `07 minute_secs(8) boot_id(8) shard(2)`.
/// One writer's counts of one basin (`""`: operations on no basin) in one minute.
pub fn usage(basin: &str, minute_secs: u64, boot_id: u64, shard: u16) -> Bytes {
    let mut k = BytesMut::with_capacity(20 + basin.len());
    k.put_u8(KeyKind::UsageByBasin as u8);
    k.put_slice(basin.as_bytes());
    k.put_u8(SEPARATOR);
    k.put_u64(minute_secs);
    k.put_u64(boot_id);
    k.put_u16(shard);
    k.freeze()
}

/// The usage keys of `basin` for the minutes starting in `from_secs..to_secs`.
pub fn usage_range(basin: &str, from_secs: u64, to_secs: u64) -> std::ops::Range<Bytes> {
    let at = |secs: u64| {
        let mut k = BytesMut::with_capacity(10 + basin.len());
        k.put_u8(KeyKind::UsageByBasin as u8);
        k.put_slice(basin.as_bytes());
        k.put_u8(SEPARATOR);
        k.put_u64(secs);
        k.freeze()
    };
    at(from_secs)..at(to_secs)
}

/// Every usage key.
pub fn usage_all() -> std::ops::Range<Bytes> {
    let kind = KeyKind::UsageByBasin as u8;
    Bytes::from(vec![kind])..Bytes::from(vec![kind + 1])
}

/// The first usage key after every key of `basin`.
pub fn usage_basin_end(basin: &str) -> Bytes {
    let mut k = BytesMut::with_capacity(2 + basin.len());
    k.put_u8(KeyKind::UsageByBasin as u8);
    k.put_slice(basin.as_bytes());
    k.put_u8(SEPARATOR + 1);
    k.freeze()
}

/// The basin and minute of a usage key.
pub fn usage_entry(key: &[u8]) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(&[KeyKind::UsageByBasin as u8])?;
    let basin_len = rest.len().checked_sub(19)?;
    if rest[basin_len] != SEPARATOR {
        return None;
    }
    let basin = std::str::from_utf8(&rest[..basin_len]).ok()?;
    let minute = u64::from_be_bytes(rest[basin_len + 1..basin_len + 9].try_into().ok()?);
    Some((basin, minute))
}

/// The old layout's keys: `07 minute boot_id shard`.
pub fn minute_usage_all() -> std::ops::Range<Bytes> {
    let kind = KeyKind::Usage as u8;
    Bytes::from(vec![kind])..Bytes::from(vec![kind + 1])
}

/// Minute, boot id and shard of an old-layout key.
pub fn minute_usage_entry(key: &[u8]) -> Option<(u64, u64, u16)> {
    let rest = key.strip_prefix(&[KeyKind::Usage as u8])?;
    if rest.len() != 18 {
        return None;
    }
    Some((
        u64::from_be_bytes(rest[..8].try_into().ok()?),
        u64::from_be_bytes(rest[8..16].try_into().ok()?),
        u16::from_be_bytes(rest[16..].try_into().ok()?),
    ))
}

pub fn tokens_namespace() -> Bytes {
    Bytes::from_static(&[KeyKind::Token as u8])
}

pub fn basins_namespace() -> Bytes {
    Bytes::from_static(&[KeyKind::BasinMeta as u8])
}

pub fn streams_namespace(basin: &BasinName) -> Bytes {
    basin_stream(KeyKind::StreamMeta, basin, b"")
}

/// Decode the basin name at the end of a `01 basin` or `03 basin` key.
pub fn basin_from_key(key: &[u8]) -> Option<BasinName> {
    let name = std::str::from_utf8(key.get(1..)?).ok()?;
    name.parse().ok()
}

/// Decode `(basin, stream)` from a `02 …` or `04 …` key.
pub fn basin_stream_from_key(key: &[u8]) -> Option<(BasinName, StreamName)> {
    let rest = key.get(1..)?;
    let sep = rest.iter().position(|&b| b == SEPARATOR)?;
    let basin = std::str::from_utf8(&rest[..sep]).ok()?.parse().ok()?;
    let stream = std::str::from_utf8(&rest[sep + 1..]).ok()?.parse().ok()?;
    Some((basin, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_keys_round_trip_and_group_by_basin() {
        let b: BasinName = "basin-one".parse().unwrap();
        let s: StreamName = "a/b c".parse().unwrap();
        let k = stream_meta(&b, &s);
        assert_eq!(basin_stream_from_key(&k), Some((b.clone(), s)));
        assert!(k.starts_with(&streams_namespace(&b)));
        let other: BasinName = "basin-one-x".parse().unwrap();
        let k2 = stream_meta(&other, &"a".parse().unwrap());
        assert!(!k2.starts_with(&streams_namespace(&b)));
    }

    #[test]
    fn name_range_respects_prefix_and_start_after() {
        let ns = basins_namespace();
        let r = NameRange::new(&ns, b"ab", b"").unwrap();
        assert_eq!(&r.start[..], b"\x01ab");
        assert_eq!(&r.end[..], b"\x01ac");
        let r = NameRange::new(&ns, b"ab", b"abc").unwrap();
        assert_eq!(&r.start[..], b"\x01abc\x00");
        // start_after before the prefix does not widen the range.
        let r = NameRange::new(&ns, b"ab", b"aa").unwrap();
        assert_eq!(&r.start[..], b"\x01ab");
        // start_after past every prefixed name empties it.
        assert!(NameRange::new(&ns, b"ab", b"ac").is_none());
    }
}

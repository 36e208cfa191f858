//! The values that locate and account for runs, stored in SlateDB beside the stream state.
//!
//! Batch index (`18 stream_id(16) last_seq_num(8)`), one entry per run:
//! `version(1) = 2 | segment_id(16) | offset(4) | length(4) | first_seq_num(8) |
//!  record_count(4) | last_timestamp(8) | max_expiry_ms(8, 0 = never) | metered_bytes(8)`
//! Version 1 entries lack `metered_bytes`; their stored length stands in for it.
//! Keyed by the run's *last* seq_num, so the first entry at or after `(id, n)` is the run
//! holding `n` (runs of a stream are dense and ascending).
//!
//! Segment reference (`19 segment_id(16) stream_id(16) last_seq_num(8)`), one per run,
//! written and deleted with its index entry and holding the same value, byte for byte: so
//! a reference says everything about its run (its index keys, its length, its expiry),
//! and "the index entry still equals the reference" is the check that the run has not
//! moved. A segment's live bytes are the sum of its references' lengths; with none left
//! it is garbage. Keyed by segment first, so one range scan sums a segment.
//!
//! Segment record (`17 segment_id(16)`), written with the segment's index entries (or after
//! its PUT failed): `version(1) = 1 | object_bytes(8) | written_ms(8)`. It is what the
//! reclaimer walks; an object with no record is an orphan of a crash between PUT and index.
//!
//! Integers are big-endian. Persisted: change only with a new version byte.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::SegmentId;

const VERSION: u8 = 2;
const V1_BYTES: usize = 53;
const V2_BYTES: usize = 61;
const SEGMENT_RECORD_VERSION: u8 = 1;

/// Where a run lives and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    pub segment: SegmentId,
    pub offset: u32,
    pub length: u32,
    pub first_seq_num: u64,
    pub record_count: u32,
    pub last_timestamp: u64,
    /// When the last of its records expires; `None` if one never does.
    pub max_expiry_ms: Option<u64>,
    /// The records' metered size (SEMANTICS §2): what storage usage is measured in.
    pub metered_bytes: u64,
}

impl BatchEntry {
    pub fn last_seq_num(&self) -> u64 {
        self.first_seq_num + u64::from(self.record_count) - 1
    }

    pub fn end_seq_num(&self) -> u64 {
        self.first_seq_num + u64::from(self.record_count)
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.max_expiry_ms.is_some_and(|at| at <= now_ms)
    }

    pub fn encode(&self) -> Bytes {
        let mut v = BytesMut::with_capacity(V2_BYTES);
        v.put_u8(VERSION);
        v.put_u128(self.segment.0);
        v.put_u32(self.offset);
        v.put_u32(self.length);
        v.put_u64(self.first_seq_num);
        v.put_u32(self.record_count);
        v.put_u64(self.last_timestamp);
        v.put_u64(self.max_expiry_ms.unwrap_or(0));
        v.put_u64(self.metered_bytes);
        v.freeze()
    }

    pub fn decode(mut v: &[u8]) -> Option<BatchEntry> {
        let version = match (v.len(), v.first()) {
            (V1_BYTES, Some(1)) => 1,
            (V2_BYTES, Some(2)) => 2,
            _ => return None,
        };
        v.advance(1);
        let mut entry = BatchEntry {
            segment: SegmentId(v.get_u128()),
            offset: v.get_u32(),
            length: v.get_u32(),
            first_seq_num: v.get_u64(),
            record_count: v.get_u32(),
            last_timestamp: v.get_u64(),
            max_expiry_ms: Some(v.get_u64()).filter(|&t| t != 0),
            metered_bytes: 0,
        };
        entry.metered_bytes = match version {
            1 => u64::from(entry.length),
            _ => v.get_u64(),
        };
        (entry.record_count > 0).then_some(entry)
    }
}

/// A segment the reclaimer tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRecord {
    pub object_bytes: u64,
    pub written_ms: u64,
}

impl SegmentRecord {
    pub fn encode(&self) -> Bytes {
        let mut v = BytesMut::with_capacity(17);
        v.put_u8(SEGMENT_RECORD_VERSION);
        v.put_u64(self.object_bytes);
        v.put_u64(self.written_ms);
        v.freeze()
    }

    pub fn decode(mut v: &[u8]) -> Option<SegmentRecord> {
        if v.len() != 17 || v.get_u8() != SEGMENT_RECORD_VERSION {
            return None;
        }
        Some(SegmentRecord {
            object_bytes: v.get_u64(),
            written_ms: v.get_u64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let e = BatchEntry {
            segment: SegmentId(u128::MAX - 3),
            offset: 24,
            length: 1000,
            first_seq_num: 5,
            record_count: 3,
            last_timestamp: 77,
            max_expiry_ms: Some(9),
            metered_bytes: 640,
        };
        assert_eq!(BatchEntry::decode(&e.encode()), Some(e));
        assert_eq!(e.last_seq_num(), 7);
        let never = BatchEntry {
            max_expiry_ms: None,
            ..e
        };
        assert_eq!(BatchEntry::decode(&never.encode()), Some(never));
        let r = SegmentRecord {
            object_bytes: 1 << 40,
            written_ms: 3,
        };
        assert_eq!(SegmentRecord::decode(&r.encode()), Some(r));
        assert_eq!(BatchEntry::decode(&e.encode()[..60]), None);
        // A version 1 entry: the same fields without the metered size.
        let mut v1 = e.encode()[..53].to_vec();
        v1[0] = 1;
        let old = BatchEntry::decode(&v1).expect("version 1 decodes");
        assert_eq!((old.length, old.metered_bytes), (1000, 1000));
        let mut other_version = e.encode().to_vec();
        other_version[0] = 3;
        assert_eq!(BatchEntry::decode(&other_version), None);
    }
}

//! The segment object format: what one shard's group commit PUTs.
//!
//! A segment is immutable once written and holds *runs*: the consecutive records of one
//! stream that one group commit carried. Every run is located by a batch-index entry
//! (`storage::keys`), so a read fetches exactly one run (or several adjacent ones) with a
//! ranged GET and never needs the rest of the object.
//!
//! ```text
//! segment    := header run*
//! header     := magic "SLSG" (4) | version (1) = 1 | zero (3) | segment_id (16)     24 bytes
//! run        := run_header record*
//! run_header := body_len (4) | record_count (4) | stream_id (16) | first_seq_num (8)
//!               | checksum (8)                                                     40 bytes
//! record     := value_len (4) | value (the record codec of `streamer::codec`)
//! ```
//!
//! Integers are big-endian. `body_len` counts the bytes of the records that follow the run
//! header. `checksum` is XXH3-64 over the first 32 bytes of the run header and then the
//! body, so a torn, truncated or foreign range is detected before any record is decoded;
//! `stream_id` and `first_seq_num` must also match what the index expected. Persisted:
//! change only with a new version byte.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::Xxh3;

use super::SegmentId;

/// Current format version. Persisted: bump for any layout change.
pub const VERSION: u8 = 1;
const MAGIC: &[u8; 4] = b"SLSG";
/// Bytes of the segment header.
pub const HEADER_BYTES: usize = 24;
/// Bytes of a run header.
pub const RUN_HEADER_BYTES: usize = 40;
/// Bytes of a record's length prefix.
pub const RECORD_PREFIX_BYTES: usize = 4;

/// `n` as one of the formats' 32-bit lengths or offsets. Past 4 GiB it would wrap and
/// point reads at the wrong bytes, so it is checked in every build (a panic ends the
/// process); `APPEND_INFLIGHT_BYTES_MAX` keeps every commit far below it.
pub fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("a segment length or offset is under 4 GiB")
}

/// Why bytes read back are not a run of the expected stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("run truncated")]
    Truncated,
    #[error("run checksum mismatch")]
    Checksum,
    #[error("run belongs to another stream or position")]
    Misplaced,
    #[error("record length exceeds run")]
    RecordOverrun,
    #[error("record count does not match run header")]
    Count,
}

/// The segment header.
pub fn encode_header(id: SegmentId) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_BYTES);
    b.put_slice(MAGIC);
    b.put_u8(VERSION);
    b.put_slice(&[0; 3]);
    b.put_u128(id.0);
    b.freeze()
}

/// Check a segment header (used when listing or compacting whole objects).
pub fn decode_header(mut bytes: &[u8]) -> Option<SegmentId> {
    // The reserved bytes must be zero, so that a later version can use them unmistakably.
    if bytes.len() < HEADER_BYTES
        || &bytes[..4] != MAGIC
        || bytes[4] != VERSION
        || bytes[5..8] != [0; 3]
    {
        return None;
    }
    bytes.advance(8);
    Some(SegmentId(bytes.get_u128()))
}

/// Bodies at least this large join a run as chunks of their own instead of being copied:
/// the PUT sends the client's bytes as they arrived. Smaller ones are copied beside their
/// record's prefix, so a run of tiny records is not thousands of chunks.
const SHARED_BODY_BYTES_MIN: usize = 4096;

/// Builds run body chunks: record prefixes and small bodies are copied into an inline
/// buffer, large bodies are shared. Chunk boundaries carry no meaning.
#[derive(Default)]
pub struct ChunkWriter {
    chunks: Vec<Bytes>,
    inline: BytesMut,
    len: usize,
}

impl ChunkWriter {
    pub fn with_capacity(inline_bytes: usize) -> ChunkWriter {
        ChunkWriter {
            chunks: Vec::new(),
            inline: BytesMut::with_capacity(inline_bytes),
            len: 0,
        }
    }

    pub fn put_u8(&mut self, v: u8) {
        self.inline.put_u8(v);
        self.len += 1;
    }

    pub fn put_u32(&mut self, v: u32) {
        self.inline.put_u32(v);
        self.len += 4;
    }

    pub fn put_u64(&mut self, v: u64) {
        self.inline.put_u64(v);
        self.len += 8;
    }

    pub fn put_slice(&mut self, v: &[u8]) {
        self.inline.put_slice(v);
        self.len += v.len();
    }

    /// Add bytes the caller already owns, without copying them if they are large.
    pub fn put_bytes(&mut self, v: &Bytes) {
        if v.len() < SHARED_BODY_BYTES_MIN {
            return self.put_slice(v);
        }
        if !self.inline.is_empty() {
            self.chunks.push(self.inline.split().freeze());
        }
        self.len += v.len();
        self.chunks.push(v.clone());
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(mut self) -> Vec<Bytes> {
        if !self.inline.is_empty() {
            self.chunks.push(self.inline.freeze());
        }
        self.chunks
    }
}

/// `chunks` as one buffer (shared, not copied, when there is only one).
pub fn concat(chunks: &[Bytes]) -> Bytes {
    if let [one] = chunks {
        return one.clone();
    }
    let mut whole = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        whole.put_slice(c);
    }
    whole.freeze()
}

/// The header of a run whose body is `chunks`.
pub fn encode_run_header(
    stream_id: u128,
    first_seq_num: u64,
    record_count: u32,
    chunks: &[Bytes],
) -> Bytes {
    let body_len: usize = chunks.iter().map(Bytes::len).sum();
    let mut h = BytesMut::with_capacity(RUN_HEADER_BYTES);
    h.put_u32(len32(body_len));
    h.put_u32(record_count);
    h.put_u128(stream_id);
    h.put_u64(first_seq_num);
    let mut hasher = Xxh3::new();
    hasher.update(&h);
    for c in chunks {
        hasher.update(c);
    }
    h.put_u64(hasher.digest());
    h.freeze()
}

/// Check a run read from the object store and return its body. `bytes` must be exactly
/// the run, of the stream and position the index named.
pub fn check_run(
    mut bytes: Bytes,
    stream_id: u128,
    first_seq_num: u64,
    record_count: u32,
) -> Result<Bytes, FormatError> {
    if bytes.len() < RUN_HEADER_BYTES {
        return Err(FormatError::Truncated);
    }
    let body_len = u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if bytes.len() - RUN_HEADER_BYTES != body_len {
        return Err(FormatError::Truncated);
    }
    let mut hasher = Xxh3::new();
    hasher.update(&bytes[..32]);
    hasher.update(&bytes[RUN_HEADER_BYTES..]);
    let stored = u64::from_be_bytes(bytes[32..40].try_into().expect("8 bytes"));
    if hasher.digest() != stored {
        return Err(FormatError::Checksum);
    }
    let mut header = bytes.split_to(RUN_HEADER_BYTES);
    header.advance(4);
    let count = header.get_u32();
    let id = header.get_u128();
    let first = header.get_u64();
    if id != stream_id || first != first_seq_num || count != record_count {
        return Err(FormatError::Misplaced);
    }
    Ok(bytes)
}

/// Split a run body into its `count` record values.
pub fn split_records(mut rest: Bytes, count: u32) -> Result<Vec<Bytes>, FormatError> {
    // Every record takes at least its prefix: never allocate for more than the bytes hold.
    if count as usize > rest.len() / RECORD_PREFIX_BYTES {
        return Err(FormatError::Count);
    }
    let mut values = Vec::with_capacity(count as usize);
    while rest.has_remaining() {
        if rest.remaining() < RECORD_PREFIX_BYTES {
            return Err(FormatError::RecordOverrun);
        }
        let n = rest.get_u32() as usize;
        if n > rest.remaining() {
            return Err(FormatError::RecordOverrun);
        }
        values.push(rest.split_to(n));
    }
    if values.len() != count as usize {
        return Err(FormatError::Count);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "under 4 GiB")]
    fn a_run_past_4_gib_is_refused_rather_than_wrapped() {
        // 65 views of one 64 MiB buffer: 4 GiB + 64 MiB of body, 64 MiB of memory.
        let piece = Bytes::from(vec![0u8; 64 << 20]);
        let body = vec![piece; 65];
        encode_run_header(1, 0, 65, &body);
    }

    fn chunks(values: &[&[u8]]) -> Vec<Bytes> {
        let mut w = ChunkWriter::default();
        for v in values {
            w.put_u32(v.len() as u32);
            w.put_bytes(&Bytes::copy_from_slice(v));
        }
        w.finish()
    }

    fn run_bytes(id: u128, first: u64, chunks: &[Bytes], count: u32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_slice(&encode_run_header(id, first, count, chunks));
        for c in chunks {
            b.put_slice(c);
        }
        b.freeze()
    }

    #[test]
    fn runs_round_trip_across_chunks() {
        let big = vec![7u8; SHARED_BODY_BYTES_MIN];
        let chunks = chunks(&[b"a", b"", &big, b"ccc"]);
        assert!(chunks.len() >= 3, "the large body is a chunk of its own");
        let bytes = run_bytes(7, 40, &chunks, 4);
        let body = check_run(bytes, 7, 40, 4).unwrap();
        let values = split_records(body, 4).unwrap();
        assert_eq!(values, vec![&b"a"[..], b"", &big[..], b"ccc"]);
    }

    #[test]
    fn damaged_or_foreign_runs_are_refused() {
        let chunks = chunks(&[b"hello", b"world"]);
        let good = run_bytes(1, 0, &chunks, 2);
        for cut in 0..good.len() {
            assert!(
                check_run(good.slice(..cut), 1, 0, 2).is_err(),
                "cut at {cut}"
            );
        }
        for i in 0..good.len() {
            let mut bad = BytesMut::from(&good[..]);
            bad[i] ^= 0x40;
            assert!(check_run(bad.freeze(), 1, 0, 2).is_err(), "flip at {i}");
        }
        assert_eq!(
            check_run(good.clone(), 2, 0, 2).unwrap_err(),
            FormatError::Misplaced
        );
        assert_eq!(
            check_run(good.clone(), 1, 1, 2).unwrap_err(),
            FormatError::Misplaced
        );
        assert_eq!(
            check_run(good, 1, 0, 3).unwrap_err(),
            FormatError::Misplaced
        );
    }

    #[test]
    fn header_round_trips_and_rejects_foreign_objects() {
        let h = encode_header(SegmentId(0xabc));
        assert_eq!(decode_header(&h), Some(SegmentId(0xabc)));
        assert_eq!(decode_header(b"PAR1 not a segment at all...."), None);
        assert_eq!(decode_header(&h[..10]), None);
        let mut reserved = h.to_vec();
        reserved[6] = 1;
        assert_eq!(
            decode_header(&reserved),
            None,
            "reserved bytes must be zero"
        );
    }

    #[test]
    fn a_count_larger_than_the_bytes_allocates_nothing() {
        assert_eq!(
            split_records(Bytes::from_static(b"\0\0"), u32::MAX).unwrap_err(),
            FormatError::Count
        );
    }
}

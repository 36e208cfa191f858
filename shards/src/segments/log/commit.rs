//! The commit object (segment format version 2): what the committer writes at a log
//! position, and what replay reads back to rebuild the index.
//!
//! ```text
//! commit   := header manifest run*
//! header   := magic "SLSG" (4) | version (1) = 2 | kind (1) | zero (2) | position (8)
//!             | epoch (8) | run_count (4) | manifest_len (4) | manifest_checksum (8)  40 bytes
//! kind     := 0 commit | 1 fence | 2 void          (fences and voids hold no runs)
//! manifest := entry*                               (run_count of them, manifest_len bytes)
//! entry    := length (4) | stream_id (16) | first_seq_num (8) | record_count (4)
//!             | last_timestamp (8) | max_expiry_ms (8, 0 = never) | metered_bytes (8)
//!             | state_len (2) | state | marker_count (2) | (key_len (2) | key)*
//! run      := as in version 1 (`segments::format`): run header with its checksum, records
//! ```
//!
//! Runs follow the manifest in entry order, so a run's offset is the header, the manifest
//! and the lengths of the runs before it. `state` is the stream state after the run
//! (`streamer::codec`), and the markers are the empty-valued keys that become durable with
//! it. `manifest_checksum` is XXH3-64 of the manifest. Integers are big-endian.
//! Persisted: change only with a new version byte.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_64;

use crate::segments::format::{len32, RUN_HEADER_BYTES};

const MAGIC: &[u8; 4] = b"SLSG";
/// Format version of commit objects. Persisted.
pub const VERSION: u8 = 2;
/// Bytes of a commit header.
pub const HEADER_BYTES: usize = 40;
/// Bytes of a manifest entry before its state and markers.
const ENTRY_FIXED_BYTES: usize = 4 + 16 + 8 + 4 + 8 + 8 + 8;
/// A stream state is at most this long (32 fixed bytes and a fencing token of up to 36).
const STATE_BYTES_MAX: usize = 32 + 36;

/// What a log position holds. Persisted: never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Commit = 0,
    /// The first object of a writer; its epoch is its position.
    Fence = 1,
    /// Written to settle a position no writer took.
    Void = 2,
}

/// A commit header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub kind: Kind,
    pub position: u64,
    pub epoch: u64,
    pub run_count: u32,
    pub manifest_len: u32,
    pub manifest_checksum: u64,
}

impl Head {
    /// Where the runs begin.
    pub fn runs_offset(&self) -> usize {
        HEADER_BYTES + self.manifest_len as usize
    }
}

/// One run as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Bytes of the run (its header and records).
    pub length: u32,
    pub stream_id: u128,
    pub first_seq_num: u64,
    pub record_count: u32,
    pub last_timestamp: u64,
    /// When the last of its records expires; `None` if one never does.
    pub max_expiry_ms: Option<u64>,
    pub metered_bytes: u64,
    /// The stream state after the run, encoded.
    pub state: Bytes,
    /// Keys that become durable with the run.
    pub markers: Vec<Bytes>,
}

/// Why bytes are not a commit header or manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("not a version {VERSION} commit header")]
    NotAHeader,
    #[error("commit manifest truncated or malformed")]
    Manifest,
    #[error("commit manifest checksum mismatch")]
    Checksum,
}

impl Entry {
    /// Its encoding, as the shard that sealed the run builds it.
    pub fn encode(&self) -> Bytes {
        let markers: usize = self.markers.iter().map(|k| 2 + k.len()).sum();
        let mut b = BytesMut::with_capacity(ENTRY_FIXED_BYTES + 2 + self.state.len() + 2 + markers);
        b.put_u32(self.length);
        b.put_u128(self.stream_id);
        b.put_u64(self.first_seq_num);
        b.put_u32(self.record_count);
        b.put_u64(self.last_timestamp);
        b.put_u64(self.max_expiry_ms.unwrap_or(0));
        b.put_u64(self.metered_bytes);
        debug_assert!(
            self.state.len() <= STATE_BYTES_MAX,
            "a stream state is short"
        );
        b.put_u16(self.state.len() as u16);
        b.put_slice(&self.state);
        debug_assert!(self.markers.len() <= usize::from(u16::MAX));
        b.put_u16(self.markers.len() as u16);
        for key in &self.markers {
            debug_assert!(key.len() <= usize::from(u16::MAX), "marker keys are short");
            b.put_u16(key.len() as u16);
            b.put_slice(key);
        }
        b.freeze()
    }
}

/// The header of a commit whose manifest is `manifest` (the entries' encodings, in order).
pub fn encode_header(kind: Kind, position: u64, epoch: u64, manifest: &[Bytes]) -> Bytes {
    let manifest_len: usize = manifest.iter().map(Bytes::len).sum();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for entry in manifest {
        hasher.update(entry);
    }
    let mut h = BytesMut::with_capacity(HEADER_BYTES);
    h.put_slice(MAGIC);
    h.put_u8(VERSION);
    h.put_u8(kind as u8);
    h.put_slice(&[0; 2]);
    h.put_u64(position);
    h.put_u64(epoch);
    h.put_u32(len32(manifest.len()));
    h.put_u32(len32(manifest_len));
    h.put_u64(hasher.digest());
    h.freeze()
}

/// A fence or a void: a header with no manifest and no runs.
pub fn encode_marker_object(kind: Kind, position: u64, epoch: u64) -> Bytes {
    encode_header(kind, position, epoch, &[])
}

pub fn decode_header(mut b: &[u8]) -> Result<Head, CommitError> {
    if b.len() < HEADER_BYTES || &b[..4] != MAGIC || b[4] != VERSION || b[6..8] != [0; 2] {
        return Err(CommitError::NotAHeader);
    }
    let kind = match b[5] {
        0 => Kind::Commit,
        1 => Kind::Fence,
        2 => Kind::Void,
        _ => return Err(CommitError::NotAHeader),
    };
    b.advance(8);
    let head = Head {
        kind,
        position: b.get_u64(),
        epoch: b.get_u64(),
        run_count: b.get_u32(),
        manifest_len: b.get_u32(),
        manifest_checksum: b.get_u64(),
    };
    if kind != Kind::Commit && (head.run_count != 0 || head.manifest_len != 0) {
        return Err(CommitError::NotAHeader);
    }
    Ok(head)
}

/// The manifest `head` announces, from its bytes (exactly `head.manifest_len` of them).
pub fn decode_manifest(head: &Head, manifest: Bytes) -> Result<Vec<Entry>, CommitError> {
    if manifest.len() != head.manifest_len as usize {
        return Err(CommitError::Manifest);
    }
    if xxh3_64(&manifest) != head.manifest_checksum {
        return Err(CommitError::Checksum);
    }
    // Every entry takes at least its fixed bytes: never allocate for more than that.
    if head.run_count as usize > manifest.len() / ENTRY_FIXED_BYTES {
        return Err(CommitError::Manifest);
    }
    let mut rest = manifest;
    let mut entries = Vec::with_capacity(head.run_count as usize);
    for _ in 0..head.run_count {
        entries.push(decode_entry(&mut rest).ok_or(CommitError::Manifest)?);
    }
    if rest.has_remaining() {
        return Err(CommitError::Manifest);
    }
    Ok(entries)
}

fn decode_entry(b: &mut Bytes) -> Option<Entry> {
    if b.remaining() < ENTRY_FIXED_BYTES + 2 {
        return None;
    }
    let length = b.get_u32();
    let stream_id = b.get_u128();
    let first_seq_num = b.get_u64();
    let record_count = b.get_u32();
    let last_timestamp = b.get_u64();
    let max_expiry_ms = Some(b.get_u64()).filter(|&t| t != 0);
    let metered_bytes = b.get_u64();
    let state_len = usize::from(b.get_u16());
    if state_len > STATE_BYTES_MAX || b.remaining() < state_len + 2 {
        return None;
    }
    let state = b.split_to(state_len);
    let marker_count = usize::from(b.get_u16());
    let mut markers = Vec::with_capacity(marker_count.min(b.remaining() / 2));
    for _ in 0..marker_count {
        if b.remaining() < 2 {
            return None;
        }
        let len = usize::from(b.get_u16());
        if b.remaining() < len {
            return None;
        }
        markers.push(b.split_to(len));
    }
    if (length as usize) < RUN_HEADER_BYTES || record_count == 0 {
        return None;
    }
    Some(Entry {
        length,
        stream_id,
        first_seq_num,
        record_count,
        last_timestamp,
        max_expiry_ms,
        metered_bytes,
        state,
        markers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream_id: u128, markers: usize) -> Entry {
        Entry {
            length: 100,
            stream_id,
            first_seq_num: 7,
            record_count: 3,
            last_timestamp: 99,
            max_expiry_ms: if markers == 0 { None } else { Some(1234) },
            metered_bytes: 60,
            state: Bytes::from(vec![1u8; 40]),
            markers: (0..markers)
                .map(|i| Bytes::from(vec![0x14, i as u8]))
                .collect(),
        }
    }

    #[test]
    fn header_and_manifest_round_trip() {
        let entries = vec![entry(1, 0), entry(2, 2)];
        let manifest: Vec<Bytes> = entries.iter().map(Entry::encode).collect();
        let header = encode_header(Kind::Commit, 42, 5, &manifest);
        let head = decode_header(&header).unwrap();
        assert_eq!(
            (head.kind, head.position, head.epoch, head.run_count),
            (Kind::Commit, 42, 5, 2)
        );
        let bytes: Bytes = manifest.concat().into();
        assert_eq!(head.runs_offset(), HEADER_BYTES + bytes.len());
        assert_eq!(decode_manifest(&head, bytes).unwrap(), entries);
    }

    #[test]
    fn a_damaged_manifest_or_header_is_refused() {
        let manifest = vec![entry(1, 1).encode()];
        let header = encode_header(Kind::Commit, 1, 1, &manifest);
        let head = decode_header(&header).unwrap();
        let bytes: Bytes = manifest.concat().into();
        for cut in 0..bytes.len() {
            assert!(decode_manifest(&head, bytes.slice(..cut)).is_err());
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[i] ^= 1;
            assert_eq!(
                decode_manifest(&head, bad.into()),
                Err(CommitError::Checksum)
            );
        }
        for i in [0, 4, 5, 6] {
            let mut bad = header.to_vec();
            bad[i] ^= 0x7f;
            assert!(decode_header(&bad).is_err(), "byte {i}");
        }
        assert!(decode_header(&header[..HEADER_BYTES - 1]).is_err());
    }

    #[test]
    fn fences_and_voids_hold_nothing() {
        let fence = encode_marker_object(Kind::Fence, 9, 9);
        let head = decode_header(&fence).unwrap();
        assert_eq!(
            (head.kind, head.epoch, head.runs_offset()),
            (Kind::Fence, 9, 40)
        );
        let mut lying = encode_header(Kind::Void, 9, 9, &[entry(1, 0).encode()]).to_vec();
        lying.truncate(HEADER_BYTES);
        assert!(decode_header(&lying).is_err(), "a void with runs");
    }

    #[test]
    fn a_run_count_larger_than_the_bytes_allocates_nothing() {
        let head = Head {
            kind: Kind::Commit,
            position: 1,
            epoch: 1,
            run_count: u32::MAX,
            manifest_len: 0,
            manifest_checksum: xxh3_64(b""),
        };
        assert_eq!(
            decode_manifest(&head, Bytes::new()),
            Err(CommitError::Manifest)
        );
    }
}

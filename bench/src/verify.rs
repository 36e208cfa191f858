//! Record layout and the chained-hash check every scenario relies on.
//!
//! Each record a writer appends carries four fixed-width ASCII headers:
//!
//! * `w`: the writer id (4 hex digits), so several writers can share a stream;
//! * `i`: the writer's record index, starting at 0 (16 hex digits);
//! * `h`: `hash_i = xxh3_64(body_i, seed = hash_{i-1})`, with `hash_{-1} = 0`
//!   (16 hex digits);
//! * `t`: the send time in microseconds since the process started (16 hex digits).
//!
//! Fixed widths keep the metered size of every record exactly the requested size.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use s2_sdk::types::{AppendRecord, Header, SequencedRecord};

/// Metered size of a record with an empty body: 8 + 2 per header + names + values.
pub const RECORD_OVERHEAD: usize = 8 + 2 * 4 + (1 + 4) + 3 * (1 + 16);

/// The next link of a writer's chain: XXH3 of the body, seeded with the previous link.
pub fn chain_hash(prev: u64, body: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(body, prev)
}

/// Microseconds since the first call in this process; writers and readers share the clock.
pub fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// `len` bytes of xorshift noise, so bodies are not trivially compressible or uniform.
pub fn noise(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// How far apart consecutive bodies start inside a writer's noise pool.
const POOL_SLACK: usize = 64 * 1024;
const POOL_STRIDE: usize = 8191;

/// Produces one writer's records, maintaining its hash chain.
pub struct ChainWriter {
    writer: u16,
    body_len: usize,
    pool: Bytes,
    next_index: u64,
    prev_hash: u64,
}

impl ChainWriter {
    /// A writer whose records each have a metered size of exactly `record_size` bytes.
    pub fn new(writer: u16, record_size: usize) -> Result<Self> {
        if record_size < RECORD_OVERHEAD {
            bail!("record size {record_size} is below the {RECORD_OVERHEAD}-byte header overhead");
        }
        let body_len = record_size - RECORD_OVERHEAD;
        let seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(u64::from(writer) + 1);
        Ok(Self {
            writer,
            body_len,
            pool: noise(body_len + POOL_SLACK, seed),
            next_index: 0,
            prev_hash: 0,
        })
    }

    /// Records produced so far.
    pub fn count(&self) -> u64 {
        self.next_index
    }

    /// The next record of the chain, stamped with `sent_us`.
    pub fn next_record(&mut self, sent_us: u64) -> Result<AppendRecord> {
        let index = self.next_index;
        let offset = (index as usize)
            .wrapping_mul(POOL_STRIDE)
            .wrapping_add(usize::from(self.writer) * 131)
            % POOL_SLACK;
        let body = self.pool.slice(offset..offset + self.body_len);
        let hash = chain_hash(self.prev_hash, &body);
        let headers = [
            Header::new("w", format!("{:04x}", self.writer)),
            Header::new("i", format!("{index:016x}")),
            Header::new("h", format!("{hash:016x}")),
            Header::new("t", format!("{sent_us:016x}")),
        ];
        let record = AppendRecord::new(body)
            .and_then(|record| record.with_headers(headers))
            .map_err(|err| {
                anyhow!(
                    "cannot build record {index} of writer {}: {err}",
                    self.writer
                )
            })?;
        self.next_index += 1;
        self.prev_hash = hash;
        Ok(record)
    }
}

#[derive(Default)]
struct WriterChain {
    next_index: u64,
    prev_hash: u64,
}

/// Checks what a reader receives from one stream: consecutive sequence numbers, and for
/// every writer a gap-free, duplicate-free chain of indexes and hashes.
pub struct ChainVerifier {
    stream: String,
    next_seq: u64,
    writers: BTreeMap<u16, WriterChain>,
}

impl ChainVerifier {
    pub fn new(stream: impl Into<String>, first_seq: u64) -> Self {
        Self {
            stream: stream.into(),
            next_seq: first_seq,
            writers: BTreeMap::new(),
        }
    }

    /// Verifies one record and returns its send time (`t`, microseconds).
    pub fn check(&mut self, record: &SequencedRecord) -> Result<u64> {
        let stream = &self.stream;
        let seq = record.seq_num;
        if seq != self.next_seq {
            let what = if seq < self.next_seq {
                "duplicate or reordered"
            } else {
                "gap"
            };
            bail!(
                "verification failed ({what}): stream {stream}, seq_num {seq}: \
                 expected seq_num {}, got {seq}",
                self.next_seq
            );
        }
        let writer = header_hex(record, "w", stream)? as u16;
        let index = header_hex(record, "i", stream)?;
        let claimed = header_hex(record, "h", stream)?;
        let sent_us = header_hex(record, "t", stream)?;

        let chain = self.writers.entry(writer).or_default();
        if index != chain.next_index {
            let what = if index < chain.next_index {
                "duplicate"
            } else {
                "gap"
            };
            bail!(
                "verification failed ({what}): stream {stream}, seq_num {seq}, writer {writer}: \
                 expected index {}, got {index}",
                chain.next_index
            );
        }
        let expected = chain_hash(chain.prev_hash, &record.body);
        if expected != claimed {
            bail!(
                "verification failed (hash mismatch): stream {stream}, seq_num {seq}, \
                 writer {writer}, index {index}: expected {expected:016x}, got {claimed:016x}"
            );
        }
        chain.next_index += 1;
        chain.prev_hash = expected;
        self.next_seq += 1;
        Ok(sent_us)
    }

    /// Fails unless exactly `expected` records (per writer) were seen.
    pub fn finish(&self, expected: &[(u16, u64)]) -> Result<()> {
        for &(writer, count) in expected {
            let got = self
                .writers
                .get(&writer)
                .map_or(0, |chain| chain.next_index);
            if got != count {
                bail!(
                    "verification failed (count): stream {}, writer {writer}, next seq_num {}: \
                     expected {count} records, got {got}",
                    self.stream,
                    self.next_seq
                );
            }
        }
        if let Some(writer) = self
            .writers
            .keys()
            .find(|writer| !expected.iter().any(|(known, _)| known == *writer))
        {
            bail!(
                "verification failed (unknown writer): stream {}: records from writer {writer}",
                self.stream
            );
        }
        Ok(())
    }
}

fn header_hex(record: &SequencedRecord, name: &str, stream: &str) -> Result<u64> {
    let header = record
        .headers
        .iter()
        .find(|header| &header.name[..] == name.as_bytes())
        .ok_or_else(|| {
            anyhow!(
                "verification failed (missing header `{name}`): stream {stream}, seq_num {}",
                record.seq_num
            )
        })?;
    std::str::from_utf8(&header.value)
        .ok()
        .and_then(|text| u64::from_str_radix(text, 16).ok())
        .ok_or_else(|| {
            anyhow!(
                "verification failed (bad header `{name}`): stream {stream}, seq_num {}: got {:?}",
                record.seq_num,
                String::from_utf8_lossy(&header.value)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use s2_sdk::types::MeteredBytes;

    #[test]
    fn records_have_the_requested_metered_size() {
        let mut writer = ChainWriter::new(3, 1024).unwrap();
        for _ in 0..4 {
            assert_eq!(writer.next_record(now_us()).unwrap().metered_bytes(), 1024);
        }
    }

    #[test]
    fn verifier_accepts_a_chain_and_rejects_a_duplicate() {
        let mut writer = ChainWriter::new(0, 200).unwrap();
        let records: Vec<SequencedRecord> = (0..3)
            .map(|seq| {
                let record = writer.next_record(7).unwrap();
                SequencedRecord::from_parts(
                    seq,
                    0,
                    record.headers().to_vec(),
                    Bytes::copy_from_slice(record.body()),
                )
            })
            .collect();
        let mut verifier = ChainVerifier::new("s", 0);
        for record in &records {
            assert_eq!(verifier.check(record).unwrap(), 7);
        }
        verifier.finish(&[(0, 3)]).unwrap();

        let mut verifier = ChainVerifier::new("s", 0);
        verifier.check(&records[0]).unwrap();
        let mut dup = records[0].clone();
        dup.seq_num = 1;
        assert!(verifier.check(&dup).is_err());
    }
}

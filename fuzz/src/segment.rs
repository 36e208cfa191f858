//! The segment format and its index values, as read back from the object store and
//! SlateDB: headers, runs and batch-index and segment-record values decode or fail cleanly
//! and round-trip; a run built by the writer's encoder checks and splits back into its
//! records, and any single flipped bit in it is caught.

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use sluice_shards::segments::format::{
    check_run, concat, decode_header, encode_header, encode_run_header, split_records, ChunkWriter,
    HEADER_BYTES, RUN_HEADER_BYTES,
};
use sluice_shards::segments::index::{BatchEntry, SegmentRecord};
use sluice_shards::streamer::codec::{decode_record, encode_record_into, Sealing};

use crate::alloc_meter::bounded;

fn decode_any(data: &[u8]) {
    if let Some(id) = decode_header(data) {
        assert_eq!(encode_header(id).as_ref(), &data[..HEADER_BYTES]);
    }
    if let Some(entry) = BatchEntry::decode(data) {
        assert_eq!(BatchEntry::decode(&entry.encode()), Some(entry));
    }
    if let Some(record) = SegmentRecord::decode(data) {
        assert_eq!(SegmentRecord::decode(&record.encode()), Some(record));
    }
    let bytes = Bytes::copy_from_slice(data);
    let bound = 2 * data.len() + (4 << 10);
    if data.len() >= RUN_HEADER_BYTES {
        // The run's own header names its stream and position, so the checksum is reached.
        let count = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes"));
        let id = u128::from_be_bytes(data[8..24].try_into().expect("16 bytes"));
        let first = u64::from_be_bytes(data[24..32].try_into().expect("8 bytes"));
        let _ = bounded("checking a run", bound, || {
            check_run(bytes.clone(), id, first, count)
        });
    }
    if let Some((count, body)) = data.split_first_chunk::<4>() {
        let count = u32::from_be_bytes(*count);
        let body = Bytes::copy_from_slice(body);
        // A vector of `Bytes` handles: 32 bytes for each record of at least 4 bytes.
        let bound = 16 * data.len() + (4 << 10);
        let _ = bounded("splitting a run", bound, || split_records(body, count));
    }
}

#[derive(Debug, Arbitrary)]
struct Run {
    stream_id: u128,
    first_seq_num: u64,
    records: Vec<(u64, Vec<u8>)>,
    flip: usize,
}

fn round_trip(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let run = Run::arbitrary(u)?;
    if run.records.is_empty() {
        return Ok(());
    }
    let mut chunks = ChunkWriter::with_capacity(0);
    for (i, (timestamp, body)) in run.records.iter().enumerate() {
        encode_record_into(
            &mut chunks,
            &Sealing::Plain,
            run.first_seq_num.wrapping_add(i as u64),
            *timestamp,
            None,
            &[],
            &Bytes::copy_from_slice(body),
        );
    }
    let chunks = chunks.finish();
    let count = run.records.len() as u32;
    let header = encode_run_header(run.stream_id, run.first_seq_num, count, &chunks);
    let whole = concat(&[vec![header], chunks].concat());
    let body = check_run(whole.clone(), run.stream_id, run.first_seq_num, count)
        .expect("the writer's run checks");
    let values = split_records(body, count).expect("and splits");
    for (i, (value, (timestamp, body))) in values.into_iter().zip(&run.records).enumerate() {
        let seq_num = run.first_seq_num.wrapping_add(i as u64);
        let stored = decode_record(run.stream_id, seq_num, value, None).expect("decodes");
        assert_eq!(stored.record.timestamp, *timestamp);
        assert_eq!(stored.record.body.as_ref(), body.as_slice());
    }
    let mut flipped = whole.to_vec();
    let bit = run.flip % (flipped.len() * 8);
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(
        check_run(
            Bytes::from(flipped),
            run.stream_id,
            run.first_seq_num,
            count
        )
        .is_err(),
        "a flipped bit is caught"
    );
    Ok(())
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        decode_any(rest);
    } else {
        let _ = round_trip(&mut Unstructured::new(rest));
    }
}

//! Writes the seed corpora (`fuzz/corpus/<target>/seed-*`): well-formed inputs of every
//! decoder as the server's own encoders and the tests' requests produce them, plus the
//! malformed edges the tests check. `make fuzz-seeds` runs it; the fuzzer grows the
//! corpora from there.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use bytes::Bytes;
use prost::Message;
use sluice::wire::coding::Coding;
use sluice::wire::proto::{self, encode_read_batch};
use sluice::wire::s2s::{encode_proto, encode_terminal};
use sluice_shards::records::{Header, Position, ReadBatch, SequencedRecord};
use sluice_shards::segments::format::{encode_header, encode_run_header, ChunkWriter};
use sluice_shards::segments::index::{BatchEntry, SegmentRecord};
use sluice_shards::segments::log::commit;
use sluice_shards::segments::SegmentId;
use sluice_shards::streamer::codec::{encode_record_into, encode_state, Sealing, StreamState};

fn write(target: &str, seeds: &[Vec<u8>]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("seed file");
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn append_input() -> proto::AppendInput {
    proto::AppendInput {
        records: vec![
            proto::AppendRecord {
                timestamp: Some(1_700_000_000_000),
                headers: vec![proto::Header {
                    name: b("content-type"),
                    value: b("text/plain"),
                }],
                body: b("hello"),
            },
            proto::AppendRecord {
                timestamp: None,
                headers: vec![proto::Header {
                    name: b(""),
                    value: b("fence"),
                }],
                body: b("token-1"),
            },
            proto::AppendRecord {
                timestamp: None,
                headers: vec![proto::Header {
                    name: b(""),
                    value: b("trim"),
                }],
                body: Bytes::copy_from_slice(&7u64.to_be_bytes()),
            },
        ],
        match_seq_num: Some(0),
        fencing_token: Some("token-0".to_owned()),
    }
}

fn read_batch() -> ReadBatch {
    ReadBatch {
        records: vec![
            SequencedRecord {
                seq_num: 41,
                timestamp: 1_700_000_000_000,
                headers: vec![Header {
                    name: b("k"),
                    value: b("v"),
                }],
                body: b("a record"),
            },
            SequencedRecord {
                seq_num: 42,
                timestamp: 1_700_000_000_001,
                headers: vec![],
                body: Bytes::from(vec![0xff; 300]),
            },
        ],
        tail: Some(Position {
            seq_num: 43,
            timestamp: 1_700_000_000_001,
        }),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn frame(flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() + 1) as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(flags);
    f.extend_from_slice(payload);
    f
}

fn s2s_frames() -> Vec<Vec<u8>> {
    let big = proto::AppendInput {
        records: (0..40)
            .map(|i| proto::AppendRecord {
                timestamp: None,
                headers: vec![],
                body: Bytes::from(format!("record number {i} of a compressible batch")),
            })
            .collect(),
        match_seq_num: None,
        fencing_token: None,
    };
    let body = big.encode_to_vec();
    let mut seeds = vec![
        encode_proto(&append_input(), Coding::Identity).to_vec(),
        encode_proto(&big, Coding::Zstd).to_vec(),
        encode_proto(&big, Coding::Gzip).to_vec(),
        frame(0x40, &gzip(&body)),
        encode_terminal(412, r#"{"code":"seq_num_mismatch","message":"x"}"#).to_vec(),
        [
            encode_proto(&append_input(), Coding::Identity).to_vec(),
            encode_terminal(503, r#"{"code":"unavailable"}"#).to_vec(),
        ]
        .concat(),
        vec![0, 0, 0],
        vec![0xff, 0xff, 0xff, 0],
        frame(0x60, b"cc 11"),
        frame(0x80, b"\x01"),
        frame(0x80, b"\x01\x90\xff\xfe"),
        encode_proto(&append_input(), Coding::Identity)[..9].to_vec(),
    ];
    // A stride byte first: 0 feeds the body byte by byte, 255 in chunks of 256.
    for (i, seed) in seeds.iter_mut().enumerate() {
        seed.insert(0, [0u8, 3, 255][i % 3]);
    }
    seeds
}

fn json_append() -> Vec<Vec<u8>> {
    let raw = [
        r#"{"records":[{"body":"hello","headers":[["content-type","text/plain"]],"timestamp":5}],"match_seq_num":0,"fencing_token":"t"}"#,
        r#"{"records":[{"headers":[["","fence"]],"body":"new-token"},{"headers":[["","trim"]],"body":"\u0000\u0000\u0000\u0000\u0000\u0000\u0000\u0007"}]}"#,
        r#"{"records":[]}"#,
        r#"{"records":[{}],"fencing_token":"0123456789012345678901234567890123456"}"#,
        r#"{"records":[{"body":"\ud83d\ude00 é"}]}"#,
        r#"{"records":"x"}"#,
    ];
    let base64 = [
        r#"{"records":[{"body":"aGVsbG8=","headers":[["a2V5","dmFsdWU="]]}]}"#,
        r#"{"records":[{"body":"not base64!"}]}"#,
        r#"{"records":[{"headers":[["","dHJpbQ=="]],"body":"AAAAAAAAAAc="}]}"#,
    ];
    raw.iter()
        .map(|s| [&[0u8][..], s.as_bytes()].concat())
        .chain(base64.iter().map(|s| [&[1u8][..], s.as_bytes()].concat()))
        .collect()
}

fn json_configs() -> Vec<Vec<u8>> {
    [
        r#"{"storage_class":"express","retention_policy":{"age":3600},"timestamping":{"mode":"client-require","uncapped":true},"delete_on_empty":{"min_age_secs":60}}"#,
        r#"{"retention_policy":{"infinite":{}},"timestamping":{"mode":"arrival"}}"#,
        r#"{"retention_policy":{"age":0}}"#,
        r#"{"storage_class":null,"retention_policy":null,"timestamping":{"mode":null,"uncapped":null},"delete_on_empty":null}"#,
        r#"{"default_stream_config":{"retention_policy":{"age":86400}},"stream_cipher":"aegis-256","create_stream_on_append":true,"create_stream_on_read":false}"#,
        r#"{"basin":"my-basin","config":{"create_stream_on_append":true},"location":"aws:us-east-1"}"#,
        r#"{"stream":"a/b/c","config":{"timestamping":{"mode":"client-prefer"}}}"#,
        r#"{"basin":"UPPER","config":{}}"#,
        r#"{"stream_cipher":"aes-256-gcm","default_stream_config":null}"#,
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn request_inputs() -> Vec<Vec<u8>> {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    [
        "seq_num=0&count=10&bytes=1024&wait=5&clamp=true\ns2-basin: my-basin\naccept: text/event-stream\nlast-event-id: 5,6,100\ns2-format: base64".to_owned(),
        format!("timestamp=1700000000000&until=1800000000000\ns2-encryption-key: {key}\ns2-stream-config: {{\"retention_policy\":{{\"age\":60}}}}\naccept-encoding: zstd;q=1, gzip\ncontent-type: s2s/proto"),
        "tail_offset=3&seq_num=1\ns2-request-token: abc-123\ncontent-type: application/protobuf\naccept: application/x-protobuf".to_owned(),
        "prefix=a&start_after=b&limit=1001\ns2-basin: -bad-\ncontent-type: application/vnd.s2+json; charset=utf-8".to_owned(),
        "set=append-ops&start=0&end=100&interval=minute\nlast-event-id: 1,2,3,4".to_owned(),
        "set=storage&start=100&end=0\ns2-format: json-binsafe".to_owned(),
        "set=active-basins&start=1&end=4000000000&interval=day\ns2-encryption-key:  ".to_owned(),
        "count=%FF&wait=x\ns2-stream-config: {not json".to_owned(),
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn encoded_record(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut out = ChunkWriter::with_capacity(0);
    encode_record_into(
        &mut out,
        &Sealing::Plain,
        3,
        timestamp,
        Some(1_800_000_000_000),
        &[Header {
            name: b("h"),
            value: b("v"),
        }],
        &Bytes::copy_from_slice(body),
    );
    out.finish().concat()
}

fn stored_record() -> Vec<Vec<u8>> {
    let mut decode_plain = vec![1u8, 0];
    decode_plain.extend_from_slice(&[0; 24]);
    decode_plain.extend_from_slice(&encoded_record(9, b"stored body")[4..]);
    vec![
        decode_plain,
        [&[0u8, 0][..], &[0x11; 96][..]].concat(),
        [&[0u8, 1][..], &[0x22; 96][..]].concat(),
        [&[0u8, 2][..], &[0x33; 96][..]].concat(),
        [&[1u8, 1][..], &[0x44; 120][..]].concat(),
        [&[1u8, 2][..], &[0x55; 120][..]].concat(),
    ]
}

fn stream_state() -> Vec<Vec<u8>> {
    let mut state = StreamState {
        tail: Position {
            seq_num: 100,
            timestamp: 1_700_000_000_000,
        },
        trim_point: 10,
        last_write_ms: 1_700_000_000_000,
        ..StreamState::default()
    };
    let plain = encode_state(&state).to_vec();
    state.fencing_token = sluice_shards::records::FencingToken::new("fence-me".into()).unwrap();
    vec![
        plain,
        encode_state(&state).to_vec(),
        vec![0; 31],
        [vec![0; 32], vec![0xc3]].concat(),
    ]
}

fn segment() -> Vec<Vec<u8>> {
    let id = SegmentId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    let entry = BatchEntry {
        segment: id,
        offset: 24,
        length: 120,
        first_seq_num: 5,
        record_count: 2,
        last_timestamp: 1_700_000_000_000,
        max_expiry_ms: Some(1_800_000_000_000),
        metered_bytes: 64,
    };
    let record = SegmentRecord {
        object_bytes: 4096,
        written_ms: 1_700_000_000_000,
    };
    let chunks = vec![Bytes::from(
        [encoded_record(1, b"first"), encoded_record(2, b"second")].concat(),
    )];
    let run = [
        encode_run_header(7, 5, 2, &chunks).to_vec(),
        chunks[0].to_vec(),
    ]
    .concat();
    let mode0 = |v: &[u8]| [&[0u8][..], v].concat();
    vec![
        mode0(&encode_header(id)),
        mode0(&entry.encode()),
        mode0(
            &BatchEntry {
                max_expiry_ms: None,
                ..entry
            }
            .encode()[..53],
        ),
        mode0(&record.encode()),
        mode0(&run),
        mode0(&[&2u32.to_be_bytes()[..], &chunks[0]].concat()),
        [&[1u8][..], &[0x5a; 80][..]].concat(),
    ]
}

fn commit_manifest() -> Vec<Vec<u8>> {
    let entry = |markers: usize, expiry| commit::Entry {
        length: 120,
        stream_id: 7,
        first_seq_num: 5,
        record_count: 2,
        last_timestamp: 1_700_000_000_000,
        max_expiry_ms: expiry,
        metered_bytes: 64,
        state: encode_state(&StreamState::default()),
        markers: (0..markers)
            .map(|i| Bytes::from(vec![0x14, i as u8]))
            .collect(),
    };
    let manifest = vec![
        entry(0, None).encode(),
        entry(2, Some(1_800_000_000_000)).encode(),
    ];
    let object = |kind, manifest: &[Bytes]| {
        [
            commit::encode_header(kind, 42, 9, manifest).to_vec(),
            manifest.concat(),
        ]
        .concat()
    };
    vec![
        object(commit::Kind::Commit, &manifest),
        object(commit::Kind::Commit, &manifest[..1]),
        commit::encode_marker_object(commit::Kind::Fence, 9, 9).to_vec(),
        commit::encode_marker_object(commit::Kind::Void, 10, 9).to_vec(),
    ]
}

fn sealed_payload() -> Vec<Vec<u8>> {
    vec![
        [&[1u8][..], &[0x01; 80][..]].concat(),
        [&[2u8][..], &[0x02; 80][..]].concat(),
        [&[1u8][..], &[0x03; 40][..], &[0u8][..], &[0x04; 48][..]].concat(),
        [&[2u8][..], &[0x05; 40][..], &[0u8][..], &[0x06; 48][..]].concat(),
    ]
}

fn main() {
    write("s2s_frames", &s2s_frames());
    write(
        "proto_append_input",
        &[
            append_input().encode_to_vec(),
            proto::AppendInput {
                records: vec![],
                match_seq_num: None,
                fencing_token: None,
            }
            .encode_to_vec(),
            vec![0x0a, 0x00, 0x0a, 0x00],
            vec![0x0a, 0xff, 0xff, 0xff, 0x0f],
        ],
    );
    write(
        "proto_read_batch",
        &[
            encode_read_batch(&read_batch()).to_vec(),
            encode_read_batch(&ReadBatch {
                records: vec![],
                tail: None,
            })
            .to_vec(),
        ],
    );
    write("json_append", &json_append());
    write("json_configs", &json_configs());
    write("request_inputs", &request_inputs());
    write("stored_record", &stored_record());
    write("stream_state", &stream_state());
    write("segment", &segment());
    write("commit_manifest", &commit_manifest());
    write("sealed_payload", &sealed_payload());
}

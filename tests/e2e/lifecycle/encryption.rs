//! Encryption at rest with basin stream ciphers: keys sent per request in
//! `S2-Encryption-Key`, plaintext round trips over unary JSON, SSE, S2S and the SDK, key
//! validation, wrong keys, command records and streams without a cipher (SEMANTICS.md §6.6,
//! §9; API.md §5; WIRE.md §4, §5.1).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures::StreamExt;
use s2_sdk::append_session::AppendSessionConfig;
use s2_sdk::types::{
    AppendInput, AppendRecord, AppendRecordBatch, EncryptionKey, Header, ReadFrom, ReadInput,
    ReadLimits, ReadSessionConfig, ReadStart, ReadStop, SequencedRecord,
};
use serde_json::{json, Value};

use super::{
    fence_input, key, listed_streams, next_non_ping, open_s2s_append, open_s2s_read, open_sse,
    proto_append_input, read_records_with, record_bodies, regular_frame, s2s_records,
    sse_batch_records, sse_events_until_done, start, trim_input, BASE64_FORMAT, EVENT_TIMEOUT,
};
use crate::data_plane::{
    append_json, check_tail, create_basin, create_stream, metered, position, read_raw, seq_nums,
};
use crate::harness::{assert_error, basin_name, stream_name, Response};

const CIPHERS: [&str; 2] = ["aegis-256", "aes-256-gcm"];
const KEY_HEADER: &str = "S2-Encryption-Key";

/// A basin with this stream cipher, holding one stream `s` created after the cipher was set.
fn encrypted_stream(port: u16, cipher: &str) -> String {
    let basin = create_basin(port, "lc-enc", json!({ "stream_cipher": cipher }));
    create_stream(port, &basin, "s", None);
    basin
}

/// A JSON append with this key that must succeed; returns the ack.
fn append_with_key(port: u16, basin: &str, stream: &str, key: &str, body: &Value) -> Value {
    let response = append_json(port, basin, stream, &[(KEY_HEADER, key)], body);
    response.expect_status(200);
    response.json()
}

fn assert_decryption_failed(response: &Response, what: &str) {
    let message = assert_error(response, 400, "decryption_failed");
    assert_eq!(message, "record decryption failed", "{what}");
}

// B-240 B-243 B-109
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_records_round_trip_through_unary_json() {
    let server = start();
    let port = server.port();
    for cipher in CIPHERS {
        let basin = encrypted_stream(port, cipher);
        let listed = listed_streams(port, &basin);
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(
            listed[0]["cipher"], cipher,
            "the stream took the basin cipher"
        );

        let k = key(7);
        let ack = append_with_key(
            port,
            &basin,
            "s",
            &k,
            &json!({ "records": [
                { "headers": [["colour", "blue"]], "body": "first secret" },
                { "body": "second" },
                { "headers": [["h", ""]] },
            ] }),
        );
        assert_eq!(position(&ack["start"]).0, 0, "{cipher}");
        assert_eq!(position(&ack["end"]).0, 3, "{cipher}");
        // Check-tail needs no key.
        assert_eq!(
            check_tail(port, &basin, "s"),
            position(&ack["end"]),
            "{cipher}"
        );

        let with_key = [(KEY_HEADER, k.as_str())];
        let records = read_records_with(port, &basin, "s", "seq_num=0", &with_key);
        assert_eq!(seq_nums(&records), vec![0, 1, 2], "{cipher}");
        assert_eq!(
            records[0]["headers"],
            json!([["colour", "blue"]]),
            "{cipher}"
        );
        assert_eq!(records[0]["body"], "first secret", "{cipher}");
        assert_eq!(records[1]["body"], "second", "{cipher}");
        assert!(
            records[1].get("headers").is_none(),
            "{cipher}: {}",
            records[1]
        );
        assert_eq!(records[2]["headers"], json!([["h", ""]]), "{cipher}");
        assert!(records[2].get("body").is_none(), "{cipher}: {}", records[2]);

        let encoded = read_records_with(
            port,
            &basin,
            "s",
            "seq_num=0&count=1",
            &[(KEY_HEADER, k.as_str()), BASE64_FORMAT],
        );
        assert_eq!(
            encoded[0]["body"],
            BASE64.encode("first secret"),
            "{cipher}"
        );
        assert_eq!(
            encoded[0]["headers"],
            json!([[BASE64.encode("colour"), BASE64.encode("blue")]]),
            "{cipher}"
        );

        // Read limits count the plaintext, not the ciphertext.
        let first = metered(
            &[(b"colour".as_slice(), b"blue".as_slice())],
            b"first secret",
        );
        let records = read_records_with(
            port,
            &basin,
            "s",
            &format!("seq_num=0&bytes={first}"),
            &with_key,
        );
        assert_eq!(seq_nums(&records), vec![0], "{cipher}: bytes={first}");
        let records = read_records_with(port, &basin, "s", "tail_offset=1", &with_key);
        assert_eq!(seq_nums(&records), vec![2], "{cipher}");
    }
}

// B-241 B-244 B-197
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_malformed_keys_are_bad_headers() {
    let server = start();
    let port = server.port();
    for cipher in CIPHERS {
        let basin = encrypted_stream(port, cipher);
        let good = key(3);
        append_with_key(
            port,
            &basin,
            "s",
            &good,
            &json!({ "records": [{ "body": "x" }] }),
        );
        let tail = check_tail(port, &basin, "s");
        let record = json!({ "records": [{ "body": "rejected" }] });

        let missing = format!("missing encryption key for stream cipher '{cipher}'");
        let message = assert_error(
            &append_json(port, &basin, "s", &[], &record),
            400,
            "bad_header",
        );
        assert_eq!(message, missing, "append without a key");
        let message = assert_error(
            &read_raw(port, &basin, "s", "seq_num=0", &[]),
            400,
            "bad_header",
        );
        assert_eq!(message, missing, "unary read without a key");
        let response = open_sse(port, &basin, "s", "seq_num=0", &[]).into_response();
        let message = assert_error(&response, 400, "bad_header");
        assert_eq!(message, missing, "SSE read without a key");
        let response = open_s2s_read(port, &basin, "s", "seq_num=0", &[]).into_response();
        let message = assert_error(&response, 400, "bad_header");
        assert_eq!(message, missing, "S2S read without a key");
        let frames = regular_frame(&proto_append_input(&["rejected"]));
        let response = open_s2s_append(port, &basin, "s", &frames, &[]).into_response();
        let message = assert_error(&response, 400, "bad_header");
        assert_eq!(message, missing, "S2S append without a key");

        let short = BASE64.encode([5u8; 16]);
        let long = BASE64.encode([5u8; 33]);
        assert_eq!(long.len(), 44, "33 bytes still fit in 44 base64 characters");
        let oversized = BASE64.encode([5u8; 48]);
        let cases: [(&str, Option<String>, &str); 4] = [
            ("!!!!not*base64!!!!", None, "invalid base64"),
            (
                short.as_str(),
                Some(format!(
                    "invalid encryption key length for stream cipher '{cipher}': 16"
                )),
                "",
            ),
            (
                long.as_str(),
                Some(format!(
                    "invalid encryption key length for stream cipher '{cipher}': 33"
                )),
                "",
            ),
            (oversized.as_str(), None, "out of range"),
        ];
        for (bad, exact, part) in &cases {
            let headers = [(KEY_HEADER, *bad)];
            let responses = [
                ("append", append_json(port, &basin, "s", &headers, &record)),
                (
                    "unary read",
                    read_raw(port, &basin, "s", "seq_num=0", &headers),
                ),
                (
                    "SSE read",
                    open_sse(port, &basin, "s", "seq_num=0", &headers).into_response(),
                ),
            ];
            for (what, response) in responses {
                let message = assert_error(&response, 400, "bad_header");
                match exact {
                    Some(exact) => assert_eq!(&message, exact, "{cipher} {what} with key {bad:?}"),
                    None => assert!(
                        message.contains(*part),
                        "{cipher} {what} with key {bad:?}: {message:?} lacks {part:?}"
                    ),
                }
            }
        }
        assert_eq!(
            check_tail(port, &basin, "s"),
            tail,
            "{cipher}: a rejected append writes nothing"
        );
    }
}

// B-242 B-197
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_decryption_before_any_record_is_sent() {
    let server = start();
    let port = server.port();
    for cipher in CIPHERS {
        let basin = encrypted_stream(port, cipher);
        let right = key(1);
        let wrong = key(2);
        append_with_key(
            port,
            &basin,
            "s",
            &right,
            &json!({ "records": [{ "body": "one" }, { "body": "two" }] }),
        );
        let with_wrong = [(KEY_HEADER, wrong.as_str())];

        assert_decryption_failed(
            &read_raw(port, &basin, "s", "seq_num=0", &with_wrong),
            "unary read",
        );
        assert_decryption_failed(
            &read_raw(port, &basin, "s", "seq_num=1&count=1", &with_wrong),
            "unary read of the second record",
        );
        let response = open_sse(port, &basin, "s", "seq_num=0&count=2", &with_wrong);
        assert_decryption_failed(&response.into_response(), "SSE read");
        let response = open_s2s_read(port, &basin, "s", "seq_num=0&count=2", &with_wrong);
        assert_decryption_failed(&response.into_response(), "S2S read");

        // The stored records are intact for the right key.
        let records = read_records_with(
            port,
            &basin,
            "s",
            "seq_num=0",
            &[(KEY_HEADER, right.as_str())],
        );
        assert_eq!(record_bodies(&records), vec!["one", "two"], "{cipher}");
    }
}

// B-243 B-190 B-192 B-221 B-223
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_s2s_reads_decrypt_catch_up_and_live_records() {
    let server = start();
    let port = server.port();
    for cipher in CIPHERS {
        let basin = encrypted_stream(port, cipher);
        let k = key(9);
        let with_key = [(KEY_HEADER, k.as_str())];
        append_with_key(
            port,
            &basin,
            "s",
            &k,
            &json!({ "records": [
                { "headers": [["n", "0"]], "body": "alpha" },
                { "body": "beta" },
                { "body": "gamma" },
            ] }),
        );

        let mut response = open_sse(port, &basin, "s", "seq_num=0&count=3", &with_key);
        assert_eq!(response.status, 200, "{cipher}: {:?}", response.headers);
        let records = sse_batch_records(&sse_events_until_done(&mut response));
        assert_eq!(seq_nums(&records), vec![0, 1, 2], "{cipher}");
        assert_eq!(
            record_bodies(&records),
            vec!["alpha", "beta", "gamma"],
            "{cipher}"
        );
        assert_eq!(records[0]["headers"], json!([["n", "0"]]), "{cipher}");

        let mut response = open_s2s_read(port, &basin, "s", "seq_num=0&count=3", &with_key);
        assert_eq!(response.status, 200, "{cipher}: {:?}", response.headers);
        let records = s2s_records(&response.frames_to_end(EVENT_TIMEOUT));
        assert_eq!(
            records,
            vec![
                (0, b"alpha".to_vec()),
                (1, b"beta".to_vec()),
                (2, b"gamma".to_vec())
            ],
            "{cipher}"
        );

        // Following: live records written with the key arrive in plaintext.
        let mut sse = open_sse(port, &basin, "s", "seq_num=3", &with_key);
        assert_eq!(sse.status, 200, "{cipher}");
        let mut s2s = open_s2s_read(port, &basin, "s", "seq_num=3", &with_key);
        assert_eq!(s2s.status, 200, "{cipher}");
        append_with_key(
            port,
            &basin,
            "s",
            &k,
            &json!({ "records": [{ "body": "live" }] }),
        );
        let event = next_non_ping(&mut sse);
        let live = sse_batch_records(std::slice::from_ref(&event));
        assert_eq!(seq_nums(&live), vec![3], "{cipher}: {event:?}");
        assert_eq!(record_bodies(&live), vec!["live"], "{cipher}");
        let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
        let live = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let frame = s2s.next_frame(left).expect_item("a live S2S frame");
            let records = s2s_records(std::slice::from_ref(&frame));
            if !records.is_empty() {
                break records;
            }
        };
        assert_eq!(live, vec![(3, b"live".to_vec())], "{cipher}");
    }
}

/// Body-only SDK records, each with the header `via: sdk`.
fn sdk_batch(bodies: &[&str]) -> AppendInput {
    let records = bodies.iter().map(|body| {
        AppendRecord::new(body.to_string())
            .expect("record")
            .with_headers([Header::new("via", "sdk")])
            .expect("record headers")
    });
    AppendInput::new(AppendRecordBatch::try_from_iter(records).expect("batch"))
}

/// SDK records are numbered from 0, have these bodies, and kept their `via: sdk` header.
fn check_sdk_records(records: &[SequencedRecord], expected: &[String], what: &str) {
    let bodies: Vec<String> = records
        .iter()
        .map(|record| String::from_utf8_lossy(&record.body).into_owned())
        .collect();
    assert_eq!(bodies, expected, "{what}");
    for (at, record) in records.iter().enumerate() {
        assert_eq!(record.seq_num, at as u64, "{what}");
        assert_eq!(record.headers.len(), 1, "{what}");
        assert_eq!(record.headers[0].name.as_ref(), b"via", "{what}");
        assert_eq!(record.headers[0].value.as_ref(), b"sdk", "{what}");
    }
}

// B-243 B-211 B-221
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_appends_and_sessions_round_trip_with_a_key() {
    let server = start();
    let port = server.port();
    for (index, cipher) in CIPHERS.into_iter().enumerate() {
        let basin = encrypted_stream(port, cipher);
        let bytes = [40 + index as u8; 32];
        let stream = server
            .sdk()
            .basin(basin_name(&basin))
            .stream(stream_name("s"))
            .with_encryption_key(EncryptionKey::new(bytes));
        let ack = stream
            .append(sdk_batch(&["unary-0", "unary-1"]))
            .await
            .expect("unary append with a key");
        assert_eq!((ack.start.seq_num, ack.end.seq_num), (0, 2), "{cipher}");

        let session = stream.append_session(AppendSessionConfig::new());
        let mut tickets = Vec::new();
        for i in 0..4 {
            let body = format!("session-{i}");
            tickets.push(
                session
                    .submit(sdk_batch(&[body.as_str()]))
                    .await
                    .expect("submit"),
            );
        }
        for (i, ticket) in tickets.into_iter().enumerate() {
            let ack = ticket.await.expect("append session ack");
            assert_eq!(ack.start.seq_num, 2 + i as u64, "{cipher}");
        }
        session.close().await.expect("close the append session");

        let expected: Vec<String> = ["unary-0", "unary-1"]
            .into_iter()
            .map(str::to_owned)
            .chain((0..4).map(|i| format!("session-{i}")))
            .collect();

        let from_zero =
            ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0)));
        let read = stream
            .read(from_zero.clone())
            .await
            .expect("unary read with a key");
        check_sdk_records(&read.records, &expected, &format!("{cipher}: unary read"));

        let input =
            from_zero.with_stop(ReadStop::new().with_limits(ReadLimits::new().with_count(6)));
        let mut reader = Box::pin(
            stream
                .read_session(input, ReadSessionConfig::new())
                .await
                .expect("open the read session"),
        );
        let mut records = Vec::new();
        while let Some(batch) = tokio::time::timeout(EVENT_TIMEOUT, reader.next())
            .await
            .expect("the read session stalled")
        {
            records.extend(batch.expect("read session batch").records);
        }
        check_sdk_records(&records, &expected, &format!("{cipher}: read session"));

        // The same records over raw JSON with the same key.
        let k = BASE64.encode(bytes);
        let records =
            read_records_with(port, &basin, "s", "seq_num=0", &[(KEY_HEADER, k.as_str())]);
        assert_eq!(record_bodies(&records), expected, "{cipher}: JSON read");
    }
}

// B-179 B-180 B-243
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_and_trim_commands_work_on_encrypted_streams() {
    let server = start();
    let port = server.port();
    for cipher in CIPHERS {
        let basin = encrypted_stream(port, cipher);
        let k = key(4);
        let with_key = [(KEY_HEADER, k.as_str())];
        append_with_key(
            port,
            &basin,
            "s",
            &k,
            &json!({ "records": [{ "body": "r0" }, { "body": "r1" }, { "body": "r2" }] }),
        );
        append_with_key(port, &basin, "s", &k, &fence_input("owner"));

        let fenced = json!({ "records": [{ "body": "r4" }], "fencing_token": "intruder" });
        let response = append_json(port, &basin, "s", &with_key, &fenced);
        response.expect_status(412);
        assert_eq!(
            response.json(),
            json!({ "fencing_token_mismatch": "owner" }),
            "{cipher}"
        );
        append_with_key(
            port,
            &basin,
            "s",
            &k,
            &json!({ "records": [{ "body": "r4" }], "fencing_token": "owner" }),
        );

        let response = append_json(
            port,
            &basin,
            "s",
            &[(KEY_HEADER, k.as_str()), BASE64_FORMAT],
            &trim_input(2),
        );
        response.expect_status(200);
        let tail = check_tail(port, &basin, "s");
        assert_eq!(tail.0, 6, "{cipher}: the trim record is a record");

        let records = read_records_with(port, &basin, "s", "seq_num=0", &with_key);
        assert_eq!(seq_nums(&records), vec![2, 3, 4, 5], "{cipher}");
        assert_eq!(records[0]["body"], "r2", "{cipher}");
        assert_eq!(records[1]["headers"], json!([["", "fence"]]), "{cipher}");
        assert_eq!(records[1]["body"], "owner", "{cipher}");
        assert_eq!(records[2]["body"], "r4", "{cipher}");
        assert_eq!(records[3]["headers"], json!([["", "trim"]]), "{cipher}");
        let encoded = read_records_with(
            port,
            &basin,
            "s",
            "seq_num=5",
            &[(KEY_HEADER, k.as_str()), BASE64_FORMAT],
        );
        assert_eq!(
            encoded[0]["body"],
            BASE64.encode(2u64.to_be_bytes()),
            "{cipher}"
        );
        assert_eq!(check_tail(port, &basin, "s"), tail, "{cipher}");
    }
}

// B-245
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_ignored_on_streams_without_a_cipher() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-plain", json!({}));
    create_stream(port, &basin, "p", None);
    let listed = listed_streams(port, &basin);
    assert_eq!(listed[0]["cipher"], Value::Null, "{listed:?}");

    let valid = key(8);
    let short = BASE64.encode([8u8; 16]);
    for (i, header) in [valid.as_str(), short.as_str(), "not*base64"]
        .into_iter()
        .enumerate()
    {
        let body = format!("plain-{i}");
        let response = append_json(
            port,
            &basin,
            "p",
            &[(KEY_HEADER, header)],
            &json!({ "records": [{ "body": body }] }),
        );
        response.expect_status(200);
        assert_eq!(position(&response.json()["start"]).0, i as u64);
    }
    let expected = ["plain-0", "plain-1", "plain-2"];
    let other = key(9);
    for header in [other.as_str(), short.as_str(), "not*base64"] {
        let records = read_records_with(port, &basin, "p", "seq_num=0", &[(KEY_HEADER, header)]);
        assert_eq!(
            record_bodies(&records),
            expected,
            "read with key {header:?}"
        );
    }
    let records = read_records_with(port, &basin, "p", "seq_num=0", &[]);
    assert_eq!(record_bodies(&records), expected, "read without a key");
    let mut response = open_sse(
        port,
        &basin,
        "p",
        "seq_num=0&count=3",
        &[(KEY_HEADER, valid.as_str())],
    );
    let records = sse_batch_records(&sse_events_until_done(&mut response));
    assert_eq!(record_bodies(&records), expected, "SSE read with a key");
}

//! Unary reads and check-tail: start positions, limits, long-polling, encodings, command
//! records, trimming, retention and auto-creation (API.md §5.1, §5.3; SEMANTICS.md §3,
//! §5–§7).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use prost::Message;
use s2_sdk::types::{AppendInput, AppendRecord, AppendRecordBatch, ReadFrom, ReadInput, ReadStart};
use serde_json::{json, Value};

use super::proto;
use super::{
    append_json, append_ok, basin_with_stream, bodies, check_tail, create_basin, create_stream,
    metered, now_ms, position, read_batch, read_raw, read_records, seq_nums, start, stream_path,
};
use crate::harness::{
    assert_error, assert_json_content_type, assert_keys, basin_name, eventually, http, stream_name,
    unique_basin, Response,
};

fn assert_unwritten(response: &Response, tail: (u64, u64)) {
    response.expect_status(416);
    assert_json_content_type(response);
    assert_eq!(
        response.json(),
        json!({ "tail": { "seq_num": tail.0, "timestamp": tail.1 } }),
        "unexpected 416 body"
    );
}

/// Appends records with these client timestamps (in the past, so they are kept).
fn append_timestamps(port: u16, basin: &str, stream: &str, timestamps: &[u64]) {
    let records: Vec<Value> = timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| json!({ "timestamp": ts, "body": format!("t{i}") }))
        .collect();
    append_ok(port, basin, stream, &json!({ "records": records }));
}

// B-160 B-161 B-162 B-163 B-164 B-166 B-183
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions_and_unwritten_reads() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-start", "s");

    assert_eq!(check_tail(port, &basin, "s"), (0, 0));
    assert_unwritten(&read_raw(port, &basin, "s", "seq_num=0", &[]), (0, 0));
    assert_unwritten(&read_raw(port, &basin, "s", "", &[]), (0, 0));

    append_timestamps(port, &basin, "s", &[100, 200, 300, 400, 500]);
    let tail = (5, 500);
    let response = http(
        port,
        "GET",
        &format!("{}/records/tail", stream_path("s")),
        &[("S2-Basin", basin.as_str())],
        b"",
    );
    response.expect_status(200);
    assert_json_content_type(&response);
    let body = response.json();
    assert_keys(&body, &["tail"]);
    assert_keys(&body["tail"], &["seq_num", "timestamp"]);
    assert_eq!(position(&body["tail"]), tail);

    // No start parameter means the tail.
    assert_unwritten(&read_raw(port, &basin, "s", "", &[]), tail);
    assert_unwritten(&read_raw(port, &basin, "s", "count=3", &[]), tail);
    assert_unwritten(&read_raw(port, &basin, "s", "seq_num=5", &[]), tail);
    assert_unwritten(&read_raw(port, &basin, "s", "seq_num=6", &[]), tail);
    assert_unwritten(
        &read_raw(port, &basin, "s", "seq_num=6&clamp=true", &[]),
        tail,
    );
    assert_unwritten(&read_raw(port, &basin, "s", "timestamp=501", &[]), tail);
    assert_unwritten(
        &read_raw(port, &basin, "s", "timestamp=501&clamp=true", &[]),
        tail,
    );
    assert_unwritten(&read_raw(port, &basin, "s", "tail_offset=0", &[]), tail);

    assert_eq!(
        seq_nums(&read_records(port, &basin, "s", "tail_offset=2")),
        vec![3, 4]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "s", "tail_offset=100")),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "s", "seq_num=2")),
        vec![2, 3, 4]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "s", "timestamp=500")),
        vec![4]
    );

    for query in [
        "seq_num=0&timestamp=0",
        "seq_num=0&tail_offset=1",
        "timestamp=0&tail_offset=1",
    ] {
        let message = assert_error(&read_raw(port, &basin, "s", query, &[]), 422, "invalid");
        assert!(
            message.contains("only one of seq_num, timestamp, or tail_offset can be provided"),
            "{query}: {message}"
        );
    }
    assert_error(
        &read_raw(port, &basin, "s", "seq_num=-1", &[]),
        400,
        "bad_query",
    );
    assert_error(
        &read_raw(port, &basin, "s", "seq_num=0&clamp=yes", &[]),
        400,
        "bad_query",
    );
}

// B-165 B-167 B-172
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_starts_and_until() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "dp-until", json!({ "create_stream_on_read": true }));
    create_stream(port, &basin, "t", None);
    append_timestamps(port, &basin, "t", &[10, 20, 20, 30]);

    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "timestamp=20")),
        vec![1, 2, 3]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "timestamp=15")),
        vec![1, 2, 3]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "timestamp=0")),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "timestamp=30")),
        vec![3]
    );

    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "seq_num=0&until=30")),
        vec![0, 1, 2]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "seq_num=0&until=20")),
        vec![0]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "timestamp=20&until=21")),
        vec![1, 2]
    );
    // The first record already violates `until`.
    let batch = read_batch(port, &basin, "t", "seq_num=0&until=10");
    assert_eq!(batch, json!({ "records": [] }));

    let message = assert_error(
        &read_raw(port, &basin, "t", "timestamp=5&until=5", &[]),
        422,
        "invalid",
    );
    assert!(
        message.contains("start `timestamp` exceeds or equal to `until`"),
        "{message}"
    );
    // Checked before the stream is opened: no auto-creation.
    assert_error(
        &read_raw(port, &basin, "fresh", "timestamp=9&until=3", &[]),
        422,
        "invalid",
    );
    let response = http(
        port,
        "GET",
        &stream_path("fresh"),
        &[("S2-Basin", basin.as_str())],
        b"",
    );
    assert_error(&response, 404, "stream_not_found");
}

// B-126 B-168 B-169 B-170 B-171
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_and_bytes_limits() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "dp-limits", json!({}));
    create_stream(port, &basin, "small", None);
    create_stream(port, &basin, "many", None);
    create_stream(port, &basin, "large", None);

    // Each record meters 8 + 2 + len("ab") + len("cde") + len("xyz") = 18 bytes.
    let size = metered(&[(b"ab", b"cde")], b"xyz");
    assert_eq!(size, 18);
    let record = json!({ "headers": [["ab", "cde"]], "body": "xyz" });
    append_ok(
        port,
        &basin,
        "small",
        &json!({ "records": [record.clone(), record.clone(), record.clone(), record] }),
    );

    for query in [
        "seq_num=0&count=0",
        "seq_num=0&bytes=0",
        "seq_num=4&count=0",
        "seq_num=100&count=0",
        "seq_num=100&bytes=0",
        "count=0&wait=5",
    ] {
        let started = Instant::now();
        let batch = read_batch(port, &basin, "small", query);
        assert_eq!(batch, json!({ "records": [] }), "{query}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{query} must complete at once"
        );
    }
    let bytes = |limit: usize| {
        seq_nums(&read_records(
            port,
            &basin,
            "small",
            &format!("seq_num=0&bytes={limit}"),
        ))
    };
    assert_eq!(bytes(size - 1), Vec::<u64>::new());
    assert_eq!(bytes(size), vec![0]);
    assert_eq!(bytes(2 * size - 1), vec![0]);
    assert_eq!(bytes(2 * size), vec![0, 1]);
    assert_eq!(
        seq_nums(&read_records(
            port,
            &basin,
            "small",
            "seq_num=0&count=2&bytes=1000"
        )),
        vec![0, 1]
    );
    assert_eq!(
        seq_nums(&read_records(
            port,
            &basin,
            "small",
            &format!("seq_num=0&count=10&bytes={}", 3 * size)
        )),
        vec![0, 1, 2]
    );
    assert_eq!(
        seq_nums(&read_records(port, &basin, "small", "seq_num=1&count=2")),
        vec![1, 2]
    );

    // At most 1000 records per unary read.
    let numbers: Vec<String> = (0..600).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
    append_ok(port, &basin, "many", &bodies(&refs));
    append_ok(port, &basin, "many", &bodies(&refs));
    for query in [
        "seq_num=0",
        "seq_num=0&count=5000",
        "seq_num=0&bytes=100000000",
    ] {
        let records = read_records(port, &basin, "many", query);
        assert_eq!(records.len(), 1000, "{query}");
        assert_eq!(position(&records[999]).0, 999);
    }
    assert_eq!(
        read_records(port, &basin, "many", "seq_num=1000").len(),
        200
    );

    // At most 1 MiB per unary read: three records of 400,008 metered bytes.
    let body = "L".repeat(400_000);
    for _ in 0..3 {
        append_ok(port, &basin, "large", &bodies(&[body.as_str()]));
    }
    assert_eq!(
        seq_nums(&read_records(port, &basin, "large", "seq_num=0")),
        vec![0, 1]
    );
    assert_eq!(
        seq_nums(&read_records(
            port,
            &basin,
            "large",
            "seq_num=0&bytes=10000000"
        )),
        vec![0, 1]
    );
}

// B-173 B-177 B-178
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_encodings() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-encode", "e");

    append_ok(
        port,
        &basin,
        "e",
        &json!({ "records": [{ "timestamp": 7 }] }),
    );
    append_json(
        port,
        &basin,
        "e",
        &[("S2-Format", "base64")],
        &json!({ "records": [{
            "timestamp": 8,
            "headers": [["aA==", "/wA="]],
            "body": BASE64.encode([0xff, b'a'])
        }] }),
    )
    .expect_status(200);

    // Catch-up reads carry no tail; empty headers and body are omitted.
    let batch = read_batch(port, &basin, "e", "seq_num=0");
    assert_keys(&batch, &["records"]);
    let records = batch["records"].as_array().expect("records").clone();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0], json!({ "seq_num": 0, "timestamp": 7 }));
    // Raw output is lossy UTF-8.
    assert_eq!(
        records[1],
        json!({ "seq_num": 1, "timestamp": 8, "headers": [["h", "\u{FFFD}\u{0}"]], "body": "\u{FFFD}a" })
    );

    for format in ["base64", "json-binsafe"] {
        let response = read_raw(port, &basin, "e", "seq_num=1", &[("S2-Format", format)]);
        response.expect_status(200);
        assert_eq!(
            response.json(),
            json!({ "records": [{ "seq_num": 1, "timestamp": 8, "headers": [["aA==", "/wA="]], "body": "/2E=" }] }),
            "{format}"
        );
    }
    assert_error(
        &read_raw(port, &basin, "e", "seq_num=0", &[("S2-Format", "hex")]),
        400,
        "bad_header",
    );

    let response = read_raw(
        port,
        &basin,
        "e",
        "seq_num=0",
        &[("Accept", "application/protobuf")],
    );
    response.expect_status(200);
    assert!(response
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase()
        .starts_with("application/protobuf"));
    let batch = proto::ReadBatch::decode(response.body.as_slice()).expect("protobuf ReadBatch");
    assert_eq!(batch.tail, None);
    assert_eq!(batch.records.len(), 2);
    assert_eq!(
        batch.records[1],
        proto::SequencedRecord {
            seq_num: 1,
            timestamp: 8,
            headers: vec![proto::Header {
                name: b"h".to_vec(),
                value: vec![0xff, 0],
            }],
            body: vec![0xff, b'a'],
        }
    );
    assert!(batch.records[0].headers.is_empty() && batch.records[0].body.is_empty());
}

// B-174 B-175 B-176
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_reads() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-wait", "w");
    append_ok(port, &basin, "w", &bodies(&["old"]));

    // Nothing arrives: an empty batch without tail after about `wait` seconds.
    let started = Instant::now();
    let batch = read_batch(port, &basin, "w", "seq_num=1&wait=1");
    let elapsed = started.elapsed();
    assert_eq!(batch, json!({ "records": [] }));
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(6),
        "wait=1 returned after {elapsed:?}"
    );

    // Records already there are returned at once, even with a wait.
    let started = Instant::now();
    assert_eq!(
        seq_nums(&read_records(port, &basin, "w", "seq_num=0&wait=10")),
        vec![0]
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // Blocks at the tail until the first append, which it returns with its tail. A wait
    // above the 60 s cap is accepted.
    for exact_start in [false, true] {
        let tail_before = check_tail(port, &basin, "w").0;
        let query = if exact_start {
            format!("seq_num={tail_before}&wait=3600")
        } else {
            "wait=10".to_owned()
        };
        let basin_for_reader = basin.clone();
        let query_for_reader = query.clone();
        let reader = std::thread::spawn(move || {
            let started = Instant::now();
            let response = read_raw(port, &basin_for_reader, "w", &query_for_reader, &[]);
            (response, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            !reader.is_finished(),
            "{query}: the read did not wait for data"
        );
        let ack = append_ok(port, &basin, "w", &bodies(&["new-1", "new-2"]));
        let (response, elapsed) = reader.join().expect("reader thread");
        response.expect_status(200);
        let batch = response.json();
        assert!(
            elapsed < Duration::from_secs(8),
            "{query}: took {elapsed:?}"
        );
        let records = batch["records"].as_array().expect("records");
        assert_eq!(
            seq_nums(records),
            vec![tail_before, tail_before + 1],
            "{query}: {batch}"
        );
        assert_eq!(
            position(&batch["tail"]),
            position(&ack["end"]),
            "{query}: {batch}"
        );
    }
}

// B-179 B-180 B-181
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_records_and_trimming() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-trim", "t");
    let base64 = [("S2-Format", "base64")];

    append_ok(port, &basin, "t", &bodies(&["r0", "r1", "r2", "r3", "r4"]));
    append_ok(
        port,
        &basin,
        "t",
        &json!({ "records": [{ "headers": [["", "fence"]], "body": "tok" }] }),
    );
    let trim_to = |seq: u64| {
        json!({ "records": [{
            "headers": [["", BASE64.encode("trim")]],
            "body": BASE64.encode(seq.to_be_bytes())
        }] })
    };
    append_json(port, &basin, "t", &base64, &trim_to(3)).expect_status(200);
    assert_eq!(
        check_tail(port, &basin, "t").0,
        7,
        "the trim record is a record"
    );

    let records = read_records(port, &basin, "t", "seq_num=5");
    assert_eq!(records[0]["headers"], json!([["", "fence"]]));
    assert_eq!(records[0]["body"], "tok");
    assert_eq!(records[1]["headers"], json!([["", "trim"]]));
    let response = read_raw(port, &basin, "t", "seq_num=5", &base64);
    response.expect_status(200);
    let encoded = response.json()["records"].clone();
    assert_eq!(encoded[0]["headers"], json!([["", "ZmVuY2U="]]));
    assert_eq!(encoded[0]["body"], "dG9r");
    assert_eq!(encoded[1]["headers"], json!([["", "dHJpbQ=="]]));
    assert_eq!(encoded[1]["body"], BASE64.encode(3u64.to_be_bytes()));

    // Records below the trim point eventually disappear; reading from 0 then starts at
    // the first surviving record.
    eventually(
        "records below the trim point are gone",
        Duration::from_secs(20),
        || seq_nums(&read_records(port, &basin, "t", "seq_num=0")).first() == Some(&3),
    )
    .await;
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "seq_num=1")),
        vec![3, 4, 5, 6]
    );
    assert_eq!(check_tail(port, &basin, "t").0, 7);

    // A smaller trim is a no-op but still a record; trimming past the tail trims up to
    // and including the trim record itself.
    append_json(port, &basin, "t", &base64, &trim_to(1)).expect_status(200);
    append_json(port, &basin, "t", &base64, &trim_to(u64::MAX)).expect_status(200);
    let tail = check_tail(port, &basin, "t");
    assert_eq!(tail.0, 9);
    eventually(
        "everything up to the last trim record is gone",
        Duration::from_secs(20),
        || read_records(port, &basin, "t", "seq_num=0").is_empty(),
    )
    .await;
    assert_eq!(
        check_tail(port, &basin, "t"),
        tail,
        "trimming never moves the tail"
    );
    let ack = append_ok(port, &basin, "t", &bodies(&["after"]));
    assert_eq!(position(&ack["start"]).0, 9);
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "seq_num=0")),
        vec![9]
    );
}

// B-182 B-184
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_create_on_read_and_check_tail() {
    let server = start();
    let port = server.port();
    let lazy = create_basin(
        port,
        "dp-lazy",
        json!({
            "create_stream_on_read": true,
            "default_stream_config": { "retention_policy": { "age": 7200 } }
        }),
    );
    let strict = create_basin(port, "dp-strict", json!({}));
    let tail_path = |stream: &str| format!("{}/records/tail", stream_path(stream));
    let retention = |stream: &str| {
        let response = http(
            port,
            "GET",
            &stream_path(stream),
            &[("S2-Basin", lazy.as_str())],
            b"",
        );
        response.expect_status(200);
        response.json()["retention_policy"].clone()
    };
    let config_header = json!({ "retention_policy": { "age": 1234 } }).to_string();
    let with_config = [("S2-Stream-Config", config_header.as_str())];

    // A read creates the stream (with the header config) and is then unwritten.
    assert_unwritten(
        &read_raw(port, &lazy, "by-read", "seq_num=0", &with_config),
        (0, 0),
    );
    assert_eq!(retention("by-read"), json!({ "age": 1234 }));
    assert_unwritten(&read_raw(port, &lazy, "by-read", "seq_num=0", &[]), (0, 0));

    // Check-tail creates it with the basin defaults only.
    let response = http(
        port,
        "GET",
        &tail_path("by-tail"),
        &[("S2-Basin", lazy.as_str()), with_config[0]],
        b"",
    );
    response.expect_status(200);
    assert_eq!(
        response.json(),
        json!({ "tail": { "seq_num": 0, "timestamp": 0 } })
    );
    assert_eq!(retention("by-tail"), json!({ "age": 7200 }));

    // Without auto-creation.
    let response = http(
        port,
        "GET",
        &tail_path("none"),
        &[("S2-Basin", strict.as_str())],
        b"",
    );
    assert_error(&response, 404, "stream_not_found");
    assert_error(
        &read_raw(port, &strict, "none", "seq_num=0", &[]),
        404,
        "stream_not_found",
    );
    let missing = unique_basin("dp-gone");
    let response = http(
        port,
        "GET",
        &tail_path("none"),
        &[("S2-Basin", missing.as_str())],
        b"",
    );
    assert_error(&response, 404, "basin_not_found");
    assert_error(
        &read_raw(port, &missing, "none", "seq_num=0", &[]),
        404,
        "basin_not_found",
    );
}

// B-185
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_are_not_returned() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "dp-expire", json!({}));
    create_stream(
        port,
        &basin,
        "short",
        Some(json!({ "retention_policy": { "age": 1 } })),
    );
    create_stream(port, &basin, "long", None);
    let now = now_ms();
    let records = json!({ "records": [{ "timestamp": now, "body": "a" }, { "timestamp": now, "body": "b" }] });
    let ack = append_ok(port, &basin, "short", &records);
    append_ok(port, &basin, "long", &records);
    let tail = position(&ack["tail"]);
    assert_eq!(read_records(port, &basin, "short", "seq_num=0").len(), 2);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    eventually("expired records disappear", Duration::from_secs(3), || {
        read_records(port, &basin, "short", "seq_num=0").is_empty()
    })
    .await;
    assert_eq!(
        check_tail(port, &basin, "short"),
        tail,
        "expiry never moves the tail"
    );
    assert_eq!(read_records(port, &basin, "long", "seq_num=0").len(), 2);
}

// B-253
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_are_visible_at_once() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-visible", "v");
    let stream = server
        .sdk()
        .basin(basin_name(&basin))
        .stream(stream_name("v"));
    for round in 0..15u64 {
        let body = format!("round-{round}");
        let ack = if round % 2 == 0 {
            let records =
                AppendRecordBatch::try_from_iter(
                    [AppendRecord::new(body.clone()).expect("record")],
                )
                .expect("batch");
            let ack = stream
                .append(AppendInput::new(records))
                .await
                .expect("append");
            (ack.start.seq_num, ack.end.seq_num, ack.end.timestamp)
        } else {
            let ack = append_ok(port, &basin, "v", &bodies(&[body.as_str()]));
            let end = position(&ack["end"]);
            (position(&ack["start"]).0, end.0, end.1)
        };
        assert_eq!(ack.0, round);
        let tail = stream.check_tail().await.expect("check tail");
        assert_eq!((tail.seq_num, tail.timestamp), (ack.1, ack.2));
        let batch = stream
            .read(ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(round))))
            .await
            .expect("read the new record");
        assert_eq!(batch.records.len(), 1);
        assert_eq!(batch.records[0].body.as_ref(), body.as_bytes());
        let records = read_records(port, &basin, "v", &format!("seq_num={round}"));
        assert_eq!(records[0]["body"], body.as_str());
    }
}

/// `sluice_followers`, summed over shards: read sessions waiting for live records.
fn followers(port: u16) -> u64 {
    crate::harness::get(port, "/metrics")
        .text()
        .lines()
        .filter(|line| line.starts_with("sluice_followers{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_long_poll_stops_on_the_owner_once_its_client_goes_away() {
    let server = super::start();
    let port = server.port();
    let basin = super::basin_with_stream(port, "dp-long-poll", "quiet");
    let mut socket = crate::harness::connect(port);
    let request = format!(
        "GET /v1/streams/quiet/records?seq_num=0&wait=60 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         S2-Basin: {basin}\r\n\r\n"
    );
    std::io::Write::write_all(&mut socket, request.as_bytes()).expect("send the read");
    let waiting = Instant::now() + Duration::from_secs(10);
    while followers(port) == 0 {
        assert!(
            Instant::now() < waiting,
            "the long poll never followed the stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(socket);
    // Well inside the 5–10 s between heartbeats, which were once its only way to notice.
    let gone = Instant::now() + Duration::from_secs(3);
    while followers(port) > 0 {
        assert!(Instant::now() < gone, "the session outlived its client");
        std::thread::sleep(Duration::from_millis(20));
    }
}

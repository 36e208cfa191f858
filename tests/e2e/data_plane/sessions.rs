//! Streaming sessions: S2S append and read sessions over raw HTTP/1.1 framing, the SDK's
//! append session, producer and read session, heartbeats of idle followers, and HTTP/2
//! PING (WIRE.md §1, §5; SEMANTICS.md §4, §6.3–§6.5).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::StreamExt;
use s2_sdk::append_session::AppendSessionConfig;
use s2_sdk::error::{AppendConditionFailed, AppendError, AppendSessionError};
use s2_sdk::producer::ProducerConfig;
use s2_sdk::types::{
    AppendInput, AppendRecord, AppendRecordBatch, CommandRecord, FencingToken, ReadFrom, ReadInput,
    ReadLimits, ReadSessionConfig, ReadStart, ReadStop, RetentionPolicy, SequencedRecord,
    StreamConfig,
};
use serde_json::{json, Value};

use super::proto;
use super::{
    append_ok, basin_with_stream, bodies, check_tail, create_basin, create_stream, frame,
    gzip_compress, input_frame, open_s2s_read, position, read_records, records_path, seq_nums,
    start, stream_path, zstd_compress, Frame, StreamingResponse,
};
use crate::harness::{assert_error, assert_keys, basin_name, connect, http, stream_name};

const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

fn sdk_batch(bodies: &[String]) -> AppendInput {
    let records = bodies
        .iter()
        .map(|body| AppendRecord::new(body.clone()).expect("record"));
    AppendInput::new(AppendRecordBatch::try_from_iter(records).expect("batch"))
}

fn fencing_token(text: &str) -> FencingToken {
    text.parse().expect("valid fencing token")
}

fn read_from(seq_num: u64) -> ReadInput {
    ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(seq_num)))
}

/// An AppendInput of body-only records that must land at `match_seq_num`.
fn matched(bodies: &[&str], match_seq_num: u64) -> proto::AppendInput {
    let mut input = proto::input(bodies);
    input.match_seq_num = Some(match_seq_num);
    input
}

/// A raw S2S append session whose whole request body (these frames) is sent up front.
fn append_session(
    port: u16,
    basin: &str,
    stream: &str,
    frames: &[Vec<u8>],
    extra: &[(&str, &str)],
) -> StreamingResponse {
    let mut headers = vec![("S2-Basin", basin), ("Content-Type", "s2s/proto")];
    headers.extend_from_slice(extra);
    StreamingResponse::open(
        port,
        "POST",
        &records_path(stream, ""),
        &headers,
        &frames.concat(),
    )
}

fn assert_s2s_headers(response: &StreamingResponse) {
    assert_eq!(response.status, 200, "headers {:?}", response.headers);
    assert_eq!(
        response
            .header("content-type")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("s2s/proto")
    );
    assert_eq!(
        response.header("cache-control"),
        Some("no-cache, no-transform")
    );
    assert_eq!(response.header("x-accel-buffering"), Some("no"));
    assert_eq!(response.header("content-encoding"), None);
}

/// Splits a session's frames into the regular ones and the terminal one (which must be
/// last if present).
fn split_terminal(mut frames: Vec<Frame>) -> (Vec<Frame>, Option<(u16, Value)>) {
    let terminal = if frames.last().is_some_and(Frame::is_terminal) {
        frames.pop().map(|frame| frame.terminal())
    } else {
        None
    };
    assert!(
        frames.iter().all(|frame| !frame.is_terminal()),
        "only the last frame may be terminal"
    );
    (frames, terminal)
}

/// Checks ack frames of a lone writer: contiguous from `first`, `sizes[i]` records each.
fn check_acks(frames: &[Frame], first: u64, sizes: &[u64]) {
    assert_eq!(
        frames.len(),
        sizes.len(),
        "one ack per accepted input: {frames:?}"
    );
    let mut next = first;
    for (frame, size) in frames.iter().zip(sizes) {
        let [start_pos, end_pos, tail_pos] = proto::ack_positions(&frame.append_ack());
        assert_eq!(start_pos.0, next);
        assert_eq!(end_pos.0, next + size);
        assert!(tail_pos.0 >= end_pos.0);
        next = end_pos.0;
    }
}

fn record_bodies(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|record| record["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Waits for a blocking task, re-raising its panic with the original message.
async fn joined<T>(handle: tokio::task::JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("task failed: {err}"),
    }
}

// B-210 B-211 B-212
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_append_session_acks_every_input_in_order() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-s2s-app", "a");

    let frames: Vec<Vec<u8>> = (0..4u64)
        .map(|i| {
            let first = format!("in{i}-0");
            let second = format!("in{i}-1");
            input_frame(&matched(&[first.as_str(), second.as_str()], 2 * i))
        })
        .collect();
    let mut response = append_session(port, &basin, "a", &frames, &[]);
    assert_s2s_headers(&response);
    let frames = response.frames_to_end(FRAME_TIMEOUT);
    let (acks, terminal) = split_terminal(frames);
    assert_eq!(
        terminal, None,
        "a session the client ends cleanly has no terminal frame"
    );
    assert!(
        acks.iter().all(|frame| frame.compression() == 0),
        "small acks are not compressed"
    );
    check_acks(&acks, 0, &[2, 2, 2, 2]);
    assert_eq!(check_tail(port, &basin, "a").0, 8);
    let records = read_records(port, &basin, "a", "seq_num=0");
    assert_eq!(record_bodies(&records)[..3], ["in0-0", "in0-1", "in1-0"]);

    // A session without inputs: 200 and an empty body.
    let mut response = append_session(port, &basin, "a", &[], &[]);
    assert_s2s_headers(&response);
    assert!(response.frames_to_end(FRAME_TIMEOUT).is_empty());
}

// B-213
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_append_session_stops_at_a_failed_condition() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-s2s-412", "m");
    create_stream(port, &basin, "f", None);

    let frames = [
        input_frame(&matched(&["a", "b"], 0)),
        input_frame(&matched(&["c"], 2)),
        input_frame(&matched(&["d"], 99)),
        input_frame(&matched(&["e"], 3)),
    ];
    let mut response = append_session(port, &basin, "m", &frames, &[]);
    assert_s2s_headers(&response);
    let (acks, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
    check_acks(&acks, 0, &[2, 1]);
    assert_eq!(terminal, Some((412, json!({ "seq_num_mismatch": 3 }))));
    assert_eq!(
        check_tail(port, &basin, "m").0,
        3,
        "inputs after the failure are not applied"
    );

    let mut fence = proto::input(&["t1"]);
    fence.records[0].headers.push(proto::Header {
        name: Vec::new(),
        value: b"fence".to_vec(),
    });
    let mut good = proto::input(&["good"]);
    good.fencing_token = Some("t1".to_owned());
    let mut stale = proto::input(&["stale"]);
    stale.fencing_token = Some("zz".to_owned());
    let frames = [
        input_frame(&fence),
        input_frame(&good),
        input_frame(&stale),
        input_frame(&proto::input(&["later"])),
    ];
    let mut response = append_session(port, &basin, "f", &frames, &[]);
    let (acks, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
    check_acks(&acks, 0, &[1, 1]);
    assert_eq!(
        terminal,
        Some((412, json!({ "fencing_token_mismatch": "t1" })))
    );
    assert_eq!(check_tail(port, &basin, "f").0, 2);
}

// B-214 B-215 B-216 B-217 B-220
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_append_session_frame_errors() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "dp-s2s-bad", json!({}));
    let good = || input_frame(&proto::input(&["ok"]));
    let encoded = prost::Message::encode_to_vec(&proto::input(&["x"]));
    let mut client_terminal = vec![0x01, 0xf4];
    client_terminal.extend_from_slice(b"{}");
    // A frame claiming 2 MiB + 1 bytes: only its header and a few bytes are sent.
    let mut oversized = vec![0x20, 0x00, 0x01, 0x00];
    oversized.extend_from_slice(&[0u8; 16]);

    let cases = [
        ("garbage", frame(0, &[0xff, 0xff, 0xff]), 400, "bad_frame"),
        (
            "empty-batch",
            input_frame(&proto::AppendInput {
                records: Vec::new(),
                match_seq_num: None,
                fencing_token: None,
            }),
            422,
            "invalid",
        ),
        (
            "client-terminal",
            frame(0x80, &client_terminal),
            400,
            "bad_frame",
        ),
        ("bad-compression", frame(0x60, &encoded), 400, "bad_frame"),
        (
            "bad-zstd",
            frame(0x20, b"not zstd at all"),
            400,
            "bad_frame",
        ),
        ("oversized", oversized, 400, "bad_frame"),
    ];
    for (stream, bad, status, code) in cases {
        create_stream(port, &basin, stream, None);
        let mut response = append_session(port, &basin, stream, &[good(), bad, good()], &[]);
        assert_s2s_headers(&response);
        let (acks, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
        check_acks(&acks, 0, &[1]);
        let (got_status, body) =
            terminal.unwrap_or_else(|| panic!("{stream}: expected a terminal frame"));
        assert_eq!(got_status, status, "{stream}: {body}");
        assert_keys(&body, &["code", "message"]);
        assert_eq!(body["code"], code, "{stream}: {body}");
        assert_eq!(check_tail(port, &basin, stream).0, 1, "{stream}");
    }

    // Compressed input frames are accepted whatever was negotiated.
    create_stream(port, &basin, "compressed", None);
    let frames = [
        frame(
            0x20,
            &zstd_compress(&prost::Message::encode_to_vec(&proto::input(&["zstd"]))),
        ),
        frame(
            0x40,
            &gzip_compress(&prost::Message::encode_to_vec(&proto::input(&["gzip"]))),
        ),
        input_frame(&proto::input(&["plain"])),
    ];
    let mut response = append_session(port, &basin, "compressed", &frames, &[]);
    let (acks, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
    assert_eq!(terminal, None);
    check_acks(&acks, 0, &[1, 1, 1]);
    let records = read_records(port, &basin, "compressed", "seq_num=0");
    assert_eq!(record_bodies(&records), ["zstd", "gzip", "plain"]);
}

// B-226 B-227
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_append_session_opening() {
    let server = start();
    let port = server.port();
    let basin = create_basin(
        port,
        "dp-s2s-open",
        json!({ "create_stream_on_append": true }),
    );
    let strict = create_basin(port, "dp-s2s-strict", json!({}));
    let frames = [input_frame(&proto::input(&["x"]))];

    let response = append_session(port, &strict, "missing", &frames, &[]).into_response();
    assert_error(&response, 404, "stream_not_found");
    let response = append_session(port, "dp-s2s-no-such-basin", "s", &frames, &[]).into_response();
    assert_error(&response, 404, "basin_not_found");

    // Auto-creation with S2-Stream-Config, raw and through the SDK.
    let config = json!({ "retention_policy": { "age": 3600 } }).to_string();
    let mut response = append_session(
        port,
        &basin,
        "raw-auto",
        &frames,
        &[("S2-Stream-Config", config.as_str())],
    );
    assert_s2s_headers(&response);
    let (acks, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
    assert_eq!(terminal, None);
    check_acks(&acks, 0, &[1]);

    let stream = server
        .sdk()
        .basin(basin_name(&basin))
        .stream(stream_name("sdk-auto"));
    let session =
        stream.append_session(AppendSessionConfig::new().with_stream_config(
            StreamConfig::new().with_retention_policy(RetentionPolicy::Age(3600)),
        ));
    let ack = session
        .submit(sdk_batch(&["first".to_owned()]))
        .await
        .expect("submit")
        .await
        .expect("ack");
    assert_eq!(ack.start.seq_num, 0);
    session.close().await.expect("close the session");

    for name in ["raw-auto", "sdk-auto"] {
        let response = http(
            port,
            "GET",
            &stream_path(name),
            &[("S2-Basin", basin.as_str())],
            b"",
        );
        response.expect_status(200);
        assert_eq!(
            response.json()["retention_policy"],
            json!({ "age": 3600 }),
            "{name}"
        );
    }
}

// B-221 B-223 B-224 B-225 B-228
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_read_sessions() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-s2s-read", "r");
    create_stream(port, &basin, "empty", None);
    let ack = append_ok(port, &basin, "r", &bodies(&["r0", "r1", "r2", "r3", "r4"]));
    let tail = position(&ack["end"]);

    // Catch-up: data batches without tail, then a clean end at the count.
    let mut response = open_s2s_read(port, &basin, "r", "seq_num=1&count=3", &[]);
    assert_s2s_headers(&response);
    let (frames, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
    assert_eq!(terminal, None);
    let mut records = Vec::new();
    for frame in &frames {
        let batch = frame.read_batch();
        assert!(!batch.records.is_empty(), "catch-up sends no empty batches");
        assert_eq!(batch.tail, None, "catch-up batches carry no tail");
        records.extend(batch.records);
    }
    let got: Vec<(u64, Vec<u8>)> = records
        .iter()
        .map(|r| (r.seq_num, r.body.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, b"r1".to_vec()),
            (2, b"r2".to_vec()),
            (3, b"r3".to_vec())
        ]
    );

    // An unwritten start that cannot be followed is an HTTP error, not a session.
    for (stream, query, expected) in [
        ("r", "seq_num=9&count=1", tail),
        ("r", "seq_num=5&count=1", tail),
        ("empty", "seq_num=0&count=10", (0, 0)),
    ] {
        let response = open_s2s_read(port, &basin, stream, query, &[]).into_response();
        response.expect_status(416);
        assert_eq!(
            response.json(),
            json!({ "tail": { "seq_num": expected.0, "timestamp": expected.1 } }),
            "{stream}?{query}"
        );
    }

    // Following: a heartbeat at the tail, then live batches with their tail.
    let mut response = open_s2s_read(port, &basin, "r", "seq_num=5", &[]);
    assert_s2s_headers(&response);
    let heartbeat = response
        .next_frame(FRAME_TIMEOUT)
        .expect_item("a heartbeat")
        .read_batch();
    assert!(heartbeat.records.is_empty());
    assert_eq!(heartbeat.tail.map(|t| (t.seq_num, t.timestamp)), Some(tail));
    let ack = append_ok(port, &basin, "r", &bodies(&["live-1", "live-2"]));
    let live = loop {
        let batch = response
            .next_frame(FRAME_TIMEOUT)
            .expect_item("a live batch")
            .read_batch();
        if !batch.records.is_empty() {
            break batch;
        }
    };
    let got: Vec<u64> = live.records.iter().map(|r| r.seq_num).collect();
    assert_eq!(got, vec![5, 6]);
    assert_eq!(
        live.tail.map(|t| (t.seq_num, t.timestamp)),
        Some(position(&ack["end"]))
    );
    drop(response);

    // With `wait`, an idle follower ends cleanly after about that long.
    let started = Instant::now();
    let mut response = open_s2s_read(port, &basin, "r", "seq_num=7&wait=2", &[]);
    assert_s2s_headers(&response);
    let (frames, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
    let elapsed = started.elapsed();
    assert_eq!(terminal, None);
    assert!(!frames.is_empty(), "following starts with a heartbeat");
    assert!(frames
        .iter()
        .all(|frame| frame.read_batch().records.is_empty()));
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(8),
        "wait=2 ended after {elapsed:?}"
    );
}

// B-218 B-219
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2s_read_session_compression() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-s2s-zip", "big");
    create_stream(port, &basin, "small", None);
    let large = "q".repeat(1500);
    append_ok(port, &basin, "big", &bodies(&[large.as_str(), "tiny"]));
    append_ok(port, &basin, "small", &bodies(&["a", "b"]));

    for (accept, expected) in [
        (None, 0),
        (Some("identity"), 0),
        (Some("gzip"), 2),
        (Some("zstd"), 1),
        (Some("gzip, zstd"), 1),
        (Some("zstd;q=0, gzip"), 2),
        (Some("gzip;q=0"), 0),
        // The same negotiator as unary responses: `x-gzip`, and weights in any case.
        (Some("x-gzip"), 2),
        (Some("zstd;Q=0, x-gzip"), 2),
    ] {
        for (stream, big) in [("big", true), ("small", false)] {
            let extra: Vec<(&str, &str)> = accept
                .map(|value| vec![("Accept-Encoding", value)])
                .unwrap_or_default();
            let mut response = open_s2s_read(port, &basin, stream, "seq_num=0&count=2", &extra);
            assert_s2s_headers(&response);
            let (frames, terminal) = split_terminal(response.frames_to_end(FRAME_TIMEOUT));
            assert_eq!(terminal, None);
            let mut saw_large = false;
            let mut delivered = 0;
            for frame in &frames {
                let payload = frame.payload();
                let wanted = if payload.len() >= 1024 { expected } else { 0 };
                saw_large |= payload.len() >= 1024;
                assert_eq!(
                    frame.compression(),
                    wanted,
                    "{stream} with Accept-Encoding {accept:?}: a {}-byte payload",
                    payload.len()
                );
                delivered += frame.read_batch().records.len();
            }
            assert_eq!(delivered, 2);
            assert_eq!(saw_large, big, "{stream}: payload sizes are not as planned");
        }
    }
}

// B-211 B-212 B-224 B-261
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_append_session_producer_and_read_session() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-sdk-sess", "s");
    let stream = server
        .sdk()
        .basin(basin_name(&basin))
        .stream(stream_name("s"));

    let session = stream.append_session(AppendSessionConfig::new());
    let mut tickets = Vec::new();
    let mut expected = Vec::new();
    for i in 0..20u64 {
        let batch: Vec<String> = (0..2).map(|j| format!("session-{i}-{j}")).collect();
        expected.extend(batch.iter().cloned());
        let input = sdk_batch(&batch).with_match_seq_num(2 * i);
        tickets.push(session.submit(input).await.expect("submit"));
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        let ack = ticket.await.expect("session ack");
        assert_eq!(ack.start.seq_num, 2 * i as u64);
        assert_eq!(ack.end.seq_num, 2 * i as u64 + 2);
        assert!(ack.tail.seq_num >= ack.end.seq_num);
    }
    session.close().await.expect("close the append session");

    let producer = stream.producer(ProducerConfig::new());
    let mut tickets = Vec::new();
    for i in 0..100 {
        let body = format!("produced-{i}");
        expected.push(body.clone());
        tickets.push(
            producer
                .submit(AppendRecord::new(body).expect("record"))
                .await
                .expect("submit to the producer"),
        );
    }
    for (i, ticket) in tickets.into_iter().enumerate() {
        let ack = ticket.await.expect("producer ack");
        assert_eq!(ack.seq_num, 40 + i as u64);
        assert!(ack.batch.start.seq_num <= ack.seq_num && ack.seq_num < ack.batch.end.seq_num);
    }
    producer.close().await.expect("close the producer");
    assert_eq!(check_tail(port, &basin, "s").0, 140);

    // A bounded read session returns exactly `count` records, then ends.
    let input =
        read_from(0).with_stop(ReadStop::new().with_limits(ReadLimits::new().with_count(140)));
    let mut reader = Box::pin(
        stream
            .read_session(input, ReadSessionConfig::new())
            .await
            .expect("open the read session"),
    );
    let mut records: Vec<SequencedRecord> = Vec::new();
    while let Some(batch) = tokio::time::timeout(FRAME_TIMEOUT, reader.next())
        .await
        .expect("the read session stalled")
    {
        records.extend(batch.expect("read session batch").records);
    }
    let got: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(got, expected);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq_num == i as u64));
}

// B-213
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_append_session_reports_conflicts_after_earlier_acks() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-sdk-conflict", "m");
    create_stream(port, &basin, "f", None);
    let handle = server.sdk().basin(basin_name(&basin));

    let stream = handle.stream(stream_name("m"));
    let session = stream.append_session(AppendSessionConfig::new());
    let mut outcomes = Vec::new();
    for (i, match_seq_num) in [0u64, 1, 2, 99, 3].into_iter().enumerate() {
        let input = sdk_batch(&[format!("m{i}")]).with_match_seq_num(match_seq_num);
        outcomes.push(session.submit(input).await);
    }
    let mut results = Vec::new();
    for outcome in outcomes {
        results.push(match outcome {
            Ok(ticket) => ticket.await,
            Err(err) => Err(err),
        });
    }
    for (i, result) in results[..3].iter().enumerate() {
        let ack = result
            .as_ref()
            .expect("inputs before the failure are acknowledged");
        assert_eq!(ack.start.seq_num, i as u64);
    }
    match &results[3] {
        Err(AppendSessionError::Append(AppendError::ConditionFailed(
            AppendConditionFailed::SeqNumMismatch(next),
        ))) => assert_eq!(*next, 3),
        other => panic!("expected a seq_num mismatch, got {other:?}"),
    }
    assert!(
        results[4].is_err(),
        "an input after the failure was acknowledged"
    );
    drop(session);
    assert_eq!(check_tail(port, &basin, "m").0, 3);

    let stream = handle.stream(stream_name("f"));
    stream
        .append(AppendInput::new(
            AppendRecordBatch::try_from_iter([AppendRecord::from(CommandRecord::fence(
                fencing_token("t1"),
            ))])
            .expect("batch"),
        ))
        .await
        .expect("fence");
    let session = stream.append_session(AppendSessionConfig::new());
    let mut outcomes = Vec::new();
    for (i, token) in ["t1", "t0", "t1"].into_iter().enumerate() {
        let input = sdk_batch(&[format!("f{i}")]).with_fencing_token(fencing_token(token));
        outcomes.push(session.submit(input).await);
    }
    let mut results = Vec::new();
    for outcome in outcomes {
        results.push(match outcome {
            Ok(ticket) => ticket.await,
            Err(err) => Err(err),
        });
    }
    assert_eq!(
        results[0].as_ref().expect("matching token").start.seq_num,
        1
    );
    match &results[1] {
        Err(AppendSessionError::Append(AppendError::ConditionFailed(
            AppendConditionFailed::FencingTokenMismatch(current),
        ))) => assert_eq!(current.to_string(), "t1"),
        other => panic!("expected a fencing token mismatch, got {other:?}"),
    }
    assert!(results[2].is_err());
    drop(session);
    assert_eq!(check_tail(port, &basin, "f").0, 2);
}

// B-262
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailing_reader_sees_every_record_once_in_order() {
    const BATCHES: usize = 40;
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-tail", "t");
    let stream = server
        .sdk()
        .basin(basin_name(&basin))
        .stream(stream_name("t"));
    let size = |batch: usize| 1 + batch % 4;
    let expected: Vec<String> = (0..BATCHES)
        .flat_map(|b| (0..size(b)).map(move |i| format!("w{b}-{i}")))
        .collect();

    let mut reader = Box::pin(
        stream
            .read_session(read_from(0), ReadSessionConfig::new())
            .await
            .expect("open the tailing session"),
    );
    let writer_stream = stream.clone();
    let writer = tokio::spawn(async move {
        let batch_bodies =
            |b: usize| -> Vec<String> { (0..size(b)).map(|i| format!("w{b}-{i}")).collect() };
        for b in 0..BATCHES / 2 {
            writer_stream
                .append(sdk_batch(&batch_bodies(b)))
                .await
                .expect("unary append");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let session = writer_stream.append_session(AppendSessionConfig::new());
        let mut tickets = Vec::new();
        for b in BATCHES / 2..BATCHES {
            tickets.push(
                session
                    .submit(sdk_batch(&batch_bodies(b)))
                    .await
                    .expect("submit"),
            );
        }
        for ticket in tickets {
            ticket.await.expect("session ack");
        }
        session.close().await.expect("close");
    });

    let mut records: Vec<SequencedRecord> = Vec::new();
    while records.len() < expected.len() {
        let batch = tokio::time::timeout(Duration::from_secs(20), reader.next())
            .await
            .expect("the tailing reader stalled")
            .expect("the tailing session ended")
            .expect("read session batch");
        records.extend(batch.records);
    }
    writer.await.expect("writer task");
    let got: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(got, expected);
    assert!(records
        .iter()
        .enumerate()
        .all(|(i, r)| r.seq_num == i as u64));
    // Nothing is delivered twice.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), reader.next())
            .await
            .is_err(),
        "the reader received more than was written"
    );
}

/// What one raw follower saw: when the first heartbeat came, the gap to the second, and
/// the first data after the test appended.
struct FollowerLog {
    first_heartbeat: Duration,
    heartbeat_gap: Duration,
    live: Value,
}

// B-193 B-199 B-222 B-223 B-262
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_followers_heartbeat_and_stay_alive() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-idle", "idle");
    append_ok(port, &basin, "idle", &bodies(&["before"]));
    let tail = check_tail(port, &basin, "idle");
    let opened = Instant::now();

    let stream = server
        .sdk()
        .basin(basin_name(&basin))
        .stream(stream_name("idle"));
    let mut sdk_reader = Box::pin(
        stream
            .read_session(read_from(1), ReadSessionConfig::new())
            .await
            .expect("open the SDK session"),
    );

    let (s2s_ready_tx, s2s_ready) = tokio::sync::oneshot::channel::<()>();
    let s2s_basin = basin.clone();
    let s2s = tokio::task::spawn_blocking(move || {
        let mut response = open_s2s_read(port, &s2s_basin, "idle", "", &[]);
        assert_s2s_headers(&response);
        let started = Instant::now();
        let mut heartbeat = || {
            let frame = response
                .next_frame(Duration::from_secs(17))
                .expect_item("an S2S heartbeat");
            let batch = frame.read_batch();
            assert!(batch.records.is_empty(), "unexpected data while idle");
            assert_eq!(batch.tail.map(|t| (t.seq_num, t.timestamp)), Some(tail));
            started.elapsed()
        };
        let first_heartbeat = heartbeat();
        let heartbeat_gap = heartbeat() - first_heartbeat;
        let _ = s2s_ready_tx.send(());
        let live = loop {
            let batch = response
                .next_frame(FRAME_TIMEOUT)
                .expect_item("a live S2S batch")
                .read_batch();
            if !batch.records.is_empty() {
                break batch;
            }
        };
        let records: Vec<Value> = live
            .records
            .iter()
            .map(|r| json!({ "seq_num": r.seq_num, "body": String::from_utf8_lossy(&r.body) }))
            .collect();
        let live_tail = live
            .tail
            .map(|t| json!({ "seq_num": t.seq_num, "timestamp": t.timestamp }));
        FollowerLog {
            first_heartbeat,
            heartbeat_gap,
            live: json!({ "records": records, "tail": live_tail }),
        }
    });

    let (sse_ready_tx, sse_ready) = tokio::sync::oneshot::channel::<()>();
    let sse_basin = basin.clone();
    let sse = tokio::task::spawn_blocking(move || {
        let mut response = StreamingResponse::open(
            port,
            "GET",
            &records_path("idle", ""),
            &[
                ("S2-Basin", sse_basin.as_str()),
                ("Accept", "text/event-stream"),
            ],
            b"",
        );
        assert_eq!(response.status, 200);
        let started = Instant::now();
        let mut ping = || {
            let event = response
                .next_event(Duration::from_secs(17))
                .expect_item("an SSE ping");
            assert_eq!(
                event.kind(),
                "ping",
                "only pings while idle (no [DONE]): {event:?}"
            );
            assert_eq!(position(&event.json()["tail"]), tail);
            started.elapsed()
        };
        let first_heartbeat = ping();
        let heartbeat_gap = ping() - first_heartbeat;
        let _ = sse_ready_tx.send(());
        let live = loop {
            let event = response
                .next_event(FRAME_TIMEOUT)
                .expect_item("a live SSE batch");
            if event.kind() != "ping" {
                assert_eq!(event.kind(), "batch", "{event:?}");
                break event.json();
            }
        };
        FollowerLog {
            first_heartbeat,
            heartbeat_gap,
            live,
        }
    });

    if s2s_ready.await.is_err() {
        joined(s2s).await;
        unreachable!("the S2S follower ended without reporting");
    }
    if sse_ready.await.is_err() {
        joined(sse).await;
        unreachable!("the SSE follower ended without reporting");
    }
    // Keep the SDK session idle for at least 16 s.
    let idle = Duration::from_secs(16);
    if let Some(left) = idle.checked_sub(opened.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let ack = append_ok(port, &basin, "idle", &bodies(&["after idle"]));
    let end = position(&ack["end"]);
    let expected_live = json!({
        "records": [{ "seq_num": 1, "body": "after idle" }],
        "tail": { "seq_num": end.0, "timestamp": end.1 }
    });

    let batch = tokio::time::timeout(FRAME_TIMEOUT, sdk_reader.next())
        .await
        .expect("the idle SDK session received nothing after the append")
        .expect("the idle SDK session ended")
        .expect("the idle SDK session failed");
    let got: Vec<(u64, String)> = batch
        .records
        .iter()
        .map(|r| (r.seq_num, String::from_utf8_lossy(&r.body).into_owned()))
        .collect();
    assert_eq!(got, vec![(1, "after idle".to_owned())]);
    assert_eq!(batch.tail.map(|t| (t.seq_num, t.timestamp)), Some(end));

    for (what, log) in [("S2S", joined(s2s).await), ("SSE", joined(sse).await)] {
        assert!(
            log.first_heartbeat < Duration::from_secs(3),
            "{what}: the first heartbeat must come when following starts, came after {:?}",
            log.first_heartbeat
        );
        assert!(
            log.heartbeat_gap >= Duration::from_secs(4)
                && log.heartbeat_gap <= Duration::from_millis(16_500),
            "{what}: heartbeats must repeat every 5-15 s while idle, gap was {:?}",
            log.heartbeat_gap
        );
        let live = if what == "SSE" {
            json!({
                "records": log.live["records"]
                    .as_array()
                    .expect("records")
                    .iter()
                    .map(|r| json!({ "seq_num": r["seq_num"], "body": r["body"] }))
                    .collect::<Vec<_>>(),
                "tail": log.live["tail"],
            })
        } else {
            log.live
        };
        assert_eq!(live, expected_live, "{what}: the live batch after idling");
    }
    assert_eq!(
        seq_nums(&read_records(port, &basin, "idle", "seq_num=0")),
        vec![0, 1]
    );
}

// B-003
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_ping_is_answered() {
    let server = start();
    let mut socket = connect(server.port());
    socket
        .set_read_timeout(Some(FRAME_TIMEOUT))
        .expect("read timeout");
    let payload = *b"e2e-ping";
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    hello.extend_from_slice(&[0, 0, 8, 0x6, 0, 0, 0, 0, 0]);
    hello.extend_from_slice(&payload);
    socket
        .write_all(&hello)
        .expect("send preface, SETTINGS and PING");

    let deadline = Instant::now() + FRAME_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no PING acknowledgement");
        let mut header = [0u8; 9];
        socket
            .read_exact(&mut header)
            .expect("an HTTP/2 frame header");
        let length =
            (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
        let (kind, flags) = (header[3], header[4]);
        let mut body = vec![0u8; length];
        socket.read_exact(&mut body).expect("an HTTP/2 frame body");
        match kind {
            0x4 if flags & 0x1 == 0 => socket
                .write_all(&[0, 0, 0, 0x4, 0x1, 0, 0, 0, 0])
                .expect("acknowledge SETTINGS"),
            0x6 => {
                assert_eq!(flags & 0x1, 0x1, "the server must answer with a PING ACK");
                assert_eq!(body, payload, "the PING ACK echoes the payload");
                break;
            }
            0x7 => panic!("the server sent GOAWAY: {body:?}"),
            _ => {}
        }
    }
}

//! Lifecycle of streams and basins, and data at rest: init files, encryption with stream
//! ciphers, retention and trimming, delete-on-empty, deletion and re-creation races, and
//! deletions interrupted by `kill -9` (SEMANTICS.md §3, §7–§9; API.md §3.5, §4.5, §5, §8).
//!
//! Shared here: a server with a short deletion delay, raw helpers for deleting and waiting
//! until things are gone, command-record inputs, encryption keys, SSE and S2S openers, and
//! a hand-encoded protobuf AppendInput for raw S2S append sessions.

mod delete_on_empty;
mod encryption;
mod init_file;
mod races;
mod restart;
mod retention_trim;

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::data_plane::{
    append_json, read_raw, records_path, stream_path, Next, SseEvent, StreamingResponse,
};
pub use crate::data_plane::{open_s2s_read, open_sse};
use crate::harness::{eventually, http, http_json, Response, Server, DELETION_TIMEOUT};

/// How long a deletion is reported as pending before background cleanup, in the servers
/// these tests start (the default of 2 s would make every deletion test slow).
pub const DELETION_DELAY_MS: u64 = 200;

/// How long one SSE event or S2S frame may take to arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server with two shards and a 200 ms deletion delay.
pub fn start() -> Server {
    let delay = DELETION_DELAY_MS.to_string();
    Server::start(&["--shards", "2", "--deletion-delay-ms", delay.as_str()])
}

/// A base64 encryption key of 32 bytes, all equal to `byte`.
pub fn key(byte: u8) -> String {
    BASE64.encode([byte; 32])
}

// ---------------------------------------------------------------------------------------
// Control plane over raw HTTP
// ---------------------------------------------------------------------------------------

/// A request to a basin-scoped route, with a JSON body when one is given.
pub fn in_basin(
    port: u16,
    basin: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Response {
    match body {
        Some(body) => http_json(port, method, path, &[("S2-Basin", basin)], body),
        None => http(port, method, path, &[("S2-Basin", basin)], b""),
    }
}

/// `GET /v1/streams/{stream}`: the stream config, or the error.
pub fn get_stream_config(port: u16, basin: &str, stream: &str) -> Response {
    in_basin(port, basin, "GET", &stream_path(stream), None)
}

/// The resolved config of a stream, which must exist.
pub fn stream_config(port: u16, basin: &str, stream: &str) -> Value {
    let response = get_stream_config(port, basin, stream);
    response.expect_status(200);
    response.json()
}

/// `GET /v1/basins/{basin}`, which must succeed.
pub fn basin_config(port: u16, basin: &str) -> Value {
    let response = http(port, "GET", &format!("/v1/basins/{basin}"), &[], b"");
    response.expect_status(200);
    response.json()
}

/// The StreamInfo objects of the first page of `GET /v1/streams`.
pub fn listed_streams(port: u16, basin: &str) -> Vec<Value> {
    let response = in_basin(port, basin, "GET", "/v1/streams", None);
    response.expect_status(200);
    let body = response.json();
    body["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("streams is not an array in {body}"))
        .clone()
}

/// The names of the listed streams.
pub fn listed_stream_names(port: u16, basin: &str) -> Vec<String> {
    listed_streams(port, basin)
        .iter()
        .map(|info| {
            info["name"]
                .as_str()
                .unwrap_or_else(|| panic!("stream name is not a string in {info}"))
                .to_owned()
        })
        .collect()
}

/// Names of the listed basins that start with `prefix`, with their state.
pub fn listed_basins(port: u16, prefix: &str) -> Vec<(String, String)> {
    let response = http(
        port,
        "GET",
        &format!("/v1/basins?prefix={prefix}"),
        &[],
        b"",
    );
    response.expect_status(200);
    let body = response.json();
    body["basins"]
        .as_array()
        .unwrap_or_else(|| panic!("basins is not an array in {body}"))
        .iter()
        .map(|info| {
            (
                info["name"].as_str().unwrap_or_default().to_owned(),
                info["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `POST /v1/streams`, which must answer 201.
pub fn create_stream_ok(port: u16, basin: &str, stream: &str, config: Option<Value>) {
    let body = match config {
        Some(config) => json!({ "stream": stream, "config": config }),
        None => json!({ "stream": stream }),
    };
    in_basin(port, basin, "POST", "/v1/streams", Some(&body)).expect_status(201);
}

/// `DELETE /v1/streams/{stream}`, which must answer 202. Returns when it was sent.
pub fn delete_stream(port: u16, basin: &str, stream: &str) -> Instant {
    let sent = Instant::now();
    let response = in_basin(port, basin, "DELETE", &stream_path(stream), None);
    response.expect_status(202);
    sent
}

/// Waits until the stream config answers 404 and the stream is no longer listed.
pub async fn wait_stream_gone(port: u16, basin: &str, stream: &str) {
    eventually(
        &format!("stream {stream:?} in {basin} is gone"),
        DELETION_TIMEOUT,
        || get_stream_config(port, basin, stream).status == 404,
    )
    .await;
    eventually(
        &format!("stream {stream:?} in {basin} is no longer listed"),
        DELETION_TIMEOUT,
        || !listed_stream_names(port, basin).iter().any(|s| s == stream),
    )
    .await;
}

/// Waits until `GET /v1/basins/{basin}` answers 404.
pub async fn wait_basin_gone(port: u16, basin: &str, timeout: Duration) {
    let path = format!("/v1/basins/{basin}");
    eventually(&format!("basin {basin} is gone"), timeout, || {
        let response = http(port, "GET", &path, &[], b"");
        assert!(
            matches!(response.status, 200 | 404),
            "GET {path} while deleting: {} {:?}",
            response.status,
            response.text()
        );
        response.status == 404
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------

/// `S2-Format: base64`, needed to send the binary body of a trim command as JSON.
pub const BASE64_FORMAT: (&str, &str) = ("S2-Format", "base64");

/// A JSON AppendInput (base64 format) holding one trim command to `seq_num`.
pub fn trim_input(seq_num: u64) -> Value {
    json!({ "records": [{
        "headers": [["", BASE64.encode("trim")]],
        "body": BASE64.encode(seq_num.to_be_bytes()),
    }] })
}

/// A JSON AppendInput (raw format) holding one fence command.
pub fn fence_input(token: &str) -> Value {
    json!({ "records": [{ "headers": [["", "fence"]], "body": token }] })
}

/// Appends a trim command with these extra headers; it must succeed. Returns the ack.
pub fn append_trim(
    port: u16,
    basin: &str,
    stream: &str,
    seq_num: u64,
    extra: &[(&str, &str)],
) -> Value {
    let mut headers = vec![BASE64_FORMAT];
    headers.extend_from_slice(extra);
    let response = append_json(port, basin, stream, &headers, &trim_input(seq_num));
    response.expect_status(200);
    response.json()
}

/// A unary read with extra headers that must succeed; returns the records.
pub fn read_records_with(
    port: u16,
    basin: &str,
    stream: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Vec<Value> {
    let response = read_raw(port, basin, stream, query, headers);
    response.expect_status(200);
    let batch = response.json();
    batch["records"]
        .as_array()
        .unwrap_or_else(|| panic!("records is not an array in {batch}"))
        .clone()
}

/// The bodies of JSON records (raw format); an omitted body is empty.
pub fn record_bodies(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|record| record["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Asserts a 416 answer whose body names this tail.
pub fn assert_unwritten(response: &Response, tail: (u64, u64)) {
    response.expect_status(416);
    assert_eq!(
        response.json(),
        json!({ "tail": { "seq_num": tail.0, "timestamp": tail.1 } }),
        "416 body"
    );
}

/// Body-only records named `<prefix>-<i>` for i in `range`, as a JSON AppendInput.
pub fn numbered(prefix: &str, range: std::ops::Range<u64>) -> Value {
    let records: Vec<Value> = range
        .map(|i| json!({ "body": format!("{prefix}-{i}") }))
        .collect();
    json!({ "records": records })
}

// ---------------------------------------------------------------------------------------
// Streaming reads
// ---------------------------------------------------------------------------------------

/// A raw S2S append session whose whole request body is sent up front.
pub fn open_s2s_append(
    port: u16,
    basin: &str,
    stream: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> StreamingResponse {
    let mut headers = vec![("S2-Basin", basin), ("Content-Type", "s2s/proto")];
    headers.extend_from_slice(extra);
    StreamingResponse::open(port, "POST", &records_path(stream, ""), &headers, body)
}

/// Every SSE event up to `[DONE]` (excluded), which must come.
pub fn sse_events_until_done(response: &mut StreamingResponse) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        match response.next_event(EVENT_TIMEOUT) {
            Next::Item(event) if event.is_done() => return events,
            Next::Item(event) => events.push(event),
            other => panic!("expected more events or [DONE], got {other:?} after {events:?}"),
        }
    }
}

/// The records of SSE batch events; any other kind of event fails the test.
pub fn sse_batch_records(events: &[SseEvent]) -> Vec<Value> {
    let mut records = Vec::new();
    for event in events {
        assert_eq!(event.kind(), "batch", "unexpected SSE event {event:?}");
        let data = event.json();
        let batch = data["records"]
            .as_array()
            .unwrap_or_else(|| panic!("records is not an array in {data}"));
        records.extend(batch.iter().cloned());
    }
    records
}

/// The next SSE event that is not a ping.
pub fn next_non_ping(response: &mut StreamingResponse) -> SseEvent {
    loop {
        let event = response
            .next_event(EVENT_TIMEOUT)
            .expect_item("an SSE event");
        if event.kind() != "ping" {
            return event;
        }
    }
}

/// `(seq_num, body)` of every record in the S2S frames of a read session, which must all
/// be regular frames.
pub fn s2s_records(frames: &[crate::data_plane::Frame]) -> Vec<(u64, Vec<u8>)> {
    let mut records = Vec::new();
    for frame in frames {
        assert!(
            !frame.is_terminal(),
            "unexpected terminal frame {:?}",
            frame.terminal()
        );
        for record in frame.read_batch().records {
            records.push((record.seq_num, record.body));
        }
    }
    records
}

// ---------------------------------------------------------------------------------------
// Protobuf, by hand
// ---------------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An `s2.v1.AppendInput` of body-only records: field 1 holds each AppendRecord, whose
/// field 3 holds the body.
pub fn proto_append_input(bodies: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for body in bodies {
        let mut record = vec![0x1a];
        put_varint(&mut record, body.len() as u64);
        record.extend_from_slice(body.as_bytes());
        out.push(0x0a);
        put_varint(&mut out, record.len() as u64);
        out.extend_from_slice(&record);
    }
    out
}

/// One uncompressed regular S2S frame carrying this payload.
pub fn regular_frame(payload: &[u8]) -> Vec<u8> {
    crate::data_plane::frame(0, payload)
}

//! SSE read sessions over raw HTTP/1.1 (`Accept: text/event-stream`): batch, ping, error
//! and done events, event ids, resumption with `Last-Event-ID`, pre-stream errors, and no
//! HTTP compression on streaming responses (WIRE.md §2, §4; SEMANTICS.md §6.5).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{
    append_json, append_ok, basin_with_stream, check_tail, create_basin, create_stream, metered,
    now_ms, open_sse, position, read_raw, records_path, seq_nums, start, Next, SseEvent,
    StreamingResponse,
};
use crate::harness::{assert_error, assert_json_content_type, assert_keys, Response};

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn assert_sse_headers(response: &StreamingResponse) {
    assert_eq!(response.status, 200, "headers {:?}", response.headers);
    let content_type = response.header("content-type").unwrap_or("");
    assert!(
        content_type
            .to_ascii_lowercase()
            .starts_with("text/event-stream"),
        "content-type {content_type:?}"
    );
    assert_eq!(
        response.header("cache-control"),
        Some("no-cache, no-transform")
    );
    assert_eq!(response.header("x-accel-buffering"), Some("no"));
    assert_eq!(
        response.header("content-encoding"),
        None,
        "SSE is never HTTP-compressed"
    );
}

/// Every event up to `[DONE]` (excluded), which must come, followed by the end of the
/// response.
fn events_until_done(response: &mut StreamingResponse) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        match response.next_event(EVENT_TIMEOUT) {
            Next::Item(event) if event.is_done() => break,
            Next::Item(event) => events.push(event),
            other => panic!("expected more events or [DONE], got {other:?} after {events:?}"),
        }
    }
    match response.next_event(EVENT_TIMEOUT) {
        Next::End => {}
        other => panic!("the response must end after [DONE], got {other:?}"),
    }
    events
}

/// The next event that is not a ping.
fn next_non_ping(response: &mut StreamingResponse) -> SseEvent {
    loop {
        let event = response
            .next_event(EVENT_TIMEOUT)
            .expect_item("an SSE event");
        if event.kind() != "ping" {
            return event;
        }
    }
}

/// Checks batch events and their cumulative ids, starting from `(count, bytes)` already
/// delivered, with `sizes[seq]` the metered size of each record. Returns the records.
fn check_batches(events: &[SseEvent], sizes: &[usize], delivered: (usize, usize)) -> Vec<Value> {
    let (mut count, mut bytes) = delivered;
    let mut records = Vec::new();
    for event in events {
        assert_eq!(event.kind(), "batch", "unexpected event {event:?}");
        let data = event.json();
        let batch = data["records"].as_array().expect("records array").clone();
        assert!(!batch.is_empty(), "a batch event is never empty: {event:?}");
        assert!(
            data.get("tail").is_none(),
            "a catch-up batch carries no tail: {data}"
        );
        count += batch.len();
        bytes += batch
            .iter()
            .map(|record| sizes[position(record).0 as usize])
            .sum::<usize>();
        let last = position(batch.last().expect("non-empty")).0;
        assert_eq!(
            event.id.as_deref(),
            Some(format!("{last},{count},{bytes}").as_str()),
            "event id of {data}"
        );
        records.extend(batch);
    }
    records
}

/// Five records of different metered sizes; returns the sizes by seq_num.
fn append_five(port: u16, basin: &str, stream: &str) -> Vec<usize> {
    let mut records = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..5usize {
        let value = "v".repeat(i);
        let body = "b".repeat(3 * i + 1);
        sizes.push(metered(&[(b"k", value.as_bytes())], body.as_bytes()));
        records.push(json!({ "headers": [["k", value]], "body": body }));
    }
    append_ok(port, basin, stream, &json!({ "records": records }));
    sizes
}

// B-126 B-190 B-191 B-192
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_catch_up_reads_end_with_done() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-sse", "s");
    let sizes = append_five(port, &basin, "s");

    let mut response = open_sse(port, &basin, "s", "seq_num=0&count=5", &[]);
    assert_sse_headers(&response);
    let events = events_until_done(&mut response);
    let records = check_batches(&events, &sizes, (0, 0));
    assert_eq!(seq_nums(&records), vec![0, 1, 2, 3, 4]);
    assert_eq!(records[2]["headers"], json!([["k", "vv"]]));
    assert_eq!(records[2]["body"], "bbbbbbb");

    let mut response = open_sse(port, &basin, "s", "seq_num=1&count=2", &[]);
    let records = check_batches(&events_until_done(&mut response), &sizes, (0, 0));
    assert_eq!(seq_nums(&records), vec![1, 2]);

    let budget = sizes[0] + sizes[1] + sizes[2] - 1;
    let mut response = open_sse(port, &basin, "s", &format!("seq_num=0&bytes={budget}"), &[]);
    let records = check_batches(&events_until_done(&mut response), &sizes, (0, 0));
    assert_eq!(
        seq_nums(&records),
        vec![0, 1],
        "the third record does not fit in {budget}"
    );

    let mut response = open_sse(
        port,
        &basin,
        "s",
        "seq_num=0&count=9",
        &[("S2-Format", "base64")],
    );
    let records = check_batches(&events_until_done(&mut response), &sizes, (0, 0));
    assert_eq!(records[1]["body"], BASE64.encode("bbbb"));
    assert_eq!(
        records[1]["headers"],
        json!([[BASE64.encode("k"), BASE64.encode("v")]])
    );
}

// B-193 B-199
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_pings_when_caught_up_then_delivers_live_batches() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-ping", "p");
    append_ok(
        port,
        &basin,
        "p",
        &json!({ "records": [{ "body": "old" }, { "body": "old" }] }),
    );
    let tail = check_tail(port, &basin, "p");

    let mut response = open_sse(port, &basin, "p", "", &[]);
    assert_sse_headers(&response);
    let ping = response.next_event(EVENT_TIMEOUT).expect_item("a ping");
    assert_eq!(
        ping.kind(),
        "ping",
        "the first event at the tail is a ping: {ping:?}"
    );
    let data = ping.json();
    assert_keys(&data, &["timestamp", "tail"]);
    assert_eq!(position(&data["tail"]), tail);
    let server_now = data["timestamp"].as_u64().expect("ping timestamp");
    let now = now_ms();
    assert!(
        server_now + 10_000 > now && server_now < now + 10_000,
        "ping timestamp {server_now} is not the current time {now}"
    );

    let ack = append_ok(
        port,
        &basin,
        "p",
        &json!({ "records": [{ "body": "n1" }, { "body": "n22" }] }),
    );
    let event = next_non_ping(&mut response);
    assert_eq!(event.kind(), "batch", "{event:?}");
    let data = event.json();
    assert_eq!(
        seq_nums(data["records"].as_array().expect("records")),
        vec![2, 3]
    );
    assert_eq!(
        position(&data["tail"]),
        position(&ack["end"]),
        "a live batch carries the tail"
    );
    let bytes = metered(&[], b"n1") + metered(&[], b"n22");
    assert_eq!(event.id.as_deref(), Some(format!("3,2,{bytes}").as_str()));
    drop(response);

    // With `wait`, an idle session ends with [DONE] after about that long, also when
    // limits are set and the start is exactly the tail.
    for query in ["wait=1", "seq_num=4&count=10&wait=1"] {
        let started = Instant::now();
        let mut response = open_sse(port, &basin, "p", query, &[]);
        assert_sse_headers(&response);
        let events = events_until_done(&mut response);
        let elapsed = started.elapsed();
        assert!(
            events.iter().all(|event| event.kind() == "ping"),
            "{query}: only pings expected, got {events:?}"
        );
        assert!(!events.is_empty(), "{query}: following starts with a ping");
        assert!(
            elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(6),
            "{query}: ended after {elapsed:?}"
        );
    }
}

// B-194 B-195 B-196
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_from_last_event_id() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-resume", "r");
    let sizes = append_five(port, &basin, "r");
    let total: usize = sizes.iter().sum();
    let first_two = sizes[0] + sizes[1];

    // The start is replaced by seq_num + 1, and the count is reduced by what was delivered.
    let id = format!("1,2,{first_two}");
    let mut response = open_sse(
        port,
        &basin,
        "r",
        "tail_offset=0&count=5",
        &[("Last-Event-ID", id.as_str())],
    );
    assert_sse_headers(&response);
    let events = events_until_done(&mut response);
    let records = check_batches(&events, &sizes, (2, first_two));
    assert_eq!(seq_nums(&records), vec![2, 3, 4]);
    assert_eq!(
        events.last().and_then(|event| event.id.clone()),
        Some(format!("4,5,{total}"))
    );

    // The byte budget is reduced too.
    let four = total - sizes[4];
    let mut response = open_sse(
        port,
        &basin,
        "r",
        &format!("seq_num=0&bytes={four}"),
        &[("Last-Event-ID", id.as_str())],
    );
    let records = check_batches(&events_until_done(&mut response), &sizes, (2, first_two));
    assert_eq!(seq_nums(&records), vec![2, 3]);

    // Nothing left: only [DONE].
    for (query, last) in [
        ("seq_num=0&count=5".to_owned(), format!("4,5,{total}")),
        ("count=3".to_owned(), "1,7,0".to_owned()),
        (format!("bytes={first_two}"), format!("1,2,{first_two}")),
    ] {
        let mut response = open_sse(
            port,
            &basin,
            "r",
            &query,
            &[("Last-Event-ID", last.as_str())],
        );
        assert_sse_headers(&response);
        let events = events_until_done(&mut response);
        assert!(events.is_empty(), "{query} after {last}: {events:?}");
    }

    for bad in ["abc", "1,2", "1,2,x", "-1,0,0"] {
        let response = open_sse(port, &basin, "r", "seq_num=0", &[("Last-Event-ID", bad)]);
        assert_error(&response.into_response(), 400, "bad_header");
    }
}

// B-197
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_errors_before_the_stream_are_plain_json() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-sse-err", "e");
    create_stream(port, &basin, "empty", None);
    append_ok(
        port,
        &basin,
        "e",
        &json!({ "records": [{ "timestamp": 5, "body": "x" }] }),
    );

    let response = open_sse(port, &basin, "missing", "seq_num=0", &[]).into_response();
    assert_error(&response, 404, "stream_not_found");
    let response = open_sse(port, &basin, "e", "seq_num=0&tail_offset=1", &[]).into_response();
    assert_error(&response, 422, "invalid");

    let unwritten = |stream: &str, query: &str, tail: (u64, u64)| {
        let response: Response = open_sse(port, &basin, stream, query, &[]).into_response();
        response.expect_status(416);
        assert_json_content_type(&response);
        assert_eq!(
            response.json(),
            json!({ "tail": { "seq_num": tail.0, "timestamp": tail.1 } }),
            "{stream}?{query}"
        );
    };
    unwritten("e", "seq_num=9", (1, 5));
    unwritten("e", "seq_num=1&count=10", (1, 5));
    unwritten("empty", "seq_num=0&count=10", (0, 0));
}

// B-198
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_error_after_the_stream_started_is_an_error_event() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "dp-sse-key", json!({ "stream_cipher": "aegis-256" }));
    create_stream(port, &basin, "secret", None);
    let key = BASE64.encode([1u8; 32]);
    let other_key = BASE64.encode([2u8; 32]);
    append_json(
        port,
        &basin,
        "secret",
        &[("S2-Encryption-Key", key.as_str())],
        &json!({ "records": [{ "body": "plain words" }] }),
    )
    .expect_status(200);

    let mut response = open_sse(
        port,
        &basin,
        "secret",
        "seq_num=0",
        &[("S2-Encryption-Key", key.as_str())],
    );
    assert_sse_headers(&response);
    let first = next_non_ping(&mut response);
    assert_eq!(first.kind(), "batch", "{first:?}");
    assert_eq!(first.json()["records"][0]["body"], "plain words");

    // A record written under another key cannot be decrypted with this session's key.
    append_json(
        port,
        &basin,
        "secret",
        &[("S2-Encryption-Key", other_key.as_str())],
        &json!({ "records": [{ "body": "other words" }] }),
    )
    .expect_status(200);
    let error = next_non_ping(&mut response);
    assert_eq!(error.kind(), "error", "{error:?}");
    let body = error.json();
    assert_keys(&body, &["code", "message"]);
    assert_eq!(body["code"], "decryption_failed");
    match response.next_event(EVENT_TIMEOUT) {
        Next::End => {}
        other => panic!("nothing may follow an error event, got {other:?}"),
    }
}

// B-010
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_responses_are_never_http_compressed() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-nozip", "z");
    let body = "z".repeat(1000);
    append_ok(
        port,
        &basin,
        "z",
        &json!({ "records": [{ "body": body }, { "body": body }, { "body": body }] }),
    );
    let accept = [("Accept-Encoding", "gzip, zstd")];

    // The same records as a unary JSON read are compressed (over 1 KiB)...
    let unary = read_raw(
        port,
        &basin,
        "z",
        "seq_num=0",
        &[("Accept-Encoding", "gzip")],
    );
    unary.expect_status(200);
    assert_eq!(unary.header("content-encoding"), Some("gzip"));

    // ...but not as SSE...
    let mut response = open_sse(port, &basin, "z", "seq_num=0&count=3", &accept);
    assert_sse_headers(&response);
    let records = check_batches(
        &events_until_done(&mut response),
        &[1008, 1008, 1008],
        (0, 0),
    );
    assert_eq!(records.len(), 3);

    // ...nor as an S2S read session.
    let mut response = StreamingResponse::open(
        port,
        "GET",
        &records_path("z", "seq_num=0&count=3"),
        &[
            ("S2-Basin", basin.as_str()),
            ("Content-Type", "s2s/proto"),
            ("Accept-Encoding", "gzip"),
        ],
        b"",
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), None);
    let frames = response.frames_to_end(EVENT_TIMEOUT);
    let delivered: usize = frames
        .iter()
        .map(|frame| frame.read_batch().records.len())
        .sum();
    assert_eq!(delivered, 3);
}

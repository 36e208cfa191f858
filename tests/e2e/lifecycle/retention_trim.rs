//! Trimming and retention: trimmed records are hidden from every kind of read as soon as
//! the trim is acknowledged, expired records vanish within a few seconds, and neither ever
//! moves the tail (SEMANTICS.md §3, §7).

use std::time::Duration;

use serde_json::json;

use super::{
    append_trim, in_basin, numbered, open_s2s_read, open_sse, read_records_with, record_bodies,
    s2s_records, sse_batch_records, sse_events_until_done, start, EVENT_TIMEOUT,
};
use crate::data_plane::{
    append_ok, basin_with_stream, bodies, check_tail, create_basin, create_stream, position,
    read_records, seq_nums, stream_path,
};
use crate::harness::eventually;

// B-180 B-181 B-179
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_records_are_hidden_at_once_and_the_tail_stays() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "lc-trim", "t");
    append_ok(port, &basin, "t", &numbered("r", 0..10));
    let ack = append_trim(port, &basin, "t", 6, &[]);
    assert_eq!(position(&ack["start"]).0, 10, "the trim is record 10");
    let tail = position(&ack["end"]);
    assert_eq!(check_tail(port, &basin, "t"), tail);

    // No waiting: the first read after the ack already starts at the trim point.
    let records = read_records(port, &basin, "t", "seq_num=0");
    assert_eq!(seq_nums(&records), vec![6, 7, 8, 9, 10]);
    assert_eq!(
        record_bodies(&records[..4]),
        vec!["r-6", "r-7", "r-8", "r-9"]
    );
    assert_eq!(records[4]["headers"], json!([["", "trim"]]));
    for (query, expected) in [
        ("seq_num=3", vec![6, 7, 8, 9, 10]),
        ("seq_num=8", vec![8, 9, 10]),
        ("seq_num=0&count=2", vec![6, 7]),
        ("tail_offset=11", vec![6, 7, 8, 9, 10]),
        ("timestamp=0", vec![6, 7, 8, 9, 10]),
    ] {
        let records = read_records(port, &basin, "t", query);
        assert_eq!(seq_nums(&records), expected, "{query}");
    }
    let mut sse = open_sse(port, &basin, "t", "seq_num=0&count=5", &[]);
    assert_eq!(sse.status, 200, "{:?}", sse.headers);
    let records = sse_batch_records(&sse_events_until_done(&mut sse));
    assert_eq!(seq_nums(&records), vec![6, 7, 8, 9, 10], "SSE");
    let mut s2s = open_s2s_read(port, &basin, "t", "seq_num=0&count=5", &[]);
    assert_eq!(s2s.status, 200, "{:?}", s2s.headers);
    let seqs: Vec<u64> = s2s_records(&s2s.frames_to_end(EVENT_TIMEOUT))
        .into_iter()
        .map(|(seq_num, _)| seq_num)
        .collect();
    assert_eq!(seqs, vec![6, 7, 8, 9, 10], "S2S");
    assert_eq!(
        check_tail(port, &basin, "t"),
        tail,
        "a trim never moves the tail"
    );

    // A smaller trim is only a record.
    append_trim(port, &basin, "t", 3, &[]);
    assert_eq!(
        seq_nums(&read_records(port, &basin, "t", "seq_num=0")).first(),
        Some(&6)
    );

    // A trim beyond the tail trims everything up to and including itself.
    let ack = append_trim(port, &basin, "t", u64::MAX, &[]);
    assert_eq!(position(&ack["start"]).0, 12);
    let tail = position(&ack["end"]);
    let records = read_records(port, &basin, "t", "seq_num=0");
    assert!(records.is_empty(), "everything is trimmed: {records:?}");
    assert_eq!(check_tail(port, &basin, "t"), tail);
    let ack = append_ok(port, &basin, "t", &bodies(&["after"]));
    assert_eq!(position(&ack["start"]).0, 13, "numbering continues");
    let records = read_records(port, &basin, "t", "seq_num=0");
    assert_eq!(seq_nums(&records), vec![13]);
    assert_eq!(record_bodies(&records), vec!["after"]);
}

// B-185 B-100
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_records_vanish_without_moving_the_tail() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-expire", json!({}));
    create_stream(
        port,
        &basin,
        "short",
        Some(json!({ "retention_policy": { "age": 1 } })),
    );
    create_stream(port, &basin, "long", None);
    let input = numbered("e", 0..3);
    let ack = append_ok(port, &basin, "short", &input);
    append_ok(port, &basin, "long", &input);
    let tail = position(&ack["end"]);
    assert_eq!(
        read_records(port, &basin, "short", "seq_num=0").len(),
        3,
        "records are readable before they expire"
    );

    eventually(
        "records with a 1 s retention are gone",
        Duration::from_secs(4),
        || read_records(port, &basin, "short", "seq_num=0").is_empty(),
    )
    .await;
    assert!(read_records(port, &basin, "short", "seq_num=2").is_empty());
    assert_eq!(
        check_tail(port, &basin, "short"),
        tail,
        "expiry never moves the tail"
    );
    assert_eq!(
        record_bodies(&read_records(port, &basin, "long", "seq_num=0")),
        vec!["e-0", "e-1", "e-2"],
        "the default retention keeps them"
    );

    // Retention applies at write time: after switching to infinite retention, a new record
    // outlives the old age.
    let response = in_basin(
        port,
        &basin,
        "PATCH",
        &stream_path("short"),
        Some(&json!({ "retention_policy": { "infinite": {} } })),
    );
    response.expect_status(200);
    let ack = append_ok(port, &basin, "short", &bodies(&["kept"]));
    assert_eq!(position(&ack["start"]).0, 3, "numbering continues");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let records = read_records_with(port, &basin, "short", "seq_num=0", &[]);
    assert_eq!(seq_nums(&records), vec![3]);
    assert_eq!(record_bodies(&records), vec!["kept"]);
}

//! Deletion followed by re-creation under the same name: the new stream or basin shares
//! nothing with the old one (records, tail, fencing token, trim point, delete-on-empty
//! deadline), and readers of the old stream never see the new one (SEMANTICS.md §7, §8;
//! API.md §3.5, §4.5).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    append_trim, assert_unwritten, create_stream_ok, delete_stream, fence_input, get_stream_config,
    in_basin, listed_basins, listed_stream_names, listed_streams, numbered, open_s2s_read,
    open_sse, read_records_with, record_bodies, s2s_records, sse_batch_records,
    sse_events_until_done, start, wait_basin_gone, wait_stream_gone, DELETION_DELAY_MS,
    EVENT_TIMEOUT,
};
use crate::data_plane::{
    append_json, append_ok, bodies, check_tail, create_basin, position, read_raw, seq_nums,
    stream_path, Next,
};
use crate::harness::{assert_error, eventually, http, http_json, Response, DELETION_TIMEOUT};

/// Right after a delete, an operation on the stream sees the pending deletion while the
/// deletion delay lasts, and afterwards either that or a missing stream.
fn assert_pending_or_gone(response: &Response, delete_sent: Instant, what: &str) {
    if delete_sent.elapsed() < Duration::from_millis(DELETION_DELAY_MS) {
        assert_eq!(
            response.status,
            409,
            "{what} within the deletion delay: {:?}",
            response.text()
        );
        assert_error(response, 409, "stream_deletion_pending");
        return;
    }
    match response.status {
        409 => {
            assert_error(response, 409, "stream_deletion_pending");
        }
        404 => {
            assert_error(response, 404, "stream_not_found");
        }
        other => panic!(
            "{what} after a delete: unexpected {other} {:?}",
            response.text()
        ),
    }
}

/// True when a JSON record came from the stream that was deleted.
fn is_old(record: &Value) -> bool {
    record["body"].as_str().unwrap_or("").starts_with("old-")
}

// B-105 B-106 B-107 B-181
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_starts_from_scratch() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-reborn", json!({}));
    create_stream_ok(port, &basin, "s", None);
    append_ok(port, &basin, "s", &numbered("old", 0..5));
    append_ok(port, &basin, "s", &fence_input("tok-a"));
    let fenced = json!({ "records": [{ "body": "old-6" }], "fencing_token": "tok-a" });
    append_json(port, &basin, "s", &[], &fenced).expect_status(200);
    append_trim(port, &basin, "s", 3, &[]);
    assert_eq!(check_tail(port, &basin, "s").0, 8);

    let sent = delete_stream(port, &basin, "s");
    let late = append_json(port, &basin, "s", &[], &bodies(&["old-late"]));
    assert_pending_or_gone(&late, sent, "append");
    let read = read_raw(port, &basin, "s", "seq_num=0", &[]);
    assert_pending_or_gone(&read, sent, "read");
    let tail_path = format!("{}/records/tail", stream_path("s"));
    let tail = in_basin(port, &basin, "GET", &tail_path, None);
    assert_pending_or_gone(&tail, sent, "check-tail");
    // Re-creating is refused while the deletion is pending. Once the old stream is gone it
    // succeeds, which is what happens next in any case.
    let create = in_basin(
        port,
        &basin,
        "POST",
        "/v1/streams",
        Some(&json!({ "stream": "s" })),
    );
    let recreated = create.status == 201;
    if recreated {
        assert!(
            sent.elapsed() >= Duration::from_millis(DELETION_DELAY_MS),
            "the stream was re-created while its deletion was pending"
        );
    } else {
        assert_pending_or_gone(&create, sent, "create");
        wait_stream_gone(port, &basin, "s").await;
        create_stream_ok(port, &basin, "s", None);
    }
    let listed = listed_streams(port, &basin);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["deleted_at"], Value::Null);
    assert_eq!(
        check_tail(port, &basin, "s"),
        (0, 0),
        "a new stream has tail 0"
    );
    assert_unwritten(&read_raw(port, &basin, "s", "seq_num=0", &[]), (0, 0));

    // The fencing token is back to "": no token and the empty token both pass.
    let ack = append_ok(port, &basin, "s", &numbered("new", 0..4));
    assert_eq!(position(&ack["start"]).0, 0, "numbering restarts");
    let with_empty = json!({ "records": [{ "body": "new-4" }], "fencing_token": "" });
    let response = append_json(port, &basin, "s", &[], &with_empty);
    response.expect_status(200);
    assert_eq!(position(&response.json()["start"]).0, 4);
    let tail = position(&response.json()["end"]);
    let with_old = json!({ "records": [{ "body": "new-x" }], "fencing_token": "tok-a" });
    let response = append_json(port, &basin, "s", &[], &with_old);
    response.expect_status(412);
    assert_eq!(response.json(), json!({ "fencing_token_mismatch": "" }));

    // The old trim point (3) does not hide the new records, and no old record comes back.
    let expected: Vec<String> = (0..5).map(|i| format!("new-{i}")).collect();
    let records = read_records_with(port, &basin, "s", "seq_num=0", &[]);
    assert_eq!(seq_nums(&records), vec![0, 1, 2, 3, 4]);
    assert_eq!(record_bodies(&records), expected);
    let mut sse = open_sse(port, &basin, "s", "seq_num=0&count=5", &[]);
    assert_eq!(sse.status, 200, "{:?}", sse.headers);
    let records = sse_batch_records(&sse_events_until_done(&mut sse));
    assert_eq!(record_bodies(&records), expected, "SSE");
    assert_unwritten(&read_raw(port, &basin, "s", "seq_num=5", &[]), tail);
    assert_eq!(check_tail(port, &basin, "s"), tail);
}

// B-105 B-107
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_a_deleted_stream_never_see_its_successor() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-stale-reader", json!({}));
    create_stream_ok(port, &basin, "s", None);
    append_ok(port, &basin, "s", &numbered("old", 0..3));

    // A following SSE reader that has caught up with the old records.
    let mut sse = open_sse(port, &basin, "s", "seq_num=0", &[]);
    assert_eq!(sse.status, 200, "{:?}", sse.headers);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = sse.next_event(EVENT_TIMEOUT).expect_item("an SSE event");
        if event.kind() == "batch" {
            seen.extend(sse_batch_records(std::slice::from_ref(&event)));
        }
    }
    assert_eq!(seq_nums(&seen), vec![0, 1, 2]);
    // A following S2S reader at the tail, and a unary long poll at the tail.
    let mut s2s = open_s2s_read(port, &basin, "s", "seq_num=3", &[]);
    assert_eq!(s2s.status, 200, "{:?}", s2s.headers);
    let poll_basin = basin.clone();
    let long_poll =
        std::thread::spawn(move || read_raw(port, &poll_basin, "s", "seq_num=3&wait=5", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;

    delete_stream(port, &basin, "s");
    wait_stream_gone(port, &basin, "s").await;
    create_stream_ok(port, &basin, "s", None);
    append_ok(port, &basin, "s", &numbered("new", 0..3));
    append_ok(port, &basin, "s", &numbered("new", 3..6));

    // Whatever the old readers get from now on, it is never a record of the new stream.
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sse.next_event(left) {
            Next::Item(event) if event.kind() == "batch" => {
                let records = sse_batch_records(std::slice::from_ref(&event));
                assert!(
                    records.iter().all(is_old),
                    "the old SSE reader got records of the new stream: {event:?}"
                );
            }
            Next::Item(_) => {}
            Next::End | Next::TimedOut => break,
        }
    }
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match s2s.next_frame(left) {
            Next::Item(frame) if frame.is_terminal() => break,
            Next::Item(frame) => {
                let records = s2s_records(std::slice::from_ref(&frame));
                assert!(
                    records.is_empty(),
                    "the old S2S reader got records after the deletion: {records:?}"
                );
            }
            Next::End | Next::TimedOut => break,
        }
    }
    let response = tokio::task::spawn_blocking(move || long_poll.join())
        .await
        .expect("join the long poll")
        .expect("the long poll thread panicked");
    match response.status {
        200 => {
            let body = response.json();
            let records = body["records"].as_array().cloned().unwrap_or_default();
            assert!(
                records.iter().all(is_old),
                "the old long poll returned records of the new stream: {body}"
            );
        }
        409 => {
            assert_error(&response, 409, "stream_deletion_pending");
        }
        404 => {
            assert_error(&response, 404, "stream_not_found");
        }
        other => panic!("long poll: unexpected {other} {:?}", response.text()),
    }

    // The new stream itself holds exactly its own records.
    let records = read_records_with(port, &basin, "s", "seq_num=0", &[]);
    let expected: Vec<String> = (0..6).map(|i| format!("new-{i}")).collect();
    assert_eq!(record_bodies(&records), expected);
}

/// Asserts for `period` that the stream keeps answering its config, then that it still
/// holds these bodies.
async fn assert_kept(port: u16, basin: &str, stream: &str, period: Duration, expected: &[&str]) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        get_stream_config(port, basin, stream).expect_status(200);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let records = read_records_with(port, basin, stream, "seq_num=0", &[]);
    assert_eq!(record_bodies(&records), expected, "{stream}");
}

fn doe_infinite() -> Value {
    json!({ "delete_on_empty": { "min_age_secs": 1 }, "retention_policy": { "infinite": {} } })
}

// B-250 B-251 B-107
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicitly_deleted_streams_empty_deadline_does_not_reach_its_successor() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-doe-explicit", json!({}));
    create_stream_ok(port, &basin, "x", Some(doe_infinite()));
    delete_stream(port, &basin, "x");
    wait_stream_gone(port, &basin, "x").await;

    create_stream_ok(port, &basin, "x", Some(doe_infinite()));
    append_ok(port, &basin, "x", &bodies(&["kept"]));
    assert_kept(port, &basin, "x", Duration::from_secs(3), &["kept"]).await;
}

// B-250 B-251 B-107
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_for_being_empty_can_be_recreated_and_kept() {
    let server = start();
    let port = server.port();
    let basin = create_basin(port, "lc-doe-auto", json!({}));
    create_stream_ok(port, &basin, "y", Some(doe_infinite()));
    eventually_not_found(port, &basin, "y").await;
    wait_stream_gone(port, &basin, "y").await;

    create_stream_ok(port, &basin, "y", Some(doe_infinite()));
    append_ok(port, &basin, "y", &bodies(&["kept"]));
    assert_kept(port, &basin, "y", Duration::from_secs(3), &["kept"]).await;
}

/// Waits (up to 1 s of min_age, the deletion delay and 3 s more) until an empty
/// delete-on-empty stream has been deleted by the background task.
async fn eventually_not_found(port: u16, basin: &str, stream: &str) {
    let within = Duration::from_millis(1000 + DELETION_DELAY_MS + 3000 + 1000);
    eventually(
        &format!("{stream:?} is deleted for being empty"),
        within,
        || get_stream_config(port, basin, stream).status == 404,
    )
    .await;
}

// B-252 B-076 B-107
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_basin_starts_empty() {
    let server = start();
    let port = server.port();
    let name = create_basin(port, "lc-basin-reborn", json!({}));
    for stream in ["a", "b", "c"] {
        create_stream_ok(port, &name, stream, None);
        append_ok(port, &name, stream, &numbered("old", 0..3));
    }
    let path = format!("/v1/basins/{name}");
    http(port, "DELETE", &path, &[], b"").expect_status(202);
    wait_basin_gone(port, &name, DELETION_TIMEOUT).await;
    assert!(
        listed_basins(port, &name).is_empty(),
        "a deleted basin is not listed"
    );

    http_json(
        port,
        "POST",
        "/v1/basins",
        &[],
        &json!({ "basin": name, "config": { "create_stream_on_append": true } }),
    )
    .expect_status(201);
    assert_eq!(
        listed_basins(port, &name),
        vec![(name.clone(), "active".to_owned())]
    );
    assert!(
        listed_stream_names(port, &name).is_empty(),
        "streams of the old basin came back"
    );
    for stream in ["a", "b", "c"] {
        let response = get_stream_config(port, &name, stream);
        assert_error(&response, 404, "stream_not_found");
    }

    // Auto-created on append: numbering starts at 0.
    let ack = append_ok(port, &name, "a", &bodies(&["fresh"]));
    assert_eq!(position(&ack["start"]).0, 0);
    for stream in ["b", "c"] {
        create_stream_ok(port, &name, stream, None);
        assert_eq!(check_tail(port, &name, stream), (0, 0), "{stream}");
        assert_unwritten(&read_raw(port, &name, stream, "seq_num=0", &[]), (0, 0));
    }
    let records = read_records_with(port, &name, "a", "seq_num=0", &[]);
    assert_eq!(record_bodies(&records), vec!["fresh"]);
    assert_eq!(listed_stream_names(port, &name), vec!["a", "b", "c"]);
    for info in listed_streams(port, &name) {
        assert_eq!(info["deleted_at"], Value::Null, "{info}");
    }
}

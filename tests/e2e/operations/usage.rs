//! The usage metrics API (API.md §3.8) on 4 shards: counters that match exactly what the
//! test appended and read over unary, SSE and S2S, buckets aligned to their interval,
//! storage gauges after a trim and a delete, range validation, enforcement, and a restart
//! (clean and kill -9) keeping the counts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::data_plane::{append_ok, create_basin, create_stream, open_s2s_read, open_sse};
use crate::harness::{assert_error, assert_keys, get, http, http_json, Server};
use crate::lifecycle::{
    append_trim, open_s2s_append, proto_append_input, regular_frame, s2s_records,
    sse_batch_records, sse_events_until_done,
};

const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
}

/// `GET path?set=…&start=…&end=…[&interval=…]` over the last hour; must succeed.
fn metrics(port: u16, path: &str, set: &str, interval: Option<&str>) -> Vec<Value> {
    let end = now();
    let mut query = format!("set={set}&start={}&end={end}", end - 3600);
    if let Some(interval) = interval {
        query.push_str(&format!("&interval={interval}"));
    }
    let response = get(port, &format!("{path}?{query}"));
    response.expect_status(200);
    let body = response.json();
    assert_keys(&body, &["values"]);
    body["values"].as_array().expect("values array").clone()
}

/// The one accumulation of a set: its points, after checking its name, unit, interval and
/// that every bucket starts on its interval.
fn accumulation(values: &[Value], name: &str, unit: &str, interval: &str) -> Vec<(u64, u64)> {
    let metric = values
        .iter()
        .map(|v| &v["accumulation"])
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no accumulation {name} in {values:?}"));
    assert_keys(metric, &["name", "unit", "interval", "values"]);
    assert_eq!(metric["unit"], unit);
    assert_eq!(metric["interval"], interval);
    let step = match interval {
        "minute" => 60,
        "hour" => 3600,
        _ => 86_400,
    };
    metric["values"]
        .as_array()
        .expect("points")
        .iter()
        .map(|point| {
            let at = point[0].as_u64().expect("bucket start");
            assert_eq!(at % step, 0, "bucket {at} does not start on a {interval}");
            assert!(at <= now(), "bucket {at} is in the future");
            (at, point[1].as_f64().expect("value") as u64)
        })
        .collect()
}

fn total(points: &[(u64, u64)]) -> u64 {
    points.iter().map(|(_, n)| n).sum()
}

/// The one gauge of a storage set: its value now.
fn storage(values: &[Value]) -> u64 {
    assert_eq!(values.len(), 1, "{values:?}");
    let gauge = &values[0]["gauge"];
    assert_eq!(gauge["unit"], "bytes");
    let points = gauge["values"].as_array().expect("points");
    assert_eq!(points.len(), 1, "one point, now: {gauge}");
    points[0][1].as_f64().expect("bytes") as u64
}

/// The metered size of a body-only record (SEMANTICS §2).
fn metered(body: &str) -> u64 {
    8 + body.len() as u64
}

#[test]
fn counters_match_what_was_appended_and_read_on_every_path() {
    let server = Server::start(&["--shards", "4"]);
    let port = server.port();
    let basin = create_basin(port, "usage-counts", json!({}));
    let quiet = create_basin(port, "usage-quiet", json!({}));
    create_stream(port, &basin, "s", None);
    let path = format!("/v1/metrics/{basin}");

    // Unary appends: three batches.
    let unary = [
        vec!["a", "bb", "ccc"],
        vec!["dddd"],
        vec!["eeeee", "ffffff"],
    ];
    for batch in &unary {
        let records: Vec<Value> = batch.iter().map(|b| json!({ "body": b })).collect();
        append_ok(port, &basin, "s", &json!({ "records": records }));
    }
    // An S2S session: two more batches.
    let session = [vec!["gg", "h"], vec!["iiiiiiiii"]];
    let frames: Vec<u8> = session
        .iter()
        .flat_map(|batch| regular_frame(&proto_append_input(batch)))
        .collect();
    let acks = open_s2s_append(port, &basin, "s", &frames, &[]).frames_to_end(FRAME_TIMEOUT);
    assert_eq!(acks.len(), 2, "{acks:?}");
    let bodies: Vec<&str> = unary.iter().chain(&session).flatten().copied().collect();
    let appended: u64 = bodies.iter().map(|b| metered(b)).sum();
    let records = bodies.len();

    // Reads: two unary, one SSE, one S2S, each of the whole stream.
    for _ in 0..2 {
        let read = http(
            port,
            "GET",
            "/v1/streams/s/records?seq_num=0",
            &[("S2-Basin", &basin)],
            b"",
        );
        assert_eq!(
            read.expect_status(200).json()["records"]
                .as_array()
                .unwrap()
                .len(),
            records
        );
    }
    let query = format!("seq_num=0&count={records}");
    let events = sse_events_until_done(&mut open_sse(port, &basin, "s", &query, &[]));
    assert_eq!(sse_batch_records(&events).len(), records);
    let sse_batches = events.len() as u64;
    let frames = open_s2s_read(port, &basin, "s", &query, &[]).frames_to_end(FRAME_TIMEOUT);
    let s2s_batches = frames
        .iter()
        .filter(|f| !s2s_records(std::slice::from_ref(f)).is_empty())
        .count() as u64;
    assert_eq!(s2s_records(&frames).len(), records);

    for interval in ["minute", "hour", "day"] {
        let at = Some(interval);
        let ops = accumulation(
            &metrics(port, &path, "append-ops", at),
            "append-ops",
            "operations",
            interval,
        );
        assert_eq!(
            total(&ops),
            5,
            "{interval}: 3 unary appends and 2 in a session"
        );
        let bytes = accumulation(
            &metrics(port, &path, "append-throughput", at),
            "append-throughput",
            "bytes",
            interval,
        );
        assert_eq!(total(&bytes), appended, "{interval}");
        let reads = accumulation(
            &metrics(port, &path, "read-ops", at),
            "read-ops",
            "operations",
            interval,
        );
        assert_eq!(total(&reads), 2 + sse_batches + s2s_batches, "{interval}");
        let read_bytes = accumulation(
            &metrics(port, &path, "read-throughput", at),
            "read-throughput",
            "bytes",
            interval,
        );
        assert_eq!(
            total(&read_bytes),
            4 * appended,
            "{interval}: the stream, read four times"
        );
    }
    // Without an interval, these sets are by minute.
    let values = metrics(port, &path, "append-ops", None);
    assert_eq!(values.len(), 1, "one metric: {values:?}");
    assert_eq!(
        total(&accumulation(&values, "append-ops", "operations", "minute")),
        5
    );

    // Basin ops: by operation, hourly unless asked; appends and reads are not among them.
    http(port, "GET", "/v1/streams/s", &[("S2-Basin", &basin)], b"").expect_status(200);
    let values = metrics(port, &path, "basin-ops", None);
    assert_eq!(
        total(&accumulation(
            &values,
            "create-stream",
            "operations",
            "hour"
        )),
        1
    );
    assert_eq!(
        total(&accumulation(
            &values,
            "get-stream-config",
            "operations",
            "hour"
        )),
        1
    );
    for value in &values {
        let name = value["accumulation"]["name"].as_str().unwrap();
        assert!(
            !["append", "read", "create-basin"].contains(&name),
            "{name} in basin-ops"
        );
    }
    // The quiet basin had only its creation, an account op, and this request.
    let quiet_path = format!("/v1/metrics/{quiet}");
    let values = metrics(port, &quiet_path, "basin-ops", None);
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(
        total(&accumulation(
            &values,
            "basin-metrics",
            "operations",
            "hour"
        )),
        1
    );
    let quiet_appends = metrics(port, &quiet_path, "append-ops", None);
    assert!(accumulation(&quiet_appends, "append-ops", "operations", "minute").is_empty());

    // Account ops: the two creations, and every account-metrics request, this one too.
    let values = metrics(port, "/v1/metrics", "account-ops", None);
    assert_eq!(
        total(&accumulation(&values, "create-basin", "operations", "hour")),
        2
    );
    assert_eq!(
        total(&accumulation(
            &values,
            "account-metrics",
            "operations",
            "hour"
        )),
        1
    );
    let values = metrics(port, "/v1/metrics", "account-ops", Some("minute"));
    assert_eq!(
        total(&accumulation(
            &values,
            "account-metrics",
            "operations",
            "minute"
        )),
        2
    );
    for value in &values {
        let name = value["accumulation"]["name"].as_str().unwrap();
        assert!(
            ["create-basin", "account-metrics"].contains(&name),
            "{name} in account-ops"
        );
    }

    // Active basins: a label of both basins, and nothing in an hour long past.
    let values = metrics(port, "/v1/metrics", "active-basins", None);
    assert_eq!(values.len(), 1);
    let mut active: Vec<String> =
        serde_json::from_value(values[0]["label"]["values"].clone()).unwrap();
    active.sort();
    let mut expected = vec![basin.clone(), quiet.clone()];
    expected.sort();
    assert_eq!(active, expected);
    assert_eq!(values[0]["label"]["name"], "active-basins");
    let old = get(port, "/v1/metrics?set=active-basins&start=0&end=3600");
    assert_eq!(
        old.expect_status(200).json()["values"][0]["label"]["values"],
        json!([])
    );
    let old = get(port, &format!("{path}?set=append-ops&start=0&end=3600"));
    assert_eq!(
        old.expect_status(200).json()["values"][0]["accumulation"]["values"],
        json!([])
    );
}

#[test]
fn storage_gauges_follow_trims_and_deletes() {
    let server = Server::start(&["--shards", "4", "--deletion-delay-ms", "0"]);
    let port = server.port();
    let basin = create_basin(port, "usage-storage", json!({}));
    create_stream(port, &basin, "kept", None);
    create_stream(port, &basin, "gone", None);
    let basin_path = format!("/v1/metrics/{basin}");
    let kept_path = format!("/v1/metrics/{basin}/kept");
    assert_eq!(storage(&metrics(port, &kept_path, "storage", None)), 0);

    let first = ["0123456789"; 10];
    let second = ["x"; 3];
    for batch in [&first[..], &second[..]] {
        let records: Vec<Value> = batch.iter().map(|b| json!({ "body": b })).collect();
        append_ok(port, &basin, "kept", &json!({ "records": records }));
    }
    append_ok(
        port,
        &basin,
        "gone",
        &json!({ "records": [{ "body": "bye" }] }),
    );
    let (first, second): (u64, u64) = (
        first.iter().map(|b| metered(b)).sum(),
        second.iter().map(|b| metered(b)).sum(),
    );
    assert_eq!(
        storage(&metrics(port, &kept_path, "storage", None)),
        first + second
    );
    assert_eq!(
        storage(&metrics(port, &basin_path, "storage", None)),
        first + second + metered("bye")
    );

    // A trim to the second batch: the first no longer counts, the trim record does.
    append_trim(port, &basin, "kept", 10, &[]);
    let trim_record = 8 + 2 + 4 + 8; // headers: one of name "" and value "trim"; 8-byte body
    assert_eq!(
        storage(&metrics(port, &kept_path, "storage", None)),
        second + trim_record
    );

    // A deleted stream holds nothing.
    http(
        port,
        "DELETE",
        "/v1/streams/gone",
        &[("S2-Basin", &basin)],
        b"",
    )
    .expect_status(202);
    assert_eq!(
        storage(&metrics(port, &basin_path, "storage", None)),
        second + trim_record
    );
    // The gauge has its one point only when the range reaches now.
    let old = get(port, &format!("{kept_path}?set=storage&start=0&end=3600"));
    assert_eq!(
        old.expect_status(200).json()["values"][0]["gauge"]["values"],
        json!([])
    );
    assert_error(
        &get(
            port,
            &format!("/v1/metrics/{basin}/never?set=storage&start=0&end=60"),
        ),
        404,
        "stream_not_found",
    );
}

#[test]
fn ranges_sets_and_intervals_are_validated() {
    let server = Server::start(&["--shards", "2"]);
    let port = server.port();
    let basin = create_basin(port, "usage-ranges", json!({}));
    create_stream(port, &basin, "s", None);
    let now = now();
    let paths = [
        "/v1/metrics?set=active-basins".to_owned(),
        format!("/v1/metrics/{basin}?set=storage"),
        format!("/v1/metrics/{basin}/s?set=storage"),
    ];
    for path in &paths {
        for range in [
            format!("&start={now}&end={}", now - 3600),
            format!("&start={}&end={}", now - 3600, now + 600),
            format!("&start={}&end={now}", now - 91 * 86_400),
            format!("&start={now}"),
            format!("&end={now}"),
            String::new(),
        ] {
            assert_error(&get(port, &format!("{path}{range}")), 422, "invalid");
        }
        get(port, &format!("{path}&start=0&end=3600")).expect_status(200);
        let full = format!("&start={}&end={now}", now - 90 * 86_400);
        get(port, &format!("{path}{full}")).expect_status(200);
    }
    for bad in [
        "/v1/metrics?start=0&end=1".to_owned(),
        "/v1/metrics?set=storage&start=0&end=1".to_owned(),
        format!("/v1/metrics/{basin}?set=active-basins&start=0&end=1"),
        format!("/v1/metrics/{basin}/s?set=append-ops&start=0&end=1"),
        "/v1/metrics?set=account-ops&start=0&end=1&interval=week".to_owned(),
        "/v1/metrics?set=account-ops&start=-1&end=1".to_owned(),
    ] {
        assert_error(&get(port, &bad), 400, "bad_query");
    }
}

#[test]
fn metrics_follow_token_scopes() {
    const ROOT: &str = "usage-root-token";
    let server = Server::start(&["--shards", "2", "--root-token", ROOT]);
    let port = server.port();
    let root = ("Authorization", "Bearer usage-root-token");
    let mine = crate::harness::unique_basin("usage-mine");
    let theirs = crate::harness::unique_basin("usage-theirs");
    for basin in [&mine, &theirs] {
        http_json(
            port,
            "POST",
            "/v1/basins",
            &[root],
            &json!({ "basin": basin }),
        )
        .expect_status(201);
    }
    let issued = http_json(
        port,
        "POST",
        "/v1/access-tokens",
        &[root],
        &json!({
            "id": "usage-reader",
            "scope": {
                "basins": { "exact": mine },
                "ops": ["basin-metrics", "account-metrics"],
            },
        }),
    );
    let secret = issued.expect_status(201).json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {secret}");
    let reader = [("Authorization", bearer.as_str())];
    let range = format!("start={}&end={}", now() - 3600, now());
    let ask = |path: &str| http(port, "GET", &format!("{path}&{range}"), &reader, b"");
    ask(&format!("/v1/metrics/{mine}?set=append-ops")).expect_status(200);
    assert_error(
        &ask(&format!("/v1/metrics/{theirs}?set=append-ops")),
        403,
        "permission_denied",
    );
    assert_error(
        &ask(&format!("/v1/metrics/{mine}/s?set=storage")),
        403,
        "permission_denied",
    );
    let active = ask("/v1/metrics?set=active-basins");
    assert_eq!(
        active.expect_status(200).json()["values"][0]["label"]["values"],
        json!([mine])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_survive_a_clean_restart_and_a_kill_9() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_str().expect("UTF-8 path").to_owned();
    let start = || Server::start(&["--shards", "2", "--local-root", &root]);
    let appends = |port: u16, basin: &str| {
        let ops = accumulation(
            &metrics(port, &format!("/v1/metrics/{basin}"), "append-ops", None),
            "append-ops",
            "operations",
            "minute",
        );
        total(&ops)
    };

    let mut server = start();
    let port = server.port();
    let basin = create_basin(
        port,
        "usage-restart",
        json!({ "create_stream_on_append": true }),
    );
    for i in 0..2 {
        append_ok(
            port,
            &basin,
            "s",
            &json!({ "records": [{ "body": format!("r{i}") }] }),
        );
    }
    // A query writes every shard's counts; a kill -9 after it loses none of them.
    assert_eq!(appends(port, &basin), 2);
    server.kill9();

    let mut server = start();
    let port = server.port();
    assert_eq!(appends(port, &basin), 2);
    append_ok(port, &basin, "s", &json!({ "records": [{ "body": "r2" }] }));
    // A clean stop writes what was counted since.
    assert_eq!(server.terminate(Duration::from_secs(30)).code(), Some(0));

    let server = start();
    assert_eq!(appends(server.port(), &basin), 3);
}

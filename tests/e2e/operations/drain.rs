//! Shutting down gracefully: on SIGTERM the open S2S and SSE read sessions and an S2S append
//! session end with a `server_draining` error (a clean end their clients reconnect on),
//! what was acknowledged is all there after a restart, and the process exits 0; a second
//! signal exits at once.

use std::io::Write;
use std::time::Duration;

use crate::data_plane::{
    append_ok, basin_with_stream, bodies, create_stream, input_frame, open_s2s_read, open_sse,
    proto, read_records, records_path, write_chunk, Next, StreamingResponse,
};
use crate::harness::{connect, get, read_reply, Server, Until};

const WAIT: Duration = Duration::from_secs(10);

/// Reads S2S frames until `n` records came.
fn s2s_records(session: &mut StreamingResponse, n: usize) {
    let mut seen = 0;
    while seen < n {
        let frame = session.next_frame(WAIT).expect_item("an S2S read frame");
        seen += frame.read_batch().records.len();
    }
}

/// Reads SSE events until `n` records came.
fn sse_records(session: &mut StreamingResponse, n: usize) {
    let mut seen = 0;
    while seen < n {
        let event = session.next_event(WAIT).expect_item("an SSE event");
        if event.kind() == "batch" {
            seen += event.json()["records"].as_array().map_or(0, Vec::len);
        }
    }
}

#[test]
fn sessions_end_cleanly_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut server = Server::start(&["--shards", "2", "--local-root", &root]);
    let port = server.port();
    let basin = basin_with_stream(port, "ops-drain", "d");
    for i in 0..5 {
        append_ok(port, &basin, "d", &bodies(&[&format!("r{i}")]));
    }
    // Two tailing sessions, caught up and following.
    let mut s2s = open_s2s_read(port, &basin, "d", "seq_num=0", &[]);
    s2s_records(&mut s2s, 5);
    let mut sse = open_sse(port, &basin, "d", "seq_num=0", &[]);
    sse_records(&mut sse, 5);
    // An S2S append session whose request body stays open: one input, acknowledged.
    let (mut appends, mut body) = StreamingResponse::open_chunked(
        port,
        "POST",
        &records_path("d", ""),
        &[("S2-Basin", basin.as_str()), ("Content-Type", "s2s/proto")],
    );
    write_chunk(&mut body, &input_frame(&proto::input(&["r5"])));
    let ack = appends.next_frame(WAIT).expect_item("the first ack");
    assert_eq!(proto::ack_positions(&ack.append_ack())[0].0, 5);

    server.signal("TERM");

    // The append session takes no more input and ends with the draining error.
    let terminal = appends
        .next_frame(WAIT)
        .expect_item("the append session's terminal frame");
    let (status, error) = terminal.terminal();
    assert_eq!(
        (status, error["code"].as_str()),
        (503, Some("server_draining")),
        "{error}"
    );
    assert!(
        matches!(appends.next_frame(WAIT), Next::End),
        "the append session ends"
    );

    let terminal = loop {
        let frame = s2s
            .next_frame(WAIT)
            .expect_item("frames up to a terminal one");
        if frame.is_terminal() {
            break frame.terminal();
        }
        // The only record after the five is the one the append session wrote.
        for record in frame.read_batch().records {
            assert_eq!((record.seq_num, record.body.as_slice()), (5, &b"r5"[..]));
        }
    };
    assert_eq!(terminal.0, 503);
    assert_eq!(terminal.1["code"], "server_draining", "{}", terminal.1);
    assert!(
        matches!(s2s.next_frame(WAIT), Next::End),
        "the S2S response ends"
    );
    let error = loop {
        let event = sse.next_event(WAIT).expect_item("events up to an error");
        match event.kind() {
            "error" => break event.json(),
            "ping" => {}
            "batch" => {
                let records = event.json()["records"].clone();
                assert_eq!(
                    records[0]["body"], "r5",
                    "only r5 follows the five: {records}"
                );
            }
            other => panic!("unexpected {other:?} event during the drain: {event:?}"),
        }
    };
    assert_eq!(error["code"], "server_draining", "{error}");
    assert!(
        matches!(sse.next_event(WAIT), Next::End),
        "the SSE response ends"
    );
    let status = server.wait_exit(WAIT * 2);
    assert!(status.success(), "exit status {status}");

    // Logged at `info`, so that a start that does not finish shows where it stopped.
    let restarted = Server::start_with_env(
        &["--shards", "2", "--local-root", &root],
        &[("RUST_LOG", "info")],
    );
    let records = read_records(restarted.port(), &basin, "d", "seq_num=0");
    let bodies: Vec<String> = records
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, ["r0", "r1", "r2", "r3", "r4", "r5"]);
}

#[test]
fn a_second_signal_exits_without_waiting_for_the_drain() {
    let mut server = Server::start(&["--shards", "1"]);
    let port = server.port();
    let basin = basin_with_stream(port, "ops-drain2", "d");
    // A long-poll read of an empty stream holds the drain (for up to its 10 s bound).
    let mut poll = connect(port);
    let request = format!(
        "GET /v1/streams/d/records?seq_num=0&wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         S2-Basin: {basin}\r\n\r\n"
    );
    poll.write_all(request.as_bytes())
        .expect("send the long poll");
    std::thread::sleep(Duration::from_millis(300));

    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    server.assert_alive();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(3));
    assert_eq!(status.code(), Some(1), "exit status {status}");
    assert!(
        server.stderr_text().contains("second signal"),
        "stderr:\n{}",
        server.stderr_text()
    );
}

#[test]
fn the_grace_period_fails_health_and_still_serves() {
    let mut server = Server::start(&["--shards", "2", "--drain-grace-ms", "2000"]);
    let port = server.port();
    let basin = basin_with_stream(port, "ops-grace", "g");
    get(port, "/health").expect_status(200);

    server.signal("TERM");
    // Every shard fails its health check at once, whichever one the connection lands on.
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..8 {
        get(port, "/health").expect_status(503);
    }
    // Requests a load balancer sent before it noticed are still served, on new connections.
    append_ok(port, &basin, "g", &bodies(&["during grace"]));
    let records = read_records(port, &basin, "g", "seq_num=0");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["body"], "during grace");

    let status = server.wait_exit(Duration::from_secs(6));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// Connections Sluice closes sit in TIME_WAIT on its port after it stops; with SO_REUSEADDR
/// on its listeners (as on the new one: Rust's std sets it) the port can be bound at once.
#[test]
fn the_port_can_be_bound_again_right_after_a_stop() {
    let mut server = Server::start(&["--shards", "2"]);
    let port = server.port();
    // `Connection: close` on every request: the server closes first, so the TIME_WAIT
    // entries are on its side of each connection.
    for _ in 0..20 {
        get(port, "/v1/basins").expect_status(200);
    }
    assert_eq!(server.terminate(Duration::from_secs(30)).code(), Some(0));
    let rebound = std::net::TcpListener::bind(("127.0.0.1", port));
    assert!(
        rebound.is_ok(),
        "port {port} cannot be bound again: {rebound:?}"
    );
}

/// Batches appended through each shard's connections, from a scrape.
fn appended_through(port: u16) -> [f64; 2] {
    let text = get(port, "/metrics").text();
    let mut per_shard = [0.0; 2];
    for line in text
        .lines()
        .filter(|l| l.starts_with("sluice_append_batches_total{"))
    {
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        for (shard, total) in per_shard.iter_mut().enumerate() {
            if line.contains(&format!("shard=\"{shard}\"")) {
                *total += value;
            }
        }
    }
    per_shard
}

/// An append that reaches its owner through another shard while the server drains: the
/// owner has no connections of its own left, yet it stays to acknowledge it.
#[test]
fn an_append_relayed_during_the_drain_is_acknowledged() {
    use sluice_shards::names::{BasinName, StreamName};
    use sluice_shards::placement::Placement;

    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut server = Server::start(&["--shards", "2", "--local-root", &root]);
    let port = server.port();
    let basin = basin_with_stream(port, "ops-drain-relay", "probe");

    // Which shard serves this connection: the one whose append count its append moves.
    let mut connection = connect(port);
    let before = appended_through(port);
    let probe = serde_json::to_vec(&bodies(&["probe"])).unwrap();
    let head = |stream: &str, length: usize| {
        format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nS2-Basin: {basin}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
            records_path(stream, "")
        )
    };
    connection
        .write_all(head("probe", probe.len()).as_bytes())
        .unwrap();
    connection.write_all(&probe).unwrap();
    let reply = read_reply(&mut connection, WAIT, Until::Response);
    reply
        .response()
        .expect("the probe's answer")
        .expect_status(200);
    let after = appended_through(port);
    let front = (0..2)
        .find(|&s| after[s] > before[s])
        .expect("one shard counted the probe");

    // A stream the other shard owns.
    let placement = Placement::new(2);
    let basin_name: BasinName = basin.parse().unwrap();
    let target = (0..)
        .map(|i| format!("relayed-{i}"))
        .find(|s| placement.stream_owner(&basin_name, &s.parse::<StreamName>().unwrap()) != front)
        .unwrap();
    create_stream(port, &basin, &target, None);

    // Half the append's body, then SIGTERM; the rest once the owner has had time to drain
    // its own (no) connections.
    let body = serde_json::to_vec(&bodies(&["relayed"])).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    connection
        .write_all(head(&target, body.len()).as_bytes())
        .unwrap();
    connection.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    std::thread::sleep(Duration::from_millis(1000));
    connection.write_all(rest).unwrap();
    let reply = read_reply(&mut connection, WAIT, Until::Response);
    let response = reply.response().expect("an answer to the relayed append");
    let text = response.text();
    assert_eq!(
        response.status, 200,
        "the relayed append was not acknowledged: {text}"
    );
    drop(connection);
    let status = server.wait_exit(WAIT * 2);
    assert!(status.success(), "exit status {status}");

    let restarted = Server::start(&["--shards", "2", "--local-root", &root]);
    let records = read_records(restarted.port(), &basin, &target, "seq_num=0");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["body"], "relayed");
}

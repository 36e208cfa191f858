//! Hostile and careless clients over raw sockets: oversized bodies, decompression bombs,
//! oversized headers, slowloris, many idle connections and non-HTTP bytes. After each one
//! the server must still be alive and answer `/health`.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use serde_json::json;

use crate::harness::{
    assert_error, assert_json_content_type, connect, get, http, http_json, read_reply, send_raw,
    unique_basin, Ending, RawReply, Server, Until,
};

fn start() -> Server {
    Server::start(&["--shards", "2"])
}

/// The server is still running and serving.
fn assert_healthy(server: &mut Server) {
    server.assert_alive();
    let started = Instant::now();
    let response = get(server.port(), "/health");
    assert_eq!(response.status, 200, "health: {:?}", response.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "/health took {:?}",
        started.elapsed()
    );
}

/// A rejection of a request body: either a JSON error with one of `statuses`, or the
/// server dropping the connection. Waiting out the timeout is a failure.
fn assert_rejected_or_dropped(reply: &RawReply, statuses: &[u16], what: &str) {
    assert_ne!(
        reply.ending,
        Ending::TimedOut,
        "{what}: the server neither answered nor closed within {:?}",
        reply.elapsed
    );
    match reply.response() {
        Some(response) => {
            assert!(
                statuses.contains(&response.status),
                "{what}: expected one of {statuses:?}, got {} {:?}",
                response.status,
                response.text()
            );
            assert_json_content_type(&response);
            let body = response.json();
            assert!(body["code"].is_string(), "{what}: error body {body}");
        }
        None => assert!(
            reply.bytes.is_empty(),
            "{what}: the server sent something that is not an HTTP response: {:?}",
            String::from_utf8_lossy(&reply.bytes)
        ),
    }
}

/// A JSON create-basin body that is valid once fully inflated, padded to `inflated_bytes`
/// with an unknown field, so a server without a limit would create the basin.
fn padded_create_body(basin: &str, inflated_bytes: usize, mut sink: impl Write) {
    let head = format!("{{\"basin\":\"{basin}\",\"padding\":\"");
    sink.write_all(head.as_bytes()).expect("write");
    let block = vec![b'a'; 1 << 20];
    let mut written = head.len();
    while written < inflated_bytes {
        sink.write_all(&block).expect("write");
        written += block.len();
    }
    sink.write_all(b"\"}").expect("write");
}

fn post_compressed(port: u16, encoding: &str, body: &[u8]) -> RawReply {
    let mut stream = connect(port);
    let head = format!(
        "POST /v1/basins HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Encoding: {encoding}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    // The server may stop reading once it has seen enough; a failed write is fine.
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    read_reply(&mut stream, Duration::from_secs(30), Until::Response)
}

// Not in BEHAVIORS.md: body size limit (413 with a JSON error, B-020 style, or a close).
#[test]
fn oversized_request_body_is_refused_without_reading_it() {
    let mut server = start();
    let port = server.port();

    let declared = 100 * 1024 * 1024;
    let mut stream = connect(port);
    let head = format!(
        "POST /v1/basins HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send headers");
    let _ = stream.write_all(&vec![b' '; 64 * 1024]);
    let reply = read_reply(&mut stream, Duration::from_secs(10), Until::Response);
    assert_rejected_or_dropped(&reply, &[413], "100 MiB declared body");
    drop(stream);

    assert_healthy(&mut server);
}

// Not in BEHAVIORS.md: the body limit applies after decompression (W§2, B-007, B-008).
#[test]
fn decompression_bombs_are_cut_off() {
    let mut server = start();
    let port = server.port();

    // About 64 MiB once inflated; the compressed body is a tiny fraction of that.
    let gzip_basin = unique_basin("gzip-bomb");
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    padded_create_body(&gzip_basin, 64 << 20, &mut encoder);
    let gzip_body = encoder.finish().expect("gzip finish");
    let reply = post_compressed(port, "gzip", &gzip_body);
    assert_rejected_or_dropped(&reply, &[400, 413], "gzip bomb");
    assert_healthy(&mut server);

    // About 128 MiB once inflated.
    let zstd_basin = unique_basin("zstd-bomb");
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd encoder");
    padded_create_body(&zstd_basin, 128 << 20, &mut encoder);
    let zstd_body = encoder.finish().expect("zstd finish");
    let reply = post_compressed(port, "zstd", &zstd_body);
    assert_rejected_or_dropped(&reply, &[400, 413], "zstd bomb");
    assert_healthy(&mut server);

    for basin in [gzip_basin, zstd_basin] {
        let response = get(port, &format!("/v1/basins/{basin}"));
        assert_eq!(response.status, 404, "the bomb created basin {basin}");
    }
}

// Not in BEHAVIORS.md: header count and size limits (431, with a JSON body like every
// other error; S2 names no code for it, so Sluice's is `header_fields_too_large`).
#[test]
fn too_many_or_too_large_headers_are_refused() {
    let mut server = start();
    let port = server.port();

    // 200 small header fields: about 3 KiB, read in full by the server.
    let mut request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for i in 0..200 {
        request.push_str(&format!("X-Filler-{i}: v\r\n"));
    }
    request.push_str("\r\n");
    let reply = send_raw(port, request.as_bytes(), Duration::from_secs(10));
    let response = reply
        .response()
        .unwrap_or_else(|| panic!("no response to 200 header fields: {reply:?}"));
    let message = assert_error(&response, 431, "header_fields_too_large");
    assert!(message.contains("100 fields"), "{message}");
    assert_healthy(&mut server);

    // 70 KiB of headers, read in full: the byte limit, with the same JSON error.
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70 * 1024)
    );
    let reply = send_raw(port, request.as_bytes(), Duration::from_secs(10));
    let response = reply
        .response()
        .unwrap_or_else(|| panic!("no response to 70 KiB of headers: {reply:?}"));
    assert_error(&response, 431, "header_fields_too_large");
    assert_healthy(&mut server);

    // One 512 KiB header field. The server may answer 431 or drop the connection before
    // reading it all, but it must not serve the request.
    let mut stream = connect(port);
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nX-Huge: {}\r\n\r\n",
        "h".repeat(512 * 1024)
    );
    let _ = stream.write_all(head.as_bytes());
    let reply = read_reply(&mut stream, Duration::from_secs(10), Until::Response);
    assert_ne!(
        reply.ending,
        Ending::TimedOut,
        "512 KiB header: no answer and no close"
    );
    if let Some(response) = reply.response() {
        assert_error(&response, 431, "header_fields_too_large");
    } else {
        assert!(
            reply.bytes.is_empty(),
            "512 KiB header: garbled reply {reply:?}"
        );
    }
    drop(stream);
    assert_healthy(&mut server);
}

// Not in BEHAVIORS.md: a header-read timeout bounds slow clients (B-002 stays served).
#[test]
fn slowloris_connections_are_closed_while_others_are_served() {
    let mut server = start();
    let port = server.port();

    let mut slow = connect(port);
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("send a partial request");
    let watcher =
        std::thread::spawn(move || read_reply(&mut slow, Duration::from_secs(45), Until::Close));

    // Meanwhile everybody else is served promptly.
    for _ in 0..5 {
        assert_healthy(&mut server);
        std::thread::sleep(Duration::from_secs(1));
    }
    let name = unique_basin("during-slowloris");
    http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name })).expect_status(201);

    let reply = watcher.join().expect("watcher thread");
    assert!(
        reply.connection_ended(),
        "a client that never finishes its headers was kept for {:?}",
        reply.elapsed
    );
    assert!(
        reply.elapsed <= Duration::from_secs(40),
        "the slowloris connection was closed only after {:?}",
        reply.elapsed
    );
    if let Some(response) = reply.response() {
        assert!(
            (400..500).contains(&response.status),
            "a timed-out request may only get a client error, got {}",
            response.status
        );
    }
    assert_healthy(&mut server);
}

// Not in BEHAVIORS.md: idle connections hold no shard hostage (B-002).
#[test]
fn many_idle_connections_do_not_block_service() {
    let mut server = start();
    let port = server.port();

    let idle: Vec<TcpStream> = (0..200).map(|_| connect(port)).collect();
    // A few more that finished one keep-alive request and now sit idle.
    let mut kept_alive = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(port);
        stream
            .write_all(format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
            .expect("send");
        let reply = read_reply(&mut stream, Duration::from_secs(10), Until::Response);
        assert_eq!(
            reply.ending,
            Ending::Complete,
            "keep-alive request: {reply:?}"
        );
        kept_alive.push(stream);
    }

    let started = Instant::now();
    assert_healthy(&mut server);
    let name = unique_basin("with-idlers");
    http_json(port, "POST", "/v1/basins", &[], &json!({ "basin": name })).expect_status(201);
    http(port, "GET", &format!("/v1/basins/{name}"), &[], b"").expect_status(200);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests took {:?} with 220 idle connections open",
        started.elapsed()
    );
    drop(idle);
    drop(kept_alive);
    assert_healthy(&mut server);
}

// Not in BEHAVIORS.md: garbage instead of HTTP/1.1 or an HTTP/2 preface (B-001, B-002).
#[test]
fn non_http_bytes_get_the_connection_closed() {
    let mut server = start();
    let port = server.port();

    let binary: Vec<u8> = (0..=255u8).collect();
    let mut tls_like = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    tls_like.extend_from_slice(&[0xAB; 64]);
    // The HTTP/2 preface followed by a DATA frame on stream 0 instead of SETTINGS.
    let mut bad_h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bad_h2.extend_from_slice(&[0, 0, 5, 0, 0, 0, 0, 0, 0]);
    bad_h2.extend_from_slice(b"hello");

    let cases: [(&str, Vec<u8>); 5] = [
        ("binary", binary),
        ("tls-like", tls_like),
        ("text", b"THIS IS NOT HTTP\r\n\r\n".to_vec()),
        ("bad request line", b"GET\r\n\r\n".to_vec()),
        ("bad http/2", bad_h2),
    ];
    for (what, bytes) in &cases {
        let reply = send_raw(port, bytes, Duration::from_secs(10));
        assert!(
            reply.connection_ended(),
            "{what}: the connection was still open after {:?}",
            reply.elapsed
        );
        if let Some(response) = reply.response() {
            assert!(
                (400..600).contains(&response.status) && response.status != 500,
                "{what}: unexpected answer {}",
                response.status
            );
        }
        assert_healthy(&mut server);
    }
}

//! Many tailing readers on one stream: each gets the live append, none errors, and the
//! server keeps serving (followers are fed by the owning shard wherever they landed).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{basin_with_stream, bodies, records_path, start};
use crate::harness::http_json;

const READERS: usize = 1000;

/// Read an SSE response until `needle` shows up; false if the connection ends first.
async fn read_until(stream: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tailing_readers_all_receive_a_live_append() {
    let server = start();
    let port = server.port();
    let basin = basin_with_stream(port, "dp-fanout", "fan");
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\nS2-Basin: {basin}\r\nAccept: text/event-stream\r\n\r\n",
        records_path("fan", "")
    );

    let (following_tx, mut following) = tokio::sync::mpsc::channel::<()>(READERS);
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        let (request, following_tx) = (request.clone(), following_tx.clone());
        readers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            stream
                .write_all(request.as_bytes())
                .await
                .expect("send request");
            let mut seen = Vec::new();
            // The first ping says the session is caught up and following.
            assert!(
                read_until(&mut stream, &mut seen, b"event: ping").await,
                "no ping"
            );
            following_tx.send(()).await.expect("report following");
            read_until(&mut stream, &mut seen, b"live-payload").await
        }));
    }
    for _ in 0..READERS {
        tokio::time::timeout(Duration::from_secs(60), following.recv())
            .await
            .expect("every reader starts following within 60 s")
            .expect("reader reports");
    }

    let append = tokio::task::spawn_blocking(move || {
        http_json(
            port,
            "POST",
            &records_path("fan", ""),
            &[("S2-Basin", basin.as_str())],
            &bodies(&["live-payload"]),
        )
        .expect_status(200);
    });
    append.await.expect("append");

    let mut delivered = 0;
    for reader in readers {
        let got = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("delivery within 30 s")
            .expect("reader task");
        delivered += usize::from(got);
    }
    assert_eq!(delivered, READERS, "every tailing reader got the append");
}

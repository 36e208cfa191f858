//! Two servers on one bucket path (decision 0011, fencing): a second server started while
//! the first is still appending fences the log, and from then on the first acknowledges
//! nothing the second cannot see.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{append_json, bodies, check_tail, create_basin, create_stream, position, read_records};
use crate::harness::Moto;

/// How long the first server is given to notice it was fenced.
const FENCED_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn a_second_server_on_the_same_bucket_fences_the_first() {
    let moto = Moto::start();
    moto.create_bucket("sluice-fencing");
    let args = ["--shards", "2", "--bucket", "sluice-fencing"];
    let first = moto.server(&args);
    let port = first.port();
    let basin = create_basin(port, "fencing", json!({}));
    create_stream(port, &basin, "s", None);

    // The first server's writer: one append at a time, each body numbered, recording what
    // was acknowledged and where.
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let refused = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, refused, stop, basin) =
            (acked.clone(), refused.clone(), stop.clone(), basin.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let body = format!("first-{n}");
                let response = append_json(port, &basin, "s", &[], &bodies(&[&body]));
                if response.status == 200 {
                    let start = position(&response.json()["start"]).0;
                    acked.lock().expect("acked").push((start, body));
                } else {
                    refused.store(true, Ordering::SeqCst);
                }
                n += 1;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("acked").len() < 20 {
        assert!(
            Instant::now() < deadline,
            "the first server acknowledged too little"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let second = moto.server(&args);
    let deadline = Instant::now() + FENCED_WITHIN;
    while !refused.load(Ordering::SeqCst) {
        assert!(
            Instant::now() < deadline,
            "the first server still acknowledges {FENCED_WITHIN:?} after the second started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A while longer: an ack now would be one the second server cannot see.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread");
    let acked = acked.lock().expect("acked").clone();

    // Everything the first server acknowledged is in the second's stream, in place.
    let port2 = second.port();
    let records = read_records(port2, &basin, "s", "seq_num=0&count=1000");
    let stored: Vec<(u64, String)> = records
        .iter()
        .map(|r| {
            let body = r["body"].as_str().expect("text body").to_owned();
            (position(r).0, body)
        })
        .collect();
    for (seq_num, body) in &acked {
        assert!(
            stored.iter().any(|(s, b)| s == seq_num && b == body),
            "{body}, acknowledged by the first server at {seq_num}, is not at {seq_num} on \
             the second; it holds {} records",
            stored.len()
        );
    }
    // The second server appends right after what it holds.
    let tail = check_tail(port2, &basin, "s").0;
    let response = append_json(port2, &basin, "s", &[], &bodies(&["second"]));
    response.expect_status(200);
    assert_eq!(position(&response.json()["start"]).0, tail);
    // And the first still acknowledges nothing.
    let response = append_json(port, &basin, "s", &[], &bodies(&["first-late"]));
    assert_ne!(
        response.status, 200,
        "the fenced server acknowledged an append"
    );
    drop(first);
}

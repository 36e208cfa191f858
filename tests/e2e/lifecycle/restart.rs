//! Deletions and trims interrupted by `kill -9`: after a restart on the same
//! `--local-root` (with another shard count) an acknowledged basin or stream deletion still
//! completes and frees the name, and an acknowledged trim still hides what it trimmed
//! (SEMANTICS.md §3, §7, §8, §10; API.md §3.5, §4.5).

use std::time::Duration;

use serde_json::json;

use super::{
    append_trim, create_stream_ok, delete_stream, listed_basins, listed_stream_names, numbered,
    read_records_with, record_bodies, wait_basin_gone, wait_stream_gone,
};
use crate::data_plane::{append_ok, bodies, check_tail, create_basin, position, seq_nums};
use crate::harness::{http, Server};

/// How long a basin deletion resumed after a restart may take to finish.
const RESUMED_DELETION_TIMEOUT: Duration = Duration::from_secs(30);

fn start_on(root: &str, shards: &str) -> Server {
    Server::start(&[
        "--shards",
        shards,
        "--local-root",
        root,
        "--deletion-delay-ms",
        "0",
    ])
}

// B-252 B-076
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_basin_deletion_cut_short_by_kill_9_completes_after_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir
        .path()
        .to_str()
        .expect("UTF-8 temporary path")
        .to_owned();
    let mut server = start_on(&root, "2");
    let port = server.port();
    let name = create_basin(
        port,
        "lc-crash-basin",
        json!({ "create_stream_on_append": true }),
    );
    for i in 0..200u32 {
        let stream = format!("s-{i:03}");
        let ack = append_ok(port, &name, &stream, &numbered(&stream, 0..3));
        assert_eq!(position(&ack["start"]).0, 0, "{stream} was auto-created");
    }
    assert_eq!(listed_stream_names(port, &name).len(), 200);

    http(port, "DELETE", &format!("/v1/basins/{name}"), &[], b"").expect_status(202);
    server.kill9();

    let server = start_on(&root, "1");
    let port = server.port();
    // The acknowledged deletion is not forgotten: the basin is deleting or already gone.
    for (listed, state) in listed_basins(port, &name) {
        assert_eq!(listed, name);
        assert_eq!(state, "deleting", "the basin came back after the restart");
    }
    wait_basin_gone(port, &name, RESUMED_DELETION_TIMEOUT).await;
    assert!(listed_basins(port, &name).is_empty());

    // The name can be reused, and nothing of the old basin shows through.
    http(port, "PUT", &format!("/v1/basins/{name}"), &[], b"").expect_status(201);
    assert!(
        listed_stream_names(port, &name).is_empty(),
        "streams of the deleted basin came back"
    );
    create_stream_ok(port, &name, "s-000", None);
    assert_eq!(check_tail(port, &name, "s-000"), (0, 0));
}

// B-180 B-181 B-107
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_acknowledged_before_kill_9_holds_after_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir
        .path()
        .to_str()
        .expect("UTF-8 temporary path")
        .to_owned();
    let mut server = start_on(&root, "2");
    let port = server.port();
    let basin = create_basin(port, "lc-crash-trim", json!({}));
    create_stream_ok(port, &basin, "big", None);
    create_stream_ok(port, &basin, "doomed", None);
    for batch in 0..5u64 {
        let ack = append_ok(
            port,
            &basin,
            "big",
            &numbered("r", batch * 1000..(batch + 1) * 1000),
        );
        assert_eq!(position(&ack["start"]).0, batch * 1000);
    }
    append_ok(port, &basin, "doomed", &numbered("d", 0..3));
    delete_stream(port, &basin, "doomed");
    let ack = append_trim(port, &basin, "big", 4000, &[]);
    server.kill9();
    assert_eq!(position(&ack["start"]).0, 5000);
    let tail = position(&ack["end"]);

    let server = start_on(&root, "1");
    let port = server.port();
    assert_eq!(
        check_tail(port, &basin, "big"),
        tail,
        "the tail is unchanged"
    );
    let records = read_records_with(port, &basin, "big", "seq_num=0", &[]);
    let expected: Vec<u64> = (4000..5000).collect();
    assert_eq!(
        seq_nums(&records),
        expected,
        "reads start at the trim point"
    );
    assert_eq!(records[0]["body"], "r-4000");
    let records = read_records_with(port, &basin, "big", "seq_num=3999&count=2", &[]);
    assert_eq!(seq_nums(&records), vec![4000, 4001]);
    let records = read_records_with(port, &basin, "big", "seq_num=5000", &[]);
    assert_eq!(seq_nums(&records), vec![5000]);
    assert_eq!(records[0]["headers"], json!([["", "trim"]]));

    // The stream deleted before the crash goes away and its name is free again.
    wait_stream_gone(port, &basin, "doomed").await;
    create_stream_ok(port, &basin, "doomed", None);
    assert_eq!(check_tail(port, &basin, "doomed"), (0, 0));

    // The trimmed stream keeps numbering from its tail.
    let ack = append_ok(port, &basin, "big", &bodies(&["after"]));
    assert_eq!(position(&ack["start"]).0, tail.0);
    let records = read_records_with(port, &basin, "big", &format!("seq_num={}", tail.0), &[]);
    assert_eq!(record_bodies(&records), vec!["after"]);
}

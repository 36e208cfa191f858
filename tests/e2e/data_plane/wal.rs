//! A write-ahead log on local disk in front of the data (`--wal-local-root`): the banner
//! says where it lives; appends read back before and after their runs move; and a WAL
//! directory lost while the server was stopped costs only what had not moved, with a
//! warning, not a refusal to start.

use std::time::{Duration, Instant};

use super::{append_ok, basin_with_stream, bodies, read_records};
use crate::harness::{get, Server};

/// Runs moved into the main store so far, from `/metrics`.
fn moves(port: u16) -> f64 {
    get(port, "/metrics")
        .text()
        .lines()
        .filter(|l| {
            l.starts_with("sluice_background_jobs_total{") && l.contains("\"segment_compacted\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn read_bodies(port: u16, basin: &str) -> Vec<String> {
    read_records(port, basin, "w", "seq_num=0")
        .iter()
        .map(|r| r["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_lost_wal_directory_costs_only_what_had_not_moved() {
    let data = tempfile::tempdir().expect("temp dir");
    let wal = tempfile::tempdir().expect("temp dir");
    let (data, wal_dir) = (
        data.path().to_str().unwrap().to_owned(),
        wal.path().join("wal"),
    );
    let args = [
        "--shards",
        "2",
        "--local-root",
        data.as_str(),
        "--wal-local-root",
        wal_dir.to_str().unwrap(),
    ];
    let mut server = Server::start(&args);
    let port = server.port();
    let basin = basin_with_stream(port, "dp-wal", "w");
    for i in 0..5 {
        append_ok(port, &basin, "w", &bodies(&[&format!("moved-{i}")]));
    }
    assert!(
        std::fs::read_dir(&wal_dir).is_ok(),
        "nothing written under the WAL directory"
    );
    // Wait until every commit has moved and been deleted from the WAL directory (the
    // index becomes durable within 5 s, the mover runs every 5 s).
    let commits = wal_dir.join("sluice-segments").join("0000000000000000");
    let left = || std::fs::read_dir(&commits).map_or(0, |d| d.count());
    let deadline = Instant::now() + Duration::from_secs(40);
    while left() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(left(), 0, "commits left in the WAL directory");
    assert!(moves(port) >= 1.0, "nothing moved to the main store");
    for i in 0..3 {
        append_ok(port, &basin, "w", &bodies(&[&format!("recent-{i}")]));
    }
    assert_eq!(read_bodies(port, &basin).len(), 8);
    server.kill9();

    std::fs::remove_dir_all(&wal_dir).expect("remove the WAL directory");
    let restarted = Server::start_with_env(&args, &[("RUST_LOG", "warn")]);
    let served = read_bodies(restarted.port(), &basin);
    let moved: Vec<String> = (0..5).map(|i| format!("moved-{i}")).collect();
    assert!(
        served.len() >= 5 && served[..5] == moved[..],
        "the moved records are not all served: {served:?}"
    );
    let log = restarted.stderr_text();
    assert!(
        log.contains("the write-ahead store has lost commits"),
        "no warning of what was lost:\n{log}"
    );
    // The stream goes on after its old tail.
    append_ok(restarted.port(), &basin, "w", &bodies(&["after"]));
    assert_eq!(
        read_bodies(restarted.port(), &basin)
            .last()
            .map(String::as_str),
        Some("after")
    );
}

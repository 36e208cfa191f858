//! A write-ahead log on local disk in front of the data (`--wal-local-root`): the banner
//! says where it lives; appends read back before and after their runs move; a WAL
//! directory lost while the server was stopped costs only what had not moved, with a
//! warning, not a refusal to start; and with the main bucket gone for a minute, the WAL
//! takes every append, then drains into the bucket once it is back.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{append_ok, basin_with_stream, bodies, read_raw};
use crate::fault_proxy::{FaultProxy, Faults};
use crate::harness::{get, http, Moto, Server};

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
    stream_bodies(port, basin, "w")
}

/// Every record body of `stream`, read a batch at a time.
fn stream_bodies(port: u16, basin: &str, stream: &str) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let query = format!("seq_num={}", all.len());
        let response = read_raw(port, basin, stream, &query, &[]);
        if response.status == 416 {
            return all;
        }
        let records = response.expect_status(200).json()["records"].clone();
        let records = records.as_array().expect("records");
        all.extend(
            records
                .iter()
                .map(|r| r["body"].as_str().unwrap_or_default().to_owned()),
        );
    }
}

/// Commits waiting in the WAL directory to move.
fn commits_in(wal_dir: &Path) -> usize {
    let commits = wal_dir.join("sluice-segments").join("0000000000000000");
    std::fs::read_dir(commits).map_or(0, |d| d.count())
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
    let left = || commits_in(&wal_dir);
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

/// How long the main bucket is gone.
const OUTAGE: Duration = Duration::from_secs(60);
/// The slowest ack the WAL may give while the bucket is gone: a local fsync, not a wait
/// for the bucket (whose bound is `APPEND_ANSWER_MAX`, 9 s).
const OUTAGE_ACK_MAX: Duration = Duration::from_secs(1);
const OUTAGE_STREAMS: [&str; 3] = ["a", "b", "c"];

#[test]
fn the_wal_takes_appends_through_a_minute_without_the_bucket_then_drains_into_it() {
    let moto = Moto::start();
    moto.create_bucket("wal-outage");
    let proxy = FaultProxy::start(moto.port(), 23);
    let wal = tempfile::tempdir().expect("temp dir");
    let wal_dir = wal.path().join("wal");
    let args = [
        "--shards",
        "2",
        "--bucket",
        "wal-outage",
        "--wal-local-root",
        wal_dir.to_str().unwrap(),
    ];
    let mut server = moto.server_via(&proxy.endpoint(), &args);
    let port = server.port();
    let basin = basin_with_stream(port, "dp-wal-outage", OUTAGE_STREAMS[0]);
    for stream in &OUTAGE_STREAMS[1..] {
        super::create_stream(port, &basin, stream, None);
    }

    proxy.set(Faults {
        down: true,
        ..Faults::default()
    });
    let started = Instant::now();
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); OUTAGE_STREAMS.len()];
    let mut slowest = Duration::ZERO;
    let mut i = 0;
    while started.elapsed() < OUTAGE {
        let s = i % OUTAGE_STREAMS.len();
        let body = format!("during-{i}");
        let asked = Instant::now();
        let ack = append_ok(port, &basin, OUTAGE_STREAMS[s], &bodies(&[&body]));
        slowest = slowest.max(asked.elapsed());
        assert_eq!(
            ack["start"]["seq_num"].as_u64(),
            Some(sent[s].len() as u64),
            "append {i}"
        );
        sent[s].push(body);
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        slowest <= OUTAGE_ACK_MAX,
        "an append waited {slowest:?} with the bucket gone"
    );
    assert!(
        proxy
            .counts()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the server did not try the bucket during the outage"
    );
    assert!(commits_in(&wal_dir) > 0, "nothing waited in the WAL");
    for (s, stream) in OUTAGE_STREAMS.iter().enumerate() {
        assert_eq!(
            stream_bodies(port, &basin, stream),
            sent[s],
            "read during the outage"
        );
    }

    proxy.set(Faults::default());
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    while commits_in(&wal_dir) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        commits_in(&wal_dir),
        0,
        "commits left in the WAL after the outage"
    );
    println!(
        "{i} appends in the outage, the slowest acked in {slowest:?}; the WAL drained {:?} after",
        back.elapsed()
    );
    assert!(moves(port) >= 1.0, "nothing moved to the bucket");
    for (s, stream) in OUTAGE_STREAMS.iter().enumerate() {
        assert_eq!(
            stream_bodies(port, &basin, stream),
            sent[s],
            "read after the drain"
        );
    }

    // From the bucket alone: the WAL directory is empty, and a new process reads it all.
    server.kill9();
    let restarted = moto.server_via(&proxy.endpoint(), &args);
    for (s, stream) in OUTAGE_STREAMS.iter().enumerate() {
        assert_eq!(
            stream_bodies(restarted.port(), &basin, stream),
            sent[s],
            "read after a restart"
        );
    }
}

/// Commits of the log in `bucket` of the moto on `port`.
fn log_commits(port: u16, bucket: &str) -> usize {
    let listing = http(
        port,
        "GET",
        &format!("/{bucket}?list-type=2&prefix=sluice-segments/0000000000000000/"),
        &[],
        b"",
    );
    listing.text().matches("<Key>").count()
}

/// `--wal-bucket`, reached through `S2LITE_WAL_AWS_ENDPOINT_URL_S3` (a fault proxy in front
/// of a moto of its own, apart from the main bucket's): appends are acknowledged there and
/// read back, `/health` answers 503 naming the write-ahead store while that bucket is gone,
/// and 200 again once it is back.
#[test]
fn a_wal_bucket_takes_appends_and_its_outage_shows_in_health() {
    let moto = Moto::start();
    moto.create_bucket("wal-main");
    // The WAL bucket only on its own moto, so that a commit can reach it by its endpoint
    // override alone.
    let wal_moto = Moto::start();
    wal_moto.create_bucket("wal-fast");
    let proxy = FaultProxy::start(wal_moto.port(), 7);
    let (main, fast) = (moto.endpoint(), proxy.endpoint());
    let env = [
        ("AWS_ENDPOINT_URL_S3", main.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ALLOW_HTTP", "true"),
        ("S2LITE_WAL_AWS_ENDPOINT_URL_S3", fast.as_str()),
    ];
    let args = ["--bucket", "wal-main", "--wal-bucket", "wal-fast"];
    let server = Server::start_with_env(&args, &env);
    let port = server.port();
    let basin = basin_with_stream(port, "dp-wal-bucket", "w");
    let before = log_commits(wal_moto.port(), "wal-fast");
    append_ok(port, &basin, "w", &bodies(&["fast"]));
    // Moved runs leave their commit on a later pass, at least 5 s on.
    assert!(
        log_commits(wal_moto.port(), "wal-fast") > before,
        "the append's commit is not in the WAL bucket"
    );
    assert_eq!(
        log_commits(moto.port(), "wal-main"),
        0,
        "a commit in the main bucket"
    );
    assert_eq!(read_bodies(port, &basin), ["fast"]);
    assert_eq!(get(port, "/health").status, 200);

    proxy.set(Faults {
        down: true,
        ..Faults::default()
    });
    let health_within = |status: u16| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = get(port, "/health");
            if response.status == status || Instant::now() >= deadline {
                return response;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let down = health_within(503);
    assert_eq!(down.status, 503, "/health with the WAL bucket gone");
    assert!(
        down.text().contains("write-ahead store"),
        "/health does not name the write-ahead store: {}",
        down.text()
    );
    proxy.set(Faults::default());
    assert_eq!(health_within(200).status, 200, "/health after the outage");
    append_ok(port, &basin, "w", &bodies(&["after"]));
    assert_eq!(read_bodies(port, &basin), ["fast", "after"]);
}

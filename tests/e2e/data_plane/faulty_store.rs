//! The server on an object store that misbehaves (`fault_proxy` in front of moto): slow,
//! answering 500 and 503, resetting connections part way through, then gone altogether.
//!
//! Pipelined append sessions on many streams run throughout. What must hold: every
//! acknowledged batch is in its stream, in place and unchanged, and nothing else is (a
//! batch whose append failed never shows); every append is answered, ack or error, within
//! 10 s, the store's outage included; `/health` says 503 while the store is gone; and the
//! server recovers by itself once the store is back. The streams are verified on a new
//! process after a `kill -9`.
//!
//! `make soak-faults` runs the same test for longer (`FAULT_SOAK_SECS`), in cycles of
//! faults, outage and recovery, and prints its figures.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s2_sdk::append_session::AppendSessionConfig;
use s2_sdk::types::{
    AppendInput, AppendRecord, AppendRecordBatch, ReadFrom, ReadInput, ReadStart, RetryConfig,
    S2Config, S2Endpoints,
};
use s2_sdk::{S2Stream, S2};
use serde_json::json;

use super::{create_basin, create_stream};
use crate::fault_proxy::{FaultProxy, Faults};
use crate::harness::{basin_name, get, stream_name, Moto};

const STREAMS: usize = 8;
/// Batches each session keeps in flight.
const PIPELINE: u32 = 8;
/// The longest any append may wait for its answer, outage included.
const ANSWER_MAX: Duration = Duration::from_secs(10);
/// How soon `/health` must notice the outage, and the server recover after it.
const NOTICE_MAX: Duration = Duration::from_secs(5);
const RECOVERY_MAX: Duration = Duration::from_secs(10);

fn client(endpoint: &str) -> S2 {
    let endpoints = S2Endpoints::for_endpoint(endpoint).expect("endpoint");
    let retry = RetryConfig::new().with_max_attempts(NonZeroU32::new(1).expect("non-zero"));
    // Longer than ANSWER_MAX, so that a late answer is measured here, not cut by the SDK.
    let config = S2Config::new("e2e-ignored-token")
        .with_endpoints(endpoints)
        .with_request_timeout(Duration::from_secs(30))
        .with_retry(retry);
    S2::new(config).expect("SDK client")
}

fn body(writer: usize, batch: usize, i: usize) -> String {
    format!(
        "w{writer}-b{batch}-r{i}-{}",
        "p".repeat((batch * 31 + i) % 200)
    )
}

fn input(writer: usize, batch: usize) -> AppendInput {
    let records =
        (0..1 + batch % 4).map(|i| AppendRecord::new(body(writer, batch, i)).expect("record"));
    AppendInput::new(AppendRecordBatch::try_from_iter(records).expect("batch"))
}

/// What one writer saw.
#[derive(Debug, Default)]
struct Tally {
    /// Acknowledged batches in ack order, with their first seq_num.
    acked: Vec<(usize, u64)>,
    /// Errors, with the time from the oldest unanswered submit to the error.
    errors: Vec<(String, Duration)>,
    /// The longest any batch waited for its ack.
    slowest_ack: Duration,
}

/// Append sessions on `stream` until `stop`: one session at a time, up to PIPELINE batches
/// in flight; when a session fails, a new one goes on from the batch after the last ack.
async fn writer(stream: S2Stream, writer: usize, tally: Arc<Mutex<Tally>>, stop: Arc<Mutex<bool>>) {
    let mut next = 0usize;
    while !*stop.lock().expect("stop") {
        let session = stream.append_session(
            AppendSessionConfig::new()
                .with_max_unacked_batches(NonZeroU32::new(PIPELINE).expect("non-zero")),
        );
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let acker = {
            let tally = tally.clone();
            tokio::spawn(async move {
                while let Some((batch, submitted, ticket)) = rx.recv().await {
                    let ticket: s2_sdk::append_session::BatchSubmitTicket = ticket;
                    let submitted: Instant = submitted;
                    match ticket.await {
                        Ok(ack) => {
                            let mut t = tally.lock().expect("tally");
                            t.acked.push((batch, ack.start.seq_num));
                            t.slowest_ack = t.slowest_ack.max(submitted.elapsed());
                        }
                        Err(e) => {
                            let waited = submitted.elapsed();
                            tally
                                .lock()
                                .expect("tally")
                                .errors
                                .push((e.to_string(), waited));
                            return;
                        }
                    }
                }
            })
        };
        let mut batch = next;
        loop {
            if *stop.lock().expect("stop") {
                break;
            }
            let submitted = Instant::now();
            match tokio::time::timeout(ANSWER_MAX * 2, session.submit(input(writer, batch))).await {
                Ok(Ok(ticket)) => {
                    if tx.send((batch, submitted, ticket)).is_err() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    let waited = submitted.elapsed();
                    tally
                        .lock()
                        .expect("tally")
                        .errors
                        .push((format!("submit: {e}"), waited));
                    break;
                }
                Err(_) => {
                    tally
                        .lock()
                        .expect("tally")
                        .errors
                        .push(("submit hung".to_owned(), ANSWER_MAX * 2));
                    break;
                }
            }
            batch += 1;
            if acker.is_finished() {
                break;
            }
        }
        drop(tx);
        let _ = acker.await;
        drop(session);
        next = tally
            .lock()
            .expect("tally")
            .acked
            .last()
            .map_or(0, |&(b, _)| b + 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn health(port: u16) -> u16 {
    get(port, "/health").status
}

/// Every record of a stream, read from 0 to the tail.
async fn read_all(stream: &S2Stream) -> Vec<String> {
    let tail = stream.check_tail().await.expect("check tail").seq_num;
    let mut bodies = Vec::new();
    while (bodies.len() as u64) < tail {
        let from = bodies.len() as u64;
        let batch = stream
            .read(ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(from))))
            .await
            .unwrap_or_else(|e| panic!("read from {from}: {e}"));
        assert!(
            !batch.records.is_empty(),
            "no records at {from} below tail {tail}"
        );
        bodies.extend(
            batch
                .records
                .iter()
                .map(|r| String::from_utf8(r.body.to_vec()).expect("UTF-8 body")),
        );
    }
    bodies
}

/// The stream holds exactly its writer's acknowledged batches, in ack order, each at the
/// seq_num its ack gave.
fn verify(writer: usize, bodies: &[String], acked: &[(usize, u64)]) {
    let mut expected = Vec::new();
    for &(batch, start) in acked {
        assert_eq!(
            start,
            expected.len() as u64,
            "writer {writer}: batch {batch} acked at {start}, but the acked batches before it end at {}",
            expected.len()
        );
        expected.extend((0..1 + batch % 4).map(|i| body(writer, batch, i)));
    }
    assert_eq!(
        bodies.len(),
        expected.len(),
        "writer {writer}: the stream holds {} records, the acked batches {}",
        bodies.len(),
        expected.len()
    );
    for (at, (got, want)) in bodies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "writer {writer}: record {at}");
    }
}

#[derive(Debug, Default)]
struct Figures {
    acks: usize,
    errors: usize,
    error_texts: std::collections::BTreeMap<String, usize>,
    slowest_ack: Duration,
    slowest_error: Duration,
    health_noticed: Vec<Duration>,
    recovered: Vec<Duration>,
    outage_reads: usize,
    outage_reads_ok: usize,
}

// B-149 (durability of acknowledged appends) under object-store faults
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_store_loses_nothing_acknowledged_and_the_server_recovers_by_itself() {
    let soak = std::env::var("FAULT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let (faulty_for, outage_for, recover_for) = if soak.is_some() {
        (
            Duration::from_secs(20),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
    } else {
        (
            Duration::from_secs(8),
            Duration::from_secs(12),
            Duration::from_secs(6),
        )
    };

    let moto = Moto::start();
    moto.create_bucket("sluice-faults");
    let proxy = FaultProxy::start(moto.port(), 0x5eed);
    let mut server = moto.server_via(
        &proxy.endpoint(),
        &["--shards", "2", "--bucket", "sluice-faults"],
    );
    let port = server.port();
    let basin = create_basin(port, "faulty-store", json!({}));
    for w in 0..STREAMS {
        create_stream(port, &basin, &format!("s{w}"), None);
    }
    let sdk = client(&server.endpoint());
    let handle = sdk.basin(basin_name(&basin));
    let stop = Arc::new(Mutex::new(false));
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..STREAMS).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(w, tally)| {
            tokio::spawn(writer(
                handle.stream(stream_name(&format!("s{w}"))),
                w,
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let acks = |tallies: &[Arc<Mutex<Tally>>]| -> usize {
        tallies
            .iter()
            .map(|t| t.lock().expect("tally").acked.len())
            .sum()
    };

    let mut figures = Figures::default();
    let started = Instant::now();
    loop {
        // Slow, failing and resetting.
        proxy.set(Faults {
            latency_ms: Some((20, 200)),
            error_rate: 0.04,
            reset_rate: 0.04,
            down: false,
        });
        let before = acks(&tallies);
        tokio::time::sleep(faulty_for).await;
        assert!(
            acks(&tallies) > before,
            "no append was acknowledged through a slow, failing store; stderr:\n{}",
            server.stderr_text()
        );

        // Gone.
        let last_acked = acks(&tallies);
        proxy.set(Faults {
            down: true,
            ..Faults::default()
        });
        let down_at = Instant::now();
        loop {
            if health(port) == 503 {
                figures.health_noticed.push(down_at.elapsed());
                break;
            }
            assert!(
                down_at.elapsed() < NOTICE_MAX,
                "/health still answers 200 {NOTICE_MAX:?} into the outage"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Reads of what is cached still answer, and quickly either way.
        let reader = handle.stream(stream_name("s0"));
        while down_at.elapsed() < outage_for {
            let asked = Instant::now();
            let read = reader
                .read(ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0))))
                .await;
            assert!(
                asked.elapsed() < ANSWER_MAX,
                "a read waited {:?}",
                asked.elapsed()
            );
            figures.outage_reads += 1;
            figures.outage_reads_ok += usize::from(read.is_ok());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(health(port), 503, "/health during the outage");
        let during = acks(&tallies) - last_acked;
        // Acks already on their way when the store went may still arrive; nothing after.
        assert!(
            during <= STREAMS * PIPELINE as usize,
            "{during} appends were acknowledged while the store was gone"
        );

        // Back.
        proxy.set(Faults::default());
        let back_at = Instant::now();
        let before = acks(&tallies);
        loop {
            if acks(&tallies) > before + STREAMS && health(port) == 200 {
                figures.recovered.push(back_at.elapsed());
                break;
            }
            assert!(
                back_at.elapsed() < RECOVERY_MAX,
                "not recovered {RECOVERY_MAX:?} after the store came back: health {}, {} new acks; stderr:\n{}",
                health(port),
                acks(&tallies) - before,
                server.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(recover_for).await;
        if soak.is_none_or(|soak| started.elapsed() >= soak) {
            break;
        }
    }

    *stop.lock().expect("stop") = true;
    for task in tasks {
        tokio::time::timeout(ANSWER_MAX * 3, task)
            .await
            .expect("a writer did not stop")
            .expect("writer task");
    }
    server.assert_alive();
    // What was acknowledged must be durable, not just in this process's memory: verify on
    // a new process after a kill -9.
    server.kill9();
    let server = moto.server_via(
        &proxy.endpoint(),
        &["--shards", "2", "--bucket", "sluice-faults"],
    );
    let sdk = client(&server.endpoint());
    let handle = sdk.basin(basin_name(&basin));
    for (w, tally) in tallies.iter().enumerate() {
        let t = std::mem::take(&mut *tally.lock().expect("tally"));
        figures.acks += t.acked.len();
        figures.errors += t.errors.len();
        figures.slowest_ack = figures.slowest_ack.max(t.slowest_ack);
        for (error, waited) in &t.errors {
            figures.slowest_error = figures.slowest_error.max(*waited);
            *figures
                .error_texts
                .entry(error.chars().take(120).collect())
                .or_default() += 1;
            assert!(
                error.contains("unavailable"),
                "writer {w}: an append failed with something other than 503 unavailable: {error}"
            );
            assert!(
                *waited < ANSWER_MAX,
                "writer {w}: an append waited {waited:?} for its error: {error}"
            );
        }
        assert!(
            t.slowest_ack < ANSWER_MAX,
            "writer {w}: an ack took {:?}",
            t.slowest_ack
        );
        let bodies = read_all(&handle.stream(stream_name(&format!("s{w}")))).await;
        verify(w, &bodies, &t.acked);
    }
    assert!(
        figures.errors > 0,
        "the faults failed no append: {figures:?}"
    );
    let counts = proxy.counts();
    eprintln!(
        "faulty store: {figures:?}; proxy forwarded {}, answered {} errors, reset {} answers, refused {} connections",
        counts.forwarded.load(std::sync::atomic::Ordering::Relaxed),
        counts.errors.load(std::sync::atomic::Ordering::Relaxed),
        counts.resets.load(std::sync::atomic::Ordering::Relaxed),
        counts.refused.load(std::sync::atomic::Ordering::Relaxed),
    );
}

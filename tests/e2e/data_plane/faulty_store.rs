//! The server on an object store that misbehaves (`fault_proxy` in front of moto): slow,
//! answering 500 and 503, resetting connections part way through, then gone altogether.
//!
//! Pipelined append sessions on many streams run throughout. What must hold: every
//! acknowledged batch is in its stream, in place and unchanged, and each session's batches
//! there are a prefix of what it sent (nothing after its first failure, which the
//! `unavailable` of an append whose outcome is unknown may or may not be part of); every
//! append is answered, ack or error, within 10 s, the store's outage included; `/health`
//! says 503 while the store is gone; and the server recovers by itself once the store is
//! back. The streams are verified on a new process after a `kill -9`.
//!
//! `make soak-faults` runs the first test for longer (`FAULT_SOAK_SECS`), in cycles of
//! faults, outage and recovery, and prints its figures. The second makes connects to the
//! store time out, which the S3 client does not retry for a create-only PUT.

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
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
use sluice_shards::storage::APPEND_ANSWER_MAX;

use crate::fault_proxy::{FaultProxy, Faults};
use crate::harness::{basin_name, get, stream_name, Moto, Server};

const STREAMS: usize = 8;
/// Batches each session keeps in flight.
const PIPELINE: u32 = 8;
/// The longest any append may wait for its answer, outage included: the engine's bound,
/// and a second for the request's own way through HTTP and the client.
const ANSWER_MAX: Duration = Duration::from_secs(APPEND_ANSWER_MAX.as_secs() + 1);
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

fn body(writer: usize, session: usize, batch: usize, i: usize) -> String {
    format!(
        "w{writer}-s{session}-b{batch}-r{i}-{}",
        "p".repeat((batch * 31 + i) % 200)
    )
}

fn records_in(batch: usize) -> usize {
    1 + batch % 4
}

fn input(writer: usize, session: usize, batch: usize) -> AppendInput {
    let records = (0..records_in(batch))
        .map(|i| AppendRecord::new(body(writer, session, batch, i)).expect("record"));
    AppendInput::new(AppendRecordBatch::try_from_iter(records).expect("batch"))
}

/// What one append session of a writer sent and had acknowledged.
#[derive(Debug, Default, Clone)]
struct SessionLog {
    /// Batches in the order they were handed to the session.
    submitted: Vec<usize>,
    /// Acknowledged batches in ack order, with their first seq_num.
    acked: Vec<(usize, u64)>,
}

/// What one writer saw.
#[derive(Debug, Default)]
struct Tally {
    sessions: Vec<SessionLog>,
    /// Errors, with the time from the oldest unanswered submit to the error.
    errors: Vec<(String, Duration)>,
    /// The longest any batch waited for its ack.
    slowest_ack: Duration,
}

impl Tally {
    fn acks(&self) -> usize {
        self.sessions.iter().map(|s| s.acked.len()).sum()
    }
}

fn acks(tallies: &[Arc<Mutex<Tally>>]) -> usize {
    tallies
        .iter()
        .map(|t| t.lock().expect("tally").acks())
        .sum()
}

fn errors(tallies: &[Arc<Mutex<Tally>>]) -> usize {
    tallies
        .iter()
        .map(|t| t.lock().expect("tally").errors.len())
        .sum()
}

/// Append sessions on `stream` until `stop`: one session at a time, up to `pipeline`
/// batches in flight; when a session fails, a new one goes on from the batch after the
/// last ack, as a client that was told its appends failed would.
async fn writer(
    stream: S2Stream,
    writer: usize,
    pipeline: u32,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<Mutex<bool>>,
) {
    let mut next = 0usize;
    while !*stop.lock().expect("stop") {
        let number = {
            let mut t = tally.lock().expect("tally");
            t.sessions.push(SessionLog::default());
            t.sessions.len() - 1
        };
        let session = stream.append_session(
            AppendSessionConfig::new()
                .with_max_unacked_batches(NonZeroU32::new(pipeline).expect("non-zero")),
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
                            t.sessions[number].acked.push((batch, ack.start.seq_num));
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
            // Logged before it is handed over: a failed submit may still have sent it.
            tally.lock().expect("tally").sessions[number]
                .submitted
                .push(batch);
            match tokio::time::timeout(ANSWER_MAX * 2, session.submit(input(writer, number, batch)))
                .await
            {
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
        if let Some(&(last, _)) = tally.lock().expect("tally").sessions[number].acked.last() {
            next = last + 1;
        }
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

/// The prefix rule: the stream holds, session after session, a prefix of the batches each
/// session submitted, whole and in order, covering every batch it had acknowledged, each
/// at the seq_num its ack gave, and nothing else. So nothing acknowledged is lost, and
/// nothing a session sent after its first failure is applied. Returns how many batches
/// the stream holds that were not acknowledged (their append failed as `unavailable`,
/// whose outcome is unknown).
fn verify(writer: usize, bodies: &[String], sessions: &[SessionLog]) -> usize {
    let mut at = 0usize;
    let mut unacknowledged = 0;
    for (number, session) in sessions.iter().enumerate() {
        let mut starts = Vec::new();
        for &batch in &session.submitted {
            let want: Vec<String> = (0..records_in(batch))
                .map(|i| body(writer, number, batch, i))
                .collect();
            if bodies.get(at..at + want.len()) != Some(&want[..]) {
                break;
            }
            starts.push((batch, at as u64));
            at += want.len();
        }
        assert!(
            starts.len() >= session.acked.len(),
            "writer {writer}, session {number}: {} of its batches are stored, {} were \
             acknowledged; the first missing: {:?}; the stream from {at}: {:?}",
            starts.len(),
            session.acked.len(),
            session.acked.get(starts.len()),
            &bodies[at..bodies.len().min(at + 4)]
        );
        for (k, acked) in session.acked.iter().enumerate() {
            assert_eq!(
                *acked, starts[k],
                "writer {writer}, session {number}: ack {k} (batch, start)"
            );
        }
        unacknowledged += starts.len() - session.acked.len();
    }
    assert_eq!(
        at,
        bodies.len(),
        "writer {writer}: the stream holds records no session sent, or a session's batch \
         after one it lost; from {at}: {:?}",
        &bodies[at..bodies.len().min(at + 4)]
    );
    unacknowledged
}

/// A server on moto behind the fault proxy, with one writer per stream appending from the
/// start.
struct Writers {
    moto: Moto,
    proxy: FaultProxy,
    server: Server,
    args: Vec<String>,
    basin: String,
    tallies: Vec<Arc<Mutex<Tally>>>,
    stop: Arc<Mutex<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// `streams` streams on a `--shards 2` server with `extra` arguments, on a new bucket.
    fn start(bucket: &str, seed: u64, streams: usize, extra: &[&str]) -> Writers {
        let moto = Moto::start();
        moto.create_bucket(bucket);
        let proxy = FaultProxy::start(moto.port(), seed);
        let args: Vec<String> = ["--shards", "2", "--bucket", bucket]
            .iter()
            .chain(extra)
            .map(|a| a.to_string())
            .collect();
        let server = moto.server_via(&proxy.endpoint(), &as_strs(&args));
        let port = server.port();
        let basin = create_basin(port, bucket, json!({}));
        for w in 0..streams {
            create_stream(port, &basin, &format!("s{w}"), None);
        }
        let handle = client(&server.endpoint()).basin(basin_name(&basin));
        let stop = Arc::new(Mutex::new(false));
        let tallies: Vec<Arc<Mutex<Tally>>> = (0..streams).map(|_| Arc::default()).collect();
        let tasks = tallies
            .iter()
            .enumerate()
            .map(|(w, tally)| {
                tokio::spawn(writer(
                    handle.stream(stream_name(&format!("s{w}"))),
                    w,
                    PIPELINE,
                    tally.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Writers {
            moto,
            proxy,
            server,
            args,
            basin,
            tallies,
            stop,
            tasks,
        }
    }

    /// Stop the writers, `kill -9` the server and check every stream on a new process: what
    /// was acknowledged must be durable, not just in the old process's memory. Every error
    /// must be 503 `unavailable`, and with `answer_max`, every answer within it.
    async fn verify_after_kill9(mut self, answer_max: Option<Duration>) -> Figures {
        *self.stop.lock().expect("stop") = true;
        for task in std::mem::take(&mut self.tasks) {
            tokio::time::timeout(ANSWER_MAX * 3, task)
                .await
                .expect("a writer did not stop")
                .expect("writer task");
        }
        self.server.assert_alive();
        let log = self.server.stderr_text();
        self.server.kill9();
        let server = self
            .moto
            .server_via(&self.proxy.endpoint(), &as_strs(&self.args));
        let handle = client(&server.endpoint()).basin(basin_name(&self.basin));
        let mut figures = Figures::default();
        for (w, tally) in self.tallies.iter().enumerate() {
            let t = std::mem::take(&mut *tally.lock().expect("tally"));
            figures.acks += t.acks();
            figures.errors += t.errors.len();
            figures.sessions += t.sessions.len();
            figures.slowest_ack = figures.slowest_ack.max(t.slowest_ack);
            for (error, waited) in &t.errors {
                figures.slowest_error = figures.slowest_error.max(*waited);
                let text = error.split(" (error id ").next().unwrap_or(error);
                *figures
                    .error_texts
                    .entry(text.chars().take(120).collect())
                    .or_default() += 1;
                assert!(
                    error.contains("unavailable"),
                    "writer {w}: an append failed with something other than 503 unavailable: \
                     {error}"
                );
                assert!(
                    answer_max.is_none_or(|max| *waited < max),
                    "writer {w}: an append waited {waited:?} for its error: {error}"
                );
                // The body says what a client needs, with an id; the log has the rest.
                assert!(
                    !error.contains("Error performing") && !error.contains("storage error"),
                    "writer {w}: an error tells the client the store's own message: {error}"
                );
                if let Some((_, id)) = error.split_once("(error id ") {
                    let id = id.trim_end_matches(|c: char| !c.is_ascii_hexdigit());
                    figures.error_ids += 1;
                    // The harness keeps the start of the log only.
                    figures.error_ids_logged += usize::from(log.contains(id));
                }
            }
            assert!(
                answer_max.is_none_or(|max| t.slowest_ack < max),
                "writer {w}: an ack took {:?}",
                t.slowest_ack
            );
            let bodies = read_all(&handle.stream(stream_name(&format!("s{w}")))).await;
            figures.unacknowledged_stored += verify(w, &bodies, &t.sessions);
        }
        figures
    }
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[derive(Debug, Default)]
struct Figures {
    acks: usize,
    errors: usize,
    /// Errors whose message carried an error id, and of those, ids found in the server's
    /// log (as much of it as the harness keeps).
    error_ids: usize,
    error_ids_logged: usize,
    error_texts: std::collections::BTreeMap<String, usize>,
    slowest_ack: Duration,
    slowest_error: Duration,
    sessions: usize,
    /// Batches stored whose append failed as `unavailable`.
    unacknowledged_stored: usize,
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

    let writers = Writers::start("sluice-faults", 0x5eed, STREAMS, &[]);
    let (proxy, server, tallies) = (&writers.proxy, &writers.server, &writers.tallies);
    let port = server.port();
    let handle = client(&server.endpoint()).basin(basin_name(&writers.basin));
    let (mut health_noticed, mut recovered) = (Vec::new(), Vec::new());
    let (mut outage_reads, mut outage_reads_ok) = (0, 0);
    let started = Instant::now();
    loop {
        // Slow, failing and resetting.
        proxy.set(Faults {
            latency_ms: Some((20, 200)),
            error_rate: 0.04,
            reset_rate: 0.04,
            ..Faults::default()
        });
        let before = acks(tallies);
        tokio::time::sleep(faulty_for).await;
        assert!(
            acks(tallies) > before,
            "no append was acknowledged through a slow, failing store; stderr:\n{}",
            server.stderr_text()
        );

        // Gone.
        let last_acked = acks(tallies);
        proxy.set(Faults {
            down: true,
            ..Faults::default()
        });
        let down_at = Instant::now();
        loop {
            if health(port) == 503 {
                health_noticed.push(down_at.elapsed());
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
            outage_reads += 1;
            outage_reads_ok += usize::from(read.is_ok());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(health(port), 503, "/health during the outage");
        let during = acks(tallies) - last_acked;
        // Acks already on their way when the store went may still arrive; nothing after.
        assert!(
            during <= STREAMS * PIPELINE as usize,
            "{during} appends were acknowledged while the store was gone"
        );

        // Back.
        proxy.set(Faults::default());
        let back_at = Instant::now();
        let before = acks(tallies);
        loop {
            if acks(tallies) > before + STREAMS && health(port) == 200 {
                recovered.push(back_at.elapsed());
                break;
            }
            assert!(
                back_at.elapsed() < RECOVERY_MAX,
                "not recovered {RECOVERY_MAX:?} after the store came back: health {}, {} new acks; stderr:\n{}",
                health(port),
                acks(tallies) - before,
                server.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(recover_for).await;
        if soak.is_none_or(|soak| started.elapsed() >= soak) {
            break;
        }
    }

    let counts = format!(
        "proxy forwarded {}, answered {} errors, reset {} answers, refused {} connections",
        proxy.counts().forwarded.load(Ordering::Relaxed),
        proxy.counts().errors.load(Ordering::Relaxed),
        proxy.counts().resets.load(Ordering::Relaxed),
        proxy.counts().refused.load(Ordering::Relaxed),
    );
    let figures = writers.verify_after_kill9(Some(ANSWER_MAX)).await;
    assert!(
        figures.errors > 0,
        "the faults failed no append: {figures:?}"
    );
    assert!(
        figures.error_ids > 0 && figures.error_ids_logged > 0,
        "no error carried an error id found in the log: {figures:?}"
    );
    eprintln!(
        "faulty store: {figures:?}; /health noticed outages after {health_noticed:?}, \
         recovered after {recovered:?}; {outage_reads_ok} of {outage_reads} reads in \
         outages served; {counts}"
    );
}

fn per_writer(tallies: &[Arc<Mutex<Tally>>]) -> Vec<usize> {
    tallies
        .iter()
        .map(|t| t.lock().expect("tally").acks())
        .collect()
}

/// Wait until appends flow: every writer has more acks than `before`.
async fn until_flowing(
    tallies: &[Arc<Mutex<Tally>>],
    before: &[usize],
    what: &str,
    server: &Server,
) {
    let at = Instant::now();
    loop {
        let now = per_writer(tallies);
        if now.iter().zip(before).all(|(n, b)| n > b) {
            return;
        }
        assert!(
            at.elapsed() < RECOVERY_MAX,
            "{what}: appends do not flow {RECOVERY_MAX:?} on ({now:?} acks, {before:?} \
             before); stderr:\n{}",
            server.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Streams of the connect-timeout test, spread over two shards.
const CONNECT_STREAMS: usize = 6;
/// Its admission budget: a few small batches per shard at a time, so most inputs of a
/// session wait for admission behind one in flight. That is where an input used to be
/// sequenced after an earlier one of its session had failed, right behind the hole.
const CONNECT_INFLIGHT_BYTES: &str = "2KiB";
/// Connects fail this long: every PUT started in it fails its first attempt (the SYN
/// retransmission comes as late as the 1 s connect timeout), and a retry gets through.
const SHORT_BLACKOUT: Duration = Duration::from_secs(1);
/// Longer than any storage call may wait: appends fail.
const LONG_BLACKOUT: Duration = Duration::from_secs(6);
const LONG_BLACKOUTS: usize = 2;

/// No connection to the store can be established for `how_long`.
async fn blackout(proxy: &FaultProxy, how_long: Duration) {
    proxy.set(Faults {
        connects_time_out: true,
        ..Faults::default()
    });
    tokio::time::sleep(how_long).await;
    proxy.set(Faults::default());
}

/// Connects to the store time out, briefly and then for longer than a storage call may
/// wait, while pipelined sessions append to streams on two shards; then `kill -9` and a
/// restart. A blackout shorter than the bound fails no append (a PUT whose connection was
/// never established is retried: it cannot have landed); a longer one fails appends, and
/// for every session the stream holds a prefix of what it submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeouts_fail_no_append_they_need_not_and_leave_each_session_a_prefix() {
    let writers = Writers::start(
        "sluice-connects",
        0xc0ec,
        CONNECT_STREAMS,
        &["--append-inflight-bytes", CONNECT_INFLIGHT_BYTES],
    );
    let (proxy, server, tallies) = (&writers.proxy, &writers.server, &writers.tallies[..]);
    until_flowing(tallies, &[0; CONNECT_STREAMS], "at start", server).await;

    let failed_before = errors(tallies);
    let before = per_writer(tallies);
    blackout(proxy, SHORT_BLACKOUT).await;
    until_flowing(tallies, &before, "after the short blackout", server).await;
    // Whatever was in flight in the blackout has been answered by now.
    until_flowing(
        tallies,
        &per_writer(tallies),
        "after the short blackout",
        server,
    )
    .await;
    if errors(tallies) > failed_before {
        let failed: Vec<String> = tallies
            .iter()
            .flat_map(|t| t.lock().expect("tally").errors.clone())
            .map(|(error, _)| error)
            .collect();
        panic!("a {SHORT_BLACKOUT:?} blackout of connects failed appends: {failed:?}");
    }

    for round in 0..LONG_BLACKOUTS {
        let failed_before = errors(tallies);
        blackout(proxy, LONG_BLACKOUT).await;
        assert!(
            errors(tallies) > failed_before,
            "round {round}: a {LONG_BLACKOUT:?} blackout of connects failed no append"
        );
        let before = per_writer(tallies);
        until_flowing(tallies, &before, "after a long blackout", server).await;
    }

    let figures = writers.verify_after_kill9(None).await;
    eprintln!("connect timeouts: {figures:?}");
}

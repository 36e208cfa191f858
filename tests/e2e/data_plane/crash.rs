//! Durability of acknowledged appends across `kill -9` and a restart with another shard
//! count on the same `--local-root` (SEMANTICS.md §4, §10).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use s2_sdk::append_session::AppendSessionConfig;
use s2_sdk::types::{
    AppendAck, AppendInput, AppendRecord, AppendRecordBatch, Header, ReadFrom, ReadInput,
    ReadStart, SequencedRecord, StreamPosition,
};
use s2_sdk::S2Stream;
use serde_json::json;

use super::{create_basin, create_stream, now_ms, sdk_no_retry};
use crate::harness::{basin_name, stream_name, Moto, Server};

/// How many batches each writer has planned; the kill comes long before they are done.
const PLANNED_BATCHES: usize = 3000;
/// Acks to collect from each writer before the kill.
const SESSION_ACKS_BEFORE_KILL: usize = 150;
const UNARY_ACKS_BEFORE_KILL: usize = 30;

#[derive(Debug, Clone)]
struct Planned {
    headers: Vec<(String, String)>,
    body: String,
    timestamp: u64,
}

/// Deterministic batches of 1 to 5 records with strictly increasing client timestamps in
/// the past (so `client-prefer` keeps them exactly).
fn plan(writer: &str, base_timestamp: u64) -> Vec<Vec<Planned>> {
    let mut index = 0u64;
    (0..PLANNED_BATCHES)
        .map(|batch| {
            let count = 1 + (batch * 7) % 5;
            (0..count)
                .map(|i| {
                    let planned = Planned {
                        headers: vec![
                            ("writer".to_owned(), writer.to_owned()),
                            ("batch".to_owned(), batch.to_string()),
                            ("index".to_owned(), i.to_string()),
                        ],
                        body: format!("{writer}-{batch}-{i}-{}", "x".repeat((batch * 13 + i) % 97)),
                        timestamp: base_timestamp + index,
                    };
                    index += 1;
                    planned
                })
                .collect()
        })
        .collect()
}

fn to_input(batch: &[Planned]) -> AppendInput {
    let records = batch.iter().map(|planned| {
        AppendRecord::new(planned.body.clone())
            .expect("record")
            .with_headers(
                planned
                    .headers
                    .iter()
                    .map(|(name, value)| Header::new(name.clone(), value.clone())),
            )
            .expect("record headers")
            .with_timestamp(planned.timestamp)
    });
    AppendInput::new(AppendRecordBatch::try_from_iter(records).expect("batch"))
}

/// Every record of a stream, read with unary reads from 0 to the tail.
async fn read_everything(stream: &S2Stream) -> (Vec<SequencedRecord>, StreamPosition) {
    let tail = stream.check_tail().await.expect("check tail after restart");
    let mut records: Vec<SequencedRecord> = Vec::new();
    while (records.len() as u64) < tail.seq_num {
        let from = records.len() as u64;
        let batch = stream
            .read(ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(from))))
            .await
            .unwrap_or_else(|err| panic!("read from {from} after restart: {err}"));
        assert!(
            !batch.records.is_empty(),
            "no records at {from} although the tail is {}",
            tail.seq_num
        );
        records.extend(batch.records);
    }
    (records, tail)
}

/// The stream holds whole planned batches in order, densely numbered from 0, covering at
/// least every acknowledged batch, with acks that match their batches, and none past the
/// first `submitted`. `acks` are in batch order, each with the index of its planned batch.
///
/// Every session of a writer submits the plan from the first batch the stream does not
/// hold, so this is the prefix rule for each of them: what a session leaves in the stream
/// is a prefix of what it submitted (nothing after a batch it lost), with every batch it
/// had acknowledged.
fn verify(
    name: &str,
    records: &[SequencedRecord],
    tail: StreamPosition,
    plan: &[Vec<Planned>],
    acks: &[(usize, AppendAck)],
    submitted: usize,
) {
    assert_eq!(
        records.len() as u64,
        tail.seq_num,
        "{name}: record count vs tail"
    );
    for (at, record) in records.iter().enumerate() {
        assert_eq!(
            record.seq_num, at as u64,
            "{name}: seq_nums must be dense, without duplicates"
        );
    }

    // Where each planned batch starts if batches are stored whole and in order.
    let mut starts = Vec::with_capacity(plan.len() + 1);
    let mut at = 0u64;
    for planned in plan {
        starts.push(at);
        at += planned.len() as u64;
    }
    starts.push(at);
    let mut next = 0u64;
    for (batch, ack) in acks {
        let batch = *batch;
        let planned = &plan[batch];
        assert_eq!(
            ack.start.seq_num, starts[batch],
            "{name}: ack {batch} start"
        );
        assert_eq!(
            ack.end.seq_num,
            starts[batch + 1],
            "{name}: ack {batch} end"
        );
        assert_eq!(
            ack.start.timestamp, planned[0].timestamp,
            "{name}: ack {batch} start timestamp"
        );
        assert_eq!(
            ack.end.timestamp,
            planned[planned.len() - 1].timestamp,
            "{name}: ack {batch} end timestamp"
        );
        next = ack.end.seq_num;
    }
    assert!(
        tail.seq_num >= next,
        "{name}: acknowledged records were lost: tail {} < last acknowledged end {next}",
        tail.seq_num
    );

    let mut offset = 0usize;
    let mut batch = 0usize;
    while offset < records.len() {
        let planned = &plan[batch];
        assert!(
            offset + planned.len() <= records.len(),
            "{name}: batch {batch} is only partly stored"
        );
        for (i, want) in planned.iter().enumerate() {
            let got = &records[offset + i];
            assert_eq!(
                got.body.as_ref(),
                want.body.as_bytes(),
                "{name}: body at {}",
                offset + i
            );
            assert_eq!(
                got.timestamp,
                want.timestamp,
                "{name}: timestamp at {}",
                offset + i
            );
            let headers: Vec<(Vec<u8>, Vec<u8>)> = got
                .headers
                .iter()
                .map(|h| (h.name.to_vec(), h.value.to_vec()))
                .collect();
            let wanted: Vec<(Vec<u8>, Vec<u8>)> = want
                .headers
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect();
            assert_eq!(headers, wanted, "{name}: headers at {}", offset + i);
        }
        offset += planned.len();
        batch += 1;
    }
    assert!(acks.last().is_none_or(|&(b, _)| batch > b));
    assert!(
        batch <= submitted,
        "{name}: {batch} batches are stored, but only {submitted} were ever submitted"
    );
    if let Some(last) = records.last() {
        assert_eq!(tail.timestamp, last.timestamp, "{name}: tail timestamp");
    }
}

/// Acks of one writer, each with the index of its planned batch, shared with its task.
type SharedAcks = Arc<Mutex<Vec<(usize, AppendAck)>>>;

/// How many whole planned batches `records` hold (they were verified to be a prefix).
fn batches_stored(plan: &[Vec<Planned>], records: usize) -> usize {
    let mut seen = 0;
    plan.iter()
        .take_while(|b| {
            seen += b.len();
            seen <= records
        })
        .count()
}

/// How a session writer ended.
#[derive(Debug)]
struct SessionEnd {
    /// Why it stopped, if not because the server went away.
    failure: Option<String>,
    /// One past the last planned batch it handed to its session.
    submitted: usize,
}

/// A pipelined append session on `stream` submitting planned batches from `first` on,
/// recording each ack with its batch index, until the server goes away.
fn spawn_session_writer(
    stream: S2Stream,
    plan: Arc<Vec<Vec<Planned>>>,
    first: usize,
    acks: SharedAcks,
) -> tokio::task::JoinHandle<SessionEnd> {
    tokio::spawn(async move {
        let session = stream.append_session(
            AppendSessionConfig::new()
                .with_max_unacked_batches(NonZeroU32::new(16).expect("non-zero")),
        );
        let (ticket_tx, mut ticket_rx) = tokio::sync::mpsc::unbounded_channel();
        // The writer stops at the first failure (the kill ends every session) and
        // returns it, so that a failure before the kill can be told apart.
        let acker = tokio::spawn(async move {
            while let Some((batch, ticket)) = ticket_rx.recv().await {
                let ticket: s2_sdk::append_session::BatchSubmitTicket = ticket;
                match ticket.await {
                    Ok(ack) => acks.lock().expect("acks lock").push((batch, ack)),
                    Err(e) => return Some(format!("ack of batch {batch}: {e}")),
                }
            }
            None
        });
        let mut failure = None;
        let mut submitted = first;
        for (batch, planned) in plan.iter().enumerate().skip(first) {
            // Counted before it is handed over: a failed submit may still have sent it.
            submitted = batch + 1;
            match tokio::time::timeout(Duration::from_secs(15), session.submit(to_input(planned)))
                .await
            {
                Ok(Ok(ticket)) => {
                    if ticket_tx.send((batch, ticket)).is_err() {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    failure = Some(format!("submit of batch {batch}: {e}"));
                    break;
                }
                Err(_) => {
                    failure = Some(format!("submit of batch {batch} timed out"));
                    break;
                }
            }
        }
        drop(ticket_tx);
        let ack_failure = acker.await.expect("acker task");
        drop(session);
        SessionEnd {
            failure: ack_failure.or(failure),
            submitted,
        }
    })
}

// B-149 B-150 B-253 (durability of acknowledged appends)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_kill_and_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_str().expect("UTF-8 temp path").to_owned();
    let mut server = Server::start(&["--shards", "2", "--local-root", root.as_str()]);
    let port = server.port();
    let basin = create_basin(port, "dp-crash", json!({}));
    create_stream(port, &basin, "session", None);
    create_stream(port, &basin, "unary", None);
    let base_timestamp = now_ms() - 3_600_000;
    let session_plan = Arc::new(plan("session", base_timestamp));
    let unary_plan = Arc::new(plan("unary", base_timestamp));

    let client = sdk_no_retry(&server.endpoint());
    let handle = client.basin(basin_name(&basin));

    // Pipelined writer: an append session with up to 16 batches in flight.
    let session_acks: SharedAcks = Arc::default();
    let session_task = spawn_session_writer(
        handle.stream(stream_name("session")),
        Arc::clone(&session_plan),
        0,
        Arc::clone(&session_acks),
    );

    // Sequential writer: unary appends, one in flight at a time.
    let unary_acks: SharedAcks = Arc::default();
    let unary_task = {
        let stream = handle.stream(stream_name("unary"));
        let plan = Arc::clone(&unary_plan);
        let acks = Arc::clone(&unary_acks);
        tokio::spawn(async move {
            let mut submitted = 0;
            for (batch, planned) in plan.iter().enumerate() {
                submitted = batch + 1;
                match tokio::time::timeout(
                    Duration::from_secs(15),
                    stream.append(to_input(planned)),
                )
                .await
                {
                    Ok(Ok(ack)) => {
                        acks.lock().expect("acks lock").push((batch, ack));
                    }
                    _ => break,
                }
            }
            submitted
        })
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let session_done = session_acks.lock().expect("acks lock").len();
        let unary_done = unary_acks.lock().expect("acks lock").len();
        if session_done >= SESSION_ACKS_BEFORE_KILL && unary_done >= UNARY_ACKS_BEFORE_KILL {
            break;
        }
        assert!(
            !session_task.is_finished() && !unary_task.is_finished(),
            "a writer stopped before the crash ({session_done} session acks, {unary_done} unary acks); stderr:\n{}",
            server.stderr_text()
        );
        assert!(
            Instant::now() < deadline,
            "too slow: {session_done} session acks and {unary_done} unary acks after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();

    let session_end = tokio::time::timeout(Duration::from_secs(30), session_task)
        .await
        .expect("the session writer did not stop after the kill")
        .expect("session writer task");
    let unary_submitted = tokio::time::timeout(Duration::from_secs(30), unary_task)
        .await
        .expect("the unary writer did not stop after the kill")
        .expect("unary writer task");
    let session_acks = session_acks.lock().expect("acks lock").clone();
    let unary_acks = unary_acks.lock().expect("acks lock").clone();
    assert!(
        session_acks.len() < PLANNED_BATCHES && unary_acks.len() < PLANNED_BATCHES,
        "the kill did not interrupt the writers"
    );

    // Restart on the same directory with another shard count.
    let restarted = Server::start(&["--shards", "1", "--local-root", root.as_str()]);
    let client = sdk_no_retry(&restarted.endpoint());
    let handle = client.basin(basin_name(&basin));
    for (name, plan, acks, submitted) in [
        (
            "session",
            &session_plan,
            &session_acks,
            session_end.submitted,
        ),
        ("unary", &unary_plan, &unary_acks, unary_submitted),
    ] {
        let stream = handle.stream(stream_name(name));
        let (records, tail) = read_everything(&stream).await;
        verify(name, &records, tail, plan, acks, submitted);

        // The stream keeps going where it stopped.
        let ack = stream
            .append(AppendInput::new(
                AppendRecordBatch::try_from_iter([
                    AppendRecord::new("after restart").expect("record")
                ])
                .expect("batch"),
            ))
            .await
            .unwrap_or_else(|err| panic!("{name}: append after restart: {err}"));
        assert_eq!(
            ack.start.seq_num, tail.seq_num,
            "{name}: the next seq_num after restart"
        );
        assert!(ack.start.timestamp >= tail.timestamp);
    }
    drop(server);
}

/// Streams written by pipelined sessions at once in the kill cycles.
const CYCLE_STREAMS: usize = 6;
const KILL_CYCLES: usize = 4;

/// Kill -9 at a random moment while pipelined sessions write many streams, again and
/// again, restarting with another shard count each time: after every restart each stream
/// holds whole planned batches, densely, with every acknowledged one byte for byte, and the
/// writers carry on at the tail.
async fn kill_cycles(start: impl Fn(&str) -> Server) {
    let shard_counts = ["2", "1", "3", "2"];
    let mut server = start(shard_counts[0]);
    let port = server.port();
    let basin = create_basin(port, "dp-cycles", json!({}));
    let names: Vec<String> = (0..CYCLE_STREAMS).map(|i| format!("cycle-{i}")).collect();
    for name in &names {
        create_stream(port, &basin, name, None);
    }
    let base_timestamp = now_ms() - 3_600_000;
    let plans: Vec<Arc<Vec<Vec<Planned>>>> = names
        .iter()
        .map(|n| Arc::new(plan(n, base_timestamp)))
        .collect();
    let mut acks: Vec<Vec<(usize, AppendAck)>> = vec![Vec::new(); CYCLE_STREAMS];
    // One past the last batch each stream's sessions have submitted so far.
    let mut submitted = [0usize; CYCLE_STREAMS];
    let mut seed = now_ms();
    for cycle in 0..=KILL_CYCLES {
        if cycle > 0 {
            server = start(shard_counts[cycle % shard_counts.len()]);
        }
        let client = sdk_no_retry(&server.endpoint());
        let handle = client.basin(basin_name(&basin));
        let mut firsts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let (records, tail) = read_everything(&handle.stream(stream_name(name))).await;
            verify(name, &records, tail, &plans[i], &acks[i], submitted[i]);
            firsts.push(batches_stored(&plans[i], records.len()));
        }
        if cycle == KILL_CYCLES {
            break;
        }
        let cycle_acks: Vec<SharedAcks> = (0..CYCLE_STREAMS).map(|_| Arc::default()).collect();
        let mut writers: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                spawn_session_writer(
                    handle.stream(stream_name(name)),
                    Arc::clone(&plans[i]),
                    firsts[i],
                    Arc::clone(&cycle_acks[i]),
                )
            })
            .collect();
        // A pseudo-random moment 50-550 ms after every writer with batches left has been
        // acknowledged once. A writer whose plan is already all stored has nothing to send.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(50 + (seed >> 33) % 500);
        let deadline = Instant::now() + Duration::from_secs(30);
        let waiting = |i: usize| {
            firsts[i] < plans[i].len() && cycle_acks[i].lock().expect("acks lock").is_empty()
        };
        while (0..CYCLE_STREAMS).any(waiting) {
            if let Some(i) = (0..CYCLE_STREAMS).find(|&i| waiting(i) && writers[i].is_finished()) {
                let stopped = (&mut writers[i]).await.expect("writer task").failure;
                panic!(
                    "cycle {cycle}: writer {i} stopped before its first ack: {stopped:?}; \
                     stderr:\n{}",
                    server.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: writers not acknowledged; stderr:\n{}",
                server.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(delay).await;
        server.kill9();
        for (i, writer) in writers.into_iter().enumerate() {
            let end = tokio::time::timeout(Duration::from_secs(30), writer)
                .await
                .expect("a writer did not stop after the kill")
                .expect("writer task");
            submitted[i] = submitted[i].max(end.submitted);
        }
        for (i, a) in cycle_acks.iter().enumerate() {
            let mut a = a.lock().expect("acks lock").clone();
            a.sort_by_key(|(batch, _)| *batch);
            acks[i].extend(a);
        }
    }
    let stream = sdk_no_retry(&server.endpoint())
        .basin(basin_name(&basin))
        .stream(stream_name(&names[0]));
    let tail = stream.check_tail().await.expect("tail");
    let ack = stream
        .append(AppendInput::new(
            AppendRecordBatch::try_from_iter([
                AppendRecord::new("after the cycles").expect("record")
            ])
            .expect("batch"),
        ))
        .await
        .expect("append after the last restart");
    assert_eq!(
        ack.start.seq_num, tail.seq_num,
        "appends continue at the tail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_cycles_on_many_streams_lose_nothing_on_local_root() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_str().expect("UTF-8 temp path").to_owned();
    kill_cycles(|shards| Server::start(&["--shards", shards, "--local-root", root.as_str()])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_cycles_on_many_streams_lose_nothing_on_s3() {
    let moto = Moto::start();
    moto.create_bucket("sluice-cycles");
    kill_cycles(|shards| moto.server(&["--shards", shards, "--bucket", "sluice-cycles"])).await;
}

// The write-ahead log on local disk, the data in a bucket: whatever was acknowledged is
// back after each kill -9, whether its runs had moved to the bucket or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_cycles_on_many_streams_lose_nothing_with_a_local_wal_before_s3() {
    let moto = Moto::start();
    moto.create_bucket("sluice-wal-cycles");
    let wal = tempfile::tempdir().expect("temp dir");
    let wal = wal.path().to_str().expect("utf-8 path").to_owned();
    kill_cycles(|shards| {
        moto.server(&[
            "--shards",
            shards,
            "--bucket",
            "sluice-wal-cycles",
            "--wal-local-root",
            wal.as_str(),
        ])
    })
    .await;
}

// The write-ahead log in a bucket of its own (`--wal-bucket`), the data in another: the
// same, with both on moto.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_cycles_on_many_streams_lose_nothing_with_a_wal_bucket() {
    let moto = Moto::start();
    moto.create_bucket("sluice-wal-main");
    moto.create_bucket("sluice-wal-fast");
    kill_cycles(|shards| {
        moto.server(&[
            "--shards",
            shards,
            "--bucket",
            "sluice-wal-main",
            "--wal-bucket",
            "sluice-wal-fast",
        ])
    })
    .await;
}

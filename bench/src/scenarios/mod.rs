//! The scenarios and what they share: the SDK client, throwaway basins, paced writers with
//! ack timing, verifying readers, and progress bars.

pub mod append;
pub mod catchup;
pub mod fanout;
pub mod latency;
pub mod streams;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use s2_sdk::append_session::{AppendSessionConfig, BatchSubmitTicket};
use s2_sdk::types::{
    AppendInput, AppendRecordBatch, AppendRetryPolicy, BasinConfig, BasinName, CreateBasinInput,
    CreateStreamInput, DeleteBasinInput, Http2Config, MeteredBytes, ReadFrom, ReadInput,
    ReadLimits, ReadSessionConfig, ReadStart, ReadStop, RetryConfig, S2Config, S2Endpoints,
    StreamConfig, StreamName,
};
use s2_sdk::{S2Basin, S2Stream, S2};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::report::{Latency, Outcome};
use crate::verify::{now_us, ChainVerifier, ChainWriter};

pub const MIB: u64 = 1024 * 1024;

/// HTTP/2 receive windows of the bench's client.
const STREAM_RECEIVE_WINDOW: u32 = 16 << 20;
const CONNECTION_RECEIVE_WINDOW: u32 = 64 << 20;

/// How long a reader may go without a record before it gives up.
const READ_IDLE: Duration = Duration::from_secs(30);

/// Tunables shared by all scenarios; unset ones take the (quick) defaults.
#[derive(Debug, Clone, clap::Args)]
pub struct Knobs {
    /// append: number of streams.
    #[arg(long, global = true, default_value_t = 10)]
    pub streams: usize,
    /// append: concurrent append sessions per stream.
    #[arg(long, global = true, default_value_t = 1)]
    pub sessions: usize,
    /// append, latency, fanout: metered size of each record in bytes.
    #[arg(long, global = true, default_value_t = 1024)]
    pub record_size: usize,
    /// append: records per batch.
    #[arg(long, global = true, default_value_t = 100)]
    pub batch: usize,
    /// append, latency, fanout: seconds to write for [default: 10, --quick: 3].
    #[arg(long, global = true)]
    pub duration: Option<f64>,
    /// append: total target rate in MiB/s across all sessions [default: unbounded].
    #[arg(long, global = true)]
    pub target_mibps: Option<f64>,
    /// latency: append rate in MiB/s.
    #[arg(long, global = true, default_value_t = 1.0)]
    pub latency_mibps: f64,
    /// catchup: MiB to prefill and read back [default: 64, --quick: 16].
    #[arg(long, global = true)]
    pub prefill_mib: Option<u64>,
    /// fanout: tailing readers [default: 100, --quick: 20].
    #[arg(long, global = true)]
    pub readers: Option<usize>,
    /// fanout: records per second the writer appends.
    #[arg(long, global = true, default_value_t = 200.0)]
    pub fanout_rate: f64,
    /// streams: streams to create [default: 10000, --quick: 1000].
    #[arg(long, global = true)]
    pub stream_count: Option<usize>,
    /// streams: creates in flight.
    #[arg(long, global = true, default_value_t = 64)]
    pub create_concurrency: usize,
    /// streams: append one record to each stream once it exists, then let the server idle
    /// and report its RSS (what touching many streams leaves in memory).
    #[arg(long, global = true)]
    pub touch: bool,
    /// append: first measure loopback TCP with iperf3 and report the append rate's share.
    #[arg(long, global = true)]
    pub iperf3: bool,
    /// The storage class of the streams the scenarios create (`express`, `standard`)
    /// [default: the server's].
    #[arg(long, global = true)]
    pub storage_class: Option<String>,
}

/// What a scenario runs against.
pub struct Ctx {
    pub client: S2,
    pub knobs: Knobs,
    pub quick: bool,
    /// The server's pid, for RSS readings.
    pub server_pid: Option<u32>,
    /// The request log of the moto the server writes to, to count its object writes.
    pub moto_log: Option<std::path::PathBuf>,
    /// The server's `{dir}`, whose peak size append entries report (with a write-ahead
    /// directory there, how much it held at most).
    pub data_dir: Option<std::path::PathBuf>,
}

impl Ctx {
    pub fn duration(&self) -> Duration {
        let default = if self.quick { 3.0 } else { 10.0 };
        Duration::from_secs_f64(self.knobs.duration.unwrap_or(default).max(0.1))
    }

    pub fn pick<T>(&self, set: Option<T>, normal: T, quick: T) -> T {
        set.unwrap_or(if self.quick { quick } else { normal })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Append,
    Latency,
    Catchup,
    Fanout,
    Streams,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Append,
        Scenario::Latency,
        Scenario::Catchup,
        Scenario::Fanout,
        Scenario::Streams,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Append => "append",
            Scenario::Latency => "latency",
            Scenario::Catchup => "catchup",
            Scenario::Fanout => "fanout",
            Scenario::Streams => "streams",
        }
    }
}

/// Runs one scenario in a basin of its own, deleting the basin afterwards. The outcome is
/// labelled `label`.
pub async fn run(ctx: &Ctx, label: &str, scenario: Scenario) -> Result<Outcome> {
    let basin = BenchBasin::create(
        &ctx.client,
        scenario.name(),
        ctx.knobs.storage_class.as_deref(),
    )
    .await?;
    let result = match scenario {
        Scenario::Append => append::run(ctx, &basin.basin).await,
        Scenario::Latency => latency::run(ctx, &basin.basin).await,
        Scenario::Catchup => catchup::run(ctx, &basin.basin).await,
        Scenario::Fanout => fanout::run(ctx, &basin.basin).await,
        Scenario::Streams => streams::run(ctx, &basin.basin).await,
    };
    basin.delete(&ctx.client).await;
    let mut outcome = result.map_err(|err| err.context(format!("scenario {label}")))?;
    outcome.scenario = label.to_owned();
    Ok(outcome)
}

/// An SDK client whose account and basin endpoints are both `endpoint`.
pub fn sdk_client(endpoint: &str) -> Result<S2> {
    let endpoint = endpoint.trim_end_matches('/');
    let endpoints = S2Endpoints::for_endpoint(endpoint)
        .map_err(|err| anyhow!("invalid endpoint {endpoint}: {err}"))?;
    // hyper's default receive windows (2 MiB per stream, 5 MiB per connection) capped
    // catch-up reads at what one window per round trip carries; larger ones take the
    // client out of the measurement.
    let http2 = Http2Config::new()
        .with_stream_receive_window(STREAM_RECEIVE_WINDOW)
        .and_then(|config| config.with_connection_receive_window(CONNECTION_RECEIVE_WINDOW))
        .map_err(|err| anyhow!("HTTP/2 settings: {err}"))?;
    let config = S2Config::new("bench")
        .with_endpoints(endpoints)
        .with_http2(http2)
        .with_connection_timeout(Duration::from_secs(10))
        .with_request_timeout(Duration::from_secs(30))
        // A retried append that had reached the server would show up as a duplicate and
        // fail verification; only retry when the SDK knows nothing was sent.
        .with_retry(RetryConfig::new().with_append_retry_policy(AppendRetryPolicy::NoSideEffects));
    S2::new(config).map_err(|err| anyhow!("cannot build the SDK client for {endpoint}: {err}"))
}

/// 16 random hex digits.
pub fn random_hex() -> String {
    format!("{:016x}", RandomState::new().build_hasher().finish())
}

pub fn stream_name(name: &str) -> Result<StreamName> {
    name.parse()
        .map_err(|err| anyhow!("invalid stream name {name:?}: {err}"))
}

pub async fn create_stream(basin: &S2Basin, name: &str) -> Result<S2Stream> {
    let parsed = stream_name(name)?;
    basin
        .create_stream(CreateStreamInput::new(parsed.clone()))
        .await
        .map_err(|err| anyhow!("create stream {name}: {err}"))?;
    Ok(basin.stream(parsed))
}

/// A basin named `bench-<scenario>-<random>`.
struct BenchBasin {
    name: BasinName,
    basin: S2Basin,
}

impl BenchBasin {
    /// With `storage_class`, the basin's streams default to it.
    async fn create(client: &S2, scenario: &str, storage_class: Option<&str>) -> Result<Self> {
        let raw = format!("bench-{scenario}-{}", &random_hex()[..8]);
        let name: BasinName = raw
            .parse()
            .map_err(|err| anyhow!("invalid basin name {raw}: {err}"))?;
        let mut input = CreateBasinInput::new(name.clone());
        if let Some(class) = storage_class {
            input = input.with_config(
                BasinConfig::new()
                    .with_default_stream_config(StreamConfig::new().with_storage_class(class)),
            );
        }
        client
            .create_basin(input)
            .await
            .map_err(|err| anyhow!("create basin {raw}: {err}"))?;
        Ok(Self {
            basin: client.basin(name.clone()),
            name,
        })
    }

    async fn delete(self, client: &S2) {
        if let Err(err) = client
            .delete_basin(DeleteBasinInput::new(self.name.clone()))
            .await
        {
            eprintln!("warning: cannot delete basin {}: {err}", self.name);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------

/// A bar on stderr counting up to `len` units.
pub fn counted_bar(label: &str, len: u64, unit: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{{prefix:>10}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} {{msg}}");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// A bar on stderr that fills over `duration`, showing `counter` (in `unit`) as it goes.
pub fn timed_bar(
    label: &str,
    duration: Duration,
    counter: Arc<AtomicU64>,
    unit: &'static str,
    divisor: u64,
) -> (ProgressBar, JoinHandle<()>) {
    let millis = duration.as_millis().max(1) as u64;
    let bar = ProgressBar::new(millis);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    let ticking = bar.clone();
    let started = Instant::now();
    let ticker = tokio::spawn(async move {
        loop {
            let elapsed = started.elapsed().as_millis() as u64;
            ticking.set_position(elapsed.min(millis));
            let count = counter.load(Ordering::Relaxed) / divisor.max(1);
            ticking.set_message(format!("{count} {unit}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (bar, ticker)
}

// ---------------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------------

/// What one writer (one append session) does.
pub struct WriterSpec {
    pub writer: u16,
    pub record_size: usize,
    pub batch_records: usize,
    /// Pace batches at this rate; `None` writes as fast as the session accepts.
    pub batches_per_sec: Option<f64>,
    /// Where in its pacing period this writer's batches fall, as a share of the period
    /// (0 to 1): writers spread over the period make a steady load, not one burst per
    /// period.
    pub phase: f64,
    /// Stop submitting at this instant.
    pub deadline: Option<Instant>,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    /// Cap on unacknowledged bytes in the session; `None` keeps the SDK's default (5 MiB).
    pub max_unacked_bytes: Option<u32>,
    /// Cap on appends awaiting acks in the session.
    pub max_unacked_batches: NonZeroU32,
}

impl WriterSpec {
    /// The lone writer of the latency and fan-out scenarios: one record per batch at
    /// `records_per_sec` until `deadline`.
    pub fn paced_records(record_size: usize, records_per_sec: f64, deadline: Instant) -> Self {
        Self {
            writer: 0,
            record_size,
            batch_records: 1,
            batches_per_sec: Some(records_per_sec),
            phase: 0.0,
            deadline: Some(deadline),
            max_records: None,
            max_unacked_bytes: None,
            max_unacked_batches: unacked_batches_per_session(1),
        }
    }
}

/// Appends awaiting acks across all sessions of one client (one HTTP/2 connection). Tiny
/// batches beyond this overrun the small-DATA-frame budget of hyper's HTTP/2 server (h2
/// 0.4.20: half the connection window), which then closes the connection with
/// ENHANCE_YOUR_CALM; every server tried does that.
pub const UNACKED_BATCHES_BUDGET: u32 = 2000;

/// One session's share of [`UNACKED_BATCHES_BUDGET`] when `writers` sessions share it.
pub fn unacked_batches_per_session(writers: usize) -> NonZeroU32 {
    let share = UNACKED_BATCHES_BUDGET / u32::try_from(writers).unwrap_or(u32::MAX).max(1);
    NonZeroU32::new(share.max(2)).expect("at least 2")
}

pub struct WriterResult {
    pub writer: u16,
    /// Submit-to-ack time per batch.
    pub acks: Latency,
    pub records: u64,
    pub bytes: u64,
}

struct Pending {
    ticket: BatchSubmitTicket,
    submitted: Instant,
    records: u64,
    bytes: u64,
}

/// Checks up front that batches of this shape are valid appends.
pub fn check_batch_shape(record_size: usize, batch_records: usize) -> Result<()> {
    if !(1..=1000).contains(&batch_records) {
        bail!("a batch holds 1 to 1000 records, not {batch_records}");
    }
    if (record_size as u64) * (batch_records as u64) > MIB {
        bail!("{batch_records} records of {record_size} bytes exceed the 1 MiB batch limit");
    }
    ChainWriter::new(0, record_size).map(|_| ())
}

/// Appends chained records to `stream` through one append session until the spec says stop,
/// then closes the session. `acked_bytes` grows as acks arrive.
pub async fn run_writer(
    stream: S2Stream,
    name: String,
    spec: WriterSpec,
    acked_bytes: Arc<AtomicU64>,
) -> Result<WriterResult> {
    let mut chain = ChainWriter::new(spec.writer, spec.record_size)?;
    let mut config = AppendSessionConfig::new().with_max_unacked_batches(spec.max_unacked_batches);
    if let Some(bytes) = spec.max_unacked_bytes {
        config = config
            .with_max_unacked_bytes(bytes)
            .map_err(|err| anyhow!("append session on stream {name}: {err}"))?;
    }
    let session = stream.append_session(config);

    // Acks arrive in submission order, so one task awaiting tickets in order sees each as
    // soon as it lands.
    let (pending_tx, mut pending_rx) = mpsc::unbounded_channel::<Pending>();
    let acker_name = name.clone();
    let acker = tokio::spawn(async move {
        let mut acks = Latency::new();
        while let Some(pending) = pending_rx.recv().await {
            let ack = pending
                .ticket
                .await
                .map_err(|err| anyhow!("append to stream {acker_name}: {err}"))?;
            acks.record(pending.submitted.elapsed());
            let covered = ack.end.seq_num.saturating_sub(ack.start.seq_num);
            if covered != pending.records {
                bail!(
                    "stream {acker_name}: the ack of a {}-record batch covers {covered} \
                     records (seq_num {}..{})",
                    pending.records,
                    ack.start.seq_num,
                    ack.end.seq_num
                );
            }
            acked_bytes.fetch_add(pending.bytes, Ordering::Relaxed);
        }
        Ok::<Latency, anyhow::Error>(acks)
    });

    let started = Instant::now();
    let mut batches: u64 = 0;
    let mut submit_error = None;
    loop {
        if spec
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            break;
        }
        let remaining = spec
            .max_records
            .map_or(u64::MAX, |max| max.saturating_sub(chain.count()));
        if remaining == 0 {
            break;
        }
        if let Some(rate) = spec.batches_per_sec {
            let due = started + Duration::from_secs_f64((batches as f64 + spec.phase) / rate);
            if spec.deadline.is_some_and(|deadline| due >= deadline) {
                break;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        let count = (spec.batch_records as u64).min(remaining);
        let bytes = count * spec.record_size as u64;
        // Reserve first, so the records' send times exclude waiting for capacity.
        let permit = match session.reserve(bytes as u32).await {
            Ok(permit) => permit,
            Err(err) => {
                submit_error = Some(anyhow!("append session on stream {name}: {err}"));
                break;
            }
        };
        let sent_us = now_us();
        let records = (0..count)
            .map(|_| chain.next_record(sent_us))
            .collect::<Result<Vec<_>>>()?;
        let batch = AppendRecordBatch::try_from_iter(records)
            .map_err(|err| anyhow!("invalid batch for stream {name}: {err}"))?;
        if batch.metered_bytes() as u64 != bytes {
            bail!(
                "batch for stream {name} meters {} bytes, expected {bytes}",
                batch.metered_bytes()
            );
        }
        let submitted = Instant::now();
        let ticket = permit.submit(AppendInput::new(batch));
        let pending = Pending {
            ticket,
            submitted,
            records: count,
            bytes,
        };
        if pending_tx.send(pending).is_err() {
            // The ack task stopped; its error is reported below.
            break;
        }
        batches += 1;
    }
    drop(pending_tx);

    let closed = session.close().await;
    let acks = acker
        .await
        .map_err(|err| anyhow!("ack task for stream {name}: {err}"))??;
    if let Some(err) = submit_error {
        return Err(err);
    }
    closed.map_err(|err| anyhow!("close the append session on stream {name}: {err}"))?;
    Ok(WriterResult {
        writer: spec.writer,
        acks,
        records: chain.count(),
        bytes: chain.count() * spec.record_size as u64,
    })
}

// ---------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------

pub struct ReaderResult {
    /// Send-to-delivery time per record.
    pub deliveries: Latency,
    pub records: u64,
    pub bytes: u64,
    /// A session failure (not a verification failure, which is returned as an error).
    pub error: Option<String>,
}

/// Tails `stream` from seq_num 0 (the stream is empty when it starts) with a read session,
/// verifying the chain of writer 0, until it has seen the total the writer reports through
/// `total`. Signals `ready` once the session is open (or failed to open).
pub async fn tail_reader(
    stream: S2Stream,
    name: String,
    ready: mpsc::Sender<()>,
    mut total: watch::Receiver<Option<u64>>,
    delivered: Arc<AtomicU64>,
) -> Result<ReaderResult> {
    let mut result = ReaderResult {
        deliveries: Latency::new(),
        records: 0,
        bytes: 0,
        error: None,
    };
    let input = ReadInput::new().with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0)));
    let opened = stream.read_session(input, ReadSessionConfig::new()).await;
    let _ = ready.send(()).await;
    let mut session = match opened {
        Ok(session) => Box::pin(session),
        Err(err) => {
            result.error = Some(format!("stream {name}: cannot open a read session: {err}"));
            return Ok(result);
        }
    };

    let mut verifier = ChainVerifier::new(name.clone(), 0);
    let mut expected: Option<u64> = None;
    loop {
        if expected.is_none() {
            expected = *total.borrow_and_update();
        }
        if expected.is_some_and(|expected| result.records >= expected) {
            break;
        }
        let item = tokio::select! {
            changed = total.changed(), if expected.is_none() => {
                if changed.is_err() {
                    result.error = Some(format!("stream {name}: the writer went away"));
                    break;
                }
                continue
            }
            item = tokio::time::timeout(READ_IDLE, session.next()) => item,
        };
        match item {
            Err(_) => {
                result.error = Some(format!(
                    "stream {name}: no record for {READ_IDLE:?} after {} records",
                    result.records
                ));
                break;
            }
            Ok(None) => {
                result.error = Some(format!(
                    "stream {name}: the read session ended after {} records",
                    result.records
                ));
                break;
            }
            Ok(Some(Err(err))) => {
                result.error = Some(format!(
                    "stream {name}: read session failed after {} records: {err}",
                    result.records
                ));
                break;
            }
            Ok(Some(Ok(batch))) => {
                let now = now_us();
                for record in &batch.records {
                    let sent = verifier.check(record)?;
                    result.deliveries.record_us(now.saturating_sub(sent));
                    result.records += 1;
                    result.bytes += record.metered_bytes() as u64;
                }
                delivered.fetch_add(batch.records.len() as u64, Ordering::Relaxed);
            }
        }
    }
    if result.error.is_none() {
        verifier.finish(&[(0, expected.unwrap_or(0))])?;
    }
    Ok(result)
}

/// Reads exactly `count` records from seq_num 0 with a bounded read session (no waiting),
/// verifying sequence numbers, chains and per-writer counts. Returns the metered bytes read.
pub async fn read_back(
    stream: &S2Stream,
    name: &str,
    count: u64,
    writers: &[(u16, u64)],
    bar: &ProgressBar,
) -> Result<u64> {
    let mut verifier = ChainVerifier::new(name, 0);
    let mut got: u64 = 0;
    let mut bytes: u64 = 0;
    if count > 0 {
        let input = ReadInput::new()
            .with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0)))
            .with_stop(
                ReadStop::new()
                    .with_limits(ReadLimits::new().with_count(count as usize))
                    .with_wait(0),
            );
        let session = stream
            .read_session(input, ReadSessionConfig::new())
            .await
            .map_err(|err| anyhow!("stream {name}: cannot open a read session: {err}"))?;
        let mut session = Box::pin(session);
        while got < count {
            let batch = match tokio::time::timeout(READ_IDLE, session.next()).await {
                Err(_) => {
                    bail!("stream {name}: no record for {READ_IDLE:?} after {got} of {count}")
                }
                Ok(None) => bail!(
                    "verification failed (count): stream {name}: the read ended after \
                     {got} records, expected {count}"
                ),
                Ok(Some(Err(err))) => {
                    bail!("stream {name}: read failed after {got} of {count} records: {err}")
                }
                Ok(Some(Ok(batch))) => batch,
            };
            for record in &batch.records {
                verifier.check(record)?;
                bytes += record.metered_bytes() as u64;
            }
            got += batch.records.len() as u64;
            bar.inc(batch.records.len() as u64);
        }
    }
    verifier.finish(writers)?;
    Ok(bytes)
}

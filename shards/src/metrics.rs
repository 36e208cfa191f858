//! What the server counts, and its Prometheus text exposition.
//!
//! One [`Metrics`] holds the registry. Every shard records into its own [`ShardMetrics`]:
//! thread-local counters and histograms (plain cells, no atomics) that are flushed into
//! the registry only when `/metrics` is scraped, when the scraping shard asks every shard
//! to flush. So the hot paths never touch a cache line another core writes, and a scrape
//! sees everything recorded before it. Gauges (sessions, streamers, in-flight bytes) are
//! per-shard children, set or moved only by their own shard. The storage sidecar records
//! its operation latencies directly: they are its own threads' work.
//!
//! Labels are bounded: `shard`, an API kind, a storage operation or a background job;
//! never a basin or a stream. The four `s2_*` histograms carry the names, buckets and
//! (absent) labels that `s2 lite` exports, so a dashboard built for it works here.

use std::time::Duration;

use prometheus::core::{AtomicF64, AtomicI64, GenericCounter, GenericGauge};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::placement::ShardId;

/// Seconds buckets of Sluice's own latency histograms: acks take well under a millisecond
/// in memory and tens of milliseconds on S3.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// The buckets `s2 lite` uses for its latency histograms.
/// Rows per scan: the engine's page sizes are among the bounds, so a scan larger than its
/// page shows.
const SCAN_ROWS_BUCKETS: &[f64] = &[1.0, 16.0, 256.0, 1000.0, 4096.0, 5000.0, 10_000.0, 65_536.0];
const S2_SECONDS_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
const S2_BATCH_RECORDS_BUCKETS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
const S2_BATCH_BYTES_BUCKETS: &[f64] = &[
    512.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 524288.0, 1048576.0,
];

/// How an append arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendKind {
    Unary,
    S2s,
}

impl AppendKind {
    const ALL: [AppendKind; 2] = [AppendKind::Unary, AppendKind::S2s];

    fn label(self) -> &'static str {
        match self {
            AppendKind::Unary => "unary",
            AppendKind::S2s => "s2s",
        }
    }
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    Unary,
    Sse,
    S2s,
}

impl ReadKind {
    const ALL: [ReadKind; 3] = [ReadKind::Unary, ReadKind::Sse, ReadKind::S2s];

    fn label(self) -> &'static str {
        match self {
            ReadKind::Unary => "unary",
            ReadKind::Sse => "sse",
            ReadKind::S2s => "s2s",
        }
    }
}

/// A long-lived session a client holds open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    AppendS2s,
    ReadSse,
    ReadS2s,
}

impl SessionKind {
    const ALL: [SessionKind; 3] = [
        SessionKind::AppendS2s,
        SessionKind::ReadSse,
        SessionKind::ReadS2s,
    ];

    fn label(self) -> &'static str {
        match self {
            SessionKind::AppendS2s => "append_s2s",
            SessionKind::ReadSse => "read_sse",
            SessionKind::ReadS2s => "read_s2s",
        }
    }
}

/// One operation of the storage sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    DbGet,
    DbScan,
    /// A batch applied to the memtable; durable later with the next write.
    DbApply,
    /// A batch written and made durable.
    DbWrite,
    ObjectPut,
    ObjectGet,
    ObjectDelete,
    ObjectList,
}

impl StorageOp {
    const ALL: [StorageOp; 8] = [
        StorageOp::DbGet,
        StorageOp::DbScan,
        StorageOp::DbApply,
        StorageOp::DbWrite,
        StorageOp::ObjectPut,
        StorageOp::ObjectGet,
        StorageOp::ObjectDelete,
        StorageOp::ObjectList,
    ];

    fn label(self) -> &'static str {
        match self {
            StorageOp::DbGet => "slatedb_get",
            StorageOp::DbScan => "slatedb_scan",
            StorageOp::DbApply => "slatedb_apply",
            StorageOp::DbWrite => "slatedb_write",
            StorageOp::ObjectPut => "object_put",
            StorageOp::ObjectGet => "object_get",
            StorageOp::ObjectDelete => "object_delete",
            StorageOp::ObjectList => "object_list",
        }
    }
}

/// Background work that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Records below a trim point removed from the index.
    TrimCleanup,
    StreamDeletion,
    BasinDeletion,
    /// A segment object with nothing live in it deleted.
    SegmentDeleted,
    /// A mostly dead segment's live runs copied out and the segment deleted.
    SegmentCompacted,
    /// A page of segment records swept.
    SweepPage,
    /// A page of the segment listing checked for orphans.
    OrphanPage,
    /// A due delete-on-empty check.
    DeleteOnEmptyCheck,
}

impl Job {
    const ALL: [Job; 8] = [
        Job::TrimCleanup,
        Job::StreamDeletion,
        Job::BasinDeletion,
        Job::SegmentDeleted,
        Job::SegmentCompacted,
        Job::SweepPage,
        Job::OrphanPage,
        Job::DeleteOnEmptyCheck,
    ];

    fn label(self) -> &'static str {
        match self {
            Job::TrimCleanup => "trim_cleanup",
            Job::StreamDeletion => "stream_deletion",
            Job::BasinDeletion => "basin_deletion",
            Job::SegmentDeleted => "segment_deleted",
            Job::SegmentCompacted => "segment_compacted",
            Job::SweepPage => "sweep_page",
            Job::OrphanPage => "orphan_page",
            Job::DeleteOnEmptyCheck => "delete_on_empty_check",
        }
    }
}

/// The registry and its metric families.
pub struct Metrics {
    registry: Registry,
    shards: prometheus::IntGauge,
    append_records: IntCounterVec,
    append_bytes: IntCounterVec,
    append_batches: IntCounterVec,
    read_records: IntCounterVec,
    read_bytes: IntCounterVec,
    read_batches: IntCounterVec,
    ack_seconds: HistogramVec,
    durable_seconds: HistogramVec,
    admission_wait_seconds: HistogramVec,
    inflight_bytes: IntGaugeVec,
    sessions: IntGaugeVec,
    followers: IntGaugeVec,
    streamers: IntGaugeVec,
    tokens_cached: IntGaugeVec,
    inbox_depth: IntGaugeVec,
    jobs_running: IntGaugeVec,
    busy_seconds: prometheus::CounterVec,
    jobs: IntCounterVec,
    job_failures: IntCounterVec,
    reclaimed_bytes: IntCounterVec,
    storage_seconds: HistogramVec,
    storage_errors: IntCounterVec,
    scan_rows: Histogram,
    s2_permit: Histogram,
    s2_ack: Histogram,
    s2_batch_records: Histogram,
    s2_batch_bytes: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let metric = Histogram::with_opts(opts).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let shard_kind = &["shard", "kind"];
        let shard = &["shard"];
        let busy_seconds = prometheus::CounterVec::new(
            Opts::new(
                "sluice_shard_busy_seconds_total",
                "Time each shard's executor spent running tasks and polling for I/O.",
            ),
            shard,
        )
        .expect("valid metric");
        r.register(Box::new(busy_seconds.clone()))
            .expect("unique metric");
        // Process CPU, memory, file descriptors and threads, under the standard names.
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric");
        let shards =
            prometheus::IntGauge::new("sluice_shards", "Number of shards.").expect("valid metric");
        r.register(Box::new(shards.clone())).expect("unique metric");
        Metrics {
            shards,
            append_records: counter_vec(
                &r,
                "sluice_append_records_total",
                "Records appended and acknowledged, by the shard that served the request.",
                shard_kind,
            ),
            append_bytes: counter_vec(
                &r,
                "sluice_append_metered_bytes_total",
                "Metered bytes appended and acknowledged.",
                shard_kind,
            ),
            append_batches: counter_vec(
                &r,
                "sluice_append_batches_total",
                "Append batches acknowledged.",
                shard_kind,
            ),
            read_records: counter_vec(
                &r,
                "sluice_read_records_total",
                "Records sent to readers.",
                shard_kind,
            ),
            read_bytes: counter_vec(
                &r,
                "sluice_read_metered_bytes_total",
                "Metered bytes sent to readers.",
                shard_kind,
            ),
            read_batches: counter_vec(
                &r,
                "sluice_read_batches_total",
                "Read batches sent (unary responses, SSE batch events, S2S messages).",
                shard_kind,
            ),
            ack_seconds: histogram_vec(
                &r,
                "sluice_append_ack_seconds",
                "From an append batch's arrival to its acknowledgement.",
                shard,
                SECONDS_BUCKETS,
            ),
            durable_seconds: histogram_vec(
                &r,
                "sluice_append_durable_seconds",
                "From an append's sequencing on its owner to its segment and index being durable.",
                shard,
                SECONDS_BUCKETS,
            ),
            admission_wait_seconds: histogram_vec(
                &r,
                "sluice_append_admission_wait_seconds",
                "Time appends waited for room in the owner's in-flight byte budget.",
                shard,
                SECONDS_BUCKETS,
            ),
            inflight_bytes: gauge_vec(
                &r,
                "sluice_append_inflight_bytes",
                "Metered bytes of appends admitted and not yet acknowledged, by owner shard.",
                shard,
            ),
            sessions: gauge_vec(
                &r,
                "sluice_sessions_open",
                "Open append and read sessions.",
                shard_kind,
            ),
            followers: gauge_vec(
                &r,
                "sluice_followers",
                "Read sessions tailing a stream live, by owner shard.",
                shard,
            ),
            streamers: gauge_vec(
                &r,
                "sluice_streamers_loaded",
                "Streams whose state a shard holds in memory.",
                shard,
            ),
            tokens_cached: gauge_vec(
                &r,
                "sluice_tokens_cached",
                "Verified access tokens a shard remembers.",
                shard,
            ),
            inbox_depth: gauge_vec(
                &r,
                "sluice_shard_inbox_depth",
                "Jobs from other shards waiting in a shard's inbox.",
                shard,
            ),
            jobs_running: gauge_vec(
                &r,
                "sluice_shard_jobs_running",
                "Jobs from other shards a shard is running (bounded; the rest wait in its inbox).",
                shard,
            ),
            busy_seconds,
            jobs: counter_vec(
                &r,
                "sluice_background_jobs_total",
                "Background work finished.",
                &["shard", "job"],
            ),
            job_failures: counter_vec(
                &r,
                "sluice_background_failures_total",
                "Background work that failed and will be tried again later, with backoff.",
                &["shard", "job"],
            ),
            reclaimed_bytes: counter_vec(
                &r,
                "sluice_reclaimed_bytes_total",
                "Bytes of segment objects deleted by the reclaimer.",
                shard,
            ),
            storage_seconds: histogram_vec(
                &r,
                "sluice_storage_operation_seconds",
                "Latency of storage operations: SlateDB reads and writes, object store requests.",
                &["op"],
                SECONDS_BUCKETS,
            ),
            storage_errors: counter_vec(
                &r,
                "sluice_storage_operation_errors_total",
                "Storage operations that failed.",
                &["op"],
            ),
            scan_rows: {
                let opts = HistogramOpts::new(
                    "sluice_storage_scan_rows",
                    "Rows one scan of the database returned: every scan is paged, and its bucket bounds are the page sizes.",
                )
                .buckets(SCAN_ROWS_BUCKETS.to_vec());
                let metric = Histogram::with_opts(opts).expect("valid metric");
                r.register(Box::new(metric.clone())).expect("unique metric");
                metric
            },
            s2_permit: histogram(
                &r,
                "s2_append_permit_latency_seconds",
                "Append permit latency in seconds",
                S2_SECONDS_BUCKETS,
            ),
            s2_ack: histogram(
                &r,
                "s2_append_ack_latency_seconds",
                "Append ack latency in seconds",
                S2_SECONDS_BUCKETS,
            ),
            s2_batch_records: histogram(
                &r,
                "s2_append_batch_records",
                "Append batch size in number of records",
                S2_BATCH_RECORDS_BUCKETS,
            ),
            s2_batch_bytes: histogram(
                &r,
                "s2_append_batch_bytes",
                "Append batch size in bytes",
                S2_BATCH_BYTES_BUCKETS,
            ),
            registry: r,
        }
    }

    /// The recorder of shard `id`; call once per shard, on that shard's thread.
    pub fn shard(&self, id: ShardId) -> ShardMetrics {
        let s = id.to_string();
        let local = |vec: &IntCounterVec, kind: &str| vec.with_label_values(&[&s, kind]).local();
        let api =
            |records: &IntCounterVec, bytes: &IntCounterVec, batches: &IntCounterVec, kind| {
                ApiCounters {
                    records: local(records, kind),
                    bytes: local(bytes, kind),
                    batches: local(batches, kind),
                }
            };
        ShardMetrics {
            append: AppendKind::ALL.map(|k| {
                api(
                    &self.append_records,
                    &self.append_bytes,
                    &self.append_batches,
                    k.label(),
                )
            }),
            read: ReadKind::ALL.map(|k| {
                api(
                    &self.read_records,
                    &self.read_bytes,
                    &self.read_batches,
                    k.label(),
                )
            }),
            ack_seconds: self.ack_seconds.with_label_values(&[&s]).local(),
            durable_seconds: self.durable_seconds.with_label_values(&[&s]).local(),
            admission_wait_seconds: self.admission_wait_seconds.with_label_values(&[&s]).local(),
            inflight_bytes: self.inflight_bytes.with_label_values(&[&s]),
            sessions: SessionKind::ALL.map(|k| self.sessions.with_label_values(&[&s, k.label()])),
            followers: self.followers.with_label_values(&[&s]),
            streamers: self.streamers.with_label_values(&[&s]),
            tokens_cached: self.tokens_cached.with_label_values(&[&s]),
            inbox_depth: self.inbox_depth.with_label_values(&[&s]),
            jobs_running: self.jobs_running.with_label_values(&[&s]),
            busy_seconds: self.busy_seconds.with_label_values(&[&s]),
            jobs: Job::ALL.map(|j| self.jobs.with_label_values(&[&s, j.label()]).local()),
            job_failures: Job::ALL.map(|j| {
                self.job_failures
                    .with_label_values(&[&s, j.label()])
                    .local()
            }),
            reclaimed_bytes: self.reclaimed_bytes.with_label_values(&[&s]).local(),
            s2_permit: self.s2_permit.local(),
            s2_ack: self.s2_ack.local(),
            s2_batch_records: self.s2_batch_records.local(),
            s2_batch_bytes: self.s2_batch_bytes.local(),
        }
    }

    /// The sidecar's recorder.
    pub fn storage(&self) -> StorageMetrics {
        StorageMetrics {
            seconds: StorageOp::ALL.map(|op| self.storage_seconds.with_label_values(&[op.label()])),
            errors: StorageOp::ALL.map(|op| self.storage_errors.with_label_values(&[op.label()])),
            scan_rows: self.scan_rows.clone(),
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of everything flushed so far, from a
    /// server of `shard_count` shards.
    pub fn encode(&self, shard_count: usize) -> String {
        self.shards.set(shard_count as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into memory cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

struct ApiCounters {
    records: LocalIntCounter,
    bytes: LocalIntCounter,
    batches: LocalIntCounter,
}

impl ApiCounters {
    fn add(&self, records: u64, bytes: u64) {
        self.records.inc_by(records);
        self.bytes.inc_by(bytes);
        self.batches.inc();
    }

    fn flush(&self) {
        self.records.flush();
        self.bytes.flush();
        self.batches.flush();
    }
}

/// One shard's recorder. Not `Send`: it lives on its shard.
pub struct ShardMetrics {
    append: [ApiCounters; 2],
    read: [ApiCounters; 3],
    ack_seconds: LocalHistogram,
    durable_seconds: LocalHistogram,
    admission_wait_seconds: LocalHistogram,
    inflight_bytes: GenericGauge<AtomicI64>,
    sessions: [GenericGauge<AtomicI64>; 3],
    followers: GenericGauge<AtomicI64>,
    streamers: GenericGauge<AtomicI64>,
    tokens_cached: GenericGauge<AtomicI64>,
    inbox_depth: GenericGauge<AtomicI64>,
    jobs_running: GenericGauge<AtomicI64>,
    busy_seconds: GenericCounter<AtomicF64>,
    jobs: [LocalIntCounter; 8],
    job_failures: [LocalIntCounter; 8],
    reclaimed_bytes: LocalIntCounter,
    s2_permit: LocalHistogram,
    s2_ack: LocalHistogram,
    s2_batch_records: LocalHistogram,
    s2_batch_bytes: LocalHistogram,
}

/// What a shard reports of its state when it flushes.
pub struct ShardGauges {
    pub inflight_bytes: u64,
    pub followers: usize,
    pub streamers: usize,
    pub tokens_cached: usize,
    pub inbox_depth: usize,
    /// Executor time since the previous flush.
    pub busy: Duration,
}

impl ShardMetrics {
    /// An append batch of `records` records and `bytes` metered bytes was acknowledged
    /// `elapsed` after it arrived.
    pub fn appended(&self, kind: AppendKind, records: u64, bytes: u64, elapsed: Duration) {
        self.append[kind as usize].add(records, bytes);
        let seconds = elapsed.as_secs_f64();
        self.ack_seconds.observe(seconds);
        self.s2_ack.observe(seconds);
        self.s2_batch_records.observe(records as f64);
        self.s2_batch_bytes.observe(bytes as f64);
    }

    /// A batch of `records` records and `bytes` metered bytes went to a reader.
    pub fn read(&self, kind: ReadKind, records: u64, bytes: u64) {
        self.read[kind as usize].add(records, bytes);
    }

    /// An append waited `waited` for admission.
    pub fn admitted(&self, waited: Duration) {
        let seconds = waited.as_secs_f64();
        self.admission_wait_seconds.observe(seconds);
        self.s2_permit.observe(seconds);
    }

    /// An append became durable `elapsed` after it was sequenced.
    pub fn durable(&self, elapsed: Duration) {
        self.durable_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn job_done(&self, job: Job) {
        self.jobs[job as usize].inc();
    }

    pub fn job_failed(&self, job: Job) {
        self.job_failures[job as usize].inc();
    }

    pub fn reclaimed(&self, bytes: u64) {
        self.reclaimed_bytes.inc_by(bytes);
    }

    /// Count a job from another shard as running until the returned guard drops. Moved as
    /// it happens rather than at flush: a scrape is itself a job, and waits behind them.
    pub fn job_started(&self) -> JobGuard {
        self.jobs_running.inc();
        JobGuard(self.jobs_running.clone())
    }

    /// Count a session as open until the returned guard drops.
    pub fn session(&self, kind: SessionKind) -> SessionGuard {
        let gauge = self.sessions[kind as usize].clone();
        gauge.inc();
        SessionGuard(gauge)
    }

    /// Move what this shard recorded into the registry, and set its gauges.
    pub fn flush(&self, gauges: ShardGauges) {
        self.append.iter().for_each(ApiCounters::flush);
        self.read.iter().for_each(ApiCounters::flush);
        for h in [
            &self.ack_seconds,
            &self.durable_seconds,
            &self.admission_wait_seconds,
            &self.s2_permit,
            &self.s2_ack,
            &self.s2_batch_records,
            &self.s2_batch_bytes,
        ] {
            h.flush();
        }
        self.jobs.iter().for_each(LocalIntCounter::flush);
        self.job_failures.iter().for_each(LocalIntCounter::flush);
        self.reclaimed_bytes.flush();
        let as_gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.inflight_bytes.set(as_gauge(gauges.inflight_bytes));
        self.followers.set(as_gauge(gauges.followers as u64));
        self.streamers.set(as_gauge(gauges.streamers as u64));
        self.tokens_cached
            .set(as_gauge(gauges.tokens_cached as u64));
        self.inbox_depth.set(as_gauge(gauges.inbox_depth as u64));
        self.busy_seconds.inc_by(gauges.busy.as_secs_f64());
    }
}

/// Holds a job in `sluice_shard_jobs_running`.
pub struct JobGuard(GenericGauge<AtomicI64>);

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Holds a session open in `sluice_sessions_open`.
pub struct SessionGuard(GenericGauge<AtomicI64>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The sidecar's recorder of storage operations.
#[derive(Clone)]
pub struct StorageMetrics {
    seconds: [Histogram; 8],
    errors: [prometheus::IntCounter; 8],
    scan_rows: Histogram,
}

impl StorageMetrics {
    pub fn record(&self, op: StorageOp, elapsed: Duration, ok: bool) {
        self.seconds[op as usize].observe(elapsed.as_secs_f64());
        if !ok {
            self.errors[op as usize].inc();
        }
    }

    pub fn scanned(&self, rows: usize) {
        self.scan_rows.observe(rows as f64);
    }
}

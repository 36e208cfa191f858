//! The storage sidecar: one tokio runtime hosting one SlateDB [`Db`] for the whole server,
//! and the object store under it, which also holds the shards' segments.
//!
//! Shard threads never touch SlateDB or the object store directly. They call [`Storage`],
//! which spawns the work onto the sidecar runtime and awaits its join handle; glommio wakes
//! the awaiting task when the tokio thread completes it. Nothing here blocks a shard
//! thread.

pub mod keys;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3ConfigKey;
use object_store::path::Path;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use slatedb::config::{FlushOptions, FlushType, ScanOptions, Settings};
use slatedb::{CompactorBuilder, Db, WriteBatch};
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::error::StorageError;
use crate::metrics::{Metrics, StorageMetrics, StorageOp};
use crate::segments::log::commit;
use crate::segments::SegmentId;

/// Where the object store lives.
#[derive(Debug, Clone)]
pub enum StorageLocation {
    /// Gone when the process exits; the same durable-write path all the same.
    Memory,
    /// A local directory; every object write is fsynced with its directory.
    Local(PathBuf),
    /// An S3-compatible bucket configured by the standard AWS environment.
    S3 {
        bucket: String,
        path: Option<String>,
    },
}

/// Where the log's commits are written and acknowledged, when not with the data at rest:
/// a write-ahead store (`--wal-local-root`, `--wal-bucket`).
#[derive(Debug, Clone)]
pub enum WalLocation {
    Local(PathBuf),
    /// Configured as the main bucket is, but for the `S2LITE_WAL_AWS_*` overrides that
    /// `s2 lite` reads: endpoint, region and static credentials.
    S3 {
        bucket: String,
    },
}

/// The environment overrides of a WAL bucket's configuration, named as `s2 lite` names them.
const WAL_AWS_OVERRIDES: [(&str, AmazonS3ConfigKey); 5] = [
    (
        "S2LITE_WAL_AWS_ENDPOINT_URL_S3",
        AmazonS3ConfigKey::Endpoint,
    ),
    ("S2LITE_WAL_AWS_REGION", AmazonS3ConfigKey::Region),
    (
        "S2LITE_WAL_AWS_ACCESS_KEY_ID",
        AmazonS3ConfigKey::AccessKeyId,
    ),
    (
        "S2LITE_WAL_AWS_SECRET_ACCESS_KEY",
        AmazonS3ConfigKey::SecretAccessKey,
    ),
    ("S2LITE_WAL_AWS_SESSION_TOKEN", AmazonS3ConfigKey::Token),
];

/// Prefix of the environment variables that override SlateDB [`Settings`].
pub const SLATEDB_ENV_PREFIX: &str = "SL8_";

/// How long what the log's committer applies to the index may wait to be made durable:
/// start-up replays the commits after the durable watermark, so this bounds that work, and
/// it is the only cadence of SlateDB's own object writes under appends (decision 0011).
/// Also SlateDB's periodic WAL flush, when `SL8_FLUSH_INTERVAL` is not set. Durable writes
/// do not wait for it: each wakes the flusher (below), which flushes at once and carries
/// whatever arrived meanwhile.
pub const INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Longest any one storage operation (a read, a durable write, a commit PUT or a GET) is
/// waited for before it is answered `unavailable`. The operation is cancelled; a write
/// already handed to SlateDB stays queued and lands once the store is back. What that
/// means for an append is [`APPEND_ANSWER_MAX`]. SlateDB's own retries stay unbounded on
/// purpose: its WAL flushes must land once the store is back, without a restart.
pub const STORE_WAIT_MAX: Duration = Duration::from_secs(4);

/// Longest an admitted append waits for its answer, ack or error, however the store fails:
/// its commit starts within one [`STORE_WAIT_MAX`] (with `COMMITS_IN_FLIGHT_MAX` commits in
/// flight, the oldest, which started before the append arrived, is answered within it) and
/// takes every run waiting (`COMMIT_BYTES_MAX` is above the largest admission budget a
/// shard has by default), its PUT is answered within another, and the commit spacing and
/// the seal wait add well under a second. Not counted: the index applies that follow, which
/// are memtable writes and wait only while SlateDB holds writes back (each is cancelled
/// after `STORE_WAIT_MAX`, and then the log halts until a restart: decision 0011).
pub const APPEND_ANSWER_MAX: Duration = Duration::from_secs(2 * 4 + 1);

/// Longest one listing of log objects may take (start-up replay's, of the commits above
/// the durable watermark).
const LIST_WAIT_MAX: Duration = Duration::from_secs(60);

/// Each attempt to connect to an S3 endpoint gives up after this, so that an endpoint that
/// does not answer at all is retried within [`STORE_WAIT_MAX`] instead of hanging it.
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The S3 client's retries: its default backoff grows to 15 s between attempts, so a
/// request that kept failing through an outage could sleep that long after the store is
/// back; capped at 1 s, SlateDB's queued uploads land within about a second of it.
fn s3_retries() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(30),
    }
}

/// How often the object store is probed for `/health`, and how long a probe may take.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Blocks a bounded scan fetches concurrently.
const SCAN_FETCH_TASKS: usize = 4;

/// The data directory inside the object store (the bucket's `--path`, if any, goes before it).
pub const DB_PATH: &str = "sluice";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("slatedb: {0}")]
    Db(#[from] slatedb::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Owns the sidecar runtime and the database. Lives on the boot thread.
pub struct Sidecar {
    runtime: tokio::runtime::Runtime,
    background: tokio::runtime::Runtime,
    db: Arc<Db>,
    flush_wanted: Arc<Notify>,
    segments: Arc<SegmentStore>,
    log: Arc<SegmentStore>,
    marks: Arc<LogMarks>,
    health: Arc<StoreHealth>,
    metrics: Arc<Metrics>,
}

/// Where segment objects live, and how new ones are named: `<db path>-segments/` then the
/// segment id in hex as `<boot id>/<counter>`. A random boot id per process start keeps
/// names unique across restarts without any shared state, and nothing in a name depends on
/// the shard count.
struct SegmentStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    boot_id: u64,
    next: AtomicU64,
}

impl SegmentStore {
    fn path(&self, id: SegmentId) -> Path {
        let hi = (id.0 >> 64) as u64;
        let lo = id.0 as u64;
        self.root
            .clone()
            .join(format!("{hi:016x}").as_str())
            .join(format!("{lo:016x}").as_str())
    }

    /// The id of an object path under the root, if it is one of ours.
    fn id_of(&self, path: &Path) -> Option<SegmentId> {
        let mut parts = path.prefix_match(&self.root)?;
        let hi = u64::from_str_radix(parts.next()?.as_ref(), 16).ok()?;
        let lo = u64::from_str_radix(parts.next()?.as_ref(), 16).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(SegmentId(u128::from(hi) << 64 | u128::from(lo)))
    }
}

/// How far the log is indexed: the last position whose index batch was applied, and the
/// last one known durable. Written on the sidecar, read by the reclaimer and cleanups.
#[derive(Debug, Default)]
struct LogMarks {
    applied: AtomicU64,
    durable: AtomicU64,
    /// Bytes of commits in a write-ahead store apart from the main one, not yet deleted.
    wal_bytes: AtomicU64,
}

/// Group commit: flush the WAL as soon as a durable write is applied. While one flush is
/// in flight, later writes wait for the next, so a busy server flushes back to back with
/// large WAL files and an idle one acknowledges a lone write after a single upload. The
/// log's index batches do not ask for a flush: they ride the next one, or the one
/// [`INDEX_FLUSH_INTERVAL`] after the last.
async fn run_flusher(db: Arc<Db>, flush_wanted: Arc<Notify>, marks: Arc<LogMarks>) {
    let wal = FlushOptions {
        flush_type: FlushType::Wal,
    };
    loop {
        let asked = tokio::time::timeout(INDEX_FLUSH_INTERVAL, flush_wanted.notified())
            .await
            .is_ok();
        let applied = marks.applied.load(Ordering::Acquire);
        if !asked && applied == marks.durable.load(Ordering::Acquire) {
            continue;
        }
        match db.flush_with_options(wal.clone()).await {
            Ok(()) => {
                marks.durable.fetch_max(applied, Ordering::AcqRel);
            }
            Err(e) if matches!(e.kind(), slatedb::ErrorKind::Closed(_)) => return,
            Err(e) => tracing::warn!(error = %e, "WAL flush failed"),
        }
    }
}

/// Why each object store is out of reach, as of its last probe; `None` while it answers.
/// Written by the probes on the sidecar runtime and read by every shard's `/health`, so it
/// is shared across threads (one lock per probe and per health check, off the data path).
#[derive(Debug, Default)]
struct StoreHealth {
    main: Mutex<Option<String>>,
    /// The write-ahead store's, when it is apart from the main one.
    wal: Mutex<Option<String>>,
}

/// Which store a probe watches.
#[derive(Debug, Clone, Copy)]
enum Probed {
    Main,
    Wal,
}

impl Probed {
    fn name(self) -> &'static str {
        match self {
            Probed::Main => "object store",
            Probed::Wal => "write-ahead store",
        }
    }

    fn state(self, health: &StoreHealth) -> &Mutex<Option<String>> {
        match self {
            Probed::Main => &health.main,
            Probed::Wal => &health.wal,
        }
    }
}

/// Probe the store with a HEAD of a key that never exists: any answer from the store, a
/// refusal included, means it is reachable; an error of the connection, a 5xx after the
/// client's retries, or no answer within [`PROBE_TIMEOUT`] means it is not.
async fn run_probe(
    store: Arc<dyn ObjectStore>,
    path: Path,
    health: Arc<StoreHealth>,
    probed: Probed,
) {
    let store_name = probed.name();
    loop {
        let outcome = tokio::time::timeout(PROBE_TIMEOUT, store.head(&path)).await;
        let unreachable = match outcome {
            Ok(Ok(_))
            | Ok(Err(
                object_store::Error::NotFound { .. }
                | object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
            )) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        {
            let mut state = probed.state(&health).lock().expect("store health");
            if state.is_none() != unreachable.is_none() {
                match &unreachable {
                    Some(reason) => tracing::warn!(store = store_name, %reason, "unreachable"),
                    None => tracing::info!(store = store_name, "reachable again"),
                }
            }
            *state = unreachable;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

impl Sidecar {
    pub fn open(
        location: &StorageLocation,
        wal: Option<&WalLocation>,
        io_threads: usize,
    ) -> Result<Sidecar, OpenError> {
        let path = match location {
            StorageLocation::S3 {
                path: Some(prefix), ..
            } => format!("{}/{DB_PATH}", prefix.trim_matches('/')),
            _ => DB_PATH.to_owned(),
        };
        let wal = wal.map(wal_store_for).transpose()?;
        Sidecar::open_with_stores(object_store_for(location)?, wal, &path, io_threads)
    }

    /// Open the database at `path` inside any object store (tests use this to inject
    /// faults between SlateDB and the store).
    pub fn open_with_store(
        store: Arc<dyn ObjectStore>,
        path: &str,
        io_threads: usize,
    ) -> Result<Sidecar, OpenError> {
        Sidecar::open_with_stores(store, None, path, io_threads)
    }

    /// Like [`Sidecar::open_with_store`], with the log's commits in `wal` when given (a
    /// write-ahead store apart from the one that holds the data at rest).
    pub fn open_with_stores(
        store: Arc<dyn ObjectStore>,
        wal: Option<Arc<dyn ObjectStore>>,
        path: &str,
        io_threads: usize,
    ) -> Result<Sidecar, OpenError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(io_threads.max(1))
            .thread_name("sluice-io")
            .enable_all()
            .build()?;
        // Compaction and garbage collection get their own thread, so that after heavy
        // writes they never hold up the group-commit flusher that every ack waits on.
        let background = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-compact")
            .enable_all()
            .build()?;
        let defaults = Settings {
            flush_interval: Some(INDEX_FLUSH_INTERVAL),
            ..Settings::default()
        };
        let mut settings = Settings::from_env_with_default(SLATEDB_ENV_PREFIX, defaults)?;
        let db = runtime.block_on(async {
            let mut builder = Db::builder(path.to_owned(), store.clone())
                .with_gc_runtime(background.handle().clone());
            // The compactor's options move to its builder, which would override them anyway.
            if let Some(options) = settings.compactor_options.take() {
                builder = builder.with_compactor_builder(
                    CompactorBuilder::new(path.to_owned(), store.clone())
                        .with_options(options)
                        .with_runtime(background.handle().clone()),
                );
            }
            builder.with_settings(settings).build().await
        })?;
        let db = Arc::new(db);
        let flush_wanted = Arc::new(Notify::new());
        let marks = Arc::new(LogMarks::default());
        runtime.spawn(run_flusher(db.clone(), flush_wanted.clone(), marks.clone()));
        let health = Arc::new(StoreHealth::default());
        let probe = Path::from(format!("{path}-probe"));
        runtime.spawn(run_probe(
            store.clone(),
            probe.clone(),
            health.clone(),
            Probed::Main,
        ));
        if let Some(wal) = &wal {
            runtime.spawn(run_probe(wal.clone(), probe, health.clone(), Probed::Wal));
        }
        let mut boot_id = [0u8; 8];
        getrandom::fill(&mut boot_id).map_err(|e| std::io::Error::other(e.to_string()))?;
        let root = Path::from(format!("{path}-segments"));
        // Boot id 0 names the log (`SegmentId::log`).
        let boot_id = u64::from_be_bytes(boot_id).max(1);
        let segments = Arc::new(SegmentStore {
            store,
            root: root.clone(),
            boot_id,
            next: AtomicU64::new(0),
        });
        let log = match wal {
            None => segments.clone(),
            Some(store) => Arc::new(SegmentStore {
                store,
                root,
                boot_id,
                next: AtomicU64::new(0),
            }),
        };
        Ok(Sidecar {
            runtime,
            background,
            db,
            flush_wanted,
            segments,
            log,
            marks,
            health,
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// A handle for shards to submit storage work with.
    pub fn storage(&self) -> Storage {
        Storage {
            db: self.db.clone(),
            runtime: self.runtime.handle().clone(),
            flush_wanted: self.flush_wanted.clone(),
            segments: self.segments.clone(),
            log: self.log.clone(),
            marks: self.marks.clone(),
            health: self.health.clone(),
            metrics: self.metrics.storage(),
            registry: self.metrics.clone(),
        }
    }

    /// The registry every part of the server records into.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// A handle on the sidecar runtime, for timers that must be `Send` (hyper's).
    pub fn runtime(&self) -> Handle {
        self.runtime.handle().clone()
    }

    /// Flush and close the database, then stop the runtime.
    pub fn close(self) -> Result<(), slatedb::Error> {
        let result = self.runtime.block_on(self.db.close());
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        self.background.shutdown_timeout(Duration::from_secs(5));
        result
    }
}

fn object_store_for(location: &StorageLocation) -> Result<Arc<dyn ObjectStore>, OpenError> {
    Ok(match location {
        StorageLocation::Memory => Arc::new(object_store::memory::InMemory::new()),
        StorageLocation::Local(dir) => local_store(dir)?,
        StorageLocation::S3 { bucket, .. } => Arc::new(s3_builder(bucket, &[]).build()?),
    })
}

fn wal_store_for(location: &WalLocation) -> Result<Arc<dyn ObjectStore>, OpenError> {
    Ok(match location {
        WalLocation::Local(dir) => local_store(dir)?,
        WalLocation::S3 { bucket } => {
            let overrides: Vec<(AmazonS3ConfigKey, String)> = WAL_AWS_OVERRIDES
                .iter()
                .filter_map(|(var, key)| Some((*key, std::env::var(var).ok()?)))
                .collect();
            Arc::new(s3_builder(bucket, &overrides).build()?)
        }
    })
}

fn local_store(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, OpenError> {
    std::fs::create_dir_all(dir)?;
    Ok(Arc::new(
        object_store::local::LocalFileSystem::new_with_prefix(dir)?.with_fsync(true),
    ))
}

/// A bucket's client from the standard AWS environment, then `overrides`.
fn s3_builder(
    bucket: &str,
    overrides: &[(AmazonS3ConfigKey, String)],
) -> object_store::aws::AmazonS3Builder {
    let mut endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok();
    let mut builder = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(s3_retries());
    if std::env::var_os("AWS_CONNECT_TIMEOUT").is_none() {
        builder = builder.with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            format!("{}s", S3_CONNECT_TIMEOUT.as_secs()),
        );
    }
    for (key, value) in overrides {
        match key {
            AmazonS3ConfigKey::Endpoint => endpoint = Some(value.clone()),
            key => builder = builder.with_config(*key, value),
        }
    }
    if let Some(endpoint) = endpoint {
        // A plain-http endpoint is a deliberate choice (a local S3-compatible server).
        if endpoint.starts_with("http://") {
            builder = builder.with_allow_http(true);
        }
        // As the S3-specific endpoint, which the client prefers to the generic one and
        // `from_env` sets from AWS_ENDPOINT_URL_S3: a WAL bucket's own endpoint must win.
        builder = builder.with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
    }
    builder
}

/// Where a create-only PUT of a log object ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Created,
    /// An object was there already, with this header.
    Taken(commit::Head),
}

/// Create `path` with `payload`, never overwriting. The S3 client retries a create-only
/// PUT whose connection was refused, but not one whose connect timed out (to it a timeout
/// is a timeout). Either way the request never left this process, so it cannot have
/// landed: it is tried again (the caller's bound ends it). A PUT that may have reached the
/// store is not retried here.
async fn create(
    store: &dyn ObjectStore,
    path: &Path,
    payload: PutPayload,
) -> Result<(), object_store::Error> {
    let mut backoff = CONNECT_RETRY_BACKOFF_MIN;
    loop {
        let options = PutOptions::from(PutMode::Create);
        match store.put_opts(path, payload.clone(), options).await {
            Ok(_) => return Ok(()),
            Err(e) if never_sent(&e) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(CONNECT_RETRY_BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The header of the log object at `path`; `None` if there is none.
async fn read_head(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<commit::Head>, StorageError> {
    match store.get_range(path, 0..commit::HEADER_BYTES as u64).await {
        Ok(bytes) => commit::decode_header(&bytes)
            .map(Some)
            .map_err(|e| StorageError::Corrupt {
                key: path.to_string().into_bytes(),
                reason: e.to_string(),
            }),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Backoff between attempts of a segment PUT that never reached the store, doubling.
const CONNECT_RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
const CONNECT_RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// Whether an object-store request failed before it was sent: the connection to the store
/// (TCP, or TLS over it) was never established.
fn never_sent(error: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Writes that apply only while `key` still holds `expected` ([`Storage::write_where_unchanged`]).
pub struct Guarded {
    pub key: Bytes,
    pub expected: Bytes,
    pub puts: Vec<(Bytes, Bytes)>,
    pub deletes: Vec<Bytes>,
}

/// See [`Storage::serializable`]. Reads run on the sidecar; writes are buffered until
/// [`Serializable::commit`].
pub struct Serializable {
    storage: Storage,
    txn: Arc<slatedb::DbTransaction>,
}

impl Serializable {
    pub async fn get(&self, key: Bytes) -> Result<Option<Bytes>, StorageError> {
        let txn = self.txn.clone();
        self.storage
            .on_sidecar(StorageOp::DbGet, async move { Ok(txn.get(&key).await?) })
            .await
    }

    /// Whether `range` holds no key.
    pub async fn is_empty(&self, range: Range<Bytes>) -> Result<bool, StorageError> {
        if range.start >= range.end {
            return Ok(true);
        }
        let txn = self.txn.clone();
        self.storage
            .on_sidecar(StorageOp::DbScan, async move {
                Ok(txn.scan(range).await?.next().await?.is_none())
            })
            .await
    }

    pub fn put(&self, key: Bytes, value: Bytes) -> Result<(), StorageError> {
        Ok(self.txn.put(key, value)?)
    }

    pub fn delete(&self, key: Bytes) -> Result<(), StorageError> {
        Ok(self.txn.delete(key)?)
    }

    /// Commit durably; `false`, with nothing written, if another commit got in first.
    pub async fn commit(self) -> Result<bool, StorageError> {
        let Serializable { storage, txn } = self;
        let flush_wanted = storage.flush_wanted.clone();
        storage
            .on_sidecar(StorageOp::DbWrite, async move {
                // Reads borrow the transaction, so none is running; were one still on the
                // sidecar, nothing is written and the caller tries again, as on a conflict.
                let Some(txn) = Arc::into_inner(txn) else {
                    return Ok(false);
                };
                match txn.commit().await {
                    Ok(Some(handle)) => {
                        flush_wanted.notify_one();
                        handle.await_durable().await?;
                        Ok(true)
                    }
                    Ok(None) => Ok(true),
                    Err(e) if e.kind() == slatedb::ErrorKind::Transaction => Ok(false),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }
}

/// A forward walk over a key range, one bounded page at a time: each page starts just
/// after the last key of the one before, and a page that comes back short of its bounds
/// is the last. Every paged scan of the engine goes through this.
#[derive(Debug, Clone)]
pub struct Pages {
    next: Option<Bytes>,
    end: Bytes,
    rows: usize,
    value_bytes: Option<usize>,
}

impl Pages {
    /// Pages of at most `rows` pairs.
    pub fn new(range: Range<Bytes>, rows: usize) -> Pages {
        Pages {
            next: Some(range.start),
            end: range.end,
            rows: rows.max(1),
            value_bytes: None,
        }
    }

    /// Pages of at most `rows` pairs, each also ending once its values add up to
    /// `value_bytes`.
    pub fn bounded(range: Range<Bytes>, rows: usize, value_bytes: usize) -> Pages {
        Pages {
            value_bytes: Some(value_bytes.max(1)),
            ..Pages::new(range, rows)
        }
    }

    /// The next page; `None` once the range is walked. A failed read can be tried again:
    /// the walk does not move.
    pub async fn next(
        &mut self,
        storage: &Storage,
    ) -> Result<Option<Vec<(Bytes, Bytes)>>, StorageError> {
        let Some(start) = self.next.clone() else {
            return Ok(None);
        };
        let range = start..self.end.clone();
        let rows = match self.value_bytes {
            None => storage.scan(range, self.rows).await?,
            Some(bytes) => storage.scan_bounded(range, self.rows, bytes).await?,
        };
        let values: usize = rows.iter().map(|(_, v)| v.len()).sum();
        let full = rows.len() == self.rows || self.value_bytes.is_some_and(|b| values >= b);
        self.next = match rows.last() {
            Some((last, _)) if full => Some(keys::successor(last)),
            _ => None,
        };
        Ok((!rows.is_empty()).then_some(rows))
    }

    /// Walk again from `key`: what a page returned changed before it could be acted on.
    pub fn again_from(&mut self, key: Bytes) {
        self.next = Some(key);
    }
}

/// Pages of a listing of the segment objects ([`Storage::list_segments`]): each is
/// `(id, size)` per object, or why the listing failed (after which it ends).
pub struct SegmentListing(futures::channel::mpsc::Receiver<ListedPage>);

type ListedPage = Result<Vec<(SegmentId, u64)>, StorageError>;

impl SegmentListing {
    /// The next page; `None` once every object was listed.
    pub async fn next_page(&mut self) -> Option<ListedPage> {
        futures::StreamExt::next(&mut self.0).await
    }
}

/// A cheap, cloneable, `Send` handle on the database, used from shard threads.
#[derive(Clone)]
pub struct Storage {
    db: Arc<Db>,
    runtime: Handle,
    flush_wanted: Arc<Notify>,
    segments: Arc<SegmentStore>,
    /// Where the log's commits live: the segments' store, or a write-ahead store of its own.
    log: Arc<SegmentStore>,
    marks: Arc<LogMarks>,
    health: Arc<StoreHealth>,
    metrics: StorageMetrics,
    registry: Arc<Metrics>,
}

impl Storage {
    /// The sidecar runtime: where the log's committer runs, and how start-up waits for
    /// storage work.
    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// The registry every part of the server records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.registry
    }

    /// Why the object store, or the write-ahead store apart from it, is out of reach, as of
    /// their last probes; `None` while both answer.
    pub fn store_unreachable(&self) -> Option<String> {
        let main = self.health.main.lock().expect("store health").clone();
        main.or_else(|| {
            let wal = self.health.wal.lock().expect("store health");
            wal.as_ref()
                .map(|reason| format!("the write-ahead store: {reason}"))
        })
    }

    /// Run `work` on the sidecar, timing it there as one `op`, and cancel it if it takes
    /// longer than [`STORE_WAIT_MAX`].
    async fn on_sidecar<T, F>(&self, op: StorageOp, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        self.on_sidecar_within(op, STORE_WAIT_MAX, work).await
    }

    async fn on_sidecar_within<T, F>(
        &self,
        op: StorageOp,
        bound: Duration,
        work: F,
    ) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        self.runtime
            .spawn(async move {
                let started = Instant::now();
                let result = match tokio::time::timeout(bound, work).await {
                    Ok(result) => result,
                    Err(_) => Err(StorageError::TimedOut(bound)),
                };
                metrics.record(op, started.elapsed(), result.is_ok());
                result
            })
            .await
            .map_err(|_| StorageError::SidecarGone)?
    }

    pub async fn get(&self, key: Bytes) -> Result<Option<Bytes>, StorageError> {
        let db = self.db.clone();
        self.on_sidecar(StorageOp::DbGet, async move { Ok(db.get(&key).await?) })
            .await
    }

    /// Up to `limit` key-value pairs in `range`, in key order.
    pub async fn scan(
        &self,
        range: Range<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        // SlateDB refuses (panics on) empty ranges.
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let (db, metrics) = (self.db.clone(), self.metrics.clone());
        self.on_sidecar(StorageOp::DbScan, async move {
            let mut iter = db.scan(range).await?;
            let mut out = Vec::new();
            while out.len() < limit {
                match iter.next().await? {
                    Some(kv) => out.push((kv.key, kv.value)),
                    None => break,
                }
            }
            metrics.scanned(out.len());
            Ok(out)
        })
        .await
    }

    /// Up to `max_rows` pairs in `range`, in key order, stopping early once the values read
    /// add up to at least `max_value_bytes`.
    pub async fn scan_bounded(
        &self,
        range: Range<Bytes>,
        max_rows: usize,
        max_value_bytes: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let db = self.db.clone();
        // SlateDB fetches one block at a time by default; a page this size spans many
        // blocks (a 64 KiB record is a block of its own), so fetch ahead, several at once.
        let options = ScanOptions::new()
            .with_read_ahead_bytes(max_value_bytes)
            .with_max_fetch_tasks(SCAN_FETCH_TASKS);
        let metrics = self.metrics.clone();
        self.on_sidecar(StorageOp::DbScan, async move {
            let mut iter = db.scan_with_options(range, &options).await?;
            let mut out = Vec::new();
            let mut bytes = 0usize;
            while out.len() < max_rows && bytes < max_value_bytes {
                match iter.next().await? {
                    Some(kv) => {
                        bytes += kv.value.len();
                        out.push((kv.key, kv.value));
                    }
                    None => break,
                }
            }
            metrics.scanned(out.len());
            Ok(out)
        })
        .await
    }

    /// Apply `batch` atomically to the database: visible to reads at once, durable with
    /// the next index flush (a later [`Storage::write`]'s, or the periodic one within
    /// [`INDEX_FLUSH_INTERVAL`]), since the WAL is ordered. It asks for no flush of its
    /// own, so it costs no object write: for writes that a durable one follows, or that a
    /// crash may undo harmlessly. Calls awaited one after another are applied in that order.
    pub async fn apply(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let db = self.db.clone();
        self.on_sidecar(StorageOp::DbApply, async move {
            db.write(batch).await?;
            Ok(())
        })
        .await
    }

    /// A fresh segment id, never used before by this or an earlier process.
    pub fn new_segment_id(&self) -> SegmentId {
        let n = self.segments.next.fetch_add(1, Ordering::Relaxed);
        SegmentId(u128::from(self.segments.boot_id) << 64 | u128::from(n))
    }

    /// Random per process start: what tells this process's writes from an earlier one's.
    pub fn boot_id(&self) -> u64 {
        self.segments.boot_id
    }

    /// Whether a segment was named by this process (and so may still be in flight).
    pub fn is_this_boots(&self, id: SegmentId) -> bool {
        (id.0 >> 64) as u64 == self.segments.boot_id
    }

    /// The store that holds segment `id`: the log's for a commit of the log.
    fn store_of(&self, id: SegmentId) -> Arc<SegmentStore> {
        match id.log_position() {
            Some(_) => self.log.clone(),
            None => self.segments.clone(),
        }
    }

    /// Bytes of commits the write-ahead store holds (0 without one): what the committer
    /// holds new commits back by once it passes `EngineOptions::wal_bytes_max`.
    pub fn wal_bytes(&self) -> u64 {
        self.marks.wal_bytes.load(Ordering::Acquire)
    }

    /// Commits of `bytes` left the write-ahead store (deleted once moved), or were found
    /// there at start (`released` false).
    pub(crate) fn wal_counted(&self, bytes: u64, released: bool) {
        if !self.has_wal() {
            return;
        }
        if released {
            let _ = self
                .marks
                .wal_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    Some(b.saturating_sub(bytes))
                });
        } else {
            self.marks.wal_bytes.fetch_add(bytes, Ordering::AcqRel);
        }
    }

    /// The id object of the write-ahead store (`<root>/wal-id`), if it has one.
    pub async fn wal_store_id(&self) -> Result<Option<Bytes>, StorageError> {
        let log = self.log.clone();
        self.on_sidecar(StorageOp::ObjectGet, async move {
            match log.store.get(&log.root.clone().join("wal-id")).await {
                Ok(found) => Ok(Some(found.bytes().await?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Name the write-ahead store with `id`.
    pub async fn set_wal_store_id(&self, id: Bytes) -> Result<(), StorageError> {
        let log = self.log.clone();
        self.on_sidecar(StorageOp::ObjectPut, async move {
            log.store
                .put(&log.root.clone().join("wal-id"), PutPayload::from(id))
                .await?;
            Ok(())
        })
        .await
    }

    /// Whether the log's commits live in a write-ahead store apart from the data at rest,
    /// whence the reclaimer moves their runs (`segments::reclaim`).
    pub fn has_wal(&self) -> bool {
        !Arc::ptr_eq(&self.log, &self.segments)
    }

    /// Write a segment object. It is created, never overwritten; since names are never
    /// reused, one already there is this PUT's own earlier attempt.
    pub async fn put_segment(
        &self,
        id: SegmentId,
        payload: PutPayload,
    ) -> Result<(), StorageError> {
        let segments = self.segments.clone();
        self.on_sidecar(StorageOp::ObjectPut, async move {
            match create(&*segments.store, &segments.path(id), payload).await {
                // The client retried a PUT whose answer was lost, and the first attempt
                // had landed: segment names are never reused, so the object is ours.
                Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Create the log object at `position`. If one is there already, its header says
    /// whose it is: this writer's own earlier attempt (a retry whose first answer was
    /// lost), or another writer's.
    pub async fn put_log(
        &self,
        position: u64,
        payload: PutPayload,
    ) -> Result<Placed, StorageError> {
        let segments = self.log.clone();
        let wal_bytes = self.has_wal().then(|| self.marks.clone());
        self.on_sidecar(StorageOp::ObjectPut, async move {
            let path = segments.path(SegmentId::log(position));
            let bytes = payload.content_length() as u64;
            match create(&*segments.store, &path, payload).await {
                Ok(()) => {
                    if let Some(marks) = wal_bytes {
                        marks.wal_bytes.fetch_add(bytes, Ordering::AcqRel);
                    }
                    Ok(Placed::Created)
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let head = read_head(&*segments.store, &path).await?.ok_or_else(|| {
                        StorageError::Corrupt {
                            key: path.to_string().into_bytes(),
                            reason: "a log object said to exist is not there".to_owned(),
                        }
                    })?;
                    Ok(Placed::Taken(head))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// The header and manifest of the log object at `position`; `None` if there is none.
    pub async fn read_log(
        &self,
        position: u64,
    ) -> Result<Option<(commit::Head, Vec<commit::Entry>)>, StorageError> {
        let segments = self.log.clone();
        self.on_sidecar(StorageOp::ObjectGet, async move {
            let path = segments.path(SegmentId::log(position));
            let Some(head) = read_head(&*segments.store, &path).await? else {
                return Ok(None);
            };
            let corrupt = |reason: String| StorageError::Corrupt {
                key: path.to_string().into_bytes(),
                reason,
            };
            if head.position != position {
                return Err(corrupt(format!("holds position {}", head.position)));
            }
            if head.manifest_len == 0 {
                return Ok(Some((head, Vec::new())));
            }
            let range = commit::HEADER_BYTES as u64..head.runs_offset() as u64;
            let manifest = segments.store.get_range(&path, range).await?;
            let entries =
                commit::decode_manifest(&head, manifest).map_err(|e| corrupt(e.to_string()))?;
            Ok(Some((head, entries)))
        })
        .await
    }

    /// Whether the log object at `position` is there: one HEAD, nothing read.
    pub async fn log_exists(&self, position: u64) -> Result<bool, StorageError> {
        let segments = self.log.clone();
        self.on_sidecar(StorageOp::ObjectGet, async move {
            let path = segments.path(SegmentId::log(position));
            match segments.store.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// The log positions after `after` that hold an object, ascending.
    pub async fn list_log(&self, after: u64) -> Result<Vec<u64>, StorageError> {
        let segments = self.log.clone();
        self.on_sidecar_within(StorageOp::ObjectList, LIST_WAIT_MAX, async move {
            let prefix = segments.path(SegmentId::log(0));
            let prefix = Path::from_iter(prefix.parts().take(prefix.parts().count() - 1));
            let offset = segments.path(SegmentId::log(after));
            let listed: Vec<_> = segments
                .store
                .list_with_offset(Some(&prefix), &offset)
                .try_collect()
                .await?;
            let mut positions: Vec<u64> = listed
                .iter()
                .filter_map(|meta| segments.id_of(&meta.location)?.log_position())
                .filter(|&p| p > after)
                .collect();
            positions.sort_unstable();
            Ok(positions)
        })
        .await
    }

    /// Apply one resolved commit's index batch, which carries the watermark `position`:
    /// visible to reads at once, durable with the next WAL flush (a durable write's, or the
    /// flusher's within [`INDEX_FLUSH_INTERVAL`]). Calls awaited one after another are
    /// applied in that order.
    pub async fn apply_index(&self, batch: WriteBatch, position: u64) -> Result<(), StorageError> {
        let (db, marks) = (self.db.clone(), self.marks.clone());
        self.on_sidecar(StorageOp::DbApply, async move {
            db.write(batch).await?;
            marks.applied.fetch_max(position, Ordering::AcqRel);
            Ok(())
        })
        .await
    }

    /// The last log position whose index is durable.
    pub fn log_durable(&self) -> u64 {
        self.marks.durable.load(Ordering::Acquire)
    }

    /// The last log position whose index is applied (visible, perhaps not yet durable).
    pub fn log_applied(&self) -> u64 {
        self.marks.applied.load(Ordering::Acquire)
    }

    /// Record that the log is applied and durable through `position` (after start-up
    /// replay wrote it durably).
    pub fn set_log_durable(&self, position: u64) {
        self.marks.applied.fetch_max(position, Ordering::AcqRel);
        self.marks.durable.fetch_max(position, Ordering::AcqRel);
    }

    /// Bytes `range` of a segment object; an error unless exactly that many come back.
    pub async fn get_segment_range(
        &self,
        id: SegmentId,
        range: Range<u64>,
    ) -> Result<Bytes, StorageError> {
        let segments = self.store_of(id);
        self.on_sidecar(StorageOp::ObjectGet, async move {
            let want = range.end - range.start;
            let bytes = segments.store.get_range(&segments.path(id), range).await?;
            if bytes.len() as u64 != want {
                return Err(StorageError::Corrupt {
                    key: segments.path(id).to_string().into_bytes(),
                    reason: format!("ranged read returned {} of {want} bytes", bytes.len()),
                });
            }
            Ok(bytes)
        })
        .await
    }

    /// Delete a segment object; one already gone is not an error.
    pub async fn delete_segment(&self, id: SegmentId) -> Result<(), StorageError> {
        let segments = self.store_of(id);
        self.on_sidecar(StorageOp::ObjectDelete, async move {
            match segments.store.delete(&segments.path(id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Every segment object in the store (and the log's, when apart), in pages of at most
    /// `page` objects (in whatever
    /// order the store lists them). The listing runs on the sidecar one page ahead of the
    /// reader, so at most two pages are held at once; it stops when the listing ends or
    /// fails, or when the receiver is dropped.
    pub fn list_segments(&self, page: usize) -> SegmentListing {
        use futures::{SinkExt, StreamExt};
        let (mut tx, rx) = futures::channel::mpsc::channel(0);
        let metrics = self.metrics.clone();
        let mut stores = vec![self.segments.clone()];
        if self.has_wal() {
            stores.push(self.log.clone());
        }
        self.runtime.spawn(async move {
            let listed = stores.into_iter().map(|segments| {
                let listing = segments.store.list(Some(&segments.root));
                listing
                    .map(move |meta| meta.map(|meta| (segments.id_of(&meta.location), meta.size)))
            });
            let mut listed = futures::stream::iter(listed).flatten().chunks(page.max(1));
            loop {
                let started = Instant::now();
                let chunk = match tokio::time::timeout(STORE_WAIT_MAX, listed.next()).await {
                    Ok(None) => return,
                    Ok(Some(chunk)) => chunk
                        .into_iter()
                        .filter_map(|meta| match meta {
                            Ok((id, size)) => Some(Ok((id?, size))),
                            Err(e) => Some(Err(StorageError::from(e))),
                        })
                        .collect(),
                    Err(_) => Err(StorageError::TimedOut(STORE_WAIT_MAX)),
                };
                let failed = chunk.is_err();
                metrics.record(StorageOp::ObjectList, started.elapsed(), !failed);
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        SegmentListing(rx)
    }

    /// Which of `ids` have a segment record, in one trip to the sidecar.
    pub async fn segment_records_exist(
        &self,
        ids: Vec<SegmentId>,
    ) -> Result<Vec<bool>, StorageError> {
        let db = self.db.clone();
        self.on_sidecar(StorageOp::DbGet, async move {
            let gets = ids.iter().map(|id| db.get(keys::segment(id.0)));
            let found = futures::future::try_join_all(gets).await?;
            Ok(found.iter().map(Option::is_some).collect())
        })
        .await
    }

    /// A serializable transaction: its commit fails if a key or range it read was written
    /// by any other commit (transaction or plain batch) since it began. What two owners
    /// must decide together (a stream's creation and its basin's removal) goes through one.
    pub fn serializable(&self) -> Result<Serializable, StorageError> {
        let txn = self
            .db
            .begin(slatedb::IsolationLevel::SerializableSnapshot)?;
        Ok(Serializable {
            storage: self.clone(),
            txn: Arc::new(txn),
        })
    }

    /// In one durable transaction: for each guard whose key still holds its expected value,
    /// apply its writes; then `always`. Returns how many guards held. A concurrent write to
    /// a guarded key aborts the whole transaction with an error, and nothing is written.
    pub async fn write_where_unchanged(
        &self,
        guards: Vec<Guarded>,
        always: Vec<(Bytes, Bytes)>,
    ) -> Result<usize, StorageError> {
        let (db, flush_wanted) = (self.db.clone(), self.flush_wanted.clone());
        self.on_sidecar(StorageOp::DbWrite, async move {
            let txn = db.begin(slatedb::IsolationLevel::Snapshot)?;
            let mut held = 0;
            for guard in guards {
                if txn.get(&guard.key).await?.as_deref() != Some(&guard.expected[..]) {
                    continue;
                }
                held += 1;
                for (key, value) in guard.puts {
                    txn.put(key, value)?;
                }
                for key in guard.deletes {
                    txn.delete(key)?;
                }
            }
            for (key, value) in always {
                txn.put(key, value)?;
            }
            if let Some(handle) = txn.commit().await? {
                flush_wanted.notify_one();
                handle.await_durable().await?;
            }
            Ok(held)
        })
        .await
    }

    /// Apply `batch` atomically and return once it is durable in the object store.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let (db, flush_wanted) = (self.db.clone(), self.flush_wanted.clone());
        self.on_sidecar(StorageOp::DbWrite, async move {
            let handle = db.write(batch).await?;
            flush_wanted.notify_one();
            handle.await_durable().await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    use object_store::client::{HttpError, HttpErrorKind};

    use super::*;

    /// The S3 client's own classification of a transport error.
    fn http_kind(error: &object_store::Error) -> Option<HttpErrorKind> {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(http) = e.downcast_ref::<HttpError>() {
                return Some(http.kind());
            }
            source = e.source();
        }
        None
    }

    /// A create-only PUT through the real S3 client to a loopback `port`, without retries.
    fn put_to(port: u16) -> object_store::Error {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("bucket")
            .with_region("us-east-1")
            .with_access_key_id("key")
            .with_secret_access_key("secret")
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "1s",
            )
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                ..s3_retries()
            })
            .build()
            .expect("S3 client");
        runtime
            .block_on(store.put_opts(
                &Path::from("segment"),
                PutPayload::from_static(b"run"),
                PutOptions::from(PutMode::Create),
            ))
            .expect_err("the PUT fails")
    }

    #[test]
    fn a_refused_connection_never_sent_the_request() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        assert!(never_sent(&put_to(port)));
    }

    #[test]
    fn a_connect_that_timed_out_never_sent_the_request() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // A full accept queue: the kernel drops further SYNs, so connects time out.
        // SAFETY: listen(2) on a socket this test owns.
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let port = listener.local_addr().expect("address").port();
        let _queued = TcpStream::connect(("127.0.0.1", port)).expect("fills the queue");
        let error = put_to(port);
        // Which is why the S3 client itself does not retry it.
        assert_eq!(http_kind(&error), Some(HttpErrorKind::Timeout), "{error}");
        assert!(never_sent(&error), "{error}");
    }

    #[test]
    fn a_request_the_store_answered_was_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        });
        let error = put_to(port);
        server.join().expect("server thread");
        assert!(!never_sent(&error), "{error}");
    }
}

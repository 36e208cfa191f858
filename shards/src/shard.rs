//! A shard: one pinned glommio executor's share of the engine. It owns, outright, the
//! basins and streams placed on it; other threads reach them only by sending it a job.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use glommio::sync::Semaphore;
use lru::LruCache;
use tracing::debug;

use crate::catalogue::resume_background_work;
use crate::clock::Clock;
use crate::error::{EngineError, Result};
use crate::locks::KeyedLocks;
use crate::mesh::{Inbox, Job, Mesh};
use crate::metrics::{ShardGauges, ShardMetrics};
use crate::names::{BasinName, StreamName};
use crate::placement::{Placement, ShardId};
use crate::segments::log::committer::ShardLink;
use crate::segments::log::core::Cadence;
use crate::segments::reader::{SegmentCache, SEGMENT_CACHE_BYTES_MAX};
use crate::segments::writer::SegmentWriter;
use crate::storage::Storage;
use crate::streamer::{StreamKey, Streamer};
use crate::tokens::{TokenId, VerifiedTokens};

/// Default bound on the streamers one shard keeps loaded. A loaded streamer costs about a
/// kilobyte (state, config, queues); this keeps that under ~20 MiB a shard whatever the
/// number of streams ever touched.
pub const STREAMERS_LOADED_MAX: usize = 16_384;

/// Default bound on the jobs from other shards that one shard runs at once. Each is a
/// request's work on its owner (an append up to its admission, a read until its session
/// starts, a control-plane change), so this bounds that work's memory, not the server's
/// concurrency: appends and reads in progress are not jobs.
pub const JOBS_IN_FLIGHT_MAX: usize = 1024;

/// Default bytes of commits a write-ahead store holds before new ones wait for the mover.
pub const WAL_BYTES_MAX: u64 = 1 << 30;

/// Most that `append_inflight_bytes` may be. The runs in flight bound the size of a log
/// commit, whose offsets are 32-bit; an encoded record takes at most about twice its
/// metered size, so a 1 GiB budget keeps every commit far below 4 GiB.
pub const APPEND_INFLIGHT_BYTES_MAX: u64 = 1 << 30;

/// Engine settings shared by every shard.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Server-wide bound on the metered bytes of appends in flight, split evenly across
    /// shards; appends past it wait.
    pub append_inflight_bytes: u64,
    /// The clock everything that ages reads.
    pub clock: Clock,
    /// How long a deleted basin or stream stays visible as "deletion pending" before the
    /// background cleanup starts removing it.
    pub deletion_delay: Duration,
    /// Bytes of recent runs each shard keeps in memory for readers near the tail.
    pub segment_cache_bytes: usize,
    /// How the log's commits are paced: by what an object write costs where the log lives
    /// (`Cadence::Bucket` for an object store that bills per request).
    pub commit_cadence: Cadence,
    /// Streams whose state one shard keeps loaded; beyond it, idle ones are unloaded,
    /// least recently used first, and reloaded from storage when next used.
    pub streamers_max: usize,
    /// Jobs from other shards one shard runs at once; more wait in its inbox.
    pub jobs_in_flight_max: usize,
    /// Verified access tokens one shard remembers; beyond it, the least recently used is
    /// forgotten and looked up again when next presented.
    pub verified_tokens_max: usize,
    /// Bytes of commits a write-ahead store may hold before the committer holds new ones
    /// back until the mover has made room: appends then wait (admission), never fail.
    pub wal_bytes_max: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            append_inflight_bytes: 128 * 1024 * 1024,
            clock: Clock::system(),
            deletion_delay: Duration::from_secs(2),
            segment_cache_bytes: SEGMENT_CACHE_BYTES_MAX,
            commit_cadence: Cadence::Local,
            streamers_max: STREAMERS_LOADED_MAX,
            jobs_in_flight_max: JOBS_IN_FLIGHT_MAX,
            verified_tokens_max: crate::tokens::VERIFIED_CACHE_MAX,
            wal_bytes_max: WAL_BYTES_MAX,
        }
    }
}

pub struct Shard {
    pub(crate) id: ShardId,
    pub(crate) placement: Placement,
    pub(crate) mesh: Mesh,
    pub(crate) storage: Storage,
    pub(crate) options: EngineOptions,
    pub(crate) basin_locks: KeyedLocks<BasinName>,
    pub(crate) stream_locks: KeyedLocks<(BasinName, StreamName)>,
    pub(crate) token_locks: KeyedLocks<TokenId>,
    pub(crate) verified_tokens: VerifiedTokens,
    pub(crate) usage: crate::usage::Usage,
    /// Loaded streamers, most recently used first.
    pub(crate) streamers: RefCell<LruCache<StreamKey, Rc<RefCell<Streamer>>>>,
    /// This shard's share of the in-flight append byte budget.
    pub(crate) admission: Rc<Semaphore>,
    pub(crate) admission_units: u64,
    pub(crate) clock: Clock,
    /// Where this shard's streams' appends are made durable.
    pub(crate) segment_writer: Rc<SegmentWriter>,
    pub(crate) segment_cache: Rc<RefCell<SegmentCache>>,
    metrics: Rc<ShardMetrics>,
    /// Set once the server starts shutting down.
    drain: tokio::sync::watch::Sender<bool>,
    leaving: Cell<bool>,
}

impl Shard {
    pub(crate) fn start(
        id: ShardId,
        placement: Placement,
        mesh: Mesh,
        inbox: Inbox,
        storage: Storage,
        options: EngineOptions,
        log: ShardLink,
    ) -> Rc<Shard> {
        let admission_units =
            (options.append_inflight_bytes / placement.shard_count() as u64).max(1);
        let segment_cache = Rc::new(RefCell::new(SegmentCache::new(options.segment_cache_bytes)));
        let metrics = Rc::new(storage.metrics().shard(id));
        let segment_writer = SegmentWriter::start(log, segment_cache.clone(), metrics.clone());
        let shard = Rc::new(Shard {
            id,
            metrics,
            drain: tokio::sync::watch::Sender::new(false),
            leaving: Cell::new(false),
            segment_writer,
            segment_cache,
            streamers: RefCell::new(LruCache::unbounded()),
            verified_tokens: VerifiedTokens::new(options.verified_tokens_max),
            usage: crate::usage::Usage::new(),
            admission: Rc::new(Semaphore::new(admission_units)),
            admission_units,
            clock: options.clock.clone(),
            placement,
            mesh,
            storage,
            options,
            basin_locks: KeyedLocks::default(),
            stream_locks: KeyedLocks::default(),
            token_locks: KeyedLocks::default(),
        });
        let runner = shard.clone();
        let slots = Rc::new(Semaphore::new(shard.options.jobs_in_flight_max as u64));
        glommio::spawn_local(async move {
            // A job is taken from the inbox only once a slot is free: past the bound, jobs
            // wait in the inbox, and once it is full their senders wait too. No job calls
            // another shard, so a full shard cannot be waiting on one that waits on it.
            while let Ok(slot) = slots.acquire_static_permit(1).await {
                let Ok(job) = inbox.0.recv_async().await else {
                    return;
                };
                let (shard, running) = (runner.clone(), runner.metrics().job_started());
                glommio::spawn_local(async move {
                    job(shard).await;
                    drop((running, slot));
                })
                .detach();
            }
        })
        .detach();
        glommio::spawn_local(resume_background_work(shard.clone())).detach();
        glommio::spawn_local(crate::background::run(shard.clone())).detach();
        glommio::spawn_local(crate::segments::reclaim::run(shard.clone())).detach();
        glommio::spawn_local(crate::usage::run(shard.clone())).detach();
        shard
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    /// The engine's clock: what record timestamps and usage buckets are measured by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// What this shard records into.
    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// The Prometheus exposition of the whole server: every shard first flushes what it
    /// recorded, so the scrape sees everything recorded before it.
    pub async fn scrape_metrics(self: &Rc<Self>) -> Result<String> {
        for owner in 0..self.shard_count() {
            self.on_owner(owner, |shard| async move {
                shard.flush_metrics();
                Ok(())
            })
            .await?;
        }
        Ok(self.storage.metrics().encode(self.shard_count()))
    }

    fn flush_metrics(&self) {
        let streamers = self.streamers.borrow();
        let followers = streamers
            .iter()
            .map(|(_, s)| s.borrow().follower_count())
            .sum();
        self.metrics.flush(ShardGauges {
            inflight_bytes: self.admission_units - self.admission.available(),
            followers,
            streamers: streamers.len(),
            tokens_cached: self.verified_tokens.len(),
            inbox_depth: self.mesh.inbox_depth(self.id),
            busy: glommio::executor().executor_stats().total_runtime(),
        });
    }

    pub fn shard_count(&self) -> usize {
        self.placement.shard_count()
    }

    /// Run `work` on shard `owner` with that shard's context and return its result. Local
    /// owners run it directly; remote ones get it through the mesh.
    pub(crate) async fn on_owner<T, F, Fut>(self: &Rc<Self>, owner: ShardId, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + 'static,
    {
        if owner == self.id {
            return work(self.clone()).await;
        }
        let (reply, answer) = futures::channel::oneshot::channel();
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                // The caller may have gone away; the work is done either way.
                let _ = reply.send(work(shard).await);
            })
        });
        self.mesh
            .send(owner, job)
            .await
            .map_err(|()| EngineError::Unavailable("owner shard stopped"))?;
        debug!(from = self.id, to = owner, "job relayed");
        answer
            .await
            .map_err(|_| EngineError::Unavailable("owner shard dropped the request"))?
    }

    /// Announce the coming shutdown: health checks fail from now on, so that load balancers
    /// stop sending, while every request is still served as before.
    pub fn begin_leaving(&self) {
        self.leaving.set(true);
    }

    /// Start shutting down: health checks fail from now on, and sessions served by this
    /// shard end with [`EngineError::Draining`] so that their clients reconnect elsewhere.
    pub fn begin_drain(&self) {
        self.leaving.set(true);
        self.drain.send_replace(true);
    }

    /// Completes once [`Shard::begin_drain`] has been called.
    pub fn drained(&self) -> impl Future<Output = ()> + 'static {
        let mut drain = self.drain.subscribe();
        async move {
            // An error means the shard is gone, which ends the session just the same.
            let _ = drain.wait_for(|draining| *draining).await;
        }
    }

    /// Check the storage sidecar answers, unless the server is leaving or shutting down.
    pub async fn health(&self) -> Result<()> {
        if self.leaving.get() {
            return Err(EngineError::Draining);
        }
        if let Some(reason) = self.storage.store_unreachable() {
            return Err(crate::StorageError::Unreachable(reason).into());
        }
        self.storage.get(bytes::Bytes::from_static(b"\x00")).await?;
        Ok(())
    }
}

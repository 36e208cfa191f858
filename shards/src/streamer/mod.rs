//! Streamers: the live state of one stream on its owner shard — tail, fencing token, trim
//! point, the append pipeline and the followers tailing it.
//!
//! The append pipeline: an append is checked and sequenced synchronously against the
//! *assigned* state (which includes appends still in flight), its records are encoded,
//! and it goes to the shard's segment writer (`segments::writer`), which makes it durable
//! together with every other append of the shard's streams. Acknowledgements are released
//! from the front of the in-flight queue only, so they go out in order and only once
//! durable; the *durable* state advances with them. A failed write fails every later
//! in-flight append, bumps the stream's generation (so the writer never indexes what was
//! sequenced before the failure) and the assigned state falls back to the durable one: no
//! gap, no duplicate, nothing acknowledged or shown to a reader that is not durable.
//!
//! Appends that come as one session (an S2S append session, or a unary append on its
//! own) carry an [`AppendSession`]: once any of them is refused or fails, no later one is
//! sequenced, so a session's appends in storage are always a prefix of what it sent.

pub mod codec;
mod pipeline;
mod read;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::channel::{mpsc, oneshot};
use glommio::sync::StaticPermit;

pub use read::{ReadItem, ReadLimits, ReadRequest, ReadSession, ReadStart};

use crate::backoff::Backoff;
use crate::catalogue::StreamMeta;
use crate::clock::Clock;
use crate::config::{Cipher, RetentionPolicy, StorageClass, TimestampingMode};
use crate::crypto::{EncryptionKey, KeyMaterial, AES_GCM_SEQ_NUM_MAX};
use crate::error::{EngineError, Result};
use crate::names::{BasinName, StreamName};
use crate::records::{AppendAck, AppendBatch, Command, Position, ReadBatch, SequencedRecord};
use crate::segments::format::ChunkWriter;
use crate::segments::writer::{Part, SegmentWriter};
use crate::shard::Shard;
use crate::storage::keys;
use codec::StreamState;
use pipeline::{Pipeline, Released};

pub(crate) type StreamKey = (BasinName, StreamName);

/// Live batches buffered per follower; a follower further behind is dropped and catches up
/// from storage instead.
pub const FOLLOWER_BUFFER_BATCHES: usize = 25;

/// An acknowledgement to come: resolves once the append is durable, or failed.
pub struct PendingAck {
    ack: oneshot::Receiver<Result<AppendAck>>,
    rejected: bool,
}

impl PendingAck {
    /// The append was refused when it was sequenced (its condition failed); its error is
    /// released in order behind earlier appends. A session stops submitting after it.
    pub fn is_rejected(&self) -> bool {
        self.rejected
    }

    pub async fn wait(self) -> Result<AppendAck> {
        self.ack
            .await
            .map_err(|_| EngineError::Unavailable("the append was dropped"))?
    }
}

/// A client's ordered appends to one stream: an S2S append session, or a unary append
/// alone. The first of its appends to be refused or to fail ends it: no later one is
/// sequenced, so what the session leaves in storage is always a prefix of what it sent.
///
/// Without this a session would outlive a storage failure. The failure bumps the stream's
/// generation and sequencing restarts from the durable tail, so an input that was still
/// on its way (in the mesh, or waiting for admission) when it landed would be sequenced
/// exactly where the failed one was, and become durable behind the hole.
#[derive(Clone)]
pub struct AppendSession {
    basin: BasinName,
    stream: StreamName,
    key: Option<KeyMaterial>,
    failure: SessionFailure,
}

impl AppendSession {
    /// Whether one of the session's appends has been refused or has failed. Exact on the
    /// stream's owner; elsewhere it may lag, which only delays when the session stops
    /// reading input.
    pub fn has_failed(&self) -> bool {
        self.failure.get().is_some()
    }
}

/// The first error of a session's appends. The refusal or failure of one input and the
/// sequencing of the next both run on the stream's owner, which checks this right before
/// sequencing: whichever comes first, no input is sequenced after a failure of its
/// session. It is shared (`Arc`, `OnceLock`) only so that the session's handle can travel
/// to the owner and back.
#[derive(Clone, Default)]
struct SessionFailure(Arc<OnceLock<EngineError>>);

impl SessionFailure {
    fn get(&self) -> Option<&EngineError> {
        self.0.get()
    }

    /// Keep the first error; later ones follow from it.
    fn set(&self, error: &EngineError) {
        let _ = self.0.set(error.clone());
    }
}

/// What an append in the pipeline waits with: whom to answer, what its followers get, and
/// the session a refusal ends.
struct Waiter {
    reply: oneshot::Sender<Result<AppendAck>>,
    records: Vec<SequencedRecord>,
    session: SessionFailure,
    _permit: Option<StaticPermit>,
}

pub(crate) struct Streamer {
    pub(crate) names: StreamKey,
    pub(crate) meta: StreamMeta,
    /// Sequencing and release; its durable state is what readers and check-tail see.
    pipeline: Pipeline<Waiter>,
    followers: Vec<mpsc::Sender<ReadBatch>>,
    writer: Rc<SegmentWriter>,
    clock: Clock,
    /// Set when the durable trim point moved; the background cleanup clears it.
    pub(crate) trim_advanced: bool,
    /// The cleanup's failures in a row, and when it may be tried again after the last.
    pub(crate) trim_backoff: Backoff,
    pub(crate) trim_retry_at: Option<Instant>,
}

impl Streamer {
    pub(crate) fn new(
        names: StreamKey,
        meta: StreamMeta,
        state: StreamState,
        writer: Rc<SegmentWriter>,
        clock: Clock,
    ) -> Streamer {
        let state_trim_point = state.trim_point;
        Streamer {
            names,
            meta,
            pipeline: Pipeline::new(state),
            followers: Vec::new(),
            writer,
            clock,
            // A trim point from before a restart may still have records below it.
            trim_advanced: state_trim_point > 0,
            trim_backoff: Backoff::default(),
            trim_retry_at: None,
        }
    }

    /// Readers tailing this stream live.
    pub(crate) fn follower_count(&self) -> usize {
        self.followers.iter().filter(|f| !f.is_closed()).count()
    }

    /// Whether this streamer holds nothing that storage does not.
    fn is_idle(&self) -> bool {
        self.pipeline.is_empty() && self.follower_count() == 0 && !self.trim_advanced
    }

    pub(crate) fn durable_tail(&self) -> Position {
        self.pipeline.durable().tail
    }

    pub(crate) fn durable_trim_point(&self) -> u64 {
        self.pipeline.durable().trim_point
    }

    pub(crate) fn durable_state(&self) -> &StreamState {
        self.pipeline.durable()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.pipeline.generation()
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.meta.deleted_at.is_some()
    }

    /// Replace the metadata after a control-plane change; a deletion ends the followers.
    pub(crate) fn set_meta(&mut self, meta: StreamMeta) {
        if meta.deleted_at.is_some() {
            self.followers.clear();
        }
        self.meta = meta;
    }

    fn reject(
        &mut self,
        error: EngineError,
        reply: oneshot::Sender<Result<AppendAck>>,
        session: &SessionFailure,
    ) {
        session.set(&error);
        let waiter = Waiter {
            reply,
            records: Vec::new(),
            session: session.clone(),
            _permit: None,
        };
        let released = self.pipeline.reject(error, waiter);
        self.deliver(released);
    }

    /// Check and sequence `batch`, the next append of `session`, queue its write, and
    /// return its pending ack. Refused once the session has failed; any error here ends
    /// the session too.
    fn submit(
        this: &Rc<RefCell<Streamer>>,
        batch: AppendBatch,
        session: &AppendSession,
        permit: StaticPermit,
    ) -> Result<PendingAck> {
        if let Some(error) = session.failure.get() {
            return Err(error.clone());
        }
        let submitted = Self::sequence(this, batch, session, permit);
        if let Err(error) = &submitted {
            session.failure.set(error);
        }
        submitted
    }

    fn sequence(
        this: &Rc<RefCell<Streamer>>,
        batch: AppendBatch,
        session: &AppendSession,
        permit: StaticPermit,
    ) -> Result<PendingAck> {
        let mut s = this.borrow_mut();
        if s.is_deleted() {
            return Err(EngineError::StreamDeletionPending {
                basin: session.basin.clone(),
                stream: session.stream.clone(),
            });
        }
        let key = stream_key(s.meta.cipher, session.key.as_ref())?;
        if let Some((Cipher::Aes256Gcm, _)) = &key {
            // Each sealed record's position is part of what AES-GCM authenticates; the
            // format allows 32-bit positions.
            let first = s.pipeline.assigned().tail.seq_num;
            for (i, record) in batch.records().iter().enumerate() {
                let seq_num = first.saturating_add(i as u64);
                if record.command().is_none() && seq_num > AES_GCM_SEQ_NUM_MAX {
                    return Err(EngineError::Invalid(format!(
                        "max assignable sequence number is {AES_GCM_SEQ_NUM_MAX}; attempted {seq_num}"
                    )));
                }
            }
        }
        let (reply, ack) = oneshot::channel();
        if let Err(condition) = s
            .pipeline
            .check(batch.fencing_token.as_ref(), batch.match_seq_num)
        {
            s.reject(
                EngineError::ConditionFailed(condition),
                reply,
                &session.failure,
            );
            return Ok(PendingAck {
                ack,
                rejected: true,
            });
        }
        let config = &s.meta.config;
        let mode = config.timestamping_mode;
        if mode == TimestampingMode::ClientRequire
            && batch.records().iter().any(|r| r.timestamp.is_none())
        {
            return Err(EngineError::Invalid(
                "record timestamp was required but was missing".to_owned(),
            ));
        }
        let uncapped = config.timestamping_uncapped;
        let arrival = s.clock.now_millis();
        let expires_at_ms = match config.retention_policy {
            RetentionPolicy::Age(secs) => {
                Some(arrival.saturating_add(secs.get().saturating_mul(1000)))
            }
            RetentionPolicy::Infinite => None,
        };
        let id = s.meta.id.0;
        let sealing = match &key {
            Some((cipher, key)) => codec::Sealing::Sealed {
                cipher: *cipher,
                key,
                stream_id: id,
            },
            None => codec::Sealing::Plain,
        };
        let first = s.pipeline.assigned().tail.seq_num;
        first
            .checked_add(batch.len() as u64)
            .ok_or_else(|| EngineError::Invalid("sequence numbers exhausted".to_owned()))?;

        let mut after = s.pipeline.assigned().clone();
        let mut running_max = after.tail.timestamp;
        let inline: usize = batch
            .records()
            .iter()
            .map(|r| codec::encoded_len_hint(&r.headers, &r.body))
            .sum();
        let mut chunks = ChunkWriter::with_capacity(inline.min(64 << 10));
        let metered_bytes = batch.metered_bytes() as u64;
        let mut records = Vec::with_capacity(batch.len());
        for (i, record) in batch.into_records().into_iter().enumerate() {
            let seq_num = first + i as u64;
            let wanted = match mode {
                TimestampingMode::Arrival => arrival,
                TimestampingMode::ClientPrefer | TimestampingMode::ClientRequire => {
                    record.timestamp.unwrap_or(arrival)
                }
            };
            let capped = if uncapped {
                wanted
            } else {
                wanted.min(arrival)
            };
            let timestamp = capped.max(running_max);
            running_max = timestamp;
            match record.command() {
                Some(Command::Fence(token)) => after.fencing_token = token,
                Some(Command::Trim(to)) => {
                    after.trim_point = after.trim_point.max(to.min(seq_num + 1));
                }
                None => {}
            }
            // Command records stay in the clear: the server must read them back without a key.
            let record_sealing = if record.command().is_some() {
                &codec::Sealing::Plain
            } else {
                &sealing
            };
            codec::encode_record_into(
                &mut chunks,
                record_sealing,
                seq_num,
                timestamp,
                expires_at_ms,
                &record.headers,
                &record.body,
            );
            records.push(SequencedRecord {
                seq_num,
                timestamp,
                headers: record.headers,
                body: record.body,
            });
        }
        after.tail = Position {
            seq_num: first + records.len() as u64,
            timestamp: running_max,
        };
        after.last_write_ms = arrival;
        let mut markers = Vec::new();
        if after.trim_point > s.pipeline.assigned().trim_point {
            // Removal of the trimmed records is queued durably with the trim itself.
            markers.push(keys::trim_cleanup(&s.names.0, &s.names.1));
            let min_age = s.meta.config.delete_on_empty_min_age_secs;
            if min_age > 0 {
                let at = arrival.saturating_add(min_age.saturating_mul(1000));
                markers.push(keys::doe_deadline(at, &s.names.0, &s.names.1));
            }
        }
        let start = Position {
            seq_num: first,
            timestamp: records[0].timestamp,
        };
        let state = after.clone();
        let record_count = records.len() as u32;
        let waiter = Waiter {
            reply,
            records,
            session: session.failure.clone(),
            _permit: Some(permit),
        };
        let ticket = s.pipeline.sequence(start, after, waiter);
        let part = Part {
            streamer: this.clone(),
            stream_id: id,
            generation: ticket.generation,
            ticket: ticket.number,
            class: StorageClass::named(&s.meta.config.storage_class),
            first_seq_num: first,
            record_count,
            bytes: chunks.len(),
            metered_bytes,
            chunks: chunks.finish(),
            last_timestamp: running_max,
            expires_at_ms,
            state,
            markers,
        };
        s.writer.append(part);
        Ok(PendingAck {
            ack,
            rejected: false,
        })
    }

    /// Record the outcome of one durable write; `tickets` are its appends', ascending.
    pub(crate) fn complete(&mut self, tickets: &[u64], result: Result<()>) {
        let released = self.pipeline.complete(tickets, result);
        self.deliver(released);
    }

    /// Answer what the pipeline released, in its order, and feed acked records to the
    /// followers.
    fn deliver(&mut self, released: Vec<Released<Waiter>>) {
        for outcome in released {
            match outcome {
                Released::Acked {
                    ack,
                    trimmed,
                    payload,
                } => {
                    if trimmed {
                        self.trim_advanced = true;
                    }
                    let _ = payload.reply.send(Ok(ack));
                    let live = ReadBatch {
                        records: payload.records,
                        tail: Some(ack.tail),
                    };
                    self.followers
                        .retain_mut(|f| f.try_send(live.clone()).is_ok());
                }
                Released::Refused { error, payload } => {
                    payload.session.set(&error);
                    let _ = payload.reply.send(Err(error));
                }
            }
        }
    }
}

impl Shard {
    /// The streamer of a stream owned by this shard, loading it on first use. `None` if
    /// the stream does not exist.
    pub(crate) async fn streamer(
        self: &Rc<Self>,
        basin: &BasinName,
        stream: &StreamName,
    ) -> Result<Option<Rc<RefCell<Streamer>>>> {
        let key = (basin.clone(), stream.clone());
        if let Some(s) = self.streamers.borrow_mut().get(&key) {
            return Ok(Some(s.clone()));
        }
        let _guard = self.stream_locks.lock(key.clone()).await;
        self.load_streamer_locked(&key).await
    }

    /// Load a streamer; the caller holds the stream's lock.
    pub(crate) async fn load_streamer_locked(
        &self,
        key: &StreamKey,
    ) -> Result<Option<Rc<RefCell<Streamer>>>> {
        if let Some(s) = self.streamers.borrow_mut().get(key) {
            return Ok(Some(s.clone()));
        }
        let Some(meta) = self.stream_meta(&key.0, &key.1).await? else {
            return Ok(None);
        };
        let state_key = keys::stream_state(meta.id.0);
        let state = match self.storage.get(state_key.clone()).await? {
            Some(v) => codec::decode_state(v).map_err(|e| {
                EngineError::Storage(crate::error::StorageError::Corrupt {
                    key: state_key.to_vec(),
                    reason: e.0.to_owned(),
                })
            })?,
            None => StreamState::default(),
        };
        let streamer = Rc::new(RefCell::new(Streamer::new(
            key.clone(),
            meta,
            state,
            self.segment_writer.clone(),
            self.clock.clone(),
        )));
        self.streamers
            .borrow_mut()
            .put(key.clone(), streamer.clone());
        self.evict_idle_streamers();
        Ok(Some(streamer))
    }

    /// Unload idle streamers, least recently used first, until at most
    /// `EngineOptions::streamers_max` are loaded. Idle means that nothing but this map
    /// holds it (no append in the writer, no read session or background job), and it has
    /// no append in flight, no follower and no trim cleanup pending: its state is then
    /// exactly what storage holds, so reloading it later loses nothing. Busy streamers
    /// stay loaded, past the bound if need be.
    fn evict_idle_streamers(&self) {
        let mut streamers = self.streamers.borrow_mut();
        let excess = streamers.len().saturating_sub(self.options.streamers_max);
        if excess == 0 {
            return;
        }
        let idle: Vec<StreamKey> = streamers
            .iter()
            .rev()
            .filter(|(_, s)| Rc::strong_count(s) == 1 && s.borrow().is_idle())
            .take(excess)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &idle {
            streamers.pop(key);
        }
    }

    /// Keep a loaded streamer's metadata in step with a control-plane change.
    pub(crate) fn refresh_streamer(&self, key: &StreamKey, meta: Option<&StreamMeta>) {
        let mut streamers = self.streamers.borrow_mut();
        match meta {
            Some(meta) => {
                if let Some(s) = streamers.peek(key) {
                    s.borrow_mut().set_meta(meta.clone());
                }
            }
            None => {
                if let Some(s) = streamers.pop(key) {
                    s.borrow_mut().followers.clear();
                }
            }
        }
    }

    /// The streamer for a read or append, creating the stream first when it is missing
    /// and the basin allows it (`auto_create` carries the config to create it with).
    async fn streamer_or_create(
        self: &Rc<Self>,
        basin: &BasinName,
        stream: &StreamName,
        auto_create: AutoCreate,
    ) -> Result<Rc<RefCell<Streamer>>> {
        if let Some(s) = self.streamer(basin, stream).await? {
            return Ok(s);
        }
        self.create_for_data(basin, stream, auto_create).await?;
        self.streamer(basin, stream)
            .await?
            .ok_or_else(|| EngineError::StreamNotFound {
                basin: basin.clone(),
                stream: stream.clone(),
            })
    }

    /// Append `batch` on its own; returns once it is sequenced, with an ack that resolves
    /// once it is durable. Runs on the stream's owner.
    pub async fn append(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
        batch: AppendBatch,
        key: Option<KeyMaterial>,
        auto_create: AutoCreate,
    ) -> Result<PendingAck> {
        let session = AppendSession {
            basin,
            stream,
            key,
            failure: SessionFailure::default(),
        };
        self.append_in_order(&session, vec![batch], auto_create)
            .await
            .pop()
            .unwrap_or(Err(EngineError::Unavailable("the append was dropped")))
    }

    /// Append `batches` in order, as the session's next appends, with one trip to the
    /// stream's owner for all of them. Stops at the first that fails or is rejected (and
    /// so ends the session): the results cover the batches up to and including that one.
    /// Once the session has failed, refuses at once with its first error.
    pub async fn append_in_order(
        self: &Rc<Self>,
        session: &AppendSession,
        batches: Vec<AppendBatch>,
        auto_create: AutoCreate,
    ) -> Vec<Result<PendingAck>> {
        let owner = self.placement.stream_owner(&session.basin, &session.stream);
        if owner == self.id {
            return match self
                .streamer_or_create(&session.basin, &session.stream, auto_create)
                .await
            {
                Ok(streamer) => self.admit_in_order(&streamer, session, batches).await,
                Err(error) => {
                    session.failure.set(&error);
                    vec![Err(error)]
                }
            };
        }
        let trip = session.clone();
        let admitted = self
            .on_owner(owner, move |shard| async move {
                let streamer = shard
                    .streamer_or_create(&trip.basin, &trip.stream, auto_create)
                    .await?;
                // Room in the budget now (the common case): admitted and sequenced in this
                // job, answered in its one reply. Otherwise a task of its own waits, so
                // that the wait holds no job slot: scrapes, usage flushes and revocations
                // would queue behind appends.
                let units: u64 = batches.iter().map(|b| shard.admission_units_of(b)).sum();
                if shard.admission.try_acquire(units).unwrap_or(false) {
                    // Given back at once: `admit_in_order` takes them again, batch by
                    // batch, before anything else runs on this thread.
                    shard.admission.signal(units);
                    return Ok(Admission::Now(
                        shard.admit_in_order(&streamer, &trip, batches).await,
                    ));
                }
                let (reply, results) = futures::channel::oneshot::channel();
                glommio::spawn_local(async move {
                    let _ = reply.send(shard.admit_in_order(&streamer, &trip, batches).await);
                })
                .detach();
                Ok(Admission::Later(results))
            })
            .await;
        let results = match admitted {
            Ok(Admission::Now(results)) => Ok(results),
            Ok(Admission::Later(results)) => results
                .await
                .map_err(|_| EngineError::Unavailable("owner shard dropped the request")),
            Err(error) => Err(error),
        };
        results.unwrap_or_else(|error| {
            // Nothing of this trip was sequenced; the session ends all the same.
            session.failure.set(&error);
            vec![Err(error)]
        })
    }

    /// The admission units `batch` takes: its metered bytes, at most the shard's whole
    /// budget (so that a batch larger than it still goes, alone).
    fn admission_units_of(&self, batch: &AppendBatch) -> u64 {
        (batch.metered_bytes() as u64).min(self.admission_units)
    }

    /// On the owner: admit and sequence `batches` one after another, stopping at the first
    /// that fails or is rejected.
    async fn admit_in_order(
        &self,
        streamer: &Rc<RefCell<Streamer>>,
        session: &AppendSession,
        batches: Vec<AppendBatch>,
    ) -> Vec<Result<PendingAck>> {
        let mut results = Vec::with_capacity(batches.len());
        for batch in batches {
            // Admission: wait for room in this shard's share of the in-flight byte budget.
            // An earlier append of the session may fail meanwhile: `submit` checks after
            // the wait, on this thread.
            let units = self.admission_units_of(&batch);
            let waiting = Instant::now();
            let permit = self.admission.acquire_static_permit(units).await;
            self.metrics().admitted(waiting.elapsed());
            let submitted = match permit {
                Ok(permit) => Streamer::submit(streamer, batch, session, permit),
                Err(_) => {
                    let error = EngineError::Unavailable("shard stopping");
                    session.failure.set(&error);
                    Err(error)
                }
            };
            let last = submitted.as_ref().map_or(true, PendingAck::is_rejected);
            results.push(submitted);
            if last {
                break;
            }
        }
        results
    }

    /// Start an append session: the stream exists (or is created as an append would
    /// create it) and the key fits its cipher.
    pub async fn prepare_append(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
        key: Option<KeyMaterial>,
        auto_create: AutoCreate,
    ) -> Result<AppendSession> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let streamer = shard
                .streamer_or_create(&basin, &stream, auto_create)
                .await?;
            let s = streamer.borrow();
            if s.is_deleted() {
                return Err(EngineError::StreamDeletionPending { basin, stream });
            }
            stream_key(s.meta.cipher, key.as_ref())?;
            drop(s);
            Ok(AppendSession {
                basin,
                stream,
                key,
                failure: SessionFailure::default(),
            })
        })
        .await
    }

    /// The durable tail of a stream.
    pub async fn check_tail(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
        auto_create: AutoCreate,
    ) -> Result<Position> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let streamer = shard
                .streamer_or_create(&basin, &stream, auto_create)
                .await?;
            let s = streamer.borrow();
            if s.is_deleted() {
                return Err(EngineError::StreamDeletionPending { basin, stream });
            }
            Ok(s.durable_tail())
        })
        .await
    }
}

/// The cipher and key to seal or open a stream's records with: `None` for streams without
/// a cipher (any key given is ignored); an error when the stream has one and the key is
/// missing or unusable.
pub(crate) fn stream_key(
    cipher: Option<Cipher>,
    material: Option<&KeyMaterial>,
) -> Result<Option<(Cipher, EncryptionKey)>> {
    let Some(cipher) = cipher else {
        return Ok(None);
    };
    let material = material.ok_or_else(|| {
        EngineError::EncryptionKey(format!(
            "missing encryption key for stream cipher '{}'",
            cipher.name()
        ))
    })?;
    let key = material
        .key_for(cipher)
        .map_err(EngineError::EncryptionKey)?;
    Ok(Some((cipher, key)))
}

/// A remote trip's appends: sequenced in the job, or by a task waiting for admission.
enum Admission {
    Now(Vec<Result<PendingAck>>),
    Later(futures::channel::oneshot::Receiver<Vec<Result<PendingAck>>>),
}

/// Whether a data-plane request may create a missing stream, and with what config.
#[derive(Debug, Clone)]
pub enum AutoCreate {
    /// Never create.
    No,
    /// Create if the basin has `create_stream_on_append`.
    OnAppend(crate::config::StreamConfigSpec),
    /// Create if the basin has `create_stream_on_read`.
    OnRead(crate::config::StreamConfigSpec),
}

//! Read sessions. A session runs on the stream's owner shard and sends what it reads into
//! a small bounded channel, so it works the same whether the reader's connection is on
//! the owner or elsewhere, and a reader that stops reading holds at most a few batches.
//!
//! A session catches up from storage up to the durable tail; if it may follow, it then
//! subscribes to the streamer's live feed, heartbeating while idle. A follower that falls
//! too far behind is dropped by the streamer and goes back to catching up from storage.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, SinkExt, StreamExt};

use super::{stream_key, AutoCreate, Streamer, FOLLOWER_BUFFER_BATCHES};
use crate::config::Cipher;
use crate::crypto::{EncryptionKey, KeyMaterial};
use crate::error::{EngineError, Result};
use crate::names::{BasinName, StreamName};
use crate::records::{
    Position, ReadBatch, SequencedRecord, BATCH_METERED_BYTES_MAX, BATCH_RECORDS_MAX,
};
use crate::shard::Shard;
use crate::storage::keys::{self, KeyKind};

/// Heartbeats while following come at a random gap in this range: inside the 5–15 s the
/// protocol allows, with room to spare before clients give up after 20 s of silence.
const HEARTBEAT_MIN: Duration = Duration::from_secs(5);
const HEARTBEAT_MAX: Duration = Duration::from_secs(10);
/// Items a session may have ready before it waits for the reader.
const SESSION_BUFFER_ITEMS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStart {
    SeqNum(u64),
    Timestamp(u64),
    TailOffset(u64),
}

/// Where a read ends. `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadLimits {
    pub count: Option<u64>,
    pub bytes: Option<u64>,
    /// Exclusive upper bound on record timestamps.
    pub until: Option<u64>,
}

impl ReadLimits {
    fn bounded(&self) -> bool {
        self.count.is_some() || self.bytes.is_some() || self.until.is_some()
    }

    fn exhausted(&self) -> bool {
        self.count == Some(0) || self.bytes == Some(0)
    }
}

#[derive(Debug, Clone)]
pub struct ReadRequest {
    pub start: ReadStart,
    pub clamp: bool,
    pub limits: ReadLimits,
    /// How long a following session may stay without records before it ends; `None`
    /// follows forever (if it may follow at all).
    pub wait: Option<Duration>,
    /// The key for streams with a cipher.
    pub key: Option<KeyMaterial>,
}

impl ReadRequest {
    /// A session may follow live appends iff it is unbounded or has a positive wait.
    fn may_follow(&self) -> bool {
        !self.limits.bounded() || self.wait.is_some_and(|w| !w.is_zero())
    }
}

/// What a session delivers.
#[derive(Debug)]
pub enum ReadItem {
    /// Records; `tail` is set when they came from the live feed.
    Batch(ReadBatch),
    /// The session is caught up and following; the current durable tail.
    Heartbeat(Position),
    /// The session failed; nothing follows.
    Error(EngineError),
}

/// The receiving end of a session; it ends when the session does. Dropping it ends the
/// session on the owner at once, even while it waits for live records.
pub struct ReadSession {
    pub items: mpsc::Receiver<ReadItem>,
    /// Dropped with the session, which is what tells the owner.
    _alive: oneshot::Sender<()>,
}

impl Shard {
    /// Open a read: resolve the start against the durable tail (errors such as 416 come
    /// back here, before anything is streamed) and start the session on the owner.
    pub async fn read(
        self: &Rc<Self>,
        basin: BasinName,
        stream: StreamName,
        request: ReadRequest,
        auto_create: AutoCreate,
    ) -> Result<ReadSession> {
        let owner = self.placement.stream_owner(&basin, &stream);
        self.on_owner(owner, move |shard| async move {
            let streamer = shard
                .streamer_or_create(&basin, &stream, auto_create)
                .await?;
            if streamer.borrow().is_deleted() {
                return Err(EngineError::StreamDeletionPending { basin, stream });
            }
            let cipher = streamer.borrow().meta.cipher;
            let key = stream_key(cipher, request.key.as_ref())?;
            let (tx, rx) = mpsc::channel(SESSION_BUFFER_ITEMS);
            let (alive, gone) = oneshot::channel();
            if request.limits.exhausted() {
                return Ok(ReadSession {
                    items: rx,
                    _alive: alive,
                });
            }
            let start = shard
                .resolve_start(&streamer, &request, key.as_ref())
                .await?;
            let session = Session {
                shard: shard.clone(),
                names: (basin, stream),
                streamer,
                next: start,
                limits: request.limits,
                may_follow: request.may_follow(),
                wait: request.wait,
                key,
                tx,
                gone,
            };
            glommio::spawn_local(session.run()).detach();
            Ok(ReadSession {
                items: rx,
                _alive: alive,
            })
        })
        .await
    }

    async fn resolve_start(
        &self,
        streamer: &Rc<RefCell<Streamer>>,
        request: &ReadRequest,
        key: Option<&(Cipher, EncryptionKey)>,
    ) -> Result<u64> {
        let (tail, id) = {
            let s = streamer.borrow();
            (s.durable_tail(), s.meta.id.0)
        };
        let start = match request.start {
            ReadStart::SeqNum(n) if n > tail.seq_num => {
                if request.clamp {
                    tail.seq_num
                } else {
                    return Err(EngineError::Unwritten(tail));
                }
            }
            ReadStart::SeqNum(n) => n,
            ReadStart::Timestamp(t) if t > tail.timestamp => {
                if request.clamp {
                    tail.seq_num
                } else {
                    return Err(EngineError::Unwritten(tail));
                }
            }
            ReadStart::Timestamp(t) => self
                .first_seq_at_or_after(id, t, tail.seq_num, key)
                .await?
                .unwrap_or(tail.seq_num),
            ReadStart::TailOffset(k) => tail.seq_num.saturating_sub(k),
        };
        if start >= tail.seq_num && !request.may_follow() {
            return Err(EngineError::Unwritten(tail));
        }
        Ok(start)
    }

    /// The seq_num of the first stored record with timestamp ≥ `t`, below `end`.
    async fn first_seq_at_or_after(
        &self,
        id: u128,
        t: u64,
        end: u64,
        key: Option<&(Cipher, EncryptionKey)>,
    ) -> Result<Option<u64>> {
        let range = keys::stream_id_range(KeyKind::TimestampIndex, id);
        let from = keys::timestamp_index(id, t, 0);
        let entries = self.storage.scan(from..range.end, 1).await?;
        let Some((entry, _)) = entries.first() else {
            return Ok(None);
        };
        let Some((_, batch_first)) = keys::timestamp_index_entry(entry) else {
            return Ok(None);
        };
        // The batch may start before `t`: scan its records for the first at or after it.
        let mut next = batch_first;
        while next < end {
            let (records, after) = self
                .scan_records(
                    id,
                    next,
                    end,
                    BATCH_RECORDS_MAX,
                    BATCH_METERED_BYTES_MAX,
                    key,
                )
                .await?;
            if let Some(found) = records.iter().find(|r| r.timestamp >= t) {
                return Ok(Some(found.seq_num));
            }
            next = after;
        }
        Ok(None)
    }
}

struct Session {
    shard: Rc<Shard>,
    names: (BasinName, StreamName),
    streamer: Rc<RefCell<Streamer>>,
    next: u64,
    limits: ReadLimits,
    may_follow: bool,
    wait: Option<Duration>,
    key: Option<(Cipher, EncryptionKey)>,
    tx: mpsc::Sender<ReadItem>,
    /// Completes when the reader drops its end.
    gone: oneshot::Receiver<()>,
}

/// Whether the session goes on after delivering something.
enum Flow {
    Continue,
    Done,
}

impl Session {
    async fn run(mut self) {
        if let Err(e) = self.run_inner().await {
            let _ = self.tx.send(ReadItem::Error(e)).await;
        }
    }

    async fn run_inner(&mut self) -> Result<()> {
        loop {
            if let Flow::Done = self.catch_up().await? {
                return Ok(());
            }
            if !self.may_follow {
                return Ok(());
            }
            if let Flow::Done = self.follow().await? {
                return Ok(());
            }
        }
    }

    fn deleted(&self) -> EngineError {
        EngineError::StreamDeletionPending {
            basin: self.names.0.clone(),
            stream: self.names.1.clone(),
        }
    }

    /// Read stored records up to the durable tail.
    async fn catch_up(&mut self) -> Result<Flow> {
        loop {
            let (tail, trim, id, deleted) = {
                let s = self.streamer.borrow();
                (
                    s.durable_tail(),
                    s.durable_trim_point(),
                    s.meta.id.0,
                    s.is_deleted(),
                )
            };
            if deleted {
                return Err(self.deleted());
            }
            self.next = self.next.max(trim);
            if self.next >= tail.seq_num {
                return Ok(Flow::Continue);
            }
            let max_records = self
                .limits
                .count
                .map_or(BATCH_RECORDS_MAX, |c| (c as usize).min(BATCH_RECORDS_MAX));
            let max_bytes = self.limits.bytes.map_or(BATCH_METERED_BYTES_MAX, |b| {
                (b as usize).min(BATCH_METERED_BYTES_MAX)
            });
            let (records, after) = self
                .shard
                .scan_records(
                    id,
                    self.next,
                    tail.seq_num,
                    max_records,
                    max_bytes,
                    self.key.as_ref(),
                )
                .await?;
            if records.is_empty() {
                // Only expired or removed records in this stretch: skip it.
                self.next = after;
                continue;
            }
            if let Flow::Done = self.deliver(records, None).await {
                return Ok(Flow::Done);
            }
        }
    }

    /// Take what fits the limits from `records`, send it, and say whether to go on.
    async fn deliver(&mut self, records: Vec<SequencedRecord>, tail: Option<Position>) -> Flow {
        let mut batch = Vec::with_capacity(records.len());
        let mut batch_bytes = 0usize;
        let mut done = false;
        for record in records {
            if record.seq_num < self.next {
                continue;
            }
            let size = record.metered_bytes() as u64;
            let over_count = self.limits.count == Some(0);
            let over_bytes = self.limits.bytes.is_some_and(|b| size > b);
            let over_until = self.limits.until.is_some_and(|u| record.timestamp >= u);
            let over_batch = batch.len() >= BATCH_RECORDS_MAX
                || batch_bytes + size as usize > BATCH_METERED_BYTES_MAX;
            if over_count || over_bytes || over_until {
                done = true;
                break;
            }
            if over_batch {
                break;
            }
            self.next = record.seq_num + 1;
            batch_bytes += size as usize;
            if let Some(c) = self.limits.count.as_mut() {
                *c -= 1;
            }
            if let Some(b) = self.limits.bytes.as_mut() {
                *b -= size;
            }
            batch.push(record);
        }
        done |= self.limits.exhausted();
        if !batch.is_empty() {
            let item = ReadItem::Batch(ReadBatch {
                records: batch,
                tail,
            });
            if self.tx.send(item).await.is_err() {
                return Flow::Done;
            }
        }
        if done {
            Flow::Done
        } else {
            Flow::Continue
        }
    }

    /// The records of a live batch as this reader may see them. A sealed stream's live
    /// records are read back from storage with this reader's key, so a reader with a
    /// wrong key gets a decryption failure, never another writer's plaintext.
    async fn live_records(
        &self,
        records: Vec<SequencedRecord>,
        tail: Option<Position>,
    ) -> Result<Vec<SequencedRecord>> {
        let (Some(key), Some(tail)) = (&self.key, tail) else {
            return Ok(records);
        };
        let id = self.streamer.borrow().meta.id.0;
        let from = self.next;
        let (records, _) = self
            .shard
            .scan_records(
                id,
                from,
                tail.seq_num,
                BATCH_RECORDS_MAX,
                BATCH_METERED_BYTES_MAX,
                Some(key),
            )
            .await?;
        Ok(records)
    }

    /// Follow the live feed until the limits or the wait end the session, or the follower
    /// falls behind (then the caller catches up again).
    async fn follow(&mut self) -> Result<Flow> {
        if self.wait.is_some_and(|w| w.is_zero()) {
            // Allowed to follow but not to wait: caught up is the end.
            return Ok(Flow::Done);
        }
        let (feed_tx, mut feed) = mpsc::channel(FOLLOWER_BUFFER_BATCHES);
        let tail = {
            let mut s = self.streamer.borrow_mut();
            if s.is_deleted() {
                return Err(self.deleted());
            }
            let tail = s.durable_tail();
            if tail.seq_num > self.next {
                // Appends became durable while catching up: read them from storage first.
                return Ok(Flow::Continue);
            }
            s.followers.push(feed_tx);
            tail
        };
        if self.tx.send(ReadItem::Heartbeat(tail)).await.is_err() {
            return Ok(Flow::Done);
        }
        let mut deadline = self.wait.map(|w| Instant::now() + w);
        loop {
            let heartbeat = glommio::timer::sleep(heartbeat_gap()).fuse();
            let armed = deadline;
            let expiry = async move {
                match armed {
                    Some(at) => {
                        glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await
                    }
                    None => futures::future::pending::<()>().await,
                }
            }
            .fuse();
            futures::pin_mut!(heartbeat, expiry);
            futures::select_biased! {
                live = feed.next() => match live {
                    Some(batch) => {
                        let records = self.live_records(batch.records, batch.tail).await?;
                        if let Flow::Done = self.deliver(records, batch.tail).await {
                            return Ok(Flow::Done);
                        }
                        deadline = self.wait.map(|w| Instant::now() + w);
                    }
                    // Dropped: fell behind, or the stream is going away.
                    None => return Ok(Flow::Continue),
                },
                () = expiry => return Ok(Flow::Done),
                _ = (&mut self.gone).fuse() => return Ok(Flow::Done),
                () = heartbeat => {
                    let tail = self.streamer.borrow().durable_tail();
                    if self.tx.send(ReadItem::Heartbeat(tail)).await.is_err() {
                        return Ok(Flow::Done);
                    }
                }
            }
        }
    }
}

fn heartbeat_gap() -> Duration {
    let mut b = [0u8; 8];
    let jitter = match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    };
    let span = (HEARTBEAT_MAX - HEARTBEAT_MIN).as_millis() as u64;
    HEARTBEAT_MIN + Duration::from_millis(jitter % span.max(1))
}

//! Running engine scenarios on real shards over a chosen object store.

#[allow(dead_code)] // not every test binary injects faults
pub mod faulty_store;

use std::future::Future;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use slatedb::object_store::ObjectStore;
use sluice_shards::executors::spawn_shards;
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::records::{AppendBatch, AppendRecord, Header, SequencedRecord};
use sluice_shards::storage::{Sidecar, Storage, DB_PATH};
use sluice_shards::streamer::{AutoCreate, ReadItem, ReadLimits, ReadRequest, ReadStart};
use sluice_shards::EngineError;
use sluice_shards::{EngineOptions, Shard};

/// Run `scenario` on a single shard over `store` and return what it produced. The
/// scenario also gets the raw storage handle, to check what is stored.
#[allow(dead_code)] // each test binary uses one of the two entry points
pub fn on_one_shard<T, F, Fut>(
    store: Arc<dyn ObjectStore>,
    options: EngineOptions,
    scenario: F,
) -> T
where
    T: Send + 'static,
    F: Fn(Rc<Shard>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    with_storage(store, options, move |shard, _| scenario(shard))
}

pub fn with_storage<T, F, Fut>(
    store: Arc<dyn ObjectStore>,
    options: EngineOptions,
    scenario: F,
) -> T
where
    T: Send + 'static,
    F: Fn(Rc<Shard>, Storage) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    on_shards(1, store, None, options, scenario)
}

/// Like [`with_storage`], with the log's commits in a write-ahead store of their own.
#[allow(dead_code)] // not every test binary has a write-ahead store
pub fn with_wal_storage<T, F, Fut>(
    store: Arc<dyn ObjectStore>,
    wal: Arc<dyn ObjectStore>,
    options: EngineOptions,
    scenario: F,
) -> T
where
    T: Send + 'static,
    F: Fn(Rc<Shard>, Storage) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    on_shards(1, store, Some(wal), options, scenario)
}

/// Run `scenario` on shard 0 of two shards over `store`, with the raw storage handle; shard
/// 1 serves what shard 0 sends it until the scenario is done.
#[allow(dead_code)] // each test binary uses one of the entry points
pub fn on_two_shards<T, F, Fut>(
    store: Arc<dyn ObjectStore>,
    options: EngineOptions,
    scenario: F,
) -> T
where
    T: Send + 'static,
    F: Fn(Rc<Shard>, Storage) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    on_shards(2, store, None, options, scenario)
}

/// Run `scenario` on shard 0 of `count` shards; the others serve what it sends them until
/// it is done.
fn on_shards<T, F, Fut>(
    count: usize,
    store: Arc<dyn ObjectStore>,
    wal: Option<Arc<dyn ObjectStore>>,
    options: EngineOptions,
    scenario: F,
) -> T
where
    T: Send + 'static,
    F: Fn(Rc<Shard>, Storage) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = T> + 'static,
{
    let sidecar = Sidecar::open_with_stores(store, wal, DB_PATH, 2).expect("open storage");
    let storage = sidecar.storage();
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let handles = spawn_shards(count, sidecar.storage(), options, move |shard| {
        let (tx, scenario, storage) = (tx.clone(), scenario.clone(), storage.clone());
        let (done_tx, mut done_rx) = (done_tx.clone(), done_rx.clone());
        async move {
            if shard.id() == 0 {
                let _ = tx.send(scenario(shard, storage).await);
                let _ = done_tx.send(true);
            } else {
                let _ = done_rx.wait_for(|done| *done).await;
            }
        }
    })
    .expect("start shards");
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("scenario finished in time");
    for h in handles {
        h.join().expect("shards exit cleanly");
    }
    // A database whose writes failed may refuse to close cleanly; that is expected.
    let _ = sidecar.close();
    out
}

/// Up to 1000 records of a stream from `seq_num` on, reading only what is there (no
/// following); empty if the start is at the tail.
#[allow(dead_code)] // not every test binary reads
pub async fn read_from(
    shard: &Rc<Shard>,
    basin: BasinName,
    stream: StreamName,
    seq_num: u64,
) -> Vec<SequencedRecord> {
    let request = ReadRequest {
        start: ReadStart::SeqNum(seq_num),
        clamp: true,
        limits: ReadLimits {
            count: Some(1000),
            ..Default::default()
        },
        wait: None,
        key: None,
    };
    let mut session = match shard.read(basin, stream, request, AutoCreate::No).await {
        Ok(s) => s,
        Err(EngineError::Unwritten(_)) => return Vec::new(),
        Err(e) => panic!("read failed: {e}"),
    };
    let mut out = Vec::new();
    while let Some(item) = session.items.next().await {
        match item {
            ReadItem::Batch(b) => out.extend(b.records),
            ReadItem::Heartbeat(_) => {}
            ReadItem::Error(e) => panic!("read failed: {e}"),
        }
    }
    out
}

/// Poll `check` until it holds, for up to `limit`.
#[allow(dead_code)] // not every test binary waits
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A batch of one trim command record.
#[allow(dead_code)] // not every test binary trims
pub fn trim_to(seq_num: u64) -> AppendBatch {
    let trim = AppendRecord {
        timestamp: None,
        headers: vec![Header {
            name: Bytes::new(),
            value: Bytes::from_static(b"trim"),
        }],
        body: Bytes::copy_from_slice(&seq_num.to_be_bytes()),
    };
    AppendBatch::new(vec![trim], None, None).unwrap()
}

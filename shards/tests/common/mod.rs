//! Running engine scenarios on real shards over a chosen object store.

use std::future::Future;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use slatedb::object_store::ObjectStore;
use sluice_shards::executors::spawn_shards;
use sluice_shards::storage::{Sidecar, Storage, DB_PATH};
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
    let sidecar = Sidecar::open_with_store(store, DB_PATH, 2).expect("open storage");
    let storage = sidecar.storage();
    let (tx, rx) = mpsc::channel();
    let handles = spawn_shards(1, sidecar.storage(), options, move |shard| {
        let (tx, scenario, storage) = (tx.clone(), scenario.clone(), storage.clone());
        async move {
            let _ = tx.send(scenario(shard, storage).await);
        }
    })
    .expect("start shard");
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("scenario finished in time");
    for h in handles {
        h.join().expect("shard exits cleanly");
    }
    // A database whose writes failed may refuse to close cleanly; that is expected.
    let _ = sidecar.close();
    out
}

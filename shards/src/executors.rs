//! Starting the shards: one glommio `LocalExecutor` per shard, pinned to its own core when
//! there are enough cores, each running the engine's shard and the caller's front end.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorBuilder, Placement as CorePlacement};

use crate::mesh::Mesh;
use crate::placement::Placement;
use crate::shard::{EngineOptions, Shard};
use crate::storage::Storage;

pub use glommio::ExecutorJoinHandle;

/// How long one task queue may run before the executor polls for I/O and wakeups from
/// other threads. glommio's default (100 ms) showed up as a 100 ms tail on acks, which
/// complete by a wakeup from the storage sidecar's threads.
const PREEMPT_TIMER: Duration = Duration::from_millis(2);

/// Memory glommio preallocates and registers for DMA file I/O (10 MiB per shard by
/// default). Shards do only socket I/O, so they take the minimum glommio allows.
const DMA_IO_MEMORY: usize = 64 << 10;

/// Start `shard_count` shards. `front` runs on each shard once its engine part is up; when
/// it returns, that shard's executor stops.
pub fn spawn_shards<F, Fut>(
    shard_count: usize,
    storage: Storage,
    options: EngineOptions,
    front: F,
) -> io::Result<Vec<ExecutorJoinHandle<()>>>
where
    F: Fn(Rc<Shard>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let placement = Placement::new(shard_count);
    let (mesh, inboxes) = Mesh::new(shard_count);
    let cpus: Vec<usize> = CpuSet::online()
        .map(|set| set.iter().map(|c| c.cpu).collect())
        .unwrap_or_default();
    let pin = cpus.len() >= shard_count;
    let mut handles = Vec::with_capacity(shard_count);
    for (id, inbox) in inboxes.into_iter().enumerate() {
        let core = if pin {
            CorePlacement::Fixed(cpus[id])
        } else {
            CorePlacement::Unbound
        };
        let (placement, mesh, storage, options, front) = (
            placement.clone(),
            mesh.clone(),
            storage.clone(),
            options.clone(),
            front.clone(),
        );
        let handle = LocalExecutorBuilder::new(core)
            .name(&format!("sluice-shard-{id}"))
            .preempt_timer(PREEMPT_TIMER)
            .io_memory(DMA_IO_MEMORY)
            .spawn(move || async move {
                let shard = Shard::start(id, placement, mesh, inbox, storage, options);
                front(shard).await;
            })
            .map_err(|e| io::Error::other(e.to_string()))?;
        handles.push(handle);
    }
    Ok(handles)
}

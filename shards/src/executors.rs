//! Starting the shards: one glommio `LocalExecutor` per shard, pinned to its own core when
//! there are enough cores, each running the engine's shard and the caller's front end.

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorBuilder, Placement as CorePlacement};

use crate::mesh::Mesh;
use crate::placement::Placement;
use crate::segments::log::committer;
use crate::segments::log::recover::{forget_lost_commits, recover};
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
    // Before any shard serves: fence the log and replay what the index lacks.
    let start = storage
        .runtime()
        .block_on(recover(&storage, &options.clock))
        .map_err(|e| io::Error::other(format!("recovering the log: {e}")))?;
    storage
        .runtime()
        .block_on(forget_lost_commits(&storage))
        .map_err(|e| io::Error::other(format!("checking the write-ahead store: {e}")))?;
    storage
        .runtime()
        .block_on(crate::usage::migrate_minute_layout(&storage))
        .map_err(|e| io::Error::other(format!("moving usage counts to the current layout: {e}")))?;
    let links = committer::start(
        &storage,
        options.clock.clone(),
        options.commit_cadence,
        options.wal_bytes_max,
        shard_count,
        start,
    );
    let cpus: Vec<usize> = CpuSet::online()
        .map(|set| set.iter().map(|c| c.cpu).collect())
        .unwrap_or_default();
    let pin = cpus.len() >= shard_count;
    let mut handles = Vec::with_capacity(shard_count);
    for (id, (inbox, link)) in inboxes.into_iter().zip(links).enumerate() {
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
                let shard = Shard::start(id, placement, mesh, inbox, storage, options, link);
                front(shard).await;
            })
            .map_err(|e| io::Error::other(e.to_string()))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// The locked-memory limit glommio 0.9 requires of the process with the settings above: it
/// checks `RLIMIT_MEMLOCK` itself as each executor starts and refuses to start below it.
const MEMLOCK_NEEDED: u64 = 512 << 10;

/// Why shards cannot run here, in terms of what the operator can change.
#[derive(Debug, thiserror::Error)]
pub enum IoUringUnavailable {
    #[error(
        "io_uring needs {needed} bytes of locked memory but the limit is {limit}: raise it \
         (`ulimit -l unlimited`; in Docker `--ulimit memlock=-1`; in Kubernetes, the \
         container runtime's memlock limit)"
    )]
    MemLock { limit: u64, needed: u64 },
    #[error(
        "io_uring is not permitted ({0}): a seccomp profile blocks it (Docker's default \
         does; run with `--security-opt seccomp=deploy/seccomp-io_uring.json`), or the \
         sysctl kernel.io_uring_disabled is set"
    )]
    Blocked(io::Error),
    #[error("io_uring is not supported by this kernel ({0}): Sluice needs Linux 5.8 or later")]
    Unsupported(io::Error),
    #[error("io_uring cannot be set up: {0}")]
    Other(io::Error),
}

/// Check, before any shard starts, that this process may use io_uring: the locked-memory
/// limit, then setting up (and closing) one small ring.
pub fn check_io_uring() -> Result<(), IoUringUnavailable> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
        && limit.rlim_cur < MEMLOCK_NEEDED
    {
        return Err(IoUringUnavailable::MemLock {
            limit: limit.rlim_cur,
            needed: MEMLOCK_NEEDED,
        });
    }
    // `struct io_uring_params` is 120 bytes; all zero asks for the defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the params buffer, which outlives the
    // call; the descriptor it returns is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => IoUringUnavailable::Blocked(error),
            Some(libc::ENOSYS) => IoUringUnavailable::Unsupported(error),
            _ => IoUringUnavailable::Other(error),
        });
    }
    // SAFETY: `fd` is the ring descriptor just returned, owned by nothing else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

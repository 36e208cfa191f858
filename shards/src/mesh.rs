//! The cross-shard mesh: every shard has one bounded inbox of jobs that any thread may send
//! to. A job is a closure run on the receiving shard with that shard's context, so the code
//! that handles a request is the same whether the caller is local or remote.

use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use crate::placement::ShardId;
use crate::shard::Shard;

/// Jobs queued per shard before senders wait: bounds the memory of cross-shard traffic.
pub const SHARD_INBOX_CAPACITY: usize = 4096;

/// Work for a shard, built on the sending thread and run on the owner.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

#[derive(Clone)]
pub struct Mesh {
    inboxes: Arc<[flume::Sender<Job>]>,
}

pub struct Inbox(pub(crate) flume::Receiver<Job>);

impl Mesh {
    pub fn new(shard_count: usize) -> (Mesh, Vec<Inbox>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shard_count)
            .map(|_| flume::bounded(SHARD_INBOX_CAPACITY))
            .unzip();
        (
            Mesh {
                inboxes: senders.into(),
            },
            receivers.into_iter().map(Inbox).collect(),
        )
    }

    /// Queue `job` on `shard`. Fails only when that shard has stopped.
    pub async fn send(&self, shard: ShardId, job: Job) -> Result<(), ()> {
        self.inboxes[shard].send_async(job).await.map_err(|_| ())
    }

    /// Jobs queued on `shard` and not yet taken.
    pub(crate) fn inbox_depth(&self, shard: ShardId) -> usize {
        self.inboxes[shard].len()
    }
}

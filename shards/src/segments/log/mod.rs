//! The log: commits at dense, create-only positions, one committer per server, and the
//! replay that rebuilds at start-up whatever of the index SlateDB had not made durable
//! (decision 0011).
//!
//! - [`commit`]: the byte layout of a commit object (segment format version 2).
//! - [`core`]: which runs a commit carries, when it is due, and which runs are live as
//!   commits resolve in position order.
//! - [`replay`]: what start-up keeps of the commits above the durable watermark.
//! - [`committer`]: the server's one committer, on the storage sidecar, driving the core.
//! - [`recover`]: fencing and replay at start-up.
//!
//! The core and replay are pure state machines; the property test in `model` drives them together over
//! random interleavings of appends on several shards, out-of-order PUT completions,
//! failures, index flushes and a crash at any point.

pub mod commit;
pub(crate) mod committer;
pub(crate) mod core;
pub(crate) mod recover;
pub(crate) mod replay;

#[cfg(test)]
mod model;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// How far the log is indexed, stored under `keys::log_watermark` with every index batch:
/// every position up to `position` is, and `epoch` is the writer that wrote it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Watermark {
    pub position: u64,
    pub epoch: u64,
}

impl Watermark {
    /// `position(8) | epoch(8)`, big-endian. Persisted.
    pub(crate) fn encode(&self) -> Bytes {
        let mut v = BytesMut::with_capacity(16);
        v.put_u64(self.position);
        v.put_u64(self.epoch);
        v.freeze()
    }

    pub(crate) fn decode(mut v: &[u8]) -> Option<Watermark> {
        if v.len() != 16 {
            return None;
        }
        Some(Watermark {
            position: v.get_u64(),
            epoch: v.get_u64(),
        })
    }
}

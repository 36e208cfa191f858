//! The segment log: record payloads written once, by their shard, straight to the object
//! store; SlateDB holds only what finds them (the batch index) and what accounts for them
//! (segment records and references).
//!
//! - [`format`]: the byte layout of a segment object and its runs.
//! - [`index`]: the SlateDB values that locate runs and track each segment's live bytes.
//! - [`writer`]: each shard's open segment and its group commit (PUT, then index, then ack).
//! - [`reader`]: reads through the index, ranged GETs and the shard's cache of recent runs.
//! - [`reclaim`]: deleting segments nothing live points into, and orphans of crashes.
//! - [`log`]: the server-wide commit log that replaces the per-shard writer (decision
//!   0011): its pure decisions so far.
//!
//! Must never: let a reader see a run that no durable index entry points to, overwrite a
//! segment object, or delete one that a durable index entry still points to.

pub mod format;
pub mod index;
pub mod log;
pub(crate) mod reader;
pub mod reclaim;
pub(crate) mod writer;

pub use log::core::{
    Cadence, COMMITS_IN_FLIGHT_MAX, COMMIT_BYTES_MAX, COMMIT_TARGET_BYTES,
    EXPRESS_COMMIT_SPACING_MS, STANDARD_LINGER_MS,
};
pub use reclaim::SWEEP_SEGMENTS_PER_TICK;
pub use writer::RUN_BYTES_MAX;

/// A segment's identity: the process's random boot id (high 64 bits) and a counter, or,
/// for the commits of the log, 0 and the log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u128);

impl SegmentId {
    /// The commit at log `position`.
    pub fn log(position: u64) -> SegmentId {
        SegmentId(u128::from(position))
    }

    /// Its log position, if it is a commit of the log.
    pub fn log_position(self) -> Option<u64> {
        ((self.0 >> 64) == 0).then_some(self.0 as u64)
    }
}

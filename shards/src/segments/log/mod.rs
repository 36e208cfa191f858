//! The log: commits at dense, create-only positions, one committer per server, and the
//! replay that rebuilds at start-up whatever of the index SlateDB had not made durable
//! (decision 0011).
//!
//! - [`core`]: which runs a commit carries, when it is due, and which runs are live as
//!   commits resolve in position order.
//! - [`replay`]: what start-up keeps of the commits above the durable watermark.
//!
//! Both are pure state machines; the property test in `model` drives them together over
//! random interleavings of appends on several shards, out-of-order PUT completions,
//! failures, index flushes and a crash at any point.

// The committer and start-up replay that drive these are the next steps of decision 0011;
// until they land, only the tests use them.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod core;
pub(crate) mod replay;

#[cfg(test)]
mod model;

//! The Sluice engine: shards and placement, the cross-shard mesh, the catalogue of basins
//! and streams, background work, the segment log, and the storage sidecar with its key
//! layout. It knows
//! nothing of HTTP.

mod background;
pub mod backoff;
pub mod catalogue;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod error;
pub mod executors;
mod locks;
pub mod mesh;
pub mod metrics;
pub mod names;
pub mod placement;
pub mod records;
pub mod segments;
pub mod shard;
pub mod storage;
pub mod streamer;
pub mod tokens;
pub mod usage;

pub use error::{EngineError, StorageError};
pub use shard::{EngineOptions, Shard};

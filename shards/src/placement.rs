//! Which shard owns what. A runtime fact only: nothing persisted depends on it, so the
//! server may restart with any shard count.

use crate::names::{BasinName, StreamName};
use crate::tokens::TokenId;

/// Index of a shard, `0..shard_count`.
pub type ShardId = usize;

/// Fixed seeds make placement deterministic for a given build and shard count.
const SEEDS: [u64; 4] = [
    0x5eed_0f51_u64,
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
];

#[derive(Clone)]
pub struct Placement {
    shard_count: usize,
    hasher: ahash::RandomState,
}

impl Placement {
    pub fn new(shard_count: usize) -> Placement {
        assert!(shard_count > 0, "at least one shard");
        Placement {
            shard_count,
            hasher: ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The shard that owns a stream: its tail, fencing token, appends and followers.
    pub fn stream_owner(&self, basin: &BasinName, stream: &StreamName) -> ShardId {
        let h = self.hasher.hash_one((basin.as_str(), stream.as_str()));
        (h % self.shard_count as u64) as ShardId
    }

    /// The shard that serialises issuing and revoking a token id.
    pub fn token_owner(&self, id: &TokenId) -> ShardId {
        let h = self.hasher.hash_one(("token", id.as_str()));
        (h % self.shard_count as u64) as ShardId
    }

    /// The shard that serialises changes to a basin's metadata.
    pub fn basin_owner(&self, basin: &BasinName) -> ShardId {
        let h = self.hasher.hash_one(basin.as_str());
        (h % self.shard_count as u64) as ShardId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        let a = Placement::new(4);
        let b = Placement::new(4);
        let basin: BasinName = "placement-test".parse().unwrap();
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let s: StreamName = format!("s{i}").parse().unwrap();
            let o = a.stream_owner(&basin, &s);
            assert_eq!(o, b.stream_owner(&basin, &s));
            seen[o] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}

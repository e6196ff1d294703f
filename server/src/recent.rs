//! Recently stored large blocks, kept in memory on their owner shard, so that a client
//! following an upload (streaming sync) gets them without a disk read or a decryption.
//!
//! A device that prefetches a file still being uploaded asks for each block moments after
//! it is stored. Serving it from the block log costs an O_DIRECT read (competing with the
//! uploader's writes for the disk), a decryption and a copy; serving it from here costs
//! nothing but the send. The blocks were checked against their hashes before they were
//! stored, so what is served is what the log holds.
//!
//! The cache holds the blocks as the slices of the `store_batch` bodies' chunks they arrived
//! in (no copy), so a cached block keeps alive the chunks it spans: its own bytes and at
//! most a chunk's worth of its neighbours' at each end. Only blocks of at least
//! [`RECENT_BLOCK_BYTES_MIN`] are kept, and the cache is bounded by a count, so its memory
//! is about `blocks_max` × 4 MiB. Oldest stored go first.

use std::collections::VecDeque;

use hashbrown::HashMap;
use holdall_proto::BlockHash;

use holdall_proto::pieces::Pieces;

/// Smaller blocks are not kept: small files are not streamed, and a small block could keep
/// a large body alive.
pub const RECENT_BLOCK_BYTES_MIN: usize = 1 << 20;

/// Counters of the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecentStats {
    /// Blocks held now.
    pub blocks: u64,
    /// Reads served from the cache.
    pub hits: u64,
}

/// One shard's recently stored large blocks.
pub struct RecentBlocks {
    blocks_max: usize,
    order: VecDeque<BlockHash>,
    held: HashMap<BlockHash, Pieces>,
    hits: u64,
}

impl RecentBlocks {
    /// A cache of at most `blocks_max` blocks (0: keeps none).
    pub fn new(blocks_max: usize) -> RecentBlocks {
        RecentBlocks {
            blocks_max,
            order: VecDeque::with_capacity(blocks_max),
            held: HashMap::with_capacity(blocks_max),
            hits: 0,
        }
    }

    /// Keeps `data`, just stored as `hash`, if it is large enough; the oldest go beyond the
    /// bound.
    pub fn insert(&mut self, hash: BlockHash, data: Pieces) {
        if self.blocks_max == 0
            || data.len() < RECENT_BLOCK_BYTES_MIN
            || self.held.contains_key(&hash)
        {
            return;
        }
        while self.order.len() >= self.blocks_max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.held.remove(&oldest);
        }
        self.order.push_back(hash);
        self.held.insert(hash, data);
        debug_assert_eq!(self.order.len(), self.held.len());
        debug_assert!(self.order.len() <= self.blocks_max);
    }

    /// The block `hash`, if it is held.
    pub fn get(&mut self, hash: &BlockHash) -> Option<Pieces> {
        let data = self.held.get(hash).cloned()?;
        self.hits += 1;
        Some(data)
    }

    /// Current counters.
    pub fn stats(&self) -> RecentStats {
        RecentStats {
            blocks: self.held.len() as u64,
            hits: self.hits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn block(seed: u8) -> (BlockHash, Pieces) {
        let data = Bytes::from(vec![seed; RECENT_BLOCK_BYTES_MIN]);
        (BlockHash::of(&data), Pieces::from(data))
    }

    #[test]
    fn keeps_the_newest_large_blocks_up_to_the_bound() {
        let mut recent = RecentBlocks::new(2);
        let (a, b, c) = (block(1), block(2), block(3));
        recent.insert(a.0, a.1.clone());
        recent.insert(b.0, b.1.clone());
        recent.insert(a.0, a.1.clone());
        recent.insert(c.0, c.1.clone());
        assert!(recent.get(&a.0).is_none(), "the oldest went first");
        assert_eq!(recent.get(&b.0), Some(b.1));
        assert_eq!(recent.get(&c.0), Some(c.1));
        assert_eq!(recent.stats(), RecentStats { blocks: 2, hits: 2 });
    }

    #[test]
    fn small_blocks_and_a_zero_bound_keep_nothing() {
        let mut recent = RecentBlocks::new(4);
        let small = Pieces::from(Bytes::from_static(b"small"));
        recent.insert(small.hash(), small.clone());
        assert!(recent.get(&small.hash()).is_none());
        let mut off = RecentBlocks::new(0);
        let (h, d) = block(9);
        off.insert(h, d);
        assert_eq!(off.stats(), RecentStats::default());
    }
}

//! Blocks kept in memory on their owner shard, so that reading them again costs only the
//! send: no O_DIRECT read, no decryption, no checksum.
//!
//! Two kinds of reader ask for the same block many times in a short while. A device
//! streaming a file that is still being uploaded asks for each block moments after it is
//! stored; several devices syncing the same new file ask for each block once each. So the
//! cache takes large blocks as they are stored and every block as it is served, and drops
//! the least recently used beyond its byte bound (`--block-cache`). Blocks were checked
//! against their hashes when stored and are authenticated when read from the log, so what
//! is served from here is what the log holds.
//!
//! A stored block is kept as the slices of the `store_batch` body chunks it arrived in (no
//! copy), so it keeps alive the chunks it spans: its own bytes and at most a chunk's worth
//! of its neighbours' at each end. Only stored blocks of at least
//! [`STORED_BLOCK_BYTES_MIN`] are taken, so that a small block cannot keep a large body
//! alive; one that arrived compressed is taken as a copy of its compressed bytes, which are
//! much shorter than the chunks they came in. A served block is its own buffer. Blocks are
//! held in the form the log keeps them (compressed or not) and cost what they hold.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use holdall_engine::block_log::Form;
use holdall_proto::pieces::Pieces;
use holdall_proto::BlockHash;

use crate::block_bytes::BlockBytes;

/// Smaller stored blocks are not taken: small files are not streamed, and a small block
/// could keep a large body alive.
pub const STORED_BLOCK_BYTES_MIN: usize = 1 << 20;

/// What an entry costs beyond its bytes (its map slot, its place in the order), counted
/// against the bound so that many small served blocks cannot exceed it.
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// Buffers of evicted served blocks kept for the next reads from the log, so that serving
/// through a full cache reuses memory instead of faulting in fresh pages.
const SPARES_MAX: usize = 4;

/// Counters of the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockCacheStats {
    /// Blocks held now.
    pub blocks: u64,
    /// Bytes held now, counted as the bound counts them.
    pub bytes: u64,
    /// Reads served from the cache.
    pub hits: u64,
    /// Reads that had to go to the block log.
    pub misses: u64,
}

/// A held block.
struct Entry {
    data: BlockBytes,
    /// Its last use.
    tick: u64,
    /// Taken as it was stored (slices of a request body), not as it was served.
    stored: bool,
}

/// One shard's cache of blocks, least recently used first out.
pub struct BlockCache {
    bytes_max: usize,
    stored_blocks_max: usize,
    bytes: usize,
    held: HashMap<BlockHash, Entry>,
    /// Held blocks by last use, oldest first.
    order: BTreeMap<u64, BlockHash>,
    /// The stored ones among them, oldest first.
    stored_order: BTreeMap<u64, BlockHash>,
    spares: Vec<Vec<u8>>,
    tick: u64,
    hits: u64,
    misses: u64,
}

impl BlockCache {
    /// A cache of at most `bytes_max` bytes (0: keeps nothing), of which at most
    /// `stored_blocks_max` blocks taken as they were stored.
    pub fn new(bytes_max: usize, stored_blocks_max: usize) -> BlockCache {
        BlockCache {
            bytes_max,
            stored_blocks_max,
            bytes: 0,
            held: HashMap::new(),
            order: BTreeMap::new(),
            stored_order: BTreeMap::new(),
            spares: Vec::with_capacity(SPARES_MAX),
            tick: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Takes `data`, just stored as `hash`, if it is large enough; the oldest stored go
    /// beyond their own bound.
    pub fn insert_stored(&mut self, hash: BlockHash, data: BlockBytes) {
        let held = self.held.contains_key(&hash);
        if held || data.block_len() < STORED_BLOCK_BYTES_MIN || self.stored_blocks_max == 0 {
            return;
        }
        let data = match data.form {
            Form::Raw => data,
            Form::Zstd { .. } => BlockBytes {
                pieces: Pieces::from(bytes::Bytes::from(data.pieces.parts().concat())),
                form: data.form,
            },
        };
        while self.stored_order.len() >= self.stored_blocks_max {
            let Some((_, oldest)) = self.stored_order.first_key_value() else {
                break;
            };
            let oldest = *oldest;
            self.evict(&oldest);
        }
        self.insert(hash, data, true);
    }

    /// Takes `data`, just read from the block log as `hash` to be served.
    pub fn insert_served(&mut self, hash: BlockHash, data: BlockBytes) {
        self.insert(hash, data, false);
    }

    fn insert(&mut self, hash: BlockHash, data: BlockBytes, stored: bool) {
        let cost = data.pieces.len() + ENTRY_OVERHEAD_BYTES;
        if cost > self.bytes_max || self.held.contains_key(&hash) {
            return;
        }
        while self.bytes + cost > self.bytes_max {
            let Some((_, oldest)) = self.order.first_key_value() else {
                break;
            };
            let oldest = *oldest;
            self.evict(&oldest);
        }
        self.tick += 1;
        self.order.insert(self.tick, hash);
        if stored {
            self.stored_order.insert(self.tick, hash);
        }
        let tick = self.tick;
        self.held.insert(hash, Entry { data, tick, stored });
        self.bytes += cost;
        debug_assert_eq!(self.order.len(), self.held.len());
        debug_assert!(self.stored_order.len() <= self.stored_blocks_max);
        debug_assert!(self.bytes <= self.bytes_max);
    }

    /// Drops `hash`, keeping its buffer as a spare if it was a served block nobody else
    /// holds any more.
    fn evict(&mut self, hash: &BlockHash) {
        let Some(gone) = self.held.remove(hash) else {
            return;
        };
        self.order.remove(&gone.tick);
        self.bytes -= gone.data.pieces.len() + ENTRY_OVERHEAD_BYTES;
        if gone.stored {
            self.stored_order.remove(&gone.tick);
            return;
        }
        if self.spares.len() < SPARES_MAX {
            if let Some(buf) = gone.data.pieces.into_unique_vec() {
                self.spares.push(buf);
            }
        }
    }

    /// An empty buffer to read a block from the log into: one an evicted block gave back,
    /// if there is one.
    pub fn spare_buffer(&mut self) -> Vec<u8> {
        let mut buf = self.spares.pop().unwrap_or_default();
        buf.clear();
        buf
    }

    /// The block `hash`, if it is held (it becomes the most recently used).
    pub fn get(&mut self, hash: &BlockHash) -> Option<BlockBytes> {
        let Some(entry) = self.held.get_mut(hash) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        self.tick += 1;
        self.order.remove(&entry.tick);
        self.order.insert(self.tick, *hash);
        if entry.stored {
            self.stored_order.remove(&entry.tick);
            self.stored_order.insert(self.tick, *hash);
        }
        entry.tick = self.tick;
        Some(entry.data.clone())
    }

    /// Current counters.
    pub fn stats(&self) -> BlockCacheStats {
        BlockCacheStats {
            blocks: self.held.len() as u64,
            bytes: self.bytes as u64,
            hits: self.hits,
            misses: self.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const BLOCK_COST: usize = STORED_BLOCK_BYTES_MIN + ENTRY_OVERHEAD_BYTES;

    fn block(seed: u8) -> (BlockHash, BlockBytes) {
        let data = Bytes::from(vec![seed; STORED_BLOCK_BYTES_MIN]);
        (BlockHash::of(&data), raw(Pieces::from(data)))
    }

    fn raw(pieces: Pieces) -> BlockBytes {
        BlockBytes::raw(pieces)
    }

    fn got(cache: &mut BlockCache, hash: &BlockHash) -> Option<Pieces> {
        cache.get(hash).map(|b| b.pieces)
    }

    #[test]
    fn the_least_recently_used_go_first_beyond_the_byte_bound() {
        let mut cache = BlockCache::new(2 * BLOCK_COST, 8);
        let (a, b, c) = (block(1), block(2), block(3));
        cache.insert_stored(a.0, a.1.clone());
        cache.insert_served(b.0, b.1.clone());
        assert_eq!(
            got(&mut cache, &a.0),
            Some(a.1.pieces.clone()),
            "a is now the newest use"
        );
        cache.insert_stored(c.0, c.1.clone());
        assert!(cache.get(&b.0).is_none(), "b, least recently used, went");
        assert_eq!(got(&mut cache, &a.0), Some(a.1.pieces));
        assert_eq!(got(&mut cache, &c.0), Some(c.1.pieces));
        let stats = cache.stats();
        assert_eq!((stats.blocks, stats.hits, stats.misses), (2, 3, 1));
        assert_eq!(stats.bytes, 2 * BLOCK_COST as u64);
    }

    #[test]
    fn stored_blocks_have_their_own_bound_within_the_cache() {
        let mut cache = BlockCache::new(10 * BLOCK_COST, 2);
        let blocks: Vec<_> = (0..4).map(block).collect();
        cache.insert_served(blocks[0].0, blocks[0].1.clone());
        for (h, d) in &blocks[1..] {
            cache.insert_stored(*h, d.clone());
        }
        assert!(cache.get(&blocks[0].0).is_some(), "a served block stays");
        assert!(cache.get(&blocks[1].0).is_none(), "the oldest stored went");
        assert!(cache.get(&blocks[2].0).is_some() && cache.get(&blocks[3].0).is_some());
        cache.insert_stored(blocks[3].0, blocks[3].1.clone());
        assert!(
            cache.get(&blocks[2].0).is_some(),
            "storing a held block again evicts none"
        );
        let mut none_stored = BlockCache::new(10 * BLOCK_COST, 0);
        none_stored.insert_stored(blocks[0].0, blocks[0].1.clone());
        none_stored.insert_served(blocks[1].0, blocks[1].1.clone());
        assert_eq!(none_stored.stats().blocks, 1);
    }

    #[test]
    fn small_stored_blocks_too_large_blocks_and_a_zero_bound_keep_nothing() {
        let mut cache = BlockCache::new(4 * BLOCK_COST, 8);
        let small = Pieces::from(Bytes::from_static(b"small"));
        cache.insert_stored(small.hash(), raw(small.clone()));
        assert!(cache.get(&small.hash()).is_none());
        cache.insert_served(small.hash(), raw(small.clone()));
        assert_eq!(got(&mut cache, &small.hash()), Some(small));
        let mut tiny = BlockCache::new(BLOCK_COST - 1, 8);
        let (h, d) = block(8);
        tiny.insert_served(h, d);
        assert_eq!(tiny.stats().blocks, 0);
        let mut off = BlockCache::new(0, 8);
        let (h, d) = block(9);
        off.insert_stored(h, d.clone());
        off.insert_served(h, d);
        assert_eq!(off.stats().blocks, 0);
    }

    #[test]
    fn evicted_served_blocks_give_their_buffers_to_the_next_reads() {
        let mut cache = BlockCache::new(BLOCK_COST, 8);
        let first = vec![1u8; STORED_BLOCK_BYTES_MIN];
        let at = first.as_ptr();
        let first = Pieces::from(Bytes::from(first));
        cache.insert_served(first.hash(), raw(first));
        assert!(cache.spare_buffer().capacity() == 0, "no spare yet");
        let (h, d) = block(2);
        cache.insert_served(h, d);
        let spare = cache.spare_buffer();
        assert_eq!(
            (spare.len(), spare.as_ptr()),
            (0, at),
            "the evicted block's own buffer"
        );
        assert!(spare.capacity() >= STORED_BLOCK_BYTES_MIN);
        // A block still held elsewhere (a response being sent) is not reused.
        let shared = Pieces::from(Bytes::from(vec![3u8; STORED_BLOCK_BYTES_MIN]));
        let mut cache = BlockCache::new(BLOCK_COST, 8);
        cache.insert_served(shared.hash(), raw(shared.clone()));
        let (h, d) = block(4);
        cache.insert_served(h, d);
        assert_eq!(cache.spare_buffer().capacity(), 0);
    }

    #[test]
    fn the_byte_count_follows_every_insert_and_eviction() {
        let mut cache = BlockCache::new(3 * BLOCK_COST + 10, 2);
        for seed in 0..20u8 {
            let (h, d) = block(seed);
            if seed % 3 == 0 {
                cache.insert_stored(h, d);
            } else {
                cache.insert_served(h, d);
            }
            let s = cache.stats();
            assert!(s.bytes <= 3 * BLOCK_COST as u64 + 10);
            assert_eq!(s.bytes, s.blocks * BLOCK_COST as u64);
        }
        assert_eq!(cache.stats().blocks, 3);
    }

    #[test]
    fn a_compressed_stored_block_counts_by_its_length_and_costs_its_bytes() {
        let block = vec![b'q'; STORED_BLOCK_BYTES_MIN];
        let packed = zstd::bulk::compress(&block, 3).unwrap();
        // Compressed bytes as slices of a larger body chunk: the cache keeps a copy.
        let body = Bytes::from([&packed[..], &[0u8; 100_000]].concat());
        let zstd = BlockBytes {
            pieces: Pieces::from(body.slice(..packed.len())),
            form: Form::Zstd {
                block_len: block.len() as u32,
            },
        };
        let mut cache = BlockCache::new(BLOCK_COST, 8);
        cache.insert_stored(BlockHash::of(&block), zstd);
        let held = cache.get(&BlockHash::of(&block)).unwrap();
        assert_eq!(held.pieces.parts().concat(), packed);
        assert_ne!(held.pieces.parts()[0].as_ptr(), body.as_ptr(), "a copy");
        assert_eq!(
            cache.stats().bytes,
            (packed.len() + ENTRY_OVERHEAD_BYTES) as u64
        );
        assert_eq!(held.expanded().unwrap().parts().concat(), block);
    }
}

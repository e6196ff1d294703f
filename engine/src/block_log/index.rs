//! The block log's in-memory index: block hash → where its record is.
//!
//! A plain `HashMap<BlockHash, Location>` costs 45 bytes a bucket, and because a swiss table
//! doubles, between 51 and 103 bytes a block. Here the table holds only a 4-byte slot number
//! (5 bytes a bucket with its control byte) and the 44-byte entries live in fixed-size chunks
//! that never move or over-allocate, so a block costs 44 + 5 / load ≈ 50–56 bytes.
//! docs/BENCHMARKS.md has the measured figure.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use holdall_proto::BlockHash;

/// Entries per chunk: 4096 × 44 B = 176 KiB, so a half-used chunk wastes little.
const CHUNK_ENTRIES: usize = 4096;

/// Where a block's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Segment id.
    pub segment: u32,
    /// Offset of the record in the segment, in 4096-byte pages.
    pub offset_pages: u32,
    /// Length of the record, in 4096-byte pages.
    pub len_pages: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    hash: BlockHash,
    location: Location,
}

/// Hash → [`Location`], about 50–56 bytes a block.
pub struct BlockIndex {
    table: HashTable<u32>,
    chunks: Vec<Vec<Entry>>,
    free_slots: Vec<u32>,
    hasher: DefaultHashBuilder,
    len: usize,
}

impl Default for BlockIndex {
    fn default() -> Self {
        BlockIndex::new()
    }
}

impl BlockIndex {
    /// An empty index.
    pub fn new() -> BlockIndex {
        BlockIndex {
            table: HashTable::new(),
            chunks: Vec::new(),
            free_slots: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            len: 0,
        }
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No blocks.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn entry(&self, slot: u32) -> &Entry {
        let s = slot as usize;
        &self.chunks[s / CHUNK_ENTRIES][s % CHUNK_ENTRIES]
    }

    /// Where `hash` is, if indexed.
    pub fn get(&self, hash: &BlockHash) -> Option<Location> {
        let h = self.hasher.hash_one(hash);
        self.table
            .find(h, |&slot| self.entry(slot).hash == *hash)
            .map(|&slot| self.entry(slot).location)
    }

    /// Whether `hash` is indexed.
    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.get(hash).is_some()
    }

    /// Adds `hash` at `location`; returns false (and changes nothing) if it is already there.
    pub fn insert(&mut self, hash: BlockHash, location: Location) -> bool {
        let h = self.hasher.hash_one(hash);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        let at = |slot: u32| &chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES];
        if self.table.find(h, |&slot| at(slot).hash == hash).is_some() {
            return false;
        }
        let entry = Entry { hash, location };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                let s = slot as usize;
                self.chunks[s / CHUNK_ENTRIES][s % CHUNK_ENTRIES] = entry;
                slot
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK_ENTRIES) {
                    self.chunks.push(Vec::with_capacity(CHUNK_ENTRIES));
                }
                let chunk_index = self.chunks.len() - 1;
                let chunk = &mut self.chunks[chunk_index];
                chunk.push(entry);
                let slot = chunk_index * CHUNK_ENTRIES + chunk.len() - 1;
                u32::try_from(slot).expect("block index holds at most 2^32 blocks")
            }
        };
        let (chunks, hasher2) = (&self.chunks, hasher);
        self.table.insert_unique(h, slot, |&s| {
            hasher2.hash_one(chunks[s as usize / CHUNK_ENTRIES][s as usize % CHUNK_ENTRIES].hash)
        });
        self.len += 1;
        true
    }

    /// Adds `hash` at `location`, or moves it there if it is indexed in an older segment:
    /// at open, a block found twice (a compaction copied it and stopped before removing the
    /// source) is served from its newest copy, so the older segment holds nothing live.
    pub fn insert_newest(&mut self, hash: BlockHash, location: Location) {
        match self.get(&hash) {
            Some(old) if old.segment < location.segment => {
                self.relocate(&hash, old, location);
            }
            Some(_) => {}
            None => {
                self.insert(hash, location);
            }
        }
    }

    /// Moves `hash` from `from` to `to`; false (and nothing changes) unless it is at `from`.
    pub fn relocate(&mut self, hash: &BlockHash, from: Location, to: Location) -> bool {
        let Some(slot) = self.slot_of(hash) else {
            return false;
        };
        let s = slot as usize;
        let entry = &mut self.chunks[s / CHUNK_ENTRIES][s % CHUNK_ENTRIES];
        if entry.location != from {
            return false;
        }
        entry.location = to;
        true
    }

    /// The slot number of `hash`: stable while it stays indexed, reused after it leaves.
    pub fn slot_of(&self, hash: &BlockHash) -> Option<u32> {
        let h = self.hasher.hash_one(hash);
        self.table
            .find(h, |&slot| self.entry(slot).hash == *hash)
            .copied()
    }

    /// One more than the highest slot number in use or free.
    pub fn slots_len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// The block indexed in `slot`, if the slot is in use: a walk by slot number needs no
    /// copy of the index and sees the index as it is at each step.
    pub fn at_slot(&self, slot: u32) -> Option<(BlockHash, Location)> {
        let s = slot as usize;
        let e = self.chunks.get(s / CHUNK_ENTRIES)?.get(s % CHUNK_ENTRIES)?;
        (self.slot_of(&e.hash) == Some(slot)).then_some((e.hash, e.location))
    }

    /// Every indexed block with its slot, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (u32, BlockHash, Location)> + '_ {
        self.table.iter().map(|&slot| {
            let e = self.entry(slot);
            (slot, e.hash, e.location)
        })
    }

    /// Removes `hash`; returns its location if it was there.
    pub fn remove(&mut self, hash: &BlockHash) -> Option<Location> {
        let h = self.hasher.hash_one(hash);
        let chunks = &self.chunks;
        let at = |slot: u32| &chunks[slot as usize / CHUNK_ENTRIES][slot as usize % CHUNK_ENTRIES];
        let entry = self
            .table
            .find_entry(h, |&slot| at(slot).hash == *hash)
            .ok()?;
        let (slot, _) = entry.remove();
        let location = self.entry(slot).location;
        self.free_slots.push(slot);
        self.len -= 1;
        Some(location)
    }

    /// Heap bytes held: the table, the chunks and the free list.
    pub fn allocated_bytes(&self) -> usize {
        self.table.allocation_size()
            + self.chunks.len() * CHUNK_ENTRIES * std::mem::size_of::<Entry>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Entry>>()
            + self.free_slots.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> BlockHash {
        BlockHash::of(&i.to_le_bytes())
    }

    fn loc(i: u64) -> Location {
        Location {
            segment: i as u32,
            offset_pages: (i * 3) as u32,
            len_pages: 1025,
        }
    }

    #[test]
    fn insert_get_remove() {
        let mut idx = BlockIndex::new();
        for i in 0..10_000 {
            assert!(idx.insert(h(i), loc(i)));
        }
        assert!(!idx.insert(h(5), loc(99)), "duplicates are refused");
        assert_eq!(idx.get(&h(5)), Some(loc(5)));
        assert_eq!(idx.len(), 10_000);
        for i in (0..10_000).step_by(2) {
            assert_eq!(idx.remove(&h(i)), Some(loc(i)));
        }
        assert_eq!(idx.remove(&h(0)), None);
        assert_eq!(idx.len(), 5_000);
        for i in 0..10_000 {
            assert_eq!(idx.contains(&h(i)), i % 2 == 1, "{i}");
        }
        // Freed slots are reused.
        let before = idx.allocated_bytes();
        for i in 20_000..25_000 {
            assert!(idx.insert(h(i), loc(i)));
        }
        assert_eq!(idx.allocated_bytes(), before);
        for i in 20_000..25_000 {
            assert_eq!(idx.get(&h(i)), Some(loc(i)));
        }
    }

    #[test]
    fn relocation_and_newest_copy() {
        let mut idx = BlockIndex::new();
        let (a, old, new) = (h(1), loc(1), loc(2));
        idx.insert(a, old);
        assert!(!idx.relocate(&a, new, old), "only from where it is");
        assert!(idx.relocate(&a, old, new));
        assert_eq!(idx.get(&a), Some(new));
        idx.insert_newest(a, old);
        assert_eq!(idx.get(&a), Some(new), "an older copy does not win");
        idx.insert_newest(a, loc(3));
        assert_eq!(idx.get(&a), Some(loc(3)), "a newer copy does");
        let slot = idx.slot_of(&a).unwrap();
        let all: Vec<_> = idx.entries().collect();
        assert_eq!(all, vec![(slot, a, loc(3))]);
        assert_eq!(idx.slots_len(), 1);
        assert_eq!(idx.at_slot(slot), Some((a, loc(3))));
        assert!(idx.at_slot(slot + 1).is_none(), "past the slots");
        idx.remove(&a);
        assert!(idx.at_slot(slot).is_none(), "a freed slot holds nothing");
    }

    #[test]
    fn memory_per_block_stays_under_64_bytes() {
        let mut idx = BlockIndex::new();
        let mut worst = 0.0f64;
        for i in 0..300_000u64 {
            idx.insert(h(i), loc(i));
            if i > 10_000 && i % 1000 == 0 {
                worst = worst.max(idx.allocated_bytes() as f64 / idx.len() as f64);
            }
        }
        assert!(worst <= 64.0, "worst {worst:.1} bytes per block");
    }
}

//! Blocklists and the Dropbox-compatible content hash.
//!
//! A file is cut into blocks of [`BLOCK_BYTES_MAX`] bytes (the last one shorter); its
//! blocklist is the SHA-256 of each block, in order; its content hash is the SHA-256 of the
//! concatenated raw block digests. An empty file has no blocks, so its content hash is the
//! SHA-256 of the empty string.

use sha2::{Digest, Sha256};

use crate::hash::BlockHash;
use crate::limits::BLOCK_BYTES_MAX;

/// Computes a file's blocklist and content hash from its bytes fed in pieces of any size.
pub struct ContentHasher {
    block: Sha256,
    block_bytes: usize,
    blocklist: Vec<BlockHash>,
    size_bytes: u64,
}

impl Default for ContentHasher {
    fn default() -> Self {
        ContentHasher::new()
    }
}

impl ContentHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> ContentHasher {
        ContentHasher {
            block: Sha256::new(),
            block_bytes: 0,
            blocklist: Vec::new(),
            size_bytes: 0,
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        self.size_bytes += data.len() as u64;
        while !data.is_empty() {
            let take = (BLOCK_BYTES_MAX - self.block_bytes).min(data.len());
            self.block.update(&data[..take]);
            self.block_bytes += take;
            data = &data[take..];
            if self.block_bytes == BLOCK_BYTES_MAX {
                self.finish_block();
            }
        }
    }

    fn finish_block(&mut self) {
        let digest = std::mem::take(&mut self.block).finalize();
        self.blocklist.push(BlockHash(digest.into()));
        self.block_bytes = 0;
    }

    /// Ends the file: returns its blocklist, content hash and size in bytes.
    pub fn finish(mut self) -> (Vec<BlockHash>, BlockHash, u64) {
        if self.block_bytes > 0 {
            self.finish_block();
        }
        let content = content_hash_of_blocklist(&self.blocklist);
        (self.blocklist, content, self.size_bytes)
    }
}

/// The content hash of a file whose blocklist is `blocklist`.
pub fn content_hash_of_blocklist(blocklist: &[BlockHash]) -> BlockHash {
    let mut outer = Sha256::new();
    for h in blocklist {
        outer.update(h.as_bytes());
    }
    BlockHash(outer.finalize().into())
}

/// The blocklist of a file held in memory.
pub fn blocklist_of(data: &[u8]) -> Vec<BlockHash> {
    data.chunks(BLOCK_BYTES_MAX).map(BlockHash::of).collect()
}

/// The content hash of a file held in memory.
pub fn content_hash(data: &[u8]) -> BlockHash {
    content_hash_of_blocklist(&blocklist_of(data))
}

/// The number of blocks a file of `size_bytes` has.
pub fn block_count(size_bytes: u64) -> u64 {
    size_bytes.div_ceil(BLOCK_BYTES_MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, written as plainly as possible: hash each 4 MiB piece, hash the digests.
    fn reference(data: &[u8]) -> BlockHash {
        let mut digests = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + BLOCK_BYTES_MAX).min(data.len());
            digests.extend_from_slice(&Sha256::digest(&data[offset..end]));
            offset = end;
        }
        BlockHash(Sha256::digest(&digests).into())
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    #[test]
    fn matches_reference_at_every_block_boundary() {
        let b = BLOCK_BYTES_MAX;
        for len in [0, 1, b - 1, b, b + 1, 2 * b] {
            let d = data(len);
            let expected = reference(&d);
            assert_eq!(content_hash(&d), expected, "len {len}");
            for piece in [1, 4096, 1_000_003, b] {
                if piece == 1 && len > 4096 {
                    continue;
                }
                let mut hasher = ContentHasher::new();
                for chunk in d.chunks(piece) {
                    hasher.update(chunk);
                }
                let (list, content, size) = hasher.finish();
                assert_eq!(content, expected, "len {len} piece {piece}");
                assert_eq!(size, len as u64);
                assert_eq!(list.len() as u64, block_count(len as u64));
                assert_eq!(list, blocklist_of(&d));
            }
        }
    }

    #[test]
    fn empty_file_hashes_the_empty_string() {
        assert_eq!(content_hash(&[]), BlockHash::of(b""));
        assert!(blocklist_of(&[]).is_empty());
    }
}

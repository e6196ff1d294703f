//! Blocks compressed for the wire (frame format 2), only where it pays.
//!
//! Media, archives and encrypted files do not shrink, and compressing a 4 MiB block of them
//! would cost more time than sending it. So a large block is probed first: a few samples
//! across it are compressed at the fastest level, and only if they shrink well is the whole
//! block read into memory and compressed. A block small enough to be its own probe is just
//! compressed. Whatever does not come out clearly smaller goes raw, by sendfile as before.
//!
//! The level is the measured one (docs/BENCHMARKS.md, "Wire compression"): the client's
//! compression runs on its upload workers, ahead of a link that is usually much slower.

use std::cell::RefCell;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use crate::net::bulk::{Piece, Source};

/// The zstd level blocks are compressed at.
pub const LEVEL: i32 = 3;
/// Level of the probe: the fastest, since it only has to tell text from noise.
const PROBE_LEVEL: i32 = 1;
/// Bytes of each probe sample.
const SAMPLE_BYTES: usize = 16 << 10;
/// Samples a probe takes, spread over the block.
const SAMPLES_MAX: usize = 3;
/// Blocks up to this long are compressed whole, without a probe.
const PROBE_BYTES_MIN: usize = SAMPLES_MAX * SAMPLE_BYTES;
/// A probe passes when its samples shrink to at most this share (in 1/64ths) of their size.
const PROBE_SHARE_MAX: usize = 56;
/// A block goes compressed when it shrinks to at most this share (in 1/64ths) of its size:
/// a few percent saved are not worth the server's expanding them.
const KEEP_SHARE_MAX: usize = 60;
/// Blocks shorter than this go raw: the frame's bytes are most of their cost.
const PACK_BYTES_MIN: usize = 128;

thread_local! {
    /// The compression contexts of this thread (the probe's and the block's), kept so
    /// that a batch does not allocate a context per block.
    static CONTEXTS: RefCell<Option<Contexts>> = const { RefCell::new(None) };
}

struct Contexts {
    probe: zstd::bulk::Compressor<'static>,
    block: zstd::bulk::Compressor<'static>,
    /// A large block read from its file before it is compressed.
    read: Vec<u8>,
}

/// The compressed forms of a batch's blocks: `wire[i]` is where piece `i`'s compressed
/// bytes are in `bytes`, or None if it goes raw.
#[derive(Debug, Default)]
pub struct Packed {
    bytes: Vec<u8>,
    wire: Vec<Option<Range<usize>>>,
}

impl Packed {
    /// Compresses those of `pieces` (small ones' bytes in `read`) for which it pays,
    /// replacing what was packed before. A file that can no longer be read leaves its block
    /// raw: sending it then reports the short file as before.
    pub fn pack(&mut self, pieces: &[Piece], read: &[u8]) {
        self.bytes.clear();
        self.wire.clear();
        CONTEXTS.with_borrow_mut(|contexts| {
            if contexts.is_none() {
                *contexts = Contexts::new().ok();
            }
            let Some(c) = contexts.as_mut() else {
                // No context (out of memory): everything goes raw, as to an old server.
                self.wire.resize(pieces.len(), None);
                return;
            };
            for piece in pieces {
                let wire = c.pack(piece, read, &mut self.bytes).ok().flatten();
                self.wire.push(wire);
            }
        });
    }

    /// Leaves every block raw (a server without compression).
    pub fn raw(&mut self, pieces: usize) {
        self.bytes.clear();
        self.wire.clear();
        self.wire.resize(pieces, None);
    }

    /// Piece `i`'s compressed bytes, if it goes compressed.
    pub fn wire(&self, i: usize) -> Option<&[u8]> {
        let range = self.wire.get(i)?.clone()?;
        self.bytes.get(range)
    }

    /// Bytes piece `i` puts on the wire, of its `len`.
    pub fn wire_len(&self, i: usize, len: usize) -> usize {
        self.wire(i).map_or(len, <[u8]>::len)
    }
}

impl Contexts {
    fn new() -> io::Result<Contexts> {
        Ok(Contexts {
            probe: zstd::bulk::Compressor::new(PROBE_LEVEL)?,
            block: zstd::bulk::Compressor::new(LEVEL)?,
            read: Vec::new(),
        })
    }

    /// Compresses `piece` onto the end of `out` if it pays: the range it took.
    fn pack(
        &mut self,
        piece: &Piece,
        read: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<Option<Range<usize>>> {
        if piece.len < PACK_BYTES_MIN {
            return Ok(None);
        }
        if piece.len > PROBE_BYTES_MIN && !self.probe(piece, read)? {
            return Ok(None);
        }
        let block: &[u8] = match &piece.source {
            Source::Read { at } => read
                .get(*at..*at + piece.len)
                .ok_or(io::ErrorKind::UnexpectedEof)?,
            Source::File { file, offset } => {
                self.read.resize(piece.len, 0);
                file.read_exact_at(&mut self.read, *offset)?;
                &self.read
            }
        };
        let at = out.len();
        let room = piece.len * KEEP_SHARE_MAX / 64;
        out.resize(at + room, 0);
        // A block that does not fit the room does not pay: compress_to_buffer says so.
        match self.block.compress_to_buffer(block, &mut out[at..]) {
            Ok(n) if n > 0 => {
                out.truncate(at + n);
                Ok(Some(at..at + n))
            }
            _ => {
                out.truncate(at);
                Ok(None)
            }
        }
    }

    /// Whether samples spread over the block shrink enough to try the whole.
    fn probe(&mut self, piece: &Piece, read: &[u8]) -> io::Result<bool> {
        let mut from_file = [0u8; SAMPLE_BYTES];
        let mut shrunk = [0u8; SAMPLE_BYTES];
        let step = (piece.len - SAMPLE_BYTES) / (SAMPLES_MAX - 1);
        let mut total = 0;
        for i in 0..SAMPLES_MAX {
            let at = i * step;
            let sample: &[u8] = match &piece.source {
                Source::Read { at: start } => read
                    .get(start + at..start + at + SAMPLE_BYTES)
                    .ok_or(io::ErrorKind::UnexpectedEof)?,
                Source::File { file, offset } => {
                    file.read_exact_at(&mut from_file, offset + at as u64)?;
                    &from_file
                }
            };
            // A sample that does not shrink at all overflows the buffer: count it whole.
            total += match self.probe.compress_to_buffer(sample, &mut shrunk[..]) {
                Ok(n) if n > 0 => n,
                _ => SAMPLE_BYTES,
            };
        }
        Ok(total <= SAMPLES_MAX * SAMPLE_BYTES * PROBE_SHARE_MAX / 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdall_proto::BlockHash;
    use std::fs::File;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        holdall_testkit::pseudo_random_bytes(seed, len)
    }

    fn text(len: usize) -> Vec<u8> {
        let mut t = Vec::new();
        let mut i = 0u64;
        while t.len() < len {
            t.extend_from_slice(
                format!("2026-01-01 12:00:{i:02} INFO request {i} served\n").as_bytes(),
            );
            i += 1;
        }
        t.truncate(len);
        t
    }

    #[test]
    fn text_goes_compressed_and_noise_raw_from_files_and_buffers() {
        let big_text = text(4 << 20);
        let big_noise = noise(4 << 20, 7);
        // Noise with a text tail: one sample of three sees the text.
        let mixed = [&big_noise[..3 << 20], &big_text[..1 << 20]].concat();
        let small_text = text(5000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [&big_text[..], &big_noise, &mixed].concat()).unwrap();
        let file = |offset| Source::File {
            file: File::open(&path).unwrap(),
            offset,
        };
        let read = [&small_text[..], &noise(3000, 9), b"tiny"].concat();
        let piece = |len, source| Piece {
            hash: BlockHash::of(b""),
            len,
            source,
        };
        let pieces = [
            piece(4 << 20, file(0)),
            piece(4 << 20, file(4 << 20)),
            piece(4 << 20, file(8 << 20)),
            piece(5000, Source::Read { at: 0 }),
            piece(3000, Source::Read { at: 5000 }),
            piece(4, Source::Read { at: 8000 }),
        ];
        let mut packed = Packed::default();
        packed.pack(&pieces, &read);
        let expanded = |i: usize| zstd::bulk::decompress(packed.wire(i).unwrap(), 4 << 20).unwrap();
        assert!(expanded(0) == big_text);
        assert!(packed.wire_len(0, 4 << 20) < (4 << 20) / 10);
        assert!(packed.wire(1).is_none(), "noise goes raw");
        assert!(expanded(2) == mixed, "a quarter of text is worth it");
        assert!(packed.wire_len(2, 4 << 20) < (3 << 20) + (200 << 10));
        assert_eq!(expanded(3), small_text);
        assert!(packed.wire(4).is_none(), "small noise goes raw");
        assert!(packed.wire(5).is_none(), "a tiny block goes raw");
        assert_eq!(packed.wire_len(4, 3000), 3000);
        // Packed again: nothing of the last batch stays.
        packed.pack(&pieces[1..2], &read);
        assert!(packed.wire(0).is_none() && packed.wire(1).is_none());
    }

    #[test]
    fn a_file_cut_short_leaves_its_block_raw() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, text(1 << 20)).unwrap();
        let pieces = [Piece {
            hash: BlockHash::of(b""),
            len: 4 << 20,
            source: Source::File {
                file: File::open(&path).unwrap(),
                offset: 0,
            },
        }];
        let mut packed = Packed::default();
        packed.pack(&pieces, &[]);
        assert!(packed.wire(0).is_none());
    }
}

//! A block's bytes as the parts of the request body it arrived in, and the splitter that
//! cuts a `store_batch` body into its blocks as the body's chunks arrive.
//!
//! hyper hands a body over as chunks of its read buffer (up to a few hundred KiB each), so a
//! 4 MiB block spans many of them. Keeping a block as slices of those chunks, instead of
//! gathering the body into one buffer first, saves a copy of every byte: the block is hashed
//! piece by piece on its owner shard and copied once, into its record buffer in the block
//! log. Dropping a chunk soon lets hyper reuse its memory; held pieces (the recently stored
//! blocks) keep only their own chunks alive.

use crate::frame::{
    decode_store_header_of, FrameError, FrameFormat, StoreHeader, STORE_V2_HEADER_BYTES,
};
use crate::BlockHash;
use bytes::Bytes;

/// The bytes of one block, in order, as slices of the buffers they arrived in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pieces {
    parts: Vec<Bytes>,
    len: usize,
}

impl Pieces {
    /// Appends `part` (empty parts are not kept).
    pub fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }

    /// Bytes of the block.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The bytes in one slice: borrowed when they are one part (read from a log or a
    /// cache), gathered when they span several (a request body's chunks).
    pub fn contiguous(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.parts.as_slice() {
            [one] => std::borrow::Cow::Borrowed(&one[..]),
            parts => std::borrow::Cow::Owned(parts.concat()),
        }
    }

    /// The block's SHA-256.
    pub fn hash(&self) -> BlockHash {
        BlockHash::of_pieces(&self.parts)
    }

    /// The buffer of a block held in one part that nothing else shares any more, to be
    /// reused; None otherwise.
    pub fn into_unique_vec(mut self) -> Option<Vec<u8>> {
        if self.parts.len() != 1 {
            return None;
        }
        let part = self.parts.pop()?;
        part.try_into_mut().ok().map(Vec::from)
    }
}

impl From<Bytes> for Pieces {
    fn from(bytes: Bytes) -> Pieces {
        let mut pieces = Pieces::default();
        pieces.push(bytes);
        pieces
    }
}

impl IntoIterator for Pieces {
    type Item = Bytes;
    type IntoIter = std::vec::IntoIter<Bytes>;

    fn into_iter(self) -> Self::IntoIter {
        self.parts.into_iter()
    }
}

/// The frame being read: its header bytes so far, then its payload.
enum Reading {
    Header {
        bytes: [u8; STORE_V2_HEADER_BYTES],
        have: usize,
    },
    Payload {
        header: StoreHeader,
        left: usize,
        pieces: Pieces,
    },
}

/// One frame of a store_batch body: its header and its bytes, as slices of the body.
#[derive(Debug, Clone)]
pub struct Framed {
    /// The claimed hash and the lengths.
    pub header: StoreHeader,
    /// The bytes that followed the header (the block, or it compressed).
    pub pieces: Pieces,
}

/// Cuts a store_batch body, fed chunk by chunk, into its frames without copying payloads.
/// Checks what [`crate::frame::decode_store_frames`] checks (format 1) or
/// [`crate::frame::decode_store_header_of`] (format 2), with the same errors.
pub struct FrameSplitter {
    format: FrameFormat,
    reading: Reading,
    /// Offset in the body of the frame being read.
    frame_offset: usize,
    /// Body bytes taken so far.
    offset: usize,
    payload_total: u64,
    payload_bytes_max: u64,
    frames: Vec<Framed>,
}

impl FrameSplitter {
    /// A splitter for a format-1 body whose payloads total at most `payload_bytes_max`.
    pub fn new(payload_bytes_max: u64) -> FrameSplitter {
        FrameSplitter::with_format(payload_bytes_max, FrameFormat::V1)
    }

    /// A splitter for a body of `format` whose blocks total at most `payload_bytes_max`.
    pub fn with_format(payload_bytes_max: u64, format: FrameFormat) -> FrameSplitter {
        FrameSplitter {
            format,
            reading: Reading::Header {
                bytes: [0; STORE_V2_HEADER_BYTES],
                have: 0,
            },
            frame_offset: 0,
            offset: 0,
            payload_total: 0,
            payload_bytes_max,
            frames: Vec::new(),
        }
    }

    /// Takes the body's next chunk. After an error the body is refused: feed no more.
    pub fn push(&mut self, mut chunk: Bytes) -> Result<(), FrameError> {
        let header_bytes = self.format.store_header_bytes();
        while !chunk.is_empty() {
            match &mut self.reading {
                Reading::Header { bytes, have } => {
                    let n = (header_bytes - *have).min(chunk.len());
                    bytes[*have..*have + n].copy_from_slice(&chunk[..n]);
                    *have += n;
                    self.offset += n;
                    let _ = chunk.split_to(n);
                    if *have == header_bytes {
                        let header = decode_store_header_of(
                            self.format,
                            &bytes[..header_bytes],
                            self.frame_offset,
                            &mut self.payload_total,
                            self.payload_bytes_max,
                        )?;
                        self.reading = Reading::Payload {
                            header,
                            left: header.wire_len as usize,
                            pieces: Pieces::default(),
                        };
                    }
                }
                Reading::Payload { left, pieces, .. } => {
                    let n = (*left).min(chunk.len());
                    pieces.push(chunk.split_to(n));
                    *left -= n;
                    self.offset += n;
                }
            }
            self.end_frame_if_complete();
        }
        // A frame of zero bytes is complete as soon as its header is.
        self.end_frame_if_complete();
        Ok(())
    }

    fn end_frame_if_complete(&mut self) {
        if let Reading::Payload { left: 0, .. } = self.reading {
            let done = std::mem::replace(
                &mut self.reading,
                Reading::Header {
                    bytes: [0; STORE_V2_HEADER_BYTES],
                    have: 0,
                },
            );
            if let Reading::Payload { header, pieces, .. } = done {
                self.frames.push(Framed { header, pieces });
            }
            self.frame_offset = self.offset;
        }
    }

    /// The frames of a body that has ended; an error if it ended inside a frame.
    pub fn finish(self) -> Result<Vec<Framed>, FrameError> {
        let header_bytes = self.format.store_header_bytes();
        let needed = match &self.reading {
            Reading::Header { have: 0, .. } => return Ok(self.frames),
            Reading::Header { .. } => header_bytes,
            Reading::Payload { left, pieces, .. } => header_bytes + pieces.len() + left,
        };
        Err(FrameError::Truncated {
            offset: self.frame_offset,
            needed,
            available: self.offset - self.frame_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{
        decode_store_frames, encode_store_frame, FLAG_DELTA, FLAG_ZSTD, STORE_HEADER_BYTES,
    };
    use crate::limits::BATCH_BYTES_DEFAULT;

    const LIMIT: u64 = BATCH_BYTES_DEFAULT as u64;

    fn body_of(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::new();
        for b in blocks {
            encode_store_frame(&mut body, &BlockHash::of(b), b);
        }
        body
    }

    /// Feeds `body` in chunks of `step` bytes.
    fn split(body: &[u8], step: usize) -> Result<Vec<(BlockHash, Pieces)>, FrameError> {
        split_as(body, step, FrameFormat::V1)
    }

    fn split_as(
        body: &[u8],
        step: usize,
        format: FrameFormat,
    ) -> Result<Vec<(BlockHash, Pieces)>, FrameError> {
        let body = Bytes::copy_from_slice(body);
        let mut splitter = FrameSplitter::with_format(LIMIT, format);
        for at in (0..body.len()).step_by(step) {
            splitter.push(body.slice(at..(at + step).min(body.len())))?;
        }
        Ok(splitter
            .finish()?
            .into_iter()
            .map(|f| (f.header.hash, f.pieces))
            .collect())
    }

    /// What the whole-body decoder says of `body`.
    fn reference(body: &[u8]) -> Result<Vec<(BlockHash, Vec<u8>)>, FrameError> {
        decode_store_frames(body, LIMIT)
            .map(|f| f.map(|f| (f.hash, f.data.to_vec())))
            .collect()
    }

    fn flat(blocks: Vec<(BlockHash, Pieces)>) -> Vec<(BlockHash, Vec<u8>)> {
        blocks
            .into_iter()
            .map(|(h, p)| (h, p.into_iter().flat_map(|b| b.to_vec()).collect()))
            .collect()
    }

    #[test]
    fn any_chunking_gives_the_blocks_of_the_whole_body_decoder() {
        let blocks = vec![vec![7u8; 100_000], Vec::new(), b"x".to_vec(), vec![9u8; 37]];
        let body = body_of(&blocks);
        let expected = reference(&body).unwrap();
        assert_eq!(expected.len(), 4);
        for step in [1, 2, 35, 36, 37, 4096, 65_536, body.len()] {
            let got = split(&body, step).unwrap();
            for (hash, pieces) in &got {
                assert_eq!(pieces.hash(), *hash);
            }
            assert_eq!(flat(got), expected, "chunks of {step} bytes");
        }
    }

    #[test]
    fn pieces_are_slices_of_the_chunks_not_copies() {
        let body = Bytes::from(body_of(&[vec![1u8; 1000]]));
        let mut splitter = FrameSplitter::new(LIMIT);
        splitter.push(body.slice(..500)).unwrap();
        splitter.push(body.slice(500..)).unwrap();
        let blocks = splitter.finish().unwrap();
        let parts = blocks[0].pieces.parts();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].as_ptr(), body[STORE_HEADER_BYTES..].as_ptr());
        assert_eq!(parts[1].as_ptr(), body[500..].as_ptr());
    }

    #[test]
    fn a_body_cut_anywhere_is_refused_as_the_whole_body_decoder_refuses_it() {
        let body = body_of(&[vec![3u8; 5000], vec![4u8; 10]]);
        for cut in [1, 35, 36, 37, 5035, 5037, 5071, 5072, body.len() - 1] {
            let expected = reference(&body[..cut]).unwrap_err();
            for step in [1, 7, 4096] {
                assert_eq!(
                    split(&body[..cut], step).unwrap_err(),
                    expected,
                    "cut at {cut}, chunks of {step}"
                );
            }
        }
    }

    #[test]
    fn limits_are_the_whole_body_decoders() {
        let mut over_block = Vec::new();
        over_block.extend_from_slice(&crate::frame::store_frame_header(
            &BlockHash::of(b""),
            (4 << 20) + 1,
        ));
        let big = vec![0u8; 4 << 20];
        let over_batch = body_of(&[big.clone(), big.clone(), b"y".to_vec()]);
        for body in [over_block, over_batch] {
            let expected = reference(&body).unwrap_err();
            assert_eq!(split(&body, 65_536).unwrap_err(), expected);
        }
    }

    #[test]
    fn format_2_frames_split_under_any_chunking_and_lying_lengths_are_refused() {
        let raw = vec![5u8; 3000];
        let hash = BlockHash::of(&raw);
        let frame = |header: StoreHeader, bytes: &[u8]| {
            let mut body = crate::frame::store_frame_header_v2(&header).to_vec();
            body.extend_from_slice(bytes);
            body
        };
        let plain = StoreHeader {
            hash,
            raw_len: 3000,
            wire_len: 3000,
            zstd: false,
            delta: false,
        };
        let packed = StoreHeader {
            hash,
            raw_len: 3000,
            wire_len: 10,
            zstd: true,
            delta: false,
        };
        let body = [frame(plain, &raw), frame(packed, &[1; 10])].concat();
        for step in [1, 40, 41, 42, 4096] {
            let got = split_as(&body, step, FrameFormat::V2).unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].1.len(), 3000);
            assert_eq!(got[1].1.len(), 10, "the compressed bytes, as sent");
        }
        let lying = StoreHeader {
            wire_len: 2999,
            ..plain
        };
        assert!(matches!(
            split_as(&frame(lying, &raw[..2999]), 7, FrameFormat::V2),
            Err(FrameError::LengthMismatch { .. })
        ));
        let not_smaller = StoreHeader {
            wire_len: 3000,
            ..packed
        };
        assert!(matches!(
            split_as(&frame(not_smaller, &raw), 7, FrameFormat::V2),
            Err(FrameError::LengthMismatch { .. })
        ));
        let mut odd = frame(plain, &raw);
        odd[32] = 0x80;
        assert!(matches!(
            split_as(&odd, 7, FrameFormat::V2),
            Err(FrameError::BadFlags { flags: 0x80, .. })
        ));
        odd[32] = FLAG_ZSTD | FLAG_DELTA;
        assert!(
            matches!(
                split_as(&odd, 7, FrameFormat::V2),
                Err(FrameError::BadFlags { flags: 3, .. })
            ),
            "a delta is never also compressed"
        );
        let huge = StoreHeader {
            raw_len: (4 << 20) + 1,
            wire_len: 10,
            ..packed
        };
        assert!(matches!(
            split_as(&frame(huge, &[0; 10]), 7, FrameFormat::V2),
            Err(FrameError::BlockTooLarge { .. })
        ));
    }
}

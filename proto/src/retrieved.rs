//! A retrieve_batch answer read as a stream of frames, each large block's bytes landing at
//! an O_DIRECT alignment, so a block is verified and written straight from where the
//! socket put it (reading the whole answer and then copying every block to an aligned
//! buffer was 15 % of a downloading client's time).
//!
//! Blocks of at least [`DIRECT_BYTES_MIN`] start at an aligned address and are followed by
//! zeros up to the alignment; smaller ones are packed. The buffer is sized for the worst
//! case before the first byte is read and only grows, so nothing moves while frames land.
//!
//! In frame format 2 a block may arrive zstd-compressed: its bytes are read into a side
//! buffer and expanded into the block's place, never past the length the frame declares
//! (itself within the block and batch limits), and a block that does not expand to exactly
//! that length is damage like any other broken frame. A delta frame's bytes (an answer to
//! a request that sent signatures) land as they came, for the caller to apply to its base.

use std::io::{self, Read};

use crate::frame::{
    decode_retrieve_header_of, FrameError, FrameFormat, RetrieveStatus, RETRIEVE_V2_HEADER_BYTES,
};
use crate::payload::{Payload, ALIGN_BYTES, DIRECT_BYTES_MIN};
use crate::BlockHash;

/// One frame of the answer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The block asked for.
    pub hash: BlockHash,
    /// What the server answered.
    pub status: RetrieveStatus,
    /// The block's bytes; empty unless `status` is `Ok`. With `delta`, the delta instead.
    pub payload: Payload<'a>,
    /// `Some(block_len)` when `payload` is a delta that rebuilds the block, of that many
    /// bytes, from the base whose signature the request sent.
    pub delta: Option<usize>,
}

/// What became of a frame's bytes.
enum Landed {
    /// This many of its wire bytes were read (fewer than it declares: the answer was cut).
    Read(usize),
    /// Its compressed bytes came whole but do not expand to exactly the declared block.
    NotTheBlock,
}

/// Where a frame's bytes are in the buffer.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: BlockHash,
    status: RetrieveStatus,
    start: usize,
    len: usize,
    aligned: bool,
    /// The block's length, when the slot holds a delta of `len` bytes.
    delta: Option<usize>,
}

/// The frames of the last answer read, in the order they came.
#[derive(Default)]
pub struct Retrieved {
    buf: Vec<u8>,
    /// A compressed block's bytes as they came, before they are expanded into `buf`.
    packed: Vec<u8>,
    slots: Vec<Slot>,
    /// Why the answer stopped before its end, if it did.
    damage: Option<String>,
}

impl Retrieved {
    /// Replaces the frames with those read from `reader`, an answer in frame `format`,
    /// until it ends: at most `frames_max` frames whose blocks total at most
    /// `payload_bytes_max`. `moved` is told the bytes of each frame as it lands (as they
    /// came on the wire). A frame that breaks the rules ends the reading and is kept as
    /// [`Retrieved::damage`], as does an answer cut inside a frame; the frames before it
    /// stay usable. An error only if the connection failed.
    pub fn read_from(
        &mut self,
        reader: &mut impl Read,
        format: FrameFormat,
        payload_bytes_max: u64,
        frames_max: usize,
        mut moved: impl FnMut(u64),
    ) -> io::Result<()> {
        self.slots.clear();
        self.damage = None;
        let payload_bytes_max = payload_bytes_max as usize;
        // Every aligned block may waste up to an alignment before it (after a small block)
        // and another in its zero padding; the buffer's start one more. At most
        // `payload_bytes_max / DIRECT_BYTES_MIN` aligned blocks fit in the payload limit.
        let aligned_max = payload_bytes_max / DIRECT_BYTES_MIN;
        let need = payload_bytes_max + (2 * aligned_max + 1) * ALIGN_BYTES;
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let base = self.buf.as_ptr().align_offset(ALIGN_BYTES);
        let mut end = base;
        let (mut offset, mut payload_total) = (0usize, 0u64);
        let header_bytes = format.retrieve_header_bytes();
        let mut header_buf = [0u8; RETRIEVE_V2_HEADER_BYTES];
        let header = &mut header_buf[..header_bytes];
        loop {
            match read_full(reader, header)? {
                0 => return Ok(()),
                n if n == header_bytes => {}
                available => {
                    return self.damaged(FrameError::Truncated {
                        offset,
                        needed: header_bytes,
                        available,
                    })
                }
            }
            if self.slots.len() == frames_max {
                self.damage = Some(format!("more than the {frames_max} frames asked for"));
                return Ok(());
            }
            let h = match decode_retrieve_header_of(
                format,
                header,
                offset,
                &mut payload_total,
                payload_bytes_max as u64,
            ) {
                Ok(h) => h,
                Err(e) => return self.damaged(e),
            };
            let len = h.len as usize;
            let aligned = len >= DIRECT_BYTES_MIN;
            let start = match aligned {
                true => base + (end - base).next_multiple_of(ALIGN_BYTES),
                false => end,
            };
            let stop = match aligned {
                true => start + len.next_multiple_of(ALIGN_BYTES),
                false => start + len,
            };
            assert!(
                stop <= self.buf.len(),
                "the buffer was sized for the limits"
            );
            let wire_len = h.wire_len as usize;
            let landed = match h.zstd {
                false => Landed::Read(read_full(reader, &mut self.buf[start..start + wire_len])?),
                true => self.expand(reader, wire_len, start, len)?,
            };
            match landed {
                Landed::Read(got) if got < wire_len => {
                    return self.damaged(FrameError::Truncated {
                        offset,
                        needed: header_bytes + wire_len,
                        available: header_bytes + got,
                    })
                }
                Landed::Read(_) => {}
                Landed::NotTheBlock => {
                    self.damage = Some(format!(
                        "frame at byte {offset}: its compressed block does not expand to the \
                         {len} bytes it declares"
                    ));
                    return Ok(());
                }
            }
            self.buf[start + len..stop].fill(0);
            self.slots.push(Slot {
                hash: h.hash,
                status: h.status,
                start,
                len: if h.delta { wire_len } else { len },
                aligned: aligned && !h.delta,
                delta: h.delta.then_some(len),
            });
            moved((header_bytes + wire_len) as u64);
            offset += header_bytes + wire_len;
            end = stop;
        }
    }

    /// Reads a compressed block's `wire_len` bytes and expands them into `buf[start..]`,
    /// exactly `len` bytes.
    fn expand(
        &mut self,
        reader: &mut impl Read,
        wire_len: usize,
        start: usize,
        len: usize,
    ) -> io::Result<Landed> {
        self.packed.resize(wire_len, 0);
        let got = read_full(reader, &mut self.packed)?;
        if got < wire_len {
            return Ok(Landed::Read(got));
        }
        // One byte of room past the block tells a block that would expand further apart.
        let room = (len + 1).min(self.buf.len() - start);
        let out = &mut self.buf[start..start + room];
        match zstd::bulk::decompress_to_buffer(&self.packed, out) {
            Ok(n) if n == len => Ok(Landed::Read(wire_len)),
            _ => Ok(Landed::NotTheBlock),
        }
    }

    fn damaged(&mut self, e: FrameError) -> io::Result<()> {
        self.damage = Some(e.to_string());
        Ok(())
    }

    /// The frames, in order.
    pub fn frames(&self) -> impl Iterator<Item = Frame<'_>> + '_ {
        self.slots.iter().map(|s| {
            let payload = match s.aligned {
                true => {
                    let padded = &self.buf[s.start..s.start + s.len.next_multiple_of(ALIGN_BYTES)];
                    Payload::aligned(padded, s.len).expect("slots are placed aligned and padded")
                }
                false => Payload::plain(&self.buf[s.start..s.start + s.len]),
            };
            Frame {
                hash: s.hash,
                status: s.status,
                payload,
                delta: s.delta,
            }
        })
    }

    /// Why the answer stopped early (a frame that broke the rules), if it did.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }
}

/// Fills `buf` unless the stream ends first; the bytes filled.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_retrieve_frame;
    use crate::limits::{BATCH_BYTES_DEFAULT, BLOCK_BYTES_MAX};

    /// Hands out at most 7,001 bytes per read, as a socket does, then fails if told to.
    struct Trickle<'a> {
        bytes: &'a [u8],
        fail_at_end: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.bytes.is_empty() && self.fail_at_end {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
            }
            let n = buf.len().min(self.bytes.len()).min(7001);
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn block(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
            .collect()
    }

    fn read(answer: &mut Retrieved, body: &[u8], frames_max: usize) -> io::Result<u64> {
        let mut moved = 0;
        let mut r = Trickle {
            bytes: body,
            fail_at_end: false,
        };
        answer.read_from(
            &mut r,
            FrameFormat::V1,
            BATCH_BYTES_DEFAULT as u64,
            frames_max,
            |n| moved += n,
        )?;
        Ok(moved)
    }

    #[test]
    fn large_blocks_land_aligned() {
        let blocks = [
            block(3, 5000),
            block(5, BLOCK_BYTES_MAX),
            block(7, DIRECT_BYTES_MIN + 5),
            block(9, 1),
        ];
        let mut body = Vec::new();
        for b in &blocks {
            encode_retrieve_frame(&mut body, &BlockHash::of(b), RetrieveStatus::Ok, b);
        }
        let missing = BlockHash::of(b"missing");
        encode_retrieve_frame(&mut body, &missing, RetrieveStatus::NotFound, &[]);
        let mut answer = Retrieved::default();
        assert_eq!(read(&mut answer, &body, 5).unwrap(), body.len() as u64);
        assert_eq!(answer.damage(), None);
        let frames: Vec<Frame> = answer.frames().collect();
        assert_eq!(frames.len(), 5);
        for (f, b) in frames.iter().zip(&blocks) {
            assert_eq!(f.status, RetrieveStatus::Ok);
            assert_eq!(f.hash, BlockHash::of(b));
            assert_eq!(f.payload.data(), &b[..]);
            let aligned = f.payload.data().as_ptr().align_offset(ALIGN_BYTES) == 0;
            assert!(aligned || b.len() < DIRECT_BYTES_MIN, "{} bytes", b.len());
        }
        assert_eq!(frames[4].status, RetrieveStatus::NotFound);
        assert!(frames[4].payload.data().is_empty());
    }

    #[test]
    fn a_reused_answer_holds_only_the_new_frames_with_zero_padding() {
        let mut answer = Retrieved::default();
        let old = vec![0xffu8; BLOCK_BYTES_MAX];
        let mut body = Vec::new();
        encode_retrieve_frame(&mut body, &BlockHash::of(&old), RetrieveStatus::Ok, &old);
        read(&mut answer, &body, 1).unwrap();
        // A shorter block where the old one lay: its padding must not show old bytes.
        let new = block(11, DIRECT_BYTES_MIN + 100);
        body.clear();
        encode_retrieve_frame(&mut body, &BlockHash::of(&new), RetrieveStatus::Ok, &new);
        read(&mut answer, &body, 1).unwrap();
        let frames: Vec<Frame> = answer.frames().collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].payload.data(), &new[..]);
        // What an O_DIRECT write takes: the block, then zeros to the alignment.
        let padded = frames[0]
            .payload
            .padded()
            .expect("a large block lands aligned");
        assert_eq!(&padded[..new.len()], &new[..]);
        assert!(
            padded[new.len()..].iter().all(|&b| b == 0),
            "padding is zeros"
        );
    }

    #[test]
    fn a_broken_answer_keeps_the_frames_before_the_damage() {
        let a = block(13, 4096);
        let b = block(17, DIRECT_BYTES_MIN);
        let mut body = Vec::new();
        encode_retrieve_frame(&mut body, &BlockHash::of(&a), RetrieveStatus::Ok, &a);
        let first = body.len();
        encode_retrieve_frame(&mut body, &BlockHash::of(&b), RetrieveStatus::Ok, &b);
        let mut answer = Retrieved::default();
        // Cut inside the second payload, inside its header, and a bad status byte.
        let mut bad_status = body.clone();
        bad_status[first + 32] = 9;
        for (case, cut) in [
            ("payload", &body[..body.len() - 1]),
            ("header", &body[..first + 10]),
            ("status", &bad_status[..]),
        ] {
            read(&mut answer, cut, 2).unwrap();
            let frames: Vec<Frame> = answer.frames().collect();
            assert_eq!(frames.len(), 1, "{case}");
            assert_eq!(frames[0].payload.data(), &a[..], "{case}");
            assert!(answer.damage().is_some(), "{case}");
        }
        read(&mut answer, &body, 1).unwrap();
        assert_eq!(answer.frames().count(), 1);
        assert!(answer.damage().unwrap().contains("more than the 1 frames"));
    }

    #[test]
    fn payloads_over_the_limit_are_damage_and_a_failed_connection_an_error() {
        let a = block(19, BLOCK_BYTES_MAX);
        let mut body = Vec::new();
        for _ in 0..3 {
            encode_retrieve_frame(&mut body, &BlockHash::of(&a), RetrieveStatus::Ok, &a);
        }
        let mut answer = Retrieved::default();
        read(&mut answer, &body, 3).unwrap();
        assert_eq!(
            answer.frames().count(),
            2,
            "8 MiB of payload fit, 12 do not"
        );
        assert!(answer.damage().unwrap().contains("batch limit"));
        let mut failing = Trickle {
            bytes: &body[..100],
            fail_at_end: true,
        };
        let r = answer.read_from(
            &mut failing,
            FrameFormat::V1,
            BATCH_BYTES_DEFAULT as u64,
            3,
            |_| {},
        );
        assert!(r.is_err());
    }

    #[test]
    fn the_worst_layout_within_the_limits_fits_the_buffer() {
        // Each aligned block preceded by a 1-byte block and one byte past the alignment:
        // padding before and after every one of them.
        let large = block(23, DIRECT_BYTES_MIN + 1);
        let mut body = Vec::new();
        let mut frames = 0;
        let mut payload = 0;
        while payload + 1 + large.len() <= BATCH_BYTES_DEFAULT {
            encode_retrieve_frame(&mut body, &BlockHash::of(b"s"), RetrieveStatus::Ok, b"s");
            encode_retrieve_frame(
                &mut body,
                &BlockHash::of(&large),
                RetrieveStatus::Ok,
                &large,
            );
            frames += 2;
            payload += 1 + large.len();
        }
        // And the rest of the payload limit in one small block, which needs no padding.
        let rest = block(29, BATCH_BYTES_DEFAULT - payload);
        assert!(rest.len() < DIRECT_BYTES_MIN);
        encode_retrieve_frame(&mut body, &BlockHash::of(&rest), RetrieveStatus::Ok, &rest);
        frames += 1;
        let mut answer = Retrieved::default();
        read(&mut answer, &body, frames).unwrap();
        assert_eq!(answer.damage(), None);
        assert_eq!(answer.frames().count(), frames);
        let last = answer.frames().last().unwrap();
        assert_eq!(last.payload.data(), &rest[..]);
    }

    /// Appends a format-2 frame of `block`, compressed when `zstd`, claiming `raw_len`.
    fn v2_frame(body: &mut Vec<u8>, block: &[u8], zstd: bool, raw_len: usize) {
        use crate::frame::retrieve_frame_header_v2;
        let wire = match zstd {
            true => zstd::bulk::compress(block, 3).unwrap(),
            false => block.to_vec(),
        };
        let lens = (raw_len as u32, wire.len() as u32, zstd);
        let h = BlockHash::of(block);
        body.extend_from_slice(&retrieve_frame_header_v2(&h, RetrieveStatus::Ok, lens));
        body.extend_from_slice(&wire);
    }

    fn read_v2(answer: &mut Retrieved, body: &[u8], frames_max: usize) -> u64 {
        let mut moved = 0;
        let mut r = Trickle {
            bytes: body,
            fail_at_end: false,
        };
        answer
            .read_from(
                &mut r,
                FrameFormat::V2,
                BATCH_BYTES_DEFAULT as u64,
                frames_max,
                |n| moved += n,
            )
            .unwrap();
        moved
    }

    #[test]
    fn a_delta_frame_lands_as_it_came_with_its_block_length() {
        use crate::delta::{apply, delta_of, parse_signature, signature_of};
        use crate::frame::retrieve_delta_header;
        let base = block(3, 1 << 20);
        let mut new = base.clone();
        new[1000..1100].fill(7);
        let sig = parse_signature(signature_of(&base)).unwrap();
        let delta = delta_of(&sig, &new, new.len()).unwrap();
        let mut body = Vec::new();
        let h = BlockHash::of(&new);
        body.extend_from_slice(&retrieve_delta_header(
            &h,
            new.len() as u32,
            delta.len() as u32,
        ));
        body.extend_from_slice(&delta);
        v2_frame(&mut body, &new, false, new.len());
        let mut answer = Retrieved::default();
        let moved = read_v2(&mut answer, &body, 2);
        assert_eq!(answer.damage(), None);
        assert_eq!(moved as usize, body.len());
        let frames: Vec<Frame> = answer.frames().collect();
        assert_eq!(frames[0].delta, Some(new.len()));
        assert_eq!(frames[0].payload.data(), &delta[..]);
        assert_eq!(
            apply(&base, frames[0].payload.data(), new.len()).unwrap(),
            new
        );
        assert_eq!(
            (frames[1].delta, frames[1].payload.data()),
            (None, &new[..])
        );
    }

    #[test]
    fn format_two_blocks_expand_in_place_and_count_their_wire_bytes() {
        let text: Vec<u8> = b"fn main() { println!(\"hello\"); }\n".repeat(130_000);
        let blocks = [
            (text[..BLOCK_BYTES_MAX].to_vec(), true),
            (block(31, DIRECT_BYTES_MIN + 3), false),
            (text[..900].to_vec(), true),
        ];
        let mut body = Vec::new();
        for (b, zstd) in &blocks {
            v2_frame(&mut body, b, *zstd, b.len());
        }
        use crate::frame::retrieve_frame_header_v2;
        let missing = BlockHash::of(b"gone");
        let none = (0, 0, false);
        body.extend_from_slice(&retrieve_frame_header_v2(
            &missing,
            RetrieveStatus::NotFound,
            none,
        ));
        let mut answer = Retrieved::default();
        assert_eq!(
            read_v2(&mut answer, &body, 4),
            body.len() as u64,
            "wire bytes"
        );
        let raw: usize = blocks.iter().map(|(b, _)| b.len()).sum();
        assert!(body.len() < raw / 4, "the text travelled compressed");
        assert_eq!(answer.damage(), None);
        let frames: Vec<Frame> = answer.frames().collect();
        for (f, (b, _)) in frames.iter().zip(&blocks) {
            assert_eq!(f.payload.data(), &b[..]);
            let aligned = f.payload.data().as_ptr().align_offset(ALIGN_BYTES) == 0;
            assert!(aligned || b.len() < DIRECT_BYTES_MIN);
        }
        assert_eq!(frames[3].status, RetrieveStatus::NotFound);
    }

    #[test]
    fn format_two_frames_that_lie_are_damage_after_the_good_ones() {
        let text: Vec<u8> = b"log line 42: all is well\n".repeat(10_000);
        let mut good = Vec::new();
        v2_frame(&mut good, &text[..5000], true, 5000);
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // Expands to more, and to fewer, bytes than declared; not zstd at all; cut short.
        let mut more = good.clone();
        v2_frame(&mut more, &text[..6000], true, 5999);
        cases.push(("more", more));
        let mut fewer = good.clone();
        v2_frame(&mut fewer, &text[..6000], true, 6001);
        cases.push(("fewer", fewer));
        let mut garbage = good.clone();
        let lens = (6000, 100, true);
        garbage.extend_from_slice(&crate::frame::retrieve_frame_header_v2(
            &BlockHash::of(b"g"),
            RetrieveStatus::Ok,
            lens,
        ));
        garbage.extend_from_slice(&[0xa5; 100]);
        cases.push(("garbage", garbage));
        let mut cut = good.clone();
        v2_frame(&mut cut, &text[..6000], true, 6000);
        cut.pop();
        cases.push(("cut", cut));
        let mut flags = good.clone();
        v2_frame(&mut flags, &text[..10], false, 10);
        let at = good.len() + 33;
        flags[at] = 0x80;
        cases.push(("flags", flags));
        let mut answer = Retrieved::default();
        for (case, body) in cases {
            read_v2(&mut answer, &body, 2);
            assert_eq!(answer.frames().count(), 1, "{case}");
            assert_eq!(
                answer.frames().next().unwrap().payload.data(),
                &text[..5000]
            );
            assert!(answer.damage().is_some(), "{case}");
        }
    }
}

//! The binary frame codec for block batches.
//!
//! store_batch bodies are a sequence of store frames `[hash 32 B][len u32 LE][bytes]`;
//! retrieve_batch bodies are retrieve frames `[hash 32 B][status u8][len u32 LE][bytes]`,
//! where only status `ok` carries bytes. Format 2 (`Holdall-Frame-Format: 2`) adds a flags
//! byte and both lengths after the hash (and status): `[flags u8][raw_len u32 LE][wire_len
//! u32 LE]`, flag bit 0 meaning the `wire_len` bytes are the block zstd-compressed, bit 1 that
//! they are a delta (crate::delta). Decoders borrow from the body (no allocation), and
//! refuse truncated frames, blocks over [`BLOCK_BYTES_MAX`], payload totals over the caller's
//! limit, and trailing garbage, without panicking.

use crate::hash::BlockHash;
use crate::limits::BLOCK_BYTES_MAX;

/// Bytes of a store frame's header.
pub const STORE_HEADER_BYTES: usize = 32 + 4;
/// Bytes of a retrieve frame's header.
pub const RETRIEVE_HEADER_BYTES: usize = 32 + 1 + 4;

/// Bytes of a format-2 store frame's header.
pub const STORE_V2_HEADER_BYTES: usize = 32 + 1 + 4 + 4;
/// Bytes of a format-2 retrieve frame's header.
pub const RETRIEVE_V2_HEADER_BYTES: usize = 32 + 1 + 1 + 4 + 4;
/// Format-2 flag: the frame's bytes are zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;
/// Format-2 flag: the frame's bytes are an rsync delta (crate::delta), never also zstd.
pub const FLAG_DELTA: u8 = 2;
/// The request header that selects a frame format.
pub const FRAME_FORMAT_HEADER: &str = "Holdall-Frame-Format";

/// The frame formats a store_batch or retrieve_batch may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameFormat {
    /// Raw blocks, one length.
    #[default]
    V1,
    /// A flags byte and both lengths: blocks may travel compressed.
    V2,
}

impl FrameFormat {
    /// The format a `Holdall-Frame-Format` value names.
    pub fn from_header(value: &str) -> Option<FrameFormat> {
        match value.trim() {
            "1" => Some(FrameFormat::V1),
            "2" => Some(FrameFormat::V2),
            _ => None,
        }
    }

    /// Bytes of a retrieve frame header in this format.
    pub fn retrieve_header_bytes(self) -> usize {
        match self {
            FrameFormat::V1 => RETRIEVE_HEADER_BYTES,
            FrameFormat::V2 => RETRIEVE_V2_HEADER_BYTES,
        }
    }

    /// Bytes of a store frame header in this format.
    pub fn store_header_bytes(self) -> usize {
        match self {
            FrameFormat::V1 => STORE_HEADER_BYTES,
            FrameFormat::V2 => STORE_V2_HEADER_BYTES,
        }
    }
}

/// A store frame header, either format: the claimed hash, the block's length, and the
/// bytes that follow (compressed when `zstd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHeader {
    /// The hash the sender claims for the block.
    pub hash: BlockHash,
    /// The block's length.
    pub raw_len: u32,
    /// Bytes that follow the header.
    pub wire_len: u32,
    /// Whether those bytes are the block zstd-compressed.
    pub zstd: bool,
    /// Whether those bytes are a delta: a base reference and the delta against that base.
    pub delta: bool,
}

/// What is wrong with a frame body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The body ends inside a frame header or payload.
    #[error("frame at byte {offset} is truncated: needs {needed} bytes, {available} remain")]
    Truncated {
        /// Offset of the frame in the body.
        offset: usize,
        /// Bytes the frame declares (header plus payload).
        needed: usize,
        /// Bytes left in the body.
        available: usize,
    },
    /// A frame declares a block larger than [`BLOCK_BYTES_MAX`].
    #[error("frame at byte {offset} declares {len} bytes, more than the 4194304 a block may hold")]
    BlockTooLarge {
        /// Offset of the frame in the body.
        offset: usize,
        /// Declared payload length.
        len: u64,
    },
    /// The payloads together exceed the batch limit.
    #[error("frames declare {total} payload bytes, more than the batch limit of {limit}")]
    BatchTooLarge {
        /// Payload bytes declared so far, including the frame that crossed the limit.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// A retrieve frame's status byte is not 0–3.
    #[error("frame at byte {offset} has unknown status {status}")]
    BadStatus {
        /// Offset of the frame in the body.
        offset: usize,
        /// The status byte.
        status: u8,
    },
    /// A format-2 frame sets flags this reader does not know.
    #[error("frame at byte {offset} has unknown flags {flags:#04x}")]
    BadFlags {
        /// Offset of the frame in the body.
        offset: usize,
        /// The flags byte.
        flags: u8,
    },
    /// A format-2 frame's lengths disagree: a raw block whose lengths differ, or a
    /// compressed one no smaller than the block.
    #[error("frame at byte {offset} declares {raw_len} block bytes but {wire_len} on the wire")]
    LengthMismatch {
        /// Offset of the frame in the body.
        offset: usize,
        /// The block's declared length.
        raw_len: u32,
        /// The bytes that follow.
        wire_len: u32,
    },
    /// A retrieve frame whose status is not `ok` carries bytes.
    #[error("frame at byte {offset} has status {status:?} but carries {len} bytes")]
    PayloadWithoutData {
        /// Offset of the frame in the body.
        offset: usize,
        /// The status.
        status: RetrieveStatus,
        /// Declared payload length.
        len: u32,
    },
}

/// The outcome for one block in a retrieve_batch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrieveStatus {
    /// The block's bytes follow.
    Ok = 0,
    /// No such block where the caller may look.
    NotFound = 1,
    /// In a live prefetch entry but not uploaded yet.
    Pending = 2,
    /// The prefetch entry is gone or changed: fall back to the committed file.
    NotEligible = 3,
}

impl RetrieveStatus {
    fn from_byte(b: u8) -> Option<RetrieveStatus> {
        Some(match b {
            0 => RetrieveStatus::Ok,
            1 => RetrieveStatus::NotFound,
            2 => RetrieveStatus::Pending,
            3 => RetrieveStatus::NotEligible,
            _ => return None,
        })
    }
}

/// One decoded store frame, borrowing its payload from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreFrame<'a> {
    /// The hash the sender claims for `data`.
    pub hash: BlockHash,
    /// The block's bytes.
    pub data: &'a [u8],
}

/// One decoded retrieve frame, borrowing its payload from the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrieveFrame<'a> {
    /// The block asked for.
    pub hash: BlockHash,
    /// What the server answered.
    pub status: RetrieveStatus,
    /// The block's bytes; empty unless `status` is `Ok`.
    pub data: &'a [u8],
}

/// The header of a store frame carrying `len` bytes.
pub fn store_frame_header(hash: &BlockHash, len: u32) -> [u8; STORE_HEADER_BYTES] {
    let mut h = [0u8; STORE_HEADER_BYTES];
    h[..32].copy_from_slice(hash.as_bytes());
    h[32..].copy_from_slice(&len.to_le_bytes());
    h
}

/// The header of a retrieve frame carrying `len` bytes.
pub fn retrieve_frame_header(
    hash: &BlockHash,
    status: RetrieveStatus,
    len: u32,
) -> [u8; RETRIEVE_HEADER_BYTES] {
    let mut h = [0u8; RETRIEVE_HEADER_BYTES];
    h[..32].copy_from_slice(hash.as_bytes());
    h[32] = status as u8;
    h[33..].copy_from_slice(&len.to_le_bytes());
    h
}

/// Appends a store frame to `out`.
///
/// # Panics
/// If `data` is longer than [`BLOCK_BYTES_MAX`]: the caller cut the block wrong.
pub fn encode_store_frame(out: &mut Vec<u8>, hash: &BlockHash, data: &[u8]) {
    assert!(data.len() <= BLOCK_BYTES_MAX, "block over 4 MiB");
    out.extend_from_slice(&store_frame_header(hash, data.len() as u32));
    out.extend_from_slice(data);
}

/// Appends a retrieve frame to `out`.
///
/// # Panics
/// If `data` is longer than [`BLOCK_BYTES_MAX`], or not empty with a status other than `Ok`.
pub fn encode_retrieve_frame(
    out: &mut Vec<u8>,
    hash: &BlockHash,
    status: RetrieveStatus,
    data: &[u8],
) {
    assert!(data.len() <= BLOCK_BYTES_MAX, "block over 4 MiB");
    assert!(status == RetrieveStatus::Ok || data.is_empty());
    out.extend_from_slice(&retrieve_frame_header(hash, status, data.len() as u32));
    out.extend_from_slice(data);
}

fn read_hash(bytes: &[u8]) -> BlockHash {
    let mut h = [0u8; 32];
    h.copy_from_slice(&bytes[..32]);
    BlockHash(h)
}

fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Where decoding a body stands: shared by the store and retrieve frame iterators.
struct Cursor<'a> {
    body: &'a [u8],
    offset: usize,
    payload_total: u64,
    payload_bytes_max: u64,
    failed: bool,
}

impl<'a> Cursor<'a> {
    fn new(body: &'a [u8], payload_bytes_max: u64) -> Self {
        Cursor {
            body,
            offset: 0,
            payload_total: 0,
            payload_bytes_max,
            failed: false,
        }
    }

    /// The next frame, whose `H`-byte header `decode` reads (given the frame's offset, the
    /// payload total so far and the batch limit) into what it says and its payload length;
    /// None at the end of the body or after an error.
    fn next_frame<const H: usize, T>(
        &mut self,
        decode: impl FnOnce(&[u8; H], usize, &mut u64, u64) -> Result<(T, u32), FrameError>,
    ) -> Option<Result<(T, &'a [u8]), FrameError>> {
        if self.failed || self.offset == self.body.len() {
            return None;
        }
        let offset = self.offset;
        let rest = &self.body[offset..];
        let result = match rest.first_chunk::<H>() {
            None => Err(FrameError::Truncated {
                offset,
                needed: H,
                available: rest.len(),
            }),
            Some(header) => decode(
                header,
                offset,
                &mut self.payload_total,
                self.payload_bytes_max,
            )
            .and_then(|(decoded, len)| {
                let needed = H + len as usize;
                match rest.get(H..needed) {
                    Some(data) => Ok((decoded, data)),
                    None => Err(FrameError::Truncated {
                        offset,
                        needed,
                        available: rest.len(),
                    }),
                }
            }),
        };
        match &result {
            Ok((_, data)) => self.offset += H + data.len(),
            Err(_) => self.failed = true,
        }
        Some(result)
    }
}

/// Iterates over the store frames of a body; stops at the first error.
pub struct StoreFrames<'a>(Cursor<'a>);

/// Decodes `body` as store frames whose payloads total at most `payload_bytes_max`.
pub fn decode_store_frames(body: &[u8], payload_bytes_max: u64) -> StoreFrames<'_> {
    StoreFrames(Cursor::new(body, payload_bytes_max))
}

impl<'a> Iterator for StoreFrames<'a> {
    type Item = Result<StoreFrame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let frame = self.0.next_frame(decode_store_header)?;
        Some(frame.map(|(hash, data)| StoreFrame { hash, data }))
    }
}

/// Checks a declared payload length against the block limit and, added to
/// `payload_total`, against the batch limit.
fn checked_len(
    offset: usize,
    len: u32,
    payload_total: &mut u64,
    payload_bytes_max: u64,
) -> Result<(), FrameError> {
    if len as usize > BLOCK_BYTES_MAX {
        return Err(FrameError::BlockTooLarge {
            offset,
            len: len as u64,
        });
    }
    *payload_total += len as u64;
    if *payload_total > payload_bytes_max {
        return Err(FrameError::BatchTooLarge {
            total: *payload_total,
            limit: payload_bytes_max,
        });
    }
    Ok(())
}

/// Iterates over the retrieve frames of a body; stops at the first error.
pub struct RetrieveFrames<'a>(Cursor<'a>);

/// Decodes `body` as retrieve frames whose payloads total at most `payload_bytes_max`.
pub fn decode_retrieve_frames(body: &[u8], payload_bytes_max: u64) -> RetrieveFrames<'_> {
    RetrieveFrames(Cursor::new(body, payload_bytes_max))
}

impl<'a> Iterator for RetrieveFrames<'a> {
    type Item = Result<RetrieveFrame<'a>, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        let frame = self.0.next_frame(|header, offset, total, max| {
            let header = decode_retrieve_header(header, offset, total, max)?;
            Ok((header, header.len))
        })?;
        Some(frame.map(|(header, data)| RetrieveFrame {
            hash: header.hash,
            status: header.status,
            data,
        }))
    }
}

/// A retrieve frame's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrieveHeader {
    /// The block asked for.
    pub hash: BlockHash,
    /// What the server answered.
    pub status: RetrieveStatus,
    /// The block's length (0 unless `status` is `Ok`).
    pub len: u32,
    /// Bytes that follow the header: `len`, or fewer when `zstd`.
    pub wire_len: u32,
    /// Whether those bytes are the block zstd-compressed (format 2 only).
    pub zstd: bool,
    /// Whether those bytes are a delta against the signature the request sent for this
    /// block (format 2 only).
    pub delta: bool,
}

/// Decodes the header of the store frame at byte `offset` of a body, for readers that take
/// the body as a stream: checks the block limit and adds the payload to `payload_total`,
/// which must stay within `payload_bytes_max`. Returns the hash the sender claims and the
/// payload's length.
pub fn decode_store_header(
    header: &[u8; STORE_HEADER_BYTES],
    offset: usize,
    payload_total: &mut u64,
    payload_bytes_max: u64,
) -> Result<(BlockHash, u32), FrameError> {
    let len = read_u32(&header[32..36]);
    checked_len(offset, len, payload_total, payload_bytes_max)?;
    Ok((read_hash(header), len))
}

/// Decodes a store frame header of `format` (its first `format.store_header_bytes()` bytes
/// of `header`) at byte `offset` of a body: as [`decode_store_header`], and for format 2
/// the flags and the lengths. The batch limit counts block bytes (what the server will hold
/// once a compressed block is expanded).
pub fn decode_store_header_of(
    format: FrameFormat,
    header: &[u8],
    offset: usize,
    payload_total: &mut u64,
    payload_bytes_max: u64,
) -> Result<StoreHeader, FrameError> {
    let hash = read_hash(header);
    if format == FrameFormat::V1 {
        let len = read_u32(&header[32..36]);
        checked_len(offset, len, payload_total, payload_bytes_max)?;
        return Ok(StoreHeader {
            hash,
            raw_len: len,
            wire_len: len,
            zstd: false,
            delta: false,
        });
    }
    let flags = header[32];
    let (raw_len, wire_len) = (read_u32(&header[33..37]), read_u32(&header[37..41]));
    if !flags_known(flags) {
        return Err(FrameError::BadFlags { offset, flags });
    }
    checked_len(offset, raw_len, payload_total, payload_bytes_max)?;
    let (zstd, delta) = (flags & FLAG_ZSTD != 0, flags & FLAG_DELTA != 0);
    if !lengths_fit(zstd || delta, raw_len, wire_len) {
        return Err(FrameError::LengthMismatch {
            offset,
            raw_len,
            wire_len,
        });
    }
    Ok(StoreHeader {
        hash,
        raw_len,
        wire_len,
        zstd,
        delta,
    })
}

/// Whether a format-2 flags byte is one this codec knows: none, zstd, or delta.
fn flags_known(flags: u8) -> bool {
    matches!(flags, 0 | FLAG_ZSTD | FLAG_DELTA)
}

/// The header of a format-2 store frame.
pub fn store_frame_header_v2(header: &StoreHeader) -> [u8; STORE_V2_HEADER_BYTES] {
    let mut h = [0u8; STORE_V2_HEADER_BYTES];
    h[..32].copy_from_slice(header.hash.as_bytes());
    h[32] = match (header.zstd, header.delta) {
        (true, _) => FLAG_ZSTD,
        (false, true) => FLAG_DELTA,
        (false, false) => 0,
    };
    h[33..37].copy_from_slice(&header.raw_len.to_le_bytes());
    h[37..41].copy_from_slice(&header.wire_len.to_le_bytes());
    h
}

/// The header of a format-2 retrieve frame: `wire_len` bytes follow, the block of
/// `raw_len` bytes compressed when `zstd`.
pub fn retrieve_frame_header_v2(
    hash: &BlockHash,
    status: RetrieveStatus,
    (raw_len, wire_len, zstd): (u32, u32, bool),
) -> [u8; RETRIEVE_V2_HEADER_BYTES] {
    let mut h = [0u8; RETRIEVE_V2_HEADER_BYTES];
    h[..32].copy_from_slice(hash.as_bytes());
    h[32] = status as u8;
    h[33] = if zstd { FLAG_ZSTD } else { 0 };
    h[34..38].copy_from_slice(&raw_len.to_le_bytes());
    h[38..42].copy_from_slice(&wire_len.to_le_bytes());
    h
}

/// The header of a format-2 retrieve frame whose `wire_len` bytes are a delta that rebuilds
/// the block of `raw_len` bytes from the base whose signature the request carried.
pub fn retrieve_delta_header(
    hash: &BlockHash,
    raw_len: u32,
    wire_len: u32,
) -> [u8; RETRIEVE_V2_HEADER_BYTES] {
    let mut h = retrieve_frame_header_v2(hash, RetrieveStatus::Ok, (raw_len, wire_len, false));
    h[33] = FLAG_DELTA;
    h
}

/// Decodes the header of the retrieve frame at byte `offset` of an answer, for readers that
/// take the answer as a stream: checks the status byte, that only `ok` carries bytes, the
/// block limit, and adds the payload to `payload_total`, which must stay within
/// `payload_bytes_max`.
pub fn decode_retrieve_header(
    header: &[u8; RETRIEVE_HEADER_BYTES],
    offset: usize,
    payload_total: &mut u64,
    payload_bytes_max: u64,
) -> Result<RetrieveHeader, FrameError> {
    decode_retrieve_header_of(
        FrameFormat::V1,
        header,
        offset,
        payload_total,
        payload_bytes_max,
    )
}

/// Decodes a retrieve frame header of `format` (its first `format.retrieve_header_bytes()`
/// bytes of `header`): as [`decode_retrieve_header`], and for format 2 the flags and both
/// lengths. The batch limit counts block bytes (what the reader holds once a compressed
/// block is expanded).
pub fn decode_retrieve_header_of(
    format: FrameFormat,
    header: &[u8],
    offset: usize,
    payload_total: &mut u64,
    payload_bytes_max: u64,
) -> Result<RetrieveHeader, FrameError> {
    let status = RetrieveStatus::from_byte(header[32]).ok_or(FrameError::BadStatus {
        offset,
        status: header[32],
    })?;
    let (flags, len, wire_len) = match format {
        FrameFormat::V1 => {
            let len = read_u32(&header[33..37]);
            (0, len, len)
        }
        FrameFormat::V2 => (
            header[33],
            read_u32(&header[34..38]),
            read_u32(&header[38..42]),
        ),
    };
    if !flags_known(flags) {
        return Err(FrameError::BadFlags { offset, flags });
    }
    if status != RetrieveStatus::Ok && (len != 0 || wire_len != 0) {
        return Err(FrameError::PayloadWithoutData {
            offset,
            status,
            len: len.max(wire_len),
        });
    }
    checked_len(offset, len, payload_total, payload_bytes_max)?;
    let (zstd, delta) = (flags & FLAG_ZSTD != 0, flags & FLAG_DELTA != 0);
    if !lengths_fit(zstd || delta, len, wire_len) {
        return Err(FrameError::LengthMismatch {
            offset,
            raw_len: len,
            wire_len,
        });
    }
    Ok(RetrieveHeader {
        hash: read_hash(header),
        status,
        len,
        wire_len,
        zstd,
        delta,
    })
}

/// Whether a format-2 frame's lengths can be: raw bytes are the block's length, compressed
/// ones and deltas fewer (neither is sent where it does not pay).
fn lengths_fit(coded: bool, raw_len: u32, wire_len: u32) -> bool {
    match coded {
        true => wire_len < raw_len,
        false => wire_len == raw_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::BATCH_BYTES_DEFAULT;

    const LIMIT: u64 = BATCH_BYTES_DEFAULT as u64;

    fn store_body(blocks: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for b in blocks {
            encode_store_frame(&mut body, &BlockHash::of(b), b);
        }
        body
    }

    #[test]
    fn store_round_trip() {
        let big = vec![7u8; BLOCK_BYTES_MAX];
        let blocks: [&[u8]; 4] = [b"", b"a", b"hello world", &big];
        let body = store_body(&blocks);
        let frames: Vec<_> = decode_store_frames(&body, LIMIT)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(frames.len(), 4);
        for (f, b) in frames.iter().zip(blocks) {
            assert_eq!(f.data, b);
            assert_eq!(f.hash, BlockHash::of(b));
        }
        assert_eq!(decode_store_frames(&[], LIMIT).count(), 0);
    }

    #[test]
    fn two_full_blocks_fit_the_default_batch() {
        let big = vec![1u8; BLOCK_BYTES_MAX];
        let body = store_body(&[&big, &big]);
        assert!(decode_store_frames(&body, LIMIT).all(|f| f.is_ok()));
        let body = store_body(&[&big, &big, b"x"]);
        let last = decode_store_frames(&body, LIMIT).last().unwrap();
        assert_eq!(
            last,
            Err(FrameError::BatchTooLarge {
                total: LIMIT + 1,
                limit: LIMIT
            })
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let body = store_body(&[b"first block", b"second"]);
        let first_end = STORE_HEADER_BYTES + 11;
        for cut in 0..body.len() {
            let results: Vec<_> = decode_store_frames(&body[..cut], LIMIT).collect();
            if cut == 0 || cut == first_end {
                assert!(results.iter().all(|r| r.is_ok()), "cut {cut}");
            } else {
                assert!(
                    matches!(results.last(), Some(Err(FrameError::Truncated { .. }))),
                    "cut {cut}: {results:?}"
                );
            }
        }
    }

    #[test]
    fn oversized_declared_length_is_refused_before_reading() {
        let mut body = store_frame_header(&BlockHash::of(b""), u32::MAX).to_vec();
        body.extend_from_slice(b"short");
        let r: Vec<_> = decode_store_frames(&body, u64::MAX).collect();
        assert_eq!(
            r,
            vec![Err(FrameError::BlockTooLarge {
                offset: 0,
                len: u32::MAX as u64
            })]
        );
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut body = store_body(&[b"abc"]);
        body.extend_from_slice(&[1, 2, 3]);
        let r: Vec<_> = decode_store_frames(&body, LIMIT).collect();
        assert!(r[0].is_ok());
        assert!(matches!(
            r[1],
            Err(FrameError::Truncated { offset: 39, .. })
        ));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn retrieve_round_trip_and_errors() {
        let h = BlockHash::of(b"x");
        let mut body = Vec::new();
        encode_retrieve_frame(&mut body, &h, RetrieveStatus::Ok, b"x");
        encode_retrieve_frame(&mut body, &h, RetrieveStatus::NotFound, b"");
        encode_retrieve_frame(&mut body, &h, RetrieveStatus::Pending, b"");
        encode_retrieve_frame(&mut body, &h, RetrieveStatus::NotEligible, b"");
        let frames: Vec<_> = decode_retrieve_frames(&body, LIMIT)
            .collect::<Result<_, _>>()
            .unwrap();
        let statuses: Vec<_> = frames.iter().map(|f| f.status).collect();
        assert_eq!(
            statuses,
            [
                RetrieveStatus::Ok,
                RetrieveStatus::NotFound,
                RetrieveStatus::Pending,
                RetrieveStatus::NotEligible
            ]
        );
        assert_eq!(frames[0].data, b"x");

        let mut bad = retrieve_frame_header(&h, RetrieveStatus::Ok, 0).to_vec();
        bad[32] = 9;
        assert_eq!(
            decode_retrieve_frames(&bad, LIMIT).next(),
            Some(Err(FrameError::BadStatus {
                offset: 0,
                status: 9
            }))
        );
        let mut bad = retrieve_frame_header(&h, RetrieveStatus::Pending, 1).to_vec();
        bad.push(0);
        assert!(matches!(
            decode_retrieve_frames(&bad, LIMIT).next(),
            Some(Err(FrameError::PayloadWithoutData { .. }))
        ));
        for cut in 1..body.len() {
            let last = decode_retrieve_frames(&body[..cut], LIMIT).last();
            let boundary = [38, 75, 112].contains(&cut);
            assert_eq!(last.unwrap().is_ok(), boundary, "cut {cut}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (state >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            let _ = decode_store_frames(&bytes, LIMIT).count();
            let _ = decode_retrieve_frames(&bytes, LIMIT).count();
        }
    }
}

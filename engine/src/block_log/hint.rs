//! Index hints of sealed block-log segments, so that opening a store reads no payloads.
//!
//! `seg-NNNNNNNNNN.hint` beside each sealed segment:
//!
//! ```text
//! 0   4  magic "HHNT"
//! 4   1  format version (1)
//! 5   3  reserved, zero
//! 8   8  segment id
//! 16  8  segment length covered (end of the last record)
//! 24  8  entry count N
//! 32  …  N entries of 44 bytes: SHA-256 (32), record offset u64, record length u32
//! …   4  CRC32 of everything before
//! ```

use holdall_proto::BlockHash;

use crate::block_log::record::SEGMENT_HEADER_BYTES;
use crate::ALIGN_BYTES;

const MAGIC: [u8; 4] = *b"HHNT";
const VERSION: u8 = 1;
const HEAD_BYTES: usize = 32;
const ENTRY_BYTES: usize = 44;

/// One record of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntry {
    /// The block.
    pub hash: BlockHash,
    /// Record offset in the segment, bytes.
    pub offset: u64,
    /// Record length, bytes.
    pub record_len: u32,
}

/// A decoded hint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// Segment the hint describes.
    pub segment_id: u64,
    /// Bytes of the segment the entries cover.
    pub segment_len: u64,
    /// Records, in file order.
    pub entries: Vec<HintEntry>,
}

/// Why a hint file cannot be used (the segment is then scanned instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HintError {
    /// Wrong size, magic, version or checksum.
    #[error("hint file is damaged: {0}")]
    Damaged(&'static str),
}

/// Encodes a hint file.
pub fn encode(segment_id: u64, segment_len: u64, entries: &[HintEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD_BYTES + entries.len() * ENTRY_BYTES + 4);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&segment_id.to_le_bytes());
    out.extend_from_slice(&segment_len.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for e in entries {
        out.extend_from_slice(e.hash.as_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.record_len.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and checks a hint file.
pub fn decode(bytes: &[u8]) -> Result<Hint, HintError> {
    if bytes.len() < HEAD_BYTES + 4 {
        return Err(HintError::Damaged("too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(HintError::Damaged("checksum mismatch"));
    }
    if body[0..4] != MAGIC {
        return Err(HintError::Damaged("bad magic"));
    }
    if body[4] != VERSION {
        return Err(HintError::Damaged("unknown version"));
    }
    let count = u64_at(body, 24);
    let expected = (body.len() - HEAD_BYTES) / ENTRY_BYTES;
    if !(body.len() - HEAD_BYTES).is_multiple_of(ENTRY_BYTES) || count != expected as u64 {
        return Err(HintError::Damaged("entry count does not match length"));
    }
    let segment_len = u64_at(body, 16);
    let entries: Vec<HintEntry> = body[HEAD_BYTES..]
        .chunks_exact(ENTRY_BYTES)
        .map(|e| HintEntry {
            hash: BlockHash(e[..32].try_into().expect("32 bytes")),
            offset: u64_at(e, 32),
            record_len: u32::from_le_bytes(e[40..44].try_into().expect("4 bytes")),
        })
        .collect();
    // A checksum proves the bytes are the ones written, not that they make sense: every
    // record must be aligned, after the segment header, and inside the covered length.
    let sane = entries.iter().all(|e| {
        let len = u64::from(e.record_len);
        e.offset >= SEGMENT_HEADER_BYTES
            && e.offset.is_multiple_of(ALIGN_BYTES)
            && len >= ALIGN_BYTES
            && len.is_multiple_of(ALIGN_BYTES)
            && e.offset
                .checked_add(len)
                .is_some_and(|end| end <= segment_len)
    });
    if !sane {
        return Err(HintError::Damaged("an entry lies outside the segment"));
    }
    Ok(Hint {
        segment_id: u64_at(body, 8),
        segment_len,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let entries: Vec<_> = (0..100u64)
            .map(|i| HintEntry {
                hash: BlockHash::of(&i.to_le_bytes()),
                offset: 4096 * (i + 1),
                record_len: 4096,
            })
            .collect();
        let bytes = encode(7, 4096 * 101, &entries);
        let hint = decode(&bytes).unwrap();
        assert_eq!(hint.segment_id, 7);
        assert_eq!(hint.segment_len, 4096 * 101);
        assert_eq!(hint.entries, entries);
        for cut in [0, 10, 36, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        // Checksummed but impossible entries are refused too.
        for (offset, record_len) in [
            (1, 4096),
            (4096 * 101, 4096),
            (4096, 100),
            (u64::MAX - 10, 4096),
        ] {
            let bad = encode(
                7,
                4096 * 101,
                &[HintEntry {
                    hash: BlockHash::of(b"x"),
                    offset,
                    record_len,
                }],
            );
            assert!(decode(&bad).is_err(), "offset {offset} len {record_len}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
    }
}

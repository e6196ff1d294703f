//! The block log's on-disk records and segment headers: encoding and checking, no I/O.
//!
//! Every record starts on a 4096-byte boundary and is padded with zeros to the next one, so
//! each can be written and read with O_DIRECT on its own. Layout (all integers little-endian;
//! docs/FORMATS.md is the reference):
//!
//! ```text
//! 0   4  magic "HBLK"
//! 4   1  format version (1)
//! 5   1  flags: bit 0 = payload encrypted with AES-256-GCM,
//!        bit 1 = payload is the block zstd-compressed
//! 6   2  reserved, zero
//! 8   4  payload_len: plaintext bytes (at most 4 MiB)
//! 12  4  stored_len: bytes stored after the header (payload_len, + 16 when encrypted)
//! 16 12  nonce (zero when not encrypted)
//! 28  4  payload_crc: CRC32 of the stored bytes
//! 32 32  SHA-256 of the block (its name; AEAD associated data)
//! 64  4  block_len: the block's length when compressed (more than payload_len), else zero
//! 68  4  header_crc: CRC32 of bytes 0..68
//! 72  …  stored bytes: ciphertext then 16-byte tag, or the plaintext
//! …      zero padding to a multiple of 4096
//! ```

use holdall_proto::limits::BLOCK_BYTES_MAX;
use holdall_proto::BlockHash;

use crate::store_key::{KeyError, StoreKey, TAG_BYTES};
use crate::{align_up, ALIGN_BYTES};

/// Record magic.
pub const RECORD_MAGIC: [u8; 4] = *b"HBLK";
/// Segment header magic.
pub const SEGMENT_MAGIC: [u8; 4] = *b"HSEG";
/// Format version written in records and segment headers.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of a record header.
pub const HEADER_BYTES: usize = 72;
/// Bytes of the segment header page; the first record follows it.
pub const SEGMENT_HEADER_BYTES: u64 = ALIGN_BYTES;
/// Largest record: header, a full encrypted block, padding.
pub const RECORD_BYTES_MAX: usize =
    align_up((HEADER_BYTES + BLOCK_BYTES_MAX + TAG_BYTES) as u64) as usize;

const FLAG_ENCRYPTED: u8 = 1;
const FLAG_ZSTD: u8 = 2;

/// How a record holds its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The block's own bytes.
    Raw,
    /// The block zstd-compressed; it expands to `block_len` bytes.
    Zstd {
        /// The block's length.
        block_len: u32,
    },
}

/// What is wrong with a record or segment header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Too few bytes for a header or for the record the header declares.
    #[error("record truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there.
        available: usize,
    },
    /// Not a record (or segment header) magic.
    #[error("bad magic")]
    Magic,
    /// A version this build does not read.
    #[error("unknown format version {0}")]
    Version(u8),
    /// Header checksum mismatch.
    #[error("header checksum mismatch")]
    HeaderCrc,
    /// Lengths or flags that cannot be.
    #[error("impossible header field: {0}")]
    Field(&'static str),
    /// Payload checksum mismatch.
    #[error("payload checksum mismatch")]
    PayloadCrc,
    /// The record is encrypted and no key was given, or the tag does not verify.
    #[error("payload does not authenticate")]
    Tag,
    /// The record names another block.
    #[error("record holds a different block")]
    WrongBlock,
    /// A compressed payload that does not expand to exactly the block's length.
    #[error("compressed payload does not expand to its block")]
    Expand,
}

/// A checked record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Plaintext length.
    pub payload_len: u32,
    /// Bytes stored after the header.
    pub stored_len: u32,
    /// Payload is AES-256-GCM ciphertext plus tag.
    pub encrypted: bool,
    /// AEAD nonce.
    pub nonce: [u8; 12],
    /// CRC32 of the stored bytes.
    pub payload_crc: u32,
    /// The block's SHA-256.
    pub hash: BlockHash,
    /// How the payload holds the block.
    pub form: Form,
}

impl RecordHeader {
    /// Bytes the whole record occupies on disk, padding included.
    pub fn record_len(&self) -> usize {
        record_len(self.stored_len as usize)
    }
}

/// Bytes a record with `stored_len` stored bytes occupies.
pub fn record_len(stored_len: usize) -> usize {
    align_up((HEADER_BYTES + stored_len) as u64) as usize
}

/// Bytes stored for a payload of `payload_len` bytes.
pub fn stored_len(payload_len: usize, encrypted: bool) -> usize {
    payload_len + if encrypted { TAG_BYTES } else { 0 }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes the record for the block made of `pieces` (its bytes in order, as they arrived)
/// into `out`, which must be exactly `record_len(stored_len(payload_len, key.is_some()))`
/// bytes; encrypts when a key is given.
pub fn encode_record<P: AsRef<[u8]>>(
    out: &mut [u8],
    hash: &BlockHash,
    pieces: &[P],
    key: Option<&StoreKey>,
) -> Result<(), KeyError> {
    encode_record_of(out, hash, pieces, Form::Raw, key)
}

/// [`encode_record`] for a payload of `form`: `pieces` are the block itself, or the block
/// compressed (shorter than the `block_len` it expands to).
pub fn encode_record_of<P: AsRef<[u8]>>(
    out: &mut [u8],
    hash: &BlockHash,
    pieces: &[P],
    form: Form,
    key: Option<&StoreKey>,
) -> Result<(), KeyError> {
    let payload_len: usize = pieces.iter().map(|p| p.as_ref().len()).sum();
    assert!(payload_len <= BLOCK_BYTES_MAX, "block over 4 MiB");
    let block_len = match form {
        Form::Raw => 0,
        Form::Zstd { block_len } => {
            assert!(
                payload_len < block_len as usize && block_len as usize <= BLOCK_BYTES_MAX,
                "a compressed payload is shorter than its block, at most 4 MiB"
            );
            block_len
        }
    };
    let stored = stored_len(payload_len, key.is_some());
    assert_eq!(out.len(), record_len(stored), "record buffer size");
    let (header, rest) = out.split_at_mut(HEADER_BYTES);
    let (body, padding) = rest.split_at_mut(stored);
    padding.fill(0);
    let (plain, tag_out) = body.split_at_mut(payload_len);
    let mut at = 0;
    for piece in pieces {
        let piece = piece.as_ref();
        plain[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    }
    let mut nonce = [0u8; 12];
    if let Some(key) = key {
        nonce = key.new_nonce()?;
        let tag = key.seal(nonce, hash.as_bytes(), plain);
        tag_out.copy_from_slice(&tag);
    }
    header[0..4].copy_from_slice(&RECORD_MAGIC);
    header[4] = FORMAT_VERSION;
    let zstd = if block_len > 0 { FLAG_ZSTD } else { 0 };
    header[5] = if key.is_some() { FLAG_ENCRYPTED } else { 0 } | zstd;
    header[6..8].fill(0);
    header[8..12].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[12..16].copy_from_slice(&(stored as u32).to_le_bytes());
    header[16..28].copy_from_slice(&nonce);
    header[28..32].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    header[32..64].copy_from_slice(hash.as_bytes());
    header[64..68].copy_from_slice(&block_len.to_le_bytes());
    let header_crc = crc32fast::hash(&header[..68]);
    header[68..72].copy_from_slice(&header_crc.to_le_bytes());
    Ok(())
}

/// Checks the header at the start of `bytes` (magic, version, checksum, field ranges).
pub fn decode_header(bytes: &[u8]) -> Result<RecordHeader, RecordError> {
    if bytes.len() < HEADER_BYTES {
        return Err(RecordError::Truncated {
            needed: HEADER_BYTES,
            available: bytes.len(),
        });
    }
    if bytes[0..4] != RECORD_MAGIC {
        return Err(RecordError::Magic);
    }
    if crc32fast::hash(&bytes[..68]) != u32_at(bytes, 68) {
        return Err(RecordError::HeaderCrc);
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(RecordError::Version(bytes[4]));
    }
    let flags = bytes[5];
    if flags & !(FLAG_ENCRYPTED | FLAG_ZSTD) != 0 {
        return Err(RecordError::Field("unknown flags"));
    }
    let encrypted = flags & FLAG_ENCRYPTED != 0;
    let payload_len = u32_at(bytes, 8);
    let stored = u32_at(bytes, 12);
    if payload_len as usize > BLOCK_BYTES_MAX {
        return Err(RecordError::Field("payload over 4 MiB"));
    }
    let block_len = u32_at(bytes, 64);
    let form = match flags & FLAG_ZSTD != 0 {
        false if block_len != 0 => return Err(RecordError::Field("block length of a raw block")),
        false => Form::Raw,
        true if block_len as usize > BLOCK_BYTES_MAX => {
            return Err(RecordError::Field("compressed block over 4 MiB"))
        }
        true if block_len <= payload_len => {
            return Err(RecordError::Field(
                "compressed payload no shorter than its block",
            ))
        }
        true => Form::Zstd { block_len },
    };
    if stored as usize != stored_len(payload_len as usize, encrypted) {
        return Err(RecordError::Field(
            "stored length does not fit payload length",
        ));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&bytes[16..28]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[32..64]);
    Ok(RecordHeader {
        payload_len,
        stored_len: stored,
        encrypted,
        nonce,
        payload_crc: u32_at(bytes, 28),
        hash: BlockHash(hash),
        form,
    })
}

/// Checks a whole record's stored bytes against its payload checksum.
pub fn check_payload(header: &RecordHeader, record: &[u8]) -> Result<(), RecordError> {
    let end = HEADER_BYTES + header.stored_len as usize;
    if record.len() < end {
        return Err(RecordError::Truncated {
            needed: end,
            available: record.len(),
        });
    }
    if crc32fast::hash(&record[HEADER_BYTES..end]) != header.payload_crc {
        return Err(RecordError::PayloadCrc);
    }
    Ok(())
}

/// Whether an unencrypted record's payload hashes to the name in its header. Used when a
/// record is found by resynchronising after damaged bytes: in the clear, a payload could hold
/// bytes that look like a record, and only the hash tells a real one apart. (An encrypted
/// record's tag, keyed and bound to the name, already does.)
pub fn payload_matches_name(header: &RecordHeader, record: &[u8]) -> bool {
    if header.encrypted {
        return true;
    }
    let end = HEADER_BYTES + header.payload_len as usize;
    let Some(payload) = record.get(HEADER_BYTES..end) else {
        return false;
    };
    match header.form {
        Form::Raw => BlockHash::of(payload) == header.hash,
        Form::Zstd { block_len } => {
            expand(payload, block_len).is_ok_and(|block| BlockHash::of(&block) == header.hash)
        }
    }
}

/// Checks `record` fully and writes the block into `out` (replacing its content), expanded
/// if the record holds it compressed.
pub fn open_record(
    record: &[u8],
    expected: &BlockHash,
    key: Option<&StoreKey>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    match open_record_stored(record, expected, key, out)? {
        Form::Raw => Ok(()),
        Form::Zstd { block_len } => {
            *out = expand(out, block_len)?;
            Ok(())
        }
    }
}

/// Checks `record` fully and writes its payload into `out` (replacing its content) as
/// stored: the block, or the block compressed, as the returned form says.
pub fn open_record_stored(
    record: &[u8],
    expected: &BlockHash,
    key: Option<&StoreKey>,
    out: &mut Vec<u8>,
) -> Result<Form, RecordError> {
    let header = decode_header(record)?;
    if header.hash != *expected {
        return Err(RecordError::WrongBlock);
    }
    check_payload(&header, record)?;
    let stored = &record[HEADER_BYTES..HEADER_BYTES + header.stored_len as usize];
    out.clear();
    out.extend_from_slice(stored);
    if header.encrypted {
        let key = key.ok_or(RecordError::Tag)?;
        let n = key
            .open(header.nonce, header.hash.as_bytes(), out)
            .ok_or(RecordError::Tag)?;
        debug_assert_eq!(n, header.payload_len as usize);
        out.truncate(n);
    }
    Ok(header.form)
}

/// A compressed payload expanded to its block: exactly `block_len` bytes, never more.
pub fn expand(payload: &[u8], block_len: u32) -> Result<Vec<u8>, RecordError> {
    // One byte of room past the block tells a payload that would expand further apart; the
    // room is capacity, written once by zstd, not zeroed first.
    match zstd::bulk::decompress(payload, block_len as usize + 1) {
        Ok(block) if block.len() == block_len as usize => Ok(block),
        _ => Err(RecordError::Expand),
    }
}

/// The segment header page.
///
/// ```text
/// 0   4  magic "HSEG"
/// 4   1  format version (1)
/// 5   3  reserved, zero
/// 8   8  segment id
/// 16  8  store key fingerprint (0 when blocks are not encrypted)
/// 24  4  CRC32 of bytes 0..24
/// 28  …  zero to 4096
/// ```
pub fn encode_segment_header(out: &mut [u8], segment_id: u64, key_fingerprint: u64) {
    assert_eq!(out.len() as u64, SEGMENT_HEADER_BYTES);
    out.fill(0);
    out[0..4].copy_from_slice(&SEGMENT_MAGIC);
    out[4] = FORMAT_VERSION;
    out[8..16].copy_from_slice(&segment_id.to_le_bytes());
    out[16..24].copy_from_slice(&key_fingerprint.to_le_bytes());
    let crc = crc32fast::hash(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
}

/// Checks a segment header page; returns (segment id, key fingerprint).
pub fn decode_segment_header(bytes: &[u8]) -> Result<(u64, u64), RecordError> {
    if bytes.len() < 28 {
        return Err(RecordError::Truncated {
            needed: 28,
            available: bytes.len(),
        });
    }
    if bytes[0..4] != SEGMENT_MAGIC {
        return Err(RecordError::Magic);
    }
    if crc32fast::hash(&bytes[..24]) != u32_at(bytes, 24) {
        return Err(RecordError::HeaderCrc);
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(RecordError::Version(bytes[4]));
    }
    let id = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let fp = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    Ok((id, fp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(payload: &[u8], key: Option<&StoreKey>) -> Vec<u8> {
        let mut out = vec![0xAA; record_len(stored_len(payload.len(), key.is_some()))];
        encode_record(&mut out, &BlockHash::of(payload), &[payload], key).unwrap();
        out
    }

    #[test]
    fn round_trip_plain_and_encrypted() {
        let key = StoreKey::from_bytes(&[3; 32]);
        for payload in [
            &b""[..],
            b"x",
            &vec![9u8; 5000],
            &vec![1u8; BLOCK_BYTES_MAX],
        ] {
            for k in [None, Some(&key)] {
                let rec = encode(payload, k);
                assert_eq!(rec.len() % ALIGN_BYTES as usize, 0);
                let h = decode_header(&rec).unwrap();
                assert_eq!(h.payload_len as usize, payload.len());
                assert_eq!(h.record_len(), rec.len());
                let mut out = Vec::new();
                open_record(&rec, &BlockHash::of(payload), k, &mut out).unwrap();
                assert_eq!(out, payload);
                if k.is_some() && payload.len() >= 64 {
                    assert!(
                        !rec.windows(64).any(|w| w == &payload[..64]),
                        "stored in the clear"
                    );
                }
            }
        }
        assert_eq!(RECORD_BYTES_MAX, BLOCK_BYTES_MAX + 4096);
    }

    #[test]
    fn every_bit_flip_in_header_and_body_is_caught() {
        let key = StoreKey::from_bytes(&[5; 32]);
        let payload = b"a small block of data";
        for k in [None, Some(&key)] {
            let rec = encode(payload, k);
            let end = HEADER_BYTES + stored_len(payload.len(), k.is_some());
            for byte in 0..end {
                for bit in 0..8 {
                    let mut bad = rec.clone();
                    bad[byte] ^= 1 << bit;
                    let mut out = Vec::new();
                    let r = open_record(&bad, &BlockHash::of(payload), k, &mut out);
                    assert!(r.is_err(), "byte {byte} bit {bit}");
                }
            }
        }
    }

    #[test]
    fn wrong_key_or_block_is_refused() {
        let a = StoreKey::from_bytes(&[1; 32]);
        let b = StoreKey::from_bytes(&[2; 32]);
        let rec = encode(b"data", Some(&a));
        let mut out = Vec::new();
        assert_eq!(
            open_record(&rec, &BlockHash::of(b"data"), Some(&b), &mut out),
            Err(RecordError::Tag)
        );
        assert_eq!(
            open_record(&rec, &BlockHash::of(b"data"), None, &mut out),
            Err(RecordError::Tag)
        );
        assert_eq!(
            open_record(&rec, &BlockHash::of(b"other"), Some(&a), &mut out),
            Err(RecordError::WrongBlock)
        );
        assert!(matches!(
            decode_header(&rec[..10]),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            open_record(&rec[..80], &BlockHash::of(b"data"), Some(&a), &mut out),
            Err(RecordError::Truncated { .. })
        ));
    }

    fn encode_packed(block: &[u8], key: Option<&StoreKey>) -> Vec<u8> {
        let packed = zstd::bulk::compress(block, 3).unwrap();
        let mut out = vec![0xAA; record_len(stored_len(packed.len(), key.is_some()))];
        let form = Form::Zstd {
            block_len: block.len() as u32,
        };
        encode_record_of(&mut out, &BlockHash::of(block), &[&packed], form, key).unwrap();
        out
    }

    #[test]
    fn a_compressed_block_opens_expanded_or_as_stored_and_every_flip_is_caught() {
        let key = StoreKey::from_bytes(&[7; 32]);
        let block = b"a line of text that repeats\n".repeat(3000);
        let hash = BlockHash::of(&block);
        for k in [None, Some(&key)] {
            let rec = encode_packed(&block, k);
            let h = decode_header(&rec).unwrap();
            let form = Form::Zstd {
                block_len: block.len() as u32,
            };
            assert_eq!(h.form, form);
            assert!((h.payload_len as usize) < block.len() / 10);
            assert!(payload_matches_name(&h, &rec));
            let mut out = Vec::new();
            open_record(&rec, &hash, k, &mut out).unwrap();
            assert!(out == block);
            assert_eq!(open_record_stored(&rec, &hash, k, &mut out), Ok(form));
            assert_eq!(expand(&out, block.len() as u32).unwrap(), block);
            let end = HEADER_BYTES + h.stored_len as usize;
            for byte in (0..end).step_by(7) {
                let mut bad = rec.clone();
                bad[byte] ^= 1 << (byte % 8);
                assert!(
                    open_record(&bad, &hash, k, &mut out).is_err(),
                    "byte {byte}"
                );
            }
        }
        // Raw records keep bytes 64..68 zero: a block length there is damage.
        let mut raw = encode(b"raw", None);
        raw[64] = 1;
        let crc = crc32fast::hash(&raw[..68]);
        raw[68..72].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode_header(&raw), Err(RecordError::Field(_))));
    }

    #[test]
    fn a_compressed_payload_that_does_not_expand_to_its_block_is_damage() {
        let block = vec![b'z'; 100_000];
        let hash = BlockHash::of(&block);
        let packed = zstd::bulk::compress(&block, 3).unwrap();
        let mut out = Vec::new();
        // Declares a block one byte shorter, or longer, than the payload expands to; or a
        // payload that is not zstd at all (checksummed as written: only expanding tells).
        for (payload, block_len) in [
            (packed.clone(), block.len() - 1),
            (packed.clone(), block.len() + 1),
            (vec![0x5a; 64], block.len()),
        ] {
            let mut rec = vec![0u8; record_len(stored_len(payload.len(), false))];
            let form = Form::Zstd {
                block_len: block_len as u32,
            };
            encode_record_of(&mut rec, &hash, &[&payload], form, None).unwrap();
            assert_eq!(
                open_record(&rec, &hash, None, &mut out),
                Err(RecordError::Expand)
            );
            assert!(!payload_matches_name(&decode_header(&rec).unwrap(), &rec));
        }
    }

    #[test]
    fn segment_header_round_trip() {
        let mut page = vec![1u8; SEGMENT_HEADER_BYTES as usize];
        encode_segment_header(&mut page, 42, 0xdead_beef);
        assert_eq!(decode_segment_header(&page), Ok((42, 0xdead_beef)));
        page[9] ^= 1;
        assert_eq!(decode_segment_header(&page), Err(RecordError::HeaderCrc));
        assert_eq!(decode_segment_header(&[0u8; 4096]), Err(RecordError::Magic));
    }
}

//! rsync-style deltas for blocks that changed a little, in librsync's formats (by
//! `fast_rsync`, Dropbox's implementation).
//!
//! A *signature* describes a base block in pieces of [`SIGNATURE_BLOCK_BYTES`]: a rolling
//! checksum and [`SIGNATURE_HASH_BYTES`] of MD4 each, about 0.6 % of the block. A *delta*
//! against it copies the pieces of the base that the new block still holds and carries the
//! rest literally. MD4 is weak and a signature may come from anyone: a delta is trusted only
//! once what it rebuilds hashes (SHA-256) to the block's name, which both sides check.
//!
//! Bounds: a signature is refused unless its piece size and hash length are sane and its
//! pieces cover at most one 4 MiB block, so indexing one costs at most 8,192 entries; a
//! delta is computed only until it stops paying ([`delta_of`]'s `wire_max`), and applying
//! one never writes past the block's declared length.

use std::io::{self, Write};

pub use fast_rsync::Signature;
use fast_rsync::SignatureOptions;

use crate::api::{Jid, NsId};
use crate::hash::BlockHash;
use crate::limits::BLOCK_BYTES_MAX;

/// Bytes of base a signature entry covers: a 1 KiB edit costs at most two such pieces of
/// literal bytes, and a 4 MiB block's signature is 24 KiB.
pub const SIGNATURE_BLOCK_BYTES: u32 = 2048;
/// Bytes of MD4 per signature entry (the SHA-256 check catches what 64 bits miss).
pub const SIGNATURE_HASH_BYTES: u32 = 8;
/// The largest signature [`signature_of`] makes (of a 4 MiB block): 24,588 bytes.
pub const SIGNATURE_BYTES_MAX: usize = SIGNATURE_HEADER_BYTES
    + BLOCK_BYTES_MAX / SIGNATURE_BLOCK_BYTES as usize
        * (ROLLSUM_BYTES + SIGNATURE_HASH_BYTES as usize);
/// The smallest block worth a delta: under it, signature and delta cost about what the
/// block does.
pub const DELTA_BLOCK_BYTES_MIN: usize = 64 << 10;
/// Bytes of the base reference a store_delta payload starts with.
pub const BASE_REF_BYTES: usize = 8 + 8 + 32;

/// librsync's magic for MD4 signatures; the only kind accepted.
const MD4_SIGNATURE_MAGIC: u32 = 0x7273_0136;
/// magic, piece size, hash length: u32 big-endian each.
const SIGNATURE_HEADER_BYTES: usize = 12;
/// Smallest and largest piece size accepted from a peer.
const SIGNATURE_BLOCK_BYTES_MIN: u32 = 512;
const SIGNATURE_BLOCK_BYTES_MAX: u32 = 1 << 20;
/// Shortest MD4 prefix accepted from a peer.
const SIGNATURE_HASH_BYTES_MIN: u32 = 4;
/// librsync's rolling checksum, 4 bytes per entry.
const ROLLSUM_BYTES: usize = 4;

/// Why a signature or delta was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// Not a signature this side accepts.
    #[error("bad signature: {0}")]
    BadSignature(&'static str),
    /// The delta is malformed or reaches outside its base.
    #[error("the delta does not apply: {0}")]
    DoesNotApply(String),
    /// The delta rebuilds a block of another length than declared.
    #[error("the delta rebuilds {got} bytes, not the declared {declared}")]
    WrongLength {
        /// Bytes the delta rebuilt.
        got: usize,
        /// The block's declared length.
        declared: usize,
    },
    /// A store_delta payload too short for its base reference.
    #[error("a delta payload starts with a {BASE_REF_BYTES}-byte base reference; got {0} bytes")]
    ShortBaseRef(usize),
}

/// The signature of `base` as this project makes them.
pub fn signature_of(base: &[u8]) -> Vec<u8> {
    let options = SignatureOptions {
        block_size: SIGNATURE_BLOCK_BYTES,
        crypto_hash_size: SIGNATURE_HASH_BYTES,
    };
    Signature::calculate(base, options).into_serialized()
}

/// A peer's signature, once it is one this side will index: MD4, a piece size of 512 B to
/// 1 MiB, 4 to 16 bytes of hash, whole entries, covering at most one block.
pub fn parse_signature(bytes: Vec<u8>) -> Result<Signature, DeltaError> {
    check_signature(&bytes)?;
    Signature::deserialize(bytes).map_err(|_| DeltaError::BadSignature("unreadable"))
}

/// What [`parse_signature`] checks, without taking the bytes.
pub fn check_signature(bytes: &[u8]) -> Result<(), DeltaError> {
    let bad = DeltaError::BadSignature;
    if bytes.len() < SIGNATURE_HEADER_BYTES {
        return Err(bad("shorter than its 12-byte header"));
    }
    let word =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let (magic, block_size, hash_bytes) = (word(0), word(4), word(8));
    if magic != MD4_SIGNATURE_MAGIC {
        return Err(bad("not an MD4 signature"));
    }
    if !(SIGNATURE_BLOCK_BYTES_MIN..=SIGNATURE_BLOCK_BYTES_MAX).contains(&block_size) {
        return Err(bad("piece size outside 512 B..1 MiB"));
    }
    if !(SIGNATURE_HASH_BYTES_MIN..=16).contains(&hash_bytes) {
        return Err(bad("hash length outside 4..16 bytes"));
    }
    let entry_bytes = ROLLSUM_BYTES + hash_bytes as usize;
    let body = bytes.len() - SIGNATURE_HEADER_BYTES;
    if !body.is_multiple_of(entry_bytes) {
        return Err(bad("a partial entry"));
    }
    let entries_max = BLOCK_BYTES_MAX.div_ceil(block_size as usize);
    if body / entry_bytes > entries_max {
        return Err(bad("covers more than one 4 MiB block"));
    }
    Ok(())
}

/// Whether `block` still holds enough of the base `signature` (made by [`signature_of`])
/// describes for a delta to be worth computing: at least a quarter of its own pieces, at
/// their own alignment, are pieces of the base. An edit in place keeps nearly all of them;
/// a rewritten block none, and its diff would roll over every byte for nothing (about 30 ms
/// for 4 MiB against 1.5 ms for this check). A signature made otherwise is left to the diff.
pub fn worth_diffing(signature: &[u8], block: &[u8]) -> bool {
    let ours = signature_of(block);
    let header_matches =
        signature.get(..SIGNATURE_HEADER_BYTES) == ours.get(..SIGNATURE_HEADER_BYTES);
    if !header_matches {
        return true;
    }
    let entry = ROLLSUM_BYTES + SIGNATURE_HASH_BYTES as usize;
    let base: std::collections::HashSet<&[u8]> =
        signature[SIGNATURE_HEADER_BYTES..].chunks(entry).collect();
    let pieces = ours[SIGNATURE_HEADER_BYTES..].chunks(entry);
    let total = pieces.len();
    let kept = pieces.filter(|p| base.contains(p)).count();
    kept * 4 >= total
}

/// The delta that rebuilds `block` from the base `signature` describes, if it comes to at
/// most `wire_max` bytes (past that, the work stops: the block itself is cheaper).
pub fn delta_of(signature: &Signature, block: &[u8], wire_max: usize) -> Option<Vec<u8>> {
    let mut out = Capped {
        bytes: Vec::with_capacity(wire_max.min(64 << 10)),
        max: wire_max,
    };
    fast_rsync::diff(&signature.index(), block, &mut out).ok()?;
    Some(out.bytes)
}

/// The block `delta` rebuilds from `base`: exactly `block_len` bytes, or an error. The
/// caller still checks its hash.
pub fn apply(base: &[u8], delta: &[u8], block_len: usize) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::with_capacity(block_len);
    fast_rsync::apply_limited(base, delta, &mut out, block_len)
        .map_err(|e| DeltaError::DoesNotApply(e.to_string()))?;
    if out.len() != block_len {
        return Err(DeltaError::WrongLength {
            got: out.len(),
            declared: block_len,
        });
    }
    Ok(out)
}

/// A writer that fails once more than `max` bytes came.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > self.max {
            return Err(io::Error::other("the delta no longer pays"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The base a store_delta frame rebuilds its block from: block `hash` of row `jid` of
/// namespace `ns`, which must be that path's latest row and list the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseRef {
    /// The row's namespace.
    pub ns: NsId,
    /// The row.
    pub jid: Jid,
    /// The base block, listed by the row.
    pub hash: BlockHash,
}

impl BaseRef {
    /// `[ns u64 LE][jid u64 LE][hash 32 B]`.
    pub fn encode(&self) -> [u8; BASE_REF_BYTES] {
        let mut out = [0u8; BASE_REF_BYTES];
        out[..8].copy_from_slice(&self.ns.to_le_bytes());
        out[8..16].copy_from_slice(&self.jid.to_le_bytes());
        out[16..].copy_from_slice(self.hash.as_bytes());
        out
    }

    /// Splits a store_delta payload into its base reference and the delta.
    pub fn split(payload: &[u8]) -> Result<(BaseRef, &[u8]), DeltaError> {
        if payload.len() < BASE_REF_BYTES {
            return Err(DeltaError::ShortBaseRef(payload.len()));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&payload[16..BASE_REF_BYTES]);
        let base = BaseRef {
            ns: u64_at(0),
            jid: u64_at(8),
            hash: BlockHash(hash),
        };
        Ok((base, &payload[BASE_REF_BYTES..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b'a' + (x % 26) as u8
            })
            .collect()
    }

    fn round_trip(base: &[u8], block: &[u8]) -> usize {
        let sig = parse_signature(signature_of(base)).unwrap();
        let delta = delta_of(&sig, block, block.len()).expect("a small edit pays");
        assert_eq!(apply(base, &delta, block.len()).unwrap(), block);
        delta.len()
    }

    #[test]
    fn edits_anywhere_rebuild_exactly_and_cost_about_what_changed() {
        let base = text(BLOCK_BYTES_MAX, 7);
        let edit = text(1024, 9);
        for at in [
            0,
            2048,
            4095,
            BLOCK_BYTES_MAX / 2 + 13,
            BLOCK_BYTES_MAX - 1024,
        ] {
            let mut block = base.clone();
            block[at..at + 1024].copy_from_slice(&edit);
            let delta_len = round_trip(&base, &block);
            assert!(
                delta_len < 6 * 1024,
                "an edit at {at} cost {delta_len} bytes"
            );
        }
        // Grown past the base, and cut short of it.
        let mut grown = base[..BLOCK_BYTES_MAX - 100_000].to_vec();
        grown.extend_from_slice(&text(50_000, 3));
        assert!(round_trip(&base[..BLOCK_BYTES_MAX - 100_000], &grown) < 60_000);
        assert!(round_trip(&base, &base[..1 << 20]) < 1024);
    }

    #[test]
    fn a_full_block_has_the_largest_signature() {
        assert_eq!(
            signature_of(&text(BLOCK_BYTES_MAX, 1)).len(),
            SIGNATURE_BYTES_MAX
        );
        assert_eq!(SIGNATURE_BYTES_MAX, 24_588);
    }

    #[test]
    fn only_blocks_that_kept_their_bases_pieces_are_worth_diffing() {
        let base = text(BLOCK_BYTES_MAX, 7);
        let signature = signature_of(&base);
        let mut edited = base.clone();
        edited[5000..6024].copy_from_slice(&text(1024, 9));
        assert!(worth_diffing(&signature, &edited));
        assert!(
            !worth_diffing(&signature, &text(BLOCK_BYTES_MAX, 8)),
            "rewritten"
        );
        let mut mostly_new = text(BLOCK_BYTES_MAX, 8);
        mostly_new[..BLOCK_BYTES_MAX / 3].copy_from_slice(&base[..BLOCK_BYTES_MAX / 3]);
        assert!(worth_diffing(&signature, &mostly_new), "a third kept");
        assert!(
            worth_diffing(b"other parameters", &edited),
            "left to the diff"
        );
    }

    #[test]
    fn a_delta_that_does_not_pay_is_not_made() {
        let sig = parse_signature(signature_of(&text(1 << 20, 1))).unwrap();
        assert!(delta_of(&sig, &text(1 << 20, 2), 1 << 19).is_none());
    }

    #[test]
    fn hostile_signatures_are_refused_before_indexing() {
        let good = signature_of(&text(1 << 20, 1));
        assert!(parse_signature(good.clone()).is_ok());
        let with = |at: usize, word: u32| {
            let mut s = good.clone();
            s[at..at + 4].copy_from_slice(&word.to_be_bytes());
            parse_signature(s)
        };
        assert!(with(0, 0x7273_0137).is_err(), "BLAKE2 or other magic");
        assert!(with(4, 0).is_err(), "a zero piece size would never end");
        assert!(with(4, 16).is_err());
        assert!(with(8, 17).is_err());
        assert!(parse_signature(good[..good.len() - 1].to_vec()).is_err());
        assert!(parse_signature(good[..5].to_vec()).is_err());
        // More entries than one block has pieces.
        let mut long = signature_of(&text(BLOCK_BYTES_MAX, 1));
        long.extend_from_slice(&[0; 12]);
        assert!(parse_signature(long).is_err());
    }

    #[test]
    fn bad_deltas_are_errors_never_longer_blocks() {
        let base = text(100_000, 1);
        let mut block = base.clone();
        block[500] ^= 1;
        let sig = parse_signature(signature_of(&base)).unwrap();
        let delta = delta_of(&sig, &block, block.len()).unwrap();
        assert!(matches!(
            apply(&base, &delta, block.len() - 1),
            Err(DeltaError::DoesNotApply(_))
        ));
        assert!(matches!(
            apply(&base, &delta, block.len() + 1),
            Err(DeltaError::WrongLength { .. })
        ));
        assert!(apply(&base[..50_000], &delta, block.len()).is_err());
        assert!(apply(&base, &delta[..delta.len() - 1], block.len()).is_err());
        assert!(apply(&base, b"garbage", 10).is_err());
    }

    #[test]
    fn base_refs_round_trip() {
        let base = BaseRef {
            ns: 7,
            jid: u64::MAX - 1,
            hash: BlockHash::of(b"x"),
        };
        let mut payload = base.encode().to_vec();
        payload.extend_from_slice(b"delta");
        assert_eq!(BaseRef::split(&payload).unwrap(), (base, &b"delta"[..]));
        assert!(BaseRef::split(&payload[..47]).is_err());
    }
}

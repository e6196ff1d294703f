//! `BlockHash`: the SHA-256 that names a block, 64 lower-case hex digits on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Why a string is not a block hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The string is not 64 characters long.
    #[error("a block hash is 64 hex digits, got {0} characters")]
    Length(usize),
    /// A character is not one of `0-9a-f`.
    #[error("a block hash is lower-case hex; character {position} is {found:?}")]
    Digit {
        /// Byte offset of the first bad character.
        position: usize,
        /// The character found there.
        found: char,
    },
}

/// SHA-256 of a block's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// Length of the raw digest in bytes.
    pub const LEN: usize = 32;

    /// The hash of `data`.
    pub fn of(data: &[u8]) -> BlockHash {
        BlockHash(Sha256::digest(data).into())
    }

    /// The SHA-256 of the bytes of `pieces`, in order: the name of the block they make up.
    pub fn of_pieces<P: AsRef<[u8]>>(pieces: &[P]) -> BlockHash {
        let mut sha = Sha256::new();
        for piece in pieces {
            sha.update(piece.as_ref());
        }
        BlockHash(sha.finalize().into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 lower-case hex digits; upper case is refused so that every hash has
    /// one spelling on the wire.
    pub fn from_hex(s: &str) -> Result<BlockHash, HashError> {
        if s.len() != 64 {
            return Err(HashError::Length(s.chars().count()));
        }
        if let Some((position, found)) = s
            .char_indices()
            .find(|(_, c)| !matches!(c, '0'..='9' | 'a'..='f'))
        {
            return Err(HashError::Digit { position, found });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| HashError::Length(s.len()))?;
        Ok(BlockHash(out))
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", self.to_hex())
    }
}

impl FromStr for BlockHash {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BlockHash::from_hex(s)
    }
}

impl Serialize for BlockHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        hex::encode_to_slice(self.0, &mut buf).map_err(serde::ser::Error::custom)?;
        // hex output is ASCII by construction.
        let s = std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(s)
    }
}

impl<'de> Deserialize<'de> for BlockHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = BlockHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 lower-case hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BlockHash, E> {
                BlockHash::from_hex(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn pieces_hash_as_their_concatenation() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let pieces: [&[u8]; 4] = [&data[..1], &data[1..64], &data[64..64], &data[64..]];
        assert_eq!(BlockHash::of_pieces(&pieces), BlockHash::of(&data));
        assert_eq!(BlockHash::of_pieces::<&[u8]>(&[]).to_hex(), EMPTY);
    }

    #[test]
    fn hex_round_trip() {
        let h = BlockHash::of(b"");
        assert_eq!(h.to_hex(), EMPTY);
        assert_eq!(BlockHash::from_hex(EMPTY), Ok(h));
        assert_eq!(EMPTY.parse::<BlockHash>(), Ok(h));
    }

    #[test]
    fn refuses_bad_hex() {
        assert_eq!(BlockHash::from_hex(""), Err(HashError::Length(0)));
        assert_eq!(BlockHash::from_hex(&EMPTY[1..]), Err(HashError::Length(63)));
        assert_eq!(
            BlockHash::from_hex(&format!("{EMPTY}0")),
            Err(HashError::Length(65))
        );
        let upper = EMPTY.to_uppercase();
        assert!(matches!(
            BlockHash::from_hex(&upper),
            Err(HashError::Digit {
                position: 0,
                found: 'E'
            })
        ));
        let bad = format!("g{}", &EMPTY[1..]);
        assert!(matches!(
            BlockHash::from_hex(&bad),
            Err(HashError::Digit {
                position: 0,
                found: 'g'
            })
        ));
        // 64 bytes but not 64 characters: multi-byte UTF-8 is refused without panicking.
        let multibyte = format!("é{}", &EMPTY[2..]);
        assert_eq!(multibyte.len(), 64);
        assert!(BlockHash::from_hex(&multibyte).is_err());
    }

    #[test]
    fn serde_uses_hex_strings() {
        let h = BlockHash::of(b"");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        assert_eq!(serde_json::from_str::<BlockHash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<BlockHash>("\"abc\"").is_err());
        assert!(serde_json::from_str::<BlockHash>("12").is_err());
    }
}

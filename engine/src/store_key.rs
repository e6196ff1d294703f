//! The store key: AES-256-GCM under which block payloads are kept on disk.
//!
//! The key is 32 random bytes in a file of mode 0600 (by default `store.key` in the data
//! folder, created on first open). Its fingerprint is written in every segment header so that
//! opening a store with the wrong key is refused instead of reading as corruption.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Bytes of the authentication tag appended to each encrypted payload.
pub const TAG_BYTES: usize = 16;

/// Why the store key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or creating the key file failed.
    #[error("store key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not 32 bytes.
    #[error("store key file {path} holds {len} bytes, not 32")]
    Length {
        /// The key file.
        path: String,
        /// Its length.
        len: usize,
    },
    /// Others may read the file.
    #[error(
        "store key file {path} has mode {mode:o}; it must be readable by its owner only (0600)"
    )]
    Permissions {
        /// The key file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// The system random source failed.
    #[error("no randomness from the system")]
    Random,
}

/// A loaded store key.
pub struct StoreKey {
    key: LessSafeKey,
    fingerprint: u64,
    rng: SystemRandom,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey(fingerprint {:016x})", self.fingerprint)
    }
}

impl StoreKey {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> StoreKey {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 takes 32-byte keys");
        let digest = Sha256::new()
            .chain_update(b"holdall store key fingerprint v1")
            .chain_update(bytes)
            .finalize();
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&digest[..8]);
        StoreKey {
            key: LessSafeKey::new(unbound),
            fingerprint: u64::from_le_bytes(fp),
            rng: SystemRandom::new(),
        }
    }

    /// Loads the key at `path`, creating it (32 random bytes, mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<StoreKey, KeyError> {
        match StoreKey::load(path) {
            Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                StoreKey::create(path)
            }
            loaded => loaded,
        }
    }

    /// Loads the key at `path`, which must exist, be 32 bytes and be readable by its owner
    /// only.
    pub fn load(path: &Path) -> Result<StoreKey, KeyError> {
        let name = path.display().to_string();
        let io = |source| KeyError::Io {
            path: name.clone(),
            source,
        };
        let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: name, mode });
        }
        let bytes = fs::read(path).map_err(io)?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length {
            path: name.clone(),
            len: bytes.len(),
        })?;
        Ok(StoreKey::from_bytes(&key))
    }

    /// Writes a new key (32 random bytes, mode 0600) at `path`, which must not exist, and
    /// makes it durable.
    pub fn create(path: &Path) -> Result<StoreKey, KeyError> {
        let name = path.display().to_string();
        let io = |source| KeyError::Io {
            path: name.clone(),
            source,
        };
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyError::Random)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(&key).map_err(io)?;
        f.sync_all().map_err(io)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        fs::File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(StoreKey::from_bytes(&key))
    }

    /// A 64-bit fingerprint of the key, safe to store beside the data.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// A fresh random nonce. Random 96-bit nonces keep the chance of a repeat negligible
    /// below 2^32 records per key; a counter could repeat after a torn tail is cut and the
    /// same offset is written again.
    pub fn new_nonce(&self) -> Result<[u8; NONCE_LEN], KeyError> {
        let mut n = [0u8; NONCE_LEN];
        self.rng.fill(&mut n).map_err(|_| KeyError::Random)?;
        Ok(n)
    }

    /// Encrypts `data` in place and returns the tag; `aad` is authenticated, not stored.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], aad: &[u8], data: &mut [u8]) -> [u8; TAG_BYTES] {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            .expect("AES-GCM seals any input below 64 GiB");
        let mut out = [0u8; TAG_BYTES];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `data` (ciphertext followed by the tag) in place; returns the plaintext
    /// length, or `None` if the tag does not verify.
    pub fn open(&self, nonce: [u8; NONCE_LEN], aad: &[u8], data: &mut [u8]) -> Option<usize> {
        self.key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
            .ok()
            .map(|plain| plain.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_a_private_key_and_reloads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let a = StoreKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = StoreKey::load_or_create(&path).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut data = b"secret block".to_vec();
        let nonce = a.new_nonce().unwrap();
        let tag = a.seal(nonce, b"aad", &mut data);
        assert_ne!(&data, b"secret block");
        data.extend_from_slice(&tag);
        assert_eq!(b.open(nonce, b"aad", &mut data), Some(12));
        assert_eq!(&data[..12], b"secret block");
    }

    #[test]
    fn refuses_public_or_short_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, [0u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            StoreKey::load_or_create(&path),
            Err(KeyError::Permissions { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, [0u8; 31]).unwrap();
        assert!(matches!(
            StoreKey::load_or_create(&path),
            Err(KeyError::Length { len: 31, .. })
        ));
    }

    #[test]
    fn wrong_tag_or_aad_fails() {
        let k = StoreKey::from_bytes(&[7; 32]);
        let nonce = k.new_nonce().unwrap();
        let mut data = b"abc".to_vec();
        let tag = k.seal(nonce, b"x", &mut data);
        data.extend_from_slice(&tag);
        let mut other = data.clone();
        assert_eq!(k.open(nonce, b"y", &mut other), None);
        let mut flipped = data.clone();
        flipped[0] ^= 1;
        assert_eq!(k.open(nonce, b"x", &mut flipped), None);
        assert_ne!(
            StoreKey::from_bytes(&[8; 32]).fingerprint(),
            k.fingerprint()
        );
    }
}

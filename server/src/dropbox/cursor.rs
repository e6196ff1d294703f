//! `list_folder` cursors: what a listing covers and how far it has read, sealed under the
//! server's cursor key (AES-256-GCM), so a cursor can be neither read nor forged. It names
//! the user and the token that made it: `list_folder/longpoll` carries no token, so the
//! cursor is its authority, and it dies with that token.
//!
//! Sealed form: base64url of a 12-byte nonce, the JSON body encrypted, and the 16-byte tag.

use data_encoding::BASE64URL_NOPAD;
use holdall_engine::store_key::{StoreKey, TAG_BYTES};
use holdall_proto::api::{Jid, NsId};
use ring::aead::NONCE_LEN;
use serde::{Deserialize, Serialize};

/// Bound on a cursor's sealed length: parts of many mounts, long paths.
const CURSOR_BYTES_MAX: usize = 1 << 20;
/// Authenticated data binding the seal to this use of the key.
const AAD: &[u8] = b"holdall dropbox cursor v1";

/// One namespace a listing covers: the folder in it and the JID read up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The namespace.
    pub ns: NsId,
    /// The folder listed in it, exact case ("" for its root).
    pub folder: String,
    /// Rows up to this JID have been listed.
    pub jid: Jid,
}

/// What a cursor says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The user it lists for.
    pub user: u64,
    /// SHA-256 of the token that made it, hex.
    pub token: String,
    /// Whether the folder's subfolders are listed.
    pub recursive: bool,
    /// Whether the first listing includes deleted entries too.
    pub include_deleted: bool,
    /// Still in the first listing (the folder's content now), not yet its changes.
    pub first: bool,
    /// The first listing's mount folders were listed.
    #[serde(default)]
    pub mounts_listed: bool,
    /// The namespaces covered.
    pub parts: Vec<Part>,
}

impl Cursor {
    /// The sealed, printable form.
    pub fn seal(&self, key: &StoreKey) -> Result<String, crate::reply::ApiError> {
        let mut body = serde_json::to_vec(self)
            .map_err(|e| crate::reply::ApiError::internal(format!("encoding a cursor: {e}")))?;
        let nonce = key
            .new_nonce()
            .map_err(|e| crate::reply::ApiError::internal(format!("a cursor nonce: {e}")))?;
        let tag = key.seal(nonce, AAD, &mut body);
        let mut sealed = Vec::with_capacity(NONCE_LEN + body.len() + TAG_BYTES);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        sealed.extend_from_slice(&tag);
        Ok(BASE64URL_NOPAD.encode(&sealed))
    }

    /// The cursor `text` seals, if `key` sealed it.
    pub fn open(key: &StoreKey, text: &str) -> Option<Cursor> {
        if text.len() > CURSOR_BYTES_MAX {
            return None;
        }
        let raw = BASE64URL_NOPAD.decode(text.as_bytes()).ok()?;
        if raw.len() < NONCE_LEN + TAG_BYTES {
            return None;
        }
        let nonce: [u8; NONCE_LEN] = raw[..NONCE_LEN].try_into().ok()?;
        let mut body = raw[NONCE_LEN..].to_vec();
        let len = key.open(nonce, AAD, &mut body)?;
        serde_json::from_slice(&body[..len]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_cursor_opens_only_with_its_key_and_unchanged() {
        let key = StoreKey::from_bytes(&[7; 32]);
        let c = Cursor {
            user: 3,
            token: "ab".into(),
            recursive: true,
            include_deleted: false,
            first: true,
            mounts_listed: false,
            parts: vec![Part {
                ns: 4,
                folder: "Photos".into(),
                jid: 17,
            }],
        };
        let sealed = c.seal(&key).unwrap();
        assert_eq!(Cursor::open(&key, &sealed), Some(c.clone()));
        assert_eq!(Cursor::open(&StoreKey::from_bytes(&[8; 32]), &sealed), None);
        let mut bytes = sealed.into_bytes();
        bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(Cursor::open(&key, &String::from_utf8(bytes).unwrap()), None);
        assert_eq!(Cursor::open(&key, "not a cursor"), None);
    }
}

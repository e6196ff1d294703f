//! The directory: users, tokens, namespaces and mounts, in a journal of its own owned by
//! shard 0 (`DATA/directory/`). Every shard keeps a read-only replica (an `sfj::State` built
//! from the directory's records) to authenticate requests without a cross-shard hop.

use holdall_engine::storage::Storage;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result};
use holdall_engine::journal::record::{JournalRecord, NamespaceKind};
use holdall_engine::journal::{Journal, JournalConfig};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

/// Name of the user created on first start.
pub const ADMIN_NAME: &str = "admin";

/// SHA-256 of a bearer token: the only form in which tokens are stored.
pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The wall clock, ms since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A token's id: the first 8 bytes of its SHA-256, in hex (the SHA-256 does not give the
/// token away).
pub fn token_id(token_sha256: &[u8; 32]) -> String {
    token_sha256[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new bearer token: 32 random bytes as 64 hex digits.
pub fn new_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness from the system"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Opens the directory journal.
pub async fn open(data: &Path, storage: Rc<dyn Storage>) -> Result<Journal> {
    Journal::open(JournalConfig {
        storage,
        ..JournalConfig::new(data.join("directory"))
    })
    .await
    .context("opening the directory journal")
}

/// On first start, creates the admin user with root namespace 1 and writes its token to
/// `DATA/admin.token` (mode 0600). The token is never logged.
pub async fn ensure_admin(directory: &Journal, data: &Path) -> Result<()> {
    if directory.state().user_by_name(ADMIN_NAME).is_some() {
        return Ok(());
    }
    let token = new_token()?;
    let path = data.join("admin.token");
    let tmp = data.join("admin.token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(token.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    holdall_engine::storage::dma::DmaStorage
        .sync_dir(data)
        .context("syncing the data folder")?;
    // The token file is written first: a crash before the records are durable leaves a token
    // nobody accepts, and the next start makes a new one.
    directory
        .append(vec![
            JournalRecord::Namespace {
                id: 1,
                owner: 1,
                kind: NamespaceKind::Root,
            },
            JournalRecord::User {
                id: 1,
                name: ADMIN_NAME.into(),
                root_ns: 1,
                admin: true,
            },
            JournalRecord::DeviceToken {
                user: 1,
                token_sha256: token_sha256(&token),
                device: String::new(),
                created_ms: now_ms(),
            },
        ])
        .await
        .context("recording the admin user")?;
    tracing::info!(path = %path.display(), "created the admin user; its token is in this file");
    Ok(())
}

/// A change to the directory, carried out by shard 0.
pub enum DirectoryOp {
    /// A new user with a root namespace and a token. Replies `[user id, root ns]`.
    CreateUser {
        /// Name.
        name: String,
        /// SHA-256 of the new token.
        token_sha256: [u8; 32],
    },
    /// A new shared namespace mounted in its creator's root. Replies `[ns]`.
    CreateShared {
        /// Creator.
        owner: u64,
        /// Where it appears in the creator's root.
        mount_path: String,
    },
    /// Mounts a shared namespace in another user's root. Replies `[]`.
    AddMember {
        /// The namespace.
        ns: u64,
        /// The user who gets it.
        user: u64,
        /// Where it appears in that user's root.
        mount_path: String,
    },
    /// Sets or removes a user's quota. Replies `[]`.
    SetQuota {
        /// The user.
        user: u64,
        /// The quota in bytes, or none.
        bytes: Option<u64>,
    },
    /// A new token for one of a user's devices. Replies `[]`.
    AddToken {
        /// Whose.
        user: u64,
        /// SHA-256 of the new token.
        token_sha256: [u8; 32],
        /// The device.
        device: String,
    },
    /// Revokes a token. Replies `[]`.
    RevokeToken {
        /// SHA-256 of the token.
        token_sha256: [u8; 32],
    },
    /// Disables or enables a user. Replies `[]`.
    SetDisabled {
        /// The user.
        user: u64,
        /// Disabled or not.
        disabled: bool,
    },
}

/// Whether a new mount at `path` would clash with a user's existing `mounts`: the same path,
/// or one inside the other.
pub fn mount_clash(mounts: &[(u64, String)], ns: u64, path: &str) -> bool {
    mounts.iter().any(|(n, p)| {
        *n == ns
            || p == path
            || path.starts_with(&format!("{p}/"))
            || p.starts_with(&format!("{path}/"))
    })
}

//! The JSON bodies of every call. Field names are the protocol contract (docs/PROTOCOL.md).
//!
//! Paths travel as plain strings and are checked with [`crate::validate_path`] by the
//! receiver, so that a bad path gets its own error code rather than a JSON parse error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::BlockHash;
use crate::version::FileVersion;

/// Namespace id.
pub type NsId = u64;
/// Journal id: strictly increasing within one namespace.
pub type Jid = u64;
/// A client's last seen JID per namespace; on the wire a JSON object keyed by the ns as text.
pub type Cursors = BTreeMap<NsId, Jid>;

pub use crate::version::EntryKind;

/// Body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `bad_path`, `hash_mismatch`.
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// A namespace mounted in a user's root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// The mounted namespace.
    pub ns: NsId,
    /// Where it appears in the user's root namespace.
    pub path: String,
}

/// Request header naming the client's device (1 to 128 visible ASCII characters), so that a
/// user's other devices see this one's uploads as prefetch entries.
pub const DEVICE_HEADER: &str = "holdall-device";

/// Size limits the server enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest block.
    pub block_bytes_max: u64,
    /// Largest payload total of one store_batch or retrieve_batch body.
    pub batch_bytes_max: u64,
    /// How long a prefetch entry lives after its last activity, in seconds; absent when
    /// the server publishes no prefetch entries (streaming sync off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch_ttl_s: Option<u64>,
}

/// The feature a server lists in `GET /v1/account` when it takes frame format 2 (blocks
/// that may travel zstd-compressed) in store_batch and retrieve_batch.
pub const FEATURE_ZSTD: &str = "zstd";
/// The feature a server lists when it answers `POST /v1/signatures`, takes store_delta
/// frames and answers retrieve items' `signatures` with deltas (all in frame format 2).
pub const FEATURE_DELTA: &str = "delta";

/// `GET /v1/account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountResponse {
    /// User name.
    pub user: String,
    /// The user's root namespace.
    pub root_ns: NsId,
    /// Shared namespaces mounted in the root.
    pub mounts: Vec<Mount>,
    /// Server limits.
    pub limits: Limits,
    /// What the user's files take against their quota (absent from older servers).
    #[serde(default)]
    pub usage: Usage,
    /// Protocol features the server accepts beyond the base protocol: `zstd` (frame
    /// format 2 in store_batch and retrieve_batch), `delta` (signatures and deltas).
    /// Empty from older servers.
    #[serde(default)]
    pub features: Vec<String>,
}

/// A user's usage: logical bytes of the latest versions of the files in the namespaces
/// they own, and their quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes used.
    pub bytes: u64,
    /// The quota in bytes; `null` when there is none.
    pub quota_bytes: Option<u64>,
}

/// `POST /v1/admin/users/{user}/quota`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRequest {
    /// The new quota in bytes; `null` removes it.
    pub bytes: Option<u64>,
}

/// Answer to `POST /v1/admin/users/{user}/quota`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaResponse {
    /// The user.
    pub user: String,
    /// Their usage under the new quota.
    pub usage: Usage,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The device the token is for, shown in `GET /v1/tokens`.
    pub device: String,
}

/// Answer to `POST /v1/tokens`: the only time the token itself is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    /// The token's id, for listing and revoking.
    pub id: String,
    /// The bearer token.
    pub token: String,
}

/// One token in `GET /v1/tokens`; never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Its id: the first 8 bytes of the token's SHA-256, in hex.
    pub id: String,
    /// The device it was made for; empty for the account's first token.
    pub device: String,
    /// When it was made, ms since the Unix epoch; 0 when unknown.
    pub created_ms: u64,
    /// When it was last used since the server started, if it was.
    pub last_used_ms: Option<u64>,
}

/// Answer to `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokensResponse {
    /// The caller's live tokens, oldest first.
    pub tokens: Vec<TokenEntry>,
}

/// One user in `GET /v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUser {
    /// Unique name.
    pub name: String,
    /// Root namespace.
    pub root_ns: NsId,
    /// Whether they may call the admin endpoints.
    pub admin: bool,
    /// Whether their tokens are refused.
    pub disabled: bool,
    /// Their usage and quota.
    pub usage: Usage,
}

/// Answer to `GET /v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUsersResponse {
    /// Every user, in the order they were created.
    pub users: Vec<AdminUser>,
}

/// Answer to `POST /v1/admin/users/{user}/disable` and `/enable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisableResponse {
    /// The user.
    pub user: String,
    /// Whether they are disabled now.
    pub disabled: bool,
}

/// `POST /v1/commit`, and one item of `commit_batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    /// Namespace of the path.
    pub ns: NsId,
    /// Path relative to the namespace root.
    pub path: String,
    /// What the path is to hold (`kind`, `blocklist`, `size`, `mtime_ms` in the body).
    #[serde(flatten)]
    pub version: FileVersion,
    /// The path's latest JID the client knows; `null` when it believes the path does not
    /// exist (or is deleted).
    pub parent_jid: Option<Jid>,
}

/// The answer to one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommitResult {
    /// Committed and durable as this JID.
    Ok {
        /// The new row's JID.
        jid: Jid,
    },
    /// Upload these blocks (store_batch), then commit again.
    NeedBlocks {
        /// Hashes to upload.
        need: Vec<BlockHash>,
    },
    /// `parent_jid` is not the path's latest JID.
    Conflict {
        /// The path's latest JID (`null` if it has none).
        current_jid: Option<Jid>,
    },
    /// This commit was refused; the others of a batch are unaffected.
    Error {
        /// Machine-readable code.
        error: String,
        /// What was wrong.
        message: String,
    },
}

/// `POST /v1/commit_batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBatchRequest {
    /// At most [`crate::limits::COMMIT_BATCH_MAX`] commits.
    pub commits: Vec<CommitRequest>,
}

/// Answer to `POST /v1/commit_batch`: one result per commit, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitBatchResponse {
    /// Results in the order of the commits.
    pub results: Vec<CommitResult>,
}

/// Answer to `POST /v1/store_batch`, sent only once the blocks are durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreBatchResponse {
    /// Blocks written by this request.
    pub stored: Vec<BlockHash>,
    /// Blocks the server already had.
    pub present: Vec<BlockHash>,
}

/// `POST /v1/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Last seen JID per namespace (0 for a namespace never listed).
    pub cursors: Cursors,
    /// Most entries to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Newest prefetch entry version seen per namespace (from the last answer); only newer
    /// entries are listed. Absent: every live entry.
    #[serde(default, skip_serializing_if = "Cursors::is_empty")]
    pub prefetch_cursors: Cursors,
}

/// One SFJ row in a list answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Namespace.
    pub ns: NsId,
    /// The row's JID.
    pub jid: Jid,
    /// Path relative to the namespace root.
    pub path: String,
    /// What the row holds (`kind`, `blocklist`, `size`, `mtime_ms` in the body).
    #[serde(flatten)]
    pub version: FileVersion,
}

/// A blocklist of a file still being uploaded (streaming sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchEntry {
    /// Namespace.
    pub ns: NsId,
    /// Path relative to the namespace root.
    pub path: String,
    /// Block hashes, in order.
    pub blocklist: Vec<BlockHash>,
    /// Size in bytes.
    pub size: u64,
}

/// Answer to `POST /v1/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// New rows, by namespace and JID.
    pub entries: Vec<ListEntry>,
    /// Live prefetch entries of other clients' uploads.
    pub prefetch: Vec<PrefetchEntry>,
    /// Cursors to send next time.
    pub cursors: Cursors,
    /// Prefetch cursors to send next time (to list and to longpoll).
    #[serde(default)]
    pub prefetch_cursors: Cursors,
    /// More rows wait: list again at once.
    pub has_more: bool,
}

/// `POST /v1/longpoll`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongpollRequest {
    /// Cursors as for list.
    pub cursors: Cursors,
    /// Seconds to wait at most (default 30, at most 480).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u32>,
    /// Prefetch cursors as for list: only newer prefetch entries count as changes. Absent:
    /// any live entry of another user does.
    #[serde(default, skip_serializing_if = "Cursors::is_empty")]
    pub prefetch_cursors: Cursors,
}

/// Answer to `POST /v1/longpoll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LongpollResponse {
    /// There is something to list.
    pub changes: bool,
}

/// One file's blocks asked of `retrieve_batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrieveItem {
    /// Namespace.
    pub ns: NsId,
    /// Path relative to the namespace root.
    pub path: String,
    /// The row whose blocklist authorizes the hashes; the latest row when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jid: Option<Jid>,
    /// Authorize by the path's live prefetch entry instead of a row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefetch: bool,
    /// Blocks wanted, answered in this order.
    pub hashes: Vec<BlockHash>,
    /// For some of `hashes`, the signature (`crate::delta`) of the block the caller holds
    /// in its place: the answer may then be a delta against it (format 2, feature `delta`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "signatures_json"
    )]
    pub signatures: BTreeMap<BlockHash, Vec<u8>>,
    /// For each hash in `signatures`, the block the signature describes: a block of an
    /// earlier version of the same path, which the server checks the signature against.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bases: BTreeMap<BlockHash, BlockHash>,
}

/// `POST /v1/signatures`: the signatures of blocks of one file's row (or its latest), by
/// retrieve_batch's rule; the answer is retrieve frames whose bytes are signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignaturesRequest {
    /// Namespace.
    pub ns: NsId,
    /// Path relative to the namespace root.
    pub path: String,
    /// The row whose blocklist authorizes the hashes; the latest row when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jid: Option<Jid>,
    /// Blocks whose signatures are wanted, answered in this order.
    pub hashes: Vec<BlockHash>,
}

/// `POST /v1/retrieve_batch`; the answer is a body of retrieve frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrieveBatchRequest {
    /// Files and their blocks, answered in this order.
    pub items: Vec<RetrieveItem>,
    /// How long to wait for `pending` blocks to be uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// `POST /v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUserRequest {
    /// New user's name.
    pub name: String,
}

/// Answer to `POST /v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUserResponse {
    /// The user's name.
    pub user: String,
    /// Bearer token; shown once, stored only as its SHA-256.
    pub token: String,
    /// The user's root namespace.
    pub root_ns: NsId,
}

/// `POST /v1/namespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateNamespaceRequest {
    /// Where to mount the new namespace in the caller's root (an empty path).
    pub mount_path: String,
    /// Mount it over a folder the caller's root already has: the folder's rows stay until
    /// the caller moves them (the mount hides them meanwhile), so their blocks can be
    /// committed into the new namespace without an upload. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_existing: bool,
}

/// Answer to `POST /v1/namespaces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateNamespaceResponse {
    /// The new namespace.
    pub ns: NsId,
}

/// `POST /v1/namespaces/{ns}/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddMemberRequest {
    /// User to mount the namespace for.
    pub user: String,
    /// Where it appears in that user's root.
    pub mount_path: String,
}

/// Serde for signatures in JSON: a map from block hash to the signature in base64.
mod signatures_json {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::hash::BlockHash;

    /// Writes each signature as standard base64 with padding.
    pub fn serialize<S: Serializer>(
        map: &BTreeMap<BlockHash, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let text: BTreeMap<&BlockHash, String> = map
            .iter()
            .map(|(h, sig)| (h, base64::engine::general_purpose::STANDARD.encode(sig)))
            .collect();
        text.serialize(s)
    }

    /// Reads standard base64; anything else is a bad body.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<BlockHash, Vec<u8>>, D::Error> {
        let text: BTreeMap<BlockHash, String> = BTreeMap::deserialize(d)?;
        text.into_iter()
            .map(|(h, b64)| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map(|sig| (h, sig))
                    .map_err(|e| serde::de::Error::custom(format!("signature of {h}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn commit_request_field_names() {
        let h = BlockHash::of(b"");
        let v = json!({
            "ns": 7, "path": "a/b.txt", "kind": "file", "blocklist": [h.to_hex()],
            "size": 0, "mtime_ms": 1700000000000i64, "parent_jid": null
        });
        let c: CommitRequest = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(c.version.kind, EntryKind::File);
        assert_eq!(c.parent_jid, None);
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
    }

    #[test]
    fn commit_results_are_tagged_by_status() {
        let need = CommitResult::NeedBlocks {
            need: vec![BlockHash::of(b"")],
        };
        let v = serde_json::to_value(&need).unwrap();
        assert_eq!(v["status"], "need_blocks");
        assert_eq!(v["need"][0], BlockHash::of(b"").to_hex());
        assert_eq!(
            serde_json::to_value(CommitResult::Ok { jid: 3 }).unwrap(),
            json!({"status": "ok", "jid": 3})
        );
        assert_eq!(
            serde_json::to_value(CommitResult::Conflict {
                current_jid: Some(9)
            })
            .unwrap(),
            json!({"status": "conflict", "current_jid": 9})
        );
    }

    #[test]
    fn cursors_are_objects_keyed_by_namespace() {
        let r: ListRequest = serde_json::from_value(json!({"cursors": {"12": 5}})).unwrap();
        assert_eq!(r.cursors.get(&12), Some(&5));
        assert_eq!(r.limit, None);
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"cursors": {"12": 5}})
        );
        assert!(serde_json::from_value::<ListRequest>(json!({"cursors": {"x": 5}})).is_err());
    }

    #[test]
    fn retrieve_items_default_optional_fields() {
        let r: RetrieveBatchRequest =
            serde_json::from_value(json!({"items": [{"ns": 1, "path": "f", "hashes": []}]}))
                .unwrap();
        assert_eq!(r.items[0].jid, None);
        assert!(!r.items[0].prefetch);
        assert_eq!(r.wait_ms, None);
    }

    #[test]
    fn kinds_are_snake_case() {
        for (k, s) in [
            (EntryKind::File, "file"),
            (EntryKind::Dir, "dir"),
            (EntryKind::Deleted, "deleted"),
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), json!(s));
        }
        assert!(serde_json::from_value::<EntryKind>(json!("symlink")).is_err());
    }
}

/// Body of `POST /v1/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    /// Namespace.
    pub ns: NsId,
    /// Path relative to the namespace root.
    pub path: String,
    /// Most versions in the answer [default 100, at most 1000].
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only versions with a lower JID: the last JID of the previous page.
    #[serde(default)]
    pub before_jid: Option<Jid>,
}

/// One version in a history answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryVersion {
    /// The row's JID.
    pub jid: Jid,
    /// `kind`, `blocklist`, `size`, `mtime_ms`.
    #[serde(flatten)]
    pub version: FileVersion,
    /// The server's clock at commit, ms since the epoch; null for rows written before
    /// rows recorded it.
    pub committed_ms: Option<u64>,
    /// Dropbox content hash of a file version; null for folders and deletions.
    pub content_hash: Option<BlockHash>,
    /// Name of the committing user, when known.
    pub user: Option<String>,
    /// The `Holdall-Device` name the commit gave, when any.
    pub device: Option<String>,
}

/// Answer to `POST /v1/history`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// Versions still within retention, deletions included.
    pub versions: Vec<HistoryVersion>,
    /// Older retained versions remain: ask again with `before_jid`.
    pub has_more: bool,
}

/// Body of `POST /v1/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Namespace.
    pub ns: NsId,
    /// Path relative to the namespace root.
    pub path: String,
    /// The version to bring back.
    pub jid: Jid,
    /// If given, the path's latest JID as the caller knows it (409 otherwise).
    #[serde(default)]
    pub parent_jid: Option<Jid>,
}

/// Answer to `POST /v1/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreResponse {
    /// `"ok"`.
    pub status: String,
    /// The new row's JID.
    pub jid: Jid,
}

/// Body of `POST /v1/deleted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletedRequest {
    /// Namespace.
    pub ns: NsId,
    /// A folder: only paths under it [default: the whole namespace].
    #[serde(default)]
    pub path: Option<String>,
    /// Most entries [default 100, at most 1000].
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only paths sorting after this one: the last path of the previous page.
    #[serde(default)]
    pub after_path: Option<String>,
}

/// A deleted file that can still be brought back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedEntry {
    /// Path relative to the namespace root.
    pub path: String,
    /// JID of the deletion.
    pub deleted_jid: Jid,
    /// When it was deleted, ms since the epoch; null when not recorded.
    pub deleted_ms: Option<u64>,
    /// JID of the last version before the deletion: restore it to undelete.
    pub last_jid: Jid,
    /// Its size.
    pub size: u64,
}

/// Answer to `POST /v1/deleted`, by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedResponse {
    /// Deleted files still restorable.
    pub entries: Vec<DeletedEntry>,
    /// More remain.
    pub has_more: bool,
}

/// Body of `POST /v1/rewind`: one of `to_jid` and `to_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewindRequest {
    /// Namespace.
    pub ns: NsId,
    /// The folder to put back; `""` is the whole namespace.
    pub path: String,
    /// Back to the namespace as it was right after this JID.
    #[serde(default)]
    pub to_jid: Option<Jid>,
    /// Back to the namespace as it was at this time, ms since the epoch.
    #[serde(default)]
    pub to_ms: Option<u64>,
    /// Only say what would change (`changes`); write nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// One path a rewind changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewindChange {
    /// Path relative to the namespace root.
    pub path: String,
    /// What it gets: `file` or `dir` (an earlier version back) or `deleted`.
    pub kind: EntryKind,
    /// The file's size; 0 for folders and deletions.
    pub size: u64,
}

/// Answer to `POST /v1/rewind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewindResponse {
    /// `"ok"`.
    pub status: String,
    /// The namespace's last JID after the rewind.
    pub jid: Jid,
    /// Paths given an earlier version back (files and folders).
    pub restored: u64,
    /// Paths created since, deleted.
    pub deleted: u64,
    /// With `dry_run`: every change the rewind would make, by path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<RewindChange>>,
}

/// A retained version's block that no shard holds, in `POST /v1/admin/fsck`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingBlock {
    /// Namespace of the version.
    pub ns: NsId,
    /// Its path.
    pub path: String,
    /// Its row.
    pub jid: Jid,
    /// The block it lists that is gone.
    pub hash: String,
}

/// Answer to `POST /v1/admin/fsck`: every stored block read and checked, every retained
/// version's blocks looked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsckResponse {
    /// Nothing damaged and nothing missing.
    pub clean: bool,
    /// Block records read and checked (CRC, tag, SHA-256).
    pub blocks_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Blocks whose record failed a check (hex SHA-256), by shard order.
    pub damaged_blocks: Vec<String>,
    /// Retained versions' blocks no shard holds (the first 1000).
    pub missing: Vec<MissingBlock>,
    /// How many there are in all.
    pub missing_total: u64,
    /// How long it took, milliseconds.
    pub ms: u64,
    /// What each shard found, by shard id.
    #[serde(default)]
    pub shards: Vec<ShardFsck>,
}

/// Body of `POST /v1/admin/backup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRequest {
    /// The folder to back up into: absolute, outside the data folder; empty, new, or an
    /// earlier backup (which is brought up to date).
    pub to: String,
}

/// Answer to `POST /v1/admin/backup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupResponse {
    /// Files hard-linked from the store.
    pub files_linked: u64,
    /// Files copied, whole or in part.
    pub files_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Files an earlier backup in the folder already held.
    pub files_kept: u64,
    /// Files of an earlier backup the store no longer has, removed.
    pub files_removed: u64,
    /// How long it took, milliseconds.
    pub ms: u64,
}

/// One shard's part of an fsck.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFsck {
    /// The shard's id.
    pub shard: usize,
    /// Block records read and checked.
    pub blocks_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Of them, records that failed a check.
    pub damaged_blocks: u64,
    /// Damaged records the block log's open found (a damaged header, a record of the
    /// active segment's unhinted tail).
    pub block_log_corrupt_at_open: u64,
    /// Damaged records of the shard's journal skipped at open (shard 0's include the
    /// directory journal's).
    pub journal_corrupt_records: u64,
    /// Torn tails (what a crash leaves: writes never acknowledged) cut at open, block log
    /// and journal: by the check's own open when it repairs, else what an open would cut.
    /// Reported; not damage.
    pub torn_tails_cut: u64,
    /// Bytes in them.
    pub torn_tail_bytes: u64,
    /// Retained versions' blocks of this shard's namespaces that no shard holds.
    pub missing_blocks: u64,
    /// With `holdalld fsck --repair`: damaged records dropped from the index for good.
    #[serde(default)]
    pub damaged_dropped: u64,
    /// Journal records read and checked, in every journal file (shard 0's include the
    /// directory journal's).
    #[serde(default)]
    pub journal_records_checked: u64,
    /// Of them, damaged records (a sealed file's damaged end counts as one).
    #[serde(default)]
    pub journal_damaged_records: u64,
}

/// Answer to `POST /v1/admin/gc`: what one full collection did, over all shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    /// Dead blocks dropped.
    pub blocks_dropped: u64,
    /// Bytes given back to the file system.
    pub bytes_reclaimed: u64,
    /// Block-log segments compacted and removed.
    pub segments_compacted: u64,
    /// Journal files removed.
    pub journal_files_removed: u64,
    /// How long it took, milliseconds.
    pub ms: u64,
}

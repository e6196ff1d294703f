//! Directory changes, carried out by shard 0 one at a time: checked, written to the
//! directory journal, replicated to every shard, and a new namespace made on its owner.

use std::rc::Rc;

use holdall_engine::journal::record::{JournalRecord, NamespaceKind};

use super::{shard_of_namespace, Shard, ShardError};
use crate::directory::{mount_clash, DirectoryOp};

/// What a directory change writes: its records, the namespace it creates (if any), and
/// the ids it answers with.
struct Change {
    records: Vec<JournalRecord>,
    new_ns: Option<JournalRecord>,
    reply: Vec<u64>,
}

impl Shard {
    /// Carries out `op` on shard 0: checks, writes the directory, replicates, and makes sure a
    /// new namespace exists on its owner shard.
    pub(super) async fn apply_directory_op(
        self: &Rc<Self>,
        op: DirectoryOp,
    ) -> Result<Vec<u64>, ShardError> {
        let directory = self
            .directory_journal
            .as_ref()
            .ok_or_else(|| ShardError::Internal("directory changes go to shard 0".into()))?;
        let Change {
            records,
            new_ns,
            reply,
        } = self.change_of(op)?;
        directory.append(records.clone()).await?;
        self.replicate_all(records).await?;
        if let Some(record) = new_ns {
            let JournalRecord::Namespace { id, .. } = record else {
                return Err(ShardError::Internal(
                    "a new namespace is a namespace record".into(),
                ));
            };
            self.submit_to(shard_of_namespace(id, self.shards), move |s| {
                let s = s.clone();
                async move { s.ensure_namespace(record).await }
            })
            .await??;
        }
        Ok(reply)
    }

    /// The records `op` writes, checked against the directory, with fresh ids taken.
    fn change_of(&self, op: DirectoryOp) -> Result<Change, ShardError> {
        let (records, new_ns, reply) = match op {
            DirectoryOp::CreateUser { name, token_sha256 } => {
                let (user, ns) = (self.next_user_id(), self.next_ns_id());
                let namespace = JournalRecord::Namespace {
                    id: ns,
                    owner: user,
                    kind: NamespaceKind::Root,
                };
                let records = vec![
                    namespace.clone(),
                    JournalRecord::User {
                        id: user,
                        name,
                        root_ns: ns,
                        admin: false,
                    },
                    JournalRecord::DeviceToken {
                        user,
                        token_sha256,
                        device: String::new(),
                        created_ms: crate::directory::now_ms(),
                    },
                ];
                (records, Some(namespace), vec![user, ns])
            }
            DirectoryOp::CreateShared { owner, mount_path } => {
                if mount_clash(self.directory.borrow().mounts(owner), 0, &mount_path) {
                    return Err(ShardError::MountConflict(format!(
                        "{mount_path:?} overlaps a mount"
                    )));
                }
                let ns = self.next_ns_id();
                let namespace = JournalRecord::Namespace {
                    id: ns,
                    owner,
                    kind: NamespaceKind::Shared,
                };
                let records = vec![
                    namespace.clone(),
                    JournalRecord::Mount {
                        user: owner,
                        ns,
                        path: mount_path,
                    },
                ];
                (records, Some(namespace), vec![ns])
            }
            DirectoryOp::AddMember {
                ns,
                user,
                mount_path,
            } => {
                if mount_clash(self.directory.borrow().mounts(user), ns, &mount_path) {
                    return Err(ShardError::MountConflict(format!("the user already has namespace {ns} or something at {mount_path:?} mounted")));
                }
                (
                    vec![JournalRecord::Mount {
                        user,
                        ns,
                        path: mount_path,
                    }],
                    None,
                    vec![],
                )
            }
            DirectoryOp::SetQuota { user, bytes } => {
                (vec![JournalRecord::Quota { user, bytes }], None, vec![])
            }
            DirectoryOp::AddToken {
                user,
                token_sha256,
                device,
            } => (
                vec![JournalRecord::DeviceToken {
                    user,
                    token_sha256,
                    device,
                    created_ms: crate::directory::now_ms(),
                }],
                None,
                vec![],
            ),
            DirectoryOp::RevokeToken { token_sha256 } => (
                vec![JournalRecord::TokenRevoked { token_sha256 }],
                None,
                vec![],
            ),
            DirectoryOp::SetDisabled { user, disabled } => (
                vec![JournalRecord::UserDisabled { user, disabled }],
                None,
                vec![],
            ),
        };
        Ok(Change {
            records,
            new_ns,
            reply,
        })
    }
}

//! `POST /v1/commit` and `POST /v1/commit_batch`: the commit → need blocks → store_batch →
//! commit protocol.
//!
//! The shard that takes the request checks each commit's shape and the caller's access, then
//! works out which blocks the caller may claim (the Dropship rule): a block is claimable when
//! it is stored and either a live row of a namespace the caller can read lists it, or the
//! caller uploaded it within the prefetch TTL. Both questions go, in parallel, to the shards
//! that own those namespaces and blocks. The commits then go to their namespace's owner,
//! which answers conflicts first, `need_blocks` (publishing a prefetch entry for a large new
//! file) for commits missing blocks, and writes the rest in one group commit.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use holdall_engine::journal::record::Author;
use holdall_engine::journal::state::{Commit, CommitInvalid, CommitOutcome, Pending, State, User};
use holdall_engine::prefetch::{Uploader, Upsert};
use holdall_proto::api::{
    CommitBatchRequest, CommitBatchResponse, CommitRequest, CommitResult, EntryKind, NsId,
};
use holdall_proto::limits::{BATCH_BYTES_DEFAULT, COMMIT_BATCH_MAX};
use holdall_proto::BlockHash;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::reply::{json, ApiError};
use crate::request::{author_of, read_json, uploader_of};
use crate::shard::{shard_of_block, shard_of_namespace, Seen, Shard};

/// Largest body of one commit: a blocklist of about 500,000 blocks (a 2 TiB file).
const COMMIT_BODY_BYTES_MAX: usize = 32 << 20;
/// Largest body of a commit_batch.
const COMMIT_BATCH_BODY_BYTES_MAX: usize = 64 << 20;

/// One commit's answer, or why it was refused.
pub(crate) type Answer = Result<CommitResult, ApiError>;

/// `POST /v1/commit`.
pub async fn commit(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let uploader = uploader_of(user, &req)?;
    let author = author_of(user, &req);
    let body: CommitRequest = read_json(req, COMMIT_BODY_BYTES_MAX).await?;
    let answer = run(shard, user, (uploader, author), vec![body], &HashSet::new())
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("no answer to the commit"))??;
    let status = match answer {
        CommitResult::Conflict { .. } => StatusCode::CONFLICT,
        _ => StatusCode::OK,
    };
    Ok(json(status, &answer))
}

/// `POST /v1/commit_batch`.
pub async fn commit_batch(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let uploader = uploader_of(user, &req)?;
    let author = author_of(user, &req);
    let body: CommitBatchRequest = read_json(req, COMMIT_BATCH_BODY_BYTES_MAX).await?;
    if body.commits.len() > COMMIT_BATCH_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_commits",
            format!(
                "{} commits; a batch holds at most {COMMIT_BATCH_MAX}",
                body.commits.len()
            ),
        ));
    }
    let results = run(
        shard,
        user,
        (uploader, author),
        body.commits,
        &HashSet::new(),
    )
    .await?
    .into_iter()
    .map(|a| {
        a.unwrap_or_else(|e| CommitResult::Error {
            error: e.code().into(),
            message: e.message().into(),
        })
    })
    .collect();
    Ok(json(StatusCode::OK, &CommitBatchResponse { results }))
}

/// The 400 for a commit that breaks a rule.
fn invalid(e: CommitInvalid) -> ApiError {
    let code = match e {
        CommitInvalid::BadPath(_) => "bad_path",
        CommitInvalid::BlocklistDoesNotFitSize { .. } => "blocklist_size_mismatch",
        CommitInvalid::NotAFile(_) => "not_a_file",
        CommitInvalid::UnknownNamespace(_) => "unknown_namespace",
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, e.to_string())
}

/// Answers `requests` in order; an error for the whole call only when a shard cannot answer.
/// `vouched` are blocks the server itself took from this user's bytes outside a
/// store_batch (a Dropbox API upload session): claimable while stored, whatever their age.
pub(crate) async fn run(
    shard: &Rc<Shard>,
    user: &User,
    (uploader, author): (Uploader, Author),
    requests: Vec<CommitRequest>,
    vouched: &HashSet<BlockHash>,
) -> Result<Vec<Answer>, ApiError> {
    let _gate = shard.enter_gate();
    let namespaces = crate::handlers::access::namespaces_of(&shard.directory(), user);
    let mut answers: Vec<Option<Answer>> = (0..requests.len()).map(|_| None).collect();
    let mut commits = Vec::with_capacity(requests.len());
    for (i, r) in requests.into_iter().enumerate() {
        let c = Commit {
            ns: r.ns,
            path: r.path,
            version: r.version,
            parent_jid: r.parent_jid,
            author: author.clone(),
        };
        let checked = crate::handlers::access::check(&namespaces, c.ns)
            .and_then(|()| c.check_shape().map_err(invalid));
        match checked {
            Ok(()) => commits.push((i, c)),
            Err(e) => answers[i] = Some(Err(e)),
        }
    }
    for (i, refusal) in crate::handlers::quota::over_quota(shard, &commits).await? {
        answers[i] = Some(Err(refusal));
    }
    commits.retain(|(i, _)| answers[*i].is_none());
    let hashes: Vec<BlockHash> = commits
        .iter()
        .flat_map(|(_, c)| c.version.blocklist.iter().copied())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let claimable = claimable(shard, user, &namespaces, hashes, vouched).await?;
    let mut by_owner: BTreeMap<usize, Vec<(usize, Commit, Vec<BlockHash>)>> = BTreeMap::new();
    for (i, c) in commits {
        let mut seen = HashSet::new();
        let need: Vec<BlockHash> = c
            .version
            .blocklist
            .iter()
            .filter(|h| !claimable.contains(*h) && seen.insert(**h))
            .copied()
            .collect();
        by_owner
            .entry(shard_of_namespace(c.ns, shard.shards()))
            .or_default()
            .push((i, c, need));
    }
    let sent = by_owner.into_iter().map(|(owner, batch)| {
        shard.submit_to(owner, move |s| {
            let s = s.clone();
            async move { commit_here(&s, uploader, batch).await }
        })
    });
    for answered in futures::future::join_all(sent).await {
        for (i, answer) in answered?? {
            answers[i] = Some(answer);
        }
    }
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| ApiError::internal("a commit went unanswered")))
        .collect()
}

/// The blocks of `hashes` that `user` may claim without uploading them.
async fn claimable(
    shard: &Rc<Shard>,
    user: &User,
    namespaces: &[NsId],
    hashes: Vec<BlockHash>,
    vouched: &HashSet<BlockHash>,
) -> Result<HashSet<BlockHash>, ApiError> {
    if hashes.is_empty() {
        return Ok(HashSet::new());
    }
    let mut ns_by_owner: BTreeMap<usize, Vec<NsId>> = BTreeMap::new();
    for &ns in namespaces {
        ns_by_owner
            .entry(shard_of_namespace(ns, shard.shards()))
            .or_default()
            .push(ns);
    }
    let referenced = ns_by_owner.into_iter().map(|(owner, list)| {
        let hashes = hashes.clone();
        shard.submit_to(owner, move |s| {
            let state = s.journal().state();
            let namespaces: Vec<_> = list.iter().filter_map(|ns| state.namespace(*ns)).collect();
            let found: Vec<BlockHash> = hashes
                .into_iter()
                .filter(|h| namespaces.iter().any(|n| n.references(h)))
                .collect();
            std::future::ready(found)
        })
    });
    let mut by_block_owner: BTreeMap<usize, Vec<BlockHash>> = BTreeMap::new();
    for h in &hashes {
        by_block_owner
            .entry(shard_of_block(h, shard.shards()))
            .or_default()
            .push(*h);
    }
    let uploader = user.id;
    // A block counts only if it is stored now: one dropped as corrupt is asked for again,
    // and the upload heals the store.
    let stored = by_block_owner.into_iter().map(|(owner, list)| {
        shard.submit_to(owner, move |s| {
            let now = Instant::now();
            let uploads = s.uploads();
            let found: Vec<(BlockHash, bool)> = list
                .into_iter()
                .filter(|h| s.blocks().claim(h))
                .map(|h| (h, uploads.uploaded_by(uploader, &h, now)))
                .collect();
            std::future::ready(found)
        })
    });
    let (referenced, stored) = futures::future::join(
        futures::future::join_all(referenced),
        futures::future::join_all(stored),
    )
    .await;
    let mut in_namespaces = HashSet::new();
    for found in referenced {
        in_namespaces.extend(found?);
    }
    let mut claimable = HashSet::new();
    for found in stored {
        for (h, uploaded) in found? {
            if uploaded || in_namespaces.contains(&h) || vouched.contains(&h) {
                claimable.insert(h);
            }
        }
    }
    Ok(claimable)
}

/// On the namespaces' owner: answers conflicts, asks for missing blocks (publishing prefetch
/// entries for large new files), and commits the rest in one group commit.
async fn commit_here(
    shard: &Rc<Shard>,
    uploader: Uploader,
    batch: Vec<(usize, Commit, Vec<BlockHash>)>,
) -> Result<Vec<(usize, Answer)>, ApiError> {
    let now = Instant::now();
    let mut answers = Vec::with_capacity(batch.len());
    let mut ready = Vec::new();
    let mut published = Vec::new();
    {
        let state = shard.journal().state();
        for (i, c, need) in batch {
            if need.is_empty() {
                ready.push((i, c));
                continue;
            }
            let answer = match state.check_commit(&c, &mut Pending::default()) {
                Err(CommitOutcome::Conflict { current_jid }) => {
                    Ok(CommitResult::Conflict { current_jid })
                }
                Err(CommitOutcome::Invalid(e)) => Err(invalid(e)),
                Err(CommitOutcome::Ok { .. } | CommitOutcome::NotWritten) => {
                    Err(ApiError::internal("a check committed"))
                }
                Ok(_) => {
                    if publish_upload(shard, &state, &c, uploader, now) {
                        published.push(c.ns);
                    }
                    Ok(CommitResult::NeedBlocks { need })
                }
            };
            answers.push((i, answer));
        }
    }
    for ns in published {
        shard
            .longpolls_mut()
            .wake(&ns, |seen: &Seen| uploader.is_other_than(&seen.viewer));
    }
    if ready.is_empty() {
        return Ok(answers);
    }
    answers.extend(commit_ready(shard, ready).await?);
    Ok(answers)
}

/// Publishes a prefetch entry for a commit that misses blocks when it is a large new file
/// (streaming sync); whether that is news to the namespace's other readers.
fn publish_upload(
    shard: &Shard,
    state: &State,
    c: &Commit,
    uploader: Uploader,
    now: Instant,
) -> bool {
    let live = state
        .latest(c.ns, &c.path)
        .is_some_and(|r| r.version.kind != EntryKind::Deleted);
    if shard.streaming()
        && c.version.kind == EntryKind::File
        && c.version.size > BATCH_BYTES_DEFAULT as u64
        && !live
    {
        let upsert = shard.prefetch_mut().upsert(
            c.ns,
            &c.path,
            c.version.blocklist.clone(),
            c.version.size,
            uploader,
            now,
        );
        // A refresh (a retried commit) is no news to anyone.
        return matches!(upsert, Upsert::Inserted | Upsert::Replaced);
    }
    false
}

/// Commits the batch's commits that miss no blocks in one journal group; each one's
/// answer, and longpolls of the namespaces that moved woken.
pub(crate) async fn commit_ready(
    shard: &Rc<Shard>,
    ready: Vec<(usize, Commit)>,
) -> Result<Vec<(usize, Answer)>, ApiError> {
    let mut answers = Vec::with_capacity(ready.len());
    let (indexes, commits): (Vec<usize>, Vec<Commit>) = ready.into_iter().unzip();
    let keys: Vec<(NsId, String)> = commits.iter().map(|c| (c.ns, c.path.clone())).collect();
    let outcomes = shard
        .journal()
        .commit(commits)
        .await
        .map_err(ApiError::from)?;
    let mut committed = HashSet::new();
    for ((i, (ns, path)), outcome) in indexes.into_iter().zip(keys).zip(outcomes) {
        let answer = match outcome {
            CommitOutcome::Ok { jid } => {
                shard.prefetch_mut().remove(ns, &path);
                committed.insert(ns);
                Ok(CommitResult::Ok { jid })
            }
            CommitOutcome::Conflict { current_jid } => Ok(CommitResult::Conflict { current_jid }),
            CommitOutcome::Invalid(e) => Err(invalid(e)),
            CommitOutcome::NotWritten => Err(ApiError::internal("a single commit not written")),
        };
        answers.push((i, answer));
    }
    for ns in committed {
        wake_namespace(shard, ns);
    }
    Ok(answers)
}

/// Wakes the longpolls of `ns` that have not seen its last JID.
pub(crate) fn wake_namespace(shard: &Shard, ns: NsId) {
    let last = shard
        .journal()
        .state()
        .namespace(ns)
        .map_or(0, |n| n.last_jid());
    shard
        .longpolls_mut()
        .wake(&ns, |seen: &Seen| seen.jid < last);
}

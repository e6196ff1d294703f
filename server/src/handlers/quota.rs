//! Quotas: `POST /v1/admin/users/{user}/quota`, a user's usage, and the check that keeps a
//! commit from taking a namespace's owner past their quota.
//!
//! Usage is the logical bytes of the latest versions of the files in the namespaces a user
//! owns; each shard keeps it per owner for the namespaces it holds, so a user's usage is one
//! sum over the shards. A quota binds the namespace's owner: a member committing to a shared
//! folder spends its owner's quota. The check runs before blocks are asked for, against the
//! usage at that moment: commits in flight on other shards at once can each pass, so a user
//! can end over quota by at most what was being committed concurrently.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use holdall_engine::journal::record::UserId;
use holdall_engine::journal::state::{Commit, User};
use holdall_proto::api::{NsId, QuotaRequest, QuotaResponse, Usage};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::directory::DirectoryOp;
use crate::handlers::admin::admin_only;
use crate::reply::{json, ApiError};
use crate::request::read_json;
use crate::shard::{shard_of_namespace, Shard};

/// Largest body of a quota call.
const QUOTA_BODY_BYTES_MAX: usize = 4096;

/// `POST /v1/admin/users/{user}/quota`: sets (`{"bytes": N}`) or removes (`{"bytes": null}`)
/// a user's quota, and answers with their usage under it. The name is percent-decoded.
pub async fn set_quota(
    shard: &Rc<Shard>,
    caller: &User,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    admin_only(caller, "set quotas")?;
    let user = crate::handlers::users::user_named(shard, name)?;
    let body: QuotaRequest = read_json(req, QUOTA_BODY_BYTES_MAX).await?;
    shard
        .directory_op(DirectoryOp::SetQuota {
            user: user.id,
            bytes: body.bytes,
        })
        .await?;
    let usage = usage_of(shard, user.id).await?;
    Ok(json(
        StatusCode::OK,
        &QuotaResponse {
            user: user.name,
            usage,
        },
    ))
}

/// `user`'s usage over every shard, and their quota.
pub async fn usage_of(shard: &Rc<Shard>, user: UserId) -> Result<Usage, ApiError> {
    let asked = (0..shard.shards()).map(|to| {
        shard.submit_to(to, move |s| {
            std::future::ready(s.journal().state().usage(user))
        })
    });
    let mut bytes = 0;
    for answer in futures::future::join_all(asked).await {
        bytes += answer?;
    }
    Ok(Usage {
        bytes,
        quota_bytes: shard.directory().quota(user),
    })
}

/// The 507 for a commit that would take the namespace's owner past their quota.
pub fn quota_exceeded(owner: &str, usage: u64, growth: u64, quota: u64) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "quota_exceeded",
        format!(
            "{owner} uses {usage} of a {quota}-byte quota; this commit would add {growth} bytes"
        ),
    )
}

/// What one commit would change in its owner's usage.
struct Charge {
    owner: UserId,
    quota: u64,
    ns: NsId,
    path: String,
    new_bytes: u64,
}

/// Which of `commits` (by their indexes) would take their namespace's owner past quota,
/// taking them in order as if each before had been written. Commits that shrink or keep
/// usage always pass, so a user over quota can still delete and trim.
pub async fn over_quota(
    shard: &Rc<Shard>,
    commits: &[(usize, Commit)],
) -> Result<Vec<(usize, ApiError)>, ApiError> {
    let charges = charges_of(shard, commits);
    if charges.is_empty() {
        return Ok(Vec::new());
    }
    let (mut usage, mut sizes) = usage_and_sizes(shard, &charges).await?;
    let mut refused = Vec::new();
    for (i, charge) in charges {
        let key = (charge.ns, charge.path.clone());
        let old = sizes.get(&key).copied().unwrap_or(0);
        let used = usage.entry(charge.owner).or_default();
        if charge.new_bytes > old && *used + (charge.new_bytes - old) > charge.quota {
            let owner = shard
                .directory()
                .user(charge.owner)
                .map_or_else(|| format!("user {}", charge.owner), |u| u.name.clone());
            let growth = charge.new_bytes - old;
            refused.push((i, quota_exceeded(&owner, *used, growth, charge.quota)));
            continue;
        }
        *used = (*used + charge.new_bytes).saturating_sub(old);
        sizes.insert(key, charge.new_bytes);
    }
    shard.metrics().quota_refused(refused.len() as u64);
    Ok(refused)
}

/// The commits whose namespace's owner has a quota, with what each would make the path
/// count for.
fn charges_of(shard: &Shard, commits: &[(usize, Commit)]) -> Vec<(usize, Charge)> {
    let directory = shard.directory();
    commits
        .iter()
        .filter_map(|(i, c)| {
            let owner = directory.namespace(c.ns)?.owner;
            let quota = directory.quota(owner)?;
            let charge = Charge {
                owner,
                quota,
                ns: c.ns,
                path: c.path.clone(),
                new_bytes: c.version.counted_bytes(),
            };
            Some((*i, charge))
        })
        .collect()
}

type Sizes = HashMap<(NsId, String), u64>;

/// The charged owners' usage over every shard, and what each charged path counts for now
/// (asked of its namespace's owner shard).
async fn usage_and_sizes(
    shard: &Rc<Shard>,
    charges: &[(usize, Charge)],
) -> Result<(HashMap<UserId, u64>, Sizes), ApiError> {
    let mut owners: Vec<UserId> = charges.iter().map(|(_, c)| c.owner).collect();
    owners.sort_unstable();
    owners.dedup();
    let mut paths: BTreeMap<usize, Vec<(NsId, String)>> = BTreeMap::new();
    for (_, c) in charges {
        paths
            .entry(shard_of_namespace(c.ns, shard.shards()))
            .or_default()
            .push((c.ns, c.path.clone()));
    }
    let asked = (0..shard.shards()).map(|to| {
        let owners = owners.clone();
        let paths = paths.remove(&to).unwrap_or_default();
        shard.submit_to(to, move |s| {
            let state = s.journal().state();
            let usage: Vec<(UserId, u64)> = owners.iter().map(|&o| (o, state.usage(o))).collect();
            let sizes: Vec<((NsId, String), u64)> = paths
                .into_iter()
                .map(|(ns, path)| {
                    let counted = state
                        .latest(ns, &path)
                        .map_or(0, |r| r.version.counted_bytes());
                    ((ns, path), counted)
                })
                .collect();
            std::future::ready((usage, sizes))
        })
    });
    let mut usage: HashMap<UserId, u64> = HashMap::new();
    let mut sizes = Sizes::new();
    for answer in futures::future::join_all(asked).await {
        let (u, s) = answer?;
        for (owner, bytes) in u {
            *usage.entry(owner).or_default() += bytes;
        }
        sizes.extend(s);
    }
    Ok((usage, sizes))
}

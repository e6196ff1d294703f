//! Users, shared namespaces and members: the routes that change the directory, and the
//! directory changes themselves, which shard 0 carries out one at a time and replicates to
//! every shard before answering.

use std::rc::Rc;

use holdall_engine::journal::state::{valid_user_name, User};
use holdall_proto::api::{
    AddMemberRequest, CreateNamespaceRequest, CreateNamespaceResponse, CreateUserRequest,
    CreateUserResponse,
};
use holdall_proto::validate_path;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::directory::{new_token, token_sha256, DirectoryOp};
use crate::reply::{json, ApiError};
use crate::request::read_json;
use crate::shard::{shard_of_namespace, Shard};

/// Largest JSON body of an admin call.
const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;

/// The 403 for a caller who is not the admin.
pub(crate) fn admin_only(user: &User, what: &str) -> Result<(), ApiError> {
    if user.admin {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("only the admin may {what}"),
    ))
}

/// `POST /v1/admin/gc`: one full collection and compaction, answered when done.
pub async fn gc(shard: &Rc<Shard>, user: &User) -> Result<Response<Body>, ApiError> {
    admin_only(user, "run a collection")?;
    let done = shard.collect_all(shard.collect_plan(true)).await?;
    Ok(json(StatusCode::OK, &done))
}

/// `POST /v1/admin/fsck`: reads and checks every stored block and looks for every retained
/// version's blocks, changing nothing; answers when done.
pub async fn fsck(shard: &Rc<Shard>, user: &User) -> Result<Response<Body>, ApiError> {
    admin_only(user, "check the store")?;
    let found = shard.fsck_all(false).await?;
    Ok(json(StatusCode::OK, &found))
}

/// `POST /v1/admin/users`.
pub async fn create_user(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    admin_only(user, "create users")?;
    let body: CreateUserRequest = read_json(req, ADMIN_BODY_BYTES_MAX).await?;
    if !valid_user_name(&body.name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_name",
            "a user name is 1 to 64 characters without '/' or control characters",
        ));
    }
    let token = new_token().map_err(|e| ApiError::internal(e.to_string()))?;
    let ids = shard
        .directory_op(DirectoryOp::CreateUser {
            name: body.name.clone(),
            token_sha256: token_sha256(&token),
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &CreateUserResponse {
            user: body.name,
            token,
            root_ns: ids[1],
        },
    ))
}

fn check_mount_path(path: &str) -> Result<(), ApiError> {
    validate_path(path)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.to_string()))
}

/// Refuses a mount path where the user's root already has something.
async fn check_path_free(shard: &Rc<Shard>, user: &User, path: &str) -> Result<(), ApiError> {
    let owner = shard_of_namespace(user.root_ns, shard.shards());
    let (ns, path_owned) = (user.root_ns, path.to_owned());
    let in_use = shard
        .submit_to(owner, move |s| {
            std::future::ready(s.journal().state().path_in_use(ns, &path_owned))
        })
        .await?;
    if in_use {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "path_in_use",
            format!("{path:?} already exists in {}'s folder", user.name),
        ));
    }
    Ok(())
}

/// `POST /v1/namespaces`.
pub async fn create_namespace(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let body: CreateNamespaceRequest = read_json(req, ADMIN_BODY_BYTES_MAX).await?;
    check_mount_path(&body.mount_path)?;
    // Adopting a folder of the caller's own root is how a folder becomes shared without an
    // upload (the client then moves its rows); other mounts need an empty path.
    if !body.adopt_existing {
        check_path_free(shard, user, &body.mount_path).await?;
    }
    let ids = shard
        .directory_op(DirectoryOp::CreateShared {
            owner: user.id,
            mount_path: body.mount_path,
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &CreateNamespaceResponse { ns: ids[0] },
    ))
}

/// `POST /v1/namespaces/{ns}/members`.
pub async fn add_member(
    shard: &Rc<Shard>,
    user: &User,
    ns: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let ns: u64 = ns.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_namespace",
            format!("{ns:?} is not a namespace id"),
        )
    })?;
    let body: AddMemberRequest = read_json(req, ADMIN_BODY_BYTES_MAX).await?;
    check_mount_path(&body.mount_path)?;
    let target = {
        let directory = shard.directory();
        let namespace = directory
            .namespace(ns)
            .filter(|n| n.shared)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_namespace",
                    format!("no shared namespace {ns}"),
                )
            })?;
        let member =
            namespace.owner == user.id || directory.mounts(user.id).iter().any(|(n, _)| *n == ns);
        if !member {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("you are not a member of namespace {ns}"),
            ));
        }
        directory.user_by_name(&body.user).cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_user",
                format!("no user {:?}", body.user),
            )
        })?
    };
    check_path_free(shard, &target, &body.mount_path).await?;
    shard
        .directory_op(DirectoryOp::AddMember {
            ns,
            user: target.id,
            mount_path: body.mount_path.clone(),
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"ns": ns, "user": target.name, "mount_path": body.mount_path}),
    ))
}

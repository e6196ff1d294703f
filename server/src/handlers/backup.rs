//! `POST /v1/admin/backup`: a consistent copy of the store into another folder while it
//! serves (shard/backup.rs).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use holdall_engine::journal::state::User;
use holdall_proto::api::BackupRequest;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::admin::admin_only;
use crate::body::Body;
use crate::reply::{json, ApiError};
use crate::request::read_json;
use crate::shard::Shard;

/// Largest body.
const BACKUP_BODY_BYTES_MAX: usize = 16 * 1024;

/// Backs the store up into the folder `to` and answers what was copied.
pub async fn backup(
    shard: &Rc<Shard>,
    user: &User,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    admin_only(user, "back the store up")?;
    let body: BackupRequest = read_json(req, BACKUP_BODY_BYTES_MAX).await?;
    let to = target(Path::new(&body.to), shard.data())?;
    let done = shard.backup_all(to).await?;
    Ok(json(StatusCode::OK, &done))
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// `to` as a backup folder: absolute, its parent present, neither inside the data folder
/// nor holding it, and new, empty or an earlier backup (a backup removes files its folders
/// hold that the store does not, so it never takes over a folder of other things).
fn target(to: &Path, data: &Path) -> Result<PathBuf, ApiError> {
    if !to.is_absolute() {
        return Err(bad(
            "bad_target",
            format!("{}: give an absolute path", to.display()),
        ));
    }
    let (Some(parent), Some(name)) = (to.parent(), to.file_name()) else {
        return Err(bad(
            "bad_target",
            format!("{}: not a folder name", to.display()),
        ));
    };
    let parent = parent
        .canonicalize()
        .map_err(|e| bad("bad_target", format!("{}: {e}", parent.display())))?;
    let to = parent.join(name);
    let data = data
        .canonicalize()
        .map_err(|e| ApiError::internal(format!("{}: {e}", data.display())))?;
    if to.starts_with(&data) || data.starts_with(&to) {
        return Err(bad(
            "bad_target",
            format!(
                "{} overlaps the data folder {}",
                to.display(),
                data.display()
            ),
        ));
    }
    match std::fs::read_dir(&to) {
        Ok(mut entries) => {
            if entries.next().is_some() && !to.join("layout.toml").is_file() {
                return Err(bad(
                    "not_a_backup",
                    format!("{} holds files and no earlier backup", to.display()),
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&to)
            .map_err(|e| bad("bad_target", format!("creating {}: {e}", to.display())))?,
        Err(e) => return Err(bad("bad_target", format!("{}: {e}", to.display()))),
    }
    Ok(to)
}

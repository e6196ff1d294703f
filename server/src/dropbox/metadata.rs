//! Metadata as Dropbox shapes it: `.tag` file, folder or deleted, `name`, `path_lower`,
//! `path_display`, `id`, and for files `rev`, `client_modified`, `server_modified`, `size`
//! and `content_hash` (Dropbox's, which Holdall's blocklist gives without reading a byte).

use holdall_engine::journal::record::Row;
use holdall_proto::api::{EntryKind, NsId};
use holdall_proto::content_hash::content_hash_of_blocklist;
use serde_json::{json, Value};

use super::names;
use super::tree::{name_of, Tree};

/// A file's metadata from its row.
pub fn file(tree: &Tree, row: &Row) -> Value {
    let display = tree.display(row.ns, &row.path);
    let server_ms = i64::try_from(row.committed_ms).unwrap_or(i64::MAX);
    json!({
        ".tag": "file",
        "name": name_of(&display),
        "path_lower": display.to_lowercase(),
        "path_display": display,
        "id": names::file_id(row.ns, &row.path),
        "client_modified": names::timestamp(row.version.mtime_ms),
        "server_modified": names::timestamp(server_ms),
        "rev": names::rev(row.ns, row.jid),
        "size": row.version.size,
        "is_downloadable": true,
        "content_hash": content_hash_of_blocklist(&row.version.blocklist).to_hex(),
    })
}

/// A folder's metadata: `path` in `ns` ("" for a mount's root, named by its mount path).
pub fn folder(tree: &Tree, ns: NsId, path: &str) -> Value {
    let mut v = named(tree, ns, path, "folder");
    v["id"] = json!(names::file_id(ns, path));
    v
}

/// What was at `path` in `ns` and is deleted.
pub fn deleted(tree: &Tree, ns: NsId, path: &str) -> Value {
    named(tree, ns, path, "deleted")
}

/// The fields every kind of metadata has.
fn named(tree: &Tree, ns: NsId, path: &str, tag: &str) -> Value {
    let display = tree.display(ns, path);
    json!({
        ".tag": tag,
        "name": name_of(&display),
        "path_lower": display.to_lowercase(),
        "path_display": display,
    })
}

/// The metadata of a latest row, whatever it holds.
pub fn of_row(tree: &Tree, row: &Row) -> Value {
    match row.version.kind {
        EntryKind::File => file(tree, row),
        EntryKind::Dir => folder(tree, row.ns, &row.path),
        EntryKind::Deleted => deleted(tree, row.ns, &row.path),
    }
}

//! Wire types shared by `holdalld` and `holdall`: block hashes and blocklists, the
//! Dropbox-compatible content hash, the path rules, the binary frame codec for block
//! batches, and the JSON bodies of every call. No runtime and no I/O.

pub mod api;
pub mod content_hash;
pub mod frame;
pub mod hash;
pub mod limits;
pub mod path;

pub use content_hash::{blocklist_of, content_hash, ContentHasher};
pub use hash::{BlockHash, HashError};
pub use path::{validate_path, PathError};

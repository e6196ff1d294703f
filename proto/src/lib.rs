//! Wire types shared by `holdalld` and `holdall`: block hashes and blocklists, the
//! Dropbox-compatible content hash, the path rules, the binary frame codec for block
//! batches and the streaming decoders production runs on them (`pieces`, `retrieved`), and
//! the JSON bodies of every call. No runtime; I/O only through a caller's `Read`.

pub mod api;
pub mod byte_count;
pub mod content_hash;
pub mod delta;
pub mod duration;
pub mod frame;
pub mod hash;
pub mod limits;
pub mod path;
pub mod payload;
pub mod pieces;
pub mod retrieved;
pub mod version;

pub use content_hash::{blocklist_of, content_hash, ContentHasher};
pub use hash::{BlockHash, HashError};
pub use path::{validate_path, PathError};
pub use version::FileVersion;

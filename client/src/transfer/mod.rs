//! Moving blocks between the folder and the server: uploads and their early stores,
//! downloads rebuilt from blocks, and the prefetch cache of streaming sync. Built on `net`
//! and `local`.

pub mod change;
pub mod delta_download;
pub mod delta_upload;
pub mod early;
pub mod prefetch;
pub mod reconstruct;
pub mod upload;

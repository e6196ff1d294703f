//! Talking to holdalld: the typed protocol calls, the bulk transfer connection under them,
//! retrieve answers parsed in place, blocks compressed for the wire, bandwidth caps and
//! progress. Uses `local` only for the
//! aligned payload buffers that downloads write from.

pub mod api;
pub mod bulk;
pub mod pack;
pub mod progress;
pub mod throttle;
pub mod wire;

//! Keeping a folder in sync: the round (list, scan, plan, act, record), the deterministic
//! planner it asks what to do, and the watcher that decides when the next round runs. The
//! top room: it uses `transfer`, `local` and `net`, and nothing uses it but `main`.

pub mod planner;
pub mod quota;
pub mod round;
pub mod watch;

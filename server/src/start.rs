//! What each starting shard is doing, shared with the main thread so that a start that
//! takes long is reported with its step.

use std::sync::Arc;

/// What a starting shard is doing, for the warning when it takes long.
pub struct StartProgress {
    pub step: std::sync::Mutex<&'static str>,
    /// The shard thread's id, 0 until it runs.
    pub tid: std::sync::atomic::AtomicI32,
}

/// Shared between a starting shard and the main thread.
pub type StartStep = Arc<StartProgress>;

/// Sets a starting shard's current step.
pub fn step(at: &StartStep, what: &'static str) {
    *at.step.lock().unwrap_or_else(|e| e.into_inner()) = what;
}

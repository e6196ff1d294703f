//! The handlers, one module per group of routes. Each reads its request (`request`),
//! checks access, does its work through the shard, and answers (`reply`).

pub mod access;
pub mod account;
pub mod admin;
pub mod backup;
pub mod blocks;
pub mod commit;
pub mod delta;
pub mod delta_answers;
pub mod frames;
pub mod history;
pub mod list;
pub mod quota;
pub mod retrieve;
pub mod retrieve_batch;
pub mod rewind;
pub mod tokens;
pub mod users;

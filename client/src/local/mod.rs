//! The synced folder on this device: its walk and hashes, the trees the planner compares,
//! the state database (merge base, hash cache, intents, trash) and the books kept from it
//! in memory, reading blocks back,
//! O_DIRECT block writes and placing finished files. Knows nothing of the network.

pub mod book;
pub mod direct;
pub mod place;
pub mod read;
pub mod root;
pub mod scan;
pub mod stat;
pub mod state;
pub mod trash;
pub mod tree;

//! The embedded store's durable journal: one append-only log per shard, group-committed with
//! glommio DMA writes and `fdatasync`, compacted by snapshots, recovered and re-partitioned on
//! start.

pub mod format;
pub mod legacy;
pub mod recovery;
pub mod writer;

pub use writer::{Durability, Journal, JournalError, JournalStats};

//! The embedded store's durable journal: one append-only log per shard, group-committed with
//! glommio DMA writes and `fdatasync`, compacted by snapshots built on a thread of their own,
//! recovered and re-partitioned on start.

pub mod carry;
pub mod compaction;
pub mod format;
pub mod legacy;
pub mod read;
pub mod recovery;
pub mod writer;

pub use writer::{Durability, Journal, JournalError, JournalStart, JournalStats};

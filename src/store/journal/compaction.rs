//! Compaction off the request path. When a shard's log has grown enough, the journal closes the
//! current segment, and a thread of its own rebuilds the shard's state from the newest snapshot
//! and the segments closed since, exactly as a restart would replay them, and writes that as the
//! next snapshot. The shard never stops to copy or sort its book: the cost of a snapshot moves
//! from a stall on whichever request crossed the threshold to background CPU and a transient
//! second copy of the live state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::channel::oneshot;

use super::format;
use super::read::{self, GenerationContents, Segments};
use super::recovery::{self, io_error, RecoveryError};
use crate::clock::now_ms;
use crate::feed::outbox::Outbox;
use crate::sale::book::{Book, BookLimits};

/// Niceness of the compaction thread: the shards are pinned to the same cores and serve
/// shoppers, so under load they win, and compaction takes the idle time between requests.
const COMPACTION_NICENESS: i32 = 10;

/// How a shard's state is rebuilt from its files: the same settings the shard was recovered with.
#[derive(Debug, Clone, Copy)]
pub struct Rebuild {
    /// Retention of closed orders, which replay applies as the live book did.
    pub limits: BookLimits,
    /// Whether changes are recorded in the order feed's outbox (`--events` is set).
    pub feed: bool,
}

/// One snapshot to take: of shard directory `dir`, covering every segment before `seq`.
#[derive(Debug)]
pub struct Compaction {
    /// The shard's journal directory.
    pub dir: PathBuf,
    /// The snapshot's number: the segment the shard writes now, the first it does not cover.
    pub seq: u64,
    /// The last record the closed segments hold, as the writer counted; the files must agree.
    pub covers_lsn: u64,
    /// How the state is rebuilt.
    pub rebuild: Rebuild,
}

/// A snapshot written.
#[derive(Debug, Clone, Copy)]
pub struct Compacted {
    /// Its size in bytes, which sets when the next one is due.
    pub snapshot_bytes: u64,
    /// Wall time it took, for `/metrics`.
    pub elapsed_nanos: u64,
}

impl Compaction {
    /// Runs on a thread of its own; the receiver gets the outcome.
    pub fn spawn(self) -> oneshot::Receiver<Result<Compacted, RecoveryError>> {
        let (done, outcome) = oneshot::channel();
        let name = format!("compact-{}", self.seq);
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            lower_priority();
            let _ = done.send(self.run());
        });
        if let Err(source) = spawned {
            // The sender went with the closure: the receiver reports it as cancelled.
            tracing::warn!(%source, dir = %dir.display(), "cannot start a compaction thread");
        }
        outcome
    }

    /// Reads, rebuilds, writes the snapshot, then deletes what it covers.
    pub fn run(&self) -> Result<Compacted, RecoveryError> {
        let started = Instant::now();
        let mut contents = GenerationContents::default();
        let read = read::read_shard(&self.dir, Segments::Before(self.seq), &mut contents)?;
        if read.last_lsn != self.covers_lsn {
            // Writing it anyway would drop records or cover some twice on the next start.
            return Err(RecoveryError::Gap(format!(
                "{}: the segments before {} end at record {}, but the journal wrote up to {}",
                self.dir.display(),
                self.seq,
                read.last_lsn,
                self.covers_lsn
            )));
        }
        let mut book = Book::new(self.rebuild.limits);
        let mut outbox = Outbox::default();
        recovery::replay_log(
            &mut book,
            &mut outbox,
            &read.events,
            read.snapshot_len,
            self.rebuild.feed,
            now_ms(),
            |_| true,
        )?;
        drop(read);
        let mut events = book.snapshot();
        events.extend(outbox.snapshot());
        drop((book, outbox));
        let snapshot_bytes =
            recovery::write_snapshot(&self.dir, self.seq, self.covers_lsn, &events)?;
        remove_older_than(&self.dir, self.seq)?;
        recovery::sync_dir(&self.dir)?;
        Ok(Compacted {
            snapshot_bytes,
            elapsed_nanos: crate::clock::elapsed_nanos(started),
        })
    }
}

/// Lowers the calling thread's scheduling priority (Linux applies niceness per thread).
fn lower_priority() {
    // SAFETY: setpriority has no memory-safety preconditions; `who = 0` is the calling thread.
    let result = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, COMPACTION_NICENESS) };
    if result != 0 {
        tracing::debug!("compaction thread keeps its priority: setpriority failed");
    }
}

/// Deletes segments and snapshots numbered below `seq`: snapshot `seq` now covers them. A crash
/// part-way leaves only files that the next start ignores (it reads from the newest snapshot).
fn remove_older_than(dir: &Path, seq: u64) -> Result<(), RecoveryError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some((_, file_seq)) = name.to_str().and_then(format::parse_name) else {
            continue;
        };
        if file_seq < seq {
            std::fs::remove_file(entry.path()).map_err(io_error(dir))?;
        }
    }
    Ok(())
}

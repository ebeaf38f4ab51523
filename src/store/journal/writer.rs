//! One shard's journal writer: appends encoded events to the current segment with glommio DMA
//! writes, group-committing every record appended while a write is in flight into the next
//! write and `fdatasync`. Rolls segments at a size limit, and has snapshots built from the closed
//! ones (see [`super::compaction`]) so that they can be deleted.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::channel::oneshot;
use futures::AsyncWriteExt;
use glommio::io::{DmaFile, DmaStreamWriter, DmaStreamWriterBuilder};

use super::compaction::{Compaction, Rebuild};
use super::format::{self, Entry, SEGMENT_MAGIC};
use crate::metrics::{Distribution, DistributionSnapshot};
use crate::sale::command::Event;

/// When an acknowledgement may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Only once the record is on disk (`fdatasync`). The default.
    Sync,
    /// At once; records reach the disk in the background. Unsafe: for benchmarks only.
    None,
}

/// A journal write failed; the shard can no longer acknowledge changes.
#[derive(Debug, Clone, thiserror::Error)]
#[error("journal write failed: {0}")]
pub struct JournalError(pub String);

impl From<glommio::GlommioError<()>> for JournalError {
    fn from(error: glommio::GlommioError<()>) -> Self {
        Self(error.to_string())
    }
}

impl From<std::io::Error> for JournalError {
    fn from(error: std::io::Error) -> Self {
        Self(error.to_string())
    }
}

/// DMA buffer per write; records are batched into these.
const WRITE_BUFFER: usize = 128 << 10;
/// Buffers in flight ahead of a sync. One, so buffers reach the disk in order: a crash can then
/// only lose a suffix of the unsynced writes, never leave a hole followed by newer records (which
/// recovery would have to call corruption).
const WRITE_BEHIND: usize = 1;

/// A pending segment roll: where in the pending bytes the old segment ends, and whether a
/// snapshot of the state at exactly that point is to be built once the segment is closed.
struct Roll {
    at: usize,
    /// For a snapshot: the last LSN the closed segments hold.
    snapshot_covers: Option<u64>,
}

/// Largest group buffer kept for reuse; a burst's larger one is freed once written.
const KEPT_GROUP_BYTES: usize = 1 << 20;

#[derive(Default)]
struct State {
    /// Encoded records not yet handed to the writer.
    pending: Vec<u8>,
    /// The buffer of the last group written, emptied, to be the next `pending`: records are
    /// encoded into capacity already there instead of growing a fresh buffer every group.
    spare: Vec<u8>,
    /// Records appended so far.
    appended: u64,
    /// Records known durable (or written, without sync).
    durable: u64,
    flushing: bool,
    failed: Option<JournalError>,
    segment_seq: u64,
    segment_bytes: u64,
    bytes_since_snapshot: u64,
    last_snapshot_bytes: u64,
    roll: Option<Roll>,
    snapshotting: bool,
}

/// Where a shard's journal continues from: what recovery left in its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalStart {
    /// The number of the first segment to write.
    pub first_seq: u64,
    /// Records already in the directory's segments after the snapshot: LSNs continue from here.
    pub records: u64,
    /// Size of the newest snapshot, which sets when the next one is due.
    pub snapshot_bytes: u64,
    /// Segment bytes after that snapshot, which count toward the next one.
    pub log_bytes: u64,
}

impl JournalStart {
    /// A directory holding only snapshot 1, of `snapshot_bytes`: a generation recovery wrote.
    pub fn fresh(snapshot_bytes: u64) -> Self {
        Self {
            first_seq: 1,
            records: 0,
            snapshot_bytes,
            log_bytes: 0,
        }
    }
}

/// A committer waiting until this many records are durable.
type Waiter = (u64, oneshot::Sender<Result<(), JournalError>>);

/// The journal of one shard.
pub struct Journal {
    dir: PathBuf,
    durability: Durability,
    segment_limit: u64,
    state: RefCell<State>,
    /// Taken by whoever flushes, so no borrow is held across an await.
    writer: RefCell<Option<DmaStreamWriter>>,
    /// Committers waiting for a record count to become durable.
    waiters: RefCell<Vec<Waiter>>,
    /// Group sizes, write latencies and compactions, for `/metrics`.
    metrics: RefCell<JournalMetrics>,
    /// Set when closing starts, so background appenders (the order feed's marks) stop.
    closing: Cell<bool>,
    /// With `Durability::None`: set by a commit that found no write in progress, so the
    /// write-behind task (see [`Journal::write_behind`]) writes what it left pending.
    write_requested: Cell<bool>,
    /// The write-behind task's waker while it waits for a request or for closing.
    write_behind_waker: RefCell<Option<Waker>>,
    /// How a snapshot rebuilds this shard's state from its files.
    rebuild: Rebuild,
}

/// How the journal's group commit performs.
#[derive(Debug, Default)]
struct JournalMetrics {
    /// Write plus `fdatasync` (or write alone without sync) of one group, in nanoseconds.
    sync_latency: Distribution,
    /// Records per group.
    group_records: Distribution,
    bytes_written: u64,
    /// Wall time of each snapshot built off the shard, in nanoseconds.
    compaction_latency: Distribution,
    /// Snapshots that could not be built; their segments are kept and it is tried again.
    compaction_failures: u64,
}

/// A copy of the journal's figures for a scrape.
#[derive(Debug, Clone, Default)]
pub struct JournalStats {
    /// Nanoseconds per group write (with its `fdatasync` under `sync`).
    pub sync_latency: DistributionSnapshot,
    /// Records per group commit.
    pub group_records: DistributionSnapshot,
    /// Record bytes written.
    pub bytes_written: u64,
    /// Wall time of each snapshot built (its count is the number of compactions).
    pub compaction_latency: DistributionSnapshot,
    /// Snapshots that failed.
    pub compaction_failures: u64,
    /// Whether the journal has failed and the store refuses changes.
    pub failed: bool,
}

impl Journal {
    /// Opens a new segment in `dir`, continuing what recovery left there (`start`). Snapshots
    /// rebuild the state with `rebuild`.
    pub async fn create(
        dir: &Path,
        start: JournalStart,
        durability: Durability,
        segment_limit: u64,
        rebuild: Rebuild,
    ) -> Result<Rc<Self>, JournalError> {
        let writer = open_segment(dir, start.first_seq).await?;
        let state = State {
            segment_seq: start.first_seq,
            appended: start.records,
            durable: start.records,
            last_snapshot_bytes: start.snapshot_bytes,
            bytes_since_snapshot: start.log_bytes,
            ..State::default()
        };
        let journal = Rc::new(Self {
            dir: dir.into(),
            durability,
            segment_limit,
            state: RefCell::new(state),
            writer: RefCell::new(Some(writer)),
            waiters: RefCell::new(Vec::new()),
            metrics: RefCell::new(JournalMetrics::default()),
            closing: Cell::new(false),
            write_requested: Cell::new(false),
            write_behind_waker: RefCell::new(None),
            rebuild,
        });
        if durability == Durability::None {
            glommio::spawn_local(Rc::clone(&journal).write_behind()).detach();
        }
        Ok(journal)
    }

    /// With `Durability::None`, the one task that writes what commits leave pending, so that
    /// no commit waits for the disk. It lives as long as the journal is open: spawning a task
    /// per commit instead cost an allocation per purchase (`benches/allocations.sh`). Ends once
    /// [`Journal::close`] begins and no request is left; close writes the rest itself.
    async fn write_behind(self: Rc<Self>) {
        loop {
            let requested = poll_fn(|cx| {
                if self.write_requested.replace(false) {
                    Poll::Ready(true)
                } else if self.closing.get() {
                    Poll::Ready(false)
                } else {
                    *self.write_behind_waker.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if !requested {
                return;
            }
            // A failure is recorded in the state and refuses every later commit.
            let _ = self.flush().await;
        }
    }

    /// Wakes the write-behind task, if it is waiting.
    fn wake_write_behind(&self) {
        if let Some(waker) = self.write_behind_waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Queues one event; it is durable once a later [`Journal::commit`] returns, or once
    /// [`Journal::durable_records`] reaches the record count this returns.
    pub fn append(&self, event: &Event) -> u64 {
        let mut state = self.state.borrow_mut();
        let before = state.pending.len();
        let lsn = state.appended + 1;
        format::encode_record(&mut state.pending, lsn, &Entry::Event(event.clone()));
        let written = (state.pending.len() - before) as u64;
        state.appended += 1;
        state.segment_bytes += written;
        state.bytes_since_snapshot += written;
        if state.roll.is_none() && state.segment_bytes >= self.segment_limit {
            state.roll = Some(Roll {
                at: state.pending.len(),
                snapshot_covers: None,
            });
        }
        state.appended
    }

    /// Records durable so far (written, with `Durability::None`).
    pub fn durable_records(&self) -> u64 {
        self.state.borrow().durable
    }

    /// Whether [`Journal::close`] has begun: nothing may be appended any more.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Whether enough log has accumulated since the last snapshot that a new one should be taken:
    /// at least a segment, and at least twice the last snapshot, so compaction work stays
    /// proportional to what is appended and disk use proportional to live state.
    pub fn wants_snapshot(&self) -> bool {
        let state = self.state.borrow();
        let threshold = self.segment_limit.max(2 * state.last_snapshot_bytes);
        !state.snapshotting && state.bytes_since_snapshot >= threshold
    }

    /// Starts a snapshot of the state as of everything appended so far: the current segment ends
    /// here, and once it is closed a thread of its own rebuilds the state from the files and
    /// writes the snapshot beside the next segment; older files go once it is durable. The
    /// caller copies nothing.
    pub fn begin_snapshot(&self) {
        let mut state = self.state.borrow_mut();
        state.snapshotting = true;
        state.bytes_since_snapshot = 0;
        let at = state.pending.len();
        let covers_lsn = state.appended;
        state.roll = Some(Roll {
            at,
            snapshot_covers: Some(covers_lsn),
        });
    }

    /// Returns once every event appended before the call is durable (with `Durability::None`, at
    /// once). Concurrent callers share one write and one sync.
    pub async fn commit(self: &Rc<Self>) -> Result<(), JournalError> {
        let (target, flushing) = {
            let state = self.state.borrow();
            if let Some(error) = &state.failed {
                return Err(error.clone());
            }
            if state.durable >= state.appended {
                return Ok(());
            }
            (state.appended, state.flushing)
        };
        if self.durability == Durability::None {
            // A write in progress takes whatever is pending when it finishes its group.
            if !flushing {
                self.write_requested.set(true);
                self.wake_write_behind();
            }
            return Ok(());
        }
        if flushing {
            let (done, wait) = oneshot::channel();
            self.waiters.borrow_mut().push((target, done));
            return wait
                .await
                .unwrap_or_else(|_| Err(JournalError("journal writer stopped".into())));
        }
        self.flush().await
    }

    /// Writes everything pending, group by group, until nothing is left; wakes committers.
    async fn flush(self: &Rc<Self>) -> Result<(), JournalError> {
        self.state.borrow_mut().flushing = true;
        let result = self.flush_groups().await;
        let mut state = self.state.borrow_mut();
        state.flushing = false;
        if let Err(error) = &result {
            tracing::error!(%error, dir = %self.dir.display(), "journal write failed; refusing further changes");
            state.failed = Some(error.clone());
        }
        drop(state);
        self.wake(result.clone());
        result
    }

    async fn flush_groups(self: &Rc<Self>) -> Result<(), JournalError> {
        loop {
            let (bytes, roll, target, records) = {
                let mut state = self.state.borrow_mut();
                if state.pending.is_empty() && state.roll.is_none() {
                    return Ok(());
                }
                let spare = std::mem::take(&mut state.spare);
                let bytes = std::mem::replace(&mut state.pending, spare);
                let roll = state.roll.take();
                if let Some(roll) = &roll {
                    // The new segment starts with what follows the roll point; appends made while
                    // the roll is written keep counting from there.
                    state.segment_bytes = (bytes.len() - roll.at.min(bytes.len())) as u64;
                }
                (bytes, roll, state.appended, state.appended - state.durable)
            };
            let writer = self
                .writer
                .borrow_mut()
                .take()
                .ok_or_else(|| JournalError("journal writer is gone".into()))?;
            let started = std::time::Instant::now();
            let writer = self.write_group(writer, &bytes, roll).await?;
            let mut metrics = self.metrics.borrow_mut();
            metrics
                .sync_latency
                .record(crate::clock::elapsed_nanos(started));
            metrics.group_records.record(records);
            metrics.bytes_written += bytes.len() as u64;
            drop(metrics);
            *self.writer.borrow_mut() = Some(writer);
            let mut state = self.state.borrow_mut();
            state.durable = target;
            if bytes.capacity() <= KEPT_GROUP_BYTES {
                let mut bytes = bytes;
                bytes.clear();
                state.spare = bytes;
            }
            drop(state);
            self.wake_up_to(target);
        }
    }

    /// Writes one group; at a roll, finishes the old segment and continues in the next one.
    async fn write_group(
        self: &Rc<Self>,
        mut writer: DmaStreamWriter,
        bytes: &[u8],
        roll: Option<Roll>,
    ) -> Result<DmaStreamWriter, JournalError> {
        let Some(Roll {
            at,
            snapshot_covers,
        }) = roll
        else {
            writer.write_all(bytes).await?;
            self.persist(&writer).await?;
            return Ok(writer);
        };
        let (old, new) = bytes.split_at(at.min(bytes.len()));
        writer.write_all(old).await?;
        writer.close().await?;
        let old_seq = self.state.borrow().segment_seq;
        sync_file(&self.dir.join(format::segment_name(old_seq))).await?;
        let next_seq = {
            let mut state = self.state.borrow_mut();
            state.segment_seq += 1;
            state.segment_seq
        };
        let mut next = open_segment(&self.dir, next_seq).await?;
        next.write_all(new).await?;
        self.persist(&next).await?;
        if let Some(covers_lsn) = snapshot_covers {
            self.compact(next_seq, covers_lsn);
        }
        Ok(next)
    }

    /// Has snapshot `seq` built from the closed segments before it, off the executor, and
    /// records the outcome when it arrives.
    fn compact(self: &Rc<Self>, seq: u64, covers_lsn: u64) {
        let outcome = Compaction {
            dir: self.dir.clone(),
            seq,
            covers_lsn,
            rebuild: self.rebuild,
        }
        .spawn();
        let journal = Rc::clone(self);
        glommio::spawn_local(async move {
            let result = outcome.await;
            journal.state.borrow_mut().snapshotting = false;
            match result {
                Ok(Ok(compacted)) => {
                    journal.state.borrow_mut().last_snapshot_bytes = compacted.snapshot_bytes;
                    let mut metrics = journal.metrics.borrow_mut();
                    metrics.compaction_latency.record(compacted.elapsed_nanos);
                }
                Ok(Err(error)) => journal.compaction_failed(&error.to_string()),
                Err(_) => journal.compaction_failed("the compaction thread stopped"),
            }
        })
        .detach();
    }

    fn compaction_failed(&self, error: &str) {
        self.metrics.borrow_mut().compaction_failures += 1;
        tracing::warn!(%error, dir = %self.dir.display(), "snapshot failed; segments are kept and it will be retried");
    }

    async fn persist(&self, writer: &DmaStreamWriter) -> Result<(), JournalError> {
        match self.durability {
            Durability::Sync => writer.sync().await.map(|_| ()).map_err(Into::into),
            Durability::None => Ok(()),
        }
    }

    fn wake_up_to(&self, durable: u64) {
        let mut waiters = self.waiters.borrow_mut();
        let (ready, waiting): (Vec<_>, Vec<_>) = waiters
            .drain(..)
            .partition(|(target, _)| *target <= durable);
        *waiters = waiting;
        drop(waiters);
        for (_, done) in ready {
            let _ = done.send(Ok(()));
        }
    }

    fn wake(&self, result: Result<(), JournalError>) {
        let waiters: Vec<_> = self.waiters.borrow_mut().drain(..).collect();
        for (_, done) in waiters {
            let _ = done.send(result.clone());
        }
    }

    /// The journal's group-commit figures so far, for `/metrics`.
    pub fn stats(&self) -> JournalStats {
        let metrics = self.metrics.borrow();
        JournalStats {
            sync_latency: metrics.sync_latency.snapshot(),
            group_records: metrics.group_records.snapshot(),
            bytes_written: metrics.bytes_written,
            compaction_latency: metrics.compaction_latency.snapshot(),
            compaction_failures: metrics.compaction_failures,
            failed: self.is_failed(),
        }
    }

    /// Whether a write has failed; the journal then refuses everything (fail-stop).
    pub fn is_failed(&self) -> bool {
        self.state.borrow().failed.is_some()
    }

    /// Flushes and closes the current segment (clean shutdown).
    pub async fn close(self: &Rc<Self>) -> Result<(), JournalError> {
        self.closing.set(true);
        self.wake_write_behind();
        // With `Durability::None` the write-behind task may hold the writer or have a request
        // to serve: let it finish, then write whatever is left.
        while self.state.borrow().flushing || self.write_requested.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        if self.state.borrow().durable < self.state.borrow().appended {
            self.flush().await?;
        }
        let writer = self.writer.borrow_mut().take();
        if let Some(mut writer) = writer {
            writer.close().await?;
        }
        Ok(())
    }
}

/// Creates segment `seq` in `dir` and writes its header.
async fn open_segment(dir: &Path, seq: u64) -> Result<DmaStreamWriter, JournalError> {
    let file = DmaFile::create(dir.join(format::segment_name(seq))).await?;
    let mut writer = DmaStreamWriterBuilder::new(file)
        .with_buffer_size(WRITE_BUFFER)
        .with_write_behind(WRITE_BEHIND)
        .build();
    let mut header = Vec::with_capacity(format::HEADER_LEN);
    format::encode_header(&mut header, SEGMENT_MAGIC, seq);
    writer.write_all(&header).await?;
    // A segment always starts with a durable header, so an empty file is never mistaken for
    // damage.
    writer.sync().await?;
    sync_dir(dir).await?;
    Ok(writer)
}

/// glommio's close syncs before it truncates the padding off; sync the truncation too.
async fn sync_file(path: &Path) -> Result<(), JournalError> {
    let file = DmaFile::open(path).await?;
    file.fdatasync().await?;
    file.close().await?;
    Ok(())
}

/// Makes file creations and deletions in `dir` durable.
async fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    let directory = glommio::io::Directory::open(dir).await?;
    directory.sync().await?;
    directory.close().await?;
    Ok(())
}

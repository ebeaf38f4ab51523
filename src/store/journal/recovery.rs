//! Recovery at start: read the newest complete generation of every shard's snapshot and
//! segments, rebuild each new shard's book (re-partitioning by the current shard count), make a
//! fresh generation of them, and only then delete the old one. With the shard count unchanged,
//! the fresh generation carries the old files by hard link (see [`super::carry`]); otherwise it
//! starts from new snapshots.
//!
//! Layout of a data directory:
//! ```text
//! DIR/LOCK                          held (flock) by the process that owns DIR
//! DIR/gen-000007/COMPLETE           present once all of the generation's snapshots are synced
//! DIR/gen-000007/shard-000/snap-000000000001.snap
//! DIR/gen-000007/shard-000/seg-000000000001.log ...
//! ```
//! A fresh generation on every start makes a change of `--shards` trivial and never writes into
//! files another generation depends on (carried files are linked, and the one that may have a
//! torn tail is copied); compaction keeps restart time and disk use bounded by live state.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::carry;
use super::format::{self, FormatError};
use super::read::{generations, join, read_newest, GenerationContents, COMPLETE};
use super::writer::JournalStart;
use crate::clock::now_ms;
use crate::feed::outbox::Outbox;
use crate::sale::book::{Book, BookLimits};
use crate::sale::command::Event;
use crate::shard::placement::owner_of;

/// Why recovery refused to start.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Reading or writing the data directory failed.
    #[error("data dir {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data dir {0} is in use by another seckill process (lock file {0}/LOCK); stop it first or use another --data-dir")]
    Locked(PathBuf),
    /// The filesystem cannot do direct I/O.
    #[error("data dir {0} does not support O_DIRECT; the journal needs a disk filesystem such as ext4 or xfs: choose another --data-dir")]
    NoDirectIo(PathBuf),
    /// The data directory is in memory, so nothing would survive a reboot.
    #[error("data dir {0} is on tmpfs (memory): acknowledged orders would not survive a reboot; choose a --data-dir on a disk filesystem such as ext4 or xfs")]
    InMemory(PathBuf),
    /// A journal file is damaged before its tail.
    #[error("journal is corrupt, refusing to start: {0}. Run `seckill journal verify --data-dir DIR` for a full report; restore the data dir from a backup or remove the damaged file deliberately")]
    Corrupt(FormatError),
    /// A record is well formed but contradicts the ledger replayed before it.
    #[error("journal contradicts itself, refusing to start: {0}. Run `seckill journal verify --data-dir DIR`; restore the data dir from a backup")]
    Inconsistent(crate::sale::book::InconsistentEvent),
    /// Files are missing from a shard's sequence.
    #[error("journal is incomplete: {0}")]
    Gap(String),
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
    move |source| RecoveryError::Io {
        path: path.into(),
        source,
    }
}

/// The exclusive hold on a data directory, released when dropped (process exit included).
#[derive(Debug)]
pub struct DirLock {
    _held: nix::fcntl::Flock<File>,
}

/// Takes the data directory's lock, creating the directory if needed.
pub fn lock(data_dir: &Path) -> Result<DirLock, RecoveryError> {
    fs::create_dir_all(data_dir).map_err(io_error(data_dir))?;
    let path = data_dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut held) => {
            // The pid is for operators looking at the file; the lock itself is the flock.
            let _ = held.set_len(0);
            let _ = writeln!(held, "{}", std::process::id());
            Ok(DirLock { _held: held })
        }
        Err(_) => Err(RecoveryError::Locked(data_dir.into())),
    }
}

/// Whether `dir` is on tmpfs, where a journal would not survive a restart (and recent kernels
/// accept O_DIRECT, so opening a file cannot tell).
pub fn on_tmpfs(dir: &Path) -> nix::Result<bool> {
    nix::sys::statfs::statfs(dir).map(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Checks that `data_dir` is on a disk (not tmpfs) and that its files can be opened with
/// O_DIRECT, as glommio's DMA files are. Recent kernels accept O_DIRECT on tmpfs, so the
/// filesystem type is checked as well.
pub fn check_direct_io(data_dir: &Path) -> Result<(), RecoveryError> {
    let in_memory = on_tmpfs(data_dir).map_err(|errno| RecoveryError::Io {
        path: data_dir.into(),
        source: errno.into(),
    })?;
    if in_memory {
        return Err(RecoveryError::InMemory(data_dir.into()));
    }
    let probe = data_dir.join(".direct-io-probe");
    let opened = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(&probe);
    let _ = fs::remove_file(&probe);
    match opened {
        Ok(_) => Ok(()),
        Err(error) if error.raw_os_error() == Some(nix::libc::EINVAL) => {
            Err(RecoveryError::NoDirectIo(data_dir.into()))
        }
        Err(source) => Err(RecoveryError::Io {
            path: probe,
            source,
        }),
    }
}

/// What recovery hands to the shards.
#[derive(Debug)]
pub struct Recovered {
    /// One rebuilt book per shard, indexed by shard id.
    pub books: Vec<Book>,
    /// Each shard's unpublished order feed events.
    pub outboxes: Vec<Outbox>,
    /// Per shard: its journal directory in the new generation, and where its journal continues.
    pub shard_dirs: Vec<(PathBuf, JournalStart)>,
    /// Events replayed, for the startup log.
    pub events_replayed: u64,
    /// Torn tails cut off, by file.
    pub torn_tails: Vec<PathBuf>,
    /// Where the time went, for the startup log.
    pub timings: RecoveryTimings,
}

/// Milliseconds of each phase of a recovery.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryTimings {
    /// Reading and checking the files (a thread per old shard).
    pub read_ms: u64,
    /// Replaying the events into the new shards' books (a thread per new shard).
    pub replay_ms: u64,
    /// Making the new generation: carrying the old files into it, or writing and syncing fresh
    /// snapshots (a thread per new shard), and the directory work around them.
    pub write_ms: u64,
}

/// The shard that owns an event under `shards` shards.
fn owner_of_event(event: &Event, shards: usize) -> usize {
    match event {
        Event::SaleUpserted(sale) => owner_of(&sale.sku, shards),
        Event::OrderCreated { order, .. } => owner_of(&order.sku, shards),
        Event::OrderClosed { order_id, .. } => owner_of(&order_id.sku, shards),
        Event::UserBlocked(user_id, _) => owner_of(user_id, shards),
        Event::FeedPublished { sku, .. } => owner_of(sku, shards),
        Event::FeedUnpublished(event) => owner_of(&event.sku, shards),
        Event::TicketIssued { sku, .. } => owner_of(sku, shards),
    }
}

/// Recovers `data_dir` for `shards` shards and prepares a fresh generation for them. With
/// `feed`, the changes replayed from segments go into each shard's order feed outbox (their
/// events may not have been published); events a snapshot kept unpublished come back either way,
/// so a node restarted without `--events` still carries them until one with it publishes them.
pub fn recover(
    data_dir: &Path,
    shards: usize,
    limits: BookLimits,
    feed: bool,
) -> Result<Recovered, RecoveryError> {
    let started = Instant::now();
    let (number, contents) = read_newest(data_dir)?;
    let read_ms = started.elapsed().as_millis() as u64;
    let replayed: u64 = contents
        .shards
        .iter()
        .map(|log| log.events.len() as u64)
        .sum();
    let rebuilt = rebuild_shards(&contents, shards, limits, feed)?;
    let replay_ms = started.elapsed().as_millis() as u64 - read_ms;
    let next = number.map_or(1, |n| n + 1);
    let generation = data_dir.join(format!("gen-{next:06}"));
    if generation.exists() {
        fs::remove_dir_all(&generation).map_err(io_error(&generation))?;
    }
    let shard_dir = |id: usize| generation.join(format!("shard-{id:03}"));
    // Feed events replayed from segments are derived again only by a start with `--events`; a
    // fresh snapshot keeps them whatever the next start does, so they are never carried.
    let unpublished = rebuilt.iter().any(|(_, outbox)| !outbox.is_empty());
    let carried = number.is_some() && carry::can_carry(&contents, shards) && !(feed && unpublished);
    let shard_dirs: Vec<(PathBuf, JournalStart)> = if carried {
        let mut dirs = Vec::with_capacity(shards);
        for (id, log) in contents.shards.iter().enumerate() {
            let dir = shard_dir(id);
            let start = carry::carry_shard(log, &dir)?;
            dirs.push((dir, start));
        }
        dirs
    } else {
        std::thread::scope(|scope| {
            let writers: Vec<_> = rebuilt
                .iter()
                .enumerate()
                .map(|(id, (book, outbox))| {
                    let dir = shard_dir(id);
                    scope.spawn(move || {
                        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                        let mut snapshot = book.snapshot();
                        snapshot.extend(outbox.snapshot());
                        let size = write_snapshot(&dir, 1, 0, &snapshot)?;
                        Ok((dir, JournalStart::fresh(size)))
                    })
                })
                .collect();
            writers.into_iter().map(join).collect::<Result<_, _>>()
        })?
    };
    drop(contents.shards);
    let marker = generation.join(COMPLETE);
    File::create(&marker)
        .and_then(|file| file.sync_all())
        .map_err(io_error(&marker))?;
    sync_dir(&generation)?;
    sync_dir(data_dir)?;
    // The new generation stands on its own; everything else can go.
    for (_, path, _) in generations(data_dir)? {
        if path != generation {
            fs::remove_dir_all(&path).map_err(io_error(&path))?;
        }
    }
    sync_dir(data_dir)?;
    let (books, outboxes) = rebuilt.into_iter().unzip();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Recovered {
        books,
        outboxes,
        shard_dirs,
        events_replayed: replayed,
        torn_tails: contents.torn_tails,
        timings: RecoveryTimings {
            read_ms,
            replay_ms,
            write_ms: elapsed_ms - read_ms - replay_ms,
        },
    })
}

/// Rebuilds each new shard's book and outbox on a thread of its own. Each takes, from every old
/// shard's events in order, those it owns now: within one old shard events are in order, and all
/// of a SKU's events are in one old shard, so every SKU's history keeps its order.
fn rebuild_shards(
    contents: &GenerationContents,
    shards: usize,
    limits: BookLimits,
    feed: bool,
) -> Result<Vec<(Book, Outbox)>, RecoveryError> {
    let now = now_ms();
    std::thread::scope(|scope| {
        let builders: Vec<_> = (0..shards)
            .map(|shard| {
                scope.spawn(move || {
                    let mut book = Book::new(limits);
                    let mut outbox = Outbox::default();
                    for log in &contents.shards {
                        let owned = |event: &Event| owner_of_event(event, shards) == shard;
                        replay_log(
                            &mut book,
                            &mut outbox,
                            &log.events,
                            log.snapshot_len,
                            feed,
                            now,
                            owned,
                        )?;
                    }
                    Ok((book, outbox))
                })
            })
            .collect();
        builders.into_iter().map(join).collect()
    })
}

/// Replays the events of one shard's log that `owned` picks (its first `snapshot_len` restored
/// from a snapshot, the rest changes from segments) into a book and its outbox, as a restart
/// does.
pub fn replay_log(
    book: &mut Book,
    outbox: &mut Outbox,
    events: &[Event],
    snapshot_len: usize,
    feed: bool,
    now: u64,
    owned: impl Fn(&Event) -> bool,
) -> Result<(), RecoveryError> {
    for (index, event) in events.iter().enumerate() {
        if owned(event) {
            replay_event(book, outbox, event, index < snapshot_len, feed, now)?;
        }
    }
    Ok(())
}

/// Applies one journal event to a shard's book and outbox. With `feed`, a change from a segment
/// (not `restored` from a snapshot) goes into the outbox: it may not have been published. The
/// outbox's own records apply either way.
fn replay_event(
    book: &mut Book,
    outbox: &mut Outbox,
    event: &Event,
    restored: bool,
    feed: bool,
    now: u64,
) -> Result<(), RecoveryError> {
    book.replay(event).map_err(RecoveryError::Inconsistent)?;
    let outbox_record = matches!(
        event,
        Event::FeedPublished { .. } | Event::FeedUnpublished(_)
    );
    if outbox_record || (feed && !restored) {
        outbox.replay(event, book, now);
    }
    Ok(())
}

/// Writes snapshot `seq` of `dir`, covering records up to `covers_lsn`, with plain buffered I/O
/// (recovery runs before the executors start; compaction on a thread of its own): under a
/// temporary name, synced, then renamed into place and the rename synced. Returns its size.
pub fn write_snapshot(
    dir: &Path,
    seq: u64,
    covers_lsn: u64,
    events: &[Event],
) -> Result<u64, RecoveryError> {
    let bytes = format::encode_snapshot(seq, covers_lsn, events);
    let path = dir.join(format::snapshot_name(seq));
    let temporary = path.with_extension("tmp");
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    file.write_all(&bytes).map_err(io_error(&temporary))?;
    file.sync_all().map_err(io_error(&temporary))?;
    fs::rename(&temporary, &path).map_err(io_error(&path))?;
    sync_dir(dir)?;
    Ok(bytes.len() as u64)
}

/// Makes file creations, renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), RecoveryError> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(io_error(dir))
}

//! Recovery at start: read the newest complete generation of every shard's snapshot and
//! segments, rebuild each new shard's book (re-partitioning by the current shard count), write
//! them as the snapshots of a fresh generation, and only then delete the old one.
//!
//! Layout of a data directory:
//! ```text
//! DIR/LOCK                          held (flock) by the process that owns DIR
//! DIR/gen-000007/COMPLETE           present once all of the generation's snapshots are synced
//! DIR/gen-000007/shard-000/snap-000000000001.snap
//! DIR/gen-000007/shard-000/seg-000000000001.log ...
//! ```
//! Starting fresh on every start keeps restart time and disk use bounded by live state, makes a
//! change of `--shards` trivial, and never writes into files another generation depends on.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{self, Entry, FileKind, FormatError, SEGMENT_MAGIC, SNAPSHOT_MAGIC};
use crate::clock::now_ms;
use crate::feed::outbox::Outbox;
use crate::sale::book::{Book, BookLimits};
use crate::sale::command::Event;
use crate::shard::placement::owner_of;

/// Marks a generation whose snapshots are all durable.
const COMPLETE: &str = "COMPLETE";

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

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RecoveryError + '_ {
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

/// Checks that `data_dir` is on a disk (not tmpfs) and that its files can be opened with
/// O_DIRECT, as glommio's DMA files are. Recent kernels accept O_DIRECT on tmpfs, so the
/// filesystem type is checked as well.
pub fn check_direct_io(data_dir: &Path) -> Result<(), RecoveryError> {
    let fs = nix::sys::statfs::statfs(data_dir).map_err(|errno| RecoveryError::Io {
        path: data_dir.into(),
        source: errno.into(),
    })?;
    if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
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
    /// Per shard: its journal directory in the new generation, and its snapshot's size.
    pub shard_dirs: Vec<(PathBuf, u64)>,
    /// Events replayed, for the startup log.
    pub events_replayed: u64,
    /// Torn tails cut off, by file.
    pub torn_tails: Vec<PathBuf>,
}

/// One old shard's journal, read and checked.
#[derive(Debug)]
pub struct ShardLog {
    /// The shard's directory.
    pub dir: PathBuf,
    /// Its events in order: its snapshot's, then its segments'.
    pub events: Vec<Event>,
    /// How many of `events` came from the snapshot (restored state rather than changes, which
    /// the order feed must not report again).
    pub snapshot_len: usize,
}

/// What one generation holds, read and checked but not yet applied.
#[derive(Debug, Default)]
pub struct GenerationContents {
    /// Each old shard's events.
    pub shards: Vec<ShardLog>,
    /// Files whose torn tail was ignored.
    pub torn_tails: Vec<PathBuf>,
    /// Files read.
    pub files: usize,
}

fn generation_number(name: &str) -> Option<u64> {
    name.strip_prefix("gen-")?.parse().ok()
}

/// Generations in `data_dir`, newest first, each with whether it is complete.
fn generations(data_dir: &Path) -> Result<Vec<(u64, PathBuf, bool)>, RecoveryError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(data_dir).map_err(io_error(data_dir))? {
        let entry = entry.map_err(io_error(data_dir))?;
        let name = entry.file_name();
        if let Some(number) = name.to_str().and_then(generation_number) {
            let path = entry.path();
            let complete = path.join(COMPLETE).exists();
            found.push((number, path, complete));
        }
    }
    found.sort_by_key(|(number, _, _)| std::cmp::Reverse(*number));
    Ok(found)
}

/// Reads the newest complete generation (empty if there is none).
pub fn read_newest(data_dir: &Path) -> Result<(Option<u64>, GenerationContents), RecoveryError> {
    let newest = generations(data_dir)?
        .into_iter()
        .find(|(_, _, complete)| *complete);
    let Some((number, path, _)) = newest else {
        return Ok((None, GenerationContents::default()));
    };
    Ok((Some(number), read_generation(&path)?))
}

/// Reads every shard of one generation.
pub fn read_generation(generation: &Path) -> Result<GenerationContents, RecoveryError> {
    let mut contents = GenerationContents::default();
    let mut shard_dirs: Vec<PathBuf> = fs::read_dir(generation)
        .map_err(io_error(generation))?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("shard-"))
        .map(|entry| entry.path())
        .collect();
    shard_dirs.sort();
    for dir in shard_dirs {
        let read = read_shard(&dir, Segments::All, &mut contents)?;
        contents.shards.push(ShardLog {
            dir,
            events: read.events,
            snapshot_len: read.snapshot_len,
        });
    }
    Ok(contents)
}

/// Which of a shard's segments to read after its snapshot.
#[derive(Debug, Clone, Copy)]
pub enum Segments {
    /// All of them, at start: the newest may end in a torn tail (a crash mid-write).
    All,
    /// Those numbered below this one: closed and synced, so none may be torn (compaction, while
    /// the shard writes this one).
    Before(u64),
}

/// One shard directory's newest snapshot and the segments after it, read and checked.
#[derive(Debug)]
pub struct ShardRead {
    /// The snapshot's events, then the segments'.
    pub events: Vec<Event>,
    /// How many of `events` came from the snapshot.
    pub snapshot_len: usize,
    /// The LSN of the last record read: what a snapshot of these events covers.
    pub last_lsn: u64,
}

/// Reads one shard's newest complete snapshot and the chosen segments after it.
pub fn read_shard(
    dir: &Path,
    segments_wanted: Segments,
    contents: &mut GenerationContents,
) -> Result<ShardRead, RecoveryError> {
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        match entry.file_name().to_str().and_then(format::parse_name) {
            Some((FileKind::Snapshot, seq)) => snapshots.push((seq, entry.path())),
            Some((FileKind::Segment, seq)) => segments.push((seq, entry.path())),
            None => {}
        }
    }
    snapshots.sort();
    segments.sort();
    // The newest complete snapshot. A snapshot is written under a temporary name and renamed
    // only once synced, so an incomplete one under its final name is damage, not a crash.
    let Some((snapshot_seq, path)) = snapshots.pop() else {
        return Err(RecoveryError::Gap(format!(
            "{}: no snapshot; every shard directory starts with one",
            dir.display()
        )));
    };
    let file =
        format::read_file(&path, SNAPSHOT_MAGIC, false, 1).map_err(RecoveryError::Corrupt)?;
    contents.files += 1;
    let mut events = Vec::with_capacity(file.entries.len());
    let mut covered = None;
    for entry in file.entries {
        match entry {
            Entry::Event(event) => events.push(event),
            Entry::EventV1(old) => events.push(old.into()),
            Entry::SnapshotEnd {
                events: count,
                covers_lsn,
            } if count as usize == events.len() => {
                covered = Some(covers_lsn);
            }
            Entry::SnapshotEnd { .. } => {}
        }
    }
    let Some(covers_lsn) = covered else {
        return Err(RecoveryError::Corrupt(FormatError::Corrupt {
            path,
            offset: file.valid_len,
            reason: "the snapshot does not end with a valid end record".into(),
        }));
    };
    let snapshot_len = events.len();
    // Segments from the snapshot on, numbered without gaps, each continuing the LSN sequence.
    let live: Vec<&(u64, PathBuf)> = segments
        .iter()
        .filter(|(seq, _)| *seq >= snapshot_seq)
        .filter(|(seq, _)| match segments_wanted {
            Segments::All => true,
            Segments::Before(end) => *seq < end,
        })
        .collect();
    let mut next_lsn = covers_lsn + 1;
    for (index, (seq, path)) in live.iter().enumerate() {
        let expected = snapshot_seq + index as u64;
        if *seq != expected {
            return Err(RecoveryError::Gap(format!(
                "{}: segment {expected} is missing before {}",
                dir.display(),
                path.display()
            )));
        }
        let newest = index + 1 == live.len() && matches!(segments_wanted, Segments::All);
        let file = format::read_file(path, SEGMENT_MAGIC, newest, next_lsn)
            .map_err(RecoveryError::Corrupt)?;
        contents.files += 1;
        if file.torn_tail {
            contents.torn_tails.push(path.clone());
        }
        next_lsn = file.last_lsn + 1;
        events.extend(file.entries.into_iter().filter_map(|entry| match entry {
            Entry::Event(event) => Some(event),
            Entry::EventV1(old) => Some(old.into()),
            Entry::SnapshotEnd { .. } => None,
        }));
    }
    Ok(ShardRead {
        events,
        snapshot_len,
        last_lsn: next_lsn - 1,
    })
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
    let (number, contents) = read_newest(data_dir)?;
    let mut books: Vec<Book> = (0..shards).map(|_| Book::new(limits)).collect();
    let mut outboxes: Vec<Outbox> = (0..shards).map(|_| Outbox::default()).collect();
    let mut replayed = 0u64;
    let now = now_ms();
    // Within one old shard, events are in order, and all of a SKU's events are in one old shard,
    // so routing each stream to the new owners keeps every SKU's history in order.
    for log in &contents.shards {
        for (index, event) in log.events.iter().enumerate() {
            let owner = owner_of_event(event, shards);
            let restored = index < log.snapshot_len;
            replay_event(
                &mut books[owner],
                &mut outboxes[owner],
                event,
                restored,
                feed,
                now,
            )?;
            replayed += 1;
        }
    }
    let next = number.map_or(1, |n| n + 1);
    let generation = data_dir.join(format!("gen-{next:06}"));
    if generation.exists() {
        fs::remove_dir_all(&generation).map_err(io_error(&generation))?;
    }
    let mut shard_dirs = Vec::with_capacity(shards);
    for (id, (book, outbox)) in books.iter().zip(&outboxes).enumerate() {
        let dir = generation.join(format!("shard-{id:03}"));
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut snapshot = book.snapshot();
        snapshot.extend(outbox.snapshot());
        let size = write_initial_snapshot(&dir, &snapshot)?;
        shard_dirs.push((dir, size));
    }
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
    Ok(Recovered {
        books,
        outboxes,
        shard_dirs,
        events_replayed: replayed,
        torn_tails: contents.torn_tails,
    })
}

/// Applies one journal event to a shard's book and outbox, as a restart does. With `feed`, a
/// change from a segment (not `restored` from a snapshot) goes into the outbox: it may not have
/// been published. The outbox's own records apply either way.
pub fn replay_event(
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

/// Writes snapshot 1 of a new generation's shard.
fn write_initial_snapshot(dir: &Path, events: &[Event]) -> Result<u64, RecoveryError> {
    write_snapshot(dir, 1, 0, events)
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

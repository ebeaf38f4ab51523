//! Reading a data directory's journal: the newest complete generation, each shard's newest
//! snapshot and the segments after it, checked record by record (LSNs continue without gaps, only
//! the newest segment may end in a torn tail). Recovery and compaction both start here.

use std::fs;
use std::path::{Path, PathBuf};

use super::format::{self, Entry, FileKind, FormatError, SEGMENT_MAGIC, SNAPSHOT_MAGIC};
use super::recovery::RecoveryError;
use crate::sale::command::Event;

/// Marks a generation whose snapshots are all durable.
pub(super) const COMPLETE: &str = "COMPLETE";

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
    /// The LSN of its last record.
    pub last_lsn: u64,
    /// The files its events came from.
    pub files: ShardFiles,
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
pub(super) fn generations(data_dir: &Path) -> Result<Vec<(u64, PathBuf, bool)>, RecoveryError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(data_dir).map_err(super::recovery::io_error(data_dir))? {
        let entry = entry.map_err(super::recovery::io_error(data_dir))?;
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

/// Reads every shard of one generation, each on a thread of its own: decoding is most of a
/// restart, and nothing else runs yet.
pub fn read_generation(generation: &Path) -> Result<GenerationContents, RecoveryError> {
    let mut shard_dirs: Vec<PathBuf> = fs::read_dir(generation)
        .map_err(super::recovery::io_error(generation))?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("shard-"))
        .map(|entry| entry.path())
        .collect();
    shard_dirs.sort();
    let reads: Vec<Result<(ShardRead, GenerationContents), RecoveryError>> =
        std::thread::scope(|scope| {
            let readers: Vec<_> = shard_dirs
                .iter()
                .map(|dir| {
                    scope.spawn(move || {
                        let mut counts = GenerationContents::default();
                        read_shard(dir, Segments::All, &mut counts).map(|read| (read, counts))
                    })
                })
                .collect();
            readers.into_iter().map(join).collect()
        });
    let mut contents = GenerationContents::default();
    for (dir, read) in shard_dirs.into_iter().zip(reads) {
        let (read, counts) = read?;
        contents.files += counts.files;
        contents.torn_tails.extend(counts.torn_tails);
        contents.shards.push(ShardLog {
            dir,
            events: read.events,
            snapshot_len: read.snapshot_len,
            last_lsn: read.last_lsn,
            files: read.files,
        });
    }
    Ok(contents)
}

/// A recovery thread's result; a thread that panicked (a bug) fails recovery instead of
/// starting on part of the state.
pub(super) fn join<T>(
    handle: std::thread::ScopedJoinHandle<'_, Result<T, RecoveryError>>,
) -> Result<T, RecoveryError> {
    handle
        .join()
        .unwrap_or_else(|_| Err(RecoveryError::Gap("a recovery thread panicked".into())))
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
    /// The files the events came from.
    pub files: ShardFiles,
}

/// The files of a shard's state: its newest snapshot and the segments after it.
#[derive(Debug, Clone, Default)]
pub struct ShardFiles {
    /// The snapshot's number, path and size.
    pub snapshot: (u64, PathBuf, u64),
    /// The segments after it, in order: number, path, and where their valid records end (short
    /// of the file's end only for the newest, after a crash).
    pub segments: Vec<(u64, PathBuf, u64)>,
}

/// Reads one shard's newest complete snapshot and the chosen segments after it.
pub fn read_shard(
    dir: &Path,
    segments_wanted: Segments,
    contents: &mut GenerationContents,
) -> Result<ShardRead, RecoveryError> {
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(super::recovery::io_error(dir))? {
        let entry = entry.map_err(super::recovery::io_error(dir))?;
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
    let mut files = ShardFiles {
        snapshot: (snapshot_seq, path.clone(), file.valid_len),
        segments: Vec::new(),
    };
    let mut events = Vec::with_capacity(file.entries.len());
    let mut covered = None;
    for entry in file.entries {
        match entry {
            Entry::Event(event) => events.push(event),
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
        files.segments.push((*seq, (*path).clone(), file.valid_len));
        events.extend(file.entries.into_iter().filter_map(|entry| match entry {
            Entry::Event(event) => Some(event),
            Entry::SnapshotEnd { .. } => None,
        }));
    }
    Ok(ShardRead {
        events,
        snapshot_len,
        last_lsn: next_lsn - 1,
        files,
    })
}

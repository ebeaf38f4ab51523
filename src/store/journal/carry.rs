//! Carrying a shard's files into a new generation unchanged. When a restart keeps the shard
//! count, every shard owns what it owned before, so its newest snapshot and the segments after
//! it already describe its state: hard links move them into the new generation (copies, on a
//! filesystem that cannot link), and only the newest segment's valid records are copied (its torn tail, if a crash left one, must not be
//! read as damage once it is no longer the newest). Writing a fresh snapshot of every order was
//! most of a restart; compaction now folds the carried segments in the background.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use super::format;
use super::read::{GenerationContents, ShardLog};
use super::recovery::{io_error, RecoveryError};
use super::writer::JournalStart;

/// Most segments a shard may carry. Each start adds one, so past this (a crash loop, or many
/// restarts of an idle node) recovery writes a fresh snapshot instead, and files cannot pile up.
const MAX_CARRIED_SEGMENTS: usize = 64;

/// Whether the old generation's files can be carried for `shards` shards: the count is the same
/// (so no SKU changes owner) and no shard carries too many segments.
pub fn can_carry(contents: &GenerationContents, shards: usize) -> bool {
    contents.shards.len() == shards
        && contents
            .shards
            .iter()
            .all(|log| log.files.segments.len() < MAX_CARRIED_SEGMENTS)
}

/// Carries `log`'s files into the new shard directory `dir`, synced, and says where its journal
/// continues.
pub fn carry_shard(log: &ShardLog, dir: &Path) -> Result<JournalStart, RecoveryError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let (snapshot_seq, snapshot_path, snapshot_bytes) = &log.files.snapshot;
    link(
        snapshot_path,
        &dir.join(format::snapshot_name(*snapshot_seq)),
    )?;
    let mut log_bytes = 0;
    let newest = log.files.segments.len().checked_sub(1);
    for (index, (seq, path, valid_len)) in log.files.segments.iter().enumerate() {
        let target = dir.join(format::segment_name(*seq));
        if Some(index) == newest {
            copy_prefix(path, &target, *valid_len)?;
        } else {
            link(path, &target)?;
        }
        log_bytes += valid_len;
    }
    super::recovery::sync_dir(dir)?;
    let first_seq = log
        .files
        .segments
        .last()
        .map_or(*snapshot_seq, |(seq, _, _)| seq + 1);
    Ok(JournalStart {
        first_seq,
        records: log.last_lsn,
        snapshot_bytes: *snapshot_bytes,
        log_bytes,
    })
}

/// Hard-links `from` as `to`; where the filesystem cannot link (it refuses with EPERM or
/// ENOTSUP, or the link count is full), copies it instead.
fn link(from: &Path, to: &Path) -> Result<(), RecoveryError> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(error) if cannot_link(&error) => {
            let len = fs::metadata(from).map_err(io_error(from))?.len();
            copy_prefix(from, to, len)
        }
        Err(error) => Err(io_error(to)(error)),
    }
}

fn cannot_link(error: &io::Error) -> bool {
    use nix::libc::{EMLINK, ENOTSUP, EPERM};
    matches!(error.raw_os_error(), Some(EPERM | ENOTSUP | EMLINK))
}

/// Copies the first `len` bytes of `from` to a new file `to`, synced.
fn copy_prefix(from: &Path, to: &Path, len: u64) -> Result<(), RecoveryError> {
    let source = File::open(from).map_err(io_error(from))?;
    let mut target = File::create(to).map_err(io_error(to))?;
    let copied = io::copy(&mut source.take(len), &mut target).map_err(io_error(to))?;
    if copied != len {
        return Err(RecoveryError::Io {
            path: from.into(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{copied} of {len} bytes could be read"),
            ),
        });
    }
    target.flush().map_err(io_error(to))?;
    target.sync_all().map_err(io_error(to))
}

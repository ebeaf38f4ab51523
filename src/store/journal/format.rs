//! On-disk format of the journal.
//!
//! A file (segment or snapshot) starts with a 16-byte header: 4 magic bytes, the format version
//! (u32 LE) and the file's sequence number (u64 LE). Records follow, each
//! `[len: u32 LE][crc32c(lsn ++ payload): u32 LE][lsn: u64 LE][payload]`: the payload is a
//! postcard-encoded [`Entry`], and the log sequence number (LSN) goes up by one per record.
//!
//! After a crash a segment can end in anything the DMA writer padded its last block with, and
//! glommio pads with whatever its recycled buffer held: often older, checksum-valid records. The
//! LSN tells them apart. Reading stops at the first record that is damaged or not the next LSN,
//! then scans the rest of the file for a valid record with a *newer* LSN. None means a torn tail
//! (cut off); one means damage in the middle, and reading fails with the file and offset.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sale::command::Event;

/// Magic bytes of a segment.
pub const SEGMENT_MAGIC: &[u8; 4] = b"SKLG";
/// Magic bytes of a snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 4] = b"SKSN";
/// Version of this format, written into every header. Version 3 added prices and payment
/// references; version 4 the order feed's outbox records ([`Event::FeedPublished`],
/// [`Event::FeedUnpublished`]) at the end of [`Event`]; version 5 a sale's proof-of-work bits.
/// Files of versions 2 to 4 are still read: their records decode as
/// [`super::legacy::EntryV4`] and are upgraded. An older build refuses a newer file by its
/// header instead of misreading it.
pub const FORMAT_VERSION: u32 = 5;
/// Oldest version this build still reads.
const OLDEST_READABLE_VERSION: u32 = 2;
/// Bytes in a file header.
pub const HEADER_LEN: usize = 16;
/// Bytes in a record header: length, checksum, LSN.
const RECORD_HEADER_LEN: usize = 16;
/// Largest payload a record may claim; anything larger is damage, not data.
const MAX_PAYLOAD: usize = 16 << 20;
/// Fewest bytes a record takes: its header and a payload of at least one byte.
const MIN_RECORD_LEN: usize = RECORD_HEADER_LEN + 1;
/// Bytes the search for newer records after damage may checksum, per byte of the file (plus
/// [`SCAN_BUDGET_BASE`]). Each candidate costs a checksum over the length it claims, so without a
/// bound, a damaged region whose every offset claims megabytes takes quadratic time: hours for a
/// 64 MiB segment.
const SCAN_BUDGET_PER_BYTE: usize = 8;
/// See [`SCAN_BUDGET_PER_BYTE`].
const SCAN_BUDGET_BASE: usize = 1 << 20;

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// Last record of a complete snapshot: how many events precede it, and the last journal LSN
    /// the snapshot covers (the next segment continues at `covers_lsn + 1`).
    SnapshotEnd {
        /// Events in the snapshot.
        events: u64,
        /// Last LSN of the log folded into this snapshot.
        covers_lsn: u64,
    },
    /// A state change.
    Event(Event),
}

/// Decodes a record's payload as a file of `version` wrote it, upgraded to the current shape.
fn decode_entry(version: u32, payload: &[u8]) -> Result<Entry, postcard::Error> {
    if version < FORMAT_VERSION {
        return postcard::from_bytes::<super::legacy::EntryV4>(payload).map(Entry::from);
    }
    postcard::from_bytes(payload)
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be read at all.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Damage before the tail: acknowledged data would be lost by skipping it.
    #[error("{path}: corrupt record at offset {offset}: {reason}")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The records of one file.
#[derive(Debug)]
pub struct FileContents {
    /// Sequence number from the header.
    pub seq: u64,
    /// Decoded entries, in order.
    pub entries: Vec<Entry>,
    /// Where valid data ends (the offset a torn tail was cut at, or the end of the records).
    pub valid_len: u64,
    /// Whether a torn record was found (and ignored) at `valid_len`.
    pub torn_tail: bool,
    /// LSN of the last record read (`first_lsn - 1` when there was none).
    pub last_lsn: u64,
}

/// Appends a file header to `out`.
pub fn encode_header(out: &mut Vec<u8>, magic: &[u8; 4], seq: u64) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
}

/// Appends record number `lsn` to `out`.
pub fn encode_record(out: &mut Vec<u8>, lsn: u64, entry: &impl Serialize) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&lsn.to_le_bytes());
    // Writing into a Vec cannot fail; an encoding error would be a bug in the types.
    if postcard::to_io(entry, &mut *out).is_err() {
        out.truncate(start);
        return;
    }
    let payload_len = out.len() - start - RECORD_HEADER_LEN;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes a complete snapshot file: header, one record per event, and the closing
/// [`Entry::SnapshotEnd`] that marks it complete.
pub fn encode_snapshot(seq: u64, covers_lsn: u64, events: &[Event]) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_header(&mut bytes, SNAPSHOT_MAGIC, seq);
    for (index, event) in events.iter().enumerate() {
        encode_record(&mut bytes, index as u64 + 1, &Entry::Event(event.clone()));
    }
    let end = Entry::SnapshotEnd {
        events: events.len() as u64,
        covers_lsn,
    };
    encode_record(&mut bytes, events.len() as u64 + 1, &end);
    bytes
}

/// Reads and checks a whole file. `tail_may_tear` is true for the one file a crash could have
/// been writing (a shard's newest segment).
///
/// `first_lsn` is the LSN the first record must carry: anything older at the start is stale
/// padding from recycled DMA buffers (the file holds nothing yet), anything newer is a gap.
pub fn read_file(
    path: &Path,
    magic: &[u8; 4],
    tail_may_tear: bool,
    first_lsn: u64,
) -> Result<FileContents, FormatError> {
    let bytes = std::fs::read(path).map_err(|source| FormatError::Io {
        path: path.into(),
        source,
    })?;
    parse(path, &bytes, magic, tail_may_tear, first_lsn)
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        path: path.into(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// Parses file contents; see [`read_file`].
pub fn parse(
    path: &Path,
    bytes: &[u8],
    magic: &[u8; 4],
    tail_may_tear: bool,
    first_lsn: u64,
) -> Result<FileContents, FormatError> {
    if tail_may_tear && bytes.len() <= HEADER_LEN && bytes.iter().all(|b| *b == 0) {
        // Created but cut off before its header reached the disk.
        return Ok(FileContents {
            seq: 0,
            entries: Vec::new(),
            valid_len: 0,
            torn_tail: !bytes.is_empty(),
            last_lsn: first_lsn.saturating_sub(1),
        });
    }
    if bytes.len() < HEADER_LEN || &bytes[..4] != magic {
        return Err(corrupt(path, 0, "missing or wrong file header"));
    }
    let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(corrupt(
            path,
            4,
            format!("format version {version}, this build reads {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}"),
        ));
    }
    let mut seq_bytes = [0u8; 8];
    seq_bytes.copy_from_slice(&bytes[8..16]);
    let seq = u64::from_le_bytes(seq_bytes);
    let mut entries = Vec::new();
    let mut offset = HEADER_LEN;
    // The LSN of the last record accepted (or the one before the first expected).
    let mut last_lsn = first_lsn.saturating_sub(1);
    while offset < bytes.len() {
        let failure = match record_at(bytes, offset) {
            RecordAt::Valid(lsn, payload, next) => match lsn {
                lsn if lsn <= last_lsn => Some("a stale record (older sequence number)"),
                lsn if lsn != last_lsn + 1 => {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("sequence jumps from {last_lsn} to {lsn}: records are missing"),
                    ))
                }
                _ => {
                    let entry = decode_entry(version, payload).map_err(|error| {
                        corrupt(path, offset, format!("undecodable record: {error}"))
                    })?;
                    entries.push(entry);
                    last_lsn = lsn;
                    offset = next;
                    None
                }
            },
            RecordAt::Invalid(reason) => Some(reason),
        };
        let Some(reason) = failure else {
            continue;
        };
        match next_newer_record(bytes, offset, last_lsn) {
            Scan::Found(later) => {
                return Err(corrupt(
                    path,
                    offset,
                    format!("{reason}, and newer records follow at offset {later}"),
                ))
            }
            Scan::TooCostly => {
                return Err(corrupt(
                    path,
                    offset,
                    format!(
                        "{reason}, followed by too many damaged records to tell a torn tail \
                         from lost data"
                    ),
                ))
            }
            Scan::None => {}
        }
        let torn = bytes[offset..].iter().any(|b| *b != 0);
        if torn && !tail_may_tear {
            return Err(corrupt(
                path,
                offset,
                format!("{reason} in a file that was complete"),
            ));
        }
        return Ok(FileContents {
            seq,
            entries,
            valid_len: offset as u64,
            torn_tail: torn,
            last_lsn,
        });
    }
    Ok(FileContents {
        seq,
        entries,
        valid_len: offset as u64,
        torn_tail: false,
        last_lsn,
    })
}

enum RecordAt<'a> {
    /// LSN, payload, offset of the next record.
    Valid(u64, &'a [u8], usize),
    Invalid(&'static str),
}

fn record_at(bytes: &[u8], offset: usize) -> RecordAt<'_> {
    let Some(header) = bytes.get(offset..offset + RECORD_HEADER_LEN) else {
        return RecordAt::Invalid("truncated record header");
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&header[8..16]);
    if len == 0 || len > MAX_PAYLOAD {
        return RecordAt::Invalid("implausible record length");
    }
    let start = offset + RECORD_HEADER_LEN;
    let Some(payload) = bytes.get(start..start + len) else {
        return RecordAt::Invalid("record runs past the end of the file");
    };
    if crc32c::crc32c(&bytes[offset + 8..start + len]) != crc {
        return RecordAt::Invalid("checksum mismatch");
    }
    RecordAt::Valid(u64::from_le_bytes(lsn), payload, start + len)
}

/// What the search for newer records after damage found.
enum Scan {
    /// A valid record newer than the damage, at this offset.
    Found(usize),
    /// Nothing newer: the damage is a torn tail.
    None,
    /// Too many plausible candidates to check them all in bounded time.
    TooCostly,
}

/// Looks for a valid record after the damaged one at `damaged` that continues the log past
/// `last_lsn`. Records are contiguous and each takes [`MIN_RECORD_LEN`] bytes or more, so one at
/// offset `p` can carry at most LSN `last_lsn + 1 + (p - damaged) / MIN_RECORD_LEN`; candidates
/// outside that window (random bytes, almost always) are skipped before their checksum is
/// computed, and the checksumming is bounded by [`SCAN_BUDGET_PER_BYTE`].
fn next_newer_record(bytes: &[u8], damaged: usize, last_lsn: u64) -> Scan {
    let mut budget =
        SCAN_BUDGET_BASE.saturating_add(bytes.len().saturating_mul(SCAN_BUDGET_PER_BYTE));
    for offset in damaged + 1..bytes.len().saturating_sub(RECORD_HEADER_LEN) {
        let Some(header) = bytes.get(offset..offset + RECORD_HEADER_LEN) else {
            break;
        };
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&header[8..16]);
        let lsn = u64::from_le_bytes(lsn);
        let reachable = ((offset - damaged) / MIN_RECORD_LEN) as u64;
        if lsn <= last_lsn || lsn - last_lsn - 1 > reachable {
            continue;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 || len > MAX_PAYLOAD || offset + RECORD_HEADER_LEN + len > bytes.len() {
            continue;
        }
        let Some(left) = budget.checked_sub(len) else {
            return Scan::TooCostly;
        };
        budget = left;
        if let RecordAt::Valid(..) = record_at(bytes, offset) {
            return Scan::Found(offset);
        }
    }
    Scan::None
}

/// File name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("seg-{seq:012}.log")
}

/// File name of snapshot `seq` (the state before segment `seq`).
pub fn snapshot_name(seq: u64) -> String {
    format!("snap-{seq:012}.snap")
}

/// Parses a file name made by [`segment_name`] or [`snapshot_name`].
pub fn parse_name(name: &str) -> Option<(FileKind, u64)> {
    if let Some(seq) = name
        .strip_prefix("seg-")
        .and_then(|rest| rest.strip_suffix(".log"))
    {
        return seq.parse().ok().map(|seq| (FileKind::Segment, seq));
    }
    let seq = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    seq.parse().ok().map(|seq| (FileKind::Snapshot, seq))
}

/// The two kinds of journal file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Appended events.
    Segment,
    /// A complete image of a shard's state.
    Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(events: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_header(&mut out, SEGMENT_MAGIC, 7);
        for n in 0..events {
            let event = Event::UserBlocked(format!("user-{n}").into(), true);
            encode_record(&mut out, 100 + n as u64, &Entry::Event(event));
        }
        out
    }

    #[test]
    fn stale_records_after_the_tail_are_padding_not_damage() {
        // glommio pads a synced partial block with recycled buffer memory: here, a copy of
        // earlier records after a torn one.
        let path = Path::new("seg");
        let bytes = file(6);
        let older = file(3);
        let mut crashed = bytes[..bytes.len() - 5].to_vec();
        crashed.extend_from_slice(&older[HEADER_LEN..]);
        let read = parse(path, &crashed, SEGMENT_MAGIC, true, 100).unwrap();
        assert_eq!((read.entries.len(), read.torn_tail), (5, true));
        let mut clean_then_stale = bytes.clone();
        clean_then_stale.extend_from_slice(&older[HEADER_LEN..]);
        let read = parse(path, &clean_then_stale, SEGMENT_MAGIC, true, 100).unwrap();
        assert_eq!(
            read.entries.len(),
            6,
            "a stale copy right after the end is not data"
        );
    }

    #[test]
    fn round_trips_and_cuts_torn_tails() {
        let path = Path::new("seg");
        let bytes = file(5);
        let read = parse(path, &bytes, SEGMENT_MAGIC, true, 100).unwrap();
        assert_eq!(
            (read.seq, read.entries.len(), read.torn_tail),
            (7, 5, false)
        );
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 3000, 0);
        let read = parse(path, &padded, SEGMENT_MAGIC, true, 100).unwrap();
        assert_eq!((read.entries.len(), read.torn_tail), (5, false));
        let torn = &bytes[..bytes.len() - 3];
        let read = parse(path, torn, SEGMENT_MAGIC, true, 100).unwrap();
        assert_eq!((read.entries.len(), read.torn_tail), (4, true));
        let gap = parse(path, &bytes, SEGMENT_MAGIC, true, 99);
        assert!(
            gap.is_err(),
            "a segment must start where the previous one ended"
        );
        let stale = parse(path, &bytes, SEGMENT_MAGIC, true, 200).unwrap();
        assert!(
            stale.entries.is_empty(),
            "older records at the start are recycled padding"
        );
    }

    #[test]
    fn damage_before_the_tail_is_reported_with_its_offset() {
        let path = Path::new("seg");
        let mut bytes = file(5);
        let middle = HEADER_LEN + 2 * (bytes.len() - HEADER_LEN) / 5 + 10;
        bytes[middle] ^= 0x40;
        match parse(path, &bytes, SEGMENT_MAGIC, true, 100) {
            Err(FormatError::Corrupt { offset, .. }) => assert!(offset as usize <= middle),
            other => panic!("expected corruption, got {other:?}"),
        }
        let mut header = file(1);
        header[0] = b'X';
        assert!(parse(path, &header, SEGMENT_MAGIC, true, 100).is_err());
    }

    /// A damaged region where every 16 bytes look like the next record, each claiming a long
    /// payload: checking them all would checksum `region / 16 * claimed` bytes (hours for a
    /// 64 MiB segment). The search gives up within its budget and reports damage.
    #[test]
    fn a_damaged_region_full_of_long_candidates_is_refused_not_scanned_forever() {
        let path = Path::new("seg");
        let mut bytes = file(1);
        let region = 256 * 1024;
        let claimed = (region / 2) as u32;
        for _ in 0..region / RECORD_HEADER_LEN {
            bytes.extend_from_slice(&claimed.to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
            bytes.extend_from_slice(&101u64.to_le_bytes());
        }
        match parse(path, &bytes, SEGMENT_MAGIC, true, 100) {
            Err(FormatError::Corrupt { reason, .. }) => {
                assert!(reason.contains("too many damaged records"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Random bytes after a torn record are still a torn tail: skipping candidates outside the
    /// LSN window and bounding the search must not change that verdict.
    #[test]
    fn random_bytes_after_a_torn_record_are_a_torn_tail() {
        use rand::{RngCore, SeedableRng};
        let path = Path::new("seg");
        let mut bytes = file(3);
        let mut noise = vec![0u8; 256 * 1024];
        rand::rngs::SmallRng::seed_from_u64(7).fill_bytes(&mut noise);
        bytes.extend_from_slice(&noise);
        let read = parse(path, &bytes, SEGMENT_MAGIC, true, 100).unwrap();
        assert_eq!((read.entries.len(), read.torn_tail), (3, true));
        assert!(parse(path, &bytes, SEGMENT_MAGIC, false, 100).is_err());
    }
}

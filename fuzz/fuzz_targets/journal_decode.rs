//! The journal's record and file decoder (`store::journal::format::parse`) on arbitrary bytes.
//!
//! Input: `[flags: u8][first_lsn: u64 LE][file bytes]`. Flags: bit 0 reads the file as a
//! snapshot (else a segment), bit 1 lets its tail tear (the newest segment), bit 2 recomputes
//! every record's checksum first so mutations reach the payload decoder. Whatever decodes must
//! encode back to the same entries.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use seckill::store::journal::format::{
    encode_header, encode_record, parse, SEGMENT_MAGIC, SNAPSHOT_MAGIC,
};
use seckill_fuzz::fix_checksums;

fuzz_target!(|data: &[u8]| {
    let Some((header, file)) = data.split_at_checked(9) else {
        return;
    };
    let flags = header[0];
    let mut first_lsn = [0u8; 8];
    first_lsn.copy_from_slice(&header[1..9]);
    let first_lsn = u64::from_le_bytes(first_lsn);
    let magic = if flags & 1 == 1 {
        SNAPSHOT_MAGIC
    } else {
        SEGMENT_MAGIC
    };
    let tail_may_tear = flags & 2 == 2;
    let mut file = file.to_vec();
    if flags & 4 == 4 {
        fix_checksums(&mut file);
    }
    let Ok(read) = parse(Path::new("fuzz"), &file, magic, tail_may_tear, first_lsn) else {
        return;
    };
    assert!(read.valid_len as usize <= file.len());
    assert!(
        !read.torn_tail || tail_may_tear,
        "a complete file cannot tear"
    );
    let before_first = first_lsn.saturating_sub(1);
    assert_eq!(read.last_lsn - before_first, read.entries.len() as u64);
    // Encoding what was read and reading it back gives the same entries.
    let mut again = Vec::new();
    encode_header(&mut again, magic, read.seq);
    for (index, entry) in read.entries.iter().enumerate() {
        encode_record(&mut again, before_first + 1 + index as u64, entry);
    }
    match parse(Path::new("again"), &again, magic, false, first_lsn) {
        Ok(reread) => assert_eq!(reread.entries, read.entries),
        // An empty file that was all zeros has no header to write back.
        Err(error) => assert!(read.seq == 0 && read.entries.is_empty(), "{error}"),
    }
});

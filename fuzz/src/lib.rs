//! Helpers shared by the fuzz targets: turning fuzz input into journal files.
//!
//! A CRC-32C over every record stops random mutations at the checksum, so the decoder behind it
//! (postcard, LSN sequencing, snapshot ends, replay) would hardly be reached. Targets therefore
//! let one input bit ask for the checksums to be recomputed before the bytes are decoded.

use std::path::{Component, Path};

use seckill::store::journal::format::HEADER_LEN;

/// Bytes in a record header: length, checksum, LSN (see `seckill::store::journal::format`).
const RECORD_HEADER_LEN: usize = 16;

/// Rewrites the checksum of every record that fits in `file`, walking records by their length
/// fields from the end of the file header, as the decoder does.
pub fn fix_checksums(file: &mut [u8]) {
    let mut offset = HEADER_LEN;
    while let Some(header) = file.get(offset..offset + RECORD_HEADER_LEN) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = offset + RECORD_HEADER_LEN + len;
        if len == 0 || end > file.len() {
            return;
        }
        let crc = crc32c::crc32c(&file[offset + 8..end]);
        file[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
        offset = end;
    }
}

/// A data directory packed into one input: a flags byte, then entries of
/// `[name length: u8][name: relative path][content length: u16 LE][content]`.
/// `fuzz/pack_datadir.py` packs a real data directory this way for the seed corpus.
#[derive(Debug)]
pub struct PackedDir<'a> {
    /// The first byte of the input; targets give its bits meanings.
    pub flags: u8,
    /// Relative paths and contents, in input order.
    pub files: Vec<(&'a str, &'a [u8])>,
}

/// Unpacks `data`; entries with a path that is not a plain relative path are skipped, and a
/// truncated last entry keeps what is there.
pub fn unpack(data: &[u8]) -> PackedDir<'_> {
    let Some((&flags, mut rest)) = data.split_first() else {
        return PackedDir {
            flags: 0,
            files: Vec::new(),
        };
    };
    let mut files = Vec::new();
    while let Some((&name_len, after)) = rest.split_first() {
        let Some((name, after)) = after.split_at_checked(usize::from(name_len)) else {
            break;
        };
        let Some((len, after)) = after.split_at_checked(2) else {
            break;
        };
        let len = usize::from(u16::from_le_bytes([len[0], len[1]])).min(after.len());
        let (content, after) = after.split_at(len);
        rest = after;
        if let Ok(name) = std::str::from_utf8(name) {
            if is_plain_relative(name) {
                files.push((name, content));
            }
        }
    }
    PackedDir { flags, files }
}

/// Whether `name` stays inside the directory it is joined to: relative, no `..`, at most four
/// levels, and only characters a data directory's names use.
fn is_plain_relative(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && path.components().count() <= 4
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacks_and_refuses_escapes() {
        let mut data = vec![7u8];
        for (name, content) in [
            ("gen-000001/COMPLETE", &b""[..]),
            ("../x", b"y"),
            ("a/b", b"cd"),
        ] {
            data.push(name.len() as u8);
            data.extend_from_slice(name.as_bytes());
            data.extend_from_slice(&(content.len() as u16).to_le_bytes());
            data.extend_from_slice(content);
        }
        let packed = unpack(&data);
        assert_eq!(packed.flags, 7);
        assert_eq!(
            packed.files,
            vec![("gen-000001/COMPLETE", &b""[..]), ("a/b", &b"cd"[..])]
        );
    }
}

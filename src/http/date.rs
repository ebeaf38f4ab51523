//! The `Date` header every response carries (RFC 9110, section 6.6.1), so a shopper's page can
//! tell its clock from the server's without an API call.
//!
//! Formatting an HTTP date per response would cost more than the rest of the head, and the
//! header only changes once a second: each shard keeps the last line it wrote and formats a new
//! one when the second changes.

use std::cell::Cell;
use std::time::{Duration, UNIX_EPOCH};

/// `date: ` + an IMF-fixdate (always 29 bytes) + CRLF.
const LINE_LEN: usize = 6 + 29 + 2;

thread_local! {
    /// The second `LINE` was formatted for, and the line.
    static LAST: Cell<(u64, [u8; LINE_LEN])> = const { Cell::new((u64::MAX, [0; LINE_LEN])) };
}

/// Appends the `date` header line for `now_ms` (unix milliseconds) to `out`.
pub fn write_date_header(out: &mut Vec<u8>, now_ms: u64) {
    let second = now_ms / 1000;
    let (cached, mut line) = LAST.get();
    if cached != second {
        let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        line[..6].copy_from_slice(b"date: ");
        // An IMF-fixdate is 29 bytes for every year up to 9999; a longer one is cut, never
        // written past the header.
        let len = text.len().min(29);
        line[6..6 + len].copy_from_slice(&text.as_bytes()[..len]);
        line[6 + len..].fill(b' ');
        line[LINE_LEN - 2..].copy_from_slice(b"\r\n");
        LAST.set((second, line));
    }
    out.extend_from_slice(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_an_imf_fixdate_that_follows_the_second() {
        let mut out = Vec::new();
        write_date_header(&mut out, 784_111_777_000);
        assert_eq!(out, b"date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        out.clear();
        write_date_header(&mut out, 784_111_777_999);
        assert_eq!(out, b"date: Sun, 06 Nov 1994 08:49:37 GMT\r\n");
        out.clear();
        write_date_header(&mut out, 784_111_778_000);
        assert_eq!(out, b"date: Sun, 06 Nov 1994 08:49:38 GMT\r\n");
    }
}

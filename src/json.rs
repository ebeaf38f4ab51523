//! JSON from outside the process (request bodies, values read back from Redis), parsed with
//! `simd-json` only after a linear shape check.
//!
//! simd-json builds values recursively, one stack frame per nesting level: a 20 KB body of
//! brackets overflowed a shard's stack and killed the node. It also reads a number up to the
//! first byte that cannot continue it, so `12<NUL>34` parsed as 12. The check below walks the
//! bytes once, without recursion, and refuses both before the parser sees them: nesting deeper
//! than [`MAX_DEPTH`], and any control byte other than JSON's own whitespace (no valid JSON text
//! has one: inside strings they must be escaped).

use std::cell::RefCell;

use simd_json::{Buffers, Node, OwnedValue, Tape};

/// Deepest nesting accepted. Our documents are flat objects; this leaves room for clients that
/// wrap them, and keeps the parser's recursion far from any stack limit.
pub const MAX_DEPTH: usize = 32;

/// Why a JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A raw control byte, which JSON never allows outside whitespace.
    #[error("control byte 0x{byte:02x} at offset {offset}")]
    ControlByte {
        /// The byte.
        byte: u8,
        /// Where it was.
        offset: usize,
    },
    /// The parser's own complaint.
    #[error("{0}")]
    Syntax(String),
}

/// Checks `bytes` for nesting depth and control bytes in one pass, without recursion.
pub fn check_shape(bytes: &[u8]) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (offset, &byte) in bytes.iter().enumerate() {
        if byte < 0x20 && !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            return Err(JsonError::ControlByte { byte, offset });
        }
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(JsonError::TooDeep);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses `bytes` into a value tree after [`check_shape`].
pub fn parse_value(bytes: &[u8]) -> Result<OwnedValue, JsonError> {
    checked(bytes, simd_json::to_owned_value)
}

/// Largest text [`with_tape`] parses with its thread's reused buffers; a larger one gets buffers
/// of its own, so a shard never keeps more than this much scratch per buffer.
pub const REUSED_UP_TO: usize = 4096;

/// One thread's parse buffers, kept between calls so a small body costs no allocation.
#[derive(Default)]
struct Scratch {
    /// The bytes simd-json parses in place.
    copy: Vec<u8>,
    /// simd-json's own working buffers.
    buffers: Buffers,
    /// The tape's storage, empty between calls.
    tape: Vec<Node<'static>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Parses `bytes` after [`check_shape`] into a tape, which `read` walks without building a value
/// tree. Texts up to [`REUSED_UP_TO`] bytes reuse this thread's buffers: after the first call,
/// parsing allocates nothing. `read` must not parse JSON itself.
pub fn with_tape<R>(
    bytes: &[u8],
    read: impl FnOnce(simd_json::tape::Value<'_, '_>) -> R,
) -> Result<R, JsonError> {
    if bytes.len() > REUSED_UP_TO {
        return checked(bytes, |copy| {
            simd_json::to_tape(copy).map(|tape| read(tape.as_value()))
        });
    }
    check_shape(bytes)?;
    let syntax = |error: simd_json::Error| JsonError::Syntax(error.to_string());
    SCRATCH.with_borrow_mut(|scratch| {
        let mut copy = std::mem::take(&mut scratch.copy);
        copy.clear();
        copy.extend_from_slice(bytes);
        let mut tape = Tape(std::mem::take(&mut scratch.tape)).reset();
        let read = simd_json::fill_tape(&mut copy, &mut scratch.buffers, &mut tape)
            .map(|()| read(tape.as_value()))
            .map_err(syntax);
        scratch.tape = tape.reset().0;
        scratch.copy = copy;
        read
    })
}

/// Deserialises `bytes` into `T` after [`check_shape`].
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    checked(bytes, |copy| simd_json::serde::from_slice(copy))
}

/// Runs a simd-json parser over a copy of `bytes` once they pass [`check_shape`]: simd-json
/// parses in place, so it needs bytes of its own.
fn checked<T>(
    bytes: &[u8],
    parser: impl FnOnce(&mut [u8]) -> simd_json::Result<T>,
) -> Result<T, JsonError> {
    check_shape(bytes)?;
    let mut copy = bytes.to_vec();
    parser(&mut copy).map_err(|error| JsonError::Syntax(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_deep_nesting_without_recursing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse_value(deep.as_bytes()), Err(JsonError::TooDeep));
        let objects = "{\"a\":".repeat(MAX_DEPTH + 1);
        assert_eq!(check_shape(objects.as_bytes()), Err(JsonError::TooDeep));
        let fits = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_value(fits.as_bytes()).is_ok());
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        let text = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert!(parse_value(text.as_bytes()).is_ok());
    }

    #[test]
    fn control_bytes_are_refused_even_inside_numbers() {
        assert!(matches!(
            parse_value(b"{\"quantity\":12\x0034}"),
            Err(JsonError::ControlByte { byte: 0, .. })
        ));
        assert!(parse_value(b"{\"quantity\":\n12\r\n}").is_ok());
    }

    #[test]
    fn agrees_with_serde_json_on_what_is_valid() {
        let cases: &[&[u8]] = &[
            b"{\"quantity\":1}",
            b"{\"quantity\":12 34}",
            b"{\"quantity\":12abc}",
            b"{\"quantity\":1.5e3}",
            b"{\"quantity\":-0}",
            b"{\"quantity\":01}",
            b"{\"a\":\"x\\u0000y\"}",
            b"{\"a\":tru}",
            b"{\"a\":1,}",
            b"[1,2,3]",
            b"{} {}",
        ];
        for case in cases {
            let ours = parse_value(case).is_ok();
            let reference = serde_json::from_slice::<serde_json::Value>(case).is_ok();
            assert_eq!(ours, reference, "{:?}", String::from_utf8_lossy(case));
        }
    }
}

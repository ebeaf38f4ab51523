//! The HTTP/1.1 request parser, fed as a connection's read buffer: requests are parsed one after
//! another out of the same bytes, as a pipelining client would send them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill::http::request::{parse, Parsed, MAX_BODY_BYTES, MAX_HEAD_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match parse(rest) {
            Ok(Parsed::Complete(request, used)) => {
                // A request that used no bytes would make the connection loop spin forever.
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                assert!(request.body.len() <= MAX_BODY_BYTES);
                // The body is the tail of what was used, so the next request starts after it.
                let body_start = request.body.as_ptr() as usize - rest.as_ptr() as usize;
                assert_eq!(body_start + request.body.len(), used);
                assert!(!request.has_length || body_start <= used);
                rest = &rest[used..];
            }
            Ok(Parsed::AwaitingBody(_, total)) => {
                // The head is in and the body is not: the whole request must be longer than
                // what is buffered (else it would be complete) and within the size limits, since
                // the connection reserves exactly `total` bytes for it.
                assert!(total > rest.len(), "awaiting {total} with {} in", rest.len());
                assert!(total <= MAX_HEAD_BYTES + MAX_BODY_BYTES);
                break;
            }
            Ok(Parsed::Partial) | Err(_) => break,
        }
    }
});

//! Response bodies reused per shard thread.
//!
//! Every JSON answer (a purchase, an order, a sale) is serialised into a body that lives only
//! until the connection has copied it into its output buffer. Allocating and freeing one per
//! response was one of a purchase's allocations; a shard now keeps a few spare bodies and
//! serialises into one of them. Bounded in count and in the size of what is kept, so a burst of
//! large listings cannot pin their memory.

use std::cell::RefCell;

/// Spare bodies kept per thread: more than a shard's responses in flight at once need.
const KEPT: usize = 64;
/// Larger bodies (long listings) are freed, not kept.
const KEPT_CAPACITY: usize = 16 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty body to serialise into: a spare one if this thread has one.
pub fn take() -> Vec<u8> {
    SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default()
}

/// Hands a body back once it has been written, for the next response on this thread.
pub fn give_back(mut body: Vec<u8>) {
    if body.capacity() == 0 || body.capacity() > KEPT_CAPACITY {
        return;
    }
    body.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(body);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_reused_up_to_the_bounds() {
        let mut body = take();
        body.extend_from_slice(b"{\"ok\":true}");
        let pointer = body.as_ptr();
        give_back(body);
        let again = take();
        assert!(again.is_empty(), "a reused body comes back empty");
        assert_eq!(again.as_ptr(), pointer, "the same buffer");
        give_back(Vec::with_capacity(KEPT_CAPACITY + 1));
        assert_eq!(take().capacity(), 0, "a large body is not kept");
        for _ in 0..KEPT + 10 {
            give_back(Vec::with_capacity(8));
        }
        assert_eq!(SPARE.with(|spare| spare.borrow().len()), KEPT);
    }
}

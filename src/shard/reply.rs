//! Reply slots for cross-shard calls, kept in a [`sharded_slab::Pool`].
//!
//! Every routed purchase waits for its owner shard's answer. A `oneshot` channel allocates its
//! shared state on the calling core and frees it on whichever core lets go last, so each call
//! paid one `malloc` and, half the time, a free into another thread's arena. A slot of the pool
//! is taken from the calling thread's own shard of the slab and given back to it with an atomic
//! push when the caller is done (sharded-slab's remote free), and a slot given back is reused as
//! it is: after warm-up a call allocates nothing here. Keys carry a generation, so an owner that
//! answers a caller who already gave up finds no slot, never a newer caller's.
//!
//! The hand-off is lock-free: the state is one atomic, the waker an [`AtomicWaker`]. The value
//! sits behind a mutex only so that moving it between threads needs no `unsafe` (a cell with
//! the same protocol measured 2 ns faster, not worth it): the owner releases the mutex before it
//! publishes `READY`, and the caller takes the value only after seeing `READY`, so the mutex is
//! never contended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use sharded_slab::pool::Ref;
use sharded_slab::{Clear, Pool};

/// No answer yet.
const EMPTY: u8 = 0;
/// The owner has put its answer in the slot.
const READY: u8 = 1;
/// The owner let go without answering (it shut down mid-call).
const CLOSED: u8 = 2;

/// One call's meeting point between the caller and the owner.
#[derive(Debug)]
pub struct Slot<T> {
    /// [`EMPTY`], [`READY`] or [`CLOSED`]; written once by the owner's end.
    state: AtomicU8,
    /// The caller's task, woken when the state leaves [`EMPTY`].
    waker: AtomicWaker,
    /// The answer, from the owner's write until the caller takes it.
    value: Mutex<Option<T>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            waker: AtomicWaker::new(),
            value: Mutex::new(None),
        }
    }
}

impl<T> Clear for Slot<T> {
    fn clear(&mut self) {
        *self.state.get_mut() = EMPTY;
        self.waker.take();
        *self
            .value
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

/// The pool one kind of reply lives in; every shard of the process shares it.
pub type Slots<T> = Pool<Slot<T>>;

/// Takes a slot from `pool` for one call: the caller awaits the [`Answer`] and sends the
/// [`ReplyTo`] to the owner. `None` when the pool is full (billions of calls in flight).
pub fn slot<T>(pool: &'static Slots<T>) -> Option<(ReplyTo<T>, Answer<T>)> {
    let slot = pool.create()?.downgrade();
    let key = slot.key();
    Some((
        ReplyTo {
            pool,
            key,
            sent: false,
        },
        Answer { slot, pool },
    ))
}

/// The owner's end of a call: answer with [`ReplyTo::send`].
pub struct ReplyTo<T: 'static> {
    /// Where the slot lives.
    pool: &'static Slots<T>,
    /// The slot, with its generation.
    key: usize,
    /// Whether an answer went out; if not, dropping this end closes the slot.
    sent: bool,
}

impl<T> std::fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyTo").field("key", &self.key).finish()
    }
}

impl<T> ReplyTo<T> {
    /// Hands `value` to the caller, or drops it if the caller has gone (its slot is then
    /// someone else's, or nobody's).
    pub fn send(mut self, value: T) {
        self.sent = true;
        self.finish(Some(value));
    }

    fn finish(&self, value: Option<T>) {
        let Some(slot) = self.pool.get(self.key) else {
            return;
        };
        let state = match value {
            Some(value) => {
                *slot
                    .value
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(value);
                READY
            }
            None => CLOSED,
        };
        slot.state.store(state, Ordering::Release);
        slot.waker.wake();
    }
}

impl<T> Drop for ReplyTo<T> {
    fn drop(&mut self) {
        if !self.sent {
            self.finish(None);
        }
    }
}

/// The caller's end of a call: resolves to the answer, or `None` if the owner let go without
/// one. Dropping it gives the slot back.
pub struct Answer<T: 'static> {
    /// The slot, held for the whole call so polls need no lookup.
    slot: Ref<'static, Slot<T>>,
    /// Where the slot goes back to.
    pool: &'static Slots<T>,
}

impl<T> Future for Answer<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let slot = &*self.slot;
        let take = |slot: &Slot<T>| match slot.state.load(Ordering::Acquire) {
            READY => Some(
                slot.value
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take(),
            ),
            CLOSED => Some(None),
            _ => None,
        };
        if let Some(answer) = take(slot) {
            return Poll::Ready(answer);
        }
        slot.waker.register(cx.waker());
        // The owner may have answered between the first look and the registration.
        match take(slot) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for Answer<T> {
    fn drop(&mut self) {
        // Done once the last reference (this one, or the owner's while it answers) goes.
        self.pool.clear(self.slot.key());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    static POOL: LazyLock<Slots<String>> = LazyLock::new(Pool::new);

    #[test]
    fn an_answer_sent_from_another_thread_arrives() {
        let (reply, answer) = slot(&POOL).expect("a slot");
        let owner = std::thread::spawn(move || reply.send("sold".to_owned()));
        assert_eq!(futures::executor::block_on(answer), Some("sold".to_owned()));
        owner.join().expect("the owner thread");
    }

    #[test]
    fn an_owner_that_lets_go_closes_the_call() {
        let (reply, answer) = slot(&POOL).expect("a slot");
        std::thread::spawn(move || drop(reply))
            .join()
            .expect("the owner thread");
        assert_eq!(futures::executor::block_on(answer), None);
    }

    #[test]
    fn a_late_answer_never_reaches_the_next_caller_of_the_slot() {
        let (late, gone) = slot(&POOL).expect("a slot");
        drop(gone);
        // The slot given back is reused; the late owner's key is of the old generation.
        let (reply, answer) = slot(&POOL).expect("a slot");
        // Same thread, index and page (the low 50 bits of a default-config key); another
        // generation (the top bits).
        let changed = late.key ^ reply.key;
        assert!(
            changed != 0 && changed & ((1 << 50) - 1) == 0,
            "the slot was not reused: {:#x} then {:#x}",
            late.key,
            reply.key
        );
        late.send("stale".to_owned());
        reply.send("fresh".to_owned());
        assert_eq!(
            futures::executor::block_on(answer),
            Some("fresh".to_owned())
        );
    }
}

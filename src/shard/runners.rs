//! The owner's runners for routed calls: long-lived tasks that take calls from a queue, so that
//! a routed purchase costs its owner no task. glommio allocates every task it spawns, and a task
//! per call was about a third of a routed purchase's allocations (`benches/allocations.sh`).
//!
//! There is a runner for every call that was in progress at the busiest moment so far, so calls
//! still run concurrently: a purchase waiting for its group's `fdatasync` holds up no other. A
//! runner that finds no work while [`MAX_IDLE`] others already wait ends, so a burst's runners do
//! not stay. Calls in the queue and runners are both bounded by the calls in flight, which the
//! callers' connections bound (a connection waits for its call before it sends another).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::reply::ReplyTo;
use super::Shard;
use crate::sale::command::{Command, Reply};
use crate::store::Store;

/// Runners kept waiting for work after a burst.
pub const MAX_IDLE: usize = 64;

/// A routed call: the command and where its caller waits.
type Call = (Command, ReplyTo<Reply>);

/// Routed calls waiting for a runner, and the runners waiting for calls.
#[derive(Default)]
pub struct CallQueue {
    /// Calls not yet taken, oldest first.
    calls: RefCell<VecDeque<Call>>,
    /// The wakers of runners waiting for a call.
    idle: RefCell<Vec<Waker>>,
    /// Runners alive, busy or idle.
    runners: Cell<usize>,
}

impl CallQueue {
    /// Queues `call` and wakes an idle runner; `false` when none was idle, so the caller must
    /// start one.
    fn push(&self, call: Call) -> bool {
        self.calls.borrow_mut().push_back(call);
        match self.idle.borrow_mut().pop() {
            Some(runner) => {
                runner.wake();
                true
            }
            None => false,
        }
    }

    /// The next call for a runner, once there is one; `None` tells the runner to end, as enough
    /// others are idle.
    async fn next(&self) -> Option<Call> {
        poll_fn(|cx| {
            if let Some(call) = self.calls.borrow_mut().pop_front() {
                return Poll::Ready(Some(call));
            }
            let mut idle = self.idle.borrow_mut();
            if idle.len() >= MAX_IDLE {
                self.runners.set(self.runners.get().saturating_sub(1));
                return Poll::Ready(None);
            }
            idle.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Runners alive now (busy or idle).
    pub fn runners(&self) -> usize {
        self.runners.get()
    }
}

impl<S: Store + 'static> Shard<S> {
    /// Runs a call routed here by another shard, on an idle runner or a new one.
    pub(super) fn take_call(self: &Rc<Self>, command: Command, reply: ReplyTo<Reply>) {
        if self.calls.push((command, reply)) {
            return;
        }
        self.calls.runners.set(self.calls.runners.get() + 1);
        glommio::spawn_local(Rc::clone(self).run_calls()).detach();
    }

    /// A runner: answers queued calls one after another until told to end.
    async fn run_calls(self: Rc<Self>) {
        while let Some((command, reply)) = self.calls.next().await {
            let answer = self.execute_owned(command).await;
            // The caller may have gone away (connection closed); the slot drops it then.
            reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::LazyLock;
    use std::task::Context;

    static REPLIES: LazyLock<crate::shard::reply::Slots<Reply>> =
        LazyLock::new(crate::shard::reply::Slots::new);

    fn call(sku: &str) -> Call {
        let (reply, _answer) = crate::shard::reply::slot(&REPLIES).expect("a slot");
        (Command::GetSale(sku.into()), reply)
    }

    #[test]
    fn a_call_goes_to_an_idle_runner_or_asks_for_a_new_one() {
        let queue = CallQueue::default();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        // No runner waits: the caller must start one.
        assert!(!queue.push(call("a")));
        queue.runners.set(1);
        let mut next = pin!(queue.next());
        assert!(
            matches!(next.as_mut().poll(&mut cx), Poll::Ready(Some((Command::GetSale(sku), _))) if &*sku == "a")
        );
        // The runner waits; the next call wakes it instead of asking for another.
        let mut next = pin!(queue.next());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        assert!(queue.push(call("b")));
        assert!(
            matches!(next.as_mut().poll(&mut cx), Poll::Ready(Some((Command::GetSale(sku), _))) if &*sku == "b")
        );
        assert_eq!(queue.runners(), 1);
    }

    #[test]
    fn runners_beyond_the_idle_bound_end() {
        let queue = CallQueue::default();
        queue.runners.set(MAX_IDLE + 1);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut waiting: Vec<_> = (0..MAX_IDLE).map(|_| Box::pin(queue.next())).collect();
        for runner in &mut waiting {
            assert!(runner.as_mut().poll(&mut cx).is_pending());
        }
        let mut one_more = pin!(queue.next());
        assert!(matches!(one_more.as_mut().poll(&mut cx), Poll::Ready(None)));
        assert_eq!(queue.runners(), MAX_IDLE);
    }
}

//! A global allocator that counts allocations (and reallocations) twice: for the whole process,
//! so a bench can count what a step costs across threads, and for the calling thread, so a test
//! is not disturbed by the tests running beside it. It also keeps the bytes live in the process,
//! for memory per order. Included with `#[path]` by `tests/allocations.rs`, `benches/micro.rs`
//! and `benches/map_growth.rs`; each installs it with
//! `#[global_allocator] static COUNTING: CountingAllocator = CountingAllocator;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The system allocator, counting.
pub struct CountingAllocator;

/// Allocations by every thread since the process started.
static PROCESS: AtomicU64 = AtomicU64::new(0);

/// Bytes requested and not yet freed, by every thread (signed: a realloc may shrink).
static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    /// Allocations by this thread.
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    PROCESS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: a thread being torn down still allocates, after its cell is gone.
    let _ = THREAD.try_with(|count| count.set(count.get() + 1));
}

// SAFETY: every call is passed straight to the system allocator; counting touches only an
// atomic and a thread-local cell with a const initialiser, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations by every thread so far.
#[allow(dead_code)]
pub fn process_allocations() -> u64 {
    PROCESS.load(Ordering::Relaxed)
}

/// Allocations by the calling thread so far.
#[allow(dead_code)]
pub fn thread_allocations() -> u64 {
    THREAD.with(Cell::get)
}

/// Bytes the process has allocated and not freed (as requested: the allocator's own rounding
/// and headers, about 8 to 16 bytes per block, come on top).
#[allow(dead_code)]
pub fn live_bytes() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

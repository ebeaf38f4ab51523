//! Recovery (`store::journal::recovery::recover`) from arbitrary bytes in a data directory.
//!
//! The input is a packed data directory (see `seckill_fuzz::unpack`): paths such as
//! `gen-000001/shard-000/seg-000000000001.log` with their contents, written into a fresh
//! directory. Flags: bit 0 recomputes record checksums, bits 1-2 choose 1 to 4 shards to
//! recover into. Recovery must answer with an error or a state, never panic, hang or allocate
//! without bound; a state it answers with must survive a second recovery unchanged.

#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use seckill::sale::book::{Book, BookLimits};
use seckill::store::journal::recovery::recover;
use seckill_fuzz::{fix_checksums, unpack};

/// Small, so that forgetting old closed orders is exercised too.
const LIMITS: BookLimits = BookLimits {
    closed_orders_per_sale: 3,
};

/// One scratch directory per process, in memory when possible: recovery syncs every file it
/// writes, which costs nothing there.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        base.join(format!("seckill-fuzz-recovery-{}", std::process::id()))
    })
}

/// A book's state in a comparable form: its snapshot events, in a fixed order.
fn state(book: &Book) -> Vec<String> {
    let mut events: Vec<String> = book.snapshot().iter().map(|e| format!("{e:?}")).collect();
    events.sort();
    events
}

fuzz_target!(|data: &[u8]| {
    let packed = unpack(data);
    let dir = scratch();
    let _ = fs::remove_dir_all(dir);
    if fs::create_dir_all(dir).is_err() {
        return;
    }
    for (name, content) in &packed.files {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            if fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        let mut content = content.to_vec();
        if packed.flags & 1 == 1 {
            fix_checksums(&mut content);
        }
        // A name that collides with a directory made for another entry is simply not written.
        let _ = fs::write(&path, content);
    }
    let shards = 1 + usize::from((packed.flags >> 1) & 3);
    // With the order feed on, replayed changes also fill the outbox, which the new generation's
    // snapshot must carry.
    let feed = (packed.flags >> 3) & 1 == 1;
    if let Ok(first) = recover(dir, shards, LIMITS, feed) {
        assert_eq!(first.books.len(), shards);
        let again = match recover(dir, shards, LIMITS, feed) {
            Ok(again) => again,
            Err(error) => panic!("recovery cannot read back what it wrote: {error}"),
        };
        for (one, two) in first.books.iter().zip(&again.books) {
            assert_eq!(
                state(one),
                state(two),
                "a second recovery changed the state"
            );
        }
        for (one, two) in first.outboxes.iter().zip(&again.outboxes) {
            assert_eq!(one.len(), two.len(), "a second recovery changed the outbox");
        }
    }
    let _ = fs::remove_dir_all(dir);
});

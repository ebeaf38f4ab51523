//! Journal replay equivalence: for random sequences of operations and a crash at a random point,
//! the state recovery rebuilds equals the live state after the last whole record before the cut.
//!
//! The live side is the embedded store's own loop (`Book::execute`, `Journal::append`, a snapshot
//! when the journal asks for one, `Journal::commit` per batch) with the real `Journal` writer,
//! run on a glommio `LocalExecutor` in this test: the writer's segment rolls, snapshots built from
//! closed segments on a thread of their own (and the deletion of what they cover) and DMA padding
//! are where replay can go wrong, and writing records with `format.rs` by hand would test none of
//! them. Durability is `sync`, as in production. The clock is the test's, so sales open, orders
//! expire and the clock can step back at will.
//!
//! A crash is modelled as a copy of the data directory taken after a random batch committed
//! (possibly while a background snapshot is half done), whose newest segment is then cut at a
//! random byte offset. The expected state is found without the decoder: the records are
//! re-encoded with `format::encode_record` and matched against the segment's bytes to find the
//! last whole one before the cut. Recovery (`recovery::recover`, re-partitioning to one or two
//! shards) must rebuild exactly that state, and a second recovery, from the snapshot the first
//! one wrote, must rebuild it again.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 40; each syncs tens of times).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::{LocalExecutorBuilder, Placement};
use proptest::prelude::*;
use proptest::sample::Index;
use seckill::sale::audit::BookState;
use seckill::sale::book::{Book, BookLimits};
use seckill::sale::command::{Command, Event, Outcome, Payment, PurchaseRequest, Requester};
use seckill::sale::ids::OrderId;
use seckill::sale::Sale;
use seckill::store::journal::compaction::Rebuild;
use seckill::store::journal::format::{self, Entry, FileKind, SNAPSHOT_MAGIC};
use seckill::store::journal::{recovery, Durability, Journal};

const T0: u64 = 1_000_000;
const SKUS: [&str; 3] = ["a", "b", "c"];
const USERS: [&str; 3] = ["u0", "u1", "u2"];
const KEYS: [&str; 2] = ["k0", "k1"];
const LIMITS: BookLimits = BookLimits {
    closed_orders_per_sale: 2,
};

#[path = "support/proptest_cases.rs"]
mod proptest_cases;

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        sku: usize,
        stock: u64,
        starts_in: i64,
    },
    Purchase {
        sku: usize,
        user: usize,
        quantity: u32,
        key: Option<usize>,
    },
    Pay(Index),
    Cancel(Index),
    Expire(Index),
    Block(usize, bool),
    Clock(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..SKUS.len(), 0..12u64, -50..50i64)
            .prop_map(|(sku, stock, starts_in)| Op::Upsert { sku, stock, starts_in }),
        6 => (0..SKUS.len(), 0..USERS.len(), 1..3u32, proptest::option::of(0..KEYS.len()))
            .prop_map(|(sku, user, quantity, key)| Op::Purchase { sku, user, quantity, key }),
        2 => any::<Index>().prop_map(Op::Pay),
        2 => any::<Index>().prop_map(Op::Cancel),
        2 => any::<Index>().prop_map(Op::Expire),
        1 => (0..USERS.len(), any::<bool>()).prop_map(|(user, on)| Op::Block(user, on)),
        2 => prop_oneof![3 => 0..400i64, 1 => -200..0i64].prop_map(Op::Clock),
    ]
}

/// Where the crash happens.
#[derive(Debug, Clone)]
struct Crash {
    /// After which batch the disk image is taken (`None`: the last).
    after_batch: Option<Index>,
    /// Background steps the executor may take first (a snapshot may get further).
    settle: u8,
    /// Where in the newest segment the cut falls.
    cut: Index,
}

fn crash() -> impl Strategy<Value = Crash> {
    let after_batch = proptest::option::of(any::<Index>());
    (after_batch, 0..4u8, any::<Index>()).prop_map(|(after_batch, settle, cut)| Crash {
        after_batch,
        settle,
        cut,
    })
}

fn sale(sku: &str, stock: u64, starts_at: u64) -> Sale {
    Sale {
        sku: sku.into(),
        name: "sale".into(),
        stock,
        starts_at,
        ends_at: starts_at + 5_000,
        per_user_limit: 3,
        payment_timeout_ms: 300,
        rate_limit_per_sec: 0,
        price: 0,
        currency: "CNY".into(),
        stock_buckets: 1,
        // Not 0, so a recovery that loses it differs from the model.
        pow_bits: 5,
        admission: Default::default(),
        queue_opens_at: 0,
        admission_rate: 0,
        register_from: 0,
        overbooking_percent: 0,
    }
}

/// Turns an op into a command at the current time, or moves the clock.
struct Driver {
    now: u64,
    /// Every order minted, with its buyer.
    known: Vec<(OrderId, Box<str>)>,
}

impl Driver {
    fn pick(&self, index: &Index) -> (OrderId, Box<str>) {
        match self.known.len() {
            0 => {
                let id = OrderId {
                    unique: 1,
                    sku: SKUS[0].into(),
                };
                (id, USERS[0].into())
            }
            n => self.known[index.index(n)].clone(),
        }
    }

    fn command(&mut self, op: &Op) -> Option<Command> {
        Some(match op {
            Op::Upsert {
                sku,
                stock,
                starts_in,
            } => {
                let starts_at = self.now.saturating_add_signed(*starts_in);
                Command::UpsertSale(sale(SKUS[*sku], *stock, starts_at))
            }
            Op::Purchase {
                sku,
                user,
                quantity,
                key,
            } => Command::Purchase(
                PurchaseRequest::new(
                    SKUS[*sku],
                    USERS[*user],
                    *quantity,
                    key.map(|k| KEYS[k].into()),
                )
                .expect("ids fit"),
            ),
            Op::Pay(order) => {
                let (id, _) = self.pick(order);
                Command::Pay(
                    id,
                    Payment {
                        amount: 0,
                        payment_ref: "ref".into(),
                    },
                )
            }
            Op::Cancel(order) => Command::Cancel(self.pick(order).0, Requester::Admin),
            Op::Expire(order) => Command::Expire(self.pick(order).0),
            Op::Block(user, on) => Command::SetBlocked(USERS[*user].into(), *on),
            Op::Clock(delta) => {
                self.now = self.now.saturating_add_signed(*delta).max(1);
                return None;
            }
        })
    }
}

/// A file of the data directory at the moment of the crash.
struct ImageFile {
    relative: PathBuf,
    bytes: Vec<u8>,
}

/// A point-in-time copy of the data directory. The compaction thread may rename or delete files
/// while it is read, which no crash image shows, so the copy is taken again until the listing is
/// the same before and after it and no file vanished in between.
fn take_image(root: &Path) -> Vec<ImageFile> {
    loop {
        let before = listing(root);
        let files: Option<Vec<ImageFile>> = before
            .iter()
            .map(|relative| match std::fs::read(root.join(relative)) {
                Ok(bytes) => Some(ImageFile {
                    relative: relative.clone(),
                    bytes,
                }),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => panic!("read {}: {error}", relative.display()),
            })
            .collect();
        if let Some(files) = files {
            if listing(root) == before {
                return files;
            }
        }
    }
}

/// Every file under `root` but the lock, relative to it, sorted.
fn listing(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                dirs.push(path);
            } else if entry.file_name() != "LOCK" {
                files.push(path.strip_prefix(root).expect("inside").to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// What the live run left: the image, every event by LSN, and the live state after each LSN.
struct Run {
    image: Vec<ImageFile>,
    events: Vec<Event>,
    states: Vec<BookState>,
}

fn live_run(batches: &[Vec<Op>], crash: &Crash, segment_limit: u64, dir: &Path) -> Run {
    let mut recovered = recovery::recover(dir, 1, LIMITS, false).expect("fresh recovery");
    let (journal_dir, journal_start) = recovered.shard_dirs[0].clone();
    let mut book: Book = recovered.books.remove(0);
    let crash_after = crash
        .after_batch
        .map_or(batches.len() - 1, |index| index.index(batches.len()));
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("a glommio executor");
    executor.run(async move {
        let journal: Rc<Journal> = Journal::create(
            &journal_dir,
            journal_start,
            Durability::Sync,
            segment_limit,
            Rebuild {
                limits: LIMITS,
                feed: false,
            },
        )
        .await
        .expect("journal");
        let mut driver = Driver {
            now: T0,
            known: Vec::new(),
        };
        let mut events = Vec::new();
        let mut states = vec![book.state()];
        // Every run starts with its sales open, so that most purchases succeed.
        for (sku, stock) in SKUS.iter().zip([4, 6, 12]) {
            let sale = Command::UpsertSale(sale(sku, stock, T0));
            let (_, event) = book.execute(sale, T0);
            let event = event.expect("a new sale is an event");
            journal.append(&event);
            events.push(event);
            states.push(book.state());
        }
        for (number, batch) in batches.iter().enumerate() {
            for op in batch {
                let Some(command) = driver.command(op) else {
                    continue;
                };
                let (reply, event) = book.execute(command, driver.now);
                if let Ok(Outcome::Order {
                    order,
                    replayed: false,
                    ..
                }) = &reply
                {
                    if !driver.known.iter().any(|(id, _)| *id == order.order_id) {
                        driver
                            .known
                            .push((order.order_id.clone(), Box::from(&*order.user_id)));
                    }
                }
                if let Some(event) = event {
                    journal.append(&event);
                    events.push(event);
                    states.push(book.state());
                }
            }
            if journal.wants_snapshot() {
                journal.begin_snapshot();
            }
            journal.commit().await.expect("commit");
            if number == crash_after {
                for _ in 0..crash.settle {
                    glommio::timer::sleep(std::time::Duration::from_micros(200)).await;
                }
                break;
            }
        }
        // The power goes out here: the journal is never closed.
        Run {
            image: take_image(dir),
            events,
            states,
        }
    })
}

/// The encoded journal record of event number `lsn` (1-based), as the writer wrote it.
fn encoded(events: &[Event], lsn: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let event = events[lsn as usize - 1].clone();
    format::encode_record(&mut out, lsn, &Entry::Event(event));
    out
}

/// End offsets of the whole records `first_lsn, first_lsn + 1, …` at the start of a segment's
/// records, matched byte for byte against their encoding (stale padding never matches: its
/// LSNs are older).
fn record_ends(bytes: &[u8], first_lsn: u64, events: &[Event]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut offset = format::HEADER_LEN;
    let mut lsn = first_lsn;
    while lsn as usize <= events.len() {
        let record = encoded(events, lsn);
        if !bytes
            .get(offset..)
            .is_some_and(|rest| rest.starts_with(&record))
        {
            break;
        }
        offset += record.len();
        ends.push(offset);
        lsn += 1;
    }
    ends
}

/// Writes the image to `dir` with the newest segment cut; returns the LSN of the last whole
/// record that survives.
fn restore_cut(image: &[ImageFile], events: &[Event], cut: &Index, dir: &Path) -> u64 {
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for (position, file) in image.iter().enumerate() {
        let name = file.relative.file_name().and_then(|n| n.to_str());
        match name.and_then(format::parse_name) {
            Some((FileKind::Snapshot, seq)) => snapshots.push((seq, position)),
            Some((FileKind::Segment, seq)) => segments.push((seq, position)),
            None => {}
        }
    }
    snapshots.sort_unstable();
    segments.sort_unstable();
    let &(snapshot_seq, snapshot) = snapshots.last().expect("a snapshot");
    let snapshot_path = Path::new("snapshot");
    let contents = format::parse(
        snapshot_path,
        &image[snapshot].bytes,
        SNAPSHOT_MAGIC,
        false,
        1,
    )
    .expect("a complete snapshot");
    let Some(Entry::SnapshotEnd { covers_lsn, .. }) = contents.entries.last() else {
        panic!("snapshot without its end record");
    };
    // Segments from the snapshot on continue its LSNs; all but the newest are complete.
    let live: Vec<usize> = segments
        .iter()
        .filter(|(seq, _)| *seq >= snapshot_seq)
        .map(|(_, position)| *position)
        .collect();
    let mut next_lsn = covers_lsn + 1;
    let (&newest, complete) = live.split_last().expect("a segment");
    for position in complete {
        next_lsn += record_ends(&image[*position].bytes, next_lsn, events).len() as u64;
    }
    let newest_bytes = &image[newest].bytes;
    let ends = record_ends(newest_bytes, next_lsn, events);
    // A segment's header is synced before anything else, so a cut falls at 0 (created, header
    // not yet on disk) or anywhere from the end of the header on.
    // The file runs on past its records (DMA blocks, preallocation): cut within the records,
    // or a little after them, where stale padding may lie.
    let data_end = ends.last().copied().unwrap_or(format::HEADER_LEN);
    let reach = newest_bytes.len().min(data_end + 64);
    let choices = reach - format::HEADER_LEN + 2;
    let cut_at = match cut.index(choices) {
        0 => 0,
        n => format::HEADER_LEN + n - 1,
    };
    let kept = ends.iter().filter(|end| **end <= cut_at).count() as u64;
    for (position, file) in image.iter().enumerate() {
        let path = dir.join(&file.relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        let bytes = if position == newest {
            &file.bytes[..cut_at]
        } else {
            &file.bytes[..]
        };
        std::fs::write(&path, bytes).expect("write image file");
    }
    next_lsn - 1 + kept
}

fn recovered_state(dir: &Path, shards: usize) -> BookState {
    let recovered = match recovery::recover(dir, shards, LIMITS, false) {
        Ok(recovered) => recovered,
        Err(error) => panic!("recovery failed: {error}"),
    };
    let mut state = BookState::default();
    for book in &recovered.books {
        if let Err(problem) = book.audit() {
            panic!("recovered book: {problem}");
        }
        state.merge(book.state());
    }
    state
}

fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(what)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir")
}

proptest! {
    #![proptest_config(proptest_cases::config(40))]

    #[test]
    fn recovery_after_a_crash_equals_the_live_state(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..5), 1..40),
        crash in crash(),
        segment_limit in prop_oneof![Just(256u64), Just(1024), Just(1 << 20)],
        shards in 1..3usize,
    ) {
        let live_dir = temp_dir("model-journal-live");
        let run = live_run(&batches, &crash, segment_limit, live_dir.path());
        let crashed = temp_dir("model-journal-crashed");
        let lsn = restore_cut(&run.image, &run.events, &crash.cut, crashed.path());
        prop_assert!(lsn as usize <= run.events.len());
        let expected = &run.states[lsn as usize];
        let first = recovered_state(crashed.path(), shards);
        prop_assert_eq!(&first, expected, "recovered state after LSN {}", lsn);
        let again = recovered_state(crashed.path(), 1);
        prop_assert_eq!(&again, expected, "second recovery, from the first one's snapshot");
    }
}

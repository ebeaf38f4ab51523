//! Power cuts: every acknowledged order (201) and every acknowledged pay or cancel (200)
//! survives a power cut under load with `--durability sync`. With `--durability none`, some
//! acknowledged orders are lost, which shows that the harness can see a loss.
//!
//! A SIGKILL keeps the page cache, so it cannot catch a reply sent before its `fdatasync`. So the
//! data dir is the root of an in-memory FUSE filesystem (`tests/support/powercut_fs/`) that
//! keeps only what was synced:
//! - a file's data and size (truncation included) are kept on `fsync`/`fdatasync` of that file;
//! - a directory's entries (create, unlink, rename, mkdir, rmdir) are kept on `fsync` of that
//!   directory.
//!
//! A cut turns the disk off first: it reverts to its synced state, and every later request
//! fails with `EIO`. Then the server gets SIGKILL. Nothing can become durable after the cut, so a
//! reply received at any time must cover only what was synced before it. A server that
//! acknowledges despite a failed `fdatasync` is caught too. Once the server is reaped, the power
//! comes back and the server restarts on what survived; it must start. Every acknowledgement
//! so far is then checked with `GET /v1/orders/{id}`.
//!
//! A round cuts either at once, wherever the server is, or right after the next write to a
//! journal segment, before anything can sync it. The second is the moment a reply sent before its
//! `fdatasync` would show. 64 KiB segments make the journal roll segments and write snapshots
//! within a round, so cuts also land around those.
//!
//! Why this model is faithful enough:
//! - It is the POSIX contract, and nothing more. A real disk may keep more than was synced: any
//!   unsynced block may or may not land, and ext4 and xfs usually commit a file's metadata (its
//!   entry, a truncation) with the next journal commit of any file. It never keeps less. Keeping
//!   exactly the synced state is the one outcome that always exposes a reply sent before its
//!   sync, so it is the one to test "acknowledged ⇒ durable" against.
//! - Directory entries are modelled because the journal creates segments and snapshots and
//!   renames snapshots into place. It syncs the directory after each of these. Without the
//!   directory model, a missing directory sync would pass here and still lose a file on a
//!   filesystem that does not order metadata as ext4 does.
//! - It is not modelled that unsynced writes may land partly, torn or out of order. Recovery
//!   from such bytes is the job of the journal's own tests and fuzz targets. This test asks
//!   whether replies wait for their sync, and whether what a sync covered is enough to restart.
//! - Handles opened before a cut are dead after it, and the power comes back through the
//!   kernel's request queue. So a write the dead process left queued in io_uring cannot land on
//!   the restored disk.
//!
//! Mounting needs /dev/fuse, and root or `fusermount3` (Debian `fuse3`). Without them the tests
//! print `SKIPPED` and pass, unless `SECKILL_REQUIRE_FUSE` is set (CI sets it); then they fail.
//! Set `POWERCUT_EVIDENCE=DIR` to keep a copy of what survived each cut, for a failure's autopsy.
mod common;
#[path = "support/powercut_fs/mod.rs"]
mod powercut_fs;
#[path = "support/powercut_ledger.rs"]
mod powercut_ledger;

use common::*;
use powercut_fs::PowerCutFs;
use powercut_ledger::{check, shop, Acked, Cut, Expect, RoundReport};
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const SHARDS: usize = 2;
/// Shoppers, each on its own keep-alive connection.
const WORKERS: usize = 6;
/// Purchases acknowledged in a round before its power cut; with 64 KiB segments, enough for the
/// journal to roll segments (and write a snapshot) under load.
const ACKS_PER_ROUND: usize = 1500;
/// Smallest segment size the server accepts: rolls and snapshots happen within a round.
const SEGMENT_BYTES: &str = "65536";
/// The sync test's rounds: each kind of cut twice.
const SYNC_ROUNDS: [Cut; 4] = [Cut::OnJournalWrite, Cut::Now, Cut::OnJournalWrite, Cut::Now];
/// The none test's rounds. With `none` the journal writes only when a 128 KiB buffer fills or a
/// segment closes, so a cut on a journal write could wait for ever; cut at once instead.
const NONE_ROUNDS: [Cut; 3] = [Cut::Now; 3];
/// Only a "gave up" bound: a round that gets nowhere for this long fails.
const GIVE_UP: Duration = Duration::from_secs(120);

/// The tests share the two cores; one power-cut run at a time keeps each one's load honest.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ---------------------------------------------------------------------------
// Mounting
// ---------------------------------------------------------------------------

/// Mounts a fresh power-cut disk, or explains why not: a recorded skip when FUSE is unavailable
/// and `SECKILL_REQUIRE_FUSE` is unset, a failure when it is set. First unmounts what a killed
/// earlier run left mounted.
fn mount_or_skip() -> Option<PowerCutFs> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let parent = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    powercut_fs::unmount_stale(&parent);
    let dir = parent.join(format!(
        "powercut-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create mountpoint");
    match PowerCutFs::mount(&dir) {
        Ok(fs) => Some(fs),
        Err(error) => {
            let _ = std::fs::remove_dir(&dir);
            let why = format!(
                "cannot mount the power-cut FUSE filesystem on {} ({error}); it needs /dev/fuse \
                 and root or fusermount3 (Debian package fuse3)",
                dir.display()
            );
            skip_unless_required("SECKILL_REQUIRE_FUSE", &why);
            None
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Every file name under `dir`, recursively.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list the data dir") {
            let entry = entry.expect("list the data dir");
            if entry.file_type().expect("file type").is_dir() {
                stack.push(entry.path());
            } else {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names
}

/// The highest sequence number among journal files named `{prefix}-{seq}.{ext}`.
fn max_seq(names: &[String], prefix: &str) -> u64 {
    names
        .iter()
        .filter_map(|name| name.strip_prefix(prefix)?.split('.').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// SKUs whose owners cover every shard, so every shard's journal takes load.
fn skus() -> Vec<String> {
    let mut per_shard = vec![Vec::new(); SHARDS];
    for n in 0.. {
        let sku = format!("pc-{n}");
        let owner = seckill::shard::placement::owner_of(&sku, SHARDS);
        if per_shard[owner].len() < 2 {
            per_shard[owner].push(sku);
        }
        if per_shard.iter().all(|skus| skus.len() == 2) {
            break;
        }
    }
    per_shard.concat()
}

/// Runs one power-cut round per entry of `cuts` with `--durability durability`; returns each
/// round's report and the disk's statistics.
fn run(fs: &PowerCutFs, durability: &str, cuts: &[Cut]) -> (Vec<RoundReport>, powercut_fs::Stats) {
    let args = ["--durability", durability, "--segment-bytes", SEGMENT_BYTES];
    let skus = skus();
    let mut server = Server::start_in(fs.path(), SHARDS, &args);
    for sku in &skus {
        let spec = json!({
            "name": "power cut",
            "stock": 1_000_000_000u64,
            "starts_at": now_ms() - 1_000,
            "ends_at": now_ms() + 86_400_000,
            "per_user_limit": 1_000_000,
            "payment_timeout_ms": 604_800_000u64,
        });
        server.client().create_sale(sku, &spec);
    }
    // A clean stop and a start make the sales durable in either mode: recovery writes synced
    // snapshots. The cuts below are then about orders alone.
    server.terminate();
    server = Server::start_in(fs.path(), SHARDS, &args);
    for sku in &skus {
        assert_eq!(server.client().get_sale(sku)["sku"], json!(sku));
    }

    let mut ledger: Vec<Acked> = Vec::new();
    let mut reports: Vec<RoundReport> = Vec::new();
    for (round, &cut) in cuts.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let cutting = Arc::new(AtomicBool::new(false));
        let acked_count = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..WORKERS)
            .map(|worker| {
                let (stop, cutting, acked_count) =
                    (stop.clone(), cutting.clone(), acked_count.clone());
                let (port, skus) = (server.port, skus.clone());
                thread::spawn(move || {
                    shop(port, worker, round, &skus, &stop, &cutting, &acked_count)
                })
            })
            .collect();
        // Cut in the middle of the load, once the round has enough acknowledgements.
        let started = Instant::now();
        while acked_count.load(Ordering::SeqCst) < ACKS_PER_ROUND {
            assert!(
                started.elapsed() < GIVE_UP,
                "gave up: round {round} got {} of {ACKS_PER_ROUND} purchases acknowledged in {GIVE_UP:?}; server output:\n{}",
                acked_count.load(Ordering::SeqCst),
                server.log()
            );
            assert!(
                server.is_running(),
                "server died under load:\n{}",
                server.log()
            );
            thread::sleep(Duration::from_millis(2));
        }
        // From here on a 201 may have been read after the cut: it no longer counts as "before".
        cutting.store(true, Ordering::SeqCst);
        match cut {
            Cut::Now => fs.cut(),
            Cut::OnJournalWrite => {
                let cuts_before = fs.stats().cuts;
                fs.cut_on_write("seg-");
                let started = Instant::now();
                while fs.stats().cuts == cuts_before {
                    assert!(
                        started.elapsed() < GIVE_UP && server.is_running(),
                        "gave up: no journal write in {GIVE_UP:?} of load; server output:\n{}",
                        server.log()
                    );
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        let mut report = RoundReport::new(cut);
        let dropped = fs.last_cut();
        report.cut_segment_data = dropped.iter().any(|name| name.starts_with("seg-"));
        let mut failures = Vec::new();
        for worker in workers {
            let seen = worker.join().expect("shopper thread panicked");
            report.unanswered += seen.unanswered;
            report.failed_before_cut += seen.failed_before_cut;
            failures.extend(seen.failures);
            for acked in seen.acked {
                report.acked_orders += 1;
                report.acked_before_cut += usize::from(acked.before_cut);
                report.acked_transitions += usize::from(matches!(acked.expect, Expect::Exactly(_)));
                ledger.push(acked);
            }
        }
        // A request that failed before the cut is a bug, and would otherwise pass for evidence
        // that the cut caught requests in flight.
        assert_eq!(
            report.failed_before_cut,
            0,
            "round {round}: requests failed before the power cut: {failures:#?}; server output:\n{}",
            server.log()
        );
        fs.power_on().expect("power the disk back on");
        if let Some(to) = std::env::var_os("POWERCUT_EVIDENCE") {
            let to = PathBuf::from(to).join(format!("{durability}-round-{round}"));
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(fs.path())
                .arg(&to)
                .status();
            eprintln!("copied the surviving disk to {}: {status:?}", to.display());
        }
        let survived = file_names(fs.path());
        report.max_segment = max_seq(&survived, "seg-");
        report.max_snapshot = max_seq(&survived, "snap-");

        // A server that refuses to start here fails the test with its own output.
        eprintln!("durability {durability}, round {round}: restarting after a {cut:?} power cut");
        server = Server::start_in(fs.path(), SHARDS, &args);
        let (found, examples) = check(&server, &mut ledger, round + 1);
        for (earlier, found) in reports.iter_mut().zip(&found) {
            earlier.lost_orders += found.lost_orders;
            earlier.lost_before_cut += found.lost_before_cut;
            earlier.wrong_status += found.wrong_status;
        }
        report.lost_orders = found[round].lost_orders;
        report.lost_before_cut = found[round].lost_before_cut;
        report.wrong_status = found[round].wrong_status;
        reports.push(report);
        let stats = fs.stats();
        eprintln!(
            "durability {durability}, round {round}: {report:?}\n  the cut dropped unsynced data of {dropped:?}; disk: {stats:?}"
        );
        for example in &examples {
            eprintln!("  {example}");
        }
    }
    (reports, fs.stats())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// The filesystem itself: what was synced survives a cut, nothing else does, and requests fail
/// while the power is off.
#[test]
fn the_disk_keeps_only_what_was_synced() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = mount_or_skip() else {
        return;
    };
    let root = fs.path().to_path_buf();
    let dir = root.join("dir");
    std::fs::create_dir(&dir).unwrap();
    sync_dir(&root).unwrap();
    // Synced data under a synced entry, then more data that is never synced.
    let mut kept = std::fs::File::create(dir.join("kept")).unwrap();
    kept.write_all(b"synced").unwrap();
    kept.sync_data().unwrap();
    sync_dir(&dir).unwrap();
    kept.write_all(b" and not").unwrap();
    // Synced data, but its directory entry never synced.
    let mut orphan = std::fs::File::create(dir.join("orphan")).unwrap();
    orphan.write_all(b"data").unwrap();
    orphan.sync_all().unwrap();
    // Nothing synced at all; O_DIRECT opens work, as glommio's DMA files need.
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(dir.join("direct"))
        .unwrap();
    // An unlink that was never synced.
    std::fs::write(root.join("doomed"), b"x").unwrap();
    sync_dir(&root).unwrap();
    std::fs::remove_file(root.join("doomed")).unwrap();

    fs.cut();
    let refused = std::fs::read(dir.join("kept")).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(nix::libc::EIO), "{refused}");
    assert!(
        kept.write_all(b"x").is_err(),
        "a handle from before the cut still writes"
    );
    fs.power_on().unwrap();

    assert!(
        kept.write_all(b"x").is_err(),
        "a handle from before the cut writes after power-on"
    );
    let mut text = String::new();
    std::fs::File::open(dir.join("kept"))
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, "synced");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["kept"]);
    assert!(root.join("doomed").exists(), "an unsynced unlink survived");
    let stats = fs.stats();
    assert_eq!(
        (stats.cuts, stats.files_reverted >= 1),
        (1, true),
        "{stats:?}"
    );
}

/// With `--durability sync`, nothing acknowledged is lost in a power cut under load, whether the
/// cut comes between a journal write and its sync or at an arbitrary moment.
#[test]
fn sync_loses_nothing_acknowledged_in_a_power_cut() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = mount_or_skip() else {
        return;
    };
    let (reports, stats) = run(&fs, "sync", &SYNC_ROUNDS);
    for (round, report) in reports.iter().enumerate() {
        assert_eq!(
            (report.lost_orders, report.wrong_status),
            (0, 0),
            "round {round} lost acknowledged orders or transitions with durability sync: {report:?}; every round: {reports:#?}"
        );
        // The race this test is about happened: the cut caught requests in flight and, when it
        // came on a journal write, journal data that was written but not yet synced.
        assert!(
            report.acked_before_cut >= ACKS_PER_ROUND && report.unanswered > 0,
            "round {round} did not cut under load: {report:?}"
        );
        assert!(
            report.cut != Cut::OnJournalWrite || report.cut_segment_data,
            "round {round} cut on a journal write but dropped no segment data: {report:?}"
        );
    }
    assert!(
        reports.iter().any(|report| report.max_segment > 1),
        "no round rolled a segment before its cut, so none cut across a roll: {reports:#?}"
    );
    assert!(stats.dir_syncs > 0 && stats.file_syncs > 0, "{stats:?}");
}

/// With `--durability none`, a power cut loses orders whose 201 was read before the cut: the
/// harness does see a loss. Asserted over a few rounds, so one lucky cut cannot hide it.
#[test]
fn none_loses_acknowledged_orders_in_a_power_cut() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fs) = mount_or_skip() else {
        return;
    };
    let (reports, _) = run(&fs, "none", &NONE_ROUNDS);
    let lost: Vec<(usize, usize)> = reports
        .iter()
        .map(|report| (report.lost_before_cut, report.acked_before_cut))
        .collect();
    eprintln!(
        "durability none: (lost, acknowledged) orders whose 201 came before the cut, per round: {lost:?}"
    );
    assert!(
        lost.iter().any(|&(lost, _)| lost > 0),
        "no acknowledged order was lost with durability none in {} power cuts, so the harness cannot see a loss: {reports:#?}",
        NONE_ROUNDS.len()
    );
}

//! Durability of the journal: what was acknowledged survives a crash (SIGKILL) and a clean stop,
//! torn tails are cut off, damage before the tail refuses to start, expiry across a restart returns
//! stock exactly once, restarts may change the shard count, and compaction bounds the journal.
//!
//! Every test drives the real binary over loopback and restarts it on the same data directory.
mod common;

use common::process::{run, seckill_cmd, Spawned, EXIT_BOUND};
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Only a "gave up" bound, generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `seckill journal verify --data-dir DIR`: exit code and stdout + stderr.
fn journal_verify(dir: &Path) -> (Option<i32>, String) {
    let out = run(seckill_cmd()
        .args(["journal", "verify", "--data-dir"])
        .arg(dir));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Every regular file under `dir` with its size.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

fn listing(dir: &Path) -> String {
    files_under(dir)
        .iter()
        .map(|(p, n)| format!("  {} ({n} bytes)", p.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The newest `gen-NNNNNN` directory (by number) and its number.
#[track_caller]
fn newest_gen(dir: &Path) -> (u64, PathBuf) {
    std::fs::read_dir(dir)
        .expect("read data dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u64 = name.strip_prefix("gen-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max()
        .unwrap_or_else(|| panic!("no gen-* directory in {}:\n{}", dir.display(), listing(dir)))
}

/// The `shard-NNN` directories of a generation, sorted.
fn shard_dirs(gen: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(gen)
        .expect("read gen dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("shard-"))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// `(snapshots, segments)` of a shard directory, each as (sequence, path), sorted by sequence.
type SeqFiles = Vec<(u64, PathBuf)>;
fn journal_files(shard_dir: &Path) -> (SeqFiles, SeqFiles) {
    let (mut snaps, mut segs) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(shard_dir)
        .expect("read shard dir")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(seq) = name
            .strip_prefix("snap-")
            .and_then(|r| r.strip_suffix(".snap"))
            .and_then(|s| s.parse().ok())
        {
            snaps.push((seq, e.path()));
        } else if let Some(seq) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".log"))
            .and_then(|s| s.parse().ok())
        {
            segs.push((seq, e.path()));
        }
    }
    snaps.sort();
    segs.sort();
    (snaps, segs)
}

/// Every number N in `text` that follows the word "offset ".
fn offsets_in(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("offset ") {
        rest = &rest[i + "offset ".len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse() {
            out.push(n);
        }
    }
    out
}

/// POST purchase with quantity 1 and an Idempotency-Key; I/O errors are returned, not panicked.
fn try_purchase(c: &mut Client, sku: &str, token: &str, key: &str) -> io::Result<Response> {
    let auth = format!("Bearer {token}");
    c.try_request(
        "POST",
        &format!("/v1/sales/{sku}/purchase"),
        &[("Authorization", &auth), ("Idempotency-Key", key)],
        Some(r#"{"quantity":1}"#),
    )
}

/// Purchase with an Idempotency-Key (panics on I/O errors).
fn purchase_keyed(c: &mut Client, sku: &str, user: &str, qty: u64, key: &str) -> Response {
    c.purchase(sku, &tok(user), Some(qty), Some(key))
}

/// GET an order with the admin token; Some(order) on 200, None on 404 unknown_order.
#[track_caller]
fn admin_order(c: &mut Client, id: &str) -> Option<Value> {
    let r = c.get_order(id, ADMIN_TOKEN);
    match r.status {
        200 => Some(r.json()),
        404 => {
            assert_error(&r, 404, "unknown_order");
            None
        }
        _ => panic!("GET /v1/orders/{id} (admin): {r}"),
    }
}

/// Is `id` of the form `<26-char ULID>.<sku>`?
fn well_formed_order_id(id: &str, sku: &str) -> bool {
    match id.split_once('.') {
        Some((ulid, rest)) => {
            ulid.len() == 26 && ulid.chars().all(|c| c.is_ascii_alphanumeric()) && rest == sku
        }
        None => false,
    }
}

#[track_caller]
fn assert_clean_exit(status: std::process::ExitStatus, server: &Server) {
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM must exit 0, got {status}; output:\n{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------
// 1. Crash under load
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum PayOutcome {
    NotTried,
    /// 200 before the crash.
    Paid,
    /// Sent, but the connection died before an answer.
    Unknown(String),
}

#[derive(Debug)]
struct Acked {
    order: Value,
    order_id: String,
    user: String,
    pay: PayOutcome,
}

#[derive(Debug)]
struct Unacked {
    user: String,
    key: String,
    error: String,
}

#[derive(Default)]
struct WorkerLog {
    acked: Vec<Acked>,
    unacked: Vec<Unacked>,
    unexpected: Vec<String>,
}

const LOAD_SKU: &str = "crashy";
/// Stock of the plain crash round.
const LOAD_STOCK: usize = 2000;

/// One worker of the crash round: buys with a new user and key per attempt until the connection
/// fails (the server was killed) or `stop` is set. Never panics.
fn crash_worker(
    mut c: Client,
    round: usize,
    t: usize,
    stock: usize,
    acked_count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> WorkerLog {
    let mut log = WorkerLog::default();
    let mut rng = SmallRng::from_entropy();
    for n in 0..stock {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let user = format!("r{round}-t{t}-u{n}");
        let key = format!("k-r{round}-t{t}-{n}");
        let token = tok(&user);
        let r = match try_purchase(&mut c, LOAD_SKU, &token, &key) {
            Ok(r) => r,
            Err(e) => {
                log.unacked.push(Unacked {
                    user,
                    key,
                    error: e.to_string(),
                });
                break;
            }
        };
        if r.status != 201 {
            log.unexpected
                .push(format!("purchase by {user} with key {key}: {r}"));
            break;
        }
        let order: Value = match serde_json::from_slice(&r.body) {
            Ok(v) => v,
            Err(e) => {
                log.unexpected
                    .push(format!("201 body is not JSON ({e}): {r}"));
                break;
            }
        };
        let order_id = order["order_id"].as_str().unwrap_or("").to_owned();
        if order["user_id"] != json!(user)
            || order["quantity"] != json!(1)
            || order["status"] != json!("pending")
            || !well_formed_order_id(&order_id, LOAD_SKU)
        {
            log.unexpected
                .push(format!("bad 201 order for {user}: {order}"));
        }
        acked_count.fetch_add(1, Ordering::SeqCst);
        let mut pay = PayOutcome::NotTried;
        let mut dead = false;
        if rng.gen_ratio(1, 4) {
            let auth = format!("Bearer {PAYMENT_TOKEN}");
            let body = format!(r#"{{"amount":0,"payment_ref":"ref-{order_id}"}}"#);
            match c.try_request(
                "POST",
                &format!("/v1/orders/{order_id}/pay"),
                &[("Authorization", &auth)],
                Some(&body),
            ) {
                Ok(p) if p.status == 200 => pay = PayOutcome::Paid,
                Ok(p) => {
                    log.unexpected.push(format!("pay {order_id}: {p}"));
                    dead = true;
                }
                Err(e) => {
                    pay = PayOutcome::Unknown(e.to_string());
                    dead = true;
                }
            }
        }
        log.acked.push(Acked {
            order,
            order_id,
            user,
            pay,
        });
        if dead {
            break;
        }
    }
    log
}

/// One figure of the journal's metrics, when a scrape answers (scrapes are rate-limited).
fn journal_figure(server: &Server, name: &str) -> Option<u64> {
    let r = server
        .client()
        .try_request("GET", "/metrics", &[], None)
        .ok()?;
    if r.status != 200 {
        return None;
    }
    let parsed = common::prometheus::parse(&r.text()).ok()?;
    Some(parsed.count(name, &[]))
}

/// Snapshots the journal has built so far, when a scrape answers.
fn compactions(server: &Server) -> Option<u64> {
    journal_figure(server, "seckill_journal_compaction_duration_seconds_count")
}

/// How a crash round runs the server.
struct CrashSetup {
    /// Extra `serve` arguments, for the first start and the restart.
    args: &'static [&'static str],
    /// Units on sale; the kill comes before they sell out.
    stock: usize,
    /// Acknowledged purchases the kill point is drawn from, one third per round.
    kill_range: (usize, usize),
    /// Snapshots that must have been built before the kill, so it lands on a journal that
    /// compaction has rewritten while the shard went on appending.
    compactions_before_kill: u64,
}

/// The plain crash: random kill points, one from each third of 100..1500, so every run crashes
/// early, midway and late (past the first 128 KiB of journal).
const PLAIN_CRASH: CrashSetup = CrashSetup {
    args: &[],
    stock: LOAD_STOCK,
    kill_range: (100, 1500),
    compactions_before_kill: 0,
};

fn crash_round(round: usize, setup: &CrashSetup) {
    let dir = fresh_data_dir();
    let (from, to) = setup.kill_range;
    let third = (to - from) / 3;
    let low = from + round * third;
    let kill_after: usize = rand::thread_rng().gen_range(low..low + third);
    let mut server = Server::start_in(&dir, 2, setup.args);
    server
        .client()
        .create_sale(LOAD_SKU, &sale_spec(setup.stock as u64, 1));

    let acked_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<Client> = (0..32).map(|_| server.client()).collect();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, c)| {
            let (acked_count, stop) = (acked_count.clone(), stop.clone());
            let stock = setup.stock;
            thread::spawn(move || crash_worker(c, round, t, stock, acked_count, stop))
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut compacted = 0;
    while (acked_count.load(Ordering::SeqCst) < kill_after
        || compacted < setup.compactions_before_kill)
        && Instant::now() < deadline
        && !handles.iter().all(|h| h.is_finished())
    {
        if compacted < setup.compactions_before_kill {
            compacted = compactions(&server).unwrap_or(compacted);
            thread::sleep(Duration::from_millis(20));
        } else {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let reached = acked_count.load(Ordering::SeqCst);
    let was_running = server.is_running();
    server.kill9();
    let kill_ms = now_ms();
    let at_kill = acked_count.load(Ordering::SeqCst);
    // Workers stop on the first connection error; the flag only guards against a hang.
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut unacked = Vec::new();
    let mut unexpected = Vec::new();
    let mut panicked = 0;
    for h in handles {
        match h.join() {
            Ok(log) => {
                acked.extend(log.acked);
                unacked.extend(log.unacked);
                unexpected.extend(log.unexpected);
            }
            Err(_) => panicked += 1,
        }
    }
    let server_log = server.log();
    drop(server);
    eprintln!(
        "round {round}: kill after {kill_after} acks (reached {reached}, {at_kill} at kill, {} recorded, {compacted} snapshots built), {} unacknowledged attempts (e.g. {:?}), {} paid, {} pay unknown",
        acked.len(),
        unacked.len(),
        unacked.first().map(|u| u.error.as_str()),
        acked.iter().filter(|a| a.pay == PayOutcome::Paid).count(),
        acked.iter().filter(|a| matches!(a.pay, PayOutcome::Unknown(_))).count(),
    );
    assert_eq!(panicked, 0, "round {round}: worker threads panicked");
    assert!(
        was_running,
        "round {round}: the server died before it was killed; output:\n{server_log}"
    );
    assert!(
        reached >= kill_after,
        "round {round}: only {reached} of {kill_after} purchases acknowledged before the deadline; unexpected answers: {unexpected:#?}"
    );
    assert!(
        compacted >= setup.compactions_before_kill,
        "round {round}: only {compacted} of {} snapshots were built before the kill; output:\n{server_log}",
        setup.compactions_before_kill
    );
    assert!(
        unexpected.is_empty(),
        "round {round}: unexpected answers before the crash: {unexpected:#?}\nserver output:\n{server_log}"
    );

    // ---- restart on the same directory ----
    let server = Server::start_in(&dir, 2, setup.args);
    let mut c = server.client();

    let mut owner_of: HashMap<String, String> = HashMap::new(); // order_id -> user
    let mut user_orders: HashMap<String, HashSet<String>> = HashMap::new();
    let mut all_201_ids: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    for a in &acked {
        all_201_ids.push(a.order_id.clone());
        owner_of.insert(a.order_id.clone(), a.user.clone());
        user_orders
            .entry(a.user.clone())
            .or_default()
            .insert(a.order_id.clone());
        let Some(now) = admin_order(&mut c, &a.order_id) else {
            problems.push(format!(
                "acknowledged order {} of {} is gone after the crash (pay: {:?})",
                a.order_id, a.user, a.pay
            ));
            continue;
        };
        let allowed: &[&str] = match a.pay {
            PayOutcome::NotTried => &["pending"],
            PayOutcome::Paid => &["paid"],
            PayOutcome::Unknown(_) => &["pending", "paid"],
        };
        let status = now["status"].as_str().unwrap_or("");
        if !allowed.contains(&status) {
            problems.push(format!(
                "order {} (pay {:?}) has status {status:?}, expected one of {allowed:?}: {now}",
                a.order_id, a.pay
            ));
        }
        // Paying changes the status and records the payment's reference; nothing else changes.
        if status == "paid" && now["payment_ref"] != json!(format!("ref-{}", a.order_id)) {
            problems.push(format!("paid order without its payment_ref: {now}"));
        }
        let mut before = a.order.clone();
        let mut after = now.clone();
        for field in ["status", "payment_ref"] {
            before[field] = Value::Null;
            after[field] = Value::Null;
        }
        if before != after {
            problems.push(format!(
                "order changed across the crash: acknowledged {} now {}",
                a.order, now
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "round {round}: {} problem(s) with acknowledged orders, first ones: {:#?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );

    // Re-send every unacknowledged attempt with the same user and key.
    let mut resent_orders = 0;
    let mut replays = 0;
    for u in &unacked {
        let r = purchase_keyed(&mut c, LOAD_SKU, &u.user, 1, &u.key);
        match r.status {
            201 => {
                let o = r.json();
                let id = order_id(&o);
                assert_eq!(o["user_id"], json!(u.user), "re-sent attempt {u:?}: {r}");
                assert_eq!(o["quantity"], json!(1), "re-sent attempt {u:?}: {r}");
                assert!(
                    o["status"] == json!("pending"),
                    "re-sent attempt {u:?} must be a pending order (never paid): {r}"
                );
                if o["created_at"].as_i64().unwrap_or(i64::MAX) <= kill_ms {
                    replays += 1;
                }
                resent_orders += 1;
                all_201_ids.push(id.clone());
                owner_of.insert(id.clone(), u.user.clone());
                user_orders.entry(u.user.clone()).or_default().insert(id);
            }
            409 => assert_error(&r, 409, "sold_out"),
            _ => panic!("round {round}: re-sent unacknowledged attempt {u:?}: {r}"),
        }
    }
    eprintln!(
        "round {round}: {resent_orders} of {} re-sent attempts answered 201 ({replays} of them look like replays of orders persisted before the crash)",
        unacked.len()
    );

    let distinct: HashSet<&String> = all_201_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        all_201_ids.len(),
        "round {round}: an order_id was answered twice across acknowledged orders and re-sends"
    );
    for (user, ids) in &user_orders {
        assert_eq!(
            ids.len(),
            1,
            "round {round}: user {user} has orders {ids:?}"
        );
    }
    let remaining = c.remaining(LOAD_SKU);
    assert_eq!(
        remaining,
        setup.stock as i64 - distinct.len() as i64,
        "round {round}: remaining after the crash must be stock - {} known orders (acknowledged {}, re-sent 201 {resent_orders})",
        distinct.len(),
        acked.len()
    );

    // The per-user limit survived: an acknowledged buyer cannot buy again under a new key.
    if let Some(a) = acked.first() {
        let r = purchase_keyed(&mut c, LOAD_SKU, &a.user, 1, "a-fresh-key");
        assert_error(&r, 403, "limit_exceeded");
    }

    // Buying resumes until sold out.
    let resume_clients: Vec<Client> = (0..8).map(|_| server.client()).collect();
    let stock = setup.stock;
    let resume: Vec<_> = resume_clients
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            thread::spawn(move || {
                let mut ids = Vec::new();
                let mut unexpected = Vec::new();
                for n in 0..=stock {
                    let user = format!("r{round}-resume-t{t}-u{n}");
                    match c.try_request(
                        "POST",
                        &format!("/v1/sales/{LOAD_SKU}/purchase"),
                        &[("Authorization", &format!("Bearer {}", tok(&user)))],
                        Some(""),
                    ) {
                        Ok(r) if r.status == 201 => {
                            match serde_json::from_slice::<Value>(&r.body) {
                                Ok(o) if o["user_id"] == json!(user) => ids
                                    .push((o["order_id"].as_str().unwrap_or("").to_owned(), user)),
                                _ => {
                                    unexpected.push(format!("bad 201 for {user}: {r}"));
                                    break;
                                }
                            }
                        }
                        Ok(r)
                            if r.status == 409 && r.error_code().as_deref() == Some("sold_out") =>
                        {
                            break
                        }
                        Ok(r) => {
                            unexpected.push(format!("purchase by {user}: {r}"));
                            break;
                        }
                        Err(e) => {
                            unexpected.push(format!("purchase by {user}: {e}"));
                            break;
                        }
                    }
                }
                (ids, unexpected)
            })
        })
        .collect();
    let mut resumed = 0;
    for h in resume {
        let (ids, unexpected) = h.join().expect("resume thread panicked");
        assert!(
            unexpected.is_empty(),
            "round {round}: unexpected answers while buying after the restart: {unexpected:#?}"
        );
        for (id, user) in ids {
            resumed += 1;
            all_201_ids.push(id.clone());
            user_orders.entry(user).or_default().insert(id);
        }
    }
    let distinct: HashSet<&String> = all_201_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        all_201_ids.len(),
        "round {round}: duplicate order ids after resuming"
    );
    assert_eq!(
        distinct.len(),
        setup.stock,
        "round {round}: total distinct orders must be exactly the stock (acknowledged {}, re-sent {resent_orders}, resumed {resumed})",
        acked.len()
    );
    // A fresh connection: selling out the rest can outlast the idle timeout on a loaded machine.
    let mut c = server.client();
    let sale = c.get_sale(LOAD_SKU);
    assert_eq!(sale["remaining"], json!(0), "round {round}: {sale}");
    assert_eq!(sale["state"], json!("sold_out"), "round {round}: {sale}");
    drop(c);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn crash_under_load_loses_no_acknowledged_order() {
    for round in 0..3 {
        crash_round(round, &PLAIN_CRASH);
    }
}

/// Snapshots are built from closed segments on a thread of their own while the shard goes on
/// appending. A kill after some were built, and with the next ones under way, must lose no
/// acknowledged order: a snapshot that covered too little or too much, or deleted a segment it
/// did not cover, would show here as a missing order or stock that no longer adds up.
#[test]
fn crash_while_compacting_loses_no_acknowledged_order() {
    let setup = CrashSetup {
        // The smallest segment: the first snapshot is due after about 1,000 orders (65 bytes
        // of journal each, and payments); on a busy machine the kill may wait for a scrape
        // that sees it done until twice that, well before a stock of 6,000 runs out.
        args: &["--segment-bytes", "65536"],
        stock: 6000,
        kill_range: (1000, 4000),
        compactions_before_kill: 1,
    };
    for round in 0..3 {
        crash_round(round, &setup);
    }
}

/// The inode of shard `shard`'s newest snapshot in the newest generation, and how many segments
/// that shard directory holds.
fn newest_snapshot_and_segments(dir: &Path, shard: usize) -> (u64, usize) {
    use std::os::unix::fs::MetadataExt;
    let (_, gen_dir) = newest_gen(dir);
    let shard_dir = shard_dirs(&gen_dir).remove(shard);
    let (snapshots, segments) = journal_files(&shard_dir);
    let (_, snapshot) = snapshots.last().cloned().expect("a snapshot");
    let inode = std::fs::metadata(&snapshot).expect("stat snapshot").ino();
    (inode, segments.len())
}

/// A restart with the same shard count carries the old generation's files into the new one by
/// hard link instead of writing every order into a new snapshot, and each start adds a segment,
/// so a crash loop must not pile them up: past the bound, a start writes a fresh snapshot. Every
/// order survives either way.
#[test]
fn restarts_carry_the_journal_and_a_crash_loop_cannot_pile_up_segments() {
    const RESTARTS: usize = 70;
    let dir = fresh_data_dir();
    let mut server = Server::start_in(&dir, 1, &[]);
    let mut c = server.client();
    c.create_sale("loop", &sale_spec(1000, 1));
    let mut orders = Vec::new();
    for i in 0..20 {
        orders.push(order_id(&c.buy("loop", &tok(&format!("looper{i}")), 1)));
    }
    drop(c);
    server.kill9();
    drop(server);
    let (first_snapshot, _) = newest_snapshot_and_segments(&dir, 0);

    let mut carried = 0;
    let mut rewritten = 0;
    let mut most_segments = 0;
    let mut previous = first_snapshot;
    for round in 0..RESTARTS {
        let mut server = Server::start_in(&dir, 1, &[]);
        if round % 10 == 0 {
            let mut c = server.client();
            orders.push(order_id(&c.buy(
                "loop",
                &tok(&format!("looper-r{round}")),
                1,
            )));
        }
        server.kill9();
        drop(server);
        let (snapshot, segments) = newest_snapshot_and_segments(&dir, 0);
        if snapshot == previous {
            carried += 1;
        } else {
            rewritten += 1;
        }
        most_segments = most_segments.max(segments);
        previous = snapshot;
    }
    eprintln!(
        "{RESTARTS} crash restarts: {carried} carried the snapshot, {rewritten} wrote a new one; at most {most_segments} segments"
    );
    assert!(
        carried >= RESTARTS - 2,
        "restarts with the same shard count must carry the snapshot ({carried} of {RESTARTS} did):\n{}",
        listing(&dir)
    );
    assert!(
        rewritten >= 1,
        "{RESTARTS} restarts never wrote a fresh snapshot, so segments pile up (at most {most_segments}):\n{}",
        listing(&dir)
    );
    assert!(
        most_segments <= 64,
        "a crash loop piled up {most_segments} segments"
    );

    let server = Server::start_in(&dir, 1, &[]);
    let mut c = server.client();
    let missing: Vec<&String> = orders
        .iter()
        .filter(|id| admin_order(&mut c, id).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "orders lost across {RESTARTS} restarts: {missing:?}\n{}",
        server.log()
    );
    assert_eq!(c.remaining("loop"), 1000 - orders.len() as i64);
    let (code, out) = journal_verify(&dir);
    assert_eq!(code, Some(0), "verify after the restarts: {out}");
    drop(c);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// 2. Torn tail
// ---------------------------------------------------------------------------

#[test]
fn torn_tail_is_cut_off() {
    let dir = fresh_data_dir();
    let mut server = Server::start_in(&dir, 2, &[]);
    let skus = ["torn-a", "torn-b", "torn-c", "torn-d"];
    let mut c = server.client();
    for sku in skus {
        c.create_sale(sku, &sale_spec(100, 10));
    }
    // (order_id, sku, expected status) in creation order.
    let mut orders: Vec<(String, String, &str)> = Vec::new();
    for i in 0..24 {
        let sku = skus[i % skus.len()];
        let user = format!("torn-user{}", i % 6);
        let o = c.buy(sku, &tok(&user), 1 + (i as u64 % 2));
        let id = order_id(&o);
        let status = match i % 4 {
            1 => {
                assert_eq!(c.pay(&id).status, 200);
                "paid"
            }
            2 => {
                assert_eq!(c.cancel(&id, &tok(&user)).status, 200);
                "cancelled"
            }
            _ => "pending",
        };
        orders.push((id, sku.to_owned(), status));
    }
    // Only purchases at the end, so the last record of every shard's segment is an order.
    for i in 0..8 {
        let sku = skus[i % skus.len()];
        let o = c.buy(sku, &tok(&format!("torn-late{i}")), 1);
        orders.push((order_id(&o), sku.to_owned(), "pending"));
    }
    let mut before: HashMap<String, Value> = HashMap::new();
    for (id, _, status) in &orders {
        let o = admin_order(&mut c, id).expect("order exists before the stop");
        assert_eq!(o["status"], json!(status), "{o}");
        before.insert(id.clone(), o);
    }
    drop(c);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);

    let (gen_before, gen_dir) = newest_gen(&dir);
    let candidate = shard_dirs(&gen_dir)
        .iter()
        .filter_map(|d| journal_files(d).1.pop())
        .map(|(_, p)| {
            let len = std::fs::metadata(&p).expect("stat segment").len();
            (p, len)
        })
        .find(|(_, len)| *len > 16);
    let (seg, len) = candidate.unwrap_or_else(|| {
        panic!(
            "no newest segment with records in {}:\n{}",
            gen_dir.display(),
            listing(&dir)
        )
    });
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open segment");
    file.set_len(len - 3).expect("truncate segment");
    drop(file);
    eprintln!(
        "truncated {} from {len} to {} bytes",
        seg.display(),
        len - 3
    );

    let (code, out) = journal_verify(&dir);
    assert_eq!(
        code,
        Some(0),
        "journal verify must accept a torn tail; output:\n{out}"
    );
    assert!(
        out.contains("torn"),
        "journal verify must report the torn tail; output:\n{out}"
    );

    let server = Server::start_in(&dir, 2, &[]);
    let mut c = server.client();
    let mut missing = Vec::new();
    for (id, sku, _) in &orders {
        match admin_order(&mut c, id) {
            Some(o) => assert_eq!(
                &o, &before[id],
                "order {id} changed across the restart with a torn tail"
            ),
            None => missing.push((id.clone(), sku.clone())),
        }
    }
    assert!(
        missing.len() <= 1,
        "only the torn last record may be lost, but {} orders are gone: {missing:?}",
        missing.len()
    );
    if let Some((id, sku)) = missing.first() {
        let last_of_sku = orders
            .iter()
            .rev()
            .find(|(_, s, _)| s == sku)
            .map(|(i, _, _)| i.clone());
        assert_eq!(
            last_of_sku.as_ref(),
            Some(id),
            "the lost order must be the last one written for its SKU"
        );
        eprintln!("lost the torn order {id}");
    }
    // Stock agrees with the orders that survived: nothing leaked with the torn record.
    for sku in skus {
        let held: i64 = orders
            .iter()
            .filter(|(id, s, _)| s == sku && !missing.iter().any(|(m, _)| m == id))
            .filter(|(id, _, _)| {
                let st = &before[id]["status"];
                *st == "pending" || *st == "paid"
            })
            .map(|(id, _, _)| before[id]["quantity"].as_i64().unwrap())
            .sum();
        assert_eq!(
            c.remaining(sku),
            100 - held,
            "{sku}: remaining must match the surviving orders"
        );
    }
    let (gen_after, _) = newest_gen(&dir);
    assert!(gen_after > gen_before, "a restart writes a new generation");
    let (code, out) = journal_verify(&dir);
    assert_eq!(code, Some(0), "verify after the restart: {out}");
    // The server works.
    let o = c.buy("torn-a", &tok("after-torn"), 1);
    assert_eq!(o["status"], json!("pending"));
    drop(c);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// 3. Damage before the tail
// ---------------------------------------------------------------------------

#[test]
fn flipped_byte_mid_journal_refuses_to_start() {
    let dir = fresh_data_dir();
    let mut server = Server::start_in(&dir, 1, &[]);
    let mut c = server.client();
    c.create_sale("flip", &sale_spec(1000, 1));
    for i in 0..200 {
        c.buy("flip", &tok(&format!("flipper{i}")), 1);
    }
    drop(c);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);

    let (_, gen_dir) = newest_gen(&dir);
    let shard = shard_dirs(&gen_dir)
        .into_iter()
        .next()
        .expect("a shard dir");
    let (_, segs) = journal_files(&shard);
    let (_, seg) = segs.last().cloned().expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read segment");
    assert!(
        bytes.len() > 16 + 200 * 20,
        "200 orders should be in {} ({} bytes):\n{}",
        seg.display(),
        bytes.len(),
        listing(&dir)
    );
    let middle = 16 + (bytes.len() - 16) / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&seg, &bytes).expect("write damaged segment");
    let seg_name = seg.file_name().unwrap().to_string_lossy().into_owned();
    eprintln!(
        "flipped byte {middle} of {} ({} bytes)",
        seg.display(),
        bytes.len()
    );

    let port = pick_port();
    let mut child = Spawned::spawn(
        seckill_cmd()
            .args(["serve", "--shards", "1", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&dir),
    );
    let status = child
        .try_wait_exit(EXIT_BOUND)
        .unwrap_or_else(|| child.fail("serve kept running on a corrupt journal"));
    let stderr = child.stderr();
    assert!(
        !status.success(),
        "serve must refuse a journal damaged before its tail; exited {status}; output:\n{stderr}"
    );
    assert!(
        stderr.contains(&seg_name),
        "serve's error must name the damaged file {seg_name}; output:\n{stderr}"
    );
    let serve_offsets = offsets_in(&stderr);
    let offset = *serve_offsets
        .first()
        .unwrap_or_else(|| panic!("serve's error must say \"offset N\"; output:\n{stderr}"));
    assert!(
        (16..=middle as u64).contains(&offset),
        "the damaged record starts at or before the flipped byte {middle}, after the header; serve said offset {offset}:\n{stderr}"
    );

    let (code, out) = journal_verify(&dir);
    assert_eq!(
        code,
        Some(1),
        "journal verify must exit 1 on damage; output:\n{out}"
    );
    assert!(
        out.contains(&seg_name),
        "verify must name {seg_name}; output:\n{out}"
    );
    assert_eq!(
        offsets_in(&out).first(),
        Some(&offset),
        "verify must report the same offset as serve (offset {offset}); verify output:\n{out}\nserve output:\n{stderr}"
    );
    // Refusing to start must not have thrown the damaged data away.
    assert!(seg.exists(), "{} must be left in place", seg.display());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// 4. Expiry across a restart
// ---------------------------------------------------------------------------

#[test]
fn expiry_across_restart_returns_stock_once() {
    let dir = fresh_data_dir();
    let mut server = Server::start_in(&dir, 2, &[]);
    let mut c = server.client();
    let mut spec = sale_spec(10, 1);
    spec["payment_timeout_ms"] = json!(1500);
    c.create_sale("fleeting", &spec);
    // Four pending orders that will expire while the server is down, and two paid ones that keep
    // their stock: with remaining below the stock, a second return of the expired units would
    // show instead of being capped at `stock`.
    let mut pending = Vec::new();
    for i in 0..4 {
        let user = format!("sleeper{i}");
        let o = c.buy("fleeting", &tok(&user), 1);
        pending.push((order_id(&o), user, o["expires_at"].as_i64().unwrap()));
    }
    let mut paid = Vec::new();
    for i in 0..2 {
        let user = format!("payer{i}");
        let o = c.buy("fleeting", &tok(&user), 1);
        let id = order_id(&o);
        let r = c.pay(&id);
        assert_eq!(r.status, 200, "pay {id}: {r}");
        paid.push(id);
    }
    assert_eq!(c.remaining("fleeting"), 4);
    drop(c);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);
    let first_deadline = pending.iter().map(|p| p.2).min().unwrap();
    let last_deadline = pending.iter().map(|p| p.2).max().unwrap();
    if now_ms() >= first_deadline {
        eprintln!("warning: the server stopped only after the first payment deadline");
    }
    let wake = last_deadline + 500;
    while now_ms() < wake {
        thread::sleep(Duration::from_millis(20));
    }

    let mut server = Server::start_in(&dir, 2, &[]);
    let mut c = server.client();
    for (id, _, _) in &pending {
        let mut last = Value::Null;
        let expired = poll(WAIT, || {
            last = admin_order(&mut c, id).expect("order survives the restart");
            (last["status"] == json!("expired")).then_some(())
        });
        assert!(
            expired.is_some(),
            "order {id} not expired within {WAIT:?} of the restart; last: {last}"
        );
    }
    wait_remaining(&mut c, "fleeting", 8);
    for id in &paid {
        let o = admin_order(&mut c, id).expect("paid order");
        assert_eq!(o["status"], json!("paid"), "{o}");
    }
    drop(c);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);

    let server = Server::start_in(&dir, 2, &[]);
    let mut c = server.client();
    // Straight after the start the journal already says expired: the expiry was persisted.
    for (id, _, _) in &pending {
        let o = admin_order(&mut c, id).expect("order survives the second restart");
        assert_eq!(
            o["status"],
            json!("expired"),
            "after the second restart: {o}"
        );
    }
    assert_eq!(c.remaining("fleeting"), 8, "second restart");
    // Give a wrongly re-armed expiry time to fire (it would fire within ~1 s of the start).
    thread::sleep(Duration::from_millis(1500));
    let mut c = server.client();
    assert_eq!(
        c.remaining("fleeting"),
        8,
        "stock of expired orders must come back exactly once"
    );
    for (id, user, _) in &pending {
        let o = admin_order(&mut c, id).expect("order");
        assert_eq!(o["status"], json!("expired"), "{o}");
        assert_error(&c.pay(id), 409, "order_expired");
        assert_error(&c.cancel(id, &tok(user)), 409, "order_expired");
    }
    // The expired holders' limit is free again.
    let o = c.buy("fleeting", &tok(&pending[0].1), 1);
    assert_eq!(o["status"], json!("pending"));
    assert_eq!(c.remaining("fleeting"), 7);
    drop(c);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// 5. Changing the shard count
// ---------------------------------------------------------------------------

/// (user, key, order_id) of every keyed purchase.
type Keyed = Vec<(String, String, String)>;

struct Captured {
    sales: Value,
    orders: BTreeMap<String, Value>,
}

fn capture(server: &Server, order_ids: &[String]) -> Captured {
    let mut c = server.client();
    let r = c.get("/v1/sales");
    assert_eq!(r.status, 200, "{r}");
    let sales = r.json();
    let orders = order_ids
        .iter()
        .map(|id| {
            let o = admin_order(&mut c, id).unwrap_or_else(|| panic!("order {id} is gone"));
            (id.clone(), o)
        })
        .collect();
    Captured { sales, orders }
}

/// Read-only checks of the state built by the test, on every shard's edge.
fn check_state(server: &Server, label: &str, want: &Captured, keyed: &Keyed) {
    let got = capture(server, &want.orders.keys().cloned().collect::<Vec<_>>());
    assert_eq!(got.sales, want.sales, "{label}: GET /v1/sales differs");
    for (id, o) in &want.orders {
        assert_eq!(&got.orders[id], o, "{label}: order {id} differs");
    }
    for (shard, mut conns) in server.clients_per_shard(1).into_iter().enumerate() {
        let c = &mut conns[0];
        // Idempotent replays return the same order, as it is now.
        for (user, key, id) in keyed {
            let r = purchase_keyed(c, sku_of(id), user, 1, key);
            assert_eq!(
                r.status, 201,
                "{label}, shard {shard}: replay of {key}: {r}"
            );
            assert_eq!(
                r.json(),
                want.orders[id],
                "{label}, shard {shard}: replay of key {key} by {user}"
            );
        }
        let r = c.purchase("alpha", &tok("mallory"), Some(1), Some("mallory-key"));
        assert_error(&r, 403, "blocked");
        let r = c.purchase("alpha", &tok("alice"), Some(1), Some("alice-new-key"));
        assert_error(&r, 403, "limit_exceeded");
        let r = c.purchase("bravo", &tok("newcomer"), Some(1), None);
        assert_error(&r, 409, "sold_out");
        let r = c.purchase("delta", &tok("newcomer"), Some(1), None);
        assert_error(&r, 425, "not_started");
    }
}

fn sku_of(order_id: &str) -> &str {
    order_id.split_once('.').map(|(_, s)| s).unwrap_or("")
}

#[test]
fn restart_with_different_shard_counts_preserves_everything() {
    let dir = fresh_data_dir();
    let mut server = Server::start_in(&dir, 2, &[]);
    let mut c = server.client();
    let now = now_ms();
    let spec = |stock: u64, limit: u64| {
        let mut s = sale_spec(stock, limit);
        s["name"] = json!(format!("sale with stock {stock}"));
        s
    };
    c.create_sale("alpha", &spec(50, 3));
    c.create_sale("bravo", &spec(2, 1));
    let mut charlie = spec(30, 2);
    charlie["payment_timeout_ms"] = json!(1000);
    c.create_sale("charlie", &charlie);
    let mut delta = spec(10, 1);
    delta["starts_at"] = json!(now + 3_600_000);
    delta["ends_at"] = json!(now + 7_200_000);
    c.create_sale("delta", &delta);
    let mut echo = spec(20, 2);
    echo["rate_limit_per_sec"] = json!(1000);
    c.create_sale("echo", &echo);
    c.create_sale("foxtrot", &spec(1000, 5));

    let mut keyed: Keyed = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut buy = |c: &mut Client, sku: &str, user: &str, qty: u64, then: &str| -> String {
        let key = format!("key-{}", keyed.len());
        let r = purchase_keyed(c, sku, user, qty, &key);
        assert_eq!(r.status, 201, "buy {sku} as {user}: {r}");
        let id = order_id(&r.json());
        match then {
            "pay" => assert_eq!(c.pay(&id).status, 200),
            "cancel" => assert_eq!(c.cancel(&id, &tok(user)).status, 200),
            "admin-cancel" => assert_eq!(c.cancel(&id, ADMIN_TOKEN).status, 200),
            _ => {}
        }
        keyed.push((user.to_owned(), key, id.clone()));
        ids.push(id.clone());
        id
    };
    // alpha: alice holds her limit (pending 2 + paid 1); bob cancelled, carol admin-cancelled.
    buy(&mut c, "alpha", "alice", 2, "");
    buy(&mut c, "alpha", "alice", 1, "pay");
    buy(&mut c, "alpha", "bob", 1, "cancel");
    buy(&mut c, "alpha", "carol", 3, "admin-cancel");
    buy(&mut c, "alpha", "carol", 1, "");
    // bravo: sold out.
    buy(&mut c, "bravo", "dave", 1, "pay");
    buy(&mut c, "bravo", "erin", 1, "");
    // charlie: one order expires, one is paid in time.
    let expiring = buy(&mut c, "charlie", "frank", 2, "");
    buy(&mut c, "charlie", "grace", 1, "pay");
    // echo and foxtrot: a mix; trudy was blocked and unblocked.
    assert_eq!(c.block("trudy").status, 204);
    assert_eq!(c.unblock("trudy").status, 204);
    assert_eq!(c.block("mallory").status, 204);
    buy(&mut c, "echo", "trudy", 2, "");
    buy(&mut c, "echo", "heidi", 1, "cancel");
    buy(&mut c, "foxtrot", "ivan", 3, "");
    buy(&mut c, "foxtrot", "ivan", 2, "pay");
    buy(&mut c, "foxtrot", "judy", 5, "cancel");
    let mut last = Value::Null;
    let expired = poll(WAIT, || {
        last = admin_order(&mut c, &expiring).expect("expiring order");
        (last["status"] == json!("expired")).then_some(())
    });
    assert!(expired.is_some(), "order did not expire: {last}");
    wait_remaining(&mut c, "charlie", 29);

    let want = capture(&server, &ids);
    let statuses: Vec<&Value> = want.orders.values().map(|o| &o["status"]).collect();
    for s in ["pending", "paid", "cancelled", "expired"] {
        assert!(
            statuses.contains(&&json!(s)),
            "test setup: no {s} order: {statuses:?}"
        );
    }
    check_state(&server, "before any restart", &want, &keyed);
    drop(c);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);

    let mut server = Server::start_in(&dir, 1, &[]);
    check_state(&server, "after restart with --shards 1", &want, &keyed);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);

    let mut server = Server::start_in(&dir, 2, &[]);
    check_state(&server, "after restart back to --shards 2", &want, &keyed);
    // And it still sells: trudy is not blocked, mallory is.
    let mut c = server.client();
    let o = c.buy("foxtrot", &tok("trudy"), 1);
    assert_eq!(o["status"], json!("pending"));
    assert_eq!(c.unblock("mallory").status, 204);
    c.buy("alpha", &tok("mallory"), 1);
    drop(c);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// 6. Compaction
// ---------------------------------------------------------------------------

const SEGMENT: u64 = 65_536;
/// Closed orders kept per sale: keeps the live state (and so the snapshot) small, so that the
/// journal would outgrow the bound many times over without compaction.
const CLOSED_KEPT: usize = 100;

#[test]
fn compaction_bounds_the_journal() {
    let dir = fresh_data_dir();
    let seg_arg = SEGMENT.to_string();
    let kept_arg = CLOSED_KEPT.to_string();
    let args = [
        "--segment-bytes",
        seg_arg.as_str(),
        "--closed-orders-per-sale",
        kept_arg.as_str(),
    ];
    let mut server = Server::start_in(&dir, 1, &args);
    let mut c = server.client();
    c.create_sale("churn", &sale_spec(1_000_000, 1));
    c.create_sale("keep", &sale_spec(100, 10));
    drop(c);
    let keeper = tok("keeper");
    let mut kept = Vec::new();
    // A fresh connection each time: a churn phase can outlast the server's idle timeout on a
    // loaded machine, and a connection kept idle across it would be closed under us.
    let mut keep_one = |server: &Server| {
        let mut c = server.client();
        let id = order_id(&c.buy("keep", &keeper, 1));
        assert_eq!(c.pay(&id).status, 200);
        kept.push(id);
    };
    keep_one(&server);

    // Long user ids and keys make each cycle's records large: every OrderCreated carries the
    // 64-byte user id, the 64-byte key and a 16-byte ULID, every OrderClosed the ULID again.
    const THREADS: usize = 3;
    const CYCLES_PER_THREAD: usize = 2000;
    const MIN_BYTES_PER_CYCLE: u64 = 64 + 64 + 16 + 8 + 16 + 8;
    let run = |c_first: usize, c_last: usize| -> Vec<Vec<String>> {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let mut c = server.client();
                thread::spawn(move || {
                    let user = format!("{t}{}", "u".repeat(63));
                    let token = tok(&user);
                    let mut ids = Vec::new();
                    for n in c_first..c_last {
                        let key = format!("{t}-{n:06}-{}", "k".repeat(55));
                        let r = try_purchase(&mut c, "churn", &token, &key)
                            .map_err(|e| format!("purchase {n}: {e}"))?;
                        if r.status != 201 {
                            return Err(format!("purchase {n}: {r}"));
                        }
                        let o: Value = serde_json::from_slice(&r.body)
                            .map_err(|e| format!("purchase {n}: {e}: {r}"))?;
                        let id = o["order_id"].as_str().unwrap_or("").to_owned();
                        let auth = format!("Bearer {token}");
                        let r = c
                            .try_request(
                                "POST",
                                &format!("/v1/orders/{id}/cancel"),
                                &[("Authorization", &auth)],
                                None,
                            )
                            .map_err(|e| format!("cancel {n}: {e}"))?;
                        if r.status != 200 {
                            return Err(format!("cancel {id}: {r}"));
                        }
                        ids.push(id);
                    }
                    Ok::<_, String>(ids)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .expect("cycle thread panicked")
                    .unwrap_or_else(|e| panic!("buy+cancel cycle failed: {e}"))
            })
            .collect()
    };
    let started = Instant::now();
    let first_half = run(0, CYCLES_PER_THREAD / 2);
    keep_one(&server);
    let second_half = run(CYCLES_PER_THREAD / 2, CYCLES_PER_THREAD);
    keep_one(&server);
    let cycles = THREADS * CYCLES_PER_THREAD;
    eprintln!("{cycles} buy+cancel cycles in {:?}", started.elapsed());
    let cycle_first = first_half[0][0].clone();
    let cycle_middle = second_half[0][0].clone();
    // The last cycle, from here, so that it is certainly among the closed orders kept.
    let mut c = server.client();
    let last_buyer = tok("last-cycle");
    let cycle_last = order_id(&c.buy("churn", &last_buyer, 1));
    assert_eq!(c.cancel(&cycle_last, &last_buyer).status, 200);

    // A snapshot is written in the background and the segments it covers are deleted after it:
    // wait (bounded) until compaction has caught up instead of guessing how long that takes.
    let compacted = |shard: &Path| {
        let (snaps, segs) = journal_files(shard);
        snaps.iter().any(|(seq, _)| *seq > 1) && segs.iter().all(|(seq, _)| *seq > 1)
    };
    let _ = poll(Duration::from_secs(60), || {
        let (_, gen_dir) = newest_gen(&dir);
        let shard = shard_dirs(&gen_dir).pop()?;
        compacted(&shard).then_some(())
    });
    let files = files_under(&dir);
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    let (_, gen_dir) = newest_gen(&dir);
    let gen_files = files_under(&gen_dir);
    let shard = shard_dirs(&gen_dir).pop().expect("shard dir");
    let (snaps, segs) = journal_files(&shard);
    eprintln!(
        "data dir holds {total} bytes in {} files:\n{}",
        files.len(),
        listing(&dir)
    );
    assert!(
        snaps.iter().any(|(seq, _)| *seq > 1),
        "no snapshot beyond the first was taken after {cycles} cycles:\n{}",
        listing(&dir)
    );
    assert!(
        segs.iter().all(|(seq, _)| *seq > 1),
        "segment 1 should have been deleted once a later snapshot covered it:\n{}",
        listing(&dir)
    );
    assert!(
        gen_files.len() < 10,
        "the generation should hold a handful of files, not {}:\n{}",
        gen_files.len(),
        listing(&dir)
    );

    let want = capture(&server, &[kept.clone(), vec![cycle_last.clone()]].concat());
    let mut c = server.client();
    let forgotten: Vec<(String, Option<Value>)> = [&cycle_first, &cycle_middle]
        .iter()
        .map(|id| (id.to_string(), admin_order(&mut c, id)))
        .collect();
    assert_eq!(want.orders[&cycle_last]["status"], json!("cancelled"));
    for id in &kept {
        assert_eq!(want.orders[id]["status"], json!("paid"));
    }
    assert_eq!(c.remaining("churn"), 1_000_000);
    assert_eq!(c.remaining("keep"), 97);
    drop(c);
    let status = server.terminate();
    assert_clean_exit(status, &server);
    drop(server);

    let server = Server::start_in(&dir, 1, &args);
    // The fresh generation's snapshot is exactly the live state.
    let (_, gen_dir) = newest_gen(&dir);
    let shard = shard_dirs(&gen_dir).pop().expect("shard dir");
    let (snaps, _) = journal_files(&shard);
    let live_snapshot = std::fs::metadata(&snaps[0].1).expect("stat snapshot").len();
    // Bound: what compaction keeps is the newest snapshot (two while one replaces the other) and
    // the log since it, which is due for a new snapshot at max(segment, 2 x snapshot) and may
    // overshoot by a segment; the current segment also shows its preallocated DMA buffers.
    // 8 segments + 2 live snapshots leaves room for all of that.
    let bound = 8 * SEGMENT + 2 * live_snapshot;
    let appended_at_least = cycles as u64 * MIN_BYTES_PER_CYCLE;
    eprintln!(
        "journal: {total} bytes on disk, bound {bound}, live snapshot {live_snapshot} bytes, at least {appended_at_least} bytes appended"
    );
    assert!(
        appended_at_least * 2 > 3 * bound,
        "test setup: the workload ({appended_at_least} bytes) must dwarf the bound ({bound}) or the test proves nothing"
    );
    assert!(
        total < bound,
        "data dir holds {total} bytes, more than the bound {bound} (8 x {SEGMENT} + 2 x live snapshot {live_snapshot}):\n{}",
        listing(&dir)
    );

    check_compacted_state(&server, &want, &forgotten);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn check_compacted_state(server: &Server, want: &Captured, forgotten: &[(String, Option<Value>)]) {
    let got = capture(server, &want.orders.keys().cloned().collect::<Vec<_>>());
    assert_eq!(got.sales, want.sales, "sales differ after the restart");
    for (id, o) in &want.orders {
        assert_eq!(&got.orders[id], o, "order {id} differs after the restart");
    }
    let mut c = server.client();
    for (id, before) in forgotten {
        assert_eq!(
            &admin_order(&mut c, id),
            before,
            "order {id} (old cycle) differs after the restart"
        );
    }
    let o = c.buy("churn", &tok("after-compaction"), 1);
    assert_eq!(o["status"], json!("pending"));
}

// ---------------------------------------------------------------------------
// 7. One process per data directory
// ---------------------------------------------------------------------------

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = fresh_data_dir();
    let server = Server::start_in(&dir, 1, &[]);
    let mut c = server.client();
    c.create_sale("locked", &sale_spec(5, 1));
    let o = c.buy("locked", &tok("first"), 1);
    let port = pick_port();
    let out = run(seckill_cmd()
        .args(["serve", "--shards", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&dir));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second server on the same data dir must not start; stderr:\n{stderr}"
    );
    assert!(stderr.contains("in use"), "stderr:\n{stderr}");
    // The first server and its data are unaffected.
    assert_eq!(
        admin_order(&mut c, &order_id(&o)).as_ref(),
        Some(&o),
        "first server's order"
    );
    c.buy("locked", &tok("second"), 1);
    drop(c);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A crash right after a segment roll: the new segment's first DMA block holds recycled buffer
/// memory (older, valid records). Recovery must not replay those a second time.
#[test]
fn crash_right_after_a_segment_roll_replays_nothing_twice() {
    let dir = fresh_data_dir();
    let mut server = Server::start_in(&dir, 1, &["--segment-bytes", "65536"]);
    let mut c = server.client();
    c.create_sale("roll", &sale_spec(100_000, 1));
    let (_, gen) = newest_gen(&dir);
    let shard = shard_dirs(&gen).remove(0);
    let segments = |shard: &Path| journal_files(shard).1.last().map_or(0, |(seq, _)| *seq);
    let first = segments(&shard);
    let mut acknowledged = Vec::new();
    // Buy one at a time until the journal rolls to a third segment, then crash at once.
    for n in 0..20_000 {
        let order = c.buy("roll", &tok(&format!("roll-user-{n}")), 1);
        acknowledged.push(order);
        if segments(&shard) >= first + 2 {
            break;
        }
    }
    assert!(
        segments(&shard) >= first + 2,
        "the journal never rolled:\n{}",
        listing(&dir)
    );
    server.kill9();
    let restarted = Server::start_in(&dir, 1, &[]);
    let mut c = restarted.client();
    let sale = c.get_sale("roll");
    assert_eq!(
        sale["remaining"],
        json!(100_000 - acknowledged.len() as i64),
        "{} acknowledged purchases, but the stock says otherwise: {sale}",
        acknowledged.len()
    );
    for order in [
        &acknowledged[0],
        &acknowledged[acknowledged.len() / 2],
        acknowledged.last().unwrap(),
    ] {
        let id = order["order_id"].as_str().unwrap();
        assert!(
            admin_order(&mut c, id).is_some(),
            "acknowledged order {id} is gone"
        );
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `--durability none` an acknowledgement does not wait for the journal, but the journal
/// still writes each group in the background while the server runs (into its 128 KiB write
/// buffer; the README warns that a crash loses that buffer), and a clean stop writes the rest.
#[test]
fn with_durability_none_the_journal_writes_in_the_background_and_at_the_stop() {
    let dir = fresh_data_dir();
    let mut server = Server::start_in(&dir, 2, &["--durability", "none"]);
    let mut c = server.client();
    c.create_sale("behind", &sale_spec(1_000, 1));
    let orders: Vec<Value> = (0..40)
        .map(|n| c.buy("behind", &tok(&format!("behind-{n}")), 1))
        .collect();
    // The sale and 40 orders: 41 records, on whichever shard owns the SKU.
    let deadline = Instant::now() + WAIT;
    let mut written = None;
    while Instant::now() < deadline {
        written = journal_figure(&server, "seckill_journal_group_records_sum");
        if written >= Some(41) {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        written >= Some(41),
        "the journal reported {written:?} of 41 records written while running:\n{}",
        server.log()
    );
    let status = server.terminate();
    assert_clean_exit(status, &server);
    let restarted = Server::start_in(&dir, 2, &[]);
    let mut c = restarted.client();
    let sale = c.get_sale("behind");
    assert_eq!(sale["remaining"], json!(960), "{sale}");
    for order in &orders {
        let id = order["order_id"].as_str().unwrap();
        assert!(
            admin_order(&mut c, id).is_some(),
            "order {id} is gone after a clean stop"
        );
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

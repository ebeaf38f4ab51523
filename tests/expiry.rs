//! Pending orders expire after payment_timeout_ms and give their stock back.
mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Only a "gave up" bound for what should happen within a few expiry ticks.
const WAIT: Duration = Duration::from_secs(60);

fn short_timeout_sale(stock: u64, per_user_limit: u64, timeout_ms: u64) -> Value {
    let mut spec = sale_spec(stock, per_user_limit);
    spec["payment_timeout_ms"] = json!(timeout_ms);
    spec
}

/// Poll GET /v1/orders/{id} until its status is `want` (up to [`WAIT`]).
#[track_caller]
fn wait_order_status(c: &mut Client, id: &str, token: &str, want: &str) -> Value {
    let mut last = None;
    let got = poll(WAIT, || {
        let r = c.get_order(id, token);
        assert_eq!(r.status, 200, "GET order {id}: {r}");
        let o = r.json();
        if o["status"] == json!(want) {
            Some(o)
        } else {
            last = Some(o);
            None
        }
    });
    got.unwrap_or_else(|| panic!("order {id} not {want} within {WAIT:?}; last seen: {last:?}"))
}

/// `remaining` of `sku` is `want` while order `id` is pending. A loaded machine may let the
/// order's deadline pass before the check, so the order's status is read after `remaining`:
/// still pending then means it was pending when `remaining` was read.
#[track_caller]
fn assert_held_unless_expired(c: &mut Client, sku: &str, want: i64, id: &str, token: &str) {
    let remaining = c.remaining(sku);
    let r = c.get_order(id, token);
    assert_eq!(r.status, 200, "GET order {id}: {r}");
    if r.json()["status"] == json!("pending") {
        assert_eq!(
            remaining, want,
            "{sku}: remaining while order {id} is pending"
        );
    }
}

#[test]
fn pending_order_expires_and_returns_stock() {
    let s = Server::start(1, &[]);
    let mut c = s.client();
    c.create_sale("exp", &short_timeout_sale(5, 2, 1000));
    let alice = tok("alice");

    let o = c.buy("exp", &alice, 2);
    let id = order_id(&o);
    let created = o["created_at"].as_i64().expect("created_at");
    assert_eq!(
        o["expires_at"].as_i64(),
        Some(created + 1000),
        "expires_at = created_at + 1000: {o}"
    );
    assert_eq!(o["status"], json!("pending"));
    assert_held_unless_expired(&mut c, "exp", 3, &id, &alice);

    let expired = wait_order_status(&mut c, &id, &alice, "expired");
    assert_eq!(expired["order_id"], json!(id), "{expired}");
    wait_remaining(&mut c, "exp", 5);
    assert_eq!(c.get_sale("exp")["state"], json!("open"));

    assert_error(&c.pay(&id), 409, "order_expired");
    assert_error(&c.cancel(&id, &alice), 409, "order_expired");
    assert_error(&c.cancel(&id, ADMIN_TOKEN), 409, "order_expired");
    let r = c.get_order(&id, ADMIN_TOKEN);
    assert_eq!(r.json()["status"], json!("expired"), "admin view: {r}");
    assert_eq!(
        c.remaining("exp"),
        5,
        "pay/cancel of an expired order must not move stock"
    );

    // Expired quantity no longer counts against the per-user limit.
    let again = c.buy("exp", &alice, 2);
    assert_held_unless_expired(&mut c, "exp", 3, &order_id(&again), &alice);

    // A paid order never expires (only checked if the pay made it in time).
    let r = c.pay(&order_id(&again));
    if r.status == 200 {
        assert_eq!(r.json()["status"], json!("paid"), "{r}");
        std::thread::sleep(Duration::from_millis(2500));
        let mut c = s.client();
        let r = c.get_order(&order_id(&again), &alice);
        assert_eq!(
            r.json()["status"],
            json!("paid"),
            "a paid order must stay paid: {r}"
        );
        assert_eq!(
            c.remaining("exp"),
            3,
            "a paid order's stock is never returned"
        );
    } else {
        assert_error(&r, 409, "order_expired");
    }
}

#[test]
fn sold_out_then_expiry_makes_stock_buyable_again() {
    let s = Server::start(2, &[]);
    let mut c = s.client();
    // Long enough that the sold-out check below comes before the deadline on a loaded machine.
    c.create_sale("last-one", &short_timeout_sale(1, 1, 3000));
    let (a, b) = (tok("a"), tok("b"));

    let oa = c.buy("last-one", &a, 1);
    assert_error(&c.purchase("last-one", &b, None, None), 409, "sold_out");
    assert_eq!(c.get_sale("last-one")["state"], json!("sold_out"));

    wait_remaining(&mut c, "last-one", 1);
    let sale = c.get_sale("last-one");
    assert_eq!(sale["state"], json!("open"), "{sale}");
    let ob = c.buy("last-one", &b, 1);
    assert_ne!(ob["order_id"], oa["order_id"]);
    assert_eq!(c.remaining("last-one"), 0);

    let r = c.get_order(&order_id(&oa), &a);
    assert_eq!(r.json()["status"], json!("expired"), "{r}");
    assert_error(&c.pay(&order_id(&oa)), 409, "order_expired");

    // Checked from the other shard too.
    for mut conn in s.clients_per_shard(1).into_iter().flatten() {
        let sale = conn.get_sale("last-one");
        assert_eq!(sale["remaining"], json!(0), "{sale}");
        let r = conn.get_order(&order_id(&oa), ADMIN_TOKEN);
        assert_eq!(r.json()["status"], json!("expired"), "{r}");
    }
}

/// Sleeps until the local clock reads `at_ms` (unix ms); returns at once if it already has.
fn sleep_until_ms(at_ms: i64) {
    let left = at_ms - now_ms();
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

/// Where in `[EARLIEST, LATEST]` (ms relative to an order's deadline) the `k`th of `n` actions
/// is sent: evenly spread, so the sweep crosses the deadline whatever the machine's speed.
fn sweep_offset_ms(k: usize, n: usize, earliest: i64, latest: i64) -> i64 {
    earliest + (latest - earliest) * k as i64 / (n as i64 - 1).max(1)
}

/// Pay or cancel sent at moments swept across the payment deadline: well before it (so they
/// win even on a loaded machine), around it (the real race) and after it (so the expiry wins).
/// Every answer must agree with the deadline and with the final state, stock must come back
/// exactly once per unpaid order, and each outcome the test claims to cover (paid, cancelled,
/// expired against a pay, expired against a cancel) must have happened at least once: a run
/// where the race never happened fails instead of passing vacuously.
#[test]
fn pay_or_cancel_racing_the_deadline_is_consistent() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 12;
    /// Long enough that a buy answered late on a loaded box still leaves room before the
    /// earliest send.
    const TIMEOUT_MS: i64 = 1000;
    /// The sweep: from 800 ms before the deadline to 200 ms after it.
    const EARLIEST: i64 = -800;
    const LATEST: i64 = 200;
    let s = Server::start(2, &[]);
    let mut c = s.client();
    let stock = 1000u64;
    c.create_sale("race", &short_timeout_sale(stock, 1, TIMEOUT_MS as u64));

    // 4 threads (2 per shard); action k of THREADS * ROUNDS is sent at the kth point of the
    // sweep, pays when k is even and cancels when odd, so both actions cover the whole sweep.
    let clients: Vec<Client> = s.clients_per_shard(2).into_iter().flatten().collect();
    assert_eq!(clients.len(), THREADS);
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            std::thread::spawn(move || {
                let mut results = Vec::new();
                for i in 0..ROUNDS {
                    let k = i * THREADS + t;
                    let user = format!("race-t{t}-u{i}");
                    let token = tok(&user);
                    let o = c.buy("race", &token, 1);
                    let id = order_id(&o);
                    let expires = o["expires_at"].as_i64().expect("expires_at");
                    sleep_until_ms(expires + sweep_offset_ms(k, THREADS * ROUNDS, EARLIEST, LATEST));
                    let pay = k % 2 == 0;
                    let sent = now_ms();
                    let r = if pay { c.pay(&id) } else { c.cancel(&id, &token) };
                    let got = now_ms();
                    // Same machine, same clock: the deadline decides.
                    if r.status == 200 {
                        assert!(
                            sent < expires,
                            "order {id} accepted pay/cancel sent at {sent}, after expires_at {expires}: {r}"
                        );
                    } else {
                        assert!(
                            got >= expires,
                            "order {id} answered {} at {sent}..{got}, before expires_at {expires}: {r}",
                            r.status
                        );
                    }
                    let outcome = match (pay, r.status) {
                        (true, 200) => {
                            assert_eq!(r.json()["status"], json!("paid"), "{r}");
                            "paid"
                        }
                        (false, 200) => {
                            assert_eq!(r.json()["status"], json!("cancelled"), "{r}");
                            "cancelled"
                        }
                        _ => {
                            assert_error(&r, 409, "order_expired");
                            "expired"
                        }
                    };
                    results.push((id, token, outcome, pay, sent - expires));
                }
                results
            })
        })
        .collect();
    let results: Vec<(String, String, &str, bool, i64)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("race thread panicked"))
        .collect();
    let paid = results.iter().filter(|r| r.2 == "paid").count() as i64;
    let want = stock as i64 - paid;
    let count = |outcome: &str, pay: bool| {
        results
            .iter()
            .filter(|r| r.2 == outcome && r.3 == pay)
            .count()
    };
    let near: Vec<(i64, &str)> = results
        .iter()
        .filter(|r| r.4.abs() <= 50)
        .map(|r| (r.4, r.2))
        .collect();
    eprintln!(
        "deadline race: {} paid, {} cancelled, {} pays and {} cancels lost to the expiry; \
         sent within 50 ms of the deadline (offset ms, outcome): {near:?}",
        count("paid", true),
        count("cancelled", false),
        count("expired", true),
        count("expired", false)
    );
    let summary: Vec<(&str, &str, i64)> = results
        .iter()
        .map(|r| (if r.3 { "pay" } else { "cancel" }, r.2, r.4))
        .collect();
    for (outcome, pay, what) in [
        ("paid", true, "a pay that beat the deadline"),
        ("cancelled", false, "a cancel that beat the deadline"),
        ("expired", true, "a pay that lost to the deadline"),
        ("expired", false, "a cancel that lost to the deadline"),
    ] {
        assert!(
            count(outcome, pay) > 0,
            "the race never produced {what}: the sweep from {EARLIEST} to {LATEST} ms around \
             the deadline did not cross it; (action, outcome, sent - expires_at ms): {summary:?}"
        );
    }

    // A fresh connection: the race can outlast the server's idle timeout on a loaded machine.
    let mut c = s.client();
    wait_remaining(&mut c, "race", want);
    for (id, token, outcome, _, _) in &results {
        let o = wait_order_status(&mut c, id, token, outcome);
        assert_eq!(o["order_id"], json!(id));
    }
    // Nothing is returned twice, even by a late expiry sweep: give one a chance to act (a
    // loaded machine only makes this check less sensitive, never fail wrongly).
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = s.client();
    assert_eq!(
        c.remaining("race"),
        want,
        "stock must be returned exactly once per unpaid order ({paid} paid of {})",
        results.len()
    );
}

#[test]
fn sale_window_opens_and_closes_on_the_clock() {
    let s = Server::start(2, &[]);
    let mut c = s.client();
    let now = now_ms();
    let (starts, ends) = (now + 1_000, now + 6_000);
    c.create_sale(
        "window",
        &json!({"name": "Window", "stock": 100_000, "starts_at": starts, "ends_at": ends, "per_user_limit": 1}),
    );

    // Same machine, same clock: a response received before starts_at must be
    // not_started; a 201 must be received at/after starts_at and requested
    // before ends_at; ended must be received at/after ends_at.
    let (mut seen_425, mut seen_201, mut seen_410) = (0, 0, 0);
    let deadline = ends + 10_000;
    let mut i = 0;
    while seen_410 == 0 {
        assert!(
            now_ms() < deadline,
            "no 410 ended within 10 s after ends_at"
        );
        let token = tok(&format!("w{i}"));
        i += 1;
        let sent = now_ms();
        let r = c.purchase("window", &token, None, None);
        let got = now_ms();
        match r.status {
            425 => {
                assert_error(&r, 425, "not_started");
                assert!(
                    sent < starts,
                    "not_started at {sent}..{got}, after starts_at {starts}"
                );
                seen_425 += 1;
            }
            201 => {
                assert!(
                    got >= starts,
                    "admitted at {sent}..{got}, before starts_at {starts}: {r}"
                );
                assert!(
                    sent < ends,
                    "admitted at {sent}..{got}, after ends_at {ends}: {r}"
                );
                seen_201 += 1;
            }
            410 => {
                assert_error(&r, 410, "ended");
                assert!(got >= ends, "ended at {sent}..{got}, before ends_at {ends}");
                seen_410 += 1;
            }
            _ => panic!("unexpected answer during the sale window: {r}"),
        }
        let sent = now_ms();
        let sale = c.get_sale("window");
        let got = now_ms();
        let state = sale["state"].as_str().unwrap_or("?").to_owned();
        let ok = match state.as_str() {
            "upcoming" => sent < starts,
            "open" => got >= starts && sent < ends,
            "ended" => got >= ends,
            _ => false,
        };
        assert!(
            ok,
            "state {state:?} at {sent}..{got} with window {starts}..{ends}: {sale}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("window: {seen_425} not_started, {seen_201} admitted, {seen_410} ended");
    assert!(seen_201 > 0, "never admitted during a 5 s open window");
    assert_eq!(c.remaining("window"), 100_000 - seen_201);
}

#[test]
fn sold_out_sale_reads_ended_after_its_end() {
    let s = Server::start(1, &[]);
    let mut c = s.client();
    let now = now_ms();
    // Long enough that the purchase below lands before the end on a loaded machine.
    let ends = now + 4_000;
    c.create_sale(
        "brief",
        &json!({"name": "Brief", "stock": 1, "starts_at": now - 1_000, "ends_at": ends}),
    );
    c.buy("brief", &tok("a"), 1);
    let mut last = None;
    poll(WAIT + Duration::from_secs(2), || {
        let sent = now_ms();
        let sale = c.get_sale("brief");
        let got = now_ms();
        match sale["state"].as_str() {
            Some("sold_out") if sent < ends => {
                last = Some(sale);
                None
            }
            Some("ended") if got >= ends => Some(()),
            _ => panic!("state at {sent}..{got} (ends_at {ends}) should be sold_out before and ended after: {sale}"),
        }
    })
    .unwrap_or_else(|| panic!("sale never read ended; last: {last:?}"));
    // ended (410) comes before sold_out (409) in the purchase checks.
    assert_error(&c.purchase("brief", &tok("b"), None, None), 410, "ended");
}

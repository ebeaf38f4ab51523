//! The waiting room over HTTP against the real server: tickets, their random early order, the
//! admission schedule, passes, and the refusals. `waiting_room_redis.rs` runs the same tests in
//! cluster mode and adds two nodes sharing one queue.
pub mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::fair::{buy_with_pass, restartable_store, scrape, sleep_until};
use common::*;
use serde_json::{json, Value};

/// Early shoppers per sale: 20! arrival orders, so a draw that kept arrival order is caught.
const EARLY: usize = 20;

pub fn shopper(i: usize) -> String {
    format!("shopper-{i:02}")
}

/// A waiting-room sale of `stock` units starting `lead_ms` from now, admitting `rate` a second.
pub fn room_sale(c: &mut Client, sku: &str, stock: u64, lead_ms: i64, rate: u64) -> Value {
    let now = now_ms();
    let spec = json!({
        "name": "waiting room", "stock": stock,
        "starts_at": now + lead_ms, "ends_at": now + 3_600_000,
        "admission": "waiting_room", "admission_rate": rate,
        "queue_opens_at": now - 1_000,
    });
    c.create_sale(sku, &spec)
}

pub fn join(c: &mut Client, sku: &str, user: &str) -> Response {
    c.authed(
        "POST",
        &format!("/v1/sales/{sku}/queue"),
        &tok(user),
        Some(""),
    )
}

pub fn ticket(c: &mut Client, sku: &str, user: &str, number: u64) -> Response {
    c.authed(
        "GET",
        &format!("/v1/sales/{sku}/queue/{number}"),
        &tok(user),
        None,
    )
}

/// Polls ticket `number` of `user` until it reaches a state other than `waiting`.
pub fn settled(c: &mut Client, sku: &str, user: &str, number: u64) -> Value {
    poll(Duration::from_secs(60), || {
        let r = ticket(c, sku, user, number);
        assert_status(&r, 200);
        let body = r.json();
        (body["state"] != "waiting").then_some(body)
    })
    .unwrap_or_else(|| panic!("ticket {number} of {user} never left the queue"))
}

#[test]
fn early_tickets_are_admitted_in_a_random_order_then_late_ones_in_arrival_order() {
    let server = Server::start(2, &[]);
    let mut c = server.client();
    let sale = room_sale(&mut c, "room", 5, 8_000, 50);
    let starts_at = sale["starts_at"].as_i64().expect("starts_at");
    c.block("blocked-shopper");

    // Joining before the start: one ticket each, no place in line yet.
    let mut tickets = Vec::new();
    for i in 0..EARLY {
        let r = join(&mut c, "room", &shopper(i));
        assert_status(&r, 201);
        let body = r.json();
        assert!(
            body["issued_at"].as_i64() < Some(starts_at),
            "joined after the start; the machine is too slow for this test: {body}"
        );
        assert_eq!(
            (&body["state"], &body["position"]),
            (&json!("waiting"), &Value::Null),
            "{body}"
        );
        tickets.push(body["ticket"].as_u64().expect("ticket"));
    }
    let numbers: BTreeSet<u64> = tickets.iter().copied().collect();
    assert_eq!(
        numbers.len(),
        EARLY,
        "tickets are numbered apart: {tickets:?}"
    );
    // Joining again answers with the ticket held.
    let again = join(&mut c, "room", &shopper(3));
    assert_status(&again, 200);
    assert_eq!(again.json()["ticket"], json!(tickets[3]));
    assert_error(&join(&mut c, "room", "blocked-shopper"), 403, "blocked");
    // Nobody buys before being admitted.
    assert_error(
        &buy_with_pass(&mut c, "room", &shopper(0), None),
        425,
        "not_started",
    );

    sleep_until(starts_at);
    let late = join(&mut c, "room", "late-shopper");
    assert_status(&late, 201);
    let late = late.json();
    assert_eq!(
        late["position"],
        json!(EARLY + 1),
        "behind the early tickets: {late}"
    );

    // After the start every early ticket has a place: a permutation of 1..=EARLY.
    let positions: Vec<u64> = (0..EARLY)
        .map(|i| {
            let r = ticket(&mut c, "room", &shopper(i), tickets[i]);
            assert_status(&r, 200);
            r.json()["position"]
                .as_u64()
                .expect("a position after the start")
        })
        .collect();
    let sorted: BTreeSet<u64> = positions.iter().copied().collect();
    assert_eq!(
        sorted,
        (1..=EARLY as u64).collect::<BTreeSet<_>>(),
        "{positions:?}"
    );
    assert_ne!(
        positions,
        (1..=EARLY as u64).collect::<Vec<_>>(),
        "the early tickets kept their arrival order"
    );

    // Admitted in position order, each with a pass that buys; the stock covers the first five.
    let mut by_position: Vec<usize> = (0..EARLY).collect();
    by_position.sort_by_key(|i| positions[*i]);
    for (rank, i) in by_position.iter().enumerate() {
        let user = shopper(*i);
        let status = settled(&mut c, "room", &user, tickets[*i]);
        if rank < 5 {
            assert_eq!(status["state"], json!("admitted"), "{status}");
            let pass = status["pass"]
                .as_str()
                .expect("an admitted ticket has a pass");
            assert_error(
                &buy_with_pass(&mut c, "room", &user, None),
                403,
                "not_admitted",
            );
            // Another shopper's pass is no pass.
            assert_error(
                &buy_with_pass(&mut c, "room", "late-shopper", Some(pass)),
                403,
                "not_admitted",
            );
            assert_status(&buy_with_pass(&mut c, "room", &user, Some(pass)), 201);
        } else {
            assert_eq!(status["state"], json!("sold_out"), "{status}");
            assert!(status.get("pass").is_none(), "{status}");
        }
    }
    assert_eq!(c.remaining("room"), 0);
    let late = ticket(
        &mut c,
        "room",
        "late-shopper",
        late["ticket"].as_u64().expect("n"),
    );
    assert_eq!(late.json()["state"], json!("sold_out"));
    assert_error(&join(&mut c, "room", "too-late"), 409, "sold_out");

    let metrics = scrape(&server);
    let count = |name| metrics.count(name, &[]);
    assert_eq!(
        count("seckill_queue_tickets_issued_total"),
        EARLY as u64 + 1
    );
    assert_eq!(count("seckill_passes_used_total"), 5);
    assert!(count("seckill_passes_issued_total") >= 5);
    // The gauge is as of the owner's last look at the sale (in cluster mode, its last sync).
    let tickets = poll(Duration::from_secs(30), || {
        let tickets = scrape(&server).count("seckill_queue_tickets", &[("sku", "room")]);
        (tickets == EARLY as u64 + 1).then_some(tickets)
    });
    assert_eq!(tickets, Some(EARLY as u64 + 1), "the queue-length gauge");
}

#[test]
fn the_queue_refuses_what_it_cannot_take() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    c.create_sale("fcfs", &sale_spec(5, 1));
    assert_error(&join(&mut c, "fcfs", "alice"), 409, "no_waiting_room");
    assert_error(&ticket(&mut c, "fcfs", "alice", 1), 409, "no_waiting_room");
    assert_error(&join(&mut c, "nosuch", "alice"), 404, "unknown_sale");
    assert_error(
        &c.request("POST", "/v1/sales/fcfs/queue", &[], Some("")),
        401,
        "unauthorized",
    );

    let now = now_ms();
    let later = json!({
        "name": "later", "stock": 5, "starts_at": now + 600_000, "ends_at": now + 900_000,
        "admission": "waiting_room", "queue_opens_at": now + 300_000,
    });
    c.create_sale("later", &later);
    assert_error(&join(&mut c, "later", "alice"), 425, "queue_not_open");

    // A sale without tickets may still be replaced; one with a ticket is held to it.
    assert_status(&c.put_sale("later", &later), 201);
    let sale = room_sale(&mut c, "room", 5, 600_000, 10);
    let mine = join(&mut c, "room", "alice").json();
    let number = mine["ticket"].as_u64().expect("ticket");
    let mut replacement = sale.clone();
    for derived in ["sku", "remaining", "state", "currency", "stock_buckets"] {
        replacement.as_object_mut().expect("object").remove(derived);
    }
    for other_mode in ["register_from", "overbooking_percent", "pow_bits", "price"] {
        replacement
            .as_object_mut()
            .expect("object")
            .remove(other_mode);
    }
    assert_error(&c.put_sale("room", &replacement), 409, "sale_exists");
    assert_error(
        &ticket(&mut c, "room", "bob", number),
        404,
        "unknown_ticket",
    );
    for bad in ["0", "01", "x", "-1", "99999999999999999999999"] {
        let r = c.authed(
            "GET",
            &format!("/v1/sales/room/queue/{bad}"),
            &tok("alice"),
            None,
        );
        assert_error(&r, 404, "unknown_ticket");
    }
    assert_error(
        &ticket(&mut c, "room", "alice", number + 1),
        404,
        "unknown_ticket",
    );
}

#[test]
fn admission_settings_are_defaulted_and_validated() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    let now = now_ms();
    let base = || json!({"name": "n", "stock": 5, "starts_at": now + 7_200_000, "ends_at": now + 9_000_000});
    let mut spec = base();
    spec["admission"] = json!("waiting_room");
    let sale = c.create_sale("defaults", &spec);
    assert_eq!(
        (
            &sale["admission"],
            &sale["admission_rate"],
            &sale["queue_opens_at"]
        ),
        (&json!("waiting_room"), &json!(100), &json!(now + 3_600_000)),
        "{sale}"
    );
    assert_eq!(c.create_sale("plain", &base())["admission"], json!("fcfs"));
    let bad = [
        json!({"admission": "lottery_ticket"}),
        json!({"admission": 1}),
        json!({"admission_rate": 10}),
        json!({"queue_opens_at": now}),
        json!({"admission": "waiting_room", "admission_rate": 0}),
        json!({"admission": "waiting_room", "admission_rate": 1_000_001}),
        json!({"admission": "waiting_room", "queue_opens_at": now + 7_200_001}),
        json!({"admission": "waiting_room", "stock_buckets": 2}),
    ];
    for extra in bad {
        let mut spec = base();
        for (key, value) in extra.as_object().expect("object") {
            spec[key] = value.clone();
        }
        assert_error(&c.put_sale("bad", &spec), 400, "bad_request");
    }
}

#[test]
fn joining_a_sale_that_asks_for_work_needs_a_solution() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    let now = now_ms();
    let spec = json!({
        "name": "n", "stock": 5, "starts_at": now + 600_000, "ends_at": now + 900_000,
        "admission": "waiting_room", "pow_bits": 8,
    });
    c.create_sale("worked", &spec);
    assert_error(&join(&mut c, "worked", "alice"), 403, "pow_invalid");
    let challenge = c
        .authed("GET", "/v1/sales/worked/pow", &tok("alice"), None)
        .json();
    let bytes: [u8; 32] = hex::decode(challenge["challenge"].as_str().expect("hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    let nonce = seckill::sale::pow::solve(&bytes, 8);
    let proof = format!("{}.{nonce}", challenge["window"]);
    let auth = format!("Bearer {}", tok("alice"));
    let r = c.request(
        "POST",
        "/v1/sales/worked/queue",
        &[("Authorization", &auth), ("X-Seckill-Pow", &proof)],
        Some(""),
    );
    assert_status(&r, 201);
}

/// A restarted node answers the same tickets: in embedded mode from its journal, in cluster
/// mode from Redis (the node restarts on the same one).
#[test]
fn tickets_survive_a_restart() {
    let dir = ScratchDir::new();
    let (_redis, args) = restartable_store();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (starts_at, before) = {
        let server = Server::start_in(dir.path(), 2, &args);
        let mut c = server.client();
        let sale = room_sale(&mut c, "room", 3, 5_000, 1_000);
        let tickets: Vec<u64> = (0..6)
            .map(|i| {
                join(&mut c, "room", &shopper(i)).json()["ticket"]
                    .as_u64()
                    .expect("n")
            })
            .collect();
        (sale["starts_at"].as_i64().expect("starts_at"), tickets)
    };
    let server = Server::start_in(dir.path(), 2, &args);
    let mut c = server.client();
    for (i, number) in before.iter().enumerate() {
        assert_eq!(
            ticket(&mut c, "room", &shopper(i), *number).json()["ticket"],
            json!(number)
        );
    }
    sleep_until(starts_at);
    let positions: BTreeSet<u64> = (0..6)
        .map(|i| {
            ticket(&mut c, "room", &shopper(i), before[i]).json()["position"]
                .as_u64()
                .expect("p")
        })
        .collect();
    assert_eq!(positions, (1..=6).collect::<BTreeSet<_>>());
    // Joining again after the restart is still the ticket held, not a new one.
    let again = join(&mut c, "room", &shopper(2));
    assert_status(&again, 200);
    assert_eq!(again.json()["ticket"], json!(before[2]));
    assert_eq!(join(&mut c, "room", "newcomer").json()["ticket"], json!(7));
}

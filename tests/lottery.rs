//! The lottery over HTTP against the real server: registration, the commitment, the draw at the
//! start, winners' passes, losers told at once, the published record, and `seckill lottery
//! verify` recomputing it. `lottery_redis.rs` runs the same tests in cluster mode and adds two
//! nodes sharing one draw.
pub mod common;

use std::collections::BTreeSet;

use common::fair::{buy_with_pass, restartable_store, scrape, sleep_until};
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn registrant(i: usize) -> String {
    format!("entrant-{i:02}")
}

/// A lottery of `stock` units (one per shopper) drawing `lead_ms` from now.
pub fn lottery_sale(
    c: &mut Client,
    sku: &str,
    stock: u64,
    lead_ms: i64,
    overbooking: u64,
) -> Value {
    let now = now_ms();
    let spec = json!({
        "name": "lottery", "stock": stock, "per_user_limit": 1,
        "starts_at": now + lead_ms, "ends_at": now + 3_600_000,
        "admission": "lottery", "register_from": now - 1_000,
        "overbooking_percent": overbooking,
    });
    c.create_sale(sku, &spec)
}

pub fn register(c: &mut Client, sku: &str, user: &str) -> Response {
    c.authed(
        "POST",
        &format!("/v1/sales/{sku}/register"),
        &tok(user),
        Some(""),
    )
}

pub fn registration(c: &mut Client, sku: &str, user: &str) -> Value {
    let r = c.authed(
        "GET",
        &format!("/v1/sales/{sku}/register"),
        &tok(user),
        None,
    );
    assert_status(&r, 200);
    r.json()
}

/// `seckill lottery verify` against `server`: its exit status and output.
pub fn verify(server: &Server, sku: &str) -> (bool, String) {
    let out = process::seckill_cmd()
        .args([
            "lottery",
            "verify",
            "--addr",
            &format!("127.0.0.1:{}", server.port),
            "--sku",
            sku,
        ])
        .output()
        .expect("run seckill lottery verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn registrants_are_drawn_from_the_committed_seed_and_anyone_can_check_it() {
    let server = Server::start(2, &[]);
    let mut c = server.client();
    // 4 units, one each, 150 %: 6 winners among 15.
    let sale = lottery_sale(&mut c, "draw", 4, 6_000, 150);
    let starts_at = sale["starts_at"].as_i64().expect("starts_at");
    c.block("blocked-entrant");
    for i in 0..15 {
        let r = register(&mut c, "draw", &registrant(i));
        assert_status(&r, 201);
        assert_eq!(r.json()["state"], json!("registered"), "{r}");
    }
    assert_status(&register(&mut c, "draw", &registrant(3)), 200);
    assert_error(&register(&mut c, "draw", "blocked-entrant"), 403, "blocked");
    let before = c.get("/v1/sales/draw/lottery").json();
    assert_eq!(
        (
            &before["drawn"],
            &before["seed"],
            &before["registrants"],
            &before["winners"]
        ),
        (&json!(false), &Value::Null, &json!(15), &json!(6)),
        "{before}"
    );
    let commitment = before["commitment"]
        .as_str()
        .expect("commitment")
        .to_owned();
    assert_error(
        &c.get("/v1/sales/draw/lottery/registrants"),
        425,
        "not_drawn",
    );
    let (verified, out) = verify(&server, "draw");
    assert!(!verified && out.contains("not been drawn"), "{out}");
    assert_error(
        &buy_with_pass(&mut c, "draw", &registrant(0), None),
        425,
        "not_started",
    );

    sleep_until(starts_at);
    assert_error(
        &register(&mut c, "draw", "latecomer"),
        409,
        "registration_closed",
    );
    let after = c.get("/v1/sales/draw/lottery").json();
    let seed = hex::decode(after["seed"].as_str().expect("the seed is revealed")).expect("hex");
    assert_eq!(
        hex::encode(Sha256::digest(&seed)),
        commitment,
        "the seed is not the one committed to"
    );
    assert_eq!(after["commitment"], json!(commitment));

    // The published order, page by page, is the seed's order.
    let mut published = Vec::new();
    let mut offset = 0;
    loop {
        let page = c
            .get(&format!(
                "/v1/sales/draw/lottery/registrants?offset={offset}&limit=4"
            ))
            .json();
        for name in page["registrants"].as_array().expect("registrants") {
            published.push(name.as_str().expect("a name").to_owned());
        }
        match page["next"].as_u64() {
            Some(next) => offset = next,
            None => break,
        }
    }
    let mut ours: Vec<(u64, String)> = published
        .iter()
        .map(|user| {
            let digest = Sha256::new()
                .chain_update(&seed)
                .chain_update(user.as_bytes())
                .finalize();
            let first = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
            (first >> 12, user.clone())
        })
        .collect();
    ours.sort();
    let recomputed: Vec<String> = ours.into_iter().map(|(_, user)| user).collect();
    assert_eq!(published, recomputed);
    let everyone: BTreeSet<String> = (0..15).map(registrant).collect();
    assert_eq!(published.iter().cloned().collect::<BTreeSet<_>>(), everyone);
    assert_ne!(
        published,
        (0..15).map(registrant).collect::<Vec<_>>(),
        "the draw kept the registration order"
    );
    let (verified, out) = verify(&server, "draw");
    assert!(verified, "{out}");
    for winner in &published[..6] {
        assert!(out.contains(&format!("winner {winner}\n")), "{out}");
    }

    // Winners learn it with a pass that buys; losers learn it at once, and cannot buy.
    let mut bought = 0;
    for (place, user) in published.iter().enumerate() {
        let mine = registration(&mut c, "draw", user);
        assert_eq!(mine["position"], json!(place + 1), "{mine}");
        if place >= 6 {
            assert_eq!(mine["state"], json!("lost"), "{mine}");
            assert!(mine.get("pass").is_none(), "{mine}");
            assert_error(
                &buy_with_pass(&mut c, "draw", user, None),
                403,
                "not_admitted",
            );
            continue;
        }
        if bought == 4 {
            assert_eq!(mine["state"], json!("sold_out"), "{mine}");
            continue;
        }
        assert_eq!(mine["state"], json!("won"), "{mine}");
        let pass = mine["pass"].as_str().expect("a winner has a pass");
        let loser = &published[14];
        assert_error(
            &buy_with_pass(&mut c, "draw", loser, Some(pass)),
            403,
            "not_admitted",
        );
        assert_status(&buy_with_pass(&mut c, "draw", user, Some(pass)), 201);
        bought += 1;
    }
    assert_eq!(c.remaining("draw"), 0);
    let metrics = scrape(&server);
    assert_eq!(
        metrics.count("seckill_lottery_registrations_total", &[]),
        15
    );
    assert_eq!(metrics.count("seckill_passes_used_total", &[]), 4);
    // The gauges are as of the owner's last look at the sale (in cluster mode, its last sync).
    let gauges = poll(std::time::Duration::from_secs(30), || {
        let metrics = scrape(&server);
        let gauges = (
            metrics.count("seckill_queue_tickets", &[("sku", "draw")]),
            metrics.count("seckill_lottery_winners", &[("sku", "draw")]),
        );
        (gauges == (15, 6)).then_some(gauges)
    });
    assert_eq!(gauges, Some((15, 6)), "registrations and winners");
}

#[test]
fn lottery_calls_refuse_what_they_cannot_take() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    c.create_sale("fcfs", &sale_spec(5, 1));
    assert_error(&register(&mut c, "fcfs", "alice"), 409, "no_lottery");
    assert_error(&c.get("/v1/sales/fcfs/lottery"), 409, "no_lottery");
    assert_error(&c.get("/v1/sales/nosuch/lottery"), 404, "unknown_sale");
    lottery_sale(&mut c, "lot", 5, 600_000, 100);
    // A lottery is not a waiting room, nor the other way round.
    assert_error(
        &c.authed("POST", "/v1/sales/lot/queue", &tok("alice"), Some("")),
        409,
        "no_waiting_room",
    );
    let r = c.authed("GET", "/v1/sales/lot/register", &tok("alice"), None);
    assert_error(&r, 404, "unknown_ticket");
    assert_error(
        &c.get("/v1/sales/lot/lottery/registrants?offset=-1"),
        400,
        "invalid_query",
    );
    assert_error(
        &c.get("/v1/sales/lot/lottery/registrants?limit=0"),
        400,
        "invalid_query",
    );
    assert_error(
        &c.get("/v1/sales/lot/lottery/registrants?page=1"),
        400,
        "invalid_query",
    );
    let now = now_ms();
    let later = json!({
        "name": "later", "stock": 5, "starts_at": now + 600_000, "ends_at": now + 900_000,
        "admission": "lottery", "register_from": now + 300_000,
    });
    c.create_sale("later", &later);
    assert_error(&register(&mut c, "later", "alice"), 425, "queue_not_open");
    // Replaced before anyone registered: a new seed is harmless. After a registration it
    // would be a new draw: refused.
    assert_status(&c.put_sale("later", &later), 201);
    let mut open = later.clone();
    open["register_from"] = json!(now - 1_000);
    assert_status(&c.put_sale("later", &open), 201);
    assert_status(&register(&mut c, "later", "alice"), 201);
    open["starts_at"] = json!(now + 700_000);
    assert_error(&c.put_sale("later", &open), 409, "sale_exists");
    for bad in [
        json!({"admission": "lottery", "overbooking_percent": 99}),
        json!({"admission": "lottery", "overbooking_percent": 1_001}),
        json!({"admission": "lottery", "register_from": now + 600_001}),
        json!({"admission": "lottery", "admission_rate": 10}),
        json!({"admission": "waiting_room", "register_from": now}),
        json!({"overbooking_percent": 150}),
    ] {
        let mut spec =
            json!({"name": "n", "stock": 5, "starts_at": now + 600_000, "ends_at": now + 900_000});
        for (key, value) in bad.as_object().expect("object") {
            spec[key] = value.clone();
        }
        assert_error(&c.put_sale("bad", &spec), 400, "bad_request");
    }
    let defaults = lottery_sale(&mut c, "defaults", 5, 600_000, 100);
    assert_eq!(defaults["overbooking_percent"], json!(100));
}

/// Registrations and the draw survive a restart: the journal in embedded mode, Redis in
/// cluster mode (the node restarts on the same one). The commitment does not change.
#[test]
fn registrations_and_the_draw_survive_a_restart() {
    let dir = ScratchDir::new();
    let (_redis, args) = restartable_store();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (starts_at, commitment) = {
        let server = Server::start_in(dir.path(), 2, &args);
        let mut c = server.client();
        let sale = lottery_sale(&mut c, "lot", 2, 4_000, 100);
        for i in 0..8 {
            assert_status(&register(&mut c, "lot", &registrant(i)), 201);
        }
        let record = c.get("/v1/sales/lot/lottery").json();
        (
            sale["starts_at"].as_i64().expect("starts_at"),
            record["commitment"].clone(),
        )
    };
    let server = Server::start_in(dir.path(), 2, &args);
    let mut c = server.client();
    let record = c.get("/v1/sales/lot/lottery").json();
    assert_eq!(
        (&record["commitment"], &record["registrants"]),
        (&commitment, &json!(8))
    );
    assert_status(&register(&mut c, "lot", &registrant(0)), 200);
    sleep_until(starts_at);
    let (verified, out) = verify(&server, "lot");
    assert!(verified, "{out}");
    let won = (0..8)
        .filter(|i| registration(&mut c, "lot", &registrant(*i))["state"] == json!("won"))
        .count();
    assert_eq!(won, 2);
}

//! Proof-of-work over HTTP against the real server: a sale with `pow_bits` refuses purchases
//! without a valid, current solution of the shopper's own challenge (`403 pow_invalid`), and
//! takes them with one. `pow_redis.rs` runs the same tests in cluster mode, and adds two nodes
//! on one Redis that issue and accept the same challenges.
//!
//! The test solves and derives challenges with its own SHA-256 and HMAC code, from the rule the
//! README and `GET /v1/sales/{sku}/pow` document, not with the server's library.
pub mod common;

use common::fair::restartable_store;
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Bits the tests' sales ask for: cheap to solve in a debug build, still 1 in 1,024 by chance.
pub const BITS: u32 = 10;
/// The challenge window, as documented.
const WINDOW_MS: i64 = 60_000;

/// `HMAC-SHA256(HMAC-SHA256(secret, label), sku ‖ 0 ‖ user ‖ 0 ‖ window_be)`, as documented.
pub fn challenge_for(sku: &str, user: &str, window: u64) -> [u8; 32] {
    let mut derive = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    derive.update(b"seckill proof-of-work v1");
    let key = derive.finalize().into_bytes();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
    mac.update(sku.as_bytes());
    mac.update(&[0]);
    mac.update(user.as_bytes());
    mac.update(&[0]);
    mac.update(&window.to_be_bytes());
    mac.finalize().into_bytes().into()
}

fn zero_bits(challenge: &[u8; 32], nonce: u64) -> u32 {
    let hash = Sha256::new()
        .chain_update(challenge)
        .chain_update(nonce.to_be_bytes())
        .finalize();
    let mut zeros = 0;
    for byte in hash {
        if byte != 0 {
            return zeros + byte.leading_zeros();
        }
        zeros += 8;
    }
    zeros
}

pub fn solve(challenge: &[u8; 32]) -> u64 {
    (0u64..)
        .find(|n| zero_bits(challenge, *n) >= BITS)
        .expect("a solution")
}

/// A nonce that does not solve `challenge`.
fn wrong(challenge: &[u8; 32]) -> u64 {
    (0u64..)
        .find(|n| zero_bits(challenge, *n) < BITS)
        .expect("a non-solution")
}

pub fn fetch_challenge(c: &mut Client, sku: &str, user: &str) -> Value {
    let r = c.authed("GET", &format!("/v1/sales/{sku}/pow"), &tok(user), None);
    assert_status(&r, 200);
    r.json()
}

pub fn buy_with(c: &mut Client, sku: &str, user: &str, proof: Option<&str>) -> Response {
    let auth = format!("Bearer {}", tok(user));
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(proof) = proof {
        headers.push(("X-Seckill-Pow", proof));
    }
    c.request(
        "POST",
        &format!("/v1/sales/{sku}/purchase"),
        &headers,
        Some(r#"{"quantity":1}"#),
    )
}

fn pow_sale(c: &mut Client, sku: &str, bits: u32) {
    let mut spec = sale_spec(10, 2);
    spec["pow_bits"] = json!(bits);
    let sale = c.create_sale(sku, &spec);
    assert_eq!(sale["pow_bits"], json!(bits), "{sale}");
}

/// Scrapes until a shard answers (scrapes are rate-limited).
fn pow_failures(server: &Server) -> u64 {
    for _ in 0..100 {
        let r = server.client().get("/metrics");
        if r.status == 200 {
            let text = r.text();
            let exposition = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            return exposition.count("seckill_pow_failures_total", &[]);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no scrape answered");
}

#[test]
fn a_sale_that_asks_for_work_takes_only_current_solutions_of_the_shoppers_own_challenge() {
    let server = Server::start(2, &[]);
    let mut c = server.client();
    pow_sale(&mut c, "pow", BITS);
    let issued = fetch_challenge(&mut c, "pow", "alice");
    let window = issued["window"].as_u64().expect("window");
    assert_eq!(
        (&issued["sku"], &issued["user_id"], &issued["bits"]),
        (&json!("pow"), &json!("alice"), &json!(BITS)),
        "{issued}"
    );
    assert_eq!(issued["expires_at"], json!((window + 2) * WINDOW_MS as u64));
    let challenge = challenge_for("pow", "alice", window);
    assert_eq!(
        issued["challenge"],
        json!(hex::encode(challenge)),
        "{issued}"
    );
    let good = format!("{window}.{}", solve(&challenge));

    // Every wrong proof is refused the same way, before any stock is touched.
    let bobs = challenge_for("pow", "bob", window);
    let other_sale = challenge_for("other", "alice", window);
    let stale = challenge_for("pow", "alice", window - 2);
    // Two ahead: one ahead becomes current if the minute turns while the test runs.
    let future = challenge_for("pow", "alice", window + 2);
    let refused = [
        None,
        Some("garbage".to_owned()),
        Some(format!("{window}.")),
        Some(format!("{window}.{}", wrong(&challenge))),
        Some(format!("{window}.{}", solve(&bobs))),
        Some(format!("{window}.{}", solve(&other_sale))),
        Some(format!("{}.{}", window - 2, solve(&stale))),
        Some(format!("{}.{}", window + 2, solve(&future))),
    ];
    for proof in &refused {
        let r = buy_with(&mut c, "pow", "alice", proof.as_deref());
        assert_error(&r, 403, "pow_invalid");
    }
    assert_eq!(c.remaining("pow"), 10);
    assert_eq!(pow_failures(&server), refused.len() as u64);

    // The right one buys, and again within its window (the per-user limit bounds it).
    assert_status(&buy_with(&mut c, "pow", "alice", Some(&good)), 201);
    assert_status(&buy_with(&mut c, "pow", "alice", Some(&good)), 201);
    assert_error(
        &buy_with(&mut c, "pow", "alice", Some(&good)),
        403,
        "limit_exceeded",
    );
    // Bob's own solution works for Bob only.
    let bob = format!("{window}.{}", solve(&bobs));
    assert_status(&buy_with(&mut c, "pow", "bob", Some(&bob)), 201);
    assert_eq!(c.remaining("pow"), 7);

    // The blocklist comes first: a blocked shopper learns that, not that work is missing.
    c.block("mallory");
    assert_error(&buy_with(&mut c, "pow", "mallory", None), 403, "blocked");
}

#[test]
fn a_sale_without_work_needs_no_proof_and_its_challenge_says_so() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    c.create_sale("free", &sale_spec(5, 1));
    assert_eq!(c.get_sale("free")["pow_bits"], json!(0));
    assert_eq!(fetch_challenge(&mut c, "free", "alice")["bits"], json!(0));
    assert_status(
        &buy_with(&mut c, "free", "alice", Some("not.even-parsed")),
        201,
    );
}

#[test]
fn the_challenge_needs_a_shopper_and_a_sale() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    pow_sale(&mut c, "pow", BITS);
    assert_error(&c.get("/v1/sales/pow/pow"), 401, "unauthorized");
    let admin = c.authed("GET", "/v1/sales/pow/pow", ADMIN_TOKEN, None);
    assert_error(&admin, 401, "unauthorized");
    let r = c.authed("GET", "/v1/sales/nosuch/pow", &tok("alice"), None);
    assert_error(&r, 404, "unknown_sale");
    let r = c.authed("POST", "/v1/sales/pow/pow", &tok("alice"), Some("{}"));
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"), "{r}");
}

#[test]
fn pow_bits_must_be_0_to_30() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    for bad in [json!(31), json!(-1), json!(1.5), json!("8"), json!(null)] {
        let mut spec = sale_spec(5, 1);
        spec["pow_bits"] = bad.clone();
        let r = c.put_sale("bad", &spec);
        assert_error(&r, 400, "bad_request");
        assert!(r.text().contains("pow_bits"), "{bad}: {r}");
    }
    pow_sale(&mut c, "hard", 30);
}

/// A restarted node still asks for the work: in embedded mode its journal keeps the bits, in
/// cluster mode Redis does (the node restarts on the same one).
#[test]
fn the_bits_survive_a_restart() {
    let dir = ScratchDir::new();
    let (_redis, args) = restartable_store();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    {
        let server = Server::start_in(dir.path(), 2, &args);
        pow_sale(&mut server.client(), "pow", BITS);
    }
    let server = Server::start_in(dir.path(), 2, &args);
    let mut c = server.client();
    assert_eq!(c.get_sale("pow")["pow_bits"], json!(BITS));
    assert_error(&buy_with(&mut c, "pow", "alice", None), 403, "pow_invalid");
}

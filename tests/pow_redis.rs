//! The proof-of-work suite again (`pow.rs`), with every server in cluster mode on its own
//! `redis-server`, plus two nodes on one Redis: a challenge one node issues is the challenge the
//! other checks, and a sale created through one asks the other's shoppers for work too.

#[path = "pow.rs"]
mod pow;

use pow::common::fair::two_nodes_on_one_redis;
use pow::common::*;
use serde_json::json;

#[test]
fn two_nodes_on_one_redis_share_the_bits_and_the_challenges() {
    let (_redis, a, b) = two_nodes_on_one_redis();
    let mut on_a = a.client();
    let mut on_b = b.client();
    let mut spec = sale_spec(10, 1);
    spec["pow_bits"] = json!(pow::BITS);
    on_a.create_sale("shared", &spec);
    // B learns of the sale from Redis when first asked about it.
    let issued_by_b = pow::fetch_challenge(&mut on_b, "shared", "alice");
    assert_eq!(issued_by_b["bits"], json!(pow::BITS), "{issued_by_b}");
    let issued_by_a = pow::fetch_challenge(&mut on_a, "shared", "alice");
    let window = issued_by_b["window"].as_u64().expect("window");
    if issued_by_a["window"] == issued_by_b["window"] {
        assert_eq!(issued_by_a["challenge"], issued_by_b["challenge"]);
    }
    assert_error(
        &pow::buy_with(&mut on_b, "shared", "alice", None),
        403,
        "pow_invalid",
    );
    let challenge = pow::challenge_for("shared", "alice", window);
    let proof = format!("{window}.{}", pow::solve(&challenge));
    assert_status(
        &pow::buy_with(&mut on_a, "shared", "alice", Some(&proof)),
        201,
    );
    assert_eq!(on_b.remaining("shared"), 9);
}

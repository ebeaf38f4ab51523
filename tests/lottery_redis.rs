//! The lottery suite again (`lottery.rs`), every server in cluster mode on its own
//! `redis-server`, plus two nodes on one Redis: one registration list, one draw, and a winner's
//! pass from one node buys at the other.

#[path = "lottery.rs"]
mod lottery;

use lottery::common::fair::{buy_with_pass, sleep_until, two_nodes_on_one_redis};
use lottery::common::*;
use serde_json::json;

#[test]
fn two_nodes_on_one_redis_share_one_draw() {
    let (_redis, a, b) = two_nodes_on_one_redis();
    let mut on_a = a.client();
    let mut on_b = b.client();
    let sale = lottery::lottery_sale(&mut on_a, "shared", 1, 4_000, 100);
    let starts_at = sale["starts_at"].as_i64().expect("starts_at");
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        assert_status(
            &lottery::register(c, "shared", &lottery::registrant(i)),
            201,
        );
    }
    assert_status(
        &lottery::register(&mut on_b, "shared", &lottery::registrant(0)),
        200,
    );
    let on_a_record = on_a.get("/v1/sales/shared/lottery").json();
    let on_b_record = on_b.get("/v1/sales/shared/lottery").json();
    assert_eq!(on_a_record["commitment"], on_b_record["commitment"]);
    assert_eq!(on_b_record["registrants"], json!(10));
    sleep_until(starts_at);
    let list_a = on_a.get("/v1/sales/shared/lottery/registrants").json();
    let list_b = on_b.get("/v1/sales/shared/lottery/registrants").json();
    assert_eq!(list_a["registrants"], list_b["registrants"]);
    let (verified, out) = lottery::verify(&b, "shared");
    assert!(verified, "{out}");
    let winner = list_a["registrants"][0]
        .as_str()
        .expect("a winner")
        .to_owned();
    let mine = lottery::registration(&mut on_a, "shared", &winner);
    assert_eq!(mine["state"], json!("won"), "{mine}");
    let pass = mine["pass"].as_str().expect("pass");
    assert_status(
        &buy_with_pass(&mut on_b, "shared", &winner, Some(pass)),
        201,
    );
}

//! The waiting-room suite again (`waiting_room.rs`), every server in cluster mode on its own
//! `redis-server`, plus two nodes on one Redis: one queue, one early order, and a pass one node
//! signs is a pass at the other.

#[path = "waiting_room.rs"]
mod room;

use std::collections::BTreeSet;

use room::common::fair::{buy_with_pass, sleep_until, two_nodes_on_one_redis};
use room::common::*;
use serde_json::json;

#[test]
fn two_nodes_on_one_redis_share_one_queue() {
    let (_redis, a, b) = two_nodes_on_one_redis();
    let mut on_a = a.client();
    let mut on_b = b.client();
    let sale = room::room_sale(&mut on_a, "shared", 1, 5_000, 100);
    let starts_at = sale["starts_at"].as_i64().expect("starts_at");
    // Shoppers alternate between the nodes; the ticket numbers come from one counter.
    let mut tickets = Vec::new();
    for i in 0..10 {
        let c = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        let r = room::join(c, "shared", &room::shopper(i));
        assert_status(&r, 201);
        tickets.push(r.json()["ticket"].as_u64().expect("ticket"));
    }
    let numbers: BTreeSet<u64> = tickets.iter().copied().collect();
    assert_eq!(numbers, (1..=10).collect::<BTreeSet<_>>());
    // A repeat through the other node is the same ticket.
    let again = room::join(&mut on_b, "shared", &room::shopper(0));
    assert_status(&again, 200);
    assert_eq!(again.json()["ticket"], json!(tickets[0]));

    sleep_until(starts_at);
    // Both nodes read the same line.
    let first = (0..10)
        .find(|i| {
            let r = room::ticket(&mut on_a, "shared", &room::shopper(*i), tickets[*i]);
            let on_other = room::ticket(&mut on_b, "shared", &room::shopper(*i), tickets[*i]);
            assert_eq!(r.json()["position"], on_other.json()["position"]);
            r.json()["position"] == json!(1)
        })
        .expect("someone is first");
    let user = room::shopper(first);
    let status = room::settled(&mut on_a, "shared", &user, tickets[first]);
    let pass = status["pass"].as_str().expect("the first is admitted");
    // Signed by A, spent at B.
    assert_status(&buy_with_pass(&mut on_b, "shared", &user, Some(pass)), 201);
    assert_eq!(on_a.remaining("shared"), 0);
}

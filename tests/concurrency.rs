//! Contention on a 2-shard server: no overselling, idempotency and cancel
//! races resolve exactly once.
mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

#[derive(Default)]
struct Outcome {
    /// (order_id, user_id) of every 201.
    orders: Vec<(String, String)>,
    /// status + error code -> count for everything else.
    others: BTreeMap<String, usize>,
    shards_seen: HashSet<usize>,
}

/// Run `attempts` purchase attempts of `sku` from `threads` keep-alive
/// connections; attempt i is made by user `users[i % users.len()]`.
fn hammer(
    server: &Server,
    sku: &str,
    users: &[(String, String)],
    attempts: usize,
    threads: usize,
) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Outcome::default()));
    let users = Arc::new(users.to_vec());
    let mut clients: Vec<Client> = (0..threads).map(|_| server.client()).collect();
    let handles: Vec<_> = clients
        .drain(..)
        .map(|mut c| {
            let (next, out, users, sku) =
                (next.clone(), out.clone(), users.clone(), sku.to_owned());
            thread::spawn(move || {
                let mut local = Outcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= attempts {
                        break;
                    }
                    let (user, token) = &users[i % users.len()];
                    let r = c.purchase(&sku, token, None, None);
                    if let Some(s) = r.shard() {
                        local.shards_seen.insert(s);
                    }
                    if r.status == 201 {
                        let o = r.json();
                        assert_eq!(o["user_id"], json!(user), "order for wrong user: {r}");
                        assert_eq!(o["quantity"], json!(1), "{r}");
                        local.orders.push((order_id(&o), user.clone()));
                    } else {
                        let key = format!(
                            "{} {}",
                            r.status,
                            r.error_code().unwrap_or_else(|| r.text())
                        );
                        *local.others.entry(key).or_default() += 1;
                    }
                }
                let mut o = out.lock().unwrap();
                o.orders.extend(local.orders);
                for (k, v) in local.others {
                    *o.others.entry(k).or_default() += v;
                }
                o.shards_seen.extend(local.shards_seen);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("purchase thread panicked");
    }
    Arc::try_unwrap(out)
        .ok()
        .expect("outcome still shared")
        .into_inner()
        .unwrap()
}

#[test]
fn no_overselling_under_contention() {
    let s = Server::start(2, &[]);
    s.open_sale("hot", 500, 1);
    let users: Vec<(String, String)> = (0..5000)
        .map(|i| {
            let u = format!("user{i}");
            let t = tok(&u);
            (u, t)
        })
        .collect();

    let out = hammer(&s, "hot", &users, 20_000, 64);
    let unexpected: Vec<_> = out
        .others
        .iter()
        .filter(|(k, _)| k.as_str() != "409 sold_out" && k.as_str() != "403 limit_exceeded")
        .collect();
    assert!(
        unexpected.is_empty(),
        "only 201, 409 sold_out and 403 limit_exceeded are valid here; got {:?} (all non-201: {:?})",
        unexpected,
        out.others
    );
    assert_eq!(
        out.orders.len(),
        500,
        "exactly 500 orders must be accepted for 500 stock (non-201 answers: {:?})",
        out.others
    );
    let distinct_users: HashSet<&String> = out.orders.iter().map(|(_, u)| u).collect();
    assert_eq!(
        distinct_users.len(),
        500,
        "per_user_limit 1: 500 distinct buyers"
    );
    let distinct_ids: HashSet<&String> = out.orders.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct_ids.len(), 500, "order ids must be unique");
    assert_eq!(
        out.shards_seen.len(),
        2,
        "64 connections should have landed on both shards, saw {:?}",
        out.shards_seen
    );

    let mut c = s.client();
    let sale = c.get_sale("hot");
    assert_eq!(sale["remaining"], json!(0), "{sale}");
    assert_eq!(sale["state"], json!("sold_out"), "{sale}");

    // A fresh round after sell-out: every attempt is 409 sold_out, including
    // users who never bought.
    let mut round2: Vec<(String, String)> = users[..1000].to_vec();
    round2.extend((5000..6000).map(|i| {
        let u = format!("user{i}");
        let t = tok(&u);
        (u, t)
    }));
    let after = hammer(&s, "hot", &round2, 2000, 16);
    assert!(
        after.orders.is_empty(),
        "orders accepted after sell-out: {:?}",
        after.orders
    );
    assert_eq!(
        after.others.keys().collect::<Vec<_>>(),
        vec!["409 sold_out"],
        "after sell-out every attempt must be 409 sold_out: {:?}",
        after.others
    );
    assert_eq!(c.remaining("hot"), 0);

    // Every accepted order exists and is consistent (checked from both shards).
    let orders = Arc::new(out.orders);
    let per_shard = s.clients_per_shard(2);
    let handles: Vec<_> = per_shard
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(t, mut c)| {
            let orders = orders.clone();
            thread::spawn(move || {
                for (id, user) in orders.iter().skip(t).step_by(4) {
                    let r = c.get_order(id, ADMIN_TOKEN);
                    assert_eq!(r.status, 200, "admin GET /v1/orders/{id}: {r}");
                    let o = r.json();
                    assert_eq!(o["order_id"], json!(id), "{o}");
                    assert_eq!(o["user_id"], json!(user), "{o}");
                    assert_eq!(o["sku"], json!("hot"), "{o}");
                    assert_eq!(o["quantity"], json!(1), "{o}");
                    assert_eq!(o["status"], json!("pending"), "{o}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("order check thread panicked");
    }
}

#[test]
fn parallel_requests_with_same_idempotency_key_create_one_order() {
    let s = Server::start(2, &[]);
    s.open_sale("idem", 1000, 5);
    let mut c = s.client();
    // 5 connections on each shard, reused for every round.
    let clients: Vec<Client> = s.clients_per_shard(5).into_iter().flatten().collect();
    let n = clients.len();
    let rounds = 20;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut ids = Vec::new();
                for round in 0..rounds {
                    let user = format!("idem-user{round}");
                    let token = tok(&user);
                    let key = format!("key-{round}");
                    barrier.wait();
                    // Never panic between barrier waits: one failing thread would leave the
                    // others waiting forever. Record, then assert after the join.
                    let r = c.purchase("idem", &token, Some(2), Some(&key));
                    let id = (r.status == 201)
                        .then(|| r.json())
                        .filter(|o| o["quantity"] == json!(2))
                        .map(|o| order_id(&o))
                        .unwrap_or_else(|| format!("round {round}: not a 201 for quantity 2: {r}"));
                    ids.push(id);
                }
                ids
            })
        })
        .collect();
    let per_thread: Vec<Vec<String>> = handles
        .into_iter()
        .map(|h| h.join().expect("idempotency thread panicked"))
        .collect();
    for round in 0..rounds {
        let ids: HashSet<&String> = per_thread.iter().map(|v| &v[round]).collect();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: {n} parallel requests with one key gave {} order ids: {ids:?}",
            ids.len()
        );
    }
    assert_eq!(
        c.remaining("idem"),
        1000 - 2 * rounds as i64,
        "each round must take quantity 2 exactly once"
    );
    // Only one order counts against each user's limit (5): 3 more fit, 1 more does not.
    for round in 0..rounds {
        let token = tok(&format!("idem-user{round}"));
        let r = c.purchase("idem", &token, Some(3), None);
        assert_eq!(
            r.status, 201,
            "round {round}: user should have 3 of 5 left: {r}"
        );
        assert_error(
            &c.purchase("idem", &token, Some(1), None),
            403,
            "limit_exceeded",
        );
    }
}

/// Two persistent connections (one per shard) act on the same order at the
/// same moment, round after round.
fn race_pairs<F, G>(s: &Server, ids: Vec<(String, String)>, a: F, b: G) -> Vec<(Response, Response)>
where
    F: Fn(&mut Client, &str, &str) -> Response + Send + 'static,
    G: Fn(&mut Client, &str, &str) -> Response + Send + 'static,
{
    let mut per_shard = s.clients_per_shard(1);
    let mut c1 = per_shard[1].pop().unwrap();
    let mut c0 = per_shard[0].pop().unwrap();
    let ids = Arc::new(ids);
    let barrier = Arc::new(Barrier::new(2));
    let (ids_b, barrier_b) = (ids.clone(), barrier.clone());
    let hb = thread::spawn(move || {
        let mut out = Vec::new();
        for (id, token) in ids_b.iter() {
            barrier_b.wait();
            out.push(b(&mut c1, id, token));
        }
        out
    });
    let mut out_a = Vec::new();
    for (id, token) in ids.iter() {
        barrier.wait();
        out_a.push(a(&mut c0, id, token));
    }
    let out_b = hb.join().expect("racing thread panicked");
    out_a.into_iter().zip(out_b).collect()
}

#[test]
fn concurrent_double_cancel_restores_stock_once() {
    let s = Server::start(2, &[]);
    s.open_sale("cx", 100, 1);
    let mut c = s.client();
    let mut ids = Vec::new();
    for i in 0..50 {
        let token = tok(&format!("cx-user{i}"));
        let o = c.buy("cx", &token, 1);
        ids.push((order_id(&o), token));
    }
    assert_eq!(c.remaining("cx"), 50);

    let results = race_pairs(
        &s,
        ids.clone(),
        |c, id, token| c.cancel(id, token),
        |c, id, _| c.cancel(id, ADMIN_TOKEN),
    );
    for (i, (ra, rb)) in results.iter().enumerate() {
        for r in [ra, rb] {
            assert_eq!(
                r.status, 200,
                "order {i}: both concurrent cancels must be 200: {r}"
            );
            assert_eq!(r.json()["status"], json!("cancelled"), "order {i}: {r}");
        }
    }
    assert_eq!(
        c.remaining("cx"),
        100,
        "each cancelled order must return its stock exactly once"
    );
    for (id, token) in &ids {
        let r = c.get_order(id, token);
        assert_eq!(r.json()["status"], json!("cancelled"), "{r}");
    }
}

#[test]
fn concurrent_pay_and_cancel_have_exactly_one_winner() {
    let s = Server::start(2, &[]);
    s.open_sale("pvc", 100, 1);
    let mut c = s.client();
    let mut ids = Vec::new();
    for i in 0..50 {
        let token = tok(&format!("pvc-user{i}"));
        let o = c.buy("pvc", &token, 1);
        ids.push((order_id(&o), token));
    }
    let results = race_pairs(
        &s,
        ids.clone(),
        |c, id, _token| c.pay(id),
        |c, id, token| c.cancel(id, token),
    );
    let mut final_status: HashMap<String, &str> = HashMap::new();
    let mut cancelled = 0;
    for (i, (pay, cancel)) in results.iter().enumerate() {
        let winner = match (pay.status, cancel.status) {
            (200, 409) => {
                assert_eq!(pay.json()["status"], json!("paid"), "order {i}: {pay}");
                assert_error(cancel, 409, "order_paid");
                "paid"
            }
            (409, 200) => {
                assert_eq!(
                    cancel.json()["status"],
                    json!("cancelled"),
                    "order {i}: {cancel}"
                );
                assert_error(pay, 409, "order_cancelled");
                cancelled += 1;
                "cancelled"
            }
            _ => panic!(
                "order {i}: exactly one of pay/cancel must win; pay: {pay}; cancel: {cancel}"
            ),
        };
        final_status.insert(ids[i].0.clone(), winner);
    }
    for (id, token) in &ids {
        let r = c.get_order(id, token);
        assert_eq!(
            r.json()["status"],
            json!(final_status[id]),
            "final order state must match the winner: {r}"
        );
    }
    assert_eq!(
        c.remaining("pvc"),
        50 + cancelled,
        "stock must come back exactly for the {cancelled} cancelled orders"
    );
}

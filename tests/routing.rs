//! A 2-shard server must answer identically whichever shard accepted the
//! connection, and state must be shared across shards.
mod common;

use common::*;
use serde_json::{json, Value};

/// Replace per-run values (order ids, server timestamps, the sku) with
/// placeholders, also inside strings such as error messages.
fn normalize(v: &Value, subs: &[(String, &'static str)]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let nv = match k.as_str() {
                        "created_at" | "expires_at" if v.is_number() => json!("<ts>"),
                        _ => normalize(v, subs),
                    };
                    (k.clone(), nv)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize(x, subs)).collect()),
        Value::String(s) => {
            let mut s = s.clone();
            for (from, to) in subs {
                s = s.replace(from.as_str(), to);
            }
            Value::String(s)
        }
        other => other.clone(),
    }
}

struct Transcript {
    steps: Vec<(String, u16, Value)>,
    subs: Vec<(String, &'static str)>,
}

impl Transcript {
    fn new(sku: &str) -> Transcript {
        Transcript {
            steps: Vec::new(),
            subs: vec![(sku.to_owned(), "<sku>")],
        }
    }

    fn record(&mut self, step: &str, r: &Response, sku: &str, shard: usize) -> Value {
        assert_eq!(
            r.shard(),
            Some(shard),
            "step {step} on {sku}: response must come from the connection's shard {shard}: {r}"
        );
        let body = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        if let Some(id) = body["order_id"].as_str() {
            if !id.is_empty() && !self.subs.iter().any(|(s, _)| s == id) {
                // Longest first so no id is partially replaced by a shorter one.
                self.subs.push((id.to_owned(), "<order_id>"));
                self.subs.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
            }
        }
        let n = normalize(&body, &self.subs);
        self.steps.push((step.to_owned(), r.status, n));
        body
    }
}

/// The scripted sequence for one sku. `p` is the primary connection (on
/// shard `ps`), `o` the other one (shard `os`).
fn run_sequence(
    p: &mut Client,
    ps: usize,
    o: &mut Client,
    os: usize,
    sku: &str,
    spec: &Value,
) -> Transcript {
    let mut t = Transcript::new(sku);
    let (alice, bob, carol) = (tok("alice"), tok("bob"), tok("carol"));
    let path = format!("/v1/sales/{sku}");

    let r = p.put_sale(sku, spec);
    t.record("create", &r, sku, ps);
    let r = p.get(&path);
    let on_p = t.record("get on primary", &r, sku, ps);
    let r = o.get(&path);
    let on_o = t.record("get on other", &r, sku, os);
    assert_eq!(on_p, on_o, "{sku}: both shards must see the same sale");

    let r = p.purchase(sku, &alice, Some(1), Some("k1"));
    let first = t.record("purchase alice k1", &r, sku, ps);
    let r = o.purchase(sku, &alice, Some(1), Some("k1"));
    let replay = t.record("replay alice k1 on other", &r, sku, os);
    assert_eq!(
        first["order_id"], replay["order_id"],
        "{sku}: replay on the other shard must return the same order"
    );
    let first_id = first["order_id"].as_str().unwrap_or("missing").to_owned();

    let r = p.purchase(sku, &alice, Some(2), None);
    t.record("alice qty 2 over limit", &r, sku, ps);
    let r = o.purchase(sku, &alice, Some(1), None);
    let second = t.record("alice second unit on other", &r, sku, os);
    let second_id = second["order_id"].as_str().unwrap_or("missing").to_owned();
    let r = p.purchase(sku, &alice, Some(1), None);
    t.record("alice at limit", &r, sku, ps);

    let r = o.pay(&first_id);
    t.record("pay first on other", &r, sku, os);
    let r = p.get_order(&first_id, &alice);
    t.record("get paid order on primary", &r, sku, ps);
    let r = p.cancel(&second_id, &alice);
    t.record("cancel second on primary", &r, sku, ps);
    let r = o.get_order(&second_id, ADMIN_TOKEN);
    t.record("admin get cancelled on other", &r, sku, os);
    let r = o.get(&path);
    t.record("sale after cancel on other", &r, sku, os);

    let r = o.purchase(sku, &bob, Some(2), None);
    t.record("bob buys the rest on other", &r, sku, os);
    let r = p.purchase(sku, &carol, Some(1), None);
    t.record("carol sold out", &r, sku, ps);
    let r = o.purchase(sku, &alice, Some(1), None);
    t.record("alice sold out on other", &r, sku, os);
    let r = p.cancel(&first_id, &alice);
    t.record("cancel paid", &r, sku, ps);
    let r = p.get_order(&first_id, &bob);
    t.record("stranger get", &r, sku, ps);

    let r = p.get(&path);
    let sp = t.record("final sale on primary", &r, sku, ps);
    let r = o.get(&path);
    let so = t.record("final sale on other", &r, sku, os);
    assert_eq!(sp, so, "{sku}: final sale differs between shards");

    for (c, shard, step) in [
        (&mut *p, ps, "list on primary"),
        (&mut *o, os, "list on other"),
    ] {
        let r = c.get("/v1/sales");
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.shard(), Some(shard), "{r}");
        let list = r.json();
        let mine: Vec<Value> = list["sales"]
            .as_array()
            .unwrap_or_else(|| panic!("bad list: {list}"))
            .iter()
            .filter(|s| s["sku"] == json!(sku))
            .map(|s| normalize(s, &t.subs))
            .collect();
        t.steps
            .push((step.to_owned(), r.status, Value::Array(mine)));
    }
    t
}

const EXPECTED: [(&str, u16, Option<&str>); 21] = [
    ("create", 201, None),
    ("get on primary", 200, None),
    ("get on other", 200, None),
    ("purchase alice k1", 201, None),
    ("replay alice k1 on other", 201, None),
    ("alice qty 2 over limit", 403, Some("limit_exceeded")),
    ("alice second unit on other", 201, None),
    ("alice at limit", 403, Some("limit_exceeded")),
    ("pay first on other", 200, None),
    ("get paid order on primary", 200, None),
    ("cancel second on primary", 200, None),
    ("admin get cancelled on other", 200, None),
    ("sale after cancel on other", 200, None),
    ("bob buys the rest on other", 201, None),
    ("carol sold out", 409, Some("sold_out")),
    ("alice sold out on other", 409, Some("sold_out")),
    ("cancel paid", 409, Some("order_paid")),
    ("stranger get", 404, Some("unknown_order")),
    ("final sale on primary", 200, None),
    ("final sale on other", 200, None),
    ("list on primary", 200, None),
];

#[test]
fn both_shards_answer_the_same_sequence_identically() {
    let s = Server::start(2, &[]);
    let mut per_shard = s.clients_per_shard(1);
    let mut c1 = per_shard[1].pop().unwrap();
    let mut c0 = per_shard[0].pop().unwrap();
    let now = now_ms();
    let spec = json!({
        "name": "Routing", "stock": 3, "starts_at": now - 1000, "ends_at": now + 3_600_000,
        "per_user_limit": 2
    });

    let mut transcripts: Vec<(String, Transcript)> = Vec::new();
    for i in 0..6 {
        let sku = format!("route-{i}-s0");
        let t = run_sequence(&mut c0, 0, &mut c1, 1, &sku, &spec);
        transcripts.push((sku, t));
        let sku = format!("route-{i}-s1");
        let t = run_sequence(&mut c1, 1, &mut c0, 0, &sku, &spec);
        transcripts.push((sku, t));
    }

    // The reference transcript has the statuses the contract requires.
    let (ref_sku, reference) = &transcripts[0];
    for (i, (step, status, code)) in EXPECTED.iter().enumerate() {
        let (got_step, got_status, body) = &reference.steps[i];
        assert_eq!(got_step, step);
        assert_eq!(got_status, status, "{ref_sku} step {step:?}: body {body}");
        if let Some(code) = code {
            assert_eq!(
                body["error"],
                json!(code),
                "{ref_sku} step {step:?}: body {body}"
            );
        }
    }
    let r = &reference.steps;
    assert_eq!(r[8].2["status"], json!("paid"), "pay: {}", r[8].2);
    assert_eq!(r[10].2["status"], json!("cancelled"), "cancel: {}", r[10].2);
    assert_eq!(r[12].2["remaining"], json!(2), "after cancel: {}", r[12].2);
    assert_eq!(r[18].2["remaining"], json!(0), "final: {}", r[18].2);
    assert_eq!(r[18].2["state"], json!("sold_out"), "final: {}", r[18].2);

    // Every sku, on either primary shard, produced the same transcript.
    for (sku, t) in &transcripts[1..] {
        assert_eq!(t.steps.len(), reference.steps.len());
        for (a, b) in reference.steps.iter().zip(&t.steps) {
            assert_eq!(
                (a.1, &a.2),
                (b.1, &b.2),
                "step {:?}: {sku} differs from {ref_sku}",
                a.0
            );
        }
    }
}

#[test]
fn orders_are_visible_and_actionable_from_any_shard() {
    let s = Server::start(2, &[]);
    let mut per_shard = s.clients_per_shard(1);
    let mut c1 = per_shard[1].pop().unwrap();
    let mut c0 = per_shard[0].pop().unwrap();
    for i in 0..8 {
        let sku = format!("x-{i}");
        let (maker, other) = if i % 2 == 0 {
            (&mut c0, &mut c1)
        } else {
            (&mut c1, &mut c0)
        };
        maker.create_sale(&sku, &sale_spec(10, 3));
        let user = format!("u{i}");
        let token = tok(&user);
        let o = other.buy(&sku, &token, 2);
        let id = order_id(&o);
        let r = maker.get_order(&id, &token);
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.json(), o, "order as seen from the other shard");
        assert_eq!(maker.remaining(&sku), 8);
        assert_eq!(other.remaining(&sku), 8);
        assert_error(
            &maker.purchase(&sku, &token, Some(2), None),
            403,
            "limit_exceeded",
        );
        let r = maker.cancel(&id, ADMIN_TOKEN);
        assert_eq!(r.json()["status"], json!("cancelled"), "{r}");
        assert_eq!(other.remaining(&sku), 10);
        // Blocklist entries made through one shard apply on the other.
        assert_eq!(maker.block(&user).status, 204);
        assert_error(&other.purchase(&sku, &token, None, None), 403, "blocked");
        assert_eq!(other.unblock(&user).status, 204);
        let r = maker.purchase(&sku, &token, None, None);
        assert_eq!(r.status, 201, "after unblock on the other shard: {r}");
    }
}

/// Once sold out, every shard refuses at its edge: a user already at the per-user limit gets
/// `409 sold_out`, which only the edge can answer (the owner checks the limit before stock and
/// would say `403 limit_exceeded`). A request with an idempotency key may be a replay, so it still
/// reaches the owner. When stock comes back, every shard knows before the cancel is answered.
#[test]
fn sold_out_is_answered_at_every_edge_until_stock_returns() {
    let s = Server::start(2, &[]);
    let mut on = [s.client_on_shard(0), s.client_on_shard(1)];
    on[0].create_sale("fast", &sale_spec(2, 1));
    let (alice, bob, carol) = (tok("fast-alice"), tok("fast-bob"), tok("fast-carol"));
    let first = on[0].buy("fast", &alice, 1);
    on[1].buy("fast", &bob, 1);
    for client in on.iter_mut() {
        assert_error(
            &client.purchase("fast", &alice, Some(1), None),
            409,
            "sold_out",
        );
        assert_error(
            &client.purchase("fast", &bob, Some(1), None),
            409,
            "sold_out",
        );
        assert_error(
            &client.purchase("fast", &carol, Some(1), None),
            409,
            "sold_out",
        );
        let keyed = client.purchase("fast", &alice, Some(1), Some("new-key"));
        assert_error(&keyed, 403, "limit_exceeded");
    }
    let cancelled = on[1].cancel(&order_id(&first), &alice);
    assert_status(&cancelled, 200);
    for client in on.iter_mut() {
        assert_error(
            &client.purchase("fast", &bob, Some(1), None),
            403,
            "limit_exceeded",
        );
    }
    on[0].buy("fast", &carol, 1);
    assert_error(
        &on[1].purchase("fast", &bob, Some(1), None),
        409,
        "sold_out",
    );
}

/// Routed purchases run side by side on their owner: while one waits for its group's
/// `fdatasync`, the next ones join the following group. With every purchase routed (all clients
/// on the shard that does not own the SKU), the owner's journal must therefore write fewer groups
/// than records. An owner that ran routed calls one at a time would write one record per group.
#[test]
fn routed_purchases_share_the_owners_group_commits() {
    const CLIENTS: usize = 32;
    const EACH: usize = 20;
    let server = Server::start(2, &[]);
    let sku = "grouped";
    let router = 1 - seckill::shard::placement::owner_of(sku, 2);
    server.open_sale(sku, 100_000, 100);
    let workers: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let mut client = server.client_on_shard(router);
            std::thread::spawn(move || {
                for k in 0..EACH {
                    let r = client.purchase(sku, &tok(&format!("group-{n}-{k}")), Some(1), None);
                    assert_eq!(r.status, 201, "{r}");
                    assert_eq!(r.shard(), Some(router), "{r}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a buyer failed");
    }
    let figures = loop {
        let r = server.client().get("/metrics");
        if r.status == 200 {
            break prometheus::parse(&r.text()).expect("exposition");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let records = figures.count("seckill_journal_group_records_sum", &[]);
    let groups = figures.count("seckill_journal_group_records_count", &[]);
    // The sale is a record of its own; every purchase was routed.
    assert_eq!(records, (CLIENTS * EACH + 1) as u64, "{}", server.log());
    assert!(
        groups * 2 <= records,
        "{records} records in {groups} groups: routed purchases did not share group commits"
    );
}

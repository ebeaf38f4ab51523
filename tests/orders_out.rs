//! Orders out, for the admin: `GET /v1/sales/{sku}/orders` pages with a stable cursor,
//! `seckill orders export` (the real binary against a running server), `GET /v1/blocklist`, and
//! the audit log of admin actions. Runs again in cluster mode as `orders_out_redis`.
mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Instant;

/// One page: the order ids, the orders and `next`.
fn page(c: &mut Client, sku: &str, query: &str) -> (Vec<String>, Vec<Value>, Option<String>) {
    let r = c.admin("GET", &format!("/v1/sales/{sku}/orders{query}"), None);
    assert_status(&r, 200);
    let body = r.json();
    let orders = body["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("\"orders\" must be an array: {body}"))
        .clone();
    let ids = orders
        .iter()
        .map(|o| {
            o["order_id"]
                .as_str()
                .unwrap_or_else(|| panic!("an order without an id: {o}"))
                .to_owned()
        })
        .collect();
    let next = match body.get("next") {
        None => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(other) => panic!("\"next\" must be an order id or absent, got {other}"),
    };
    (ids, orders, next)
}

/// Every page from the first with `filter` (e.g. `&status=paid`); `between` runs after the
/// first page.
fn walk(
    c: &mut Client,
    sku: &str,
    limit: usize,
    filter: &str,
    mut between: impl FnMut(),
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut query = format!("?limit={limit}{filter}");
    loop {
        let (ids, _, next) = page(c, sku, &query);
        assert!(ids.len() <= limit, "{} orders for limit {limit}", ids.len());
        pages.push(ids);
        if pages.len() == 1 {
            between();
        }
        let Some(next) = next else {
            return pages;
        };
        assert!(pages.len() <= 1000, "`next` never ran out");
        query = format!("?limit={limit}{filter}&after={next}");
    }
}

/// Opens `sku` and has `n` shoppers buy one unit each; returns the order ids.
fn sell(s: &Server, sku: &str, n: usize, user_prefix: &str) -> Vec<String> {
    let mut c = s.client();
    let started = Instant::now();
    let ids: Vec<String> = (0..n)
        .map(|i| {
            let order = c.buy(sku, &tok(&format!("{user_prefix}{i}")), 1);
            order["order_id"].as_str().expect("order id").to_owned()
        })
        .collect();
    println!("{n} purchases took {:?}", started.elapsed());
    ids
}

#[test]
fn pages_hold_every_order_once_in_id_order_and_the_cursor_survives_new_orders() {
    let s = Server::start(2, &[]);
    s.open_sale("bulk", 10_000, 1);
    let mut bought = sell(&s, "bulk", 250, "u-");
    bought.sort();
    for shard in 0..s.shards {
        let mut c = s.client_on_shard(shard);
        let pages = walk(&mut c, "bulk", 100, "", || {});
        let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [100, 100, 50], "on shard {shard}");
        let all: Vec<String> = pages.concat();
        assert_eq!(
            all, bought,
            "each order once, in id order, on shard {shard}"
        );
    }
    // Orders arriving while a reader pages: everything that existed is still listed exactly
    // once, in order, and the new orders (later ids) follow.
    let mut c = s.client();
    let mut late = Vec::new();
    let pages = walk(&mut c, "bulk", 100, "", || {
        late = sell(&s, "bulk", 20, "late-");
    });
    let all: Vec<String> = pages.concat();
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an order listed twice");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "not in id order");
    let mut want = bought.clone();
    want.extend(late);
    want.sort();
    assert_eq!(all, want, "every old and new order once");
    s.assert_healthy();
}

#[test]
fn status_filter_and_refusals() {
    let s = Server::start(2, &[]);
    s.open_sale("mixed", 1000, 1);
    let ids = sell(&s, "mixed", 30, "m-");
    let mut admin = s.client();
    let mut cancelled = BTreeSet::new();
    for id in ids.iter().step_by(3) {
        assert_status(&admin.cancel(id, ADMIN_TOKEN), 200);
        cancelled.insert(id.clone());
    }
    let listed = |filter: &str, limit| -> BTreeSet<String> {
        let mut c = s.client();
        walk(&mut c, "mixed", limit, filter, || {})
            .concat()
            .into_iter()
            .collect()
    };
    assert_eq!(listed("&status=cancelled", 4), cancelled);
    let pending: BTreeSet<String> = ids
        .iter()
        .filter(|id| !cancelled.contains(*id))
        .cloned()
        .collect();
    assert_eq!(listed("&status=pending", 7), pending);
    assert!(listed("&status=expired", 100).is_empty());
    assert_eq!(listed("", 1000).len(), 30);
    let (_, orders, _) = page(&mut admin, "mixed", "?status=cancelled");
    assert!(orders
        .iter()
        .all(|o| o["status"] == "cancelled" && o["sku"] == "mixed"));

    let shopper = tok("m-1");
    let r = admin.authed("GET", "/v1/sales/mixed/orders", &shopper, None);
    assert_error(&r, 403, "forbidden");
    assert_error(&admin.get("/v1/sales/mixed/orders"), 401, "unauthorized");
    let other_sku = ids[0].replace(".mixed", ".other");
    for bad in [
        "?limit=0".to_owned(),
        "?limit=1001".to_owned(),
        "?status=lost".to_owned(),
        "?after=nope".to_owned(),
        format!("?after={other_sku}"),
        "?page=2".to_owned(),
        "?limit=5&limit=5".to_owned(),
    ] {
        let r = admin.admin("GET", &format!("/v1/sales/mixed/orders{bad}"), None);
        assert_error(&r, 400, "invalid_query");
    }
    let r = admin.admin("GET", "/v1/sales/nosuch/orders", None);
    assert_error(&r, 404, "unknown_sale");
    s.assert_healthy();
}

/// Splits CSV text into records (RFC 4180: quoted fields, doubled quotes, CRLF or LF).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, ch) => field.push(ch),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, ch) => field.push(ch),
        }
    }
    assert!(
        !quoted && field.is_empty() && record.is_empty(),
        "CSV ends mid-record"
    );
    records
}

/// Runs `seckill orders export` against `s`; returns stdout.
fn export(s: &Server, args: &[&str]) -> String {
    let started = Instant::now();
    let out = common::process::seckill_cmd()
        .args(["orders", "export", "--addr", &s.addr()])
        .args(args)
        .output()
        .expect("run seckill orders export");
    println!("export {args:?} took {:?}", started.elapsed());
    assert!(
        out.status.success(),
        "export failed: {}\n--- server log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    String::from_utf8(out.stdout).expect("UTF-8 export")
}

#[test]
fn export_writes_every_order_as_json_lines_and_csv() {
    let s = Server::start(2, &[]);
    s.open_sale("exp", 1000, 1);
    let mut ids = sell(&s, "exp", 45, "e-");
    ids.sort();
    let mut admin = s.client();
    assert_status(&admin.cancel(&ids[3], ADMIN_TOKEN), 200);

    let jsonl = export(
        &s,
        &["--sku", "exp", "--format", "jsonl", "--page-size", "7"],
    );
    let orders: Vec<Value> = jsonl
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect();
    let exported: Vec<&str> = orders
        .iter()
        .map(|o| o["order_id"].as_str().expect("id"))
        .collect();
    assert_eq!(exported, ids, "every order once, in id order");
    assert_eq!(orders[3]["status"], "cancelled");
    assert!(orders
        .iter()
        .all(|o| o["user_id"].as_str().is_some_and(|u| u.starts_with("e-"))));

    let csv = export(
        &s,
        &["--sku", "exp", "--format", "csv", "--page-size", "10"],
    );
    let records = parse_csv(&csv);
    assert_eq!(
        records[0],
        [
            "order_id",
            "sku",
            "user_id",
            "quantity",
            "status",
            "created_at",
            "expires_at",
            "amount"
        ]
    );
    let rows = &records[1..];
    assert_eq!(rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ids);
    for (row, order) in rows.iter().zip(&orders) {
        assert_eq!(row.len(), 8, "{row:?}");
        assert_eq!(row[1], "exp");
        assert_eq!(row[2], order["user_id"].as_str().expect("user"));
        assert_eq!(row[3], "1");
        assert_eq!(row[4], order["status"].as_str().expect("status"));
        assert_eq!(row[5], order["created_at"].to_string());
    }
    let cancelled = export(
        &s,
        &["--sku", "exp", "--format", "csv", "--status", "cancelled"],
    );
    let records = parse_csv(&cancelled);
    assert_eq!(
        records.len(),
        2,
        "header and the one cancelled order: {cancelled}"
    );
    assert_eq!(records[1][0], ids[3]);

    // A refusal (unknown SKU) is an error exit, not an empty export.
    let out = common::process::seckill_cmd()
        .args(["orders", "export", "--addr", &s.addr(), "--sku", "nosuch"])
        .output()
        .expect("run export");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_sale"));
    s.assert_healthy();
}

#[test]
fn the_blocklist_is_listed_sorted_a_page_at_a_time() {
    let s = Server::start(2, &[]);
    let mut admin = s.client();
    let mut want = BTreeSet::new();
    for n in 0..25 {
        let user = format!("bad-{:02}", (n * 7) % 25);
        assert_status(&admin.block(&user), 204);
        want.insert(user);
    }
    assert_status(&admin.admin("DELETE", "/v1/blocklist/bad-05", None), 204);
    want.remove("bad-05");
    let want: Vec<String> = want.into_iter().collect();
    for shard in 0..s.shards {
        let mut c = s.client_on_shard(shard);
        let mut listed = Vec::new();
        let mut query = "?limit=10".to_owned();
        let mut pages = 0;
        loop {
            let r = c.admin("GET", &format!("/v1/blocklist{query}"), None);
            assert_status(&r, 200);
            let body = r.json();
            let users: Vec<String> = body["users"]
                .as_array()
                .unwrap_or_else(|| panic!("no users: {body}"))
                .iter()
                .map(|u| u.as_str().expect("user id").to_owned())
                .collect();
            pages += 1;
            listed.extend(users);
            match body.get("next").and_then(Value::as_str) {
                Some(next) => query = format!("?limit=10&after={next}"),
                None => break,
            }
        }
        assert_eq!(listed, want, "on shard {shard}");
        assert_eq!(pages, 3);
    }
    let r = admin.authed("GET", "/v1/blocklist", &tok("bad-01"), None);
    assert_error(&r, 403, "forbidden");
    assert_error(&admin.get("/v1/blocklist"), 401, "unauthorized");
    let r = admin.admin("GET", "/v1/blocklist?limit=0", None);
    assert_error(&r, 400, "invalid_query");
}

#[test]
fn admin_actions_are_logged_with_who_what_and_the_request_id() {
    let s = Server::start(2, &["--log-level", "info", "--log-format", "json"]);
    let mut c = s.client();
    let admin = admin_bearer();
    let with_id = |c: &mut Client, method: &str, path: &str, id: &str, body: Option<&str>| {
        c.request(
            method,
            path,
            &[("Authorization", &admin), ("X-Request-Id", id)],
            body,
        )
    };
    let spec = sale_spec(10, 1).to_string();
    assert_status(
        &with_id(
            &mut c,
            "PUT",
            "/v1/sales/audited",
            "rid-put-sale",
            Some(&spec),
        ),
        201,
    );
    assert_status(
        &with_id(
            &mut c,
            "PUT",
            "/v1/blocklist/villain",
            "rid-block",
            Some(""),
        ),
        204,
    );
    assert_status(
        &with_id(
            &mut c,
            "DELETE",
            "/v1/blocklist/villain",
            "rid-unblock",
            Some(""),
        ),
        204,
    );
    let order = c.buy("audited", &tok("buyer"), 1);
    let id = order["order_id"].as_str().expect("id");
    let path = format!("/v1/orders/{id}/cancel");
    assert_status(&with_id(&mut c, "POST", &path, "rid-cancel", None), 200);
    // A refused attempt is audited too, as anonymous.
    let r = c.request(
        "PUT",
        "/v1/sales/audited",
        &[("X-Request-Id", "rid-anon")],
        Some(&spec),
    );
    assert_status(&r, 401);

    let expect = [
        ("rid-put-sale", "put_sale", "audited", "201"),
        ("rid-block", "blocklist", "villain", "204"),
        ("rid-unblock", "blocklist", "villain", "204"),
        ("rid-cancel", "cancel_order", id, "200"),
        ("rid-anon", "put_sale", "audited", "401"),
    ];
    let log = s.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    for (rid, route, target, status) in expect {
        let line = lines
            .iter()
            .find(|l| l["fields"]["message"] == "admin action" && l["fields"]["request_id"] == rid)
            .unwrap_or_else(|| panic!("no admin action logged for {rid}:\n{log}"));
        println!("{line}");
        let fields = &line["fields"];
        assert_eq!(line["level"], "INFO", "{line}");
        assert_eq!(fields["route"], route, "{line}");
        assert_eq!(fields["target"], target, "{line}");
        assert_eq!(fields["status"].to_string(), status, "{line}");
        let who = if rid == "rid-anon" {
            "anonymous"
        } else {
            "admin"
        };
        assert_eq!(fields["who"], who, "{line}");
    }
    // A shopper's own cancel is not an admin action.
    let order = c.buy("audited", &tok("buyer2"), 1);
    let id = order["order_id"].as_str().expect("id").to_owned();
    let r = c.request(
        "POST",
        &format!("/v1/orders/{id}/cancel"),
        &[
            ("Authorization", &format!("Bearer {}", tok("buyer2"))),
            ("X-Request-Id", "rid-shopper"),
        ],
        None,
    );
    assert_status(&r, 200);
    assert!(!s.log().contains("rid-shopper"), "{}", s.log());
}

#[test]
fn orders_forgotten_by_retention_leave_the_listing() {
    let s = Server::start(2, &["--closed-orders-per-sale", "3"]);
    s.open_sale("kept", 1000, 1);
    let ids = sell(&s, "kept", 10, "k-");
    let mut admin = s.client();
    for id in &ids[..6] {
        assert_status(&admin.cancel(id, ADMIN_TOKEN), 200);
    }
    // The three oldest cancellations are forgotten; the other three and the pending four stay.
    let mut want: Vec<String> = ids[3..].to_vec();
    want.sort();
    let listed = walk(&mut admin, "kept", 2, "", || {}).concat();
    assert_eq!(listed, want);
    let cancelled = walk(&mut admin, "kept", 100, "&status=cancelled", || {}).concat();
    assert_eq!(cancelled.len(), 3, "{cancelled:?}");
    // The id index forgets them too, or it would grow with every cancellation: checked here in
    // Redis, and for the embedded book by `forgotten_orders_leave_the_index` (src/sale).
    if let Some(redis) = &s.redis {
        // A member of the index is a chunk of pages, space-separated (scripts/index.rs): the
        // milliseconds the ids of the orders in them begin with.
        let chunks: Vec<String> = redis
            .query(&["ZRANGE", "seckill:{kept}:ids", "0", "-1"])
            .expect("ZRANGE ids");
        let indexed: Vec<&str> = chunks.iter().flat_map(|chunk| chunk.split(' ')).collect();
        let mut retained: Vec<&str> = want.iter().map(|id| &id[..10]).collect();
        retained.dedup();
        assert_eq!(
            indexed, retained,
            "the index holds exactly the pages of the retained orders"
        );
        assert_eq!(redis.orders("kept").len(), 7, "the retained orders");
    }
}

#[test]
fn the_listing_survives_a_restart() {
    if redis_mode() {
        println!("embedded journal only: in cluster mode the orders live in Redis");
        return;
    }
    let data = ScratchDir::new();
    let mut s = Server::start_in(data.path(), 2, &[]);
    s.open_sale("durable", 1000, 1);
    let mut ids = sell(&s, "durable", 30, "d-");
    ids.sort();
    s.terminate();
    let s = Server::start_in(data.path(), 2, &[]);
    let mut admin = s.client();
    assert_eq!(walk(&mut admin, "durable", 7, "", || {}).concat(), ids);
}

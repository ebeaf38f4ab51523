//! Payments the way shops take them: a sale has a price and a currency, an order its amount, and
//! only the payment side confirms a payment, by the payment-service token or by a webhook signed
//! `Seckill-Signature: t=<secs>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`. Runs again in cluster
//! mode as `payments_redis`.
mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// An open sale of `sku` at `price` minor units of `currency`, on two shards so orders and the
/// requests about them cross shards.
fn priced_sale(s: &Server, sku: &str, price: u64, currency: &str) -> Value {
    let mut spec = sale_spec(100, 10);
    spec["price"] = json!(price);
    spec["currency"] = json!(currency);
    s.client().create_sale(sku, &spec)
}

/// The provider's signature header for `body` at `t`, computed here independently of the server.
fn signature(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

fn webhook(c: &mut Client, signature: Option<&str>, body: &str) -> Response {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(signature) = signature {
        headers.push(("Seckill-Signature", signature));
    }
    c.request("POST", "/v1/payments/webhook", &headers, Some(body))
}

fn status_of(c: &mut Client, id: &str) -> Value {
    let order = c.get_order(id, ADMIN_TOKEN);
    assert_status(&order, 200);
    order.json()
}

#[test]
fn the_payment_token_pays_the_right_amount_once_per_payment_ref() {
    let s = Server::start(2, &[]);
    let sale = priced_sale(&s, "pay-tok", 1_999, "EUR");
    assert_eq!(
        (sale["price"].clone(), sale["currency"].clone()),
        (json!(1_999), json!("EUR"))
    );
    let mut c = s.client();
    let alice = tok("alice");
    let order = c.buy("pay-tok", &alice, 3);
    assert_eq!(order["amount"], json!(5_997), "price x quantity: {order}");
    let id = order_id(&order);
    assert_eq!(c.get_order(&id, &alice).json()["amount"], json!(5_997));

    // Shoppers, the buyer included, and the admin cannot pay; nobody at all gets 401.
    for who in [&alice, &tok("bob"), ADMIN_TOKEN] {
        let r = c.pay_as(&id, who, 5_997, "pi_1");
        assert_error(&r, 403, "payment_required_from_provider");
    }
    let anonymous = c.request(
        "POST",
        &format!("/v1/orders/{id}/pay"),
        &[],
        Some(r#"{"amount":5997,"payment_ref":"pi_1"}"#),
    );
    assert_error(&anonymous, 401, "unauthorized");

    // A wrong amount is refused and leaves the order pending, its stock held.
    for wrong in [0, 1_999, 5_996, 5_998] {
        let r = c.pay_as(&id, PAYMENT_TOKEN, wrong, "pi_1");
        assert_error(&r, 409, "amount_mismatch");
    }
    assert_eq!(status_of(&mut c, &id)["status"], json!("pending"));
    assert_eq!(c.remaining("pay-tok"), 97);

    let paid = c.pay_as(&id, PAYMENT_TOKEN, 5_997, "pi_1");
    assert_status(&paid, 200);
    let paid = paid.json();
    assert_eq!(paid["status"], json!("paid"), "{paid}");
    assert_eq!(paid["payment_ref"], json!("pi_1"), "{paid}");
    assert_eq!(paid["amount"], json!(5_997), "{paid}");

    // The same payment again (a provider's retry) gets the same answer; another one is refused.
    let again = c.pay_as(&id, PAYMENT_TOKEN, 5_997, "pi_1");
    assert_status(&again, 200);
    assert_eq!(again.json(), paid, "a repeat answers the same");
    let other = c.pay_as(&id, PAYMENT_TOKEN, 5_997, "pi_2");
    assert_error(&other, 409, "order_paid");
    assert_eq!(status_of(&mut c, &id)["payment_ref"], json!("pi_1"));
    assert_eq!(c.remaining("pay-tok"), 97, "paid stock stays taken");

    // Shoppers keep cancel.
    let second = order_id(&c.buy("pay-tok", &alice, 1));
    let cancelled = c.cancel(&second, &alice);
    assert_status(&cancelled, 200);
    assert_eq!(cancelled.json()["status"], json!("cancelled"));
    assert_error(
        &c.pay_as(&second, PAYMENT_TOKEN, 1_999, "pi_3"),
        409,
        "order_cancelled",
    );
    assert_eq!(c.remaining("pay-tok"), 97);

    // Bad bodies, and orders that do not exist.
    for body in [
        "{}",
        r#"{"amount":1}"#,
        r#"{"payment_ref":"x"}"#,
        r#"{"amount":-1,"payment_ref":"x"}"#,
        r#"{"amount":"5997","payment_ref":"x"}"#,
        r#"{"amount":1,"payment_ref":""}"#,
        r#"{"amount":1,"payment_ref":"has space"}"#,
        r#"{"amount":1,"payment_ref":"x","extra":1}"#,
    ] {
        let r = c.request(
            "POST",
            &format!("/v1/orders/{id}/pay"),
            &[("Authorization", &format!("Bearer {PAYMENT_TOKEN}"))],
            Some(body),
        );
        assert_error(&r, 400, "bad_request");
    }
    let long_ref = "r".repeat(129);
    assert_error(
        &c.pay_as(&id, PAYMENT_TOKEN, 1, &long_ref),
        400,
        "bad_request",
    );
    assert_error(
        &c.pay_as("nope", PAYMENT_TOKEN, 1, "x"),
        404,
        "unknown_order",
    );

    // The payment token is no shopper and no admin.
    let r = c.purchase("pay-tok", PAYMENT_TOKEN, Some(1), None);
    assert_error(&r, 401, "unauthorized");
    assert_error(&c.cancel(&id, PAYMENT_TOKEN), 403, "forbidden");
    let r = c.authed(
        "POST",
        &format!("/v1/orders/{id}/cancel"),
        PAYMENT_TOKEN,
        Some("{}"),
    );
    assert_error(&r, 403, "forbidden");
    // It may read an order, to learn what to charge.
    let read = c.get_order(&id, PAYMENT_TOKEN);
    assert_status(&read, 200);
    assert_eq!(read.json()["amount"], json!(5_997));
    let spec = sale_spec(1, 1).to_string();
    let r = c.authed("PUT", "/v1/sales/pay-tok-3", PAYMENT_TOKEN, Some(&spec));
    assert_error(&r, 401, "unauthorized");
}

#[test]
fn the_signed_webhook_pays_and_refuses_bad_stale_or_redated_signatures() {
    let s = Server::start(2, &[]);
    priced_sale(&s, "pay-hook", 500, "CNY");
    let mut c = s.client();
    let order = c.buy("pay-hook", &tok("carol"), 2);
    let id = order_id(&order);
    let body = json!({"order_id": id, "amount": 1_000, "payment_ref": "wx_42"}).to_string();
    let now = now_secs();

    assert_error(&webhook(&mut c, None, &body), 401, "signature_missing");
    for malformed in ["v1=abc", "t=now,v1=00", "t=1", &format!("t={now},v1=xyz")] {
        let r = webhook(&mut c, Some(malformed), &body);
        assert_error(&r, 400, "signature_malformed");
    }
    let wrong_secret = signature("not-the-webhook-secret", now, &body);
    let r = webhook(&mut c, Some(&wrong_secret), &body);
    assert_error(&r, 401, "signature_mismatch");
    // The signed body with another order or amount, and a captured request re-dated to pass
    // the window: the signature covers both, so neither verifies.
    let signed = signature(WEBHOOK_SECRET, now, &body);
    let tampered = body.replace("1000", "1");
    assert_error(
        &webhook(&mut c, Some(&signed), &tampered),
        401,
        "signature_mismatch",
    );
    let captured = signature(WEBHOOK_SECRET, now - 3_600, &body);
    let redated = captured.replace(&format!("t={}", now - 3_600), &format!("t={now}"));
    assert_error(
        &webhook(&mut c, Some(&redated), &body),
        401,
        "signature_mismatch",
    );
    // Correctly signed, but outside the 300 s window either way.
    assert_error(
        &webhook(&mut c, Some(&captured), &body),
        401,
        "signature_stale",
    );
    let future = signature(WEBHOOK_SECRET, now + 3_600, &body);
    assert_error(
        &webhook(&mut c, Some(&future), &body),
        401,
        "signature_stale",
    );
    assert_eq!(status_of(&mut c, &id)["status"], json!("pending"));

    // A wrong amount, correctly signed: refused, still pending.
    let short = json!({"order_id": id, "amount": 999, "payment_ref": "wx_42"}).to_string();
    let r = webhook(
        &mut c,
        Some(&signature(WEBHOOK_SECRET, now, &short)),
        &short,
    );
    assert_error(&r, 409, "amount_mismatch");
    assert_eq!(status_of(&mut c, &id)["status"], json!("pending"));

    let r = webhook(&mut c, Some(&signed), &body);
    assert_status(&r, 200);
    let paid = r.json();
    assert_eq!(paid["status"], json!("paid"), "{paid}");
    assert_eq!(paid["payment_ref"], json!("wx_42"), "{paid}");
    // The provider retries (the same request, or re-signed later): the same answer.
    let r = webhook(&mut c, Some(&signed), &body);
    assert_status(&r, 200);
    assert_eq!(r.json(), paid);
    let resigned = signature(WEBHOOK_SECRET, now + 1, &body);
    assert_eq!(webhook(&mut c, Some(&resigned), &body).json(), paid);
    // A second payment of a paid order is refused; the order keeps the first.
    let double = json!({"order_id": id, "amount": 1_000, "payment_ref": "wx_43"}).to_string();
    let r = webhook(
        &mut c,
        Some(&signature(WEBHOOK_SECRET, now, &double)),
        &double,
    );
    assert_error(&r, 409, "order_paid");
    assert_eq!(status_of(&mut c, &id)["payment_ref"], json!("wx_42"));

    // Signed but unusable bodies.
    for bad in [
        json!({"amount": 1, "payment_ref": "x"}).to_string(),
        json!({"order_id": id, "payment_ref": "x"}).to_string(),
        "not json".to_owned(),
    ] {
        let r = webhook(&mut c, Some(&signature(WEBHOOK_SECRET, now, &bad)), &bad);
        assert_error(&r, 400, "bad_request");
    }
    let unknown = json!({"order_id": "nope", "amount": 1, "payment_ref": "x"}).to_string();
    let r = webhook(
        &mut c,
        Some(&signature(WEBHOOK_SECRET, now, &unknown)),
        &unknown,
    );
    assert_error(&r, 404, "unknown_order");
}

#[test]
fn the_webhook_tolerance_is_configurable() {
    // With a 1 s tolerance, a request signed a minute ago (the default 300 s takes it) is stale.
    let s = Server::start(1, &["--webhook-tolerance-secs", "1"]);
    let mut c = s.client();
    let body = r#"{"order_id":"nope","amount":1,"payment_ref":"x"}"#;
    let minute_ago = signature(WEBHOOK_SECRET, now_secs() - 60, body);
    assert_error(
        &webhook(&mut c, Some(&minute_ago), body),
        401,
        "signature_stale",
    );
    let fresh = signature(WEBHOOK_SECRET, now_secs(), body);
    assert_error(&webhook(&mut c, Some(&fresh), body), 404, "unknown_order");
}

#[test]
fn price_and_currency_are_validated() {
    let s = Server::start(1, &[]);
    let mut c = s.client();
    let free = c.create_sale("free", &sale_spec(1, 1));
    assert_eq!(
        (free["price"].clone(), free["currency"].clone()),
        (json!(0), json!("CNY"))
    );
    let order = c.buy("free", &tok("dave"), 1);
    assert_eq!(order["amount"], json!(0), "{order}");
    for (field, value) in [
        ("price", json!(-1)),
        ("price", json!("100")),
        ("price", json!(1.5)),
        ("price", json!(10_000_000_001u64)),
        ("currency", json!("usd")),
        ("currency", json!("US")),
        ("currency", json!("EURO")),
        ("currency", json!("U$D")),
        ("currency", json!(978)),
    ] {
        let mut spec = sale_spec(1, 1);
        spec[field] = value.clone();
        let r = c.put_sale("bad-price", &spec);
        assert_error(&r, 400, "bad_request");
        assert!(r.text().contains(field), "{field}={value}: {r}");
    }
    // The largest price, times the largest quantity, is exact.
    let mut spec = sale_spec(100, 100);
    spec["price"] = json!(10_000_000_000u64);
    spec["currency"] = json!("JPY");
    let sale = c.create_sale("dear", &spec);
    assert_eq!(sale["price"], json!(10_000_000_000u64));
    assert_eq!(c.get_sale("dear")["currency"], json!("JPY"));
    let order = c.buy("dear", &tok("erin"), 100);
    assert_eq!(order["amount"], json!(1_000_000_000_000u64), "{order}");
    let id = order_id(&order);
    let r = c.pay_as(&id, PAYMENT_TOKEN, 1_000_000_000_000, "big");
    assert_status(&r, 200);
    assert_error(
        &c.pay_as(&id, PAYMENT_TOKEN, 1_000_000_000_001, "big2"),
        409,
        "order_paid",
    );
}

/// Prints what paying costs over loopback (no assertion on time: the machine is shared). One
/// connection, sequential calls, debug build unless run with `--release`.
#[test]
fn payment_costs_are_printed() {
    const N: usize = 40; // two orders per N fit in the sale's stock of 100
    let s = Server::start(2, &[]);
    priced_sale(&s, "pay-cost", 100, "CNY");
    let mut c = s.client();
    let ids: Vec<String> = (0..2 * N)
        .map(|i| order_id(&c.buy("pay-cost", &tok(&format!("cost-{i}")), 1)))
        .collect();
    let started = std::time::Instant::now();
    for id in &ids[..N] {
        assert_status(&c.pay_as(id, PAYMENT_TOKEN, 100, &format!("t-{id}")), 200);
    }
    let by_token = started.elapsed();
    let now = now_secs();
    let started = std::time::Instant::now();
    for id in &ids[N..] {
        let body = json!({"order_id": id, "amount": 100, "payment_ref": format!("w-{id}")});
        let body = body.to_string();
        let r = webhook(&mut c, Some(&signature(WEBHOOK_SECRET, now, &body)), &body);
        assert_status(&r, 200);
    }
    let by_webhook = started.elapsed();
    let body = json!({"order_id": ids[0], "amount": 100, "payment_ref": "x"}).to_string();
    let forged = signature("forged-secret-0123456789", now, &body);
    let started = std::time::Instant::now();
    for _ in 0..N {
        assert_error(
            &webhook(&mut c, Some(&forged), &body),
            401,
            "signature_mismatch",
        );
    }
    let refused = started.elapsed();
    let per = |d: std::time::Duration| d.as_micros() / N as u128;
    println!(
        "payment costs ({} mode, {N} sequential calls each): token pay {} us/call, \
         webhook pay {} us/call, forged webhook refused {} us/call",
        if redis_mode() { "redis" } else { "embedded" },
        per(by_token),
        per(by_webhook),
        per(refused)
    );
}

#[test]
fn without_a_webhook_secret_the_webhook_is_off_and_says_so() {
    let data_dir = ScratchDir::new();
    let port = pick_port();
    let mut cmd = common::process::seckill_cmd();
    cmd.env_remove("SECKILL_WEBHOOK_SECRET")
        .args(["serve", "--shards", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir.path());
    let mut server = common::process::Spawned::spawn(&mut cmd);
    server.wait_ready(port);
    let mut c = Client::connect(port);
    let body = r#"{"order_id":"x","amount":0,"payment_ref":"pi_1"}"#;
    let t = now_secs();
    let r = webhook(&mut c, Some(&signature(WEBHOOK_SECRET, t, body)), body);
    assert_error(&r, 404, "webhook_disabled");
    // The payment-service token still pays.
    c.create_sale("hook-off", &sale_spec(10, 1));
    let id = order_id(&c.buy("hook-off", &tok("alice"), 1));
    assert_status(&c.pay(&id), 200);
}

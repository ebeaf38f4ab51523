//! What the fair modes' tests share: buying with a pass, waiting for a sale's start, and a
//! metrics scrape.

use std::time::Duration;

use super::{poll, prometheus, tok, Client, Response, Server};

/// `POST /v1/sales/{sku}/purchase` as `user`, with `pass` as `X-Seckill-Pass` if given.
pub fn buy_with_pass(c: &mut Client, sku: &str, user: &str, pass: Option<&str>) -> Response {
    let auth = format!("Bearer {}", tok(user));
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(pass) = pass {
        headers.push(("X-Seckill-Pass", pass));
    }
    c.request(
        "POST",
        &format!("/v1/sales/{sku}/purchase"),
        &headers,
        Some(""),
    )
}

/// Sleeps until `at` (ms since the epoch) has passed.
pub fn sleep_until(at: i64) {
    let wait = at - super::now_ms();
    if wait > 0 {
        std::thread::sleep(Duration::from_millis(wait as u64 + 20));
    }
}

/// One scrape; scrapes are rate-limited per shard, so a refused one is asked again.
pub fn scrape(server: &Server) -> prometheus::Exposition {
    poll(Duration::from_secs(30), || {
        let r = server.client().get("/metrics");
        (r.status == 200).then(|| {
            let text = r.text();
            prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
        })
    })
    .expect("a scrape answered")
}

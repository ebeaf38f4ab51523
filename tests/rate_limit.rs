//! Per-sale purchase rate limit on a 2-shard server.
mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const RATE: f64 = 50.0;

#[derive(Default)]
struct Counts {
    admitted: u64,
    limited: u64,
    unexpected: BTreeMap<String, u64>,
}

#[test]
fn purchases_are_limited_to_the_configured_rate() {
    let s = Server::start(2, &[]);
    let mut spec = sale_spec(1_000_000, 1_000);
    spec["rate_limit_per_sec"] = json!(50);
    let sale = s.client().create_sale("rl", &spec);
    assert_eq!(sale["rate_limit_per_sec"], json!(50), "{sale}");

    // 8 connections, 4 on each shard.
    let clients: Vec<Client> = s.clients_per_shard(4).into_iter().flatten().collect();
    assert_eq!(clients.len(), 8);
    let run_for = Duration::from_secs(3);
    let start = Arc::new(Instant::now());
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            let start = start.clone();
            let tokens: Vec<String> = (0..300).map(|i| tok(&format!("rl-t{t}-u{i}"))).collect();
            thread::spawn(move || {
                let mut counts = Counts::default();
                let mut i = 0usize;
                while start.elapsed() < run_for {
                    let r = c.purchase("rl", &tokens[i % tokens.len()], None, None);
                    i += 1;
                    match r.status {
                        201 => counts.admitted += 1,
                        429 => {
                            counts.limited += 1;
                            assert_eq!(r.error_code().as_deref(), Some("rate_limited"), "{r}");
                            let ra = r
                                .header("retry-after")
                                .unwrap_or_else(|| panic!("429 without Retry-After: {r}"));
                            let secs: u64 = ra.trim().parse().unwrap_or_else(|_| {
                                panic!("Retry-After must be integer seconds, got {ra:?}")
                            });
                            assert!(secs >= 1, "Retry-After must be >= 1: {r}");
                        }
                        _ => {
                            let key = format!("{} {}", r.status, r.text());
                            *counts.unexpected.entry(key).or_default() += 1;
                        }
                    }
                }
                counts
            })
        })
        .collect();
    let mut total = Counts::default();
    for h in handles {
        let c = h.join().expect("hammer thread panicked");
        total.admitted += c.admitted;
        total.limited += c.limited;
        for (k, v) in c.unexpected {
            *total.unexpected.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    eprintln!(
        "rate limit 50/s: {} admitted, {} rate limited in {elapsed:.2}s",
        total.admitted, total.limited
    );

    assert!(
        total.unexpected.is_empty(),
        "only 201 and 429 expected, also got: {:?}",
        total.unexpected
    );
    assert!(
        total.limited > 0,
        "no 429 at all ({} admitted in {elapsed:.2}s at rate 50/s)",
        total.admitted
    );
    let admitted = total.admitted as f64;
    let upper = 1.1 * RATE * elapsed + 50.0;
    let lower = 0.5 * RATE * (elapsed - 1.0);
    assert!(
        admitted <= upper,
        "admitted {admitted} purchases in {elapsed:.2}s, more than 1.1*50*t+50 = {upper:.1} ({} were 429)",
        total.limited
    );
    assert!(
        admitted >= lower,
        "admitted only {admitted} purchases in {elapsed:.2}s, fewer than 0.5*50*(t-1) = {lower:.1} ({} were 429)",
        total.limited
    );
    let mut c = s.client();
    assert_eq!(
        c.remaining("rl"),
        1_000_000 - total.admitted as i64,
        "every admitted purchase takes one unit"
    );
}

#[test]
fn zero_or_absent_rate_limit_means_unlimited_and_limits_are_per_sale() {
    let s = Server::start(2, &[]);
    let mut c = s.client();
    let mut zero = sale_spec(100_000, 100_000);
    zero["rate_limit_per_sec"] = json!(0);
    c.create_sale("zero", &zero);
    c.create_sale("absent", &sale_spec(100_000, 100_000));
    let mut tight = sale_spec(100_000, 100_000);
    tight["rate_limit_per_sec"] = json!(1);
    c.create_sale("tight", &tight);

    let clients: Vec<Client> = s.clients_per_shard(2).into_iter().flatten().collect();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            thread::spawn(move || {
                let token = tok(&format!("free{t}"));
                for i in 0..300 {
                    let sku = if i % 2 == 0 { "zero" } else { "absent" };
                    let r = c.purchase(sku, &token, None, None);
                    assert_eq!(r.status, 201, "{sku} has no rate limit, request {i}: {r}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("unlimited purchase thread panicked");
    }
    assert_eq!(c.remaining("zero"), 100_000 - 600);
    assert_eq!(c.remaining("absent"), 100_000 - 600);

    // Saturate "tight"; "zero" is unaffected.
    let token = tok("mixer");
    let saw_429 = (0..500).any(|_| c.purchase("tight", &token, None, None).status == 429);
    assert!(
        saw_429,
        "rate_limit_per_sec 1 never answered 429 in 500 fast attempts"
    );
    let r = c.purchase("zero", &token, None, None);
    assert_eq!(
        r.status, 201,
        "another sale's rate limit must not apply: {r}"
    );
}

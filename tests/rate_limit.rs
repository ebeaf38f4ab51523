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
        let c = h.join().expect("shopper thread panicked");
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
    // A fresh connection: on a busy box the threaded phase can outlast the idle timeout.
    let mut c = s.client();
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

/// What a run of closed-loop shoppers got.
struct Run {
    admitted: u64,
    limited: u64,
    not_started: u64,
    /// Client-side, from before the first request was sent until after the last answer arrived:
    /// at least as long as the server could have been admitting.
    elapsed_secs: f64,
}

/// Closed-loop shoppers, connected and waiting behind a barrier: once released, each buys back
/// to back on its own keep-alive connection until its time is up. They ignore Retry-After, as a
/// hostile shopper would.
struct Crowd {
    barrier: Arc<std::sync::Barrier>,
    handles: Vec<thread::JoinHandle<(Counts, u64)>>,
}

impl Crowd {
    /// Opens `connections` keep-alive connections, each with a thread that will buy `sku` back to
    /// back for `run_for` once released.
    fn gather(s: &Server, sku: &str, connections: usize, run_for: Duration) -> Crowd {
        let clients: Vec<Client> = (0..connections).map(|_| s.client()).collect();
        let barrier = Arc::new(std::sync::Barrier::new(connections + 1));
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(t, mut c)| {
                let barrier = barrier.clone();
                let sku = sku.to_string();
                let tokens: Vec<String> =
                    (0..4).map(|i| tok(&format!("{sku}-c{t}-u{i}"))).collect();
                thread::spawn(move || {
                    let mut counts = Counts::default();
                    let mut not_started = 0;
                    barrier.wait();
                    let started = Instant::now();
                    let mut i = 0usize;
                    while started.elapsed() < run_for {
                        let r = c.purchase(&sku, &tokens[i % tokens.len()], None, None);
                        i += 1;
                        match (r.status, r.error_code().as_deref()) {
                            (201, _) => counts.admitted += 1,
                            (429, _) => counts.limited += 1,
                            (425, Some("not_started")) => not_started += 1,
                            _ => {
                                let key = format!("{} {}", r.status, r.text());
                                *counts.unexpected.entry(key).or_default() += 1;
                            }
                        }
                    }
                    (counts, not_started)
                })
            })
            .collect();
        Crowd { barrier, handles }
    }

    /// Lets the shoppers buy, and waits until they are done.
    fn release(self) -> Run {
        let Crowd { barrier, handles } = self;
        // Taken before the shoppers are released and after the last has finished: the server
        // cannot have admitted anything of this run outside it.
        let start = Instant::now();
        barrier.wait();
        let mut total = Counts::default();
        let mut not_started = 0;
        for h in handles {
            let (c, n) = h.join().expect("shopper thread panicked");
            total.admitted += c.admitted;
            total.limited += c.limited;
            not_started += n;
            for (k, v) in c.unexpected {
                *total.unexpected.entry(k).or_default() += v;
            }
        }
        let elapsed_secs = start.elapsed().as_secs_f64();
        assert!(
            total.unexpected.is_empty(),
            "only 201, 429 and 425 not_started expected, also got: {:?}",
            total.unexpected
        );
        Run {
            admitted: total.admitted,
            limited: total.limited,
            not_started,
            elapsed_secs,
        }
    }
}

/// How long after its creation the launch sale opens: time for every shard to learn it, so the
/// crowd meets `425 not_started` first and then the launch (a "gave up" margin, not a property).
const LAUNCH_DELAY_MS: i64 = 1_000;

/// Waits until every shard of `s` knows the sale `sku` (answers a quantity-0 probe with
/// something other than `404`), so the crowd never meets an unknown sale. Gives up after
/// [`process::READY_BOUND`].
fn wait_until_known(s: &Server, sku: &str) {
    let auth = format!("Bearer {}", tok("launch-probe"));
    for shard in 0..s.shards {
        let mut client = s.client_on_shard(shard);
        let mut last = None;
        let known = poll(process::READY_BOUND, || {
            let r = client.request(
                "POST",
                &format!("/v1/sales/{sku}/purchase"),
                &[("Authorization", &auth)],
                Some(r#"{"quantity":0}"#),
            );
            assert_ne!(r.status, 201, "the probe bought something: {r}");
            let known = r.status != 404;
            last = Some(r);
            known.then_some(())
        });
        assert!(
            known.is_some(),
            "shard {shard} never learnt sale {sku}; last probe: {last:?}"
        );
    }
}

/// Many connections on both shards, through a sale's launch (the crowd is already there when it
/// opens, so the shards' split of the rate starts from no demand at all) and beyond: the node
/// never admits more than `rate × elapsed + burst`, plus 5%. Only that upper bound is asserted;
/// the ratio achieved is printed.
#[test]
fn many_connections_never_get_more_than_the_rate() {
    // Low enough for 300 connections to a debug build to exceed it on a busy machine.
    const RATE: u64 = 300;
    const SHARDS: usize = 2;
    // Each shard's bucket holds at most 0.1 s of its share, and at least one token.
    let burst = RATE as f64 * 0.1 + SHARDS as f64;
    let s = Server::start(SHARDS, &[]);
    let connections: Vec<usize> = match std::env::var("RATE_LIMIT_CONNECTIONS") {
        Ok(list) => list
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect(),
        Err(_) => vec![3, 30, 300],
    };
    let run_for = Duration::from_secs(3);
    for n in connections {
        let sku = format!("launch-{n}");
        // The crowd connects first and waits; only then is the sale announced, opening shortly
        // after, so the crowd is there at the launch however long connecting took.
        let crowd = Crowd::gather(&s, &sku, n, run_for);
        let mut spec = sale_spec(100_000_000, 1_000_000);
        let opens_at = now_ms() + LAUNCH_DELAY_MS;
        spec["starts_at"] = json!(opens_at);
        spec["rate_limit_per_sec"] = json!(RATE);
        s.client().create_sale(&sku, &spec);
        wait_until_known(&s, &sku);
        let run = crowd.release();
        assert!(
            run.not_started > 0,
            "{n} connections: no purchase was refused as not started, so the crowd was not \
             waiting at the launch ({} admitted, {} rate limited)",
            run.admitted,
            run.limited
        );
        let allowed = RATE as f64 * run.elapsed_secs + burst;
        // For the report only: roughly how long the sale was open during the run.
        let open_secs = (now_ms() - opens_at) as f64 / 1000.0;
        eprintln!(
            "rate limit {RATE}/s, {n} connections: {} admitted, {} rate limited, {} before the \
             start, in {:.2}s ({open_secs:.2}s open): {:.3} of rate x open time, {:.3} of the \
             asserted bound's rate x elapsed + burst",
            run.admitted,
            run.limited,
            run.not_started,
            run.elapsed_secs,
            run.admitted as f64 / (RATE as f64 * open_secs),
            run.admitted as f64 / allowed,
        );
        // A few connections to a debug build on a busy machine may not reach the rate; then
        // that run shows nothing, but the bound still holds. Hundreds always do.
        if run.limited == 0 {
            assert!(
                n < 100,
                "{n} connections never got a 429 ({} admitted): the rate was never reached",
                run.admitted
            );
            eprintln!("NOTE: {n} connections never reached the rate; that run shows nothing");
        }
        assert!(
            run.admitted as f64 <= 1.05 * allowed,
            "{n} connections: {} admitted in {:.2}s, more than 1.05 x ({RATE}/s x elapsed + burst \
             {burst}) = {:.0}",
            run.admitted,
            run.elapsed_secs,
            1.05 * allowed
        );
    }
}

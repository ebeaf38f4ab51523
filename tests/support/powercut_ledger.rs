//! The shoppers of the power-cut test and their ledger: each acknowledged purchase, pay and
//! cancel, and the status each order must have after a restart; then the check of every one.

use crate::common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// When a round's power cut comes, once the round has its acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// At once, wherever the server is.
    Now,
    /// Right after the next write to a journal segment, before anything can sync it: the most
    /// likely moment to expose a reply sent before its `fdatasync`.
    OnJournalWrite,
}

/// The status an acknowledged order must have after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Created (201); no pay or cancel was tried.
    Pending,
    /// A pay or cancel was acknowledged (200): exactly this status.
    Exactly(&'static str),
    /// A pay or cancel was sent but not acknowledged: pending, or this status.
    PendingOr(&'static str),
}

impl Expect {
    /// Whether `status` after a restart keeps every acknowledgement.
    pub fn allows(self, status: &str) -> bool {
        match self {
            Expect::Pending => status == "pending",
            Expect::Exactly(want) => status == want,
            Expect::PendingOr(maybe) => status == "pending" || status == maybe,
        }
    }
}

/// One acknowledged purchase and what became of it.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The order's id, and its buyer's token to read it back with.
    pub id: String,
    pub token: String,
    /// The round (power cut) it was acknowledged in.
    pub round: usize,
    /// The status it must have.
    pub expect: Expect,
    /// The 201 was read before the cut began (not merely before the kill).
    pub before_cut: bool,
    /// Already found lost by an earlier check (counted once).
    pub lost: bool,
}

/// What one worker saw in a round.
#[derive(Default)]
pub struct Seen {
    /// Its acknowledged orders.
    pub acked: Vec<Acked>,
    /// Requests that got no 2xx after the cut began: refused by the dead disk, or cut off by
    /// the kill. Only these are evidence that the cut caught requests in flight.
    pub unanswered: usize,
    /// Requests that failed (no answer, or not the 2xx they should get) while no cut was under
    /// way: a bug, never evidence of the cut.
    pub failed_before_cut: usize,
    /// A few of those failures, for the failure message.
    pub failures: Vec<String>,
}

impl Seen {
    /// Counts a request that got no 2xx: `what` went wrong. Before the cut it is a failure;
    /// after, evidence that the cut caught a request.
    fn failed(&mut self, cutting: &AtomicBool, what: impl FnOnce() -> String) {
        if cutting.load(Ordering::SeqCst) {
            self.unanswered += 1;
        } else {
            self.failed_before_cut += 1;
            if self.failures.len() < 5 {
                self.failures.push(what());
            }
        }
    }
}

/// Buys on `skus` as one shopper until the server dies or `stop` is set; pays or cancels a third
/// of the orders each.
pub fn shop(
    port: u16,
    worker: usize,
    round: usize,
    skus: &[String],
    stop: &AtomicBool,
    cutting: &AtomicBool,
    acked_count: &AtomicUsize,
) -> Seen {
    let mut seen = Seen::default();
    let token = tok(&format!("powercut-{worker}"));
    // Shoppers start before the cut, on a server that answered /readyz: a refused connect is a
    // failure, not a shopper with nothing to report.
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|error| {
        panic!("shopper {worker} of round {round}: connect to 127.0.0.1:{port}: {error}")
    });
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("set a write timeout");
    let mut client = Client::from_stream(stream, port);
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str())];
    let mut rng = SmallRng::seed_from_u64((round * 1000 + worker) as u64);
    while !stop.load(Ordering::SeqCst) {
        let sku = &skus[rng.gen_range(0..skus.len())];
        let path = format!("/v1/sales/{sku}/purchase");
        let response = match client.try_request("POST", &path, &headers, Some("")) {
            Ok(response) => response,
            Err(error) => {
                seen.failed(cutting, || format!("POST {path}: {error}"));
                break;
            }
        };
        let before_cut = !cutting.load(Ordering::SeqCst);
        if response.status != 201 {
            seen.failed(cutting, || format!("POST {path}: {response}"));
            continue;
        }
        let mut acked = Acked {
            id: order_id(&response.json()),
            token: token.clone(),
            round,
            expect: Expect::Pending,
            before_cut,
            lost: false,
        };
        acked_count.fetch_add(1, Ordering::SeqCst);
        let action = match rng.gen_range(0..3) {
            0 => Some(("pay", "paid")),
            1 => Some(("cancel", "cancelled")),
            _ => None,
        };
        if let Some((verb, status)) = action {
            let path = format!("/v1/orders/{}/{verb}", acked.id);
            acked.expect = Expect::PendingOr(status);
            // The buyer cancels; the payment service pays (the sales are free, so amount 0).
            let payment = format!("Bearer {PAYMENT_TOKEN}");
            let body = format!(r#"{{"amount":0,"payment_ref":"ref-{}"}}"#, acked.id);
            let (headers, body) = if verb == "pay" {
                ([("Authorization", payment.as_str())], Some(body.as_str()))
            } else {
                (headers, None)
            };
            match client.try_request("POST", &path, &headers, body) {
                Ok(response) if response.status == 200 => acked.expect = Expect::Exactly(status),
                Ok(response) => seen.failed(cutting, || format!("POST {path}: {response}")),
                Err(error) => {
                    seen.failed(cutting, || format!("POST {path}: {error}"));
                    seen.acked.push(acked);
                    break;
                }
            }
        }
        seen.acked.push(acked);
    }
    seen
}

/// What a restart kept of one round's acknowledgements.
#[derive(Debug, Clone, Copy)]
pub struct RoundReport {
    /// How the round's power was cut.
    pub cut: Cut,
    /// The cut threw away unsynced data of a journal segment.
    pub cut_segment_data: bool,
    /// The newest segment and snapshot that survived the cut (above 1: rolled under load).
    pub max_segment: u64,
    /// See `max_segment`.
    pub max_snapshot: u64,
    /// Purchases acknowledged (201) in the round.
    pub acked_orders: usize,
    /// ...of which the 201 was read before the cut began.
    pub acked_before_cut: usize,
    /// Pays and cancels acknowledged (200) in the round.
    pub acked_transitions: usize,
    /// Requests without a 2xx after the cut began: refused after the cut, or cut off by the
    /// kill.
    pub unanswered: usize,
    /// Requests that failed while no cut was under way (must be 0).
    pub failed_before_cut: usize,
    /// Orders acknowledged in this round that a restart no longer knows.
    pub lost_orders: usize,
    /// ...of which the 201 was read before the cut began.
    pub lost_before_cut: usize,
    /// Orders whose status contradicts an acknowledged pay or cancel (or moved without one).
    pub wrong_status: usize,
}

impl RoundReport {
    /// An empty report for a round cut by `cut`.
    pub fn new(cut: Cut) -> Self {
        Self {
            cut,
            cut_segment_data: false,
            max_segment: 0,
            max_snapshot: 0,
            acked_orders: 0,
            acked_before_cut: 0,
            acked_transitions: 0,
            unanswered: 0,
            failed_before_cut: 0,
            lost_orders: 0,
            lost_before_cut: 0,
            wrong_status: 0,
        }
    }
}

/// GETs every acknowledged order not yet found lost; returns, per round, the newly lost orders
/// (and those read before the cut) and the wrong statuses, with up to 10 examples.
pub fn check(
    server: &Server,
    ledger: &mut [Acked],
    rounds: usize,
) -> (Vec<RoundReport>, Vec<String>) {
    let mut reports = vec![RoundReport::new(Cut::Now); rounds];
    let mut examples = Vec::new();
    let mut client = server.client();
    for acked in ledger.iter_mut().filter(|acked| !acked.lost) {
        let response = client.get_order(&acked.id, &acked.token);
        let report = &mut reports[acked.round];
        match response.status {
            404 => {
                acked.lost = true;
                report.lost_orders += 1;
                report.lost_before_cut += usize::from(acked.before_cut);
                if examples.len() < 10 {
                    examples.push(format!("lost {acked:?}"));
                }
            }
            200 => {
                let body = response.json();
                let status = body["status"].as_str().unwrap_or("<none>");
                if !acked.expect.allows(status) {
                    report.wrong_status += 1;
                    if examples.len() < 10 {
                        examples.push(format!("status {status:?} for {acked:?}"));
                    }
                }
            }
            _ => panic!("GET order {}: {response}", acked.id),
        }
    }
    (reports, examples)
}

//! The final report of a load run: a serde structure (the `--json` output) and its
//! human-readable rendering.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Latency of a set of requests, in microseconds, measured from when each request was due by
/// the schedule (not from when it was sent), so it includes any wait for a free connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Requests in the set.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest observed.
    pub max_us: u64,
    /// Arithmetic mean.
    pub mean_us: u64,
}

/// What a load run did and saw.
///
/// Invariants once the run is over: `sent == completed + errors`, `completed` is the sum of
/// `status`, the sum of the `outcomes` counts is `sent`, and `planned == sent + not_sent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The target URLs.
    pub urls: Vec<String>,
    /// The SKU bought.
    pub sku: String,
    /// Target arrival rate, requests per second.
    pub rate: f64,
    /// Scheduled duration, seconds.
    pub duration_secs: f64,
    /// From the start of the schedule until the last response (or timeout), seconds.
    pub elapsed_secs: f64,
    /// Executors used.
    pub threads: usize,
    /// Connections used.
    pub connections: usize,
    /// Distinct shoppers arrivals were drawn from.
    pub users: u64,
    /// Arrivals the schedule holds for the duration.
    pub planned: u64,
    /// Requests sent.
    pub sent: u64,
    /// Requests answered with an HTTP response (any status).
    pub completed: u64,
    /// Requests that got no response: `timeout` plus `transport_error`.
    pub errors: u64,
    /// Arrivals still waiting for a connection when the duration ended (backlog), never sent.
    pub not_sent: u64,
    /// `completed / elapsed_secs`.
    pub throughput: f64,
    /// Connections established, including reconnects.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_errors: u64,
    /// Responses by HTTP status code.
    pub status: BTreeMap<String, u64>,
    /// Requests by outcome (`created`, the body's `error` code, `http_<status>`, `timeout`,
    /// `transport_error`), with their latency.
    pub outcomes: BTreeMap<String, LatencySummary>,
    /// Latency of every sent request.
    pub latency: LatencySummary,
    /// Users who got at least one order (201).
    pub users_with_orders: u64,
    /// Most orders (201s) any single user got.
    pub max_orders_per_user: u64,
}

impl Report {
    /// Requests with `outcome` (0 when there were none).
    pub fn outcome_count(&self, outcome: &str) -> u64 {
        self.outcomes
            .get(outcome)
            .map_or(0, |latency| latency.count)
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> Result<String, simd_json::Error> {
        simd_json::to_string(self)
    }
}

/// Microseconds as a short human duration.
fn human(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}us")
    }
}

fn latency_row(f: &mut fmt::Formatter<'_>, name: &str, latency: &LatencySummary) -> fmt::Result {
    writeln!(
        f,
        "  {name:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        latency.count,
        human(latency.p50_us),
        human(latency.p90_us),
        human(latency.p99_us),
        human(latency.p999_us),
        human(latency.max_us),
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "-----")?;
        writeln!(
            f,
            "seckill load: sku {} at {}",
            self.sku,
            self.urls.join(", ")
        )?;
        writeln!(
            f,
            "schedule:   {} req/s for {:.1}s = {} arrivals; {} connection(s), {} thread(s), {} user(s)",
            self.rate, self.duration_secs, self.planned, self.connections, self.threads, self.users
        )?;
        writeln!(
            f,
            "requests:   sent {}, completed {}, errors {}, not sent {}",
            self.sent, self.completed, self.errors, self.not_sent
        )?;
        if self.not_sent > 0 {
            writeln!(
                f,
                "WARNING:    {} arrivals found no free connection before the end and were never \
                 sent; the latencies below leave out the longest waits. Add connections or \
                 threads, or lower the rate.",
                self.not_sent
            )?;
        }
        writeln!(
            f,
            "throughput: {:.1} responses/s over {:.2}s",
            self.throughput, self.elapsed_secs
        )?;
        writeln!(
            f,
            "connects:   {} ({} failed attempts)",
            self.connects, self.connect_errors
        )?;
        let statuses: Vec<String> = self
            .status
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        writeln!(f, "status:     {}", statuses.join(", "))?;
        writeln!(
            f,
            "orders:     {} user(s) got an order; most held by one user: {}",
            self.users_with_orders, self.max_orders_per_user
        )?;
        writeln!(
            f,
            "latency from the scheduled time (corrected for coordinated omission):"
        )?;
        writeln!(
            f,
            "  {:<20} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "outcome", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        latency_row(f, "all", &self.latency)?;
        for (outcome, latency) in &self.outcomes {
            latency_row(f, outcome, latency)?;
        }
        Ok(())
    }
}

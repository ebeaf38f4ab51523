//! Prometheus text exposition format, version 0.0.4: merges every shard's snapshot and writes
//! the families operators scrape.
//!
//! Written here rather than with `prometheus-client`: that crate's types are shared registries of
//! atomics, built to be updated in place from many threads. Our counters live in each shard with
//! no synchronisation and only meet on the scraping shard, so adapting them would mean building a
//! throwaway registry on every scrape. The format is small, and `tests/metrics.rs` checks our
//! output with a strict parser.

use std::fmt::Write;

use super::distribution::DistributionSnapshot;
use super::recorder::{MessageKind, WaitingRoomEvent};
use super::{add_count, Route, ShardSnapshot};
use crate::feed::PublisherStats;
use crate::sale::{OrderCounts, OrderStatus};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Latency bucket bounds: nanoseconds and the `le` label in seconds.
const LATENCY_BUCKETS: [(u64, &str); 16] = [
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// Journal group size bucket bounds, in records.
const GROUP_BUCKETS: [(u64, &str); 12] = [
    (1, "1"),
    (2, "2"),
    (4, "4"),
    (8, "8"),
    (16, "16"),
    (32, "32"),
    (64, "64"),
    (128, "128"),
    (256, "256"),
    (1024, "1024"),
    (4096, "4096"),
    (16384, "16384"),
];

/// Renders the merged metrics of `shards` (one snapshot per shard that answered).
/// With `feed`, the order feed's node-wide figures too.
pub fn render(shards: &[ShardSnapshot], feed: Option<PublisherStats>) -> String {
    let mut out = Text(String::with_capacity(16 * 1024));
    out.family(
        "seckill_build_info",
        "gauge",
        "The running version; always 1.",
    );
    out.sample(
        "seckill_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(
        "seckill_shards_reporting",
        "gauge",
        "Shards that answered this scrape.",
    );
    out.sample("seckill_shards_reporting", &[], shards.len() as u64);
    render_requests(&mut out, shards);
    render_sales(&mut out, shards);
    render_runtime(&mut out, shards);
    render_journal(&mut out, shards);
    render_redis(&mut out, shards);
    render_regressions(&mut out, shards);
    if let Some(feed) = feed {
        render_feed(&mut out, feed);
    }
    out.0
}

/// The order feed, node-wide: only with `--events`.
fn render_feed(out: &mut Text, feed: PublisherStats) {
    out.family(
        "seckill_events_broker_connected",
        "gauge",
        "1 while the order feed's NATS client holds a connection.",
    );
    out.sample(
        "seckill_events_broker_connected",
        &[],
        u64::from(feed.connected),
    );
    out.family(
        "seckill_events_pending",
        "gauge",
        "Order feed events in the durable outbox that JetStream has not acknowledged yet.",
    );
    out.sample("seckill_events_pending", &[], feed.pending);
    out.family(
        "seckill_events_publish_lag_seconds",
        "gauge",
        "Age of the oldest order feed event not yet acknowledged by JetStream; 0 when none waits.",
    );
    let lag_ms = feed.lag_ms(crate::clock::now_ms());
    out.sample_decimal(
        "seckill_events_publish_lag_seconds",
        &[],
        lag_ms / 1000,
        lag_ms % 1000,
    );
    out.family(
        "seckill_events_published_total",
        "counter",
        "Order feed events JetStream acknowledged (repeats it dropped included).",
    );
    out.sample("seckill_events_published_total", &[], feed.published);
    out.family(
        "seckill_events_publish_failures_total",
        "counter",
        "Order feed publishes that failed or timed out; each is retried until stored.",
    );
    out.sample("seckill_events_publish_failures_total", &[], feed.failures);
}

fn render_requests(out: &mut Text, shards: &[ShardSnapshot]) {
    out.family(
        "seckill_http_requests_total",
        "counter",
        "HTTP responses by route and status.",
    );
    for route in Route::ALL {
        let mut statuses: Vec<(u16, u64)> = Vec::new();
        for shard in shards {
            if let Some(stats) = shard.requests.requests.get(route as usize) {
                for (status, count) in &stats.statuses {
                    add_count(&mut statuses, *status, *count);
                }
            }
        }
        statuses.sort_unstable();
        for (status, count) in statuses {
            let status = itoa::Buffer::new().format(status).to_owned();
            out.sample(
                "seckill_http_requests_total",
                &[("route", route.label()), ("status", &status)],
                count,
            );
        }
    }

    out.family(
        "seckill_request_duration_seconds",
        "histogram",
        "Time from a parsed request to its composed response, by route.",
    );
    for route in Route::ALL {
        let mut merged = DistributionSnapshot::default();
        for shard in shards {
            if let Some(stats) = shard.requests.requests.get(route as usize) {
                merged.merge(&stats.latency);
            }
        }
        out.histogram(
            "seckill_request_duration_seconds",
            &[("route", route.label())],
            &merged,
            &LATENCY_BUCKETS,
            NANOS_PER_SECOND,
        );
    }

    out.family(
        "seckill_purchase_outcomes_total",
        "counter",
        "Purchase answers by outcome: `created`, `replayed` (idempotent repeat) or the error code.",
    );
    let mut outcomes: Vec<(&str, u64)> = vec![("created", 0)];
    for shard in shards {
        for (outcome, count) in &shard.requests.purchase_outcomes {
            add_count(&mut outcomes, *outcome, *count);
        }
    }
    outcomes.sort_unstable();
    for (outcome, count) in outcomes {
        out.sample(
            "seckill_purchase_outcomes_total",
            &[("outcome", outcome)],
            count,
        );
    }
}

fn render_sales(out: &mut Text, shards: &[ShardSnapshot]) {
    out.family(
        "seckill_stock_remaining",
        "gauge",
        "Units left to sell, by SKU.",
    );
    let mut stock: Vec<(&str, u64)> = shards
        .iter()
        .flat_map(|shard| shard.store.stock.iter())
        .map(|(sku, remaining)| (&**sku, *remaining))
        .collect();
    stock.sort_unstable();
    for (sku, remaining) in stock {
        out.sample("seckill_stock_remaining", &[("sku", sku)], remaining);
    }

    out.family(
        "seckill_queue_tickets",
        "gauge",
        "Tickets a waiting room has issued, or registrations a lottery has taken, by SKU (fair-mode sales only).",
    );
    let mut queues: Vec<&crate::store::QueueGauge> = shards
        .iter()
        .flat_map(|shard| shard.store.queues.iter())
        .collect();
    queues.sort_unstable_by(|a, b| a.sku.cmp(&b.sku));
    for queue in &queues {
        out.sample(
            "seckill_queue_tickets",
            &[("sku", &queue.sku)],
            queue.tickets,
        );
    }
    out.family(
        "seckill_lottery_winners",
        "gauge",
        "A drawn lottery's winners (at most its registrants), by SKU; 0 before the draw and for waiting rooms.",
    );
    for queue in &queues {
        out.sample(
            "seckill_lottery_winners",
            &[("sku", &queue.sku)],
            queue.winners,
        );
    }

    out.family(
        "seckill_orders",
        "gauge",
        "Orders held, by status (expired and cancelled ones only up to the retention limit).",
    );
    let mut orders = OrderCounts::default();
    for shard in shards {
        orders.merge(&shard.store.orders);
    }
    for status in OrderStatus::ALL {
        out.sample(
            "seckill_orders",
            &[("status", status.label())],
            orders.get(status),
        );
    }
}

fn render_runtime(out: &mut Text, shards: &[ShardSnapshot]) {
    out.family(
        "seckill_connections_open",
        "gauge",
        "Client connections open.",
    );
    let open = shards.iter().map(|shard| shard.connections_open).sum();
    out.sample("seckill_connections_open", &[], open);

    out.family(
        "seckill_connections_refused_total",
        "counter",
        "Connections answered 503 overloaded and closed at the per-shard connection cap.",
    );
    let refused = shards
        .iter()
        .map(|shard| shard.requests.connections_refused)
        .sum();
    out.sample("seckill_connections_refused_total", &[], refused);

    out.family(
        "seckill_pow_failures_total",
        "counter",
        "Requests refused `pow_invalid`: the sale asks for proof-of-work and theirs was missing, wrong or stale.",
    );
    let failures = shards.iter().map(|shard| shard.requests.pow_failures).sum();
    out.sample("seckill_pow_failures_total", &[], failures);

    for event in WaitingRoomEvent::ALL {
        out.family(event.metric(), "counter", event.help());
        let count = shards
            .iter()
            .map(|shard| shard.requests.waiting_room[event as usize])
            .sum();
        out.sample(event.metric(), &[], count);
    }

    out.family(
        "seckill_sale_lookups_total",
        "counter",
        "Store reads for SKUs a node's edge did not know (cluster mode), by outcome: `found`, `unknown`, `failed`, or `refused` (over the lookup budget, answered 404 without asking).",
    );
    let mut lookups: Vec<(&str, u64)> = vec![("found", 0), ("unknown", 0)];
    for shard in shards {
        for (outcome, count) in &shard.requests.lookups {
            add_count(&mut lookups, *outcome, *count);
        }
    }
    lookups.sort_unstable();
    for (outcome, count) in lookups {
        out.sample("seckill_sale_lookups_total", &[("outcome", outcome)], count);
    }

    out.family(
        "seckill_shard_queue_depth",
        "gauge",
        "Commands a shard is running as owner, its own and its peers'.",
    );
    for shard in shards {
        let id = itoa::Buffer::new().format(shard.shard).to_owned();
        out.sample(
            "seckill_shard_queue_depth",
            &[("shard", &id)],
            shard.requests.owner_in_flight,
        );
    }

    out.family(
        "seckill_shard_messages_sent_total",
        "counter",
        "Messages a shard sent to other shards, by kind.",
    );
    for shard in shards {
        let id = itoa::Buffer::new().format(shard.shard).to_owned();
        for kind in MessageKind::ALL {
            out.sample(
                "seckill_shard_messages_sent_total",
                &[("shard", &id), ("kind", kind.label())],
                shard.requests.messages_sent[kind as usize],
            );
        }
    }
}

fn render_journal(out: &mut Text, shards: &[ShardSnapshot]) {
    let journals: Vec<_> = shards
        .iter()
        .filter_map(|shard| shard.store.journal.as_ref())
        .collect();
    if journals.is_empty() {
        return;
    }
    let mut latency = DistributionSnapshot::default();
    let mut groups = DistributionSnapshot::default();
    for journal in &journals {
        latency.merge(&journal.sync_latency);
        groups.merge(&journal.group_records);
    }
    out.family(
        "seckill_journal_sync_duration_seconds",
        "histogram",
        "Time to write one group commit and fdatasync it (write only under durability none).",
    );
    out.histogram(
        "seckill_journal_sync_duration_seconds",
        &[],
        &latency,
        &LATENCY_BUCKETS,
        NANOS_PER_SECOND,
    );
    out.family(
        "seckill_journal_group_records",
        "histogram",
        "Records made durable by one group commit.",
    );
    out.histogram(
        "seckill_journal_group_records",
        &[],
        &groups,
        &GROUP_BUCKETS,
        1,
    );
    out.family(
        "seckill_journal_bytes_written_total",
        "counter",
        "Record bytes written to the journal.",
    );
    let bytes = journals.iter().map(|journal| journal.bytes_written).sum();
    out.sample("seckill_journal_bytes_written_total", &[], bytes);
    out.family(
        "seckill_journal_failed_shards",
        "gauge",
        "Shards whose journal failed; their store refuses changes until restart.",
    );
    let failed = journals.iter().filter(|journal| journal.failed).count();
    out.sample("seckill_journal_failed_shards", &[], failed as u64);
    let mut compactions = DistributionSnapshot::default();
    for journal in &journals {
        compactions.merge(&journal.compaction_latency);
    }
    out.family(
        "seckill_journal_compaction_duration_seconds",
        "histogram",
        "Time to build one snapshot from a shard's closed segments, on a thread off the shards.",
    );
    out.histogram(
        "seckill_journal_compaction_duration_seconds",
        &[],
        &compactions,
        &LATENCY_BUCKETS,
        NANOS_PER_SECOND,
    );
    out.family(
        "seckill_journal_compaction_failures_total",
        "counter",
        "Snapshots that could not be built; their segments are kept and the snapshot is retried.",
    );
    let failures = journals
        .iter()
        .map(|journal| journal.compaction_failures)
        .sum();
    out.sample("seckill_journal_compaction_failures_total", &[], failures);
}

fn render_redis(out: &mut Text, shards: &[ShardSnapshot]) {
    let redis: Vec<(usize, &crate::store::RedisStats)> = shards
        .iter()
        .filter_map(|shard| shard.store.redis.as_ref().map(|stats| (shard.shard, stats)))
        .collect();
    if redis.is_empty() {
        return;
    }
    let mut latency = DistributionSnapshot::default();
    let mut batches = DistributionSnapshot::default();
    let mut inflight = DistributionSnapshot::default();
    for (_, stats) in &redis {
        latency.merge(&stats.call_latency);
        batches.merge(&stats.batch_size);
        inflight.merge(&stats.inflight);
    }
    out.family(
        "seckill_redis_call_duration_seconds",
        "histogram",
        "Time per Redis call (script or command), successful or not.",
    );
    out.histogram(
        "seckill_redis_call_duration_seconds",
        &[],
        &latency,
        &LATENCY_BUCKETS,
        NANOS_PER_SECOND,
    );
    out.family(
        "seckill_redis_batch_purchases",
        "histogram",
        "Purchases carried by one purchase-script call.",
    );
    out.histogram(
        "seckill_redis_batch_purchases",
        &[],
        &batches,
        &GROUP_BUCKETS,
        1,
    );
    out.family(
        "seckill_redis_purchase_inflight",
        "histogram",
        "Purchase-script calls of the same SKU in flight when one is sent, itself included \
         (`--redis-pipeline` bounds it).",
    );
    out.histogram(
        "seckill_redis_purchase_inflight",
        &[],
        &inflight,
        &GROUP_BUCKETS,
        1,
    );
    out.family(
        "seckill_redis_purchase_inflight_max",
        "gauge",
        "Most purchase-script calls of one SKU seen in flight at once on one shard since start.",
    );
    let most = redis
        .iter()
        .map(|(_, stats)| stats.inflight_max)
        .max()
        .unwrap_or(0);
    out.sample("seckill_redis_purchase_inflight_max", &[], most);
    out.family(
        "seckill_redis_errors_total",
        "counter",
        "Redis calls that failed, by kind: error or timeout.",
    );
    let errors = redis.iter().map(|(_, stats)| stats.errors).sum();
    let timeouts = redis.iter().map(|(_, stats)| stats.timeouts).sum();
    out.sample("seckill_redis_errors_total", &[("kind", "error")], errors);
    out.sample(
        "seckill_redis_errors_total",
        &[("kind", "timeout")],
        timeouts,
    );
    render_redis_masters(out, &redis);
}

/// The per-node families: every shard routes to every master, so a master's counters are summed
/// over shards, and it counts as up only while every shard reaches it.
fn render_redis_masters(out: &mut Text, redis: &[(usize, &crate::store::RedisStats)]) {
    #[derive(Default)]
    struct Master {
        up: bool,
        connected: bool,
        opened: u64,
        replaced: u64,
    }
    let mut masters: std::collections::BTreeMap<&str, Master> = Default::default();
    for (_, stats) in redis {
        for node in &stats.masters {
            let entry = masters.entry(&node.server).or_insert(Master {
                up: true,
                connected: true,
                ..Master::default()
            });
            entry.up &= node.up;
            entry.connected &= node.connected;
            entry.opened += node.breaker_opened;
            entry.replaced += node.replaced;
        }
    }
    out.family(
        "seckill_redis_master_up",
        "gauge",
        "1 while every shard reaches this Redis node (each master of a cluster) and its breakers are closed.",
    );
    for (server, master) in &masters {
        out.sample(
            "seckill_redis_master_up",
            &[("master", server)],
            u64::from(master.up),
        );
    }
    out.family(
        "seckill_redis_master_connected",
        "gauge",
        "1 while every shard has a connection to this Redis node, whatever its breakers say (0 with master_up 0: unreachable; 1 with master_up 0: reached but failing).",
    );
    for (server, master) in &masters {
        out.sample(
            "seckill_redis_master_connected",
            &[("master", server)],
            u64::from(master.connected),
        );
    }
    out.family(
        "seckill_redis_breaker_opened_total",
        "counter",
        "Times a shard's circuit breaker for this Redis node opened.",
    );
    for (server, master) in &masters {
        out.sample(
            "seckill_redis_breaker_opened_total",
            &[("master", server)],
            master.opened,
        );
    }
    out.family(
        "seckill_redis_connections_replaced_total",
        "counter",
        "Connections to this Redis node replaced after giving no reply for --redis-unresponsive-ms.",
    );
    for (server, master) in &masters {
        out.sample(
            "seckill_redis_connections_replaced_total",
            &[("master", server)],
            master.replaced,
        );
    }
    out.family(
        "seckill_redis_breaker_state",
        "gauge",
        "Each shard's circuit breaker for each Redis node: 0 closed, 1 open, 2 half-open.",
    );
    for (shard, stats) in redis {
        let id = itoa::Buffer::new().format(*shard).to_owned();
        for node in &stats.masters {
            out.sample(
                "seckill_redis_breaker_state",
                &[("shard", &id), ("master", &node.server)],
                node.breaker_state,
            );
        }
    }
    render_ghosts(out, redis);
}

/// Purchases answered 503 that may have run, and their abandon (`src/store/redis/abandon.rs`).
fn render_ghosts(out: &mut Text, redis: &[(usize, &crate::store::RedisStats)]) {
    let sum = |field: fn(&crate::store::redis::abandon::AbandonStats) -> u64| -> u64 {
        redis.iter().map(|(_, stats)| field(&stats.abandon)).sum()
    };
    out.family(
        "seckill_redis_ghosts_pending",
        "gauge",
        "Purchases answered 503 that may have run in Redis, waiting for their abandon.",
    );
    out.sample("seckill_redis_ghosts_pending", &[], sum(|s| s.pending));
    out.family(
        "seckill_redis_ghosts_abandoned_total",
        "counter",
        "Ghost purchases abandoned, by what became of their order.",
    );
    for (outcome, value) in [
        ("cancelled", sum(|s| s.cancelled)),
        ("claimed", sum(|s| s.claimed)),
        ("settled", sum(|s| s.settled)),
        ("absent", sum(|s| s.absent)),
        ("rejected", sum(|s| s.rejected)),
        ("dropped", sum(|s| s.dropped)),
    ] {
        out.sample(
            "seckill_redis_ghosts_abandoned_total",
            &[("outcome", outcome)],
            value,
        );
    }
    out.family(
        "seckill_redis_abandon_retries_total",
        "counter",
        "Abandon calls that failed and were tried again.",
    );
    out.sample(
        "seckill_redis_abandon_retries_total",
        &[],
        sum(|s| s.retries),
    );
    out.family(
        "seckill_events_lost_total",
        "counter",
        "Order feed events trimmed from a SKU's Redis stream before they were published.",
    );
    let lost = redis.iter().map(|(_, stats)| stats.events_lost).sum();
    out.sample("seckill_events_lost_total", &[], lost);
}

/// Lost writes in a shared store: only in cluster mode, where a store can regress.
fn render_regressions(out: &mut Text, shards: &[ShardSnapshot]) {
    if shards.iter().all(|shard| shard.store.redis.is_none()) {
        return;
    }
    out.family(
        "seckill_store_regressions_total",
        "counter",
        "Times this node saw a sale's state in the shared store go backwards (lost writes); each stops the SKU until an operator resumes it.",
    );
    let seen = shards.iter().map(|shard| shard.store.regressions).sum();
    out.sample("seckill_store_regressions_total", &[], seen);
    out.family(
        "seckill_store_regressed_skus",
        "gauge",
        "SKUs refused now because their shared store regressed, awaiting an operator's resume.",
    );
    let now = shards.iter().map(|shard| shard.store.regressed_skus).sum();
    out.sample("seckill_store_regressed_skus", &[], now);
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The exposition being written. Writing to a `String` cannot fail, so results are ignored.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.series(name, labels, None);
        let _ = writeln!(self.0, " {value}");
    }

    /// A sample of `whole.thousandths`, for seconds kept as milliseconds.
    fn sample_decimal(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        whole: u64,
        thousandths: u64,
    ) {
        self.series(name, labels, None);
        let _ = writeln!(self.0, " {whole}.{thousandths:03}");
    }

    fn series(&mut self, name: &str, labels: &[(&str, &str)], le: Option<&str>) {
        self.0.push_str(name);
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.0.push('{');
        let le = le.map(|le| ("le", le));
        for (index, (label, value)) in labels.iter().chain(le.iter()).enumerate() {
            if index > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{label}=\"{}\"", escape_label(value));
        }
        self.0.push('}');
    }

    /// One histogram series: cumulative buckets, `+Inf`, `_sum` (scaled by `unit`) and
    /// `_count`.
    fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        values: &DistributionSnapshot,
        buckets: &[(u64, &str)],
        unit: u64,
    ) {
        let bounds: Vec<u64> = buckets.iter().map(|(bound, _)| *bound).collect();
        let cumulative = values.cumulative(&bounds);
        let bucket_name = format!("{name}_bucket");
        for ((_, le), count) in buckets.iter().zip(cumulative) {
            self.series(&bucket_name, labels, Some(le));
            let _ = writeln!(self.0, " {count}");
        }
        let count = values.count();
        self.series(&bucket_name, labels, Some("+Inf"));
        let _ = writeln!(self.0, " {count}");
        self.series(&format!("{name}_sum"), labels, None);
        if unit == 1 {
            let _ = writeln!(self.0, " {}", values.sum());
        } else {
            let _ = writeln!(self.0, " {}", values.sum() as f64 / unit as f64);
        }
        self.series(&format!("{name}_count"), labels, None);
        let _ = writeln!(self.0, " {count}");
    }
}

fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
    }

    #[test]
    fn histogram_series_are_cumulative_and_end_at_the_count() {
        let mut latency = crate::metrics::Distribution::new();
        latency.record(50_000);
        latency.record(3_000_000);
        let mut out = Text(String::new());
        out.histogram(
            "x",
            &[("route", "r")],
            &latency.snapshot(),
            &LATENCY_BUCKETS[..7],
            NANOS_PER_SECOND,
        );
        let text = out.0;
        assert!(text.contains("x_bucket{route=\"r\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("x_bucket{route=\"r\",le=\"0.0025\"} 1\n"));
        assert!(text.contains("x_bucket{route=\"r\",le=\"0.005\"} 2\n"));
        assert!(text.contains("x_bucket{route=\"r\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("x_sum{route=\"r\"} 0.00305\n"));
        assert!(text.contains("x_count{route=\"r\"} 2\n"));
    }
}

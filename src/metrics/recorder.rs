//! What one shard records while it serves. Plain `Cell`s and `RefCell`s: a shard is one thread, so
//! the request path pays no lock and no atomic; other shards only ever see a [`ShardSnapshot`].

use std::cell::{Cell, RefCell};

use super::distribution::{Distribution, DistributionSnapshot};
use super::Route;

/// Cross-shard message kinds, counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A command sent to its owner shard.
    Call,
    /// An edge-replica update (sale, stock flag, blocklist, demand).
    Notice,
    /// A metrics scrape request.
    Scrape,
}

impl MessageKind {
    /// Every kind, in label order.
    pub const ALL: [MessageKind; 3] = [MessageKind::Call, MessageKind::Notice, MessageKind::Scrape];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Call => "call",
            MessageKind::Notice => "notice",
            MessageKind::Scrape => "scrape",
        }
    }
}

/// What the fair modes (waiting room and lottery) count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingRoomEvent {
    /// A ticket was issued (not a repeated join).
    TicketIssued,
    /// A lottery registration was made (not a repeated one).
    Registered,
    /// A ticket's status answer carried a pass: the ticket was admitted.
    PassIssued,
    /// An order was created with a valid pass.
    PassUsed,
}

impl WaitingRoomEvent {
    /// Every event, in counter order.
    pub const ALL: [WaitingRoomEvent; 4] = [
        WaitingRoomEvent::TicketIssued,
        WaitingRoomEvent::Registered,
        WaitingRoomEvent::PassIssued,
        WaitingRoomEvent::PassUsed,
    ];

    /// The metric this event counts in.
    pub fn metric(self) -> &'static str {
        match self {
            WaitingRoomEvent::TicketIssued => "seckill_queue_tickets_issued_total",
            WaitingRoomEvent::Registered => "seckill_lottery_registrations_total",
            WaitingRoomEvent::PassIssued => "seckill_passes_issued_total",
            WaitingRoomEvent::PassUsed => "seckill_passes_used_total",
        }
    }

    /// The metric's help text.
    pub fn help(self) -> &'static str {
        match self {
            WaitingRoomEvent::TicketIssued => "Waiting-room tickets issued (repeated joins answered with the ticket held are not counted).",
            WaitingRoomEvent::Registered => "Lottery registrations made (repeated ones answered with the registration held are not counted).",
            WaitingRoomEvent::PassIssued => "Answers that carried a pass: an admitted waiting-room ticket or a lottery winner's registration (asked twice, counted twice).",
            WaitingRoomEvent::PassUsed => "Orders created with a pass (waiting room or lottery).",
        }
    }
}

/// Requests seen on one route.
#[derive(Debug, Default)]
struct RouteStats {
    /// Responses by status code; a handful of codes per route, so a short list beats a map.
    statuses: Vec<(u16, u64)>,
    /// Time from a parsed request to its composed response, in nanoseconds.
    latency: Distribution,
}

/// One shard's counters, gauges and latency histograms.
#[derive(Debug)]
pub struct ShardMetrics {
    routes: RefCell<Vec<RouteStats>>,
    /// Purchase answers by outcome (`created` or an error code). Codes are `'static` constants,
    /// so this list is bounded by the code table, not by input.
    purchase_outcomes: RefCell<Vec<(&'static str, u64)>>,
    messages_sent: [Cell<u64>; MessageKind::ALL.len()],
    /// Commands this shard is running as owner (its own and its peers'): the owner's queue.
    owner_in_flight: Cell<u64>,
    /// Connections turned away at accept because the shard was at its connection cap.
    connections_refused: Cell<u64>,
    /// Requests refused for missing, wrong or stale proof-of-work (`pow_invalid`).
    pow_failures: Cell<u64>,
    /// Waiting-room events, by [`WaitingRoomEvent::ALL`] order.
    waiting_room: [Cell<u64>; WaitingRoomEvent::ALL.len()],
    /// Lookups of SKUs an edge did not know, by outcome (a fixed set of constants).
    lookups: RefCell<Vec<(&'static str, u64)>>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardMetrics {
    /// Zeroed metrics.
    pub fn new() -> Self {
        Self {
            routes: RefCell::new(Route::ALL.iter().map(|_| RouteStats::default()).collect()),
            purchase_outcomes: RefCell::new(Vec::new()),
            messages_sent: Default::default(),
            owner_in_flight: Cell::new(0),
            connections_refused: Cell::new(0),
            pow_failures: Cell::new(0),
            waiting_room: Default::default(),
            lookups: RefCell::new(Vec::new()),
        }
    }

    /// Records one answered request.
    pub fn record_request(&self, route: Route, status: u16, nanos: u64) {
        let mut routes = self.routes.borrow_mut();
        let Some(stats) = routes.get_mut(route as usize) else {
            return;
        };
        bump(&mut stats.statuses, status);
        stats.latency.record(nanos);
    }

    /// Records an answer that had no handling time worth measuring: bytes rejected before
    /// routing (malformed, too slow), whose latency would only be noise in the histogram.
    pub fn record_status(&self, route: Route, status: u16) {
        if let Some(stats) = self.routes.borrow_mut().get_mut(route as usize) {
            bump(&mut stats.statuses, status);
        }
    }

    /// Counts a connection refused at the connection cap.
    pub fn record_refused_connection(&self) {
        self.connections_refused
            .set(self.connections_refused.get() + 1);
    }

    /// Counts a request refused `pow_invalid`.
    pub fn record_pow_failure(&self) {
        self.pow_failures.set(self.pow_failures.get() + 1);
    }

    /// Counts one waiting-room event.
    pub fn record_waiting_room(&self, event: WaitingRoomEvent) {
        let counter = &self.waiting_room[event as usize];
        counter.set(counter.get() + 1);
    }

    /// Records a purchase's outcome: `created`, `replayed` or the error code.
    pub fn record_purchase(&self, outcome: &'static str) {
        bump(&mut self.purchase_outcomes.borrow_mut(), outcome);
    }

    /// Counts a lookup of an unknown SKU as its owner: `found`, `unknown`, `failed` (the store
    /// read failed) or `refused` (over the lookup budget, answered without asking).
    pub fn record_lookup(&self, outcome: &'static str) {
        bump(&mut self.lookups.borrow_mut(), outcome);
    }

    /// Counts a message sent to another shard.
    pub fn record_message(&self, kind: MessageKind) {
        let counter = &self.messages_sent[kind as usize];
        counter.set(counter.get() + 1);
    }

    /// Marks an owner command as started; the guard marks it finished when dropped, however the
    /// command ends.
    pub fn owner_command(&self) -> InFlight<'_> {
        self.owner_in_flight.set(self.owner_in_flight.get() + 1);
        InFlight(&self.owner_in_flight)
    }

    /// Owner commands running now (the drain waits for none before closing the journal).
    pub fn owner_in_flight(&self) -> u64 {
        self.owner_in_flight.get()
    }

    /// A copy of everything, to send to the scraping shard.
    pub fn snapshot(&self) -> RequestSnapshot {
        let routes = self.routes.borrow();
        RequestSnapshot {
            requests: Route::ALL
                .iter()
                .zip(routes.iter())
                .map(|(route, stats)| RouteSnapshot {
                    route: *route,
                    statuses: stats.statuses.clone(),
                    latency: stats.latency.snapshot(),
                })
                .collect(),
            purchase_outcomes: self.purchase_outcomes.borrow().clone(),
            messages_sent: MessageKind::ALL.map(|kind| self.messages_sent[kind as usize].get()),
            owner_in_flight: self.owner_in_flight.get(),
            connections_refused: self.connections_refused.get(),
            pow_failures: self.pow_failures.get(),
            waiting_room: WaitingRoomEvent::ALL
                .map(|event| self.waiting_room[event as usize].get()),
            lookups: self.lookups.borrow().clone(),
        }
    }
}

fn bump<K: PartialEq + Copy>(counts: &mut Vec<(K, u64)>, key: K) {
    super::add_count(counts, key, 1);
}

/// Decrements an in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Cell<u64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// One route's requests, copied.
#[derive(Debug, Clone)]
pub struct RouteSnapshot {
    /// Which route.
    pub route: Route,
    /// Responses by status.
    pub statuses: Vec<(u16, u64)>,
    /// Latency in nanoseconds.
    pub latency: DistributionSnapshot,
}

/// The request-side part of a shard's metrics, copied.
#[derive(Debug, Clone)]
pub struct RequestSnapshot {
    /// Per route, in [`Route::ALL`] order.
    pub requests: Vec<RouteSnapshot>,
    /// Purchase answers by outcome.
    pub purchase_outcomes: Vec<(&'static str, u64)>,
    /// Messages sent to other shards, by [`MessageKind::ALL`] order.
    pub messages_sent: [u64; MessageKind::ALL.len()],
    /// Owner commands running.
    pub owner_in_flight: u64,
    /// Connections refused at the connection cap.
    pub connections_refused: u64,
    /// See [`ShardMetrics::record_pow_failure`].
    pub pow_failures: u64,
    /// See [`ShardMetrics::record_waiting_room`], in [`WaitingRoomEvent::ALL`] order.
    pub waiting_room: [u64; WaitingRoomEvent::ALL.len()],
    /// Lookups of unknown SKUs, by outcome.
    pub lookups: Vec<(&'static str, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_status_and_outcome() {
        let metrics = ShardMetrics::new();
        metrics.record_request(Route::Purchase, 201, 1_000);
        metrics.record_request(Route::Purchase, 201, 2_000);
        metrics.record_request(Route::Purchase, 409, 500);
        metrics.record_purchase("created");
        metrics.record_purchase("created");
        metrics.record_purchase("sold_out");
        metrics.record_message(MessageKind::Notice);
        let guard = metrics.owner_command();
        let snapshot = metrics.snapshot();
        drop(guard);
        let purchase = &snapshot.requests[Route::Purchase as usize];
        assert_eq!(purchase.route, Route::Purchase);
        assert_eq!(purchase.statuses, vec![(201, 2), (409, 1)]);
        assert_eq!(purchase.latency.count(), 3);
        assert_eq!(purchase.latency.sum(), 3_500);
        assert_eq!(
            snapshot.purchase_outcomes,
            vec![("created", 2), ("sold_out", 1)]
        );
        assert_eq!(snapshot.messages_sent, [0, 1, 0]);
        assert_eq!(snapshot.owner_in_flight, 1);
        assert_eq!(metrics.snapshot().owner_in_flight, 0);
    }
}

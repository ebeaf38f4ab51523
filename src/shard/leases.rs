//! The shard's lease task: keeps every rate-limited sale that shoppers are buying supplied with
//! tokens from the cluster-wide bucket ([`crate::sale::admission::TokenSource`]), off the request
//! path. The hot path only spends tokens in hand and flags a sale whose lease runs low; this
//! task sends those flags' lease calls, at most one per sale and [`MAX_IN_FLIGHT`] in all.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shard;
use crate::store::Store;

/// How often the task looks for sales whose lease ran low. Well under a block's duration
/// ([`crate::sale::admission::BLOCK_SECS`]), since a lease is asked for when half a block is left.
pub const LEASE_POLL: Duration = Duration::from_millis(5);

/// Lease calls one shard has in flight at most, over all sales.
pub const MAX_IN_FLIGHT: usize = 32;

impl<S: Store + 'static> Shard<S> {
    /// Runs until the node drains; returns at once when the node has no token source.
    pub async fn run_leases(self: Rc<Self>) {
        let Some(source) = self.tokens.clone() else {
            return;
        };
        let in_flight = Rc::new(Cell::new(0usize));
        while !self.node.draining.load(Ordering::Acquire) {
            glommio::timer::sleep(LEASE_POLL).await;
            let room = MAX_IN_FLIGHT.saturating_sub(in_flight.get());
            if room == 0 {
                continue;
            }
            let asks = self.edge.borrow_mut().lease_asks(Instant::now(), room);
            for (sku, rate, want) in asks {
                in_flight.set(in_flight.get() + 1);
                let (shard, source, in_flight) =
                    (Rc::clone(&self), Rc::clone(&source), Rc::clone(&in_flight));
                glommio::spawn_local(async move {
                    let grant = source.lease(&sku, rate, want).await;
                    shard
                        .edge
                        .borrow_mut()
                        .lease_settled(&sku, grant, Instant::now());
                    in_flight.set(in_flight.get().saturating_sub(1));
                })
                .detach();
            }
        }
    }
}

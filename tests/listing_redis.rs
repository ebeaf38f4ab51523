//! The listing tests again, with every server in cluster mode on its own `redis-server` (the
//! harness switches on this binary's name).

#[path = "listing.rs"]
mod listing;

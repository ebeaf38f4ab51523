//! The orders-out tests again, with every server in cluster mode on its own `redis-server` (the
//! harness switches on this binary's name).

#[path = "orders_out.rs"]
mod orders_out;

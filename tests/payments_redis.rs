//! The payment tests again, with every server in cluster mode on its own `redis-server` (the
//! harness switches on this binary's name).

#[path = "payments.rs"]
mod payments;

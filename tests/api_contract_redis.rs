//! The API contract suite again, with every server in cluster mode on its own `redis-server`
//! (the harness switches on this binary's name).

#[path = "api_contract.rs"]
mod contract;

//! The contract suite again (`openapi.rs`), with the server in cluster mode on its own
//! `redis-server` (the harness switches on this binary's name).

#[path = "openapi.rs"]
mod contract;

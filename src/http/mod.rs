//! HTTP/1.1 for the shard: request parsing (with `httparse`), response composition, the listener
//! socket and the per-connection loop. Knows nothing about sales; the API plugs in as a
//! [`Handler`].

pub mod body_pool;
pub mod conn;
pub mod cors;
pub mod date;
pub mod listener;
pub mod request;
pub mod request_id;
pub mod response;

pub use conn::{serve_connection, ConnLimits, Handler};
pub use request::{Method, Request};
pub use request_id::RequestId;
pub use response::Response;

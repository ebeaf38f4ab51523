//! `seckill load`: an open-loop HTTP load generator for the purchase endpoint, built on glommio
//! like the server, for driving any deployment.
//!
//! Arrivals follow a fixed schedule (`rate` per second for `duration`) whatever the server does,
//! and each request's latency is measured from when it was due, so a slow server cannot hide
//! its queueing (no coordinated omission). Every arrival buys `sku` as a shopper drawn uniformly
//! from `users`, with a token minted from the server's token secret.
//!
//! - [`options`]: [`LoadOptions`] and their validation (loopback-only unless allowed).
//! - [`engine`]: [`run`] and [`run_with_progress`]: executors, connections, the schedule.
//! - [`report`]: the final [`Report`], as text or JSON.
//! - [`progress`]: the once-a-second [`Progress`] line.
//! - [`error`]: why a run fails ([`LoadError`]).
//!
//! Internal: `preflight` (the sale must exist before any load), `schedule` (when each arrival is
//! due), `http` (the bounded client connection), `stats` (per-executor recording).
//!
//! ```no_run
//! use seckill::load::{run, LoadOptions};
//!
//! let options = LoadOptions {
//!     urls: vec!["http://127.0.0.1:8080".into()],
//!     rate: 2_000.0,
//!     sku: "moutai".into(),
//!     token_secret: std::env::var("SECKILL_TOKEN_SECRET").unwrap_or_default(),
//!     ..LoadOptions::default()
//! };
//! match run(&options) {
//!     Ok(report) => println!("{report}"),
//!     Err(error) => eprintln!("{error}"),
//! }
//! ```

pub mod engine;
pub mod error;
mod http;
pub mod options;
mod preflight;
pub mod progress;
pub mod report;
mod schedule;
mod stats;

pub use engine::{run, run_with_progress};
pub use error::LoadError;
pub use options::{parse_duration, LoadOptions};
pub use progress::Progress;
pub use report::{LatencySummary, Report};

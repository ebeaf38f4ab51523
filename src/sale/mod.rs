//! The sale domain: what a sale and an order are, the owner shard's state machine, shard-local
//! admission (token buckets) and the expiry queue for pending orders.
//!
//! Nothing in here does I/O or knows about HTTP; the shard runtime drives it and the stores persist
//! its events.

pub mod admission;
pub mod audit;
pub mod book;
pub mod command;
pub mod error;
pub mod expiry;
pub mod holder;
pub mod ids;
pub mod lottery;
pub mod model;
pub mod order_table;
pub mod pass;
pub mod pow;
pub mod queue;
pub mod sale_orders;
pub mod segmented;
pub mod sku_slots;
pub mod snapshot;
pub mod user_orders;
pub mod waiting_room;

pub use error::SaleError;
pub use model::{Order, OrderCounts, OrderStatus, Sale, SaleState, SaleView};

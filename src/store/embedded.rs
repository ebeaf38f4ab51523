//! The embedded store: the owner shard's [`Book`] in memory, every change journaled before it is
//! acknowledged.

use std::cell::RefCell;
use std::rc::Rc;

use super::journal::Journal;
use super::{BootState, Store, StoreStats};
use crate::clock::now_ms;
use crate::sale::book::Book;
use crate::sale::command::{Command, Reply};
use crate::sale::SaleError;

/// A shard's book plus its journal.
pub struct EmbeddedStore {
    book: RefCell<Book>,
    journal: Rc<Journal>,
}

impl EmbeddedStore {
    /// Wraps a recovered book and the journal that continues it.
    pub fn new(book: Book, journal: Rc<Journal>) -> Self {
        Self {
            book: RefCell::new(book),
            journal,
        }
    }
}

impl Store for EmbeddedStore {
    async fn execute(&self, batch: Vec<Command>) -> Vec<Reply> {
        if self.journal.is_failed() {
            // Fail-stop: changing memory that can never be persisted would only diverge from disk.
            return vec![Err(SaleError::Unavailable); batch.len()];
        }
        let mut replies = Vec::with_capacity(batch.len());
        {
            let mut book = self.book.borrow_mut();
            for command in batch {
                let (reply, event) = book.execute(command, now_ms());
                if let Some(event) = &event {
                    self.journal.append(event);
                }
                replies.push(reply);
            }
            if self.journal.wants_snapshot() {
                self.journal.begin_snapshot(book.snapshot());
            }
        }
        // Every answer waits until everything it may have seen is durable, including reads and
        // idempotent replays of an order whose record is still in flight.
        if let Err(error) = self.journal.commit().await {
            tracing::error!(%error, "not acknowledging: the journal cannot persist");
            replies.fill(Err(SaleError::Unavailable));
        }
        replies
    }

    async fn boot_state(&self) -> BootState {
        let book = self.book.borrow();
        BootState {
            sales: book
                .sales()
                .map(|sale| {
                    let level = book.stock_level(&sale.sku);
                    (sale.clone(), level)
                })
                .collect(),
            blocked: book.blocked_users().map(Into::into).collect(),
            pending: book.pending_deadlines().collect(),
        }
    }

    fn stats(&self) -> StoreStats {
        let book = self.book.borrow();
        StoreStats {
            stock: book
                .stock_remaining()
                .map(|(sku, remaining)| (sku.into(), remaining))
                .collect(),
            orders: book.order_counts(),
            journal: Some(self.journal.stats()),
            redis: None,
            ..StoreStats::default()
        }
    }

    fn healthy(&self) -> bool {
        !self.journal.is_failed()
    }
}

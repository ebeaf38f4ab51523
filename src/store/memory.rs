//! The embedded in-memory store: the owner shard's [`Book`], with nothing persisted.

use std::cell::RefCell;

use super::Store;
use crate::clock::now_ms;
use crate::sale::book::{Book, BookLimits};
use crate::sale::command::{Command, Reply};

/// Keeps the shard's book in memory. Every reply is final as soon as it is computed.
#[derive(Debug)]
pub struct MemoryStore {
    book: RefCell<Book>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(limits: BookLimits) -> Self {
        Self {
            book: RefCell::new(Book::new(limits)),
        }
    }
}

impl Store for MemoryStore {
    async fn execute(&self, batch: Vec<Command>) -> Vec<Reply> {
        let mut book = self.book.borrow_mut();
        batch
            .into_iter()
            .map(|command| book.execute(command, now_ms()).0)
            .collect()
    }
}

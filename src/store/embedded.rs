//! The embedded store: the owner shard's [`Book`] in memory, every change journaled before it is
//! acknowledged, and the order feed's outbox derived from the same journal records.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::journal::Journal;
use super::{BootState, Store, StoreStats};
use crate::clock::now_ms;
use crate::feed::outbox::Outbox;
use crate::feed::FeedLane;
use crate::sale::book::Book;
use crate::sale::command::{Command, Reply};
use crate::sale::SaleError;

/// Events offered to the publisher at once.
const FEED_BATCH: usize = 256;
/// How often the feed task checks whether its batch was stored.
const FEED_POLL: Duration = Duration::from_millis(5);
/// How often an idle feed task looks for new durable events: each look wakes the executor, and
/// wakeups cost the shards (glommio's park), so idle looks are rarer than in-flight ones.
const FEED_IDLE_POLL: Duration = Duration::from_millis(20);

/// The order feed as this store keeps it.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Whether changes are recorded in the outbox (`--events` is set).
    pub record: bool,
    /// Unpublished events past which purchases are refused.
    pub outbox_max: usize,
}

/// A shard's book plus its journal.
pub struct EmbeddedStore {
    book: RefCell<Book>,
    journal: Rc<Journal>,
    outbox: RefCell<Outbox>,
    feed: FeedOptions,
    /// The feed task's lane once it runs, so changes report the outbox at once.
    lane: RefCell<Option<FeedLane>>,
}

impl EmbeddedStore {
    /// Wraps a recovered book, its outbox, and the journal that continues them.
    pub fn new(book: Book, outbox: Outbox, journal: Rc<Journal>, feed: FeedOptions) -> Self {
        Self {
            book: RefCell::new(book),
            journal,
            outbox: RefCell::new(outbox),
            feed,
            lane: RefCell::new(None),
        }
    }
}

impl EmbeddedStore {
    /// Tells the node how much of this shard's outbox waits, for `/readyz` and `/metrics`.
    fn report(&self, feed: &FeedLane) {
        let outbox = self.outbox.borrow();
        feed.report(outbox.len() as u64, outbox.oldest_at());
    }
}

impl EmbeddedStore {
    /// Decides one command against the book and queues its change in the journal (and the
    /// outbox); the caller commits before answering.
    fn decide(&self, command: Command, book: &mut Book, outbox: &mut Outbox) -> Reply {
        if matches!(command, Command::Purchase(_))
            && self.feed.record
            && outbox.len() >= self.feed.outbox_max
        {
            // The feed promises every order; past the bound, taking more would mean dropping
            // some of their events, or memory without end.
            return Err(SaleError::Unavailable);
        }
        let now = now_ms();
        let (reply, event) = book.execute(command, now);
        if let Some(event) = &event {
            let record = self.journal.append(event);
            if self.feed.record {
                if let Some(feed_event) = Outbox::derive(event, book, now) {
                    outbox.push(feed_event, record);
                }
            }
        }
        reply
    }

    /// Decides every command in order, then lets the journal start a snapshot if one is due.
    fn decide_all(
        &self,
        commands: impl IntoIterator<Item = Command>,
        mut reply: impl FnMut(Reply),
    ) {
        let mut book = self.book.borrow_mut();
        let mut outbox = self.outbox.borrow_mut();
        for command in commands {
            reply(self.decide(command, &mut book, &mut outbox));
        }
        if self.journal.wants_snapshot() {
            self.journal.begin_snapshot();
        }
        drop((book, outbox));
        if let Some(lane) = &*self.lane.borrow() {
            self.report(lane);
        }
    }

    /// Every answer waits until everything it may have seen is durable, including reads and
    /// idempotent replays of an order whose record is still in flight.
    async fn commit(&self) -> Result<(), SaleError> {
        self.journal.commit().await.map_err(|error| {
            tracing::error!(%error, "not acknowledging: the journal cannot persist");
            SaleError::Unavailable
        })
    }
}

impl Store for EmbeddedStore {
    async fn execute(&self, batch: Vec<Command>) -> Vec<Reply> {
        if self.journal.is_failed() {
            // Fail-stop: changing memory that can never be persisted would only diverge from disk.
            return vec![Err(SaleError::Unavailable); batch.len()];
        }
        let mut replies = Vec::with_capacity(batch.len());
        self.decide_all(batch, |reply| replies.push(reply));
        if let Err(error) = self.commit().await {
            replies.fill(Err(error));
        }
        replies
    }

    async fn execute_one(&self, command: Command) -> Reply {
        if self.journal.is_failed() {
            return Err(SaleError::Unavailable);
        }
        let mut answer = Err(SaleError::Unavailable);
        self.decide_all([command], |reply| answer = reply);
        self.commit().await.and(answer)
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
            queues: book.queues(crate::clock::now_ms()).collect(),
            journal: Some(self.journal.stats()),
            redis: None,
            ..StoreStats::default()
        }
    }

    fn healthy(&self) -> bool {
        !self.journal.is_failed()
    }

    async fn run_feed(&self, feed: FeedLane) {
        *self.lane.borrow_mut() = Some(feed.clone());
        loop {
            self.report(&feed);
            if self.journal.is_closing() || self.journal.is_failed() {
                return;
            }
            // Only events whose records are durable leave: an order the journal could not keep
            // was never acknowledged, and must not be announced.
            let batch = self
                .outbox
                .borrow()
                .next_batch(self.journal.durable_records(), FEED_BATCH);
            if batch.is_empty() {
                glommio::timer::sleep(FEED_IDLE_POLL).await;
                continue;
            }
            let Ok(submitted) = feed.submit(&batch) else {
                // The publisher's queue is full: the broker is slow or away. Offer it later.
                glommio::timer::sleep(FEED_IDLE_POLL).await;
                continue;
            };
            while !submitted.is_done() {
                glommio::timer::sleep(FEED_POLL).await;
                self.report(&feed);
            }
            if self.journal.is_closing() {
                // Too late to mark them: the next start publishes them again, and JetStream
                // drops the repeats by id.
                return;
            }
            let marks = self.outbox.borrow_mut().confirm(&batch);
            for mark in &marks {
                self.journal.append(mark);
            }
            // The marks ride with the next group commit; one lost in a crash only means the
            // events it covers are published again, and dropped as repeats.
            if let Err(error) = self.journal.commit().await {
                tracing::error!(%error, "order feed: cannot journal what was published");
                return;
            }
        }
    }
}

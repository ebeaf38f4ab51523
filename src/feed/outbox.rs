//! The embedded store's outbox: feed events the journal holds that JetStream has not yet
//! acknowledged, one queue per SKU so each SKU's events leave in the order they happened.
//!
//! Nothing here is written separately: the events are derived from the journal's own records
//! (live on the owner shard, and again on replay after a restart), a
//! [`Event::FeedPublished`] record marks how far a SKU's events were published, and a snapshot
//! carries the unpublished rest as [`Event::FeedUnpublished`] records. So the outbox is as
//! durable as the orders it reports, and an event exists only for a change the journal kept.

use std::collections::{HashMap, VecDeque};

use super::event::FeedEvent;
use crate::sale::book::Book;
use crate::sale::command::Event;

/// An event and the journal record count that must be durable before it may leave.
#[derive(Debug)]
struct Waiting {
    event: FeedEvent,
    /// The journal's record count once the change was appended; 0 for replayed events, which
    /// are durable already.
    after_record: u64,
}

/// Unpublished feed events of one shard.
#[derive(Debug, Default)]
pub struct Outbox {
    queues: HashMap<Box<str>, VecDeque<Waiting>>,
    len: usize,
}

impl Outbox {
    /// The feed event a journal record makes, if any, read from `book` after the record was
    /// applied to it (a closed order is still there: retention keeps at least the newest).
    pub fn derive(event: &Event, book: &Book, at: u64) -> Option<FeedEvent> {
        match event {
            Event::SaleUpserted(sale) => Some(FeedEvent::sale(sale, at)),
            Event::OrderCreated { order, .. } => Some(FeedEvent::order(order, at)),
            Event::OrderClosed { order_id, .. } => book
                .order(order_id)
                .map(|order| FeedEvent::order(&order, at)),
            Event::UserBlocked(..)
            | Event::FeedPublished { .. }
            | Event::FeedUnpublished(_)
            | Event::TicketIssued { .. } => None,
        }
    }

    /// Adds an event that may leave once `after_record` journal records are durable.
    pub fn push(&mut self, event: FeedEvent, after_record: u64) {
        self.queues
            .entry(event.sku.clone())
            .or_default()
            .push_back(Waiting {
                event,
                after_record,
            });
        self.len += 1;
    }

    /// Applies a journal record on replay: a live change adds its event, a published mark
    /// drops what it covers, a snapshot's unpublished event comes back.
    pub fn replay(&mut self, event: &Event, book: &Book, at: u64) {
        match event {
            Event::FeedPublished { sku, through } => self.drop_through(sku, through),
            Event::FeedUnpublished(unpublished) => self.push(unpublished.clone(), 0),
            live => {
                if let Some(derived) = Self::derive(live, book, at) {
                    self.push(derived, 0);
                }
            }
        }
    }

    /// Up to `max` events that may leave now (their records are among the first `durable`),
    /// each SKU's in order.
    pub fn next_batch(&self, durable: u64, max: usize) -> Vec<FeedEvent> {
        let mut batch = Vec::new();
        for queue in self.queues.values() {
            for waiting in queue {
                if batch.len() >= max || waiting.after_record > durable {
                    break;
                }
                batch.push(waiting.event.clone());
            }
            if batch.len() >= max {
                break;
            }
        }
        batch
    }

    /// Forgets `published` (a batch from [`Outbox::next_batch`] that JetStream stored) and
    /// returns the records that say so: the last event id of each SKU in it.
    pub fn confirm(&mut self, published: &[FeedEvent]) -> Vec<Event> {
        let mut last: HashMap<&str, &str> = HashMap::new();
        for event in published {
            last.insert(&event.sku, &event.id);
        }
        let marks: Vec<Event> = last
            .into_iter()
            .map(|(sku, through)| Event::FeedPublished {
                sku: sku.into(),
                through: through.into(),
            })
            .collect();
        for mark in &marks {
            if let Event::FeedPublished { sku, through } = mark {
                self.drop_through(sku, through);
            }
        }
        marks
    }

    /// Drops `sku`'s events up to and including `through`; nothing if `through` is not queued
    /// (its mark was replayed twice, or it left before a snapshot).
    fn drop_through(&mut self, sku: &str, through: &str) {
        let Some(queue) = self.queues.get_mut(sku) else {
            return;
        };
        let Some(position) = queue.iter().position(|w| &*w.event.id == through) else {
            return;
        };
        queue.drain(..=position);
        self.len -= position + 1;
        if queue.is_empty() {
            self.queues.remove(sku);
        }
    }

    /// The records a snapshot needs to bring the unpublished events back.
    pub fn snapshot(&self) -> Vec<Event> {
        self.queues
            .values()
            .flatten()
            .map(|waiting| Event::FeedUnpublished(waiting.event.clone()))
            .collect()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// When the oldest waiting event happened (ms since the epoch), for the lag metric.
    pub fn oldest_at(&self) -> Option<u64> {
        self.queues
            .values()
            .filter_map(|queue| queue.front())
            .map(|waiting| waiting.event.at)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::FeedKind;

    fn event(sku: &str, n: u32) -> FeedEvent {
        FeedEvent {
            id: format!("{sku}-{n}").into(),
            sku: sku.into(),
            kind: FeedKind::OrderCreated,
            at: u64::from(n),
            body: "{}".into(),
        }
    }

    fn ids(events: &[FeedEvent]) -> Vec<&str> {
        events.iter().map(|e| &*e.id).collect()
    }

    #[test]
    fn only_durable_events_leave_and_each_sku_in_order() {
        let mut outbox = Outbox::default();
        outbox.push(event("a", 1), 1);
        outbox.push(event("a", 2), 2);
        outbox.push(event("b", 1), 3);
        assert!(outbox.next_batch(0, 10).is_empty());
        assert_eq!(ids(&outbox.next_batch(1, 10)), ["a-1"]);
        let mut all = ids(&outbox.next_batch(3, 10))
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        all.sort();
        assert_eq!(all, ["a-1", "a-2", "b-1"]);
        assert_eq!(outbox.next_batch(3, 1).len(), 1, "the batch bound holds");
        assert_eq!(outbox.oldest_at(), Some(1));
    }

    #[test]
    fn confirming_drops_what_was_published_and_its_marks_replay_the_same() {
        let mut live = Outbox::default();
        let mut replayed = Outbox::default();
        for n in 1..=3 {
            live.push(event("a", n), 0);
            replayed.push(event("a", n), 0);
        }
        let batch = live.next_batch(0, 2);
        live.push(event("a", 4), 0);
        replayed.push(event("a", 4), 0);
        let marks = live.confirm(&batch);
        assert_eq!(
            marks,
            [Event::FeedPublished {
                sku: "a".into(),
                through: "a-2".into()
            }]
        );
        assert_eq!(ids(&live.next_batch(0, 10)), ["a-3", "a-4"]);
        let book = Book::new(crate::sale::book::BookLimits {
            closed_orders_per_sale: 1,
        });
        for mark in &marks {
            replayed.replay(mark, &book, 0);
            // A mark replayed twice (or for an event already gone) changes nothing.
            replayed.replay(mark, &book, 0);
        }
        assert_eq!(ids(&replayed.next_batch(0, 10)), ["a-3", "a-4"]);
        assert_eq!(replayed.len(), 2);
    }

    #[test]
    fn a_snapshot_brings_back_exactly_the_unpublished_events() {
        let mut outbox = Outbox::default();
        for n in 1..=3 {
            outbox.push(event("a", n), 0);
        }
        let batch = outbox.next_batch(0, 1);
        outbox.confirm(&batch);
        let book = Book::new(crate::sale::book::BookLimits {
            closed_orders_per_sale: 1,
        });
        let mut restored = Outbox::default();
        for record in outbox.snapshot() {
            restored.replay(&record, &book, 0);
        }
        assert_eq!(ids(&restored.next_batch(0, 10)), ["a-2", "a-3"]);
        assert!(!restored.is_empty());
    }
}

//! Feed events on their way from a shard to the publisher thread, in a [`sharded_slab::Pool`].
//!
//! A shard keeps each event in its outbox until JetStream stores it, so what crosses to the
//! publisher thread is a copy. Cloning one allocated its id, SKU and body on the shard's core and
//! freed them on the publisher's, three allocations per event and three frees into another
//! thread's arena. Instead a shard copies the event into a pooled slot, taken from its own
//! thread's shard of the slab, and the publisher clears the slot once the event is stored, which
//! hands it back with sharded-slab's lock-free remote free. A slot keeps its strings' capacity,
//! so after warm-up the copy allocates nothing. This is the producer-to-consumer hand-off that
//! sharded-slab is built for; `cargo bench --bench micro -- feed` measures it against cloning.

use std::sync::LazyLock;

use sharded_slab::{Clear, Pool};

use super::event::{subject_of, FeedEvent, FeedKind};

/// A copy of a [`FeedEvent`] for the publisher thread.
#[derive(Debug, Default)]
pub struct StagedEvent {
    /// The event's stable id.
    pub id: String,
    /// The SKU.
    pub sku: String,
    /// What happened; `None` only in a slot not yet filled.
    pub kind: Option<FeedKind>,
    /// When it happened (ms since the Unix epoch).
    pub at: u64,
    /// The JSON body.
    pub body: String,
}

impl StagedEvent {
    /// Makes this slot a copy of `event`, reusing its strings' capacity.
    fn fill(&mut self, event: &FeedEvent) {
        self.id.push_str(&event.id);
        self.sku.push_str(&event.sku);
        self.kind = Some(event.kind);
        self.at = event.at;
        self.body.push_str(&event.body);
    }

    /// The subject it is published on (see [`FeedEvent::subject`]).
    pub fn subject(&self, prefix: &str) -> String {
        let kind = self.kind.unwrap_or(FeedKind::SaleUpserted);
        subject_of(prefix, &self.sku, kind)
    }
}

impl Clear for StagedEvent {
    fn clear(&mut self) {
        self.id.clear();
        self.sku.clear();
        self.kind = None;
        self.at = 0;
        self.body.clear();
    }
}

/// Slots of events in flight to the publisher; every shard and the publisher share it.
static STAGED: LazyLock<Pool<StagedEvent>> = LazyLock::new(Pool::new);

/// Copies `events` into slots, in order; `None` (with nothing left staged) when the pool is full.
pub fn stage(events: &[FeedEvent]) -> Option<Vec<usize>> {
    let mut keys = Vec::with_capacity(events.len());
    for event in events {
        match STAGED.create_with(|slot| slot.fill(event)) {
            Some(key) => keys.push(key),
            None => {
                release(&keys);
                return None;
            }
        }
    }
    Some(keys)
}

/// Runs `read` on the event staged under `key`, if it is still there.
pub fn with_staged<T>(key: usize, read: impl FnOnce(&StagedEvent) -> T) -> Option<T> {
    STAGED.get(key).map(|slot| read(&slot))
}

/// Gives the slots back to the shards that staged them.
pub fn release(keys: &[usize]) {
    for key in keys {
        STAGED.clear(*key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> FeedEvent {
        FeedEvent {
            id: format!("order-{n}.created").into(),
            sku: "moutai".into(),
            kind: FeedKind::OrderCreated,
            at: u64::from(n),
            body: format!("{{\"n\":{n}}}").into(),
        }
    }

    #[test]
    fn staged_events_read_back_as_they_went_in_and_leave_when_released() {
        let events: Vec<FeedEvent> = (0..3).map(event).collect();
        let keys = stage(&events).expect("room in the pool");
        for (key, event) in keys.iter().zip(&events) {
            let copy = with_staged(*key, |staged| {
                (
                    staged.id.clone(),
                    staged.sku.clone(),
                    staged.kind,
                    staged.at,
                    staged.body.clone(),
                    staged.subject("orders"),
                )
            });
            assert_eq!(
                copy,
                Some((
                    event.id.to_string(),
                    event.sku.to_string(),
                    Some(event.kind),
                    event.at,
                    event.body.to_string(),
                    event.subject("orders"),
                ))
            );
        }
        release(&keys);
        for key in keys {
            assert!(
                with_staged(key, |_| ()).is_none(),
                "slot {key} was released"
            );
        }
    }
}

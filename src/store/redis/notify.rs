//! Change notices: every script that changes a SKU's stock, sale or regression marker ends with
//! one `PUBLISH PREFIX:changed <sku>` (`notify()` in [`super::scripts`]), and each shard keeps a
//! subscription to that channel, so the sync ([`super::schedule`]) reads a SKU when it changed
//! instead of reading every SKU every tick.
//!
//! On a Redis Cluster a plain `PUBLISH` reaches the subscribers of every node, so one
//! subscription to any node hears the scripts of every master. The subscription is a client of
//! its own (a subscribed connection takes no other command), rebuilt whenever it fails. Notices
//! are a hint, never the only way a change is seen: while the subscription is down, and for a
//! notice lost in a reconnect, the sync falls back to reading each SKU every tick, and it reads
//! every SKU once each time the subscription (re)starts.

use std::collections::HashSet;
use std::rc::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};

use super::Inner;

/// SKUs remembered as changed between two ticks; past this the next tick reads every SKU.
const MAX_DIRTY: usize = 100_000;
/// Longest the connection and the `SUBSCRIBE` may take before another node is tried.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before a failed subscription is tried again.
const RETRY: Duration = Duration::from_millis(500);
/// How often a quiet subscription checks that its connection is still up.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// The channel every script publishes its SKU's changes on.
pub fn channel(prefix: &str) -> String {
    format!("{prefix}:changed")
}

/// What the subscription heard since the sync last looked.
#[derive(Debug, Default)]
pub(super) struct Notices {
    /// SKUs named by a notice.
    dirty: HashSet<Box<str>>,
    /// Every SKU must be read: too many notices to remember, or the subscription (re)started
    /// and may have missed some.
    everything: bool,
    /// Whether the subscription is up now: without it the sync polls every SKU every tick.
    subscribed: bool,
}

impl Notices {
    fn note(&mut self, sku: &str) {
        if self.dirty.len() >= MAX_DIRTY {
            self.everything = true;
        } else if !self.dirty.contains(sku) {
            self.dirty.insert(sku.into());
        }
    }

    /// The SKUs noticed since the last call, and whether every SKU must be read.
    pub fn take(&mut self) -> (HashSet<Box<str>>, bool) {
        (
            std::mem::take(&mut self.dirty),
            std::mem::take(&mut self.everything),
        )
    }

    /// Whether notices are being received now.
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }
}

/// Starts `store`'s subscription task; it ends when the store is dropped.
pub(super) fn spawn(store: &std::rc::Rc<Inner>) {
    glommio::spawn_local(run(std::rc::Rc::downgrade(store))).detach();
}

/// Sets the store's subscription state; `false` when the store is gone.
fn with_notices(store: &Weak<Inner>, apply: impl FnOnce(&mut Notices)) -> bool {
    match store.upgrade() {
        Some(inner) => {
            apply(&mut inner.notices.borrow_mut());
            true
        }
        None => false,
    }
}

async fn run(store: Weak<Inner>) {
    loop {
        let Some((config, channel)) = store.upgrade().and_then(|inner| {
            let topology = inner.topology.borrow();
            let node = topology.nodes().into_iter().find(|node| node.connected())?;
            Some((node.config(), channel(&inner.prefix)))
        }) else {
            if store.strong_count() == 0 {
                return;
            }
            glommio::timer::sleep(RETRY).await;
            continue;
        };
        match listen(&store, config, &channel).await {
            Ok(()) => return,
            Err(error) => {
                tracing::debug!(%error, "change notices: subscription ended; polling meanwhile");
                if !with_notices(&store, |notices| notices.subscribed = false) {
                    return;
                }
            }
        }
        glommio::timer::sleep(RETRY).await;
    }
}

/// One subscription, until it fails (`Err`) or the store is dropped (`Ok`).
async fn listen(
    store: &Weak<Inner>,
    config: fred::types::config::Config,
    channel: &str,
) -> Result<(), String> {
    let client = super::topology::build_client(config).map_err(|error| error.to_string())?;
    let lost = Arc::new(AtomicBool::new(false));
    let on_error = {
        let lost = Arc::clone(&lost);
        client.on_error(move |_| {
            lost.store(true, Ordering::Release);
            async { Ok(()) }
        })
    };
    // Listening before subscribing, so nothing published right after is missed.
    let messages = client.message_rx();
    let router = client.connect();
    let tasks = Tasks(vec![router, on_error]);
    let subscribe = async {
        client.wait_for_connect().await?;
        client.subscribe(channel).await
    };
    let subscribed = glommio::timer::timeout(SUBSCRIBE_TIMEOUT, async { Ok(subscribe.await) })
        .await
        .map_err(|_| "subscribe timed out".to_owned())?;
    subscribed.map_err(|error| error.to_string())?;
    // Whatever changed while nobody listened is found by reading every SKU once.
    if !with_notices(store, |notices| {
        notices.subscribed = true;
        notices.everything = true;
    }) {
        return Ok(());
    }
    loop {
        let next = glommio::timer::timeout(CHECK_EVERY, async { Ok(messages.recv().await) }).await;
        match next {
            Ok(Ok(message)) => {
                if let Some(tag) = message.value.as_str() {
                    // A bucket's scripts name their part (`sku~b`); the sync reads a split
                    // sale's parts together, under its SKU.
                    let (sku, _) = super::keys::split_part(&tag);
                    if !with_notices(store, |notices| notices.note(sku)) {
                        return Ok(());
                    }
                }
            }
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) if store.strong_count() == 0 => return Ok(()),
            Err(_) => {}
        }
        // fred reconnects by itself but does not subscribe again: a new session does.
        if lost.load(Ordering::Acquire) || !client.is_connected() {
            drop(tasks);
            return Err("connection lost".to_owned());
        }
    }
}

/// The subscription client's tasks, stopped with it (its router would otherwise keep
/// reconnecting for nobody).
struct Tasks(Vec<fred::types::ConnectHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_notices_mean_read_everything() {
        let mut notices = Notices::default();
        notices.note("a");
        notices.note("a");
        let (dirty, everything) = notices.take();
        assert_eq!(dirty.len(), 1);
        assert!(!everything);
        for i in 0..=MAX_DIRTY {
            notices.note(&i.to_string());
        }
        let (dirty, everything) = notices.take();
        assert_eq!(dirty.len(), MAX_DIRTY);
        assert!(everything);
        assert_eq!(notices.take(), (HashSet::new(), false));
    }
}

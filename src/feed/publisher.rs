//! The publisher: one thread with its own tokio runtime and NATS client, fed batches by the
//! shards through a bounded queue they never wait on.
//!
//! Each batch is published one event at a time, and the next is sent only once JetStream has
//! acknowledged (stored or recognised as a duplicate) the one before. Pipelining would be faster,
//! but a publish that fails while a later one succeeds (a reconnect between them, a stream
//! leader not yet elected) would store a SKU's events out of order; one at a time, a retry can
//! only repeat an event, and JetStream drops the repeat by its `Nats-Msg-Id`. A batch is retried
//! until it is stored: the outbox it came from keeps it until then, and only the outbox's owner
//! decides to forget it.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::Publish, stream};
use tokio::sync::mpsc;

use super::event::FeedEvent;
use super::handoff;

/// Batches queued for the publisher thread before shards are told to try again later.
const QUEUE_CAPACITY: usize = 64;
/// How long one publish may wait for its acknowledgement before it is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed publish, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts, so a returning broker is used within a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Where and how to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSettings {
    /// `nats://HOST:PORT` (any URL async-nats takes; several separated by commas).
    pub url: String,
    /// The JetStream stream, created if missing.
    pub stream: String,
    /// Subjects are `<prefix>.<sku>.<type>`; the stream takes `<prefix>.>`.
    pub subject_prefix: String,
    /// The stream's duplicate window, when this node creates it: a repeat of an event id within
    /// it is dropped. It must outlast the longest broker outage an unacknowledged publish may
    /// have to wait through.
    pub dedup_window: Duration,
}

/// Figures the publisher and the shards' outboxes keep, read by `/metrics` and `/readyz`
/// without asking the shards.
#[derive(Debug, Default)]
struct PublisherCounters {
    connected: AtomicBool,
    published: AtomicU64,
    failures: AtomicU64,
    /// One per shard, written only by that shard's feed task.
    lanes: Vec<LaneCounters>,
}

/// What one shard's feed task last saw of its outbox.
#[derive(Debug, Default)]
struct LaneCounters {
    pending: AtomicU64,
    /// When its oldest waiting event happened (ms since the epoch); 0 when none waits.
    oldest_at: AtomicU64,
}

/// The order feed's state across the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Whether the client holds a connection to the broker now.
    pub connected: bool,
    /// Events JetStream acknowledged (including repeats it dropped).
    pub published: u64,
    /// Publish attempts that failed or timed out, each retried.
    pub failures: u64,
    /// Events the outboxes hold that JetStream has not acknowledged, as last reported.
    pub pending: u64,
    /// When the oldest of them happened (ms since the epoch).
    pub oldest_at: Option<u64>,
}

impl PublisherStats {
    /// How far the feed is behind at `now_ms`: the age of the oldest unpublished event, in ms.
    pub fn lag_ms(&self, now_ms: u64) -> u64 {
        self.oldest_at.map_or(0, |at| now_ms.saturating_sub(at))
    }
}

/// A batch handed to the publisher, and the flag it sets once every event is stored.
struct Batch {
    /// The events' slots in [`handoff`], in publishing order.
    staged: Vec<usize>,
    done: Arc<AtomicBool>,
}

/// A submitted batch: poll [`Submitted::is_done`] (publishing is off the shards' runtime, so
/// there is no waker to share; a poll every few milliseconds is cheap and keeps the shards
/// free of cross-runtime wakeups).
#[derive(Debug)]
pub struct Submitted(Arc<AtomicBool>);

impl Submitted {
    /// Whether JetStream acknowledged every event of the batch.
    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The node's handle on the publisher thread. Cheap to clone; `Send` and `Sync`.
#[derive(Clone, Debug)]
pub struct FeedHandle {
    queue: mpsc::Sender<Batch>,
    counters: Arc<PublisherCounters>,
}

/// One shard's use of the publisher: what its feed task submits and reports through.
#[derive(Clone, Debug)]
pub struct FeedLane {
    handle: FeedHandle,
    shard: usize,
}

impl FeedLane {
    /// Queues a copy of `events` for publication in order. Never waits: when the queue is full
    /// (the broker is slow or away) it refuses, and the caller offers them again later.
    pub fn submit(&self, events: &[FeedEvent]) -> Result<Submitted, QueueFull> {
        let staged = handoff::stage(events).ok_or(QueueFull)?;
        let done = Arc::new(AtomicBool::new(false));
        let batch = Batch {
            staged,
            done: Arc::clone(&done),
        };
        match self.handle.queue.try_send(batch) {
            Ok(()) => Ok(Submitted(done)),
            Err(
                mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch),
            ) => {
                handoff::release(&batch.staged);
                Err(QueueFull)
            }
        }
    }

    /// Reports this shard's outbox: how many events wait, and when the oldest happened.
    pub fn report(&self, pending: u64, oldest_at: Option<u64>) {
        if let Some(lane) = self.handle.counters.lanes.get(self.shard) {
            lane.pending.store(pending, Ordering::Relaxed);
            lane.oldest_at
                .store(oldest_at.unwrap_or(0), Ordering::Relaxed);
        }
    }
}

/// The publisher cannot take a batch now (its queue is full, or it has stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("events", &self.staged.len())
            .finish()
    }
}

impl FeedHandle {
    /// Starts the publisher thread. It connects in the background and keeps reconnecting, so a
    /// broker that is down at start delays events, never the node.
    pub fn start(settings: FeedSettings, shards: usize) -> io::Result<Self> {
        let (queue, batches) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(PublisherCounters {
            lanes: (0..shards).map(|_| LaneCounters::default()).collect(),
            ..PublisherCounters::default()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("seckill-feed".into())
            .spawn(move || runtime.block_on(run(settings, batches, thread_counters)))?;
        Ok(Self { queue, counters })
    }

    /// Shard `shard`'s lane.
    pub fn lane(&self, shard: usize) -> FeedLane {
        FeedLane {
            handle: self.clone(),
            shard,
        }
    }

    /// The feed's figures now.
    pub fn stats(&self) -> PublisherStats {
        let lanes = &self.counters.lanes;
        PublisherStats {
            connected: self.counters.connected.load(Ordering::Relaxed),
            published: self.counters.published.load(Ordering::Relaxed),
            failures: self.counters.failures.load(Ordering::Relaxed),
            pending: lanes
                .iter()
                .map(|l| l.pending.load(Ordering::Relaxed))
                .sum(),
            oldest_at: lanes
                .iter()
                .map(|l| l.oldest_at.load(Ordering::Relaxed))
                .filter(|at| *at > 0)
                .min(),
        }
    }
}

/// The publisher thread's work: connect, make sure the stream exists, publish batch after batch.
async fn run(
    settings: FeedSettings,
    mut batches: mpsc::Receiver<Batch>,
    counters: Arc<PublisherCounters>,
) {
    let events_counters = Arc::clone(&counters);
    let connecting = async_nats::ConnectOptions::new()
        .name("seckill")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(ACK_TIMEOUT)
        .request_timeout(Some(ACK_TIMEOUT))
        .reconnect_delay_callback(|attempts| {
            MIN_BACKOFF
                .saturating_mul(1 << attempts.min(5))
                .min(MAX_BACKOFF)
        })
        .event_callback(move |event| {
            let counters = Arc::clone(&events_counters);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        counters.connected.store(true, Ordering::Relaxed);
                        tracing::info!("order feed: connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        counters.connected.store(false, Ordering::Relaxed);
                        tracing::warn!(
                            "order feed: NATS connection lost; events wait in the outbox"
                        );
                    }
                    other => tracing::debug!(event = %other, "order feed: NATS client event"),
                }
            }
        })
        .connect(settings.url.as_str())
        .await;
    let client = match connecting {
        Ok(client) => client,
        Err(error) => {
            // Only a malformed URL gets here (connecting itself is retried in the background);
            // configuration checks refuse those before the node starts.
            tracing::error!(%error, url = %settings.url, "order feed: cannot use the NATS URL; no events will be published");
            return;
        }
    };
    let context = jetstream::new(client);
    // Created up front, so `events tail` and consumers find the stream before the first event.
    let mut stream_ready = ensure_stream(&context, &settings).await;
    while let Some(batch) = batches.recv().await {
        for key in &batch.staged {
            // Only this thread releases a batch's slots, after its events are stored.
            let Some((subject, message, id)) = handoff::with_staged(*key, |event| {
                (
                    event.subject(&settings.subject_prefix),
                    Publish::build()
                        .message_id(&event.id)
                        .payload(event.body.as_bytes().to_vec().into()),
                    event.id.clone(),
                )
            }) else {
                // Unreachable: only this loop releases a batch's slots, after the batch. Said
                // out loud rather than skipped silently, since the batch still counts as stored.
                tracing::error!(
                    key,
                    "order feed: a staged event is missing; it is not published"
                );
                continue;
            };
            let mut backoff = MIN_BACKOFF;
            loop {
                if !stream_ready {
                    stream_ready = ensure_stream(&context, &settings).await;
                }
                if stream_ready && publish(&context, &subject, message.clone(), &id).await {
                    counters.published.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counters.failures.fetch_add(1, Ordering::Relaxed);
                // A stream deleted under us comes back on the next attempt.
                stream_ready = false;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        handoff::release(&batch.staged);
        batch.done.store(true, Ordering::Release);
    }
}

/// Creates the stream unless it exists (an existing stream's configuration is the operator's
/// and is left alone). False if the broker cannot be asked now.
async fn ensure_stream(context: &jetstream::Context, settings: &FeedSettings) -> bool {
    let config = stream::Config {
        name: settings.stream.clone(),
        subjects: vec![format!("{}.>", settings.subject_prefix)],
        storage: stream::StorageType::File,
        duplicate_window: settings.dedup_window,
        ..Default::default()
    };
    match context.get_or_create_stream(config).await {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%error, stream = %settings.stream, "order feed: stream not available yet");
            false
        }
    }
}

/// Publishes one event (`id`, for the logs) and waits for JetStream's acknowledgement. False on
/// any failure.
async fn publish(context: &jetstream::Context, subject: &str, message: Publish, id: &str) -> bool {
    let sent = context.send_publish(subject.to_owned(), message).await;
    let acknowledged = match sent {
        Ok(ack) => tokio::time::timeout(ACK_TIMEOUT, ack).await,
        Err(error) => {
            tracing::debug!(%error, id, "order feed: publish not sent");
            return false;
        }
    };
    match acknowledged {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            tracing::debug!(%error, id, "order feed: publish not acknowledged");
            false
        }
        Err(_) => false,
    }
}

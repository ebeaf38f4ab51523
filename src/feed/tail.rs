//! `seckill events tail`: print the order feed as it is stored in JetStream, one JSON message a
//! line, for an operator checking what fulfilment sees.
//!
//! It reads through an ephemeral ordered consumer, so it changes nothing on the stream and
//! leaves nothing behind.

use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

/// How long connecting may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to print.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// `nats://HOST:PORT`.
    pub url: String,
    /// The stream to read.
    pub stream: String,
    /// The subject prefix the node publishes under.
    pub subject_prefix: String,
    /// Only this SKU's events.
    pub sku: Option<String>,
    /// From the first stored event instead of only new ones.
    pub from_start: bool,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop after this long without a message.
    pub idle_exit: Option<Duration>,
}

/// Why tailing stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// No connection to the broker.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The stream or consumer could not be read.
    #[error("cannot read stream {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing to stdout failed (a closed pipe).
    #[error("stdout: {0}")]
    Output(#[from] std::io::Error),
}

/// Prints messages until the count or the idle limit is reached (or forever).
pub fn run(options: &TailOptions) -> Result<u64, TailError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tail(options))
}

async fn tail(options: &TailOptions) -> Result<u64, TailError> {
    let connect_error = |reason: String| TailError::Connect {
        url: options.url.clone(),
        reason,
    };
    let client = tokio::time::timeout(
        CONNECT_TIMEOUT,
        async_nats::ConnectOptions::new()
            .name("seckill-events-tail")
            .connect(options.url.as_str()),
    )
    .await
    .map_err(|_| connect_error("timed out".into()))?
    .map_err(|error| connect_error(error.to_string()))?;
    let stream_error = |reason: String| TailError::Stream {
        stream: options.stream.clone(),
        reason,
    };
    let stream = jetstream::new(client)
        .get_stream(&options.stream)
        .await
        .map_err(|error| stream_error(error.to_string()))?;
    let filter_subject = match &options.sku {
        Some(sku) => format!("{}.{sku}.>", options.subject_prefix),
        None => format!("{}.>", options.subject_prefix),
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject,
            deliver_policy: if options.from_start {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::New
            },
            ..Default::default()
        })
        .await
        .map_err(|error| stream_error(error.to_string()))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| stream_error(error.to_string()))?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while options.count.is_none_or(|count| printed < count) {
        let next = match options.idle_exit {
            Some(idle) => match tokio::time::timeout(idle, messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => messages.next().await,
        };
        let Some(message) = next else { break };
        let message = message.map_err(|error| stream_error(error.to_string()))?;
        let mut out = stdout.lock();
        out.write_all(&message.payload)?;
        out.write_all(b"\n")?;
        out.flush()?;
        printed += 1;
    }
    Ok(printed)
}

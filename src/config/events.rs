//! The order feed's settings: where to publish, and how much may wait for the broker.

use std::time::Duration;

use super::{in_range, ConfigError, FileConfig};
use crate::cli::ServeArgs;
use crate::feed::FeedSettings;
use crate::sale::model::is_valid_id;

/// The order feed as configured: `None` without `--events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Where and how to publish.
    pub feed: FeedSettings,
    /// Unpublished events a shard keeps before it refuses new purchases (503) rather than let
    /// the outbox grow without bound while the broker is away. Payments, cancellations and
    /// expiries still go through: they are bounded by the orders already taken.
    pub outbox_max: usize,
}

/// Resolves the `events*` keys: flag, then environment (clap reads it), then file, then default.
pub(super) fn resolve(
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<Option<EventsConfig>, ConfigError> {
    let Some(url) = args.events.clone().or_else(|| file.events.clone()) else {
        return Ok(None);
    };
    if url.is_empty() {
        return Ok(None);
    }
    if url.len() > 1_000
        || !url
            .split(',')
            .all(|one| one.starts_with("nats://") && one.len() > "nats://".len())
    {
        return Err(ConfigError(
            "`events` must be nats://HOST:PORT (several separated by commas)".into(),
        ));
    }
    let stream = args
        .events_stream
        .clone()
        .or_else(|| file.events_stream.clone())
        .unwrap_or_else(|| "SECKILL_EVENTS".into());
    if !is_valid_id(&stream) {
        return Err(ConfigError(
            "`events_stream` must be 1 to 64 characters from [A-Za-z0-9_-]".into(),
        ));
    }
    let subject_prefix = args
        .events_subject_prefix
        .clone()
        .or_else(|| file.events_subject_prefix.clone())
        .unwrap_or_else(|| "seckill.events".into());
    if subject_prefix.len() > 128 || !subject_prefix.split('.').all(is_valid_id) {
        return Err(ConfigError(
            "`events_subject_prefix` must be dot-separated tokens of [A-Za-z0-9_-]".into(),
        ));
    }
    let window = args
        .events_dedup_window_secs
        .or(file.events_dedup_window_secs)
        .unwrap_or(3_600);
    let window = in_range("events_dedup_window_secs", window, 10, 86_400)?;
    let outbox_max = args
        .events_outbox_max
        .or(file.events_outbox_max)
        .unwrap_or(1_000_000);
    let outbox_max = in_range("events_outbox_max", outbox_max, 100, 100_000_000)?;
    Ok(Some(EventsConfig {
        feed: FeedSettings {
            url,
            stream,
            subject_prefix,
            dedup_window: Duration::from_secs(window),
        },
        outbox_max,
    }))
}

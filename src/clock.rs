//! Time as the server measures it: wall-clock unix milliseconds (the unit the API speaks), and
//! elapsed nanoseconds (the unit latency histograms record).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch. A clock set before 1970 reads as 0 rather than failing.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Nanoseconds since `started` on the monotonic clock, saturating (a `u64` lasts 584 years).
pub fn elapsed_nanos(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

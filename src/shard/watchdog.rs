//! The systemd side of the node (`Type=notify`): READY once every shard listens, STOPPING on
//! shutdown, and, under `WatchdogSec`, WATCHDOG pings sent only while every shard's tick runs,
//! so a stalled executor stops the pings and systemd restarts the service. All are no-ops outside
//! systemd.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::NodeStatus;

/// Feeds the systemd watchdog from the main thread while it waits for node events.
pub struct Watchdog {
    period: Option<Duration>,
}

impl Watchdog {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`) from the environment.
    pub fn from_env() -> Self {
        Self {
            period: sd_notify::watchdog_enabled(),
        }
    }

    /// Waits for the next event on `inbox`. Meanwhile pings the watchdog every third of its
    /// period, once `all_ready` and while every shard has beaten within half the period.
    /// `None` once every sender is gone.
    pub fn next_event<T>(
        &self,
        inbox: &Receiver<T>,
        node: &NodeStatus,
        all_ready: bool,
    ) -> Option<T> {
        let Some(period) = self.period else {
            return inbox.recv().ok();
        };
        loop {
            match inbox.recv_timeout(period / 3) {
                Ok(event) => return Some(event),
                Err(RecvTimeoutError::Timeout) => {
                    if all_ready && node.all_beating(period / 2) {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// Tells systemd the node serves.
pub fn notify_ready() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the node is shutting down.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

//! Shutdown signals. SIGTERM and SIGINT are blocked in every thread before any starts, and one
//! thread waits for them synchronously, so no shard's executor is ever interrupted by a handler
//! and the signal reaches the main thread as an ordinary event.

use nix::sys::signal::{SigSet, Signal};

/// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread it starts afterwards)
/// and starts the thread that waits for them, calling `on_signal` with the first one.
pub fn spawn_waiter(on_signal: impl FnOnce(Signal) + Send + 'static) -> Result<(), SignalError> {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    std::thread::Builder::new()
        .name("seckill-signals".into())
        .spawn(move || {
            if let Ok(signal) = signals.wait() {
                on_signal(signal);
            }
        })
        .map_err(SignalError::Thread)?;
    Ok(())
}

/// Why signal handling could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The signal mask could not be changed.
    #[error("cannot block shutdown signals: {0}")]
    Mask(#[from] nix::Error),
    /// The waiting thread could not be started.
    #[error("cannot start the signal thread: {0}")]
    Thread(std::io::Error),
}

//! A shard's accept loop: takes connections until told to stop, holds at most the shard's
//! connection cap (the rest get `503 overloaded`, themselves bounded), and on accept errors
//! (typically `EMFILE`) backs off exponentially as Go's `net/http` does, logging at most once a
//! second with a count of what it did not log.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use glommio::net::{TcpListener, TcpStream};

use super::fds::REFUSALS_PER_SHARD;
use super::Shard;
use crate::api::Api;
use crate::http::{self, serve_connection, ConnLimits, Response};
use crate::store::NodeStore;

/// First pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between accepts while they keep failing.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Shortest interval between two log lines of one kind from one shard.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Exponential backoff for a failing `accept`: 5 ms doubling to 1 s, reset by a success.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

impl AcceptBackoff {
    /// Records a failure; returns how long to wait before the next accept.
    pub fn failed(&mut self) -> Duration {
        let next = self
            .delay
            .map_or(BACKOFF_MIN, |delay| (delay * 2).min(BACKOFF_MAX));
        self.delay = Some(next);
        next
    }

    /// Records a success: the next failure starts again from the shortest pause.
    pub fn succeeded(&mut self) {
        self.delay = None;
    }
}

/// Lets one log line through per [`LOG_EVERY`], counting the ones it holds back.
#[derive(Debug, Default)]
pub struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// Whether to log now; if so, also how many were held back since the last line.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What the accept loop serves connections with.
pub struct AcceptContext {
    /// The shard accepting.
    pub shard: Rc<Shard<NodeStore>>,
    /// The API that answers requests.
    pub api: Rc<Api<NodeStore>>,
    /// The `x-seckill-shard` header line every response carries.
    pub shard_header: Rc<[u8]>,
    /// Per-connection timeouts.
    pub conn_limits: ConnLimits,
    /// Connections this shard holds before answering `503 overloaded`.
    pub cap: usize,
}

/// Accepts until `stop` resolves. Each connection runs in `gate`, and is told to finish (answer
/// what it has read, then close) when `close_idle` resolves.
pub async fn accept_until<S, C>(
    listener: &TcpListener,
    context: &AcceptContext,
    gate: &glommio::sync::Gate,
    stop: S,
    close_idle: C,
) where
    S: Future<Output = ()> + Clone,
    C: Future<Output = ()> + Clone + 'static,
{
    let shard = &context.shard;
    let refusing = Rc::new(Cell::new(0usize));
    let mut backoff = AcceptBackoff::default();
    let mut error_log = LogLimit::default();
    let mut cap_log = LogLimit::default();
    loop {
        let accepted = match select(pin!(listener.accept()), pin!(stop.clone())).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(((), _)) => return,
        };
        let stream = match accepted {
            Ok(stream) => {
                backoff.succeeded();
                stream
            }
            Err(error) => {
                let pause = backoff.failed();
                if let Some(suppressed) = error_log.admit(Instant::now()) {
                    tracing::warn!(%error, shard = shard.id, suppressed, retry_in_ms = pause.as_millis() as u64,
                        "accept failed; backing off");
                }
                // The pause ends early on stop, so a node at its limit still shuts down promptly.
                let _ = select(pin!(glommio::timer::sleep(pause)), pin!(stop.clone())).await;
                continue;
            }
        };
        if shard.connections.get() >= context.cap {
            shard.metrics.record_refused_connection();
            if let Some(suppressed) = cap_log.admit(Instant::now()) {
                tracing::warn!(
                    shard = shard.id,
                    cap = context.cap,
                    suppressed,
                    "connection cap reached; answering 503 overloaded"
                );
            }
            // Answering takes a descriptor for a moment; past a few at once, just close.
            if refusing.get() < REFUSALS_PER_SHARD {
                let held = Held::take(&refusing);
                let header = Rc::clone(&context.shard_header);
                glommio::spawn_local(async move {
                    let _held = held;
                    refuse_overloaded(stream, header).await;
                })
                .detach();
            }
            continue;
        }
        let held = Held::take(&shard.connections);
        let (api, header, close_idle) = (
            Rc::clone(&context.api),
            Rc::clone(&context.shard_header),
            close_idle.clone(),
        );
        let limits = context.conn_limits;
        let served = gate.spawn(async move {
            let _held = held;
            if let Err(error) = serve_connection(stream, &*api, limits, &header, close_idle).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
        if let Ok(task) = served {
            task.detach();
        }
    }
}

async fn refuse_overloaded(mut stream: TcpStream, shard_header: Rc<[u8]>) {
    use futures::AsyncWriteExt;
    let mut out = Vec::with_capacity(256);
    Response::error(503, "overloaded", "too many connections, try again later")
        .closing()
        .write_to(&mut out, &shard_header, &http::RequestId::generate());
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&out).await;
    let _ = stream.close().await;
}

/// One unit of a shared count, given back when dropped: a connection counted against the cap
/// comes off it however its task ends (finished, failed, or dropped unspawned because the gate
/// was closing, or at executor exit).
struct Held(Rc<Cell<usize>>);

impl Held {
    fn take(count: &Rc<Cell<usize>>) -> Self {
        count.set(count.get() + 1);
        Self(Rc::clone(count))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_second_and_resets_on_success() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<u64> = (0..10)
            .map(|_| backoff.failed().as_millis() as u64)
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), BACKOFF_MIN);
    }

    #[test]
    fn one_line_a_second_with_a_count_of_the_rest() {
        let mut limit = LogLimit::default();
        let start = Instant::now();
        assert_eq!(limit.admit(start), Some(0));
        for step in 1..=96 {
            assert_eq!(limit.admit(start + Duration::from_millis(step * 10)), None);
        }
        assert_eq!(limit.admit(start + Duration::from_millis(1000)), Some(96));
        assert_eq!(limit.admit(start + Duration::from_millis(1001)), None);
    }
}

//! Running the schedule: one glommio executor per thread, one task per connection.
//!
//! Every connection task of an executor takes the next arrival from the executor's counter,
//! sleeps until it is due if early, sends it and waits for the response under a deadline. When
//! every connection is busy the next arrival simply waits: it is sent late, and its latency,
//! measured from when it was due, shows it (the correction for coordinated omission that wrk2
//! makes). When the duration is over no more arrivals are sent; those still waiting are counted
//! as `not_sent`, and the requests in flight finish or time out.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::error::LoadError;
use super::http::Connection;
use super::options::{user_id, LoadOptions, Target};
use super::progress::{Counters, Progress};
use super::report::Report;
use super::schedule::Schedule;
use super::stats::{classify, Recorder, TIMEOUT, TRANSPORT_ERROR};
use crate::auth::Auth;
use crate::clock;

/// Registered-buffer memory per executor. Sockets do not use it, so keep it well inside
/// RLIMIT_MEMLOCK.
const IO_MEMORY: usize = 256 << 10;
/// First wait after a failed connection attempt; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How often a connected executor checks for the start signal.
const START_POLL: Duration = Duration::from_millis(1);
/// Lead time given to the executors between the start signal and the first arrival.
const START_LEAD: Duration = Duration::from_millis(5);
/// Validity of the minted tokens beyond the end of the run.
const TOKEN_MARGIN_SECS: u64 = 3600;

/// State shared by the executors and the coordinating thread.
struct Shared {
    counters: Counters,
    /// Executors connected and waiting for the start signal.
    ready: AtomicUsize,
    /// The start, in nanoseconds after `Run::base`; `u64::MAX` until it is given.
    start_ns: AtomicU64,
    /// Set when the run is abandoned before it started.
    abort: AtomicBool,
    /// Executors that have finished (normally or not).
    finished: Mutex<usize>,
    finished_changed: Condvar,
}

impl Shared {
    fn finished(&self) -> MutexGuard<'_, usize> {
        self.finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counts an executor as finished when dropped, even if it panicked.
struct FinishGuard(Arc<Run>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        *self.0.shared.finished() += 1;
        self.0.shared.finished_changed.notify_all();
    }
}

/// Everything the executors read, fixed for the run.
struct Run {
    shared: Shared,
    base: Instant,
    schedule: Schedule,
    duration: Duration,
    timeout: Duration,
    users: u64,
    /// Each user's `Authorization` token, by user number.
    tokens: Vec<Box<str>>,
    body: Vec<u8>,
    targets: Vec<Target>,
}

/// One executor's view of the run.
struct ThreadCtx {
    run: Arc<Run>,
    thread: usize,
    start: Instant,
    end: Instant,
    /// Index of this executor's next arrival.
    next: Cell<u64>,
    recorder: RefCell<Recorder>,
}

/// What an executor hands back.
struct ThreadResult {
    recorder: Recorder,
    finished_at: Instant,
}

/// Runs the load described by `options` and returns the report. Nothing is sent if the options
/// are invalid or a target is refused.
pub fn run(options: &LoadOptions) -> Result<Report, LoadError> {
    run_with_progress(options, |_| {})
}

/// Like [`run`], calling `on_progress` from the calling thread once a second while the run lasts.
pub fn run_with_progress(
    options: &LoadOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Report, LoadError> {
    let targets = options.validate()?;
    super::preflight::sale_exists(&targets, &options.sku, options.timeout)?;
    let auth = Auth::new("", &options.token_secret);
    let expires = clock::now_ms() / 1000
        + options.duration.as_secs()
        + options.timeout.as_secs()
        + TOKEN_MARGIN_SECS;
    let tokens = (0..options.users)
        .map(|n| {
            auth.mint(&user_id(&options.user_prefix, n), expires)
                .into_boxed_str()
        })
        .collect();
    let run = Arc::new(Run {
        shared: Shared {
            counters: Counters::default(),
            ready: AtomicUsize::new(0),
            start_ns: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
            finished: Mutex::new(0),
            finished_changed: Condvar::new(),
        },
        base: Instant::now(),
        schedule: Schedule::new(options.rate, options.threads, options.duration),
        duration: options.duration,
        timeout: options.timeout,
        users: options.users,
        tokens,
        body: options.body(),
        targets,
    });

    let threads = options.threads;
    let mut handles = Vec::with_capacity(threads);
    for thread in 0..threads {
        // Connection c belongs to executor c % threads and targets URL c % urls.
        let conn_targets: Vec<usize> = (0..options.connections)
            .filter(|c| c % threads == thread)
            .map(|c| c % run.targets.len())
            .collect();
        let job = Arc::clone(&run);
        let spawned = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("seckill-load-{thread}"))
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let _finish = FinishGuard(Arc::clone(&job));
                run_thread(job, thread, conn_targets).await
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                run.shared.abort.store(true, Ordering::Release);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(LoadError::Runtime(format!(
                    "cannot start executor {thread}: {error}"
                )));
            }
        }
    }

    // Start once every executor is connected (each attempt is bounded by the timeout).
    while run.shared.ready.load(Ordering::Acquire) < threads {
        if *run.shared.finished() > 0 {
            break;
        }
        std::thread::sleep(START_POLL);
    }
    let start_ns = u64::try_from((run.base.elapsed() + START_LEAD).as_nanos()).unwrap_or(0);
    run.shared.start_ns.store(start_ns, Ordering::Release);
    let start = run.base + Duration::from_nanos(start_ns);

    report_progress(&run, start, threads, &mut on_progress);

    let mut merged = Recorder::new(options.users);
    let mut finished_at = start;
    for (thread, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(result) => {
                merged.merge(&result.recorder);
                finished_at = finished_at.max(result.finished_at);
            }
            Err(error) => {
                return Err(LoadError::Runtime(format!(
                    "executor {thread} failed: {error}"
                )))
            }
        }
    }
    let elapsed = finished_at.saturating_duration_since(start);
    Ok(build_report(options, &run, &merged, elapsed))
}

/// Calls `on_progress` at every whole second after `start` until every executor has finished.
fn report_progress(
    run: &Run,
    start: Instant,
    threads: usize,
    on_progress: &mut impl FnMut(&Progress),
) {
    let mut previous: Option<Progress> = None;
    let mut tick: u64 = 1;
    loop {
        let due = start + Duration::from_secs(tick);
        {
            let mut finished = run.shared.finished();
            loop {
                if *finished >= threads {
                    return;
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                finished = run
                    .shared
                    .finished_changed
                    .wait_timeout(finished, due - now)
                    .map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard);
            }
        }
        let progress = run
            .shared
            .counters
            .snapshot(Duration::from_secs(tick), previous.as_ref());
        on_progress(&progress);
        previous = Some(progress);
        tick += 1;
    }
}

fn build_report(options: &LoadOptions, run: &Run, merged: &Recorder, elapsed: Duration) -> Report {
    let status = merged
        .statuses
        .iter()
        .enumerate()
        .filter(|(_, count)| **count > 0)
        .map(|(code, count)| (code.to_string(), *count))
        .collect::<std::collections::BTreeMap<_, _>>();
    let completed = status.values().sum();
    let outcomes: std::collections::BTreeMap<String, _> = merged
        .outcomes
        .iter()
        .map(|(name, latency)| (name.to_string(), latency.summary()))
        .collect();
    let count_of = |name: &str| outcomes.get(name).map_or(0, |l| l.count);
    let errors = count_of(TIMEOUT) + count_of(TRANSPORT_ERROR);
    let elapsed_secs = elapsed.as_secs_f64();
    let planned = run.schedule.planned();
    Report {
        urls: run.targets.iter().map(|t| t.url.clone()).collect(),
        sku: options.sku.clone(),
        rate: options.rate,
        duration_secs: run.duration.as_secs_f64(),
        elapsed_secs,
        threads: options.threads,
        connections: options.connections,
        users: options.users,
        planned,
        sent: merged.sent,
        completed,
        errors,
        not_sent: planned.saturating_sub(merged.sent),
        throughput: if elapsed_secs > 0.0 {
            completed as f64 / elapsed_secs
        } else {
            0.0
        },
        connects: merged.connects,
        connect_errors: merged.connect_errors,
        status,
        outcomes,
        latency: merged.all.summary(),
        users_with_orders: merged.orders_per_user.iter().filter(|&&n| n > 0).count() as u64,
        max_orders_per_user: merged
            .orders_per_user
            .iter()
            .copied()
            .max()
            .map_or(0, u64::from),
    }
}

/// One executor: connect, wait for the start, run a task per connection, hand back the record.
async fn run_thread(run: Arc<Run>, thread: usize, conn_targets: Vec<usize>) -> ThreadResult {
    let mut recorder = Recorder::new(run.users);
    let attempts = conn_targets
        .iter()
        .map(|&target| Connection::connect(&run.targets[target].addrs, run.timeout));
    let mut conns = Vec::with_capacity(conn_targets.len());
    for attempt in futures::future::join_all(attempts).await {
        match attempt {
            Ok(conn) => {
                recorder.connects += 1;
                conns.push(Some(conn));
            }
            Err(error) => {
                tracing::debug!(%error, "connection attempt failed");
                recorder.connect_errors += 1;
                conns.push(None);
            }
        }
    }
    run.shared.ready.fetch_add(1, Ordering::AcqRel);
    let start = loop {
        if run.shared.abort.load(Ordering::Acquire) {
            return ThreadResult {
                recorder,
                finished_at: Instant::now(),
            };
        }
        let start_ns = run.shared.start_ns.load(Ordering::Acquire);
        if start_ns != u64::MAX {
            break run.base + Duration::from_nanos(start_ns);
        }
        glommio::timer::sleep(START_POLL).await;
    };
    let ctx = Rc::new(ThreadCtx {
        end: start + run.duration,
        run,
        thread,
        start,
        next: Cell::new(0),
        recorder: RefCell::new(recorder),
    });
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(conn_targets)
        .map(|(conn, target)| glommio::spawn_local(connection_task(Rc::clone(&ctx), target, conn)))
        .collect();
    futures::future::join_all(tasks).await;
    let recorder = std::mem::replace(&mut *ctx.recorder.borrow_mut(), Recorder::new(0));
    ThreadResult {
        recorder,
        finished_at: Instant::now(),
    }
}

/// Longest a kept-alive connection may sit unused before it is replaced: under the server's
/// default idle timeout (10 s), so a slow schedule never writes into a connection the server
/// already closed.
const MAX_IDLE: Duration = Duration::from_secs(5);

/// Sends arrivals over one connection (reconnecting as needed) until the schedule is over.
async fn connection_task(ctx: Rc<ThreadCtx>, target: usize, mut conn: Option<Connection>) {
    let run = Arc::clone(&ctx.run);
    let target = &run.targets[target];
    let mut rng = SmallRng::from_entropy();
    let mut request = Vec::with_capacity(target.request_head.len() + 160 + run.body.len());
    let mut backoff = MIN_BACKOFF;
    let mut last_used = Instant::now();
    loop {
        let k = ctx.next.get();
        ctx.next.set(k + 1);
        let Some(due) = run.schedule.due(ctx.thread, k) else {
            return;
        };
        let intended = ctx.start + due;
        let now = Instant::now();
        if now >= ctx.end {
            // The arrival was due but no connection was free in time: it counts as not sent.
            return;
        }
        if intended > now {
            glommio::timer::sleep(intended - now).await;
        }
        let mut stream = loop {
            // A connection idle for long may have been closed by the server's idle timeout; the
            // POST would then fail although the server never saw it, so start afresh instead.
            if let Some(stream) = conn.take().filter(|_| last_used.elapsed() < MAX_IDLE) {
                break stream;
            }
            let now = Instant::now();
            if now >= ctx.end {
                return;
            }
            match Connection::connect(&target.addrs, run.timeout).await {
                Ok(stream) => {
                    ctx.recorder.borrow_mut().connects += 1;
                    backoff = MIN_BACKOFF;
                    break stream;
                }
                Err(error) => {
                    tracing::debug!(%error, url = %target.url, "connection attempt failed");
                    ctx.recorder.borrow_mut().connect_errors += 1;
                    let left = ctx.end.saturating_duration_since(Instant::now());
                    glommio::timer::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };

        let user = rng.gen_range(0..run.users);
        request.clear();
        request.extend_from_slice(&target.request_head);
        if let Some(token) = usize::try_from(user).ok().and_then(|u| run.tokens.get(u)) {
            request.extend_from_slice(token.as_bytes());
        }
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(&run.body);

        ctx.recorder.borrow_mut().sent += 1;
        run.shared.counters.sent();
        let exchange =
            async { Ok::<_, glommio::GlommioError<()>>(stream.exchange(&request).await) };
        let result = glommio::timer::timeout(run.timeout, exchange).await;
        let latency_ns = clock::elapsed_nanos(intended);
        last_used = Instant::now();
        match result {
            Ok(Ok(reply)) => {
                let outcome = classify(reply.status, stream.body_mut());
                ctx.recorder
                    .borrow_mut()
                    .record(&outcome, Some(reply.status), user, latency_ns);
                run.shared.counters.completed(reply.status);
                if !reply.close {
                    conn = Some(stream);
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, url = %target.url, "request failed");
                ctx.recorder
                    .borrow_mut()
                    .record(TRANSPORT_ERROR, None, user, latency_ns);
                run.shared.counters.failed();
            }
            Err(_) => {
                ctx.recorder
                    .borrow_mut()
                    .record(TIMEOUT, None, user, latency_ns);
                run.shared.counters.failed();
            }
        }
    }
}

//! A TCP proxy for fault injection between a node and Redis (or between two Redis servers):
//! delay every chunk, freeze established connections without FIN or RST while new ones still
//! work, black-hole everything, cut every connection, or send new connections to another
//! upstream (a split brain). Plain threads and blocking sockets; loopback only. Dropping it
//! stops it and closes every connection it made.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How often a paused pump looks at its switches again.
const POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Switches {
    stopped: AtomicBool,
    /// Connections numbered below this are frozen: nothing read, nothing written, nothing closed.
    frozen_below: AtomicUsize,
    /// Every connection, old and new, is frozen.
    blackhole: AtomicBool,
    /// Added to every chunk, in microseconds.
    delay_micros: AtomicU64,
    /// Where new connections go.
    upstream: AtomicU16,
    /// Connections accepted so far (also the next connection's number).
    accepted: AtomicUsize,
    /// Bytes forwarded from clients to the upstream.
    bytes_up: AtomicU64,
    /// Every socket, so `cut` and drop can close them.
    sockets: Mutex<Vec<TcpStream>>,
}

impl Switches {
    fn frozen(&self, connection: usize) -> bool {
        self.blackhole.load(Ordering::Acquire)
            || connection < self.frozen_below.load(Ordering::Acquire)
    }
}

/// A running proxy on `127.0.0.1:port`.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    switches: Arc<Switches>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream`, forwarding at once.
    #[track_caller]
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        listener
            .set_nonblocking(true)
            .expect("non-blocking proxy listener");
        let switches = Arc::new(Switches {
            upstream: AtomicU16::new(upstream),
            ..Switches::default()
        });
        let accepting = Arc::clone(&switches);
        thread::spawn(move || accept_loop(listener, accepting));
        Proxy { port, switches }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Delays every chunk in both directions by `delay` (order is kept).
    pub fn set_delay(&self, delay: Duration) {
        self.switches
            .delay_micros
            .store(delay.as_micros() as u64, Ordering::Release);
    }

    /// Freezes every connection made so far: no byte moves either way and no socket closes, as
    /// with a hung proxy or a dead host behind a VIP. Connections made later work.
    pub fn freeze_existing(&self) {
        let accepted = self.switches.accepted.load(Ordering::Acquire);
        self.switches
            .frozen_below
            .store(accepted, Ordering::Release);
    }

    /// With `true`, every connection, old and new, is accepted but silent (a partition);
    /// with `false`, traffic flows again.
    pub fn set_blackhole(&self, on: bool) {
        self.switches.blackhole.store(on, Ordering::Release);
    }

    /// New connections go to `127.0.0.1:port` from now on; established ones keep theirs.
    pub fn set_upstream(&self, port: u16) {
        self.switches.upstream.store(port, Ordering::Release);
    }

    /// Closes every connection made so far (the clients see a reset or EOF).
    pub fn cut(&self) {
        let sockets = std::mem::take(&mut *lock(&self.switches.sockets));
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.switches.accepted.load(Ordering::Acquire)
    }

    /// Bytes forwarded from clients to the upstream so far.
    pub fn bytes_up(&self) -> u64 {
        self.switches.bytes_up.load(Ordering::Acquire)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.switches.stopped.store(true, Ordering::Release);
        self.cut();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, switches: Arc<Switches>) {
    while !switches.stopped.load(Ordering::Acquire) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => {
                thread::sleep(POLL);
                continue;
            }
        };
        let number = switches.accepted.fetch_add(1, Ordering::AcqRel);
        let upstream_port = switches.upstream.load(Ordering::Acquire);
        let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
            // As a real proxy whose backend is gone: the client sees its connection close.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let pair = (client.try_clone(), upstream.try_clone());
        let (Ok(client2), Ok(upstream2)) = pair else {
            continue;
        };
        {
            let mut sockets = lock(&switches.sockets);
            for socket in [&client, &upstream] {
                if let Ok(copy) = socket.try_clone() {
                    sockets.push(copy);
                }
            }
        }
        pump(client, upstream2, number, Arc::clone(&switches), true);
        pump(upstream, client2, number, Arc::clone(&switches), false);
    }
}

/// Moves bytes from `from` to `to` on two threads: a reader that stamps each chunk, and a
/// writer that sends it once its delay has passed. Both stop while the connection is frozen.
fn pump(mut from: TcpStream, mut to: TcpStream, number: usize, switches: Arc<Switches>, up: bool) {
    let (chunks, queued) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reading = Arc::clone(&switches);
    thread::spawn(move || {
        let _ = from.set_read_timeout(Some(POLL));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if reading.stopped.load(Ordering::Acquire) {
                return;
            }
            if reading.frozen(number) {
                thread::sleep(POLL);
                continue;
            }
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if chunks.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    });
    thread::spawn(move || {
        while let Ok((read_at, chunk)) = queued.recv() {
            loop {
                if switches.stopped.load(Ordering::Acquire) {
                    return;
                }
                let delay = Duration::from_micros(switches.delay_micros.load(Ordering::Acquire));
                let due = read_at + delay;
                if switches.frozen(number) {
                    thread::sleep(POLL);
                } else if Instant::now() < due {
                    thread::sleep((due - Instant::now()).min(POLL));
                } else {
                    break;
                }
            }
            if to.write_all(&chunk).is_err() {
                return;
            }
            if up {
                switches
                    .bytes_up
                    .fetch_add(chunk.len() as u64, Ordering::AcqRel);
            }
        }
        // The reader saw EOF: pass it on, as a proxy does.
        let _ = to.shutdown(Shutdown::Write);
    });
}

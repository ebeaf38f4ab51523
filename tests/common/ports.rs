//! Loopback ports for the processes a test binary starts (`seckill`, `redis-server`): each port is
//! handed out once per binary, so a server restarted on its old port never finds it taken by
//! another test's server. Standalone, so benches can include it with `#[path]`.

use std::net::TcpListener;
use std::sync::Mutex;

/// Ports handed out by this binary.
static USED_PORTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A loopback port that was free a moment ago and that this binary never handed out before.
pub fn pick_port() -> u16 {
    let mut used = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        drop(l);
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
    panic!("could not find a fresh port");
}

//! The fault-injection proxy of the Redis tests does what they rely on: a frozen connection
//! stays silent while a new one works, and the black hole silences every connection.

mod common;

use common::proxy::Proxy;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn round_trip(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 4];
    stream.write_all(b"ping").is_ok() && stream.read_exact(&mut buf).is_ok()
}

#[test]
fn freezing_stops_old_connections_only() {
    let proxy = Proxy::start(echo_server());
    let mut old = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    assert!(round_trip(&mut old));
    proxy.freeze_existing();
    assert!(!round_trip(&mut old), "a frozen connection answers");
    let mut new = TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect");
    assert!(round_trip(&mut new), "a new connection is frozen");
    proxy.set_blackhole(true);
    assert!(!round_trip(&mut new), "the blackhole lets bytes through");
}

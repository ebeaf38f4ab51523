//! Purchase and sale bodies, through the API's own parsers: the input is the body of a
//! `POST /v1/sales/{sku}/purchase` and of a `PUT /v1/sales/{sku}`, framed by the real HTTP parser
//! so the `Request` is built exactly as a connection builds it. The parsers run on a thread with
//! a shard's stack (std's default for spawned threads, which glommio's executors keep), so input
//! that recurses deeply overflows here exactly when it would take a shard down.

#![no_main]

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use seckill::api::{parse_purchase, parse_sale};
use seckill::http::request::{parse, Parsed};

fn with_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "{head} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Stack of a shard thread: glommio spawns executors with std's default, 2 MiB.
const SHARD_STACK_BYTES: usize = 2 << 20;

/// One long-lived parser thread (a thread per input would cost more than the parsing). A panic
/// there aborts the process through libfuzzer-sys' panic hook, so it is reported like any other.
struct Parser {
    inputs: SyncSender<Vec<u8>>,
    done: Receiver<()>,
}

fn parser() -> &'static Mutex<Parser> {
    static PARSER: OnceLock<Mutex<Parser>> = OnceLock::new();
    PARSER.get_or_init(|| {
        let (inputs, incoming) = sync_channel::<Vec<u8>>(0);
        let (finished, done) = sync_channel(0);
        let spawned = std::thread::Builder::new()
            .name("shard-stack".into())
            .stack_size(SHARD_STACK_BYTES)
            .spawn(move || {
                for body in incoming {
                    parse_both(&body);
                    if finished.send(()).is_err() {
                        return;
                    }
                }
            });
        if let Err(error) = spawned {
            panic!("cannot start the parser thread: {error}");
        }
        Mutex::new(Parser { inputs, done })
    })
}

fuzz_target!(|body: &[u8]| {
    let parser = parser()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let answered = parser.inputs.send(body.to_vec()).is_ok() && parser.done.recv().is_ok();
    assert!(answered, "the parser thread is gone");
});

fn parse_both(body: &[u8]) {
    let purchase = with_body("POST /v1/sales/sku-1/purchase", body);
    if let Ok(Parsed::Complete(request, _)) = parse(&purchase) {
        if let Ok(quantity) = parse_purchase(&request) {
            assert!((1..=100).contains(&quantity));
        }
    }
    let sale = with_body("PUT /v1/sales/sku-1", body);
    if let Ok(Parsed::Complete(request, _)) = parse(&sale) {
        if let Ok(sale) = parse_sale(&request, "sku-1") {
            assert!(sale.stock >= 1 && sale.ends_at > sale.starts_at);
            assert!(!sale.name.is_empty());
        }
    }
}

//! Purchase and sale bodies, through the API's own parsers: the input is the body of a
//! `POST /v1/sales/{sku}/purchase` and of a `PUT /v1/sales/{sku}`, framed by the real HTTP parser
//! so the `Request` is built exactly as a connection builds it.

#![no_main]

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

fuzz_target!(|body: &[u8]| {
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
});

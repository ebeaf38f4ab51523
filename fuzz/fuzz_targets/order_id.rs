//! Order ids as they arrive in URL paths: parsing must never panic, and an id that parses must
//! be in its one canonical spelling, so that two different paths never name the same order.

#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill::sale::ids::OrderId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = OrderId::parse(text) {
        assert_eq!(id.to_string(), text, "not the canonical spelling");
        assert_eq!(OrderId::parse(&id.to_string()), Some(id));
    }
});

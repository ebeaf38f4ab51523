//! Shopper and admin tokens: any `Authorization` value must be answered (a principal or `None`)
//! without panicking, and a token minted by the server must verify as its user exactly when it
//! expires within the maximum lifetime.

#![no_main]

use libfuzzer_sys::fuzz_target;
use seckill::auth::{Auth, Principal, DEFAULT_MAX_TOKEN_TTL_SECS};

/// 2026-12-01T00:00:00Z, before the expiry of the seed tokens.
const NOW_SECS: u64 = 1_796_083_200;

fuzz_target!(|header: &[u8]| {
    let auth = Auth::new("fuzz-admin-token", "fuzz-token-secret");
    let principal = auth.authenticate(Some(header), NOW_SECS);
    // The input read as `<user>.<expiry>`: minting that must give a token that verifies.
    let Ok(text) = std::str::from_utf8(header) else {
        return;
    };
    if let Principal::Shopper(user) = principal.clone().unwrap_or(Principal::Admin) {
        // Whatever verified must be a token the server could have minted for that user.
        let token = text
            .split_once(' ')
            .map_or(text, |(_, token)| token)
            .trim_ascii();
        let expiry = token.split('.').nth(1).and_then(|e| e.parse::<u64>().ok());
        let latest = NOW_SECS + DEFAULT_MAX_TOKEN_TTL_SECS;
        assert!(
            expiry.is_some_and(|e| e > NOW_SECS && e <= latest),
            "accepted {token:?}"
        );
        assert!(token.starts_with(&format!("{user}.")));
    }
    if let Some((user, expiry)) = text.split_once('.') {
        if let Ok(expiry) = expiry.parse::<u64>() {
            if seckill::sale::model::is_valid_id(user) && expiry > NOW_SECS {
                let minted = format!("Bearer {}", auth.mint(user, expiry));
                // Within the maximum lifetime it verifies as its user; beyond it, never.
                let expected = (expiry <= NOW_SECS + DEFAULT_MAX_TOKEN_TTL_SECS)
                    .then(|| Principal::Shopper(user.into()));
                assert_eq!(
                    auth.authenticate(Some(minted.as_bytes()), NOW_SECS),
                    expected
                );
            }
        }
    }
});

//! Proof-of-work against bot farms: a sale with `pow_bits > 0` makes each shopper spend about
//! `2^pow_bits` SHA-256 hashes per minute per identity before the edge takes their request.
//!
//! The challenge is stateless, so no node stores or shares anything: it is
//! `HMAC-SHA256(pow_key, sku ‖ 0 ‖ user ‖ 0 ‖ window)` with `window = now_ms / 60 000` (8 bytes,
//! big-endian), and `pow_key` is derived from the shopper-token secret, which every node of a
//! cluster already shares. A solution is a nonce `n` such that `SHA-256(challenge ‖ n)` (`n` as 8
//! bytes, big-endian) starts with `pow_bits` zero bits. The shopper sends
//! `X-Seckill-Pow: <window>.<nonce>`; the edge recomputes the challenge for that window, which
//! must be the current one or the one before (a solution found near a minute's end still
//! counts), and checks the hash: one HMAC and one hash, about a microsecond
//! (`benches/micro.rs`, `pow_verify`).
//!
//! A solution may be reused within its two minutes by the same shopper for the same sale: the
//! work buys one identity two minutes of asking, and the per-user limit and the rate limit
//! bound what those minutes can take.

use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::auth::{keyed, sale_user_mac, HmacSha256};

/// Length of a challenge window.
pub const WINDOW_MS: u64 = 60_000;

/// Most leading zero bits a sale may ask for: about 10^9 hashes, minutes of a phone's time.
pub const MAX_POW_BITS: u8 = 30;

/// Label mixed into the derived key, so a challenge can never double as a token signature made
/// with the same secret.
const KEY_LABEL: &[u8] = b"seckill proof-of-work v1";

/// Issues and checks challenges; every node derives the same key from the shared secret.
#[derive(Clone)]
pub struct PowKey {
    /// HMAC-SHA256 keyed with the derived key, cloned per use (the key's two blocks are hashed
    /// once).
    keyed: HmacSha256,
}

impl std::fmt::Debug for PowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowKey { .. }")
    }
}

/// A shopper's claimed solution: the window it was solved for and the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    /// `now_ms / WINDOW_MS` when the challenge was fetched.
    pub window: u64,
    /// The nonce found.
    pub nonce: u64,
}

impl Proof {
    /// Parses the `X-Seckill-Pow` header value `<window>.<nonce>` (decimal); `None` when it is
    /// malformed.
    pub fn parse(header: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(header).ok()?.trim_ascii();
        let (window, nonce) = text.split_once('.')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(window) || !digits(nonce) {
            return None;
        }
        Some(Self {
            window: window.parse().ok()?,
            nonce: nonce.parse().ok()?,
        })
    }
}

/// The window `now_ms` falls in.
pub fn window_of(now_ms: u64) -> u64 {
    now_ms / WINDOW_MS
}

/// Whether `SHA-256(challenge ‖ nonce)` starts with `bits` zero bits.
pub fn meets(challenge: &[u8; 32], nonce: u64, bits: u8) -> bool {
    let mut hasher = Sha256::new();
    hasher.update(challenge);
    hasher.update(nonce.to_be_bytes());
    leading_zero_bits(&hasher.finalize()) >= u32::from(bits)
}

/// Leading zero bits of `hash`.
fn leading_zero_bits(hash: &[u8]) -> u32 {
    let mut zeros = 0;
    for byte in hash {
        if *byte != 0 {
            return zeros + byte.leading_zeros();
        }
        zeros += 8;
    }
    zeros
}

/// The smallest nonce that solves `challenge` at `bits`: what a client does, for tests, the
/// load generator and `seckill pow solve`. Expected cost: `2^bits` hashes.
pub fn solve(challenge: &[u8; 32], bits: u8) -> u64 {
    (0..=u64::MAX)
        .find(|nonce| meets(challenge, *nonce, bits))
        .unwrap_or(u64::MAX)
}

impl PowKey {
    /// The key every node derives from the shopper-token `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let derived = keyed(secret)
            .chain_update(KEY_LABEL)
            .finalize()
            .into_bytes();
        Self {
            keyed: keyed(&derived),
        }
    }

    /// The challenge of `user_id` for `sku` in `window`.
    pub fn challenge(&self, sku: &str, user_id: &str, window: u64) -> [u8; 32] {
        sale_user_mac(&self.keyed, sku, user_id, window)
    }

    /// Whether `proof` solves the challenge of `user_id` for `sku` at `bits`, for the window of
    /// `now_ms` or the one before. A sale with `bits == 0` needs no proof.
    pub fn verify(
        &self,
        sku: &str,
        user_id: &str,
        proof: Option<Proof>,
        bits: u8,
        now_ms: u64,
    ) -> bool {
        if bits == 0 {
            return true;
        }
        let Some(proof) = proof else {
            return false;
        };
        let current = window_of(now_ms);
        if proof.window != current && proof.window.checked_add(1) != Some(current) {
            return false;
        }
        meets(
            &self.challenge(sku, user_id, proof.window),
            proof.nonce,
            bits,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_counts_in_its_window_and_the_next_only() {
        let key = PowKey::new(b"secret");
        let now = 10 * WINDOW_MS + 5;
        let window = window_of(now);
        let nonce = solve(&key.challenge("sku", "alice", window), 8);
        let proof = Some(Proof { window, nonce });
        assert!(key.verify("sku", "alice", proof, 8, now));
        assert!(key.verify("sku", "alice", proof, 8, now + WINDOW_MS));
        assert!(
            !key.verify("sku", "alice", proof, 8, now + 2 * WINDOW_MS),
            "stale"
        );
        assert!(
            !key.verify("sku", "alice", proof, 8, now - WINDOW_MS),
            "future"
        );
        assert!(!key.verify("sku", "bob", proof, 8, now), "another user's");
        assert!(
            !key.verify("other", "alice", proof, 8, now),
            "another sale's"
        );
        assert!(!PowKey::new(b"other").verify("sku", "alice", proof, 8, now));
        assert!(!key.verify("sku", "alice", None, 8, now));
        assert!(key.verify("sku", "alice", None, 0, now), "no work asked");
    }

    #[test]
    fn solutions_have_the_bits_asked_for() {
        let challenge = PowKey::new(b"k").challenge("s", "u", 1);
        for bits in [1, 4, 12] {
            let nonce = solve(&challenge, bits);
            assert!(meets(&challenge, nonce, bits));
            assert!((0..nonce).all(|n| !meets(&challenge, n, bits)));
        }
        assert_eq!(leading_zero_bits(&[0, 0x10, 0xff]), 11);
        assert_eq!(leading_zero_bits(&[0; 4]), 32);
    }

    #[test]
    fn the_header_is_window_dot_nonce_in_decimal() {
        assert_eq!(
            Proof::parse(b"29000000.12345"),
            Some(Proof {
                window: 29_000_000,
                nonce: 12_345
            })
        );
        for bad in [
            &b""[..],
            b"1",
            b"1.",
            b".2",
            b"1.2.3",
            b"-1.2",
            b"1.x",
            b"1.99999999999999999999",
        ] {
            assert_eq!(
                Proof::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

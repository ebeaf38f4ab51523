//! The secrets of the fair modes, all derived from the shopper-token secret so that every node
//! of a cluster computes the same: a waiting-room ticket's **score** (its place among the early
//! tickets, [`super::waiting_room`]), a lottery's **seed** ([`super::lottery`]) and the **pass**
//! an admitted ticket or a winner carries to the purchase.
//!
//! A pass is `<expires_at>.<hex HMAC-SHA256(K, sku ‖ 0 ‖ user ‖ 0 ‖ expires_at)>`, sent as
//! `X-Seckill-Pass`: the edge checks it without a hop or a store read, like a shopper token.

use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::auth::{keyed, sale_user_mac, HmacSha256};

/// Labels mixed into the derived keys, so neither can double as the other or as a token
/// signature made with the same secret.
const SCORE_LABEL: &[u8] = b"seckill queue score v1";
const PASS_LABEL: &[u8] = b"seckill admission pass v1";
const SEED_LABEL: &[u8] = b"seckill lottery seed v1";

/// Scores tickets and signs and checks passes.
#[derive(Clone)]
pub struct PassKey {
    /// HMAC keyed for scores, cloned per use.
    score: HmacSha256,
    /// HMAC keyed for passes, cloned per use.
    pass: HmacSha256,
    /// HMAC keyed for lottery seeds, cloned per use.
    seed: HmacSha256,
}

impl std::fmt::Debug for PassKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassKey { .. }")
    }
}

impl PassKey {
    /// The keys every node derives from the shopper-token `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let derive = |label: &[u8]| {
            let key = keyed(secret).chain_update(label).finalize().into_bytes();
            keyed(&key)
        };
        Self {
            score: derive(SCORE_LABEL),
            pass: derive(PASS_LABEL),
            seed: derive(SEED_LABEL),
        }
    }

    /// The score of `user_id`'s ticket for the sale of `sku` starting at `starts_at`: early
    /// tickets are admitted in ascending score. Unpredictable without the secret, and fixed
    /// for the sale, so joining early, often or fast changes nothing. 52 bits, which a Redis
    /// zset score (a double) holds exactly.
    pub fn score(&self, sku: &str, user_id: &str, starts_at: u64) -> u64 {
        let digest = sale_user_mac(&self.score, sku, user_id, starts_at);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first) >> 12
    }

    /// The lottery seed of the sale of `sku` that opens registration at `register_from` and
    /// draws at `starts_at`: fixed by the sale's definition, so every node has it without
    /// storing it, and unknown outside the server until the draw reveals it.
    pub fn lottery_seed(&self, sku: &str, register_from: u64, starts_at: u64) -> [u8; 32] {
        let mut mac = self.seed.clone();
        mac.update(sku.as_bytes());
        mac.update(&[0]);
        mac.update(&register_from.to_be_bytes());
        mac.update(&starts_at.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The pass of `user_id` for `sku`, valid until `expires_at`.
    pub fn sign(&self, sku: &str, user_id: &str, expires_at: u64) -> String {
        format!(
            "{expires_at}.{}",
            hex::encode(self.mac(sku, user_id, expires_at))
        )
    }

    /// Whether `header` is a pass of `user_id` for `sku` still valid at `now_ms`.
    pub fn verify(&self, sku: &str, user_id: &str, header: Option<&[u8]>, now_ms: u64) -> bool {
        let Some(text) = header.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        let Some((expires, sig)) = text.trim_ascii().split_once('.') else {
            return false;
        };
        let Ok(expires_at) = expires.parse::<u64>() else {
            return false;
        };
        let mut claimed = [0u8; 32];
        if now_ms >= expires_at || hex::decode_to_slice(sig, &mut claimed).is_err() {
            return false;
        }
        bool::from(self.mac(sku, user_id, expires_at).ct_eq(&claimed))
    }

    fn mac(&self, sku: &str, user_id: &str, expires_at: u64) -> [u8; 32] {
        sale_user_mac(&self.pass, sku, user_id, expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_for_one_shopper_one_sale_until_it_expires() {
        let key = PassKey::new(b"secret");
        let pass = key.sign("sku", "alice", 1_000);
        let header = Some(pass.as_bytes());
        assert!(key.verify("sku", "alice", header, 999));
        assert!(!key.verify("sku", "alice", header, 1_000), "expired");
        assert!(!key.verify("sku", "bob", header, 999));
        assert!(!key.verify("other", "alice", header, 999));
        assert!(!PassKey::new(b"other").verify("sku", "alice", header, 999));
        let stretched = pass.replacen("1000.", "2000.", 1);
        assert!(!key.verify("sku", "alice", Some(stretched.as_bytes()), 999));
        for bad in [&b""[..], b"1000", b"x.y", b"1000.zz"] {
            assert!(!key.verify("sku", "alice", Some(bad), 999));
        }
        assert!(!key.verify("sku", "alice", None, 999));
    }

    #[test]
    fn scores_differ_by_shopper_sale_and_start() {
        let key = PassKey::new(b"secret");
        let score = key.score("sku", "alice", 5);
        assert_eq!(score, key.score("sku", "alice", 5));
        assert_ne!(score, key.score("sku", "bob", 5));
        assert_ne!(score, key.score("other", "alice", 5));
        assert_ne!(score, key.score("sku", "alice", 6));
    }
}

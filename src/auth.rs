//! Who is calling: the admin (a shared bearer token), the payment service (another shared bearer
//! token, optional) or a shopper (a signed, expiring token).
//!
//! Shopper tokens are `<user_id>.<expires_unix_seconds>.<sig>` with
//! `sig = base64url_nopad(HMAC-SHA256(secret, "<user_id>.<expires_unix_seconds>"))`, so any
//! service holding the secret can mint them and no session store is needed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};

use crate::sale::pass::PassKey;
use crate::sale::pow::PowKey;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::payment::Webhook;
use crate::sale::model::is_valid_id;

/// HMAC-SHA256, the MAC of every secret-keyed value the server hands out.
pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Longest shopper-token lifetime accepted unless configured otherwise: one day.
pub const DEFAULT_MAX_TOKEN_TTL_SECS: u64 = 86_400;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal<'a> {
    /// Holder of the admin token.
    Admin,
    /// A shopper, by user id (borrowed from the request: refusing costs no allocation).
    Shopper(&'a str),
    /// Holder of the payment-service token: may confirm payments, nothing else.
    Payment,
}

/// The two secrets and the checks that use them.
#[derive(Clone)]
pub struct Auth {
    admin_token: Box<[u8]>,
    /// HMAC-SHA256 already keyed with the shopper-token secret: each check clones it rather than
    /// hashing the key again (two SHA-256 blocks saved per request).
    keyed: HmacSha256,
    max_token_ttl_secs: u64,
    payment_token: Option<Box<[u8]>>,
    webhook: Option<Webhook>,
    /// Proof-of-work challenges, keyed from the same secret so every node that accepts a
    /// shopper's token also issues and checks the same challenges.
    pow: PowKey,
    /// Waiting-room scores and passes, keyed from the same secret for the same reason.
    passes: PassKey,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

/// HMAC-SHA256 keyed with `secret`.
pub(crate) fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this constructor cannot fail.
    match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

/// `HMAC(sku ‖ 0 ‖ user_id ‖ 0 ‖ number as 8 big-endian bytes)` with the already keyed `mac`: the
/// shape of every per-sale, per-shopper value derived from a secret (proof-of-work challenges,
/// ticket scores, passes). The zero bytes keep `("ab", "c")` and `("a", "bc")` apart.
pub(crate) fn sale_user_mac(mac: &HmacSha256, sku: &str, user_id: &str, number: u64) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(sku.as_bytes());
    mac.update(&[0]);
    mac.update(user_id.as_bytes());
    mac.update(&[0]);
    mac.update(&number.to_be_bytes());
    mac.finalize().into_bytes().into()
}

impl Auth {
    /// Builds the checker from the admin token and the shopper-token secret, accepting shopper
    /// tokens that expire at most [`DEFAULT_MAX_TOKEN_TTL_SECS`] from now.
    pub fn new(admin_token: &str, token_secret: &str) -> Self {
        Self {
            admin_token: admin_token.as_bytes().into(),
            keyed: keyed(token_secret.as_bytes()),
            pow: PowKey::new(token_secret.as_bytes()),
            passes: PassKey::new(token_secret.as_bytes()),
            max_token_ttl_secs: DEFAULT_MAX_TOKEN_TTL_SECS,
            payment_token: None,
            webhook: None,
        }
    }

    /// Lets the holder of `token` confirm payments; without one, no bearer token may.
    pub fn with_payment_token(mut self, token: Option<&str>) -> Self {
        self.payment_token = token.map(|token| token.as_bytes().into());
        self
    }

    /// Accepts payments by the signed webhook checked with `webhook`; without one, the webhook
    /// is off.
    pub fn with_webhook(mut self, webhook: Option<Webhook>) -> Self {
        self.webhook = webhook;
        self
    }

    /// The webhook's checker, when the webhook is on.
    pub fn webhook(&self) -> Option<&Webhook> {
        self.webhook.as_ref()
    }

    /// Accepts shopper tokens that expire at most `secs` from the time they are checked.
    pub fn with_max_token_ttl(mut self, secs: u64) -> Self {
        self.max_token_ttl_secs = secs;
        self
    }

    /// Authenticates an `Authorization` header value at `now_secs`; `None` means 401. The scheme
    /// is matched case-insensitively (RFC 7235 section 2.1).
    pub fn authenticate<'a>(
        &self,
        authorization: Option<&'a [u8]>,
        now_secs: u64,
    ) -> Option<Principal<'a>> {
        let value = authorization?;
        let space = value.iter().position(|b| *b == b' ')?;
        let (scheme, token) = value.split_at(space);
        if !scheme.eq_ignore_ascii_case(b"Bearer") {
            return None;
        }
        let token = token.trim_ascii();
        if token.is_empty() {
            return None;
        }
        if bool::from(token.ct_eq(&self.admin_token)) {
            return Some(Principal::Admin);
        }
        if let Some(payment) = &self.payment_token {
            if bool::from(token.ct_eq(payment)) {
                return Some(Principal::Payment);
            }
        }
        self.verify_shopper(token, now_secs).map(Principal::Shopper)
    }

    /// The proof-of-work challenges derived from the shopper-token secret.
    pub fn pow(&self) -> &PowKey {
        &self.pow
    }

    /// The waiting-room scores and passes derived from the shopper-token secret.
    pub fn passes(&self) -> &PassKey {
        &self.passes
    }

    /// Mints a shopper token for `user_id` valid until `expires_secs`.
    pub fn mint(&self, user_id: &str, expires_secs: u64) -> String {
        let payload = format!("{user_id}.{expires_secs}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(payload.as_bytes()).finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    fn mac(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(payload);
        mac
    }

    fn verify_shopper<'a>(&self, token: &'a [u8], now_secs: u64) -> Option<&'a str> {
        let token = std::str::from_utf8(token).ok()?;
        let (payload, sig) = token.rsplit_once('.')?;
        let (user_id, expires) = payload.split_once('.')?;
        if !is_valid_id(user_id)
            || expires.is_empty()
            || !expires.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let expires: u64 = expires.parse().ok()?;
        if expires <= now_secs || expires - now_secs > self.max_token_ttl_secs {
            return None;
        }
        let mut decoded = [0u8; 32];
        let len = URL_SAFE_NO_PAD.decode_slice(sig, &mut decoded).ok()?;
        self.mac(payload.as_bytes())
            .verify_slice(&decoded[..len])
            .ok()?;
        Some(user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shopper_tokens_verify_and_expire() {
        let auth = Auth::new("admin-secret", "hmac-secret");
        let token = auth.mint("alice", 2_000);
        let header = format!("Bearer {token}");
        let who = auth.authenticate(Some(header.as_bytes()), 1_000);
        assert_eq!(who, Some(Principal::Shopper("alice")));
        assert_eq!(auth.authenticate(Some(header.as_bytes()), 2_000), None);
        let other = Auth::new("admin-secret", "another-secret");
        assert_eq!(other.authenticate(Some(header.as_bytes()), 1_000), None);
        let forged = header.replace("alice", "mallory");
        assert_eq!(auth.authenticate(Some(forged.as_bytes()), 1_000), None);
        assert_eq!(
            auth.authenticate(Some(b"Bearer admin-secret"), 1_000),
            Some(Principal::Admin)
        );
        assert_eq!(auth.authenticate(Some(b"Bearer admin-secre"), 1_000), None);
        assert_eq!(auth.authenticate(None, 1_000), None);
        assert_eq!(auth.authenticate(Some(b"Basic abc"), 1_000), None);
    }

    #[test]
    fn the_payment_token_is_its_own_principal_and_off_by_default() {
        let header = Some(&b"Bearer payment-secret-0123"[..]);
        assert_eq!(
            Auth::new("admin-secret", "hmac").authenticate(header, 1),
            None
        );
        let auth =
            Auth::new("admin-secret", "hmac").with_payment_token(Some("payment-secret-0123"));
        assert_eq!(auth.authenticate(header, 1), Some(Principal::Payment));
        let admin = auth.authenticate(Some(b"Bearer admin-secret"), 1);
        assert_eq!(admin, Some(Principal::Admin));
    }

    #[test]
    fn the_scheme_is_case_insensitive() {
        let auth = Auth::new("admin-secret", "hmac-secret");
        for header in [
            &b"bearer admin-secret"[..],
            b"BEARER admin-secret",
            b"bEaReR  admin-secret",
        ] {
            assert_eq!(auth.authenticate(Some(header), 1), Some(Principal::Admin));
        }
        for header in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearers admin-secret",
            b"Bear admin-secret",
        ] {
            assert_eq!(auth.authenticate(Some(header), 1), None, "{header:?}");
        }
    }

    #[test]
    fn tokens_beyond_the_maximum_lifetime_are_refused() {
        let auth = Auth::new("admin-secret", "hmac-secret").with_max_token_ttl(600);
        let now = 1_000_000;
        let ok = format!("Bearer {}", auth.mint("alice", now + 600));
        let too_long = format!("Bearer {}", auth.mint("alice", now + 601));
        assert!(auth.authenticate(Some(ok.as_bytes()), now).is_some());
        assert_eq!(auth.authenticate(Some(too_long.as_bytes()), now), None);
        let far = format!("Bearer {}", auth.mint("alice", u64::MAX));
        assert_eq!(auth.authenticate(Some(far.as_bytes()), now), None);
    }
}

//! Who may confirm a payment: the payment service, by its bearer credential, or the payment
//! provider's signed webhook.
//!
//! The webhook follows the convention of the established providers (Stripe's
//! `Stripe-Signature`): the header `Seckill-Signature: t=<unix seconds>,v1=<hex>` carries
//! `hex(HMAC-SHA256(secret, "<t>.<raw body>"))`. Signing the timestamp with the body means a
//! captured request cannot be replayed once the tolerance window has passed, nor re-dated
//! without the secret; a replay inside the window pays with the same `payment_ref`, which is
//! answered the same and changes nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Default for how far a webhook's timestamp may be from now: five minutes, as Stripe's.
pub const DEFAULT_WEBHOOK_TOLERANCE_SECS: u64 = 300;

/// Most `v1=` signatures one header may carry (providers send several while rotating secrets).
const MAX_SIGNATURES: usize = 4;

/// The webhook's secret and tolerance.
#[derive(Clone)]
pub struct Webhook {
    secret: Box<[u8]>,
    tolerance_secs: u64,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhook { .. }")
    }
}

/// Why a webhook's signature was refused; each is answered with its own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `Seckill-Signature` header.
    #[error("the Seckill-Signature header is missing")]
    Missing,
    /// The header is not `t=<secs>,v1=<hex>`.
    #[error("the Seckill-Signature header must be t=<unix seconds>,v1=<hex hmac-sha256>")]
    Malformed,
    /// The timestamp is outside the tolerance window.
    #[error("the signature's timestamp is outside the tolerance window")]
    Stale,
    /// No signature matches.
    #[error("the signature does not match")]
    Mismatch,
}

impl SignatureError {
    /// The HTTP status: a header that cannot be read is a bad request, one that does not prove
    /// the sender is unauthenticated.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::Missing | Self::Stale | Self::Mismatch => 401,
        }
    }

    /// The stable `error` code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "signature_missing",
            Self::Malformed => "signature_malformed",
            Self::Stale => "signature_stale",
            Self::Mismatch => "signature_mismatch",
        }
    }
}

impl Webhook {
    /// A webhook checked with `secret`, accepting timestamps at most `tolerance_secs` away.
    pub fn new(secret: &str, tolerance_secs: u64) -> Self {
        Self {
            secret: secret.as_bytes().into(),
            tolerance_secs,
        }
    }

    fn mac(&self, timestamp: &[u8], body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this constructor cannot fail.
        let mut mac = match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(timestamp);
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The header value a provider would send for `body` at `timestamp` (for tests and tools).
    pub fn sign(&self, timestamp: u64, body: &[u8]) -> String {
        let t = timestamp.to_string();
        let tag = self.mac(t.as_bytes(), body).finalize().into_bytes();
        format!("t={t},v1={}", hex(&tag))
    }

    /// Checks `header` against `body` at `now_secs`; the comparison is constant-time.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        body: &[u8],
        now_secs: u64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let mut timestamp = None;
        let mut signatures: Vec<[u8; 32]> = Vec::new();
        for part in header.split(|b| *b == b',') {
            let part = part.trim_ascii();
            if let Some(t) = part.strip_prefix(b"t=") {
                if timestamp.replace(t).is_some() {
                    return Err(SignatureError::Malformed);
                }
            } else if let Some(v1) = part.strip_prefix(b"v1=") {
                if signatures.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(unhex(v1).ok_or(SignatureError::Malformed)?);
            }
            // Other schemes (v0=, future versions) are ignored, as providers document.
        }
        let t = timestamp.ok_or(SignatureError::Malformed)?;
        if t.is_empty() || t.len() > 19 || !t.iter().all(u8::is_ascii_digit) {
            return Err(SignatureError::Malformed);
        }
        if signatures.is_empty() {
            return Err(SignatureError::Malformed);
        }
        let secs: u64 = std::str::from_utf8(t)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(SignatureError::Malformed)?;
        if secs.abs_diff(now_secs) > self.tolerance_secs {
            return Err(SignatureError::Stale);
        }
        let expected = self.mac(t, body);
        // verify_slice compares in constant time.
        let matched = signatures
            .iter()
            .any(|signature| expected.clone().verify_slice(signature).is_ok());
        if matched {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *slot = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_expire_and_bind_the_body() {
        let hook = Webhook::new("whsec-0123456789abcdef", 300);
        let body = br#"{"order_id":"x","amount":1,"payment_ref":"p"}"#;
        let header = hook.sign(1_000, body);
        assert_eq!(hook.verify(Some(header.as_bytes()), body, 1_000), Ok(()));
        assert_eq!(hook.verify(Some(header.as_bytes()), body, 1_300), Ok(()));
        assert_eq!(hook.verify(Some(header.as_bytes()), body, 700), Ok(()));
        let late = hook.verify(Some(header.as_bytes()), body, 1_301);
        assert_eq!(late, Err(SignatureError::Stale));
        let other = hook.verify(Some(header.as_bytes()), b"{}", 1_000);
        assert_eq!(other, Err(SignatureError::Mismatch));
        let redated = header.replace("t=1000", "t=1001");
        let redated = hook.verify(Some(redated.as_bytes()), body, 1_000);
        assert_eq!(redated, Err(SignatureError::Mismatch));
        let wrong_key = Webhook::new("another-secret-0123", 300).sign(1_000, body);
        let wrong = hook.verify(Some(wrong_key.as_bytes()), body, 1_000);
        assert_eq!(wrong, Err(SignatureError::Mismatch));
        assert_eq!(hook.verify(None, body, 1_000), Err(SignatureError::Missing));
        for bad in [
            "",
            "t=1000",
            "v1=00",
            "t=x,v1=00",
            "t=1000,v1=zz",
            "t=1,t=2,v1=00",
        ] {
            let got = hook.verify(Some(bad.as_bytes()), body, 1_000);
            assert_eq!(got, Err(SignatureError::Malformed), "{bad:?}");
        }
        // A second, rotated-out signature alongside the right one still verifies.
        let two = format!("{header},v1={}", "0".repeat(64));
        assert_eq!(hook.verify(Some(two.as_bytes()), body, 1_000), Ok(()));
    }
}

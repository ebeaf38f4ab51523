//! `seckill lottery verify`: recomputes a lottery's draw from what the node publishes, so that
//! anyone, not only its operator, can check it.
//!
//! It reads `GET /v1/sales/{sku}/lottery` (the commitment and, once drawn, the seed) and every
//! page of `GET /v1/sales/{sku}/lottery/registrants`, then checks that the seed hashes to the
//! commitment, that the list has no repeats and as many names as registrations were counted,
//! and that ordering the list by [`draw_order`] gives exactly the published order, whose first
//! `winners` won.

use simd_json::prelude::*;
use simd_json::OwnedValue;

use crate::export::{get, ExportError};
use crate::sale::lottery::{commitment, draw_order};
use crate::sale::queue::MAX_REGISTRANTS_PAGE;

/// What a verified draw comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Registrants.
    pub registrants: u64,
    /// Winners: the first this many in drawn order.
    pub winners: u64,
    /// The winners' user ids, in drawn order.
    pub winner_ids: Vec<String>,
}

/// Why a draw did not verify, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The node could not be read.
    #[error(transparent)]
    Read(#[from] ExportError),
    /// The node answered something unexpected.
    #[error("{0}")]
    Malformed(String),
    /// The draw has not been made, so there is no seed to check yet.
    #[error("the lottery has not been drawn yet (the seed is revealed at its start)")]
    NotDrawn,
    /// What was published does not add up: the draw is not the one committed to.
    #[error("the draw does not verify: {0}")]
    Mismatch(String),
}

/// Verifies the lottery of `sku` on the node at `addr`.
pub fn verify(addr: &str, sku: &str) -> Result<Verified, VerifyError> {
    let record = read(addr, &format!("/v1/sales/{sku}/lottery"))?;
    let field = |name: &str| {
        record
            .get(name)
            .ok_or_else(|| VerifyError::Malformed(format!("the lottery has no `{name}`")))
    };
    let Some(seed_hex) = field("seed")?.as_str() else {
        return Err(VerifyError::NotDrawn);
    };
    let mut seed = [0u8; 32];
    hex::decode_to_slice(seed_hex, &mut seed)
        .map_err(|_| VerifyError::Malformed("the seed is not 64 hex digits".into()))?;
    let committed = field("commitment")?.as_str().unwrap_or_default();
    if hex::encode(commitment(&seed)) != committed {
        return Err(VerifyError::Mismatch(format!(
            "SHA-256 of the seed is {}, the commitment was {committed}",
            hex::encode(commitment(&seed))
        )));
    }
    let (total, winners) = (count(field("registrants")?)?, count(field("winners")?)?);
    let published = registrants(addr, sku)?;
    if published.len() as u64 != total {
        return Err(VerifyError::Mismatch(format!(
            "{total} registrations were counted but {} are listed",
            published.len()
        )));
    }
    let mut unique: Vec<&str> = published.iter().map(String::as_str).collect();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != published.len() {
        return Err(VerifyError::Mismatch("a registrant is listed twice".into()));
    }
    let recomputed = draw_order(&seed, published.iter().map(String::as_str));
    if let Some(at) = recomputed
        .iter()
        .zip(&published)
        .position(|(ours, theirs)| *ours != theirs.as_str())
    {
        return Err(VerifyError::Mismatch(format!(
            "place {}: the seed draws {}, the node lists {}",
            at + 1,
            recomputed[at],
            published[at]
        )));
    }
    let winner_ids = published
        .iter()
        .take(usize::try_from(winners).unwrap_or(usize::MAX))
        .cloned()
        .collect();
    Ok(Verified {
        registrants: total,
        winners: winners.min(total),
        winner_ids,
    })
}

/// Every registrant, in the published order.
fn registrants(addr: &str, sku: &str) -> Result<Vec<String>, VerifyError> {
    let mut all = Vec::new();
    let mut offset = 0u64;
    loop {
        let path = format!(
            "/v1/sales/{sku}/lottery/registrants?offset={offset}&limit={MAX_REGISTRANTS_PAGE}"
        );
        let page = read(addr, &path)?;
        let names = page
            .get("registrants")
            .and_then(|list| list.as_array())
            .ok_or_else(|| VerifyError::Malformed("a page has no `registrants`".into()))?;
        for name in names {
            let name = name
                .as_str()
                .ok_or_else(|| VerifyError::Malformed("a registrant is not a string".into()))?;
            all.push(name.to_owned());
        }
        match page.get("next").and_then(|next| next.as_u64()) {
            Some(next) if next > offset => offset = next,
            Some(_) => return Err(VerifyError::Malformed("`next` did not move".into())),
            None => return Ok(all),
        }
    }
}

fn read(addr: &str, path: &str) -> Result<OwnedValue, VerifyError> {
    let mut body = get(addr, path, None)?;
    simd_json::to_owned_value(&mut body)
        .map_err(|error| VerifyError::Malformed(format!("{path}: not JSON: {error}")))
}

fn count(value: &OwnedValue) -> Result<u64, VerifyError> {
    value
        .as_u64()
        .ok_or_else(|| VerifyError::Malformed("a count is not a number".into()))
}

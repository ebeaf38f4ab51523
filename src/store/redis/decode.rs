//! Reading script replies: sales, orders and refusal codes out of Redis values.
//!
//! Orders are stored as JSON and parsed through [`crate::json`], whose shape check keeps a
//! corrupted or hostile value from overflowing a shard's stack.

use fred::types::Value;

use super::RedisError;
use crate::sale::command::StockLevel;
use crate::sale::model::{default_currency, is_valid_currency, Admission};
use crate::sale::{Order, Sale, SaleError};

/// The sale and level from a `SYNC` reply; `None` for an unknown SKU.
pub(super) fn decode_sale(
    sku: &str,
    reply: Value,
) -> Result<Option<(Sale, StockLevel)>, RedisError> {
    let fields = reply.into_array();
    if fields.is_empty() {
        return Ok(None);
    }
    let name = str_at(&fields, 0).map_err(|_| RedisError::Reply("sale name".into()))?;
    let int =
        |index| int_at(&fields, index).map_err(|_| RedisError::Reply(format!("field {index}")));
    let extras = extras_at(&fields, 19)?;
    let sale = Sale {
        sku: sku.into(),
        name: name.into(),
        stock: int(1)?,
        starts_at: int(2)?,
        ends_at: int(3)?,
        per_user_limit: u32::try_from(int(4)?).unwrap_or(u32::MAX),
        payment_timeout_ms: int(5)?,
        rate_limit_per_sec: u32::try_from(int(6)?).unwrap_or(u32::MAX),
        // A sale written before prices has neither: free, in the default currency.
        price: int_at(&fields, 12).unwrap_or(0),
        currency: str_at(&fields, 13)
            .ok()
            .filter(|code| is_valid_currency(code))
            .map_or_else(default_currency, Into::into),
        // A sale written before buckets has one.
        stock_buckets: int_at(&fields, 18)
            .ok()
            .and_then(|k| u32::try_from(k).ok())
            .filter(|k| (1..=crate::sale::model::MAX_STOCK_BUCKETS).contains(k))
            .unwrap_or(1),
        pow_bits: extras.pow_bits,
        admission: extras.admission,
        queue_opens_at: extras.queue_opens_at,
        admission_rate: extras.admission_rate,
        register_from: extras.register_from,
        overbooking_percent: extras.overbooking_percent,
    };
    let level = StockLevel {
        remaining: int(7)?,
        seq: int(8)?,
    };
    Ok(Some((sale, level)))
}

/// Sale fields newer than the positional ones, read from the definition JSON the sale's hash
/// keeps (`def`): a field added later needs no new position in every script that reads a sale,
/// and a sale written before it was kept (or before the field existed) gets the defaults.
#[derive(Debug, Default, serde::Deserialize)]
struct SaleExtras {
    /// See [`Sale::pow_bits`].
    #[serde(default)]
    pow_bits: u8,
    /// See [`Sale::admission`].
    #[serde(default)]
    admission: Admission,
    /// See [`Sale::queue_opens_at`].
    #[serde(default)]
    queue_opens_at: u64,
    /// See [`Sale::admission_rate`].
    #[serde(default)]
    admission_rate: u32,
    /// See [`Sale::register_from`].
    #[serde(default)]
    register_from: u64,
    /// See [`Sale::overbooking_percent`].
    #[serde(default)]
    overbooking_percent: u32,
}

/// The extras at `index`: defaults when the sale predates them, an error when they are there but
/// damaged (a sale must not quietly lose its proof-of-work).
fn extras_at(fields: &[Value], index: usize) -> Result<SaleExtras, RedisError> {
    let json = str_at(fields, index).unwrap_or_default();
    if json.is_empty() {
        return Ok(SaleExtras::default());
    }
    let extras = crate::json::parse::<SaleExtras>(json.as_bytes())
        .map_err(|error| RedisError::Reply(format!("sale definition: {error}")))?;
    Ok(SaleExtras {
        pow_bits: extras.pow_bits.min(crate::sale::pow::MAX_POW_BITS),
        ..extras
    })
}

pub(super) fn decode_order(json: &str) -> Result<Order, SaleError> {
    crate::json::parse::<Order>(json.as_bytes()).map_err(|error| {
        tracing::error!(%error, "an order in redis does not decode");
        SaleError::Unavailable
    })
}

pub(super) fn str_at(fields: &[Value], index: usize) -> Result<String, SaleError> {
    fields
        .get(index)
        .and_then(Value::as_string)
        .ok_or(SaleError::Unavailable)
}

pub(super) fn int_at(fields: &[Value], index: usize) -> Result<u64, SaleError> {
    fields
        .get(index)
        .and_then(Value::as_i64)
        .and_then(|value| u64::try_from(value).ok())
        .ok_or(SaleError::Unavailable)
}

pub(super) fn refusal_at(fields: &[Value], index: usize) -> SaleError {
    let code = fields.get(index).and_then(Value::as_string);
    SaleError::ALL
        .iter()
        .copied()
        .find(|refusal| Some(refusal.code()) == code.as_deref())
        .unwrap_or(SaleError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deeply_nested_orders_are_refused_not_followed() {
        for nested in [
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!(
                "{{\"user_id\":{}1{}}}",
                "{\"a\":".repeat(100_000),
                "}".repeat(100_000)
            ),
        ] {
            assert_eq!(decode_order(&nested).unwrap_err(), SaleError::Unavailable);
        }
    }
}

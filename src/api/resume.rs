//! `POST /v1/sales/{sku}/resume` (admin): the operator's decision to let a SKU whose shared store
//! regressed (lost acknowledged writes) sell again, answered with the report of what was lost.

use super::body::json_fields;
use super::error::ApiError;
use super::Api;
use crate::http::{Request, Response};
use crate::sale::command::{Command, Outcome};
use crate::sale::model::is_valid_id;
use crate::sale::SaleError;
use crate::store::Store;

/// Most units a resumed sale may be given; the same bound as a sale's stock.
const MAX_REMAINING: u64 = 1_000_000_000;

/// Optional body `{"remaining": N}`: the units left to sell (the store clamps it to the stock).
/// Without it, the lower of the store's remaining stock and the newest a node saw.
pub(super) async fn resume<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
) -> Result<Response, ApiError> {
    api.admin(request)?;
    if !is_valid_id(sku) {
        return Err(SaleError::UnknownSale.into());
    }
    let mut fields = json_fields(request)?;
    let remaining = fields.u64("remaining", 0..=MAX_REMAINING)?;
    fields.finish()?;
    match api
        .shard
        .call(Command::Resume(sku.into(), remaining))
        .await?
    {
        // The report is JSON the store's script encoded.
        Outcome::Resumed(report) => Ok(Response::json(200, report.into_string().into_bytes())),
        _ => Err(SaleError::Unavailable.into()),
    }
}

//! A lottery's public record: `GET /v1/sales/{sku}/lottery` (the commitment, then the seed, and
//! the counts) and `GET /v1/sales/{sku}/lottery/registrants` (everyone who registered, in drawn
//! order, once drawn). With both, anyone can recompute the draw (`seckill lottery verify`).

use serde::Serialize;

use super::error::ApiError;
use super::{json, query, Api};
use crate::http::{Request, Response};
use crate::sale::command::{Command, Outcome};
use crate::sale::lottery::{commitment, winners};
use crate::sale::model::Admission;
use crate::sale::queue::MAX_REGISTRANTS_PAGE;
use crate::sale::{SaleError, SaleView};
use crate::store::Store;

/// Registrants a page lists unless asked for fewer.
const DEFAULT_PAGE: usize = 1_000;

/// `GET /v1/sales/{sku}/lottery`'s body.
#[derive(Debug, Serialize)]
struct LotteryBody<'a> {
    sku: &'a str,
    /// `SHA-256(seed)`, hex: published from the sale's creation.
    commitment: String,
    /// The seed, hex, once the draw is made (at `starts_at`); null before.
    seed: Option<String>,
    register_from: u64,
    starts_at: u64,
    /// Whether the draw has been made.
    drawn: bool,
    /// Registrations made.
    registrants: u64,
    /// How many registrants win (see `overbooking_percent`).
    winners: u64,
}

/// `GET /v1/sales/{sku}/lottery/registrants`'s body.
#[derive(Debug, Serialize)]
struct RegistrantsBody<'a> {
    sku: &'a str,
    /// Registrations made.
    total: u64,
    /// The first this many of the whole list win.
    winners: u64,
    /// Where this page starts in the drawn order.
    offset: u64,
    /// Shoppers in drawn order.
    registrants: Vec<Box<str>>,
    /// The `offset` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<u64>,
}

/// `GET /v1/sales/{sku}/lottery` (no credentials)
pub(super) async fn record<S: Store + 'static>(
    api: &Api<S>,
    sku: &str,
) -> Result<Response, ApiError> {
    let sale = lottery_sale(api, sku).await?;
    let (total, drawn, _) = registrants(api, sku, 0, 0).await?;
    let seed = api
        .auth
        .passes()
        .lottery_seed(sku, sale.register_from, sale.starts_at);
    json(
        200,
        &LotteryBody {
            sku,
            commitment: hex::encode(commitment(&seed)),
            seed: drawn.then(|| hex::encode(seed)),
            register_from: sale.register_from,
            starts_at: sale.starts_at,
            drawn,
            registrants: total,
            winners: winners_of(&sale),
        },
    )
}

/// `GET /v1/sales/{sku}/lottery/registrants?offset=<n>&limit=<n>` (no credentials)
pub(super) async fn list<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
) -> Result<Response, ApiError> {
    let [offset, limit] = query::params(
        request.query,
        ["offset", "limit"],
        "`GET /v1/sales/{sku}/lottery/registrants` takes `offset` and `limit`",
    )?;
    let limit = query::limit(limit, MAX_REGISTRANTS_PAGE as usize, DEFAULT_PAGE)? as u64;
    let offset = query::offset(offset)?;
    // A page is up to 10,000 names built by the sale's owner, for anyone: bounded like the
    // sale listing's pages, with the same budget.
    let _page = api.pages.start()?;
    let sale = lottery_sale(api, sku).await?;
    let (total, drawn, users) = registrants(api, sku, offset, limit).await?;
    if !drawn {
        return Err(SaleError::NotDrawn.into());
    }
    let end = offset.saturating_add(users.len() as u64);
    json(
        200,
        &RegistrantsBody {
            sku,
            total,
            winners: winners_of(&sale),
            offset,
            registrants: users,
            next: (end < total).then_some(end),
        },
    )
}

fn winners_of(sale: &SaleView) -> u64 {
    winners(sale.stock, sale.per_user_limit, sale.overbooking_percent)
}

/// The sale, if it is a lottery.
async fn lottery_sale<S: Store + 'static>(api: &Api<S>, sku: &str) -> Result<SaleView, ApiError> {
    let view = super::sales::view_of(api, sku).await?;
    if view.admission != Admission::Lottery {
        return Err(SaleError::NoLottery.into());
    }
    Ok(view)
}

async fn registrants<S: Store + 'static>(
    api: &Api<S>,
    sku: &str,
    offset: u64,
    limit: u64,
) -> Result<(u64, bool, Vec<Box<str>>), ApiError> {
    let command = Command::Registrants {
        sku: sku.into(),
        offset,
        limit,
    };
    match api.shard.call(command).await? {
        Outcome::Registrants {
            total,
            drawn,
            users,
        } => Ok((total, drawn, users)),
        _ => Err(SaleError::Unavailable.into()),
    }
}

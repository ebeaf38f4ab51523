//! The waiting room's and the lottery's commands in cluster mode: one Redis script each
//! ([`super::scripts::JOIN`], [`super::scripts::TICKET`], [`super::scripts::REGISTRANTS`]),
//! whose placement the node turns into the same [`TicketView`] the embedded store gives.
//!
//! [`TicketView`]: crate::sale::waiting_room::TicketView

use std::cell::Cell;

use fred::types::Value;

use super::decode::{int_at, refusal_at, str_at};
use super::RedisStore;
use crate::sale::command::{Outcome, QueueJoin, Reply};
use crate::sale::lottery::{self, Draw, MAX_OVERBOOKING_PERCENT};
use crate::sale::queue::{Terms, MAX_REGISTRANTS_PAGE};
use crate::sale::waiting_room::{Placement, Schedule, MAX_TICKETS_PER_SALE};

impl RedisStore {
    /// Issues a ticket (a registration, in a lottery), or answers with the one the shopper
    /// holds.
    pub(super) async fn join_queue(&self, join: QueueJoin) -> Reply {
        let args = vec![
            join.user_id.to_string(),
            // 52 bits: exact as a zset score.
            join.score.to_string(),
            MAX_TICKETS_PER_SALE.to_string(),
        ];
        let reply = self
            .acknowledged_script(&self.0.scripts.join, &join.sku, args, &Cell::new(false))
            .await?;
        placement(reply)
    }

    /// Ticket `number` of `sku` if `user_id` holds it, or with no number the one they hold.
    pub(super) async fn get_ticket(&self, sku: &str, user_id: &str, number: Option<u64>) -> Reply {
        let number = number.map(|n| n.to_string()).unwrap_or_default();
        let args = vec![user_id.to_owned(), number];
        let reply = self.script(&self.0.scripts.ticket, sku, args).await?;
        placement(reply)
    }

    /// A page of the lottery of `sku`'s registrants in drawn order.
    pub(super) async fn registrants(&self, sku: &str, offset: u64, limit: u64) -> Reply {
        let args = vec![
            offset.to_string(),
            limit.min(MAX_REGISTRANTS_PAGE).to_string(),
        ];
        let fields = self
            .script(&self.0.scripts.registrants, sku, args)
            .await?
            .into_array();
        if fields.first().and_then(Value::as_str).as_deref() != Some("ok") {
            return Err(refusal_at(&fields, 1));
        }
        let users = (3..fields.len())
            .map(|index| str_at(&fields, index).map(Box::from))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Outcome::Registrants {
            total: int_at(&fields, 1)?,
            drawn: int_at(&fields, 2)? == 1,
            users,
        })
    }
}

/// The ticket a script's reply describes, or its refusal.
fn placement(reply: Value) -> Reply {
    let fields = reply.into_array();
    if fields.first().and_then(Value::as_str).as_deref() != Some("ok") {
        return Err(refusal_at(&fields, 1));
    }
    let int = |index| int_at(&fields, index);
    // -1 (before the start) does not read as a u64: no place yet.
    let line = int(4).ok();
    let slot = int(5).ok();
    let placement = Placement {
        number: int(2)?,
        issued_at: int(3)?,
        place: line.zip(slot),
    };
    let (remaining, now, starts_at, ends_at) = (int(6)?, int(7)?, int(8)?, int(9)?);
    let terms = if str_at(&fields, 11).ok().as_deref() == Some("lottery") {
        Terms::Lottery(Draw {
            starts_at,
            ends_at,
            winners: lottery::winners(
                int(12)?,
                u32::try_from(int(13)?).unwrap_or(u32::MAX),
                u32::try_from(int(14)?).unwrap_or(MAX_OVERBOOKING_PERCENT),
            ),
        })
    } else {
        Terms::Queue(Schedule {
            starts_at,
            ends_at,
            admission_rate: u32::try_from(int(10)?).unwrap_or(u32::MAX),
        })
    };
    Ok(Outcome::Ticket {
        ticket: terms.view(placement, remaining, now),
        issued: int(1)? == 1,
    })
}

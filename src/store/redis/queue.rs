//! The waiting room's commands in cluster mode: one Redis script each
//! ([`super::scripts::JOIN`], [`super::scripts::TICKET`]), whose placement the node turns into
//! the same [`TicketView`] the embedded store gives.

use std::cell::Cell;

use fred::types::Value;

use super::decode::{int_at, refusal_at};
use super::RedisStore;
use crate::sale::command::{Outcome, QueueJoin, Reply};
use crate::sale::waiting_room::{view, Placement, Schedule, MAX_TICKETS_PER_SALE};

impl RedisStore {
    /// Issues a ticket, or answers with the one the shopper holds.
    pub(super) async fn join_queue(&self, join: QueueJoin) -> Reply {
        // A zset score is a double: the top 52 bits of the score are exact in one.
        let score = join.score >> 12;
        let args = vec![
            join.user_id.to_string(),
            score.to_string(),
            MAX_TICKETS_PER_SALE.to_string(),
        ];
        let reply = self
            .acknowledged_script(&self.0.scripts.join, &join.sku, args, &Cell::new(false))
            .await?;
        placement(reply)
    }

    /// Ticket `number` of `sku`, if `user_id` holds it.
    pub(super) async fn get_ticket(&self, sku: &str, user_id: &str, number: u64) -> Reply {
        let args = vec![user_id.to_owned(), number.to_string()];
        let reply = self.script(&self.0.scripts.ticket, sku, args).await?;
        placement(reply)
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
    let schedule = Schedule {
        starts_at: int(8)?,
        ends_at: int(9)?,
        admission_rate: u32::try_from(int(10)?).unwrap_or(u32::MAX),
    };
    let ticket = view(placement, &schedule, int(6)?, int(7)?);
    Ok(Outcome::Ticket {
        ticket,
        issued: int(1)? == 1,
    })
}

//! The owner's side of a sale's waiting room: joining it and reading a ticket
//! ([`super::waiting_room`] has the rules).

use super::book::Book;
use super::command::{Event, Outcome, QueueJoin, Reply};
use super::model::Admission;
use super::waiting_room::{view, Schedule, MAX_TICKETS_PER_SALE};
use super::SaleError;

impl Book {
    /// Issues `join.user_id` a ticket, or answers with the one they hold.
    pub(super) fn join_queue(&mut self, join: QueueJoin, now_ms: u64) -> (Reply, Option<Event>) {
        let Some(ledger) = self.sales.get_mut(&*join.sku) else {
            return (Err(SaleError::UnknownSale), None);
        };
        let sale = &ledger.sale;
        if sale.admission != Admission::WaitingRoom {
            return (Err(SaleError::NoWaitingRoom), None);
        }
        if let Some(number) = ledger.room.ticket_of(&join.user_id) {
            ledger.room.draw(sale, now_ms);
            let ticket = ledger
                .room
                .placement(number, &join.user_id)
                .map(|placement| view(placement, &Schedule::of(sale), ledger.remaining, now_ms));
            return match ticket {
                Some(ticket) => (
                    Ok(Outcome::Ticket {
                        ticket,
                        issued: false,
                    }),
                    None,
                ),
                None => (Err(SaleError::Unavailable), None),
            };
        }
        let refusal = if now_ms < sale.queue_opens_at {
            Some(SaleError::QueueNotOpen)
        } else if sale.has_ended(now_ms) {
            Some(SaleError::Ended)
        } else if self.blocked.contains(&*join.user_id) {
            Some(SaleError::Blocked)
        } else if ledger.remaining == 0 {
            Some(SaleError::SoldOut)
        } else if ledger.room.len() >= MAX_TICKETS_PER_SALE {
            Some(SaleError::QueueFull)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return (Err(refusal), None);
        }
        let event = Event::TicketIssued {
            sku: join.sku.clone(),
            user_id: join.user_id.clone(),
            issued_at: now_ms,
            score: join.score,
        };
        self.apply(&event);
        let reply = self
            .sales
            .get(&*join.sku)
            .and_then(|ledger| {
                let number = ledger.room.ticket_of(&join.user_id)?;
                let placement = ledger.room.placement(number, &join.user_id)?;
                Some(view(
                    placement,
                    &Schedule::of(&ledger.sale),
                    ledger.remaining,
                    now_ms,
                ))
            })
            .map(|ticket| Outcome::Ticket {
                ticket,
                issued: true,
            })
            .ok_or(SaleError::Unavailable);
        (reply, Some(event))
    }

    /// Ticket `number` of the sale of `sku`, if `user_id` holds it.
    pub(super) fn ticket(&mut self, sku: &str, user_id: &str, number: u64, now_ms: u64) -> Reply {
        let ledger = self.sales.get_mut(sku).ok_or(SaleError::UnknownSale)?;
        if ledger.sale.admission != Admission::WaitingRoom {
            return Err(SaleError::NoWaitingRoom);
        }
        ledger.room.draw(&ledger.sale, now_ms);
        let placement = ledger
            .room
            .placement(number, user_id)
            .ok_or(SaleError::UnknownTicket)?;
        Ok(Outcome::Ticket {
            ticket: view(
                placement,
                &Schedule::of(&ledger.sale),
                ledger.remaining,
                now_ms,
            ),
            issued: false,
        })
    }
}

//! The owner's side of a sale's waiting room or lottery: joining (registering), reading a
//! ticket (a registration), and the lottery's registrant list. [`super::waiting_room`] and
//! [`super::lottery`] have the rules; both keep their tickets in a [`WaitingRoom`].
//!
//! [`WaitingRoom`]: super::waiting_room::WaitingRoom

use super::book::{Book, SaleLedger};
use super::command::{Event, Outcome, QueueJoin, Reply};
use super::lottery::{self, Draw};
use super::model::{Admission, Sale};
use super::waiting_room::{self, Placement, Schedule, TicketView, MAX_TICKETS_PER_SALE};
use super::SaleError;

/// Most registrants one page lists.
pub const MAX_REGISTRANTS_PAGE: u64 = 10_000;

/// What a ticket's state depends on of its sale, by the sale's mode: both stores read it from
/// the definition and answer through [`Terms::view`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terms {
    /// A waiting room's admission schedule.
    Queue(Schedule),
    /// A lottery's draw.
    Lottery(Draw),
}

impl Terms {
    /// The terms of `sale` (a first-come-first-served sale has none: it reads as a queue).
    pub fn of(sale: &Sale) -> Self {
        match sale.admission {
            Admission::Lottery => Terms::Lottery(Draw {
                starts_at: sale.starts_at,
                ends_at: sale.ends_at,
                winners: lottery::winners(
                    sale.stock,
                    sale.per_user_limit,
                    sale.overbooking_percent,
                ),
            }),
            _ => Terms::Queue(Schedule::of(sale)),
        }
    }

    /// Where `placement` stands at `now_ms` with `remaining` units left.
    pub fn view(&self, placement: Placement, remaining: u64, now_ms: u64) -> TicketView {
        match self {
            Terms::Queue(schedule) => waiting_room::view(placement, schedule, remaining, now_ms),
            Terms::Lottery(draw) => lottery::view(placement, draw, remaining, now_ms),
        }
    }
}

impl SaleLedger {
    /// The view of `placement` in this sale's mode.
    fn ticket_view(&self, placement: Placement, now_ms: u64) -> TicketView {
        Terms::of(&self.sale).view(placement, self.remaining, now_ms)
    }

    /// The ticket `user_id` holds, as it stands at `now_ms`.
    fn held(&mut self, user_id: &str, now_ms: u64) -> Option<TicketView> {
        self.room.draw(&self.sale, now_ms);
        let number = self.room.ticket_of(user_id)?;
        let placement = self.room.placement(number, user_id)?;
        Some(self.ticket_view(placement, now_ms))
    }
}

impl Book {
    /// Issues `join.user_id` a ticket (registers them, in a lottery), or answers with the one
    /// they hold.
    pub(super) fn join_queue(&mut self, join: QueueJoin, now_ms: u64) -> (Reply, Option<Event>) {
        let blocked = self.blocked.contains(&*join.user_id);
        let Some(ledger) = self.sales.get_mut(&*join.sku) else {
            return (Err(SaleError::UnknownSale), None);
        };
        let sale = &ledger.sale;
        let opens_at = match sale.admission {
            Admission::Fcfs => return (Err(SaleError::NoWaitingRoom), None),
            Admission::WaitingRoom => sale.queue_opens_at,
            Admission::Lottery => sale.register_from,
        };
        if ledger.room.ticket_of(&join.user_id).is_some() {
            let reply = ledger
                .held(&join.user_id, now_ms)
                .map(|ticket| Outcome::Ticket {
                    ticket,
                    issued: false,
                })
                .ok_or(SaleError::Unavailable);
            return (reply, None);
        }
        let refusal = if now_ms < opens_at {
            Some(SaleError::QueueNotOpen)
        } else if sale.admission == Admission::Lottery && sale.has_started(now_ms) {
            Some(SaleError::RegistrationClosed)
        } else if sale.has_ended(now_ms) {
            Some(SaleError::Ended)
        } else if blocked {
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
            .get_mut(&*join.sku)
            .and_then(|ledger| ledger.held(&join.user_id, now_ms))
            .map(|ticket| Outcome::Ticket {
                ticket,
                issued: true,
            })
            .ok_or(SaleError::Unavailable);
        (reply, Some(event))
    }

    /// Ticket `number` of the sale of `sku` if `user_id` holds it, or with no number the one
    /// they hold.
    pub(super) fn ticket(
        &mut self,
        sku: &str,
        user_id: &str,
        number: Option<u64>,
        now_ms: u64,
    ) -> Reply {
        let ledger = self.sales.get_mut(sku).ok_or(SaleError::UnknownSale)?;
        if ledger.sale.admission == Admission::Fcfs {
            return Err(SaleError::NoWaitingRoom);
        }
        ledger.room.draw(&ledger.sale, now_ms);
        let number = number
            .or_else(|| ledger.room.ticket_of(user_id))
            .ok_or(SaleError::UnknownTicket)?;
        let placement = ledger
            .room
            .placement(number, user_id)
            .ok_or(SaleError::UnknownTicket)?;
        Ok(Outcome::Ticket {
            ticket: ledger.ticket_view(placement, now_ms),
            issued: false,
        })
    }

    /// A page of the lottery of `sku`'s registrants in drawn order.
    pub(super) fn registrants(&mut self, sku: &str, offset: u64, limit: u64, now_ms: u64) -> Reply {
        let ledger = self.sales.get_mut(sku).ok_or(SaleError::UnknownSale)?;
        if ledger.sale.admission != Admission::Lottery {
            return Err(SaleError::NoLottery);
        }
        ledger.room.draw(&ledger.sale, now_ms);
        let drawn = ledger.sale.has_started(now_ms);
        let (offset, limit) = (
            usize::try_from(offset).unwrap_or(usize::MAX),
            usize::try_from(limit.min(MAX_REGISTRANTS_PAGE)).unwrap_or(0),
        );
        Ok(Outcome::Registrants {
            total: ledger.room.early_count(),
            drawn,
            users: ledger.room.drawn(offset, limit),
        })
    }
}

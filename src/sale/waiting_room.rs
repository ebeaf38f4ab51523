//! The waiting room: a sale in which arriving early or with low latency gives no edge.
//!
//! From `queue_opens_at` a shopper joins the sale's queue and gets a ticket (one per shopper).
//! Tickets issued before `starts_at` are **early**: at the start they are put in the order of
//! their *scores*, a keyed hash of the SKU, the shopper and the start that the edge computes and
//! nobody outside the server can predict ([`crate::sale::pass::PassKey::score`]), so their order
//! is a uniformly random permutation whatever the arrival times. Tickets issued after the start
//! join the back in arrival order.
//!
//! Admission is a schedule, not a process: slot `s` opens at `starts_at + s × 1000 /
//! admission_rate` ms. Early ticket `i` (in score order) has slot `i`; a late ticket takes the
//! next free slot, or the current one when the queue has drained, so a burst after an idle
//! spell is still admitted at the rate. A ticket whose slot has opened is admitted for
//! [`PASS_TTL_MS`], then expires; every ticket of a sold-out sale is `sold_out`. Everything a
//! ticket's state depends on is in the events (who joined, when, with which score), so the
//! embedded store's replay and the Redis scripts reach the same answer.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::model::Sale;

/// The default lead of `queue_opens_at` over `starts_at`.
pub const DEFAULT_QUEUE_LEAD_MS: u64 = 3_600_000;
/// The default `admission_rate`, tickets per second.
pub const DEFAULT_ADMISSION_RATE: u32 = 100;
/// Highest `admission_rate` a sale may have.
pub const MAX_ADMISSION_RATE: u32 = 1_000_000;
/// How long an admitted ticket's pass stays valid after its slot opens.
pub const PASS_TTL_MS: u64 = 120_000;
/// Most tickets one sale's queue holds; beyond it joining is refused (`503 queue_full`). About
/// 150 bytes each, so the cap bounds a queue near 300 MiB however many identities an attacker
/// holds.
pub const MAX_TICKETS_PER_SALE: u64 = 2_000_000;

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Its slot has not opened.
    Waiting,
    /// Its slot has opened: it may buy with its pass until the pass expires.
    Admitted,
    /// Its pass expired (or the sale ended) before it was used up.
    Expired,
    /// The stock is gone.
    SoldOut,
    /// Lottery: registered, not drawn yet.
    Registered,
    /// Lottery: drawn to buy; the registration's answer carries a pass.
    Won,
    /// Lottery: not drawn.
    Lost,
}

/// Where a ticket sits in the queue: what both stores know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The ticket's number, its id: 1 for the first ticket issued.
    pub number: u64,
    /// When it was issued.
    pub issued_at: u64,
    /// Its place in line (0 = first) and admission slot; `None` before the start.
    pub place: Option<(u64, u64)>,
}

/// A ticket as its holder sees it (the pass is signed by the edge, not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketView {
    /// See [`Placement::number`].
    pub number: u64,
    /// The state at the time of the view.
    pub state: TicketState,
    /// 1-based place in line; `None` before the start, when early tickets have no order yet.
    pub position: Option<u64>,
    /// Tickets ahead of this one not admitted yet, estimated from the schedule.
    pub ahead: Option<u64>,
    /// Milliseconds until its slot opens (0 once it has).
    pub wait_ms: u64,
    /// When its slot opens; `None` before the start.
    pub admit_at: Option<u64>,
    /// When the pass stops being accepted; `None` until the slot is known.
    pub pass_expires_at: Option<u64>,
    /// See [`Placement::issued_at`].
    pub issued_at: u64,
}

/// What a ticket's state depends on of its sale: both stores read it from the definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// See [`Sale::starts_at`].
    pub starts_at: u64,
    /// See [`Sale::ends_at`].
    pub ends_at: u64,
    /// See [`Sale::admission_rate`].
    pub admission_rate: u32,
}

impl Schedule {
    /// The schedule of `sale`.
    pub fn of(sale: &Sale) -> Self {
        Self {
            starts_at: sale.starts_at,
            ends_at: sale.ends_at,
            admission_rate: sale.admission_rate,
        }
    }
}

/// When slot `slot` of `sale` opens.
pub fn slot_opens_at(sale: &Schedule, slot: u64) -> u64 {
    let rate = u128::from(sale.admission_rate.max(1));
    let offset = u128::from(slot) * 1000 / rate;
    sale.starts_at
        .saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// The latest slot open at `now_ms` (slot 0 opens at the start).
pub fn open_slot(sale: &Schedule, now_ms: u64) -> u64 {
    let elapsed = u128::from(now_ms.saturating_sub(sale.starts_at));
    let slot = elapsed * u128::from(sale.admission_rate.max(1)) / 1000;
    u64::try_from(slot).unwrap_or(u64::MAX)
}

/// The ticket's state and numbers at `now_ms`, with `remaining` units of `sale` left.
pub fn view(placement: Placement, sale: &Schedule, remaining: u64, now_ms: u64) -> TicketView {
    let Placement {
        number,
        issued_at,
        place,
    } = placement;
    let Some((line, slot)) = place else {
        let state = if remaining == 0 {
            TicketState::SoldOut
        } else {
            TicketState::Waiting
        };
        return TicketView {
            number,
            state,
            position: None,
            ahead: None,
            wait_ms: sale.starts_at.saturating_sub(now_ms),
            admit_at: None,
            pass_expires_at: None,
            issued_at,
        };
    };
    let admit_at = slot_opens_at(sale, slot);
    let pass_expires_at = admit_at.saturating_add(PASS_TTL_MS).min(sale.ends_at);
    let state = if remaining == 0 {
        TicketState::SoldOut
    } else if now_ms >= pass_expires_at {
        TicketState::Expired
    } else if now_ms >= admit_at {
        TicketState::Admitted
    } else {
        TicketState::Waiting
    };
    let ahead = if now_ms >= sale.starts_at {
        let opened = open_slot(sale, now_ms).saturating_add(1);
        slot.saturating_sub(opened).min(line)
    } else {
        line
    };
    TicketView {
        number,
        state,
        position: Some(line + 1),
        ahead: Some(if state == TicketState::Waiting {
            ahead
        } else {
            0
        }),
        wait_ms: admit_at.saturating_sub(now_ms),
        admit_at: Some(admit_at),
        pass_expires_at: Some(pass_expires_at),
        issued_at,
    }
}

/// One ticket as the embedded store keeps it.
#[derive(Debug, Clone)]
struct Ticket {
    user_id: Arc<str>,
    issued_at: u64,
    score: u64,
    /// Line and slot, once known: at the start for early tickets, at issue for late ones.
    place: Option<(u64, u64)>,
}

/// One sale's queue in the embedded store: the owner shard's, changed only through
/// [`WaitingRoom::issue`] (from an event) and [`WaitingRoom::draw`] (derived from them).
#[derive(Debug, Clone, Default)]
pub struct WaitingRoom {
    /// Ticket `n` at index `n - 1`.
    tickets: Vec<Ticket>,
    /// Ticket numbers by shopper: one ticket each.
    by_user: HashMap<Arc<str>, u64>,
    /// Early tickets by (score, shopper) until the draw orders them: the order Redis' zset of
    /// them has, so both stores draw alike.
    early: BTreeSet<(u64, Arc<str>)>,
    /// Early ticket numbers in drawn order, once drawn (a lottery publishes it).
    order: Vec<u64>,
    /// Whether the early tickets have been put in order (at the first look after the start).
    drawn: bool,
    /// The next slot a late ticket may take.
    next_slot: u64,
}

impl WaitingRoom {
    /// Tickets issued.
    pub fn len(&self) -> u64 {
        self.tickets.len() as u64
    }

    /// Whether no ticket was issued.
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// The ticket `user_id` holds, if any.
    pub fn ticket_of(&self, user_id: &str) -> Option<u64> {
        self.by_user.get(user_id).copied()
    }

    /// Orders the early tickets by score once the sale has started at `now_ms`: a no-op before
    /// it and after the first time. Derived from the tickets alone, so replay repeats it.
    pub fn draw(&mut self, sale: &Sale, now_ms: u64) {
        if self.drawn || now_ms < sale.starts_at {
            return;
        }
        self.drawn = true;
        let early = std::mem::take(&mut self.early);
        for (line, (_, user_id)) in early.iter().enumerate() {
            let Some(number) = self.by_user.get(user_id).copied() else {
                continue;
            };
            if let Some(ticket) = self.ticket_mut(number) {
                ticket.place = Some((line as u64, line as u64));
            }
            self.order.push(number);
        }
        self.next_slot = early.len() as u64;
    }

    /// Issues `user_id` the next ticket at `issued_at` with `score`; returns its number.
    pub fn issue(&mut self, sale: &Sale, user_id: Arc<str>, issued_at: u64, score: u64) -> u64 {
        self.draw(sale, issued_at);
        let number = self.len() + 1;
        // A ticket issued after the draw is late even if the clock stepped back before the
        // start: the early order is settled.
        let place = if issued_at < sale.starts_at && !self.drawn {
            self.early.insert((score, Arc::clone(&user_id)));
            None
        } else {
            let slot = self
                .next_slot
                .max(open_slot(&Schedule::of(sale), issued_at));
            self.next_slot = slot.saturating_add(1);
            Some((self.len(), slot))
        };
        self.by_user.insert(Arc::clone(&user_id), number);
        self.tickets.push(Ticket {
            user_id,
            issued_at,
            score,
            place,
        });
        number
    }

    /// Ticket `number` if `user_id` holds it.
    pub fn placement(&self, number: u64, user_id: &str) -> Option<Placement> {
        let ticket = self.tickets.get(index_of(number)?)?;
        (*ticket.user_id == *user_id).then_some(Placement {
            number,
            issued_at: ticket.issued_at,
            place: ticket.place,
        })
    }

    /// The shoppers of the early tickets in drawn order from `offset`, at most `limit`: empty
    /// before the draw.
    pub fn drawn(&self, offset: usize, limit: usize) -> Vec<Box<str>> {
        self.order
            .iter()
            .skip(offset)
            .take(limit)
            .filter_map(|number| self.tickets.get(index_of(*number)?))
            .map(|ticket| Box::from(&*ticket.user_id))
            .collect()
    }

    /// Tickets issued before the start: all of them until the draw.
    pub fn early_count(&self) -> u64 {
        if self.drawn {
            self.order.len() as u64
        } else {
            self.early.len() as u64
        }
    }

    /// Every ticket in issue order as (user, issued_at, score): what a snapshot must keep.
    pub fn issued(&self) -> impl Iterator<Item = (&Arc<str>, u64, u64)> {
        self.tickets
            .iter()
            .map(|ticket| (&ticket.user_id, ticket.issued_at, ticket.score))
    }

    fn ticket_mut(&mut self, number: u64) -> Option<&mut Ticket> {
        self.tickets.get_mut(index_of(number)?)
    }
}

/// Where ticket `number` sits in [`WaitingRoom::tickets`]: numbers start at 1.
fn index_of(number: u64) -> Option<usize> {
    usize::try_from(number.checked_sub(1)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::model::Admission;

    fn sale(rate: u32) -> Sale {
        Sale {
            sku: "s".into(),
            name: "n".into(),
            stock: 10,
            starts_at: 10_000,
            ends_at: 1_000_000,
            per_user_limit: 1,
            payment_timeout_ms: 1_000,
            rate_limit_per_sec: 0,
            price: 0,
            currency: "CNY".into(),
            stock_buckets: 1,
            pow_bits: 0,
            admission: Admission::WaitingRoom,
            queue_opens_at: 0,
            admission_rate: rate,
            register_from: 0,
            overbooking_percent: 0,
        }
    }

    #[test]
    fn early_tickets_go_in_score_order_and_late_ones_join_the_back() {
        let sale = sale(10);
        let mut room = WaitingRoom::default();
        // Arrival order a, b, c; scores put them c, a, b.
        let a = room.issue(&sale, "a".into(), 1, 50);
        let b = room.issue(&sale, "b".into(), 2, 90);
        let c = room.issue(&sale, "c".into(), 3, 10);
        assert_eq!(room.placement(a, "a").map(|p| p.place), Some(None));
        let late = room.issue(&sale, "d".into(), 10_050, 0);
        let place = |n, user: &str| room.placement(n, user).and_then(|p| p.place);
        assert_eq!(place(c, "c"), Some((0, 0)));
        assert_eq!(place(a, "a"), Some((1, 1)));
        assert_eq!(place(b, "b"), Some((2, 2)));
        assert_eq!(place(late, "d"), Some((3, 3)), "behind every early ticket");
        assert_eq!(room.placement(a, "b"), None, "not b's ticket");
        assert_eq!(room.ticket_of("b"), Some(b));
    }

    #[test]
    fn a_late_ticket_after_an_idle_spell_takes_the_current_slot() {
        let sale = sale(10);
        let mut room = WaitingRoom::default();
        room.issue(&sale, "a".into(), 1, 5);
        // 60 s after the start at 10 a second: slot 600 is open; the queue drained long ago.
        let late = room.issue(&sale, "b".into(), 70_000, 1);
        let next = room.issue(&sale, "c".into(), 70_000, 1);
        let place = |n, user: &str| room.placement(n, user).and_then(|p| p.place);
        assert_eq!(place(late, "b"), Some((1, 600)));
        assert_eq!(
            place(next, "c"),
            Some((2, 601)),
            "one slot each: the rate holds"
        );
    }

    #[test]
    fn the_view_follows_the_schedule() {
        let sale = Schedule::of(&sale(10)); // a slot every 100 ms from 10_000
        let placement = Placement {
            number: 7,
            issued_at: 5,
            place: Some((4, 4)),
        };
        let at = |now| view(placement, &sale, 3, now);
        let before = view(
            Placement {
                place: None,
                ..placement
            },
            &sale,
            3,
            9_000,
        );
        assert_eq!(
            (before.state, before.position, before.wait_ms),
            (TicketState::Waiting, None, 1_000)
        );
        let waiting = at(10_150);
        assert_eq!(waiting.state, TicketState::Waiting);
        assert_eq!(
            (
                waiting.position,
                waiting.ahead,
                waiting.admit_at,
                waiting.wait_ms
            ),
            (Some(5), Some(2), Some(10_400), 250)
        );
        assert_eq!(at(10_400).state, TicketState::Admitted);
        assert_eq!(at(10_400).pass_expires_at, Some(10_400 + PASS_TTL_MS));
        assert_eq!(at(10_400 + PASS_TTL_MS).state, TicketState::Expired);
        assert_eq!(
            view(placement, &sale, 0, 10_150).state,
            TicketState::SoldOut
        );
    }
}

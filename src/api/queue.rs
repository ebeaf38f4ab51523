//! The endpoints of the fair modes' tickets: `POST /v1/sales/{sku}/queue` (join) and
//! `GET /v1/sales/{sku}/queue/{ticket}` (where a ticket stands, with its pass once admitted);
//! `POST /v1/sales/{sku}/register` and `GET /v1/sales/{sku}/register` (a lottery registration,
//! with its pass once won). The rules are in [`crate::sale::waiting_room`] and
//! [`crate::sale::lottery`]; this module checks what the edge can (auth, blocklist,
//! proof-of-work), computes the ticket's score, and signs passes.

use serde::Serialize;

use super::error::ApiError;
use super::{json, Api};
use crate::clock::now_ms;
use crate::http::{Request, Response};
use crate::metrics::WaitingRoomEvent;
use crate::sale::command::{Command, Outcome, QueueJoin};
use crate::sale::lottery;
use crate::sale::model::{is_valid_id, Admission};
use crate::sale::pow::Proof;
use crate::sale::waiting_room::{TicketState, TicketView};
use crate::sale::SaleError;
use crate::shard::edge::AdmissionRules;
use crate::store::Store;

/// A ticket as its holder reads it.
#[derive(Debug, Serialize)]
struct TicketBody<'a> {
    /// The ticket's number: the `{ticket}` of its URL.
    ticket: u64,
    sku: &'a str,
    user_id: &'a str,
    state: TicketState,
    /// 1-based place in line; null before the start, when the early tickets have no order.
    position: Option<u64>,
    /// Tickets ahead not admitted yet; null before the start.
    ahead: Option<u64>,
    /// Milliseconds until admission, by the schedule (until the start, before it).
    estimated_wait_ms: u64,
    admit_at: Option<u64>,
    pass_expires_at: Option<u64>,
    issued_at: u64,
    /// The pass to send as `X-Seckill-Pass`, while admitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
}

/// `POST /v1/sales/{sku}/queue` (shopper), and `POST /v1/sales/{sku}/register` with `mode`
/// [`Admission::Lottery`].
pub(super) async fn join<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
    mode: Admission,
) -> Result<Response, ApiError> {
    let user_id = api.shopper(request)?;
    let rules = rules_of(api, sku).await?;
    if rules.admission != mode {
        return Err(match mode {
            Admission::Lottery => SaleError::NoLottery,
            _ => SaleError::NoWaitingRoom,
        }
        .into());
    }
    if api.shard.edge.borrow().is_blocked(user_id) {
        return Err(SaleError::Blocked.into());
    }
    let proof = request.pow.and_then(Proof::parse);
    if !api
        .auth
        .pow()
        .verify(sku, user_id, proof, rules.pow_bits, now_ms())
    {
        api.shard.metrics.record_pow_failure();
        return Err(SaleError::PowInvalid.into());
    }
    let join = QueueJoin {
        sku: sku.into(),
        user_id: user_id.into(),
        score: match mode {
            Admission::Lottery => {
                let passes = api.auth.passes();
                let seed = passes.lottery_seed(sku, rules.register_from, rules.starts_at);
                lottery::draw_score(&seed, user_id)
            }
            _ => api.auth.passes().score(sku, user_id, rules.starts_at),
        },
    };
    match api.shard.call(Command::JoinQueue(join)).await? {
        Outcome::Ticket { ticket, issued } => {
            if issued {
                api.shard.metrics.record_waiting_room(match mode {
                    Admission::Lottery => WaitingRoomEvent::Registered,
                    _ => WaitingRoomEvent::TicketIssued,
                });
            }
            answer(api, if issued { 201 } else { 200 }, sku, user_id, ticket)
        }
        _ => Err(SaleError::Unavailable.into()),
    }
}

/// `GET /v1/sales/{sku}/queue/{ticket}` (shopper), and with no number
/// `GET /v1/sales/{sku}/register` (the shopper's own registration).
pub(super) async fn ticket<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
    number: Option<&str>,
) -> Result<Response, ApiError> {
    let user_id = api.shopper(request)?;
    if !is_valid_id(sku) {
        return Err(SaleError::UnknownSale.into());
    }
    let number = match number {
        Some(text) => Some(parse_number(text).ok_or(SaleError::UnknownTicket)?),
        None => None,
    };
    let command = Command::GetTicket {
        sku: sku.into(),
        user_id: user_id.into(),
        number,
    };
    match api.shard.call(command).await? {
        Outcome::Ticket { ticket, .. } => answer(api, 200, sku, user_id, ticket),
        _ => Err(SaleError::Unavailable.into()),
    }
}

/// The sale's admission rules from the edge, or from the store for a sale this node has not
/// heard of yet (created through another node since the last sync).
pub(super) async fn rules_of<S: Store + 'static>(
    api: &Api<S>,
    sku: &str,
) -> Result<AdmissionRules, ApiError> {
    if !is_valid_id(sku) {
        return Err(SaleError::UnknownSale.into());
    }
    if let Some(rules) = api.shard.edge.borrow().admission_rules(sku) {
        return Ok(rules);
    }
    if api.shard.looks_up() {
        if let Some(view) = api.shard.discover(sku).await? {
            return Ok(AdmissionRules {
                admission: view.admission,
                pow_bits: view.pow_bits,
                starts_at: view.starts_at,
                register_from: view.register_from,
            });
        }
    }
    Err(SaleError::UnknownSale.into())
}

/// A ticket number as its URL writes it: decimal, 1 or more, no sign or leading zero.
fn parse_number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.len() <= 20
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    canonical.then(|| text.parse().ok()).flatten()
}

fn answer<S: Store + 'static>(
    api: &Api<S>,
    status: u16,
    sku: &str,
    user_id: &str,
    ticket: TicketView,
) -> Result<Response, ApiError> {
    let pass = match (ticket.state, ticket.pass_expires_at) {
        (TicketState::Admitted | TicketState::Won, Some(expires_at)) => {
            api.shard
                .metrics
                .record_waiting_room(WaitingRoomEvent::PassIssued);
            Some(api.auth.passes().sign(sku, user_id, expires_at))
        }
        _ => None,
    };
    json(
        status,
        &TicketBody {
            ticket: ticket.number,
            sku,
            user_id,
            state: ticket.state,
            position: ticket.position,
            ahead: ticket.ahead,
            estimated_wait_ms: ticket.wait_ms,
            admit_at: ticket.admit_at,
            pass_expires_at: ticket.pass_expires_at,
            issued_at: ticket.issued_at,
            pass,
        },
    )
}

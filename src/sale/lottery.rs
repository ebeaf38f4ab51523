//! The lottery: a sale whose buyers are drawn, verifiably, among those who registered.
//!
//! Shoppers register between `register_from` and `starts_at` (one registration each; they are
//! the early tickets of [`super::waiting_room`], stored the same way). The sale's **seed** is
//! fixed by its definition and the server's secret ([`super::pass::PassKey::lottery_seed`]); from
//! `register_from` anyone can read its **commitment**, `SHA-256(seed)`. At `starts_at` the
//! registrants are ordered by `draw_score(seed, user)` (ties by user id), the first
//! [`winners`] win, and the seed is revealed, so anyone holding the published registrant list
//! can recompute the draw and check it against the commitment (`seckill lottery verify`).
//! A registration's score is computed from the seed when it is made, so the stores order
//! registrants exactly as the draw does, with no step of their own at the start.

use sha2::{Digest, Sha256};

use super::waiting_room::{Placement, TicketState, TicketView, PASS_TTL_MS};

/// Highest `overbooking_percent` a sale may have: ten times the winners the stock covers.
pub const MAX_OVERBOOKING_PERCENT: u32 = 1_000;

/// What a registration's state depends on of its sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// When registration closes and the draw is made.
    pub starts_at: u64,
    /// When the sale ends: winners' passes do not outlive it.
    pub ends_at: u64,
    /// How many registrants win ([`winners`]).
    pub winners: u64,
}

/// Registrants who win: enough to buy the whole stock at the per-user limit, times the
/// overbooking percentage, rounded up.
pub fn winners(stock: u64, per_user_limit: u32, overbooking_percent: u32) -> u64 {
    let covered = stock.div_ceil(u64::from(per_user_limit.max(1)));
    let percent = u128::from(overbooking_percent.max(100));
    let drawn = (u128::from(covered) * percent).div_ceil(100);
    u64::try_from(drawn).unwrap_or(u64::MAX)
}

/// `SHA-256(seed)`: published while registration is open, checked against the seed revealed at
/// the draw.
pub fn commitment(seed: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(seed).into()
}

/// A registrant's place in the draw: the first 8 bytes of `SHA-256(seed ‖ user_id)`, big-endian,
/// shifted right by 12 (52 bits, exact in a Redis zset score). Lower draws first.
pub fn draw_score(seed: &[u8; 32], user_id: &str) -> u64 {
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(user_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) >> 12
}

/// The registrants in drawn order: by [`draw_score`], ties by user id. What the stores' order
/// is, and what `seckill lottery verify` recomputes.
pub fn draw_order<'a>(
    seed: &[u8; 32],
    registrants: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut scored: Vec<(u64, &str)> = registrants
        .into_iter()
        .map(|user| (draw_score(seed, user), user))
        .collect();
    scored.sort_unstable();
    scored.into_iter().map(|(_, user)| user).collect()
}

/// A registration's state at `now_ms`, with `remaining` units left. A winner's pass is signed
/// at each look, valid for [`PASS_TTL_MS`] from it (never past the end), so a winner who comes
/// back later gets a fresh one.
pub fn view(placement: Placement, draw: &Draw, remaining: u64, now_ms: u64) -> TicketView {
    let line = placement.place.map(|(line, _)| line);
    // A loser is told so whatever else happened; a winner may find the stock gone (other
    // winners bought it, with overbooking) or the sale over.
    let state = match line {
        None if remaining == 0 => TicketState::SoldOut,
        None => TicketState::Registered,
        Some(line) if line >= draw.winners => TicketState::Lost,
        Some(_) if remaining == 0 => TicketState::SoldOut,
        Some(_) if now_ms >= draw.ends_at => TicketState::Expired,
        Some(_) => TicketState::Won,
    };
    let pass_expires_at =
        (state == TicketState::Won).then(|| now_ms.saturating_add(PASS_TTL_MS).min(draw.ends_at));
    TicketView {
        number: placement.number,
        state,
        position: line.map(|line| line + 1),
        ahead: None,
        wait_ms: draw.starts_at.saturating_sub(now_ms),
        admit_at: (state == TicketState::Won).then_some(draw.starts_at),
        pass_expires_at,
        issued_at: placement.issued_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_cover_the_stock_at_the_limit_times_the_overbooking() {
        assert_eq!(winners(1_000, 1, 100), 1_000);
        assert_eq!(winners(1_000, 2, 100), 500);
        assert_eq!(winners(1_001, 2, 100), 501);
        assert_eq!(winners(1_000, 1, 150), 1_500);
        assert_eq!(winners(3, 1, 150), 5, "rounded up");
    }

    #[test]
    fn the_draw_orders_by_score_then_user_and_the_view_follows_it() {
        let seed = [7u8; 32];
        let users = ["a", "b", "c", "d"];
        let order = draw_order(&seed, users);
        assert_eq!(order.len(), 4);
        let mut scores: Vec<u64> = order.iter().map(|u| draw_score(&seed, u)).collect();
        let sorted = {
            let mut s = scores.clone();
            s.sort_unstable();
            s
        };
        assert_eq!(scores, sorted);
        scores.dedup();
        assert_eq!(scores.len(), 4);
        assert_ne!(
            draw_order(&[8u8; 32], users),
            order,
            "another seed, another draw"
        );

        let draw = Draw {
            starts_at: 100,
            ends_at: 1_000_000,
            winners: 2,
        };
        let at = |line: Option<u64>, now| {
            let placement = Placement {
                number: 1,
                issued_at: 50,
                place: line.map(|l| (l, l)),
            };
            view(placement, &draw, 5, now)
        };
        assert_eq!(at(None, 60).state, TicketState::Registered);
        assert_eq!(at(Some(1), 200).state, TicketState::Won);
        assert_eq!(at(Some(1), 200).pass_expires_at, Some(200 + PASS_TTL_MS));
        assert_eq!(at(Some(2), 200).state, TicketState::Lost);
        assert_eq!(at(Some(2), 200).pass_expires_at, None);
        assert_eq!(commitment(&seed), commitment(&seed));
        assert_ne!(commitment(&seed), seed);
    }
}

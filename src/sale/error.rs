//! Domain refusals: the business reasons a command can fail, each with a stable wire code.
//!
//! The table below is the single source of each refusal's status, code and message; the JSON
//! error body is built from it at compile time, so refusing (the common answer in a flash sale)
//! costs no serialisation.

macro_rules! refusals {
    ($($(#[$doc:meta])* $variant:ident => $status:literal, $code:literal, $message:literal;)*) => {
        /// Why the sale engine refused a command. Each variant maps to one HTTP status and code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum SaleError {
            $($(#[$doc])* $variant,)*
        }

        impl SaleError {
            /// Every refusal, for tests and documentation.
            pub const ALL: &'static [SaleError] = &[$(Self::$variant,)*];

            /// The HTTP status this refusal is answered with.
            pub fn status(self) -> u16 {
                match self { $(Self::$variant => $status,)* }
            }

            /// The stable machine-readable `error` code.
            pub fn code(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// A human-readable explanation for the `message` field.
            pub fn message(self) -> &'static str {
                match self { $(Self::$variant => $message,)* }
            }

            /// The complete JSON error body.
            pub fn body(self) -> &'static [u8] {
                match self {
                    $(Self::$variant => concat!(
                        "{\"error\":\"", $code, "\",\"message\":\"", $message, "\"}"
                    ).as_bytes(),)*
                }
            }
        }
    };
}

refusals! {
    /// No sale exists for the SKU.
    UnknownSale => 404, "unknown_sale", "no sale exists for this sku";
    /// The order does not exist, or the caller may not see it.
    UnknownOrder => 404, "unknown_order", "no such order";
    /// A started sale cannot be replaced.
    SaleExists => 409, "sale_exists", "a sale for this sku has already started and cannot be replaced";
    /// The sale window has not opened yet.
    NotStarted => 425, "not_started", "the sale has not started yet";
    /// The sale window has closed.
    Ended => 410, "ended", "the sale has ended";
    /// The shopper is on the blocklist.
    Blocked => 403, "blocked", "this user may not buy";
    /// The sale asks for proof-of-work and the request's is missing, wrong or stale.
    PowInvalid => 403, "pow_invalid", "missing, wrong or stale proof-of-work: fetch a challenge from /v1/sales/{sku}/pow and solve it";
    /// The sale uses a waiting room and the purchase carries no valid, unexpired pass.
    NotAdmitted => 403, "not_admitted", "this sale admits buyers through its waiting room: join the queue and buy with the pass your admitted ticket carries";
    /// Queue calls for a sale that does not use a waiting room.
    NoWaitingRoom => 409, "no_waiting_room", "this sale has no waiting room";
    /// Lottery calls for a sale that is not a lottery.
    NoLottery => 409, "no_lottery", "this sale is not a lottery";
    /// Lottery registration after the draw.
    RegistrationClosed => 409, "registration_closed", "registration closed at the start, when the winners were drawn";
    /// Registrants asked for before the draw.
    NotDrawn => 425, "not_drawn", "the lottery has not been drawn yet";
    /// The queue has not opened yet.
    QueueNotOpen => 425, "queue_not_open", "the sale's queue has not opened yet";
    /// The queue holds as many tickets as a sale may have.
    QueueFull => 503, "queue_full", "the sale's queue is full";
    /// No such ticket, or not the caller's.
    UnknownTicket => 404, "unknown_ticket", "no such ticket";
    /// The shopper would exceed the per-user limit (pending and paid orders count).
    LimitExceeded => 403, "limit_exceeded", "this purchase would exceed the per-user limit";
    /// No stock is left.
    SoldOut => 409, "sold_out", "sold out";
    /// Some stock is left, but less than the quantity asked for.
    InsufficientStock => 409, "insufficient_stock", "not enough stock left for this quantity";
    /// The order expired before payment.
    OrderExpired => 409, "order_expired", "the order expired before payment";
    /// The order was cancelled.
    OrderCancelled => 409, "order_cancelled", "the order was cancelled";
    /// A paid order cannot be cancelled.
    OrderPaid => 409, "order_paid", "the order is already paid (by another payment, if one was named)";
    /// A payment named an amount other than the order's; the order stays pending.
    AmountMismatch => 409, "amount_mismatch", "the amount paid is not the order's amount";
    /// An order's amount would not fit in 64 bits.
    AmountOverflow => 400, "amount_overflow", "the order's amount is too large";
    /// The store could not be reached or did not confirm in time.
    Unavailable => 503, "unavailable", "the store is unavailable, try again";
    /// The shared store lost writes of this sale (its state went backwards); it sells nothing
    /// until an operator resumes it.
    StoreRegressed => 503, "store_regressed", "the store lost acknowledged writes of this sale; it is stopped until an operator resumes it";
    /// A resume was asked for a sale whose store did not regress.
    NotRegressed => 409, "not_regressed", "this sale's store has not regressed; there is nothing to resume";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precomputed_bodies_are_the_standard_error_json() {
        for refusal in SaleError::ALL {
            let mut body = refusal.body().to_vec();
            let value = simd_json::to_owned_value(&mut body).expect("valid JSON");
            use simd_json::prelude::*;
            assert_eq!(value.get_str("error"), Some(refusal.code()));
            assert_eq!(value.get_str("message"), Some(refusal.message()));
        }
    }
}

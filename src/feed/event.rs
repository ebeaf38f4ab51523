//! One message of the order feed: its stable id, the SKU whose order it keeps, and its JSON body.
//!
//! The id is derived from what happened, not from where it was stored, so both store modes and
//! every re-publication after a crash name the same change the same way: `<order_id>.<status>`
//! for an order (an order is created once and closes at most once), and
//! `<sku>.sale.<digest of the definition>` for a sale. JetStream drops a repeated
//! `Nats-Msg-Id` within its duplicate window, and consumers can drop repeats by `id` for good.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sale::model::OrderStatus;
use crate::sale::{Order, Sale};

/// What a feed event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeedKind {
    /// A sale was created or replaced.
    SaleUpserted,
    /// An order was accepted; it holds stock until paid, cancelled or expired.
    OrderCreated,
    /// The payment side confirmed an order.
    OrderPaid,
    /// The shopper or an admin cancelled an order; its stock went back.
    OrderCancelled,
    /// An order was not paid in time; its stock went back.
    OrderExpired,
}

impl FeedKind {
    /// The `type` field of the message, and the last tokens of its subject.
    pub fn name(self) -> &'static str {
        match self {
            Self::SaleUpserted => "sale.upserted",
            Self::OrderCreated => "order.created",
            Self::OrderPaid => "order.paid",
            Self::OrderCancelled => "order.cancelled",
            Self::OrderExpired => "order.expired",
        }
    }

    /// The event an order reaching `status` makes.
    pub fn of_status(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::OrderCreated,
            OrderStatus::Paid => Self::OrderPaid,
            OrderStatus::Cancelled => Self::OrderCancelled,
            OrderStatus::Expired => Self::OrderExpired,
        }
    }

    /// The suffix of an order event's id: the status the order reached.
    fn id_suffix(self) -> &'static str {
        match self {
            Self::SaleUpserted => "sale",
            Self::OrderCreated => "created",
            Self::OrderPaid => "paid",
            Self::OrderCancelled => "cancelled",
            Self::OrderExpired => "expired",
        }
    }
}

/// A feed event waiting in an outbox or on its way to the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    /// Stable id, sent as `Nats-Msg-Id` and as the body's `id`.
    pub id: Box<str>,
    /// The SKU: events of one SKU are published in the order they happened.
    pub sku: Box<str>,
    /// What happened.
    pub kind: FeedKind,
    /// When it happened (ms since the Unix epoch), for the publish-lag metric.
    pub at: u64,
    /// The message body: JSON, see [`FeedEvent::order`] and [`FeedEvent::sale`].
    pub body: Box<str>,
}

/// The body's shape. `order` and `sale` are the API's own shapes, so a consumer parses one
/// schema for the feed and the API.
#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    sku: &'a str,
    at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a Order>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sale: Option<&'a Sale>,
}

impl FeedEvent {
    /// The event of `order` reaching its current status at `at`.
    pub fn order(order: &Order, at: u64) -> Self {
        let kind = FeedKind::of_status(order.status);
        let id = format!("{}.{}", order.order_id, kind.id_suffix());
        Self::build(id, &order.sku, kind, at, Some(order), None)
    }

    /// The event of `sale` being created or replaced at `at`. Its id digests the definition, so
    /// putting the same definition twice is one event.
    pub fn sale(sale: &Sale, at: u64) -> Self {
        let definition = simd_json::to_string(sale).unwrap_or_default();
        let digest = Sha256::digest(definition.as_bytes());
        let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let id = format!("{}.sale.{short}", sale.sku);
        Self::build(id, &sale.sku, FeedKind::SaleUpserted, at, None, Some(sale))
    }

    fn build(
        id: String,
        sku: &str,
        kind: FeedKind,
        at: u64,
        order: Option<&Order>,
        sale: Option<&Sale>,
    ) -> Self {
        let message = Message {
            id: &id,
            kind: kind.name(),
            sku,
            at,
            order,
            sale,
        };
        // Serialising plain structs of strings and integers cannot fail; an empty body would
        // still carry its id in the header.
        let body = simd_json::to_string(&message).unwrap_or_default();
        Self {
            id: id.into(),
            sku: sku.into(),
            kind,
            at,
            body: body.into(),
        }
    }

    /// The subject it is published on: `<prefix>.<sku>.<type>`. SKUs are `[A-Za-z0-9_-]`, so
    /// each is one subject token, and a consumer can filter one SKU with `<prefix>.<sku>.>`.
    pub fn subject(&self, prefix: &str) -> String {
        subject_of(prefix, &self.sku, self.kind)
    }
}

/// The subject an event of `kind` for `sku` is published on: `<prefix>.<sku>.<type>`.
pub fn subject_of(prefix: &str, sku: &str, kind: FeedKind) -> String {
    format!("{prefix}.{sku}.{}", kind.name())
}

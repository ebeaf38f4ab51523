//! Order ids: opaque to clients, unique across restarts and nodes, and routable.
//!
//! An id is a ULID (48-bit millisecond time plus 80 random bits, so two nodes or two runs never
//! collide in practice) followed by `.` and the SKU. Carrying the SKU lets any shard, and in
//! cluster mode any node, find the order's owner without a lookup table.

use std::fmt;
use std::sync::Arc;

use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::{is_valid_id, MAX_ID_LEN};

/// Length of the ULID part of an order id.
const ULID_LEN: usize = 26;
/// The longest wire form: the ULID, the dot and the longest SKU.
const MAX_WIRE_LEN: usize = ULID_LEN + 1 + MAX_ID_LEN;
/// The random bits that name an order's stock bucket: six, for up to 64 buckets.
const BUCKET_MASK: u128 = 0x3f;

/// An order's unique part as two words, the form maps store it in. As a `u128` it would align
/// every map entry to 16 bytes: an expiry entry (key, bucket) would pad from 24 bytes to 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Unique([u64; 2]);

impl From<u128> for Unique {
    fn from(unique: u128) -> Self {
        Self([(unique >> 64) as u64, unique as u64])
    }
}

impl From<Unique> for u128 {
    fn from(Unique([high, low]): Unique) -> Self {
        u128::from(high) << 64 | u128::from(low)
    }
}

/// A parsed order id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId {
    /// The unique part; the key orders are stored under.
    pub unique: u128,
    /// The SKU the order belongs to (shared with the order and its sale's ledger).
    pub sku: Arc<str>,
}

impl OrderId {
    /// Mints a fresh id for an order on `sku` created at `now_ms`.
    pub fn mint(sku: impl Into<Arc<str>>, now_ms: u64, rng: &mut impl RngCore) -> Self {
        let random =
            (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) & ((1 << 80) - 1);
        let ulid = ulid::Ulid::from_parts(now_ms, random);
        Self {
            unique: ulid.0,
            sku: sku.into(),
        }
    }

    /// Mints a fresh id for an order kept in stock bucket `bucket` (below
    /// [`super::model::MAX_STOCK_BUCKETS`]) of a sale split into several: the low six of the 80
    /// random bits name the bucket, so a payment or cancel by anyone (who need not know the
    /// buyer) finds the order's bucket from its id alone. The wire form is unchanged.
    pub fn mint_in_bucket(
        sku: impl Into<Arc<str>>,
        now_ms: u64,
        rng: &mut impl RngCore,
        bucket: u32,
    ) -> Self {
        let mut id = Self::mint(sku, now_ms, rng);
        id.unique = (id.unique & !BUCKET_MASK) | (u128::from(bucket) & BUCKET_MASK);
        id
    }

    /// The stock bucket this id names, for a sale split into several (see
    /// [`OrderId::mint_in_bucket`]); meaningless for a sale with one bucket.
    pub fn bucket(&self) -> u32 {
        // Masked to six bits: cannot truncate.
        (self.unique & BUCKET_MASK) as u32
    }

    /// Parses the wire form; `None` for anything that is not an id this server could have minted.
    pub fn parse(text: &str) -> Option<Self> {
        let (unique, sku) = text.split_at_checked(ULID_LEN)?;
        let sku = sku.strip_prefix('.')?;
        if !is_valid_id(sku) {
            return None;
        }
        let parsed = ulid::Ulid::from_string(unique).ok()?;
        // The decoder also takes lower case and lets a first character above `7` overflow (26
        // characters carry 130 bits), so many spellings name one id. Only the one this server
        // writes is an id; otherwise two paths would reach the same order.
        if parsed.array_to_str(&mut [0; ULID_LEN]) != unique {
            return None;
        }
        let unique = parsed;
        Some(Self {
            unique: unique.0,
            sku: sku.into(),
        })
    }

    /// The wire form spelled into `buf`, without allocating (every order's journal record and
    /// every response carries it). `None` for a SKU longer than a valid one, which only a value
    /// built by hand can have.
    fn spell<'b>(&self, buf: &'b mut [u8; MAX_WIRE_LEN]) -> Option<&'b str> {
        let sku = self.sku.as_bytes();
        let len = ULID_LEN + 1 + sku.len();
        let (ulid, rest) = buf.get_mut(..len)?.split_at_mut(ULID_LEN);
        let ulid: &mut [u8; ULID_LEN] = ulid.try_into().ok()?;
        ulid::Ulid(self.unique).array_to_str(ulid);
        rest[0] = b'.';
        rest[1..].copy_from_slice(sku);
        std::str::from_utf8(&buf[..len]).ok()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.spell(&mut [0; MAX_WIRE_LEN]) {
            Some(text) => f.write_str(text),
            None => write!(f, "{}.{}", ulid::Ulid(self.unique), self.sku),
        }
    }
}

impl Serialize for OrderId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.spell(&mut [0; MAX_WIRE_LEN]) {
            Some(text) => serializer.serialize_str(text),
            None => serializer.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not an order id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let mut rng = rand::thread_rng();
        let id = OrderId::mint("sku-1", 1_700_000_000_000, &mut rng);
        let text = id.to_string();
        assert_eq!(OrderId::parse(&text), Some(id.clone()));
        assert_ne!(OrderId::mint("sku-1", 1_700_000_000_000, &mut rng), id);
        assert_eq!(OrderId::parse("nope"), None);
        assert_eq!(OrderId::parse(&text.replace('.', "/")), None);
        assert_eq!(OrderId::parse(&format!("{}.", &text[..26])), None);
    }

    #[test]
    fn the_longest_sku_spells_in_place_and_a_longer_one_still_prints() {
        let sku = "s".repeat(MAX_ID_LEN);
        let id = OrderId::mint(sku.as_str(), 1_700_000_000_000, &mut rand::thread_rng());
        let text = id.to_string();
        assert_eq!(text.len(), MAX_WIRE_LEN);
        assert_eq!(OrderId::parse(&text), Some(id.clone()));
        let longer = OrderId {
            unique: id.unique,
            sku: "s".repeat(MAX_ID_LEN + 1).into(),
        };
        assert_eq!(longer.to_string(), format!("{}s", text));
    }

    #[test]
    fn an_id_names_its_bucket_and_keeps_its_form() {
        let mut rng = rand::thread_rng();
        for bucket in [0, 1, 17, 63] {
            let id = OrderId::mint_in_bucket("hot", 1_700_000_000_000, &mut rng, bucket);
            assert_eq!(id.bucket(), bucket);
            let parsed = OrderId::parse(&id.to_string()).unwrap();
            assert_eq!(parsed.bucket(), bucket);
            assert_eq!(parsed, id);
        }
    }

    #[test]
    fn only_the_canonical_spelling_parses() {
        let text = "01M8XW0C22K5BTK4Z44HMVY9TD.moutai-2026";
        let id = OrderId::parse(text).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(OrderId::parse(&text.to_lowercase()), None);
        // A first character above `7` overflows 128 bits: `8` decodes to the same id as `0`.
        assert_eq!(OrderId::parse(&format!("8{}", &text[1..])), None);
        let ulid_max = "7ZZZZZZZZZZZZZZZZZZZZZZZZZ.s";
        assert_eq!(
            OrderId::parse(ulid_max).map(|id| id.unique),
            Some(u128::MAX)
        );
        assert_eq!(OrderId::parse("8ZZZZZZZZZZZZZZZZZZZZZZZZZ.s"), None);
    }
}

//! Redis key names. Everything of one SKU shares the `{sku}` hash tag, so one script can touch all
//! of it on Redis Cluster; the two node-wide sets live outside any SKU's slot and are only used
//! by plain commands.

/// The last part of the name of each of a SKU's sixteen keys, in the order every script
/// expects them.
pub const SKU_KEY_NAMES: [&str; 16] = [
    "sale",
    "remaining",
    "seq",
    "held",
    "idem",
    "orders",
    "pending",
    "blocked",
    "events",
    "closed",
    "abandoned",
    "byuser",
    "regressed",
    "ids",
    "tickets",
    "early",
];

/// The sixteen keys of one SKU, in the order every script expects them.
#[derive(Debug, Clone)]
pub struct SkuKeys(pub Vec<String>);

impl SkuKeys {
    /// The keys of `sku` under `prefix`.
    pub fn new(prefix: &str, sku: &str) -> Self {
        Self(
            SKU_KEY_NAMES
                .iter()
                .map(|name| format!("{prefix}:{{{sku}}}:{name}"))
                .collect(),
        )
    }

    /// The hash of orders (order id → the order, packed or JSON: `super::record`).
    pub fn orders(&self) -> &str {
        &self.0[5]
    }

    /// The per-SKU copy of the blocklist.
    pub fn blocked(&self) -> &str {
        &self.0[7]
    }

    /// Order ids whose purchase was abandoned after its caller was answered 503 (a zset
    /// scored by when): a late copy of that purchase must not create the order.
    pub fn abandoned(&self) -> &str {
        &self.0[10]
    }

    /// Each user's order ids in this sale (a hash user id → ids), for `GET /v1/orders`.
    pub fn by_user(&self) -> &str {
        &self.0[11]
    }

    /// Set when a node saw this sale's state go backwards in Redis (lost writes): no unit is
    /// sold and the sale cannot be replaced until an operator resumes it.
    pub fn regressed(&self) -> &str {
        &self.0[12]
    }
}

/// The name whose hash tag holds bucket `bucket` of `sku`'s stock: the SKU itself for bucket 0
/// (so a sale with one bucket keeps the layout it always had), `sku~b` for the others. `~` is
/// not allowed in a SKU, so a part name never collides with another SKU.
pub fn part(sku: &str, bucket: u32) -> Box<str> {
    if bucket == 0 {
        sku.into()
    } else {
        format!("{sku}~{bucket}").into()
    }
}

/// The SKU and bucket a part name ([`part`]) stands for.
pub fn split_part(name: &str) -> (&str, u32) {
    match name.split_once('~') {
        Some((sku, bucket)) => (sku, bucket.parse().unwrap_or(0)),
        None => (name, 0),
    }
}

/// Whether `name` is a part name of a bucket above 0, not a SKU.
pub fn is_part(name: &str) -> bool {
    name.contains('~')
}

/// The bucket `user` buys from in a sale of `buckets` buckets: a stable hash of the user id
/// (FNV-1a, the same on every node and every release), so all of one user's orders, holdings
/// and idempotency keys live in one bucket and the per-user limit stays exact.
pub fn home_bucket(user: &str, buckets: u32) -> u32 {
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    // Below `buckets`, a u32.
    (hash % u64::from(buckets.max(1))) as u32
}

/// A part's moves out, not yet confirmed delivered (a hash move id → `destination amount`),
/// and the move ids delivered into it (a zset scored by Redis time): see [`super::buckets`].
pub fn move_keys(prefix: &str, part: &str) -> [String; 2] {
    [
        format!("{prefix}:{{{part}}}:moves"),
        format!("{prefix}:{{{part}}}:given"),
    ]
}

/// The set of every SKU with a sale.
pub fn sales(prefix: &str) -> String {
    format!("{prefix}:sales")
}

/// The node-wide blocklist, copied into each sale's own set.
pub fn blocked(prefix: &str) -> String {
    format!("{prefix}:blocked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sku_key_carries_the_hash_tag() {
        let keys = SkuKeys::new("seckill", "moutai");
        assert_eq!(keys.0.len(), 16);
        assert!(keys.0.iter().all(|key| key.contains("{moutai}")));
        assert_eq!(keys.orders(), "seckill:{moutai}:orders");
    }

    #[test]
    fn parts_name_their_bucket_and_users_have_one_home() {
        assert_eq!(&*part("moutai", 0), "moutai");
        assert_eq!(&*part("moutai", 3), "moutai~3");
        assert_eq!(split_part("moutai~3"), ("moutai", 3));
        assert_eq!(split_part("moutai"), ("moutai", 0));
        assert!(SkuKeys::new("p", &part("m", 2)).0[0].starts_with("p:{m~2}:"));
        // Stable across releases: nodes of different versions must agree.
        assert_eq!(home_bucket("u-1", 1), 0);
        let homes: Vec<u32> = (0..300)
            .map(|n| home_bucket(&format!("u-{n}"), 3))
            .collect();
        assert!((0..3).all(|b| homes.iter().filter(|h| **h == b).count() > 60));
    }
}

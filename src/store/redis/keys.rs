//! Redis key names. Everything of one SKU shares the `{sku}` hash tag, so one script can touch all
//! of it on Redis Cluster; the two node-wide sets live outside any SKU's slot and are only used
//! by plain commands.

/// The fourteen keys of one SKU, in the order every script expects them.
#[derive(Debug, Clone)]
pub struct SkuKeys(pub Vec<String>);

impl SkuKeys {
    /// The keys of `sku` under `prefix`.
    pub fn new(prefix: &str, sku: &str) -> Self {
        let names = [
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
        ];
        Self(
            names
                .iter()
                .map(|name| format!("{prefix}:{{{sku}}}:{name}"))
                .collect(),
        )
    }

    /// The hash of orders (order id → JSON).
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
        assert_eq!(keys.0.len(), 14);
        assert!(keys.0.iter().all(|key| key.contains("{moutai}")));
        assert_eq!(keys.orders(), "seckill:{moutai}:orders");
    }
}

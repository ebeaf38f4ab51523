//! Which shard owns what: a stable hash of the SKU (or, for the blocklist, the user id), modulo
//! the shard count.
//!
//! xxh3 is fixed by its specification, so placement is the same across processes, builds and
//! machines; only a change of `--shards` moves keys, and recovery re-partitions state for that.

/// The shard that owns `key` among `shards` shards.
pub fn owner_of(key: &str, shards: usize) -> usize {
    let shards = shards.max(1) as u64;
    // The remainder is below `shards`, which came from a usize.
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % shards) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads() {
        assert_eq!(owner_of("moutai", 1), 0);
        assert_eq!(owner_of("moutai", 4), owner_of("moutai", 4));
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            counts[owner_of(&format!("sku-{n}"), 4)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    }
}

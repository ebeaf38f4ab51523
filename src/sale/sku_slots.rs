//! SKUs numbered by first sight, so that a per-order record can name its SKU in 32 bits instead
//! of a 16-byte shared pointer. The book's order table and the owner's expiry queue each keep one.

use std::collections::HashMap;
use std::sync::Arc;

/// Each SKU seen, once, and its number.
#[derive(Debug, Clone, Default)]
pub struct SkuSlots {
    /// The SKUs by number.
    skus: Vec<Arc<str>>,
    /// The number of each SKU in `skus`.
    numbers: HashMap<Arc<str>, u32>,
    /// The number last looked up: a hot SKU's orders all share one pointer, so they skip hashing
    /// its name on every order.
    last: u32,
}

impl SkuSlots {
    /// The number of `sku`; a SKU not seen before gets the next one, and `sku` is kept for it.
    pub fn slot_of(&mut self, sku: &Arc<str>) -> u32 {
        if self
            .skus
            .get(self.last as usize)
            .is_some_and(|last| Arc::ptr_eq(last, sku))
        {
            return self.last;
        }
        self.number(sku, || Arc::clone(sku))
    }

    /// The shared copy kept for `sku`, numbering it first if it is new.
    pub fn intern(&mut self, sku: &str) -> &Arc<str> {
        let slot = self.number(sku, || Arc::from(sku));
        self.sku(slot)
    }

    fn number(&mut self, sku: &str, share: impl FnOnce() -> Arc<str>) -> u32 {
        let slot = match self.numbers.get(sku) {
            Some(slot) => *slot,
            None => {
                // A shard holding four billion SKUs has run out of memory long before this
                // saturates.
                let slot = u32::try_from(self.skus.len()).unwrap_or(u32::MAX);
                let shared = share();
                self.skus.push(Arc::clone(&shared));
                self.numbers.insert(shared, slot);
                slot
            }
        };
        self.last = slot;
        slot
    }

    /// The SKU numbered `slot`.
    pub fn sku(&self, slot: u32) -> &Arc<str> {
        // Numbers are only handed out by `number`, which pushed the SKU first.
        &self.skus[slot as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sku_keeps_its_number_whichever_copy_names_it() {
        let mut slots = SkuSlots::default();
        let a: Arc<str> = "a".into();
        let first = slots.slot_of(&a);
        assert!(
            Arc::ptr_eq(slots.sku(first), &a),
            "a shared SKU is kept as it is"
        );
        assert_eq!(slots.slot_of(&"b".into()), 1);
        assert_eq!(
            slots.slot_of(&"a".into()),
            first,
            "another copy of the same name"
        );
        assert_eq!(slots.slot_of(&a), first);
        assert!(
            Arc::ptr_eq(slots.intern("a"), &a),
            "interning finds the kept copy"
        );
        assert_eq!(&**slots.intern("c"), "c");
        assert_eq!(&**slots.sku(1), "b");
    }
}

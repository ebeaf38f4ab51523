//! Model-based test of `SegmentedMap` against `std::collections::HashMap`: random sequences of
//! insert, remove, get, get_mut, get_or_default and iteration must answer exactly as one plain
//! map does, and `len` must agree after every step.
//!
//! Keys come from a small range so that replacing and removing existing keys is common.
//! `PROPTEST_CASES` overrides the number of cases (default 256).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use seckill::sale::segmented::SegmentedMap;

#[path = "support/proptest_cases.rs"]
mod proptest_cases;

#[derive(Debug, Clone)]
enum Op {
    Insert(u16, u32),
    Remove(u16),
    Get(u16),
    AddTo(u16, u32),
    Bump(u16),
    Iterate,
    Clone,
}

fn op() -> impl Strategy<Value = Op> {
    // A small key space makes hits common; a few wide keys exercise many segments.
    let key = prop_oneof![4 => 0..64u16, 1 => any::<u16>()];
    prop_oneof![
        4 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => key.clone().prop_map(Op::Remove),
        2 => key.clone().prop_map(Op::Get),
        1 => (key.clone(), any::<u32>()).prop_map(|(k, v)| Op::AddTo(k, v)),
        1 => key.prop_map(Op::Bump),
        1 => Just(Op::Iterate),
        1 => Just(Op::Clone),
    ]
}

fn sorted<'a>(entries: impl Iterator<Item = (&'a u16, &'a u32)>) -> BTreeMap<u16, u32> {
    let mut out = BTreeMap::new();
    for (key, value) in entries {
        assert!(
            out.insert(*key, *value).is_none(),
            "key {key} iterated twice"
        );
    }
    out
}

proptest! {
    #![proptest_config(proptest_cases::config(256))]

    #[test]
    fn segmented_map_behaves_like_a_hash_map(ops in proptest::collection::vec(op(), 1..300)) {
        let mut real: SegmentedMap<u16, u32> = SegmentedMap::new();
        let mut model: HashMap<u16, u32> = HashMap::new();
        for op in &ops {
            match op {
                Op::Insert(k, v) => prop_assert_eq!(real.insert(*k, *v), model.insert(*k, *v)),
                Op::Remove(k) => prop_assert_eq!(real.remove(k), model.remove(k)),
                Op::Get(k) => prop_assert_eq!(real.get(k), model.get(k)),
                Op::AddTo(k, v) => {
                    let got = real.get_mut(k).map(|slot| {
                        *slot = slot.wrapping_add(*v);
                        *slot
                    });
                    let want = model.get_mut(k).map(|slot| {
                        *slot = slot.wrapping_add(*v);
                        *slot
                    });
                    prop_assert_eq!(got, want);
                }
                Op::Bump(k) => {
                    let got = {
                        let (_, slot) = real.get_or_default(*k);
                        *slot = slot.wrapping_add(1);
                        *slot
                    };
                    let slot = model.entry(*k).or_default();
                    *slot = slot.wrapping_add(1);
                    prop_assert_eq!(got, *slot);
                }
                Op::Iterate => {
                    let expected = sorted(model.iter());
                    prop_assert_eq!(&sorted(real.iter()), &expected);
                    let keys: BTreeMap<u16, u32> =
                        real.keys().map(|k| (*k, model[k])).collect();
                    prop_assert_eq!(&keys, &expected);
                    let mut values: Vec<u32> = real.values().copied().collect();
                    let mut want: Vec<u32> = model.values().copied().collect();
                    values.sort_unstable();
                    want.sort_unstable();
                    prop_assert_eq!(values, want);
                }
                Op::Clone => {
                    let copy = real.clone();
                    prop_assert!(copy == real, "a clone compares equal");
                    prop_assert_eq!(sorted(copy.iter()), sorted(real.iter()));
                }
            }
            prop_assert_eq!(real.len(), model.len());
            prop_assert_eq!(real.is_empty(), model.is_empty());
        }
        // Two maps with the same entries compare equal whatever their history.
        let mut rebuilt = SegmentedMap::new();
        for (k, v) in &model {
            rebuilt.insert(*k, *v);
        }
        prop_assert!(rebuilt == real, "equal contents compare equal");
    }
}

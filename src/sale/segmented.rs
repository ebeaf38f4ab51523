//! A hash map split into a fixed number of independent segments, so that growing it never stops
//! the shard for long.
//!
//! A `HashMap` doubles all at once: with a million orders, one insert rehashes every entry into
//! hundreds of megabytes of freshly faulted memory, stalling every connection of the shard, in the
//! middle of the sale. Spread over [`SEGMENTS`] maps, each doubling moves 1/256 of the entries.
//! `cargo bench --bench map_growth` (2 million order-sized entries, two rounds): the worst single
//! insert took 282–1,105 ms with one `HashMap` and 1.4–2.0 ms segmented, for about the same total
//! time.

use std::borrow::Borrow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// How many maps the entries are spread over.
pub const SEGMENTS: usize = 256;

/// A map of `K` to `V` in [`SEGMENTS`] segments. The segment is chosen by an unkeyed hash, so
/// the same key always lands in the same segment (two maps with the same entries compare equal);
/// each segment keeps the standard library's keyed hasher, so crafted keys can at worst crowd
/// one segment, never degrade lookups.
#[derive(Debug, Clone)]
pub struct SegmentedMap<K, V> {
    segments: Vec<HashMap<K, V>>,
    len: usize,
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for SegmentedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.segments == other.segments
    }
}

impl<K: Hash + Eq, V> Default for SegmentedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> SegmentedMap<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self {
            segments: (0..SEGMENTS).map(|_| HashMap::new()).collect(),
            len: 0,
        }
    }

    fn segment_of<Q: Hash + ?Sized>(key: &Q) -> usize {
        // The low bits of a 64-bit hash; SEGMENTS is a power of two.
        (Xxh3DefaultBuilder.hash_one(key) as usize) & (SEGMENTS - 1)
    }

    fn segment<Q: Hash + ?Sized>(&self, key: &Q) -> &HashMap<K, V> {
        &self.segments[Self::segment_of(key)]
    }

    fn segment_mut<Q: Hash + ?Sized>(&mut self, key: &Q) -> &mut HashMap<K, V> {
        &mut self.segments[Self::segment_of(key)]
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.segment(key).get(key)
    }

    /// The stored key equal to `key`, and its value.
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.segment(key).get_key_value(key)
    }

    /// The value for `key`, mutably.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.segment_mut(key).get_mut(key)
    }

    /// Inserts, returning the value `key` had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let replaced = self.segment_mut(&key).insert(key, value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let removed = self.segment_mut(key).remove(key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The value for `key`, inserting `V::default()` first if there is none, with a copy of the
    /// key as stored: an equal key inserted earlier, which the caller can share instead of its own.
    pub fn get_or_default(&mut self, key: K) -> (K, &mut V)
    where
        K: Clone,
        V: Default,
    {
        let map = &mut self.segments[Self::segment_of(&key)];
        match map.entry(key) {
            Entry::Occupied(entry) => (entry.key().clone(), entry.into_mut()),
            Entry::Vacant(entry) => {
                self.len += 1;
                (entry.key().clone(), entry.insert(V::default()))
            }
        }
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.segments.iter().flat_map(HashMap::values)
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.segments.iter().flat_map(HashMap::keys)
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.segments.iter().flat_map(HashMap::iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_one_map() {
        let mut map = SegmentedMap::new();
        for key in 0..1000u32 {
            assert_eq!(map.insert(key, key * 2), None);
        }
        assert_eq!(map.insert(7, 0), Some(14));
        assert_eq!(map.len(), 1000);
        assert_eq!(map.get(&7), Some(&0));
        *map.get_mut(&8).expect("present") += 1;
        assert_eq!(map.get(&8), Some(&17));
        assert_eq!(map.remove(&8), Some(17));
        assert_eq!(map.remove(&8), None);
        assert_eq!(map.len(), 999);
        *map.get_or_default(5000).1 += 3;
        *map.get_or_default(5000).1 += 3;
        assert_eq!(map.get(&5000), Some(&6));
        assert_eq!(map.len(), 1000);
        assert_eq!(map.values().count(), 1000);
        let used = map
            .segments
            .iter()
            .filter(|segment| !segment.is_empty())
            .count();
        assert!(used > SEGMENTS / 2, "keys spread over the segments: {used}");
    }

    #[test]
    fn equal_contents_compare_equal() {
        let mut a = SegmentedMap::new();
        let mut b = SegmentedMap::new();
        for key in ["x", "y", "z"] {
            a.insert(key.to_string(), 1);
        }
        for key in ["z", "x", "y"] {
            b.insert(key.to_string(), 1);
        }
        assert_eq!(a, b);
        assert_eq!(a.get("y"), Some(&1));
    }
}

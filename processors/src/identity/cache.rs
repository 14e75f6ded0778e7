//! A small bounded map whose entries expire: the memory every identity lookup uses.

use std::hash::Hash;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// How one lookup went.
#[derive(Debug)]
pub enum Lookup<T> {
    /// From the cache or freshly read.
    Found(T),
    /// Failed now (the first time within the time to live: count it).
    Failed,
    /// Failed earlier and not yet retried.
    KnownMissing,
}

impl<T> Lookup<T> {
    pub fn found(self) -> Option<T> {
        match self {
            Lookup::Found(t) => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Entry<V> {
    value: V,
    at: Instant,
}

/// At most `capacity` entries, each valid for `ttl` after it was inserted. When full, expired
/// entries go first, then the oldest.
#[derive(Debug)]
pub(crate) struct Cache<K, V> {
    map: FxHashMap<K, Entry<V>>,
    capacity: usize,
    ttl: Duration,
    evicted: u64,
}

impl<K: Hash + Eq + Copy, V> Cache<K, V> {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Cache {
            map: FxHashMap::default(),
            capacity: capacity.max(1),
            ttl,
            evicted: 0,
        }
    }

    /// The value, unless absent or expired.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.map
            .get(key)
            .filter(|e| now.saturating_duration_since(e.at) < self.ttl)
            .map(|e| &e.value)
    }

    pub(crate) fn insert(&mut self, key: K, value: V, now: Instant) {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            let ttl = self.ttl;
            let before = self.map.len();
            self.map
                .retain(|_, e| now.saturating_duration_since(e.at) < ttl);
            if self.map.len() >= self.capacity {
                if let Some(oldest) = self.map.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| *k) {
                    self.map.remove(&oldest);
                }
            }
            self.evicted += (before - self.map.len()) as u64;
        }
        self.map.insert(key, Entry { value, at: now });
    }

    /// Keeps the entries for which `keep` is true (expired ones are dropped too).
    pub(crate) fn retain(&mut self, now: Instant, mut keep: impl FnMut(&K, &V) -> bool) {
        let ttl = self.ttl;
        self.map
            .retain(|k, e| now.saturating_duration_since(e.at) < ttl && keep(k, &e.value));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Entries evicted to make room (not counting expiry by `retain`).
    #[cfg(test)]
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity_evicting_the_oldest() {
        let t0 = Instant::now();
        let mut c = Cache::new(3, Duration::from_secs(60));
        for i in 0..10u32 {
            c.insert(i, i * 10, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.evicted(), 7);
        let now = t0 + Duration::from_millis(20);
        assert_eq!(c.get(&9, now), Some(&90));
        assert_eq!(c.get(&7, now), Some(&70));
        assert!(c.get(&6, now).is_none(), "the oldest went first");
    }

    #[test]
    fn entries_expire_and_expired_ones_make_room_first() {
        let t0 = Instant::now();
        let mut c = Cache::new(2, Duration::from_secs(1));
        c.insert(1u32, "a", t0);
        c.insert(2u32, "b", t0 + Duration::from_millis(900));
        assert_eq!(c.get(&1, t0 + Duration::from_millis(999)), Some(&"a"));
        assert!(c.get(&1, t0 + Duration::from_secs(1)).is_none());
        // 1 has expired: inserting 3 removes it, not 2.
        c.insert(3u32, "c", t0 + Duration::from_millis(1500));
        let now = t0 + Duration::from_millis(1600);
        assert_eq!(c.get(&2, now), Some(&"b"));
        assert_eq!(c.get(&3, now), Some(&"c"));
        c.retain(now, |k, _| *k != 3);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&2, now), Some(&"b"));
    }
}

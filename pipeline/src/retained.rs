//! A map whose entries outlive the thing they describe for a while: names are captured while a
//! device or namespace is alive and must still be there when the last of its telemetry is
//! emitted (an interval or more after it went away), but churn must not grow memory forever.
//!
//! Keys are unique for the boot (a namespace's cookie, with it a device), so keeping an entry
//! after its thing is gone can never name another thing.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long entries of things that went away are kept by default: longer than any sensible
/// emit interval, so the final points of their series still find their names.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

/// Most entries of things that went away kept at once by default; beyond it the oldest go
/// first (with churn of 10 pods a second and 10-minute retention, ~6,000 are needed).
pub const DEFAULT_MAX_GONE: usize = 65_536;

#[derive(Clone, Debug)]
struct Entry<V> {
    value: V,
    /// When it went away; `None` while alive.
    gone_at: Option<Instant>,
}

/// Entries that are alive, and entries that went away, kept for a retention period.
#[derive(Clone, Debug)]
pub struct RetainedMap<K, V> {
    entries: HashMap<K, Entry<V>>,
    gone: usize,
    retention: Duration,
    max_gone: usize,
    last_purge: Option<Instant>,
}

impl<K: Eq + Hash + Clone, V> Default for RetainedMap<K, V> {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION, DEFAULT_MAX_GONE)
    }
}

impl<K: Eq + Hash + Clone, V> RetainedMap<K, V> {
    /// Keeps gone entries for `retention`, and at most `max_gone` of them.
    pub fn new(retention: Duration, max_gone: usize) -> Self {
        RetainedMap {
            entries: HashMap::new(),
            gone: 0,
            retention,
            max_gone,
            last_purge: None,
        }
    }

    /// Inserts or replaces `key` as alive (a gone entry comes back to life).
    pub fn insert(&mut self, key: K, value: V) {
        if let Some(old) = self.entries.insert(
            key,
            Entry {
                value,
                gone_at: None,
            },
        ) {
            if old.gone_at.is_some() {
                self.gone -= 1;
            }
        }
    }

    /// The entry, alive or gone.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|e| &e.value)
    }

    /// The entry, mutable, alive or gone.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|e| &mut e.value)
    }

    /// Whether `key` is known and has not gone away.
    pub fn is_alive(&self, key: &K) -> bool {
        self.entries.get(key).is_some_and(|e| e.gone_at.is_none())
    }

    /// Marks `key` as gone at `now`: still found by [`get`](Self::get) until the retention
    /// has passed. Returns whether it was alive.
    pub fn retire(&mut self, key: &K, now: Instant) -> bool {
        let retired = match self.entries.get_mut(key) {
            Some(e) if e.gone_at.is_none() => {
                e.gone_at = Some(now);
                self.gone += 1;
                true
            }
            _ => false,
        };
        self.purge(now);
        retired
    }

    /// Keys of the entries that are alive.
    pub fn alive_keys(&self) -> impl Iterator<Item = &K> {
        self.entries
            .iter()
            .filter(|(_, e)| e.gone_at.is_none())
            .map(|(k, _)| k)
    }

    /// Entries alive and gone.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries that went away and are still kept.
    pub fn gone_len(&self) -> usize {
        self.gone
    }

    /// Drops gone entries past the retention, and the oldest ones past `max_gone`. Cheap when
    /// nothing is due: a full pass runs at most once a second, or when over the bound.
    fn purge(&mut self, now: Instant) {
        let over = self.gone > self.max_gone;
        let due = self
            .last_purge
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if !over && !due {
            return;
        }
        self.last_purge = Some(now);
        let retention = self.retention;
        self.entries.retain(|_, e| {
            e.gone_at
                .is_none_or(|t| now.saturating_duration_since(t) < retention)
        });
        self.gone = self
            .entries
            .values()
            .filter(|e| e.gone_at.is_some())
            .count();
        if self.gone > self.max_gone {
            let mut times: Vec<Instant> = self.entries.values().filter_map(|e| e.gone_at).collect();
            times.sort_unstable();
            let cut = times[self.gone - self.max_gone];
            self.entries
                .retain(|_, e| e.gone_at.is_none_or(|t| t >= cut));
            self.gone = self
                .entries
                .values()
                .filter(|e| e.gone_at.is_some())
                .count();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_entries_are_found_until_the_retention_passes() {
        let mut m = RetainedMap::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        m.insert(1u64, "eth0");
        assert!(m.is_alive(&1));
        assert!(m.retire(&1, t0));
        assert!(!m.retire(&1, t0), "retired once");
        assert!(!m.is_alive(&1));
        assert_eq!(m.get(&1), Some(&"eth0"));
        m.retire(&2, t0 + Duration::from_secs(5));
        assert_eq!(m.get(&1), Some(&"eth0"), "purged only past the retention");
        m.retire(&2, t0 + Duration::from_secs(11));
        assert_eq!(m.get(&1), None);
        assert_eq!(m.gone_len(), 0);
    }

    #[test]
    fn a_gone_entry_inserted_again_is_alive() {
        let mut m = RetainedMap::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        m.insert(1u64, "a");
        m.retire(&1, t0);
        m.insert(1, "b");
        assert!(m.is_alive(&1));
        assert_eq!(m.gone_len(), 0);
        assert_eq!(m.alive_keys().count(), 1);
    }

    #[test]
    fn memory_is_bounded_under_endless_churn() {
        let mut m = RetainedMap::new(Duration::from_secs(3600), 50);
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            m.insert(i, i);
            m.retire(&i, t0 + Duration::from_millis(i));
            assert!(m.len() <= 51, "{} entries after {i}", m.len());
        }
        // The newest gone entries are the ones kept.
        assert_eq!(m.get(&9_999), Some(&9_999));
        assert_eq!(m.get(&0), None);
    }
}

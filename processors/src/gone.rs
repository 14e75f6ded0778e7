//! When a series' source (a device, a namespace) has gone away, and what is done about it.
//!
//! A device that goes away normally gets its final kernel counters (`DeviceCounters::last`):
//! its series emit one final point and retire at once. A source found gone without them (a
//! namespace, which has no counters; a receiver that missed the device's end) is given one
//! grace collect — records in flight still reach its series — and retires at the next collect
//! ([`Grace`]). Records that arrive after a source's final point are not made into a new
//! series ([`Finished`]). Gone means known to the receivers' tables and no longer alive there:
//! an id the tables never held (a test, a receiver that registers nothing) is never gone.

use std::hash::Hash;
use std::time::{Duration, Instant};

use rustc_hash::FxHashSet;

use periscope_pipeline::devices::{DeviceTable, NamespaceTable};
use periscope_pipeline::model::{DeviceRef, NetnsId};
use periscope_pipeline::retained::RetainedMap;

/// Whether `device` was registered and has gone away.
pub fn device_gone(devices: &DeviceTable, device: &DeviceRef) -> bool {
    devices.get(device).is_some() && !devices.is_alive(device)
}

/// Whether namespace `netns` was registered and has gone away.
pub fn netns_gone(namespaces: &NamespaceTable, netns: &NetnsId) -> bool {
    namespaces.get(netns).is_some() && !namespaces.is_alive(netns)
}

/// Sources seen gone at a collect: due for retirement at the next one if still gone.
#[derive(Debug)]
pub struct Grace<S> {
    suspects: FxHashSet<S>,
}

impl<S> Default for Grace<S> {
    fn default() -> Self {
        Grace {
            suspects: FxHashSet::default(),
        }
    }
}

impl<S: Hash + Eq + Copy> Grace<S> {
    /// Of `sources` (those the processor's series are about, each once), the ones to retire
    /// at this collect: gone now and already at the previous collect. Remembers only the
    /// sources gone now, so it holds no more than the processor has series of.
    pub fn due(
        &mut self,
        sources: impl IntoIterator<Item = S>,
        gone: impl Fn(&S) -> bool,
    ) -> Vec<S> {
        let mut suspects = FxHashSet::default();
        let mut due = Vec::new();
        for s in sources {
            if gone(&s) {
                if self.suspects.contains(&s) {
                    due.push(s);
                } else {
                    suspects.insert(s);
                }
            }
        }
        self.suspects = suspects;
        due
    }

    /// Sources waiting for their grace collect to end.
    pub fn len(&self) -> usize {
        self.suspects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.suspects.is_empty()
    }
}

/// How long a source's end is remembered against late records: longer than any queue holds
/// a record.
const FINISHED_RETENTION: Duration = Duration::from_secs(120);
/// Most finished sources remembered (churn of 100 a second for two minutes).
const FINISHED_MAX: usize = 16_384;

/// Sources whose series got their final point: records of them arriving later are late, not
/// the start of a new series. Bounded in time and size.
#[derive(Debug)]
pub struct Finished<S> {
    map: RetainedMap<S, ()>,
}

impl<S: Hash + Eq + Clone> Default for Finished<S> {
    fn default() -> Self {
        Finished {
            map: RetainedMap::new(FINISHED_RETENTION, FINISHED_MAX),
        }
    }
}

impl<S: Hash + Eq + Clone> Finished<S> {
    /// `source` had its final point.
    pub fn mark(&mut self, source: S) {
        self.map.insert(source.clone(), ());
        self.map.retire(&source, Instant::now());
    }

    /// Whether `source` had its final point (recently).
    pub fn contains(&self, source: &S) -> bool {
        self.map.get(source).is_some()
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_pipeline::devices::DeviceInfo;

    fn dev(cookie: u64) -> DeviceRef {
        DeviceRef {
            netns: NetnsId { inode: 7, cookie },
            ifindex: 2,
        }
    }

    #[test]
    fn only_registered_devices_that_went_away_are_gone() {
        let t = DeviceTable::default();
        assert!(!device_gone(&t, &dev(1)), "never registered: not gone");
        t.insert(dev(1), DeviceInfo::default());
        assert!(!device_gone(&t, &dev(1)));
        t.retire(&dev(1));
        assert!(device_gone(&t, &dev(1)));
        assert!(!device_gone(&t, &dev(2)), "the inode's next namespace");
    }

    #[test]
    fn a_gone_source_is_due_at_the_second_collect_that_finds_it_gone() {
        let mut g = Grace::default();
        let gone = |s: &u32| *s >= 10;
        assert!(g.due([1, 10], gone).is_empty());
        assert_eq!(g.len(), 1);
        assert_eq!(g.due([1, 10, 11], gone), vec![10]);
        assert_eq!(g.due([1, 11], gone), vec![11]);
        assert!(g.due([1], gone).is_empty());
        assert!(g.is_empty(), "nothing kept of sources no series is about");
    }

    #[test]
    fn finished_sources_are_remembered_within_a_bound() {
        let mut f = Finished::default();
        for i in 0..(FINISHED_MAX as u64 + 1000) {
            f.mark(i);
        }
        assert!(f.len() <= FINISHED_MAX + 1);
        assert!(f.contains(&(FINISHED_MAX as u64 + 999)));
        assert!(!f.contains(&0));
    }
}

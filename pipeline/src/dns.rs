//! What DNS told us: a shared table of question names (so that [`crate::model::DnsEvent`]
//! stays a small `Copy` value carrying a `u32` handle) and, per network namespace, which name
//! an address was resolved from. Receivers intern names; the `dns` processor learns
//! resolutions from responses; processors after it (`identity`) look addresses up. Both halves
//! are bounded.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::model::NetnsId;

/// What a namespace resolved an address from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The question name whose answer held the address.
    pub name: Arc<str>,
    /// The server that answered.
    pub server: IpAddr,
    /// Until when (event time, ns since the Unix epoch) the answer is valid.
    pub expires_ns: u64,
}

#[derive(Debug)]
struct Inner {
    by_id: HashMap<u32, Arc<str>>,
    by_name: HashMap<Arc<str>, u32>,
    order: VecDeque<u32>,
    next_id: u32,
    name_capacity: usize,
    resolved: HashMap<(NetnsId, IpAddr), Resolution>,
    resolved_capacity: usize,
    /// The latest event time learned: the clock TTLs are measured against (so that replayed
    /// captures age their answers by capture time).
    now_ns: u64,
    full: u64,
}

/// A shared, thread-safe, bounded name table and (namespace, address) → resolution map. The
/// namespace is its inode and cookie: a later namespace reusing the inode learns afresh.
#[derive(Clone, Debug)]
pub struct DnsTable {
    inner: Arc<RwLock<Inner>>,
}

impl Default for DnsTable {
    fn default() -> Self {
        DnsTable::new(65536, 65536)
    }
}

impl DnsTable {
    /// At most `names` interned names (the oldest is forgotten first) and `addresses`
    /// resolved addresses (expired ones make room; beyond that new ones are not learned).
    pub fn new(names: usize, addresses: usize) -> DnsTable {
        DnsTable {
            inner: Arc::new(RwLock::new(Inner {
                by_id: HashMap::new(),
                by_name: HashMap::new(),
                order: VecDeque::new(),
                next_id: 1,
                name_capacity: names.max(1),
                resolved: HashMap::new(),
                resolved_capacity: addresses,
                now_ns: 0,
                full: 0,
            })),
        }
    }

    /// The handle of `name` (lower-cased, without the trailing dot), interning it if new.
    /// Never 0. When the table is full the oldest name is forgotten: its handle resolves to
    /// nothing afterwards.
    pub fn intern(&self, name: &str) -> u32 {
        let Ok(mut t) = self.inner.write() else {
            return 0;
        };
        if let Some(&id) = t.by_name.get(name) {
            return id;
        }
        while t.by_id.len() >= t.name_capacity {
            let Some(old) = t.order.pop_front() else {
                break;
            };
            if let Some(n) = t.by_id.remove(&old) {
                t.by_name.remove(&n);
            }
        }
        let id = t.next_id;
        t.next_id = t.next_id.checked_add(1).unwrap_or(1);
        let name: Arc<str> = Arc::from(name);
        t.by_id.insert(id, name.clone());
        t.by_name.insert(name, id);
        t.order.push_back(id);
        id
    }

    /// The name behind a handle, if it is still in the table.
    pub fn name(&self, id: u32) -> Option<Arc<str>> {
        self.inner.read().ok()?.by_id.get(&id).cloned()
    }

    /// Records that namespace `netns` resolved `addr` from `name` (answered by
    /// `server`) at `at_ns`, valid for `ttl_ns`. Returns false when the map was full.
    pub fn learn(
        &self,
        netns: NetnsId,
        addr: IpAddr,
        name: Arc<str>,
        server: IpAddr,
        at_ns: u64,
        ttl_ns: u64,
    ) -> bool {
        let Ok(mut t) = self.inner.write() else {
            return false;
        };
        t.now_ns = t.now_ns.max(at_ns);
        let key = (netns, addr);
        if !t.resolved.contains_key(&key) && t.resolved.len() >= t.resolved_capacity {
            let now = t.now_ns;
            t.resolved.retain(|_, r| r.expires_ns >= now);
            if t.resolved.len() >= t.resolved_capacity {
                t.full += 1;
                return false;
            }
        }
        t.resolved.insert(
            key,
            Resolution {
                name,
                server,
                expires_ns: at_ns.saturating_add(ttl_ns),
            },
        );
        true
    }

    /// Advances the table's clock (event time) without learning anything.
    pub fn observe_time(&self, at_ns: u64) {
        if let Ok(mut t) = self.inner.write() {
            t.now_ns = t.now_ns.max(at_ns);
        }
    }

    /// What `addr` was resolved from in namespace `netns`, unless its TTL ran out.
    pub fn resolve(&self, netns: NetnsId, addr: IpAddr) -> Option<Resolution> {
        let t = self.inner.read().ok()?;
        t.resolved
            .get(&(netns, addr))
            .filter(|r| r.expires_ns >= t.now_ns)
            .cloned()
    }

    /// Names interned, addresses known, and addresses not learned because the map was full.
    pub fn stats(&self) -> (usize, usize, u64) {
        self.inner
            .read()
            .map(|t| (t.by_id.len(), t.resolved.len(), t.full))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ns(inode: u32) -> NetnsId {
        NetnsId { inode, cookie: 1 }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn names_are_interned_once_and_the_oldest_forgotten() {
        let t = DnsTable::new(2, 4);
        let a = t.intern("a.example");
        assert_ne!(a, 0);
        assert_eq!(t.intern("a.example"), a);
        let b = t.intern("b.example");
        let c = t.intern("c.example");
        assert_eq!(t.name(a), None, "the oldest went");
        assert_eq!(t.name(b).as_deref(), Some("b.example"));
        assert_eq!(t.name(c).as_deref(), Some("c.example"));
        assert_eq!(t.stats().0, 2);
    }

    #[test]
    fn resolutions_are_per_namespace_expire_and_stay_bounded() {
        let t = DnsTable::new(8, 2);
        let n: Arc<str> = Arc::from("db.internal");
        assert!(t.learn(ns(1), ip(5), n.clone(), ip(53), 1_000, 10));
        assert_eq!(t.resolve(ns(1), ip(5)).map(|r| r.server), Some(ip(53)));
        assert_eq!(t.resolve(ns(2), ip(5)), None, "another namespace");
        let reused = NetnsId {
            inode: 1,
            cookie: 2,
        };
        assert_eq!(
            t.resolve(reused, ip(5)),
            None,
            "a later namespace with the inode"
        );
        assert!(t.learn(ns(1), ip(6), n.clone(), ip(53), 1_000, 10));
        assert!(!t.learn(ns(1), ip(7), n.clone(), ip(53), 1_005, 10), "full");
        assert_eq!(t.stats().2, 1);
        t.observe_time(1_011);
        assert_eq!(t.resolve(ns(1), ip(5)), None, "TTL ran out");
        // Expired entries make room.
        assert!(t.learn(ns(1), ip(7), n, ip(53), 1_012, 10));
        assert_eq!(t.stats().1, 1);
    }
}

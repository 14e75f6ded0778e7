//! Which process owns a socket: a shared table filled from socket events (by the
//! `connections` processor) and read by processors that only have a packet's 5-tuple and
//! namespace, or a socket cookie. Bounded; entries of closed sockets age out after a while so
//! that late packet records still find their owner.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::model::{DeviceRef, Direction, NetnsId, ProcessRef, SocketEvent, Transport};
use crate::socket_join::{carries_stats, Join};
pub use crate::socket_join::{DeviceTotals, SocketStats};

/// What is known of a socket's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketOwner {
    pub process: ProcessRef,
    pub cgroup_id: u64,
    /// The socket's namespace (inode and cookie: an inode alone may be a later namespace's).
    pub netns: NetnsId,
}

/// (namespace, transport, local addr, local port, remote addr, remote port).
type TupleKey = crate::model::SocketTuple;

#[derive(Debug)]
struct Inner {
    by_cookie: HashMap<u64, (SocketOwner, TupleKey)>,
    by_tuple: HashMap<TupleKey, u64>,
    closed: VecDeque<(Instant, u64)>,
    capacity: usize,
    linger: Duration,
    full: u64,
    /// Flows joined with sockets (`socket_join.rs`).
    join: Join,
}

/// A shared, thread-safe, bounded cookie → owner and 5-tuple → cookie table.
#[derive(Clone, Debug)]
pub struct SocketTable {
    inner: Arc<RwLock<Inner>>,
}

impl Default for SocketTable {
    fn default() -> Self {
        SocketTable::new(65536, Duration::from_secs(30))
    }
}

impl SocketTable {
    /// At most `capacity` sockets; a closed socket stays `linger` long.
    pub fn new(capacity: usize, linger: Duration) -> SocketTable {
        SocketTable {
            inner: Arc::new(RwLock::new(Inner {
                by_cookie: HashMap::new(),
                by_tuple: HashMap::new(),
                closed: VecDeque::new(),
                capacity,
                linger,
                full: 0,
                join: Join::default(),
            })),
        }
    }

    /// Learns a socket's owner from an event with process context; other events are ignored.
    pub fn learn(&self, e: &SocketEvent) {
        // (A connect seen before the local port was chosen has nothing to match on yet.)
        if !e.process.is_known() || e.local_port == 0 {
            return;
        }
        let Ok(mut t) = self.inner.write() else {
            return;
        };
        let key: TupleKey = e.tuple();
        let owner = SocketOwner {
            process: e.process,
            cgroup_id: e.cgroup_id,
            netns: e.netns,
        };
        if !t.by_cookie.contains_key(&e.cookie) && t.by_cookie.len() >= t.capacity {
            t.full += 1;
            return;
        }
        t.by_cookie.insert(e.cookie, (owner, key));
        t.by_tuple.insert(key, e.cookie);
    }

    /// Marks a socket closed: it ages out `linger` later.
    pub fn closed(&self, cookie: u64) {
        let Ok(mut t) = self.inner.write() else {
            return;
        };
        if t.by_cookie.contains_key(&cookie) {
            t.closed.push_back((Instant::now(), cookie));
        }
        let now = Instant::now();
        while let Some(&(at, c)) = t.closed.front() {
            if now.duration_since(at) < t.linger {
                break;
            }
            t.closed.pop_front();
            if let Some((_, key)) = t.by_cookie.remove(&c) {
                if t.by_tuple.get(&key) == Some(&c) {
                    t.by_tuple.remove(&key);
                }
            }
        }
    }

    pub fn by_cookie(&self, cookie: u64) -> Option<SocketOwner> {
        self.inner
            .read()
            .ok()?
            .by_cookie
            .get(&cookie)
            .map(|(o, _)| *o)
    }

    /// The owner of the socket a packet belongs to, trying the packet's source as the local
    /// end (sent) and then as the remote end (received), in namespace `netns`.
    pub fn by_tuple(
        &self,
        netns: NetnsId,
        transport: Transport,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> Option<SocketOwner> {
        let t = self.inner.read().ok()?;
        let sent = (netns, transport, src.0, src.1, dst.0, dst.1);
        let received = (netns, transport, dst.0, dst.1, src.0, src.1);
        let cookie = t
            .by_tuple
            .get(&sent)
            .or_else(|| t.by_tuple.get(&received))?;
        t.by_cookie.get(cookie).map(|(o, _)| *o)
    }

    /// Records a TCP socket's RTT and retransmits from an event that carries them, for the
    /// flows it owns (see `socket_join.rs`).
    pub fn observe_stats(&self, e: &SocketEvent) {
        if !carries_stats(e) {
            return;
        }
        if let Ok(mut t) = self.inner.write() {
            let (capacity, linger) = (t.capacity, t.linger);
            t.join.observe(e, capacity, linger);
        }
    }

    /// The RTT and retransmits of the socket owning the flow `src` → `dst` (either way round)
    /// in namespace `netns`.
    pub fn stats_by_tuple(
        &self,
        netns: NetnsId,
        transport: Transport,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> Option<SocketStats> {
        self.inner
            .read()
            .ok()?
            .join
            .stats(netns, transport, src, dst)
    }

    /// Sets one flow's cumulative packets and bytes on one device (`last`: its final totals
    /// there), for the sockets of that namespace.
    #[allow(clippy::too_many_arguments)]
    pub fn flow_totals(
        &self,
        device: DeviceRef,
        direction: Direction,
        transport: Transport,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        totals: [u64; 2],
        last: bool,
    ) {
        if let Ok(mut t) = self.inner.write() {
            let (capacity, linger) = (t.capacity, t.linger);
            t.join.flow(
                device, direction, transport, src, dst, totals, last, capacity, linger,
            );
        }
    }

    /// What the devices of `netns` saw of the socket `local` ↔ `remote`.
    pub fn device_totals(
        &self,
        netns: NetnsId,
        transport: Transport,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> Option<DeviceTotals> {
        self.inner
            .read()
            .ok()?
            .join
            .device_totals(netns, transport, local, remote)
    }

    /// Sockets with stats and flows with totals held, and entries not made (full).
    pub fn join_stats(&self) -> (usize, usize, u64) {
        self.inner
            .read()
            .map(|t| {
                let (s, f) = t.join.sizes();
                (s, f, t.join.full)
            })
            .unwrap_or_default()
    }

    /// Sockets known, and sockets not learned because the table was full.
    pub fn stats(&self) -> (usize, u64) {
        self.inner
            .read()
            .map(|t| (t.by_cookie.len(), t.full))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ev(cookie: u64, pid: u32, lport: u16) -> SocketEvent {
        SocketEvent {
            cookie,
            process: ProcessRef {
                pid,
                tid: pid,
                comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            },
            transport: Transport::Tcp,
            local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            remote_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            local_port: lport,
            remote_port: 80,
            ..SocketEvent::default()
        }
    }

    #[test]
    fn finds_owners_by_cookie_and_by_either_direction_of_the_tuple() {
        let t = SocketTable::default();
        t.learn(&ev(7, 42, 5000));
        assert_eq!(t.by_cookie(7).map(|o| o.process.pid), Some(42));
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let ns = NetnsId::default();
        let sent = t.by_tuple(ns, Transport::Tcp, (a, 5000), (b, 80));
        let received = t.by_tuple(ns, Transport::Tcp, (b, 80), (a, 5000));
        assert_eq!(sent.map(|o| o.process.pid), Some(42));
        assert_eq!(received.map(|o| o.process.pid), Some(42));
        assert!(t.by_tuple(ns, Transport::Udp, (a, 5000), (b, 80)).is_none());
        // The same inode, a later namespace (another cookie): not this socket.
        let reused = NetnsId {
            inode: 0,
            cookie: 99,
        };
        assert!(t
            .by_tuple(reused, Transport::Tcp, (a, 5000), (b, 80))
            .is_none());
    }

    #[test]
    fn stays_bounded_and_ages_closed_sockets_out() {
        let t = SocketTable::new(2, Duration::ZERO);
        t.learn(&ev(1, 1, 1));
        t.learn(&ev(2, 2, 2));
        t.learn(&ev(3, 3, 3));
        assert_eq!(t.stats(), (2, 1));
        t.closed(1);
        t.closed(2);
        assert_eq!(t.stats().0, 0);
        assert!(t.by_cookie(1).is_none());
    }
}

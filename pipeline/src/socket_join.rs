//! Flows joined with sockets: what the socket table adds so that a packet flow (5-tuple, seen
//! on a device) and the TCP socket that owns it can carry each other's view.
//!
//! - **Socket → flow.** The `connections` processor records each TCP socket's smoothed RTT
//!   and retransmit total, by its namespace and 4-tuple, from every socket event that carries
//!   them (established, rtt, retransmit, state change, close). The `flow` processor reads them
//!   per 5-tuple series at each collect: a flow seen on a device of the socket's own namespace
//!   whose addresses and ports are the socket's (either way round) belongs to it.
//! - **Flow → socket.** The `flow` processor records the kernel's exact per-flow totals
//!   (`FlowCounters`, from `xdp`/`tcx` with `flows` on) and, with cumulative temporality, the
//!   5-tuple series it counted from packet records, summed over the devices of each
//!   namespace. The `connections` processor adds to a connection's span what the devices of
//!   the socket's namespace saw: packets and bytes sent (local → peer, transmitted) and
//!   received (peer → local, received).
//!
//! Bounded like the rest of the table (`capacity` entries each); what a closed socket or an
//! ended flow left stays `linger` long, so that the other side can still read it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::model::{DeviceRef, Direction, NetnsId, SocketEvent, SocketEventKind, Transport};

/// A socket's view of its connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Smoothed RTT, microseconds (0: not measured yet).
    pub srtt_us: u32,
    pub rttvar_us: u32,
    /// Segments retransmitted over the socket's life so far.
    pub total_retrans: u32,
}

/// What the devices of a socket's namespace saw of its 4-tuple.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceTotals {
    /// Local → peer, at the devices' egress hooks.
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Peer → local, at the devices' ingress hooks.
    pub packets_received: u64,
    pub bytes_received: u64,
}

/// (namespace, transport, local addr, local port, remote addr, remote port).
type SocketKey = crate::model::SocketTuple;
/// (namespace, egress, transport, source, source port, destination, destination port).
type FlowKey = (NetnsId, bool, Transport, IpAddr, u16, IpAddr, u16);

/// One flow's totals over the devices of its namespace.
#[derive(Clone, Copy, Debug)]
struct Sum {
    counts: [u64; 2],
    /// When it last changed.
    updated: Instant,
    /// Devices it is counted on now (not ended there).
    devices: u32,
}

/// The join's state, inside the socket table's lock.
#[derive(Debug, Default)]
pub(crate) struct Join {
    stats: HashMap<SocketKey, SocketStats>,
    stats_closed: VecDeque<(Instant, SocketKey)>,
    /// The last cumulative totals of one flow on one device.
    per_device: HashMap<(u32, FlowKey), [u64; 2]>,
    /// Their sum over the namespace's devices.
    totals: HashMap<FlowKey, Sum>,
    totals_ended: VecDeque<(Instant, FlowKey)>,
    /// Entries not made because the maps were full.
    pub(crate) full: u64,
}

/// Whether `e` tells a TCP socket's RTT or retransmits (sends and receives do not).
pub(crate) fn carries_stats(e: &SocketEvent) -> bool {
    e.transport == Transport::Tcp
        && e.local_port != 0
        && matches!(
            e.kind,
            SocketEventKind::Established
                | SocketEventKind::Rtt
                | SocketEventKind::Retransmit
                | SocketEventKind::StateChange
                | SocketEventKind::Close
        )
}

impl Join {
    /// Records what a socket event says of its socket's RTT and retransmits.
    pub(crate) fn observe(&mut self, e: &SocketEvent, capacity: usize, linger: Duration) {
        if !carries_stats(e) {
            return;
        }
        let key: SocketKey = e.tuple();
        let now = Instant::now();
        self.expire(now, linger);
        if !self.stats.contains_key(&key) && self.stats.len() >= capacity {
            self.full += 1;
            return;
        }
        let s = self.stats.entry(key).or_default();
        if e.srtt_us > 0 {
            s.srtt_us = e.srtt_us;
            s.rttvar_us = e.rttvar_us;
        }
        s.total_retrans = s.total_retrans.max(e.total_retrans);
        if e.kind == SocketEventKind::Close {
            self.stats_closed.push_back((now, key));
        }
    }

    /// The stats of the socket whose 4-tuple is `src` → `dst` or `dst` → `src` in `netns`.
    pub(crate) fn stats(
        &self,
        netns: NetnsId,
        transport: Transport,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> Option<SocketStats> {
        let sent = (netns, transport, src.0, src.1, dst.0, dst.1);
        let received = (netns, transport, dst.0, dst.1, src.0, src.1);
        self.stats
            .get(&sent)
            .or_else(|| self.stats.get(&received))
            .copied()
    }

    /// Sets one flow's cumulative totals on one device (`last`: the flow ended there).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn flow(
        &mut self,
        device: DeviceRef,
        direction: Direction,
        transport: Transport,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        totals: [u64; 2],
        last: bool,
        capacity: usize,
        linger: Duration,
    ) {
        let key: FlowKey = (
            device.netns,
            direction == Direction::Egress,
            transport,
            src.0,
            src.1,
            dst.0,
            dst.1,
        );
        let now = Instant::now();
        self.expire(now, linger);
        let dev = (device.ifindex, key);
        if !self.per_device.contains_key(&dev)
            && (self.per_device.len() >= capacity
                || (!self.totals.contains_key(&key) && self.totals.len() >= capacity))
        {
            self.full += 1;
            return;
        }
        let before = self.per_device.insert(dev, totals);
        // A smaller total is a new flow of the same 5-tuple (the old one was evicted).
        let grew = |now: u64, was: u64| if now >= was { now - was } else { now };
        let sum = self.totals.entry(key).or_insert(Sum {
            counts: [0, 0],
            updated: now,
            devices: 0,
        });
        let was = before.unwrap_or_default();
        sum.counts[0] += grew(totals[0], was[0]);
        sum.counts[1] += grew(totals[1], was[1]);
        sum.updated = now;
        if before.is_none() {
            sum.devices += 1;
        }
        if last {
            sum.devices = sum.devices.saturating_sub(1);
            self.per_device.remove(&dev);
            self.totals_ended.push_back((now, key));
        }
    }

    /// What the devices of `netns` saw of the socket `local` ↔ `remote`; `None` when they saw
    /// nothing of it.
    pub(crate) fn device_totals(
        &self,
        netns: NetnsId,
        transport: Transport,
        local: (IpAddr, u16),
        remote: (IpAddr, u16),
    ) -> Option<DeviceTotals> {
        let sent = self
            .totals
            .get(&(netns, true, transport, local.0, local.1, remote.0, remote.1));
        let received = self.totals.get(&(
            netns, false, transport, remote.0, remote.1, local.0, local.1,
        ));
        if sent.is_none() && received.is_none() {
            return None;
        }
        let (s, r) = (
            sent.map_or([0, 0], |t| t.counts),
            received.map_or([0, 0], |t| t.counts),
        );
        Some(DeviceTotals {
            packets_sent: s[0],
            bytes_sent: s[1],
            packets_received: r[0],
            bytes_received: r[1],
        })
    }

    /// Forgets closed sockets and ended flows past their linger time.
    fn expire(&mut self, now: Instant, linger: Duration) {
        while let Some(&(at, key)) = self.stats_closed.front() {
            if now.duration_since(at) < linger {
                break;
            }
            self.stats_closed.pop_front();
            self.stats.remove(&key);
        }
        while let Some(&(at, key)) = self.totals_ended.front() {
            if now.duration_since(at) < linger {
                break;
            }
            self.totals_ended.pop_front();
            // Unless the flow came back on some device meanwhile.
            if self
                .totals
                .get(&key)
                .is_some_and(|t| t.updated <= at && t.devices == 0)
            {
                self.totals.remove(&key);
            }
        }
    }

    pub(crate) fn sizes(&self) -> (usize, usize) {
        (self.stats.len(), self.totals.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const NS: NetnsId = NetnsId {
        inode: 5,
        cookie: 6,
    };

    fn a(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 62, 0, last))
    }

    #[test]
    fn sums_a_flow_over_devices_and_keeps_growing_across_reads() {
        let mut j = Join::default();
        let linger = Duration::from_secs(30);
        let dev = |i| DeviceRef {
            netns: NS,
            ifindex: i,
        };
        let (l, r) = ((a(1), 40000), (a(2), 80));
        j.flow(
            dev(2),
            Direction::Egress,
            Transport::Tcp,
            l,
            r,
            [3, 300],
            false,
            10,
            linger,
        );
        j.flow(
            dev(2),
            Direction::Egress,
            Transport::Tcp,
            l,
            r,
            [5, 500],
            false,
            10,
            linger,
        );
        j.flow(
            dev(3),
            Direction::Egress,
            Transport::Tcp,
            l,
            r,
            [1, 60],
            true,
            10,
            linger,
        );
        j.flow(
            dev(2),
            Direction::Ingress,
            Transport::Tcp,
            r,
            l,
            [4, 4000],
            false,
            10,
            linger,
        );
        let t = j.device_totals(NS, Transport::Tcp, l, r).expect("joined");
        assert_eq!(
            t,
            DeviceTotals {
                packets_sent: 6,
                bytes_sent: 560,
                packets_received: 4,
                bytes_received: 4000,
            }
        );
        // Another namespace's devices are not this socket's.
        let other = NetnsId {
            inode: 5,
            cookie: 7,
        };
        assert!(j.device_totals(other, Transport::Tcp, l, r).is_none());
        // Full: a new flow is not made, and counted.
        let mut small = Join::default();
        small.flow(
            dev(2),
            Direction::Egress,
            Transport::Tcp,
            l,
            r,
            [1, 1],
            false,
            1,
            linger,
        );
        small.flow(
            dev(2),
            Direction::Ingress,
            Transport::Tcp,
            r,
            l,
            [1, 1],
            false,
            1,
            linger,
        );
        assert_eq!(small.full, 1);
    }

    #[test]
    fn a_socket_is_found_from_either_direction_of_its_flow_and_ages_out_after_close() {
        let mut j = Join::default();
        let mut e = SocketEvent {
            netns: NS,
            transport: Transport::Tcp,
            kind: SocketEventKind::Established,
            local_addr: a(1),
            local_port: 40000,
            remote_addr: a(2),
            remote_port: 80,
            srtt_us: 120,
            rttvar_us: 60,
            ..SocketEvent::default()
        };
        j.observe(&e, 10, Duration::ZERO);
        e.kind = SocketEventKind::Retransmit;
        e.srtt_us = 0;
        e.total_retrans = 2;
        j.observe(&e, 10, Duration::ZERO);
        let want = SocketStats {
            srtt_us: 120,
            rttvar_us: 60,
            total_retrans: 2,
        };
        let ns = NS;
        assert_eq!(
            j.stats(ns, Transport::Tcp, (a(1), 40000), (a(2), 80)),
            Some(want)
        );
        assert_eq!(
            j.stats(ns, Transport::Tcp, (a(2), 80), (a(1), 40000)),
            Some(want)
        );
        assert_eq!(j.stats(ns, Transport::Udp, (a(2), 80), (a(1), 40000)), None);
        e.kind = SocketEventKind::Close;
        j.observe(&e, 10, Duration::ZERO);
        // Zero linger: gone at the next update.
        e.local_port = 40001;
        e.kind = SocketEventKind::Established;
        j.observe(&e, 10, Duration::ZERO);
        assert_eq!(j.stats(ns, Transport::Tcp, (a(1), 40000), (a(2), 80)), None);
        assert_eq!(j.sizes().0, 1);
    }
}

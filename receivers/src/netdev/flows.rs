//! Harvesting the kernel's flow table (`periscope_flows`, `ebpf/packet_flow.h`): every
//! `counters_interval` the whole per-CPU hash is read with batched lookups
//! (`BPF_MAP_LOOKUP_BATCH`, see [`super::table_syscalls`]), each entry's CPUs are summed, and
//! every flow whose totals changed becomes a [`FlowCounters`] event with its cumulative totals.
//!
//! The table may hold the flows of many namespaces (the namespace is in every key): one
//! [`FlowHarvester`] per table.
//!
//! **Eviction.** The programs never delete: an entry idle (no packet on any CPU) for longer
//! than the idle timeout is deleted here with `BPF_MAP_LOOKUP_AND_DELETE_ELEM`, whose values
//! are the entry's final ones, and the flow's last point goes out (`last: true`). Small race:
//! a program that looked the entry up just before the deletion still adds its packet to the
//! element being freed, and that packet is lost from the flow (never from the device's
//! counters, which count every packet): it takes a packet arriving in the microseconds of
//! the deletion of a flow that was silent for a whole idle timeout. A packet after the
//! deletion inserts a fresh entry: a new flow, whose cumulative totals start again.
//!
//! **What user space keeps.** Several kernel entries may make one downstream flow (packets
//! of one device and direction seen at two hooks; ICMP types, which the kernel key keeps but
//! events do not; IP protocols that are all `other`): they are summed per flow, and the
//! totals of entries evicted while others of the same flow live on are kept with it. Every
//! flow kept has at least one entry in the kernel table, so user space holds at most
//! `table_size` flows (about 200 bytes each): the bound is the kernel table's.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use periscope_pipeline::model::{
    DeviceRef, Direction, FlowCounters, Locality, NetnsId, NetworkType, Transport,
};

use super::decode::{device, direction, transport_and_ports};
use super::table_syscalls::{self as sys, TableReader};
use crate::shared::ebpf::{FlowKey, FlowValue, MonoClock};

/// What identifies a flow downstream: the key of a [`FlowCounters`] event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FlowId {
    pub(super) device: DeviceRef,
    pub(super) direction: Direction,
    pub(super) network: NetworkType,
    pub(super) transport: Transport,
    pub(super) src_addr: IpAddr,
    pub(super) dst_addr: IpAddr,
    pub(super) src_port: u16,
    pub(super) dst_port: u16,
}

impl FlowId {
    /// The downstream identity of a kernel key, by the rules packet records follow
    /// (`decode_packet`): addresses of IPv4/IPv6 only, ports of TCP/UDP only.
    pub(super) fn of(key: &FlowKey) -> Option<FlowId> {
        let direction = direction(key.direction)?;
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let (network, src_addr, dst_addr) = match key.ip_version {
            4 => (NetworkType::Ipv4, v4(&key.saddr), v4(&key.daddr)),
            6 => (
                NetworkType::Ipv6,
                IpAddr::V6(Ipv6Addr::from(key.saddr)),
                IpAddr::V6(Ipv6Addr::from(key.daddr)),
            ),
            _ => (NetworkType::Other, unspecified, unspecified),
        };
        let (transport, src_port, dst_port) =
            transport_and_ports(network, key.l4_proto, key.sport, key.dport);
        Some(FlowId {
            device: device(key.netns_inode, key.netns_cookie, key.ifindex),
            direction,
            network,
            transport,
            src_addr,
            dst_addr,
            src_port,
            dst_port,
        })
    }
}

fn v4(a: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
}

/// One downstream flow: what its evicted entries had, what its live entries have now.
#[derive(Clone, Copy, Debug, Default)]
struct Tracked {
    /// Sum of the final values of its entries evicted so far.
    evicted: FlowValue,
    /// Sum of its entries still in the table, as this harvest read them.
    live: FlowValue,
    /// How many of its entries this harvest found still in the table.
    live_entries: u32,
    /// Packets and bytes of the last point sent (a flow that did not change sends none).
    reported: (u64, u64),
}

impl Tracked {
    fn total(&self) -> FlowValue {
        let mut t = self.evicted;
        t.add(&self.live);
        t
    }
}

/// Options of the flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOptions {
    /// Entries of the kernel table (`max_entries`).
    pub table_size: u32,
    /// Entries without a packet for this long are evicted (their flow ends).
    pub idle_timeout: Duration,
}

/// What one harvest found besides the flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HarvestStats {
    /// Entries read.
    pub entries: usize,
    /// Entries evicted (idle).
    pub evicted: usize,
    /// Whether the batched lookup was used (else one syscall per key).
    pub batched: bool,
}

/// The user-space side of one flow table (see the module docs).
pub(super) struct FlowHarvester {
    tracked: HashMap<FlowId, Tracked>,
    idle_timeout_ns: u64,
    reader: TableReader<FlowKey, FlowValue>,
}

impl FlowHarvester {
    pub(super) fn new(options: FlowOptions) -> anyhow::Result<FlowHarvester> {
        Ok(FlowHarvester {
            tracked: HashMap::new(),
            idle_timeout_ns: u64::try_from(options.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            reader: TableReader::new()?,
        })
    }

    /// Reads the table `map`, evicts idle entries and appends a point for every flow that
    /// changed (and a last one for every flow that ended) to `out`, stamped `now_unix_ns`.
    pub(super) fn harvest(
        &mut self,
        map: BorrowedFd<'_>,
        now_unix_ns: u64,
        out: &mut Vec<FlowCounters>,
    ) -> HarvestStats {
        let clock = &MonoClock::now();
        let now_mono = MonoClock::mono_now_ns();
        for t in self.tracked.values_mut() {
            t.live = FlowValue::default();
            t.live_entries = 0;
        }
        let mut stats = HarvestStats::default();
        let idle = self.idle_timeout_ns;
        let tracked = &mut self.tracked;
        let read = self.reader.read_all(map, &mut |key, value| {
            stats.entries += 1;
            let Some(id) = FlowId::of(key) else {
                return;
            };
            let t = tracked.entry(id).or_default();
            if value.last_seen_ns.saturating_add(idle) < now_mono {
                // Idle: its final values come with the deletion (see the module docs).
                match sys::lookup_and_delete(map, key, value) {
                    Ok(Some(last)) => {
                        t.evicted.add(&last);
                        stats.evicted += 1;
                        return;
                    }
                    Ok(None) => return, // deleted meanwhile (a device's flows forgotten)
                    Err(e) => tracing::debug!("evicting a flow (kept): {e}"),
                }
            }
            t.live.add(value);
            t.live_entries += 1;
        });
        match read {
            Ok(batched) => stats.batched = batched,
            Err(e) => {
                tracing::warn!("reading the flow table: {e}");
                return stats;
            }
        }
        self.tracked.retain(|id, t| {
            let ended = t.live_entries == 0;
            let total = t.total();
            if ended || (total.packets, total.bytes) != t.reported {
                out.push(point(id, &total, clock, now_unix_ns, ended));
                t.reported = (total.packets, total.bytes);
            }
            !ended
        });
        stats
    }

    /// The final points (`last: true`) of a device that went away (`ifindex`), or of every
    /// device of a namespace that did, from the table as it is now; the entries stay in the
    /// table until [`forget_device`](Self::forget_device) or until the table goes.
    pub(super) fn last_of(
        &mut self,
        map: BorrowedFd<'_>,
        netns: NetnsId,
        ifindex: Option<u32>,
        now_unix_ns: u64,
        out: &mut Vec<FlowCounters>,
    ) {
        let clock = &MonoClock::now();
        // By cookie: an inode comes back with later namespaces.
        let ours = |n: NetnsId, i: u32| n == netns && ifindex.is_none_or(|x| x == i);
        let mut live: HashMap<FlowId, FlowValue> = HashMap::new();
        let read = self.reader.read_all(map, &mut |key, value| {
            let n = NetnsId {
                inode: key.netns_inode,
                cookie: key.netns_cookie,
            };
            if !ours(n, key.ifindex) {
                return;
            }
            if let Some(id) = FlowId::of(key) {
                live.entry(id).or_default().add(value);
            }
        });
        if let Err(e) = read {
            tracing::warn!("reading the flow table: {e}");
        }
        for (id, value) in live {
            let mut total = self
                .tracked
                .remove(&id)
                .map(|t| t.evicted)
                .unwrap_or_default();
            total.add(&value);
            out.push(point(&id, &total, clock, now_unix_ns, true));
        }
        self.tracked
            .retain(|id, _| !ours(id.device.netns, id.device.ifindex));
    }

    /// Deletes a device's entries from the table and what user space kept of them (an
    /// ifindex may be reused by a later device): read its last points first.
    pub(super) fn forget_device(&mut self, map: BorrowedFd<'_>, netns: NetnsId, ifindex: u32) {
        let mut keys = Vec::new();
        let read = self.reader.read_all(map, &mut |key, _| {
            if key.ifindex == ifindex
                && key.netns_inode == netns.inode
                && key.netns_cookie == netns.cookie
            {
                keys.push(*key);
            }
        });
        if let Err(e) = read {
            tracing::warn!("reading the flow table: {e}");
        }
        for k in &keys {
            let _ = sys::delete(map, k);
        }
        self.tracked
            .retain(|id, _| !(id.device.ifindex == ifindex && id.device.netns == netns));
    }
}

fn point(
    id: &FlowId,
    total: &FlowValue,
    clock: &MonoClock,
    now_unix_ns: u64,
    last: bool,
) -> FlowCounters {
    FlowCounters {
        timestamp_ns: now_unix_ns,
        device: id.device,
        direction: id.direction,
        network: id.network,
        transport: id.transport,
        src_addr: id.src_addr,
        dst_addr: id.dst_addr,
        src_port: id.src_port,
        dst_port: id.dst_port,
        packets: total.packets,
        bytes: total.bytes,
        first_seen_ns: clock.to_unix_ns(total.first_seen_ns),
        last_seen_ns: clock.to_unix_ns(total.last_seen_ns),
        tcp_flags: total.tcp_flags,
        last,
        // Classified by the attacher from the namespace's addresses.
        locality: Locality::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::ebpf::records::{PERISCOPE_DIR_EGRESS, PERISCOPE_HOOK_TC};

    #[test]
    fn kernel_keys_map_to_the_identity_packet_records_have() {
        let mut k = FlowKey {
            netns_inode: 5,
            netns_cookie: 9,
            ifindex: 3,
            direction: PERISCOPE_DIR_EGRESS,
            hook: PERISCOPE_HOOK_TC,
            l4_proto: 17,
            ip_version: 4,
            sport: 1000,
            dport: 53,
            ..FlowKey::default()
        };
        k.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let id = FlowId::of(&k).unwrap();
        assert_eq!(id.direction, Direction::Egress);
        assert_eq!(
            (id.transport, id.src_port, id.dst_port),
            (Transport::Udp, 1000, 53)
        );
        assert_eq!(id.src_addr, "10.0.0.1".parse::<IpAddr>().unwrap());
        // ICMP: the kernel keys type and code, events carry no ports: one flow.
        k.l4_proto = 1;
        k.sport = 8;
        let a = FlowId::of(&k).unwrap();
        k.sport = 0;
        assert_eq!(a, FlowId::of(&k).unwrap());
        assert_eq!((a.src_port, a.dst_port), (0, 0));
        k.direction = 7;
        assert!(FlowId::of(&k).is_none());
    }
}

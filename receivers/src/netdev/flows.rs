//! Draining the kernel's flow table (`ebpf/packet_flow.h`; the scheme is documented at
//! `struct periscope_flow_slot` in `ebpf/periscope.h`): per-CPU slots in two arrays, written in
//! alternate generations. A drain makes the next generation current, waits for an RCU grace
//! period (`membarrier(MEMBARRIER_CMD_GLOBAL)`: every program that still wrote the old
//! generation has returned), then reads the old table whole with batched lookups: its slots of
//! that generation are final, so nothing is lost or counted twice, and no slot is deleted
//! under a program that may be writing it.
//!
//! A packet a slot took is not in the device's kernel counters (one table update per packet
//! is what makes flows cost little more than counters): every drained slot is added to its
//! device's totals here ([`FlowTable::devices`]), which the counters read adds to the
//! kernel's. So a device's counters stay exact whatever happens to its flows.
//!
//! **What user space keeps.** Several slots may make one downstream flow (CPUs, packets of
//! one device and direction seen at two hooks, ICMP types, which the kernel key keeps but
//! events do not; IP protocols that are all `other`): they are summed per flow. At most
//! `table_size` flows are tracked; a flow that finds no room is counted in its device's
//! overflow, like a packet that found no slot. A flow without a packet for `idle_timeout`
//! ends: its last point goes out (`last: true`) and its room is freed.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::Duration;

use aya::maps::{Array, Map, MapData};

use periscope_pipeline::model::{
    DeviceRef, Direction, FlowCounters, Locality, NetnsId, NetworkType, Transport,
};

use super::decode::{device, direction, transport_and_ports};
use super::shared_maps::SharedMaps;
use super::table_syscalls::TableReader;
use crate::shared::ebpf::{names, FlowKey, FlowSlot, FlowValue, MonoClock};

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

/// One downstream flow.
#[derive(Clone, Copy, Debug, Default)]
struct Tracked {
    /// Everything drained of it so far.
    total: FlowValue,
    /// Packets and bytes of the last point sent (a flow that did not change sends none).
    reported: (u64, u64),
}

/// Options of the flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowOptions {
    /// Most flows tracked at once (user space).
    pub table_size: u32,
    /// Kernel slots per CPU and generation (`max_entries` of each array; a power of two).
    pub slots: u32,
    /// A flow without a packet for this long ends.
    pub idle_timeout: Duration,
}

/// The key of a device's counters: namespace, ifindex, direction, transport, locality.
pub(super) type DeviceKey = (NetnsId, u32, Direction, Transport, Locality);

/// What the drains added to one device key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct DeviceFlows {
    /// Packets and bytes the slots counted (not in the kernel's counters).
    pub(super) packets: u64,
    pub(super) bytes: u64,
    /// Of those, what no tracked flow had room for.
    pub(super) overflow_packets: u64,
    pub(super) overflow_bytes: u64,
}

/// `membarrier(2)`'s `MEMBARRIER_CMD_GLOBAL`: returns after an RCU grace period.
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1;

/// The user-space side of the flow table (see the module docs).
pub(super) struct FlowTable {
    tables: [MapData; 2],
    generation: Array<MapData, u32>,
    reader: TableReader<u32, FlowSlot>,
    tracked: HashMap<FlowId, Tracked>,
    devices: HashMap<DeviceKey, DeviceFlows>,
    table_size: usize,
    idle_timeout_ns: u64,
    /// Whether the grace-period wait failed once (then a sleep stands in for it).
    grace_failed: bool,
    /// A drain happened since the last [`harvest`](Self::harvest).
    drained: bool,
}

impl FlowTable {
    /// Opens the tables from the receiver's shared maps.
    pub(super) fn open(maps: &SharedMaps, options: FlowOptions) -> anyhow::Result<FlowTable> {
        let table = |name: &str| -> anyhow::Result<MapData> {
            match maps.open(name)? {
                Map::PerCpuArray(m) => Ok(m),
                _ => anyhow::bail!("{name} is not a per-CPU array"),
            }
        };
        Ok(FlowTable {
            tables: [table(names::FLOWS[0])?, table(names::FLOWS[1])?],
            generation: Array::try_from(maps.open(names::FLOW_GENERATION)?)?,
            reader: TableReader::new()?,
            tracked: HashMap::new(),
            devices: HashMap::new(),
            table_size: options.table_size as usize,
            idle_timeout_ns: u64::try_from(options.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            grace_failed: false,
            drained: false,
        })
    }

    /// Moves what the kernel counted since the last drain into the tracked flows and the
    /// devices' totals.
    pub(super) fn drain(&mut self) {
        self.drained = true;
        let g = match self.generation.get(&0, 0) {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!("reading the flow generation: {e}");
                return;
            }
        };
        if let Err(e) = self.generation.set(0, g.wrapping_add(1), 0) {
            tracing::warn!("advancing the flow generation: {e}");
            return;
        }
        self.grace_period();
        let (tracked, devices, cap) = (&mut self.tracked, &mut self.devices, self.table_size);
        let table = self.tables[(g & 1) as usize].fd().as_fd();
        let read = self.reader.read_per_cpu(table, &mut |_, per_cpu| {
            for slot in per_cpu {
                if slot.value.generation == g && slot.value.packets > 0 {
                    fold(tracked, devices, cap, slot);
                }
            }
        });
        if let Err(e) = read {
            tracing::warn!("reading the flow table: {e}");
        }
    }

    /// Waits until every program run that may have read the old generation has returned.
    fn grace_period(&mut self) {
        // SAFETY: membarrier takes no pointers.
        let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
        if r != 0 {
            if !self.grace_failed {
                tracing::warn!(
                    "membarrier(MEMBARRIER_CMD_GLOBAL) failed ({}): the flow table waits 20 ms \
                     before each drain instead (a program run takes microseconds)",
                    std::io::Error::last_os_error()
                );
                self.grace_failed = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the drains added to each device key (packets the kernel's counters lack).
    pub(super) fn devices(&self) -> &HashMap<DeviceKey, DeviceFlows> {
        &self.devices
    }

    /// Appends a point for every flow that changed, and a last one for every flow that
    /// ended, to `out`, stamped `now_unix_ns`. Drains first unless a counters read just did.
    pub(super) fn harvest(&mut self, now_unix_ns: u64, out: &mut Vec<FlowCounters>) {
        if !self.drained {
            self.drain();
        }
        self.drained = false;
        let clock = &MonoClock::now();
        let now_mono = MonoClock::mono_now_ns();
        let idle = self.idle_timeout_ns;
        self.tracked.retain(|id, t| {
            let ended = t.total.last_seen_ns.saturating_add(idle) < now_mono;
            if ended || (t.total.packets, t.total.bytes) != t.reported {
                out.push(point(id, &t.total, clock, now_unix_ns, ended));
                t.reported = (t.total.packets, t.total.bytes);
            }
            !ended
        });
    }

    /// The last points (`last: true`) of the flows of a device that went away (`ifindex`),
    /// or of every device of a namespace that did, as the last drain left them; they are no
    /// longer tracked.
    pub(super) fn last_of(
        &mut self,
        netns: NetnsId,
        ifindex: Option<u32>,
        now_unix_ns: u64,
        out: &mut Vec<FlowCounters>,
    ) {
        let clock = &MonoClock::now();
        // By cookie: an inode comes back with later namespaces.
        let ours = |id: &FlowId| {
            id.device.netns == netns && ifindex.is_none_or(|x| x == id.device.ifindex)
        };
        self.tracked.retain(|id, t| {
            if !ours(id) {
                return true;
            }
            out.push(point(id, &t.total, clock, now_unix_ns, true));
            false
        });
    }

    /// Forgets the flows and device totals of the devices `gone` says yes to (an ifindex may
    /// be reused by a later device): read their last points and counters first.
    pub(super) fn forget(&mut self, gone: &dyn Fn(NetnsId, u32) -> bool) {
        self.tracked
            .retain(|id, _| !gone(id.device.netns, id.device.ifindex));
        self.devices.retain(|(n, i, _, _, _), _| !gone(*n, *i));
    }
}

/// Adds one CPU's slot of the drained generation to its device and its flow.
fn fold(
    tracked: &mut HashMap<FlowId, Tracked>,
    devices: &mut HashMap<DeviceKey, DeviceFlows>,
    cap: usize,
    slot: &FlowSlot,
) {
    let (key, value) = (&slot.key, &slot.value);
    let Some(id) = FlowId::of(key) else {
        return; // not a direction the programs write: a bug, not traffic
    };
    let netns = NetnsId {
        inode: key.netns_inode,
        cookie: key.netns_cookie,
    };
    let device = devices
        .entry((
            netns,
            key.ifindex,
            id.direction,
            Transport::from_ip_protocol(key.l4_proto),
            Locality::from_kernel(key.locality),
        ))
        .or_default();
    device.packets += value.packets;
    device.bytes += value.bytes;
    let room = tracked.len() < cap;
    match tracked.get_mut(&id) {
        Some(t) => t.total.add(value),
        None if room => {
            let mut t = Tracked::default();
            t.total.add(value);
            tracked.insert(id, t);
        }
        None => {
            device.overflow_packets += value.packets;
            device.overflow_bytes += value.bytes;
        }
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

    fn key(sport: u16) -> FlowKey {
        let mut k = FlowKey {
            netns_inode: 5,
            netns_cookie: 9,
            ifindex: 3,
            direction: PERISCOPE_DIR_EGRESS,
            hook: PERISCOPE_HOOK_TC,
            l4_proto: 17,
            ip_version: 4,
            sport,
            dport: 53,
            ..FlowKey::default()
        };
        k.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        k
    }

    #[test]
    fn kernel_keys_map_to_the_identity_packet_records_have() {
        let mut k = key(1000);
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

    #[test]
    fn every_drained_packet_reaches_its_device_and_flows_past_the_cap_overflow() {
        let slot = |sport: u16, packets: u64| FlowSlot {
            key: key(sport),
            value: FlowValue {
                packets,
                bytes: packets * 100,
                first_seen_ns: 1,
                last_seen_ns: 2,
                ..FlowValue::default()
            },
        };
        let (mut tracked, mut devices) = (HashMap::new(), HashMap::new());
        // Two CPUs' slots of one flow, then two more flows with room for one.
        for s in [slot(1, 3), slot(1, 4), slot(2, 5), slot(3, 6)] {
            fold(&mut tracked, &mut devices, 2, &s);
        }
        assert_eq!(tracked.len(), 2);
        assert_eq!(tracked[&FlowId::of(&key(1)).unwrap()].total.packets, 7);
        let d = devices.values().next().copied().unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!((d.packets, d.bytes), (18, 1800));
        assert_eq!((d.overflow_packets, d.overflow_bytes), (6, 600));
        // The tracked flows and the overflow add up to the device.
        let in_flows: u64 = tracked.values().map(|t| t.total.packets).sum();
        assert_eq!(in_flows + d.overflow_packets, d.packets);
    }
}

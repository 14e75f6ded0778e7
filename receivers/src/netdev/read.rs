//! Reading the maps every instance of a receiver shares (`shared_maps.rs`): the ring buffer
//! (packet, DNS and burst records), the exact per-CPU counters and the loss counters. Counters
//! are read for every namespace at once, or for one namespace or one device, so that last
//! counters can be read when either goes away.

use std::collections::HashMap;

use std::os::fd::AsFd;

use aya::maps::{Map, MapData, PerCpuArray, RingBuf};
use aya::Pod;

use periscope_pipeline::model::{
    BurstEvent, DeviceCounters, Direction, DnsEvent, FlowCounters, Locality, NetnsId, PacketEvent,
    Transport,
};
use periscope_pipeline::DnsTable;

use super::decode::{decode_burst, decode_dns, decode_packet, device, direction, is_dns_record};
use super::flows::{FlowOptions, FlowTable};
use super::shared_maps::SharedMaps;
use super::table_syscalls::{self as sys, TableReader};
use crate::shared::ebpf::records::PERISCOPE_RECORD_BURST;
use crate::shared::ebpf::{names, BootClock, BurstStats, DevCounters, DevKey, Stats};

/// What draining found besides packet events, over every namespace: kept by the attacher
/// and taken by the receiver.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    /// Burst reports, for [`Attacher::take_bursts`](super::Attacher::take_bursts).
    pub(super) bursts: Vec<BurstEvent>,
    /// Records that could not be decoded (a bug or a version mismatch; the first is logged).
    pub(super) decode_errors: u64,
    /// DNS records whose payload did not parse (the first is logged).
    pub(super) dns_errors: u64,
}

/// Which counters to read.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    /// Of the namespaces `keep` says yes to.
    Namespaces(&'a dyn Fn(NetnsId) -> bool),
    /// Of one namespace.
    Namespace(NetnsId),
    /// Of one device.
    Device(NetnsId, u32),
}

impl Scope<'_> {
    fn takes(&self, netns: NetnsId, ifindex: u32) -> bool {
        match *self {
            Scope::Namespaces(keep) => keep(netns),
            Scope::Namespace(n) => n == netns,
            Scope::Device(n, i) => n == netns && i == ifindex,
        }
    }
}

/// Records delivered per namespace, device, direction, transport and locality.
type DeliveredKey = (NetnsId, u32, Direction, Transport, Locality);

/// The shared maps user space reads, and what it read so far.
pub(super) struct Reader {
    ring: RingBuf<MapData>,
    /// `periscope_counters` (a per-CPU hash of [`DevKey`] → [`DevCounters`]), read whole with
    /// batched lookups.
    counters: MapData,
    table: TableReader<DevKey, DevCounters>,
    stats: PerCpuArray<MapData, Stats>,
    burst_stats: PerCpuArray<MapData, BurstStats>,
    /// Losses (`periscope_stats.records_lost`) read last time.
    lost_seen: u64,
    /// Records read from the ring buffer.
    delivered: HashMap<DeliveredKey, u64>,
    /// Burst losses (records, state) read last time.
    burst_losses_seen: (u64, u64),
    /// The flow table and what was drained of it, with `flows` on.
    flows: Option<FlowTable>,
}

impl Reader {
    /// Reads the ring buffer `periscope_events`, the hash `periscope_counters`, the arrays
    /// `periscope_stats` and `periscope_burst_stats` (opened from their pins).
    pub(super) fn new(maps: &SharedMaps) -> anyhow::Result<Reader> {
        Ok(Reader {
            ring: RingBuf::try_from(maps.open(names::EVENTS)?)?,
            counters: match maps.open(names::COUNTERS)? {
                Map::PerCpuHashMap(m) => m,
                _ => anyhow::bail!("periscope_counters is not a per-CPU hash"),
            },
            table: TableReader::new()?,
            stats: PerCpuArray::try_from(maps.open(names::STATS)?)?,
            burst_stats: PerCpuArray::try_from(maps.open(names::BURST_STATS)?)?,
            lost_seen: 0,
            delivered: HashMap::new(),
            burst_losses_seen: (0, 0),
            flows: None,
        })
    }

    /// Reads the flow table too (the programs count flows: `PERISCOPE_CFG_FLOWS`).
    pub(super) fn with_flows(
        mut self,
        maps: &SharedMaps,
        options: FlowOptions,
    ) -> anyhow::Result<Reader> {
        self.flows = Some(FlowTable::open(maps, options)?);
        Ok(self)
    }

    /// The flows that changed since the last call, and the last points of those that ended
    /// (idle).
    pub(super) fn flows(&mut self, now: u64, out: &mut Vec<FlowCounters>) {
        if let Some(table) = &mut self.flows {
            table.harvest(now, out);
        }
    }

    /// The last points of the flows of one device (`ifindex`) or of every device of `netns`
    /// (after a [`counters`](Self::counters) read of the same scope, which drains the table).
    pub(super) fn last_flows(
        &mut self,
        netns: NetnsId,
        ifindex: Option<u32>,
        now: u64,
        out: &mut Vec<FlowCounters>,
    ) {
        if let Some(table) = &mut self.flows {
            table.last_of(netns, ifindex, now, out);
        }
    }

    /// Reads the ring buffer: packet events go to `f`, DNS events to `dns`, burst reports and
    /// errors to `decoded`. Returns how many packet events there were.
    pub(super) fn drain(
        &mut self,
        clock: &BootClock,
        names: &DnsTable,
        decoded: &mut Decoded,
        f: &mut dyn FnMut(PacketEvent),
        dns: &mut Vec<DnsEvent>,
    ) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.first() == Some(&PERISCOPE_RECORD_BURST) {
                match decode_burst(&item, clock) {
                    Ok(b) => decoded.bursts.push(b),
                    Err(e) => {
                        if decoded.decode_errors == 0 {
                            tracing::error!("undecodable burst record: {e}");
                        }
                        decoded.decode_errors += 1;
                    }
                }
                continue;
            }
            if is_dns_record(&item) {
                match decode_dns(&item, clock, names) {
                    Ok(Some(d)) => dns.push(d),
                    Ok(None) => {}
                    Err(e) => {
                        if decoded.dns_errors == 0 {
                            tracing::warn!(
                                "DNS record: {e} (first of its kind; all are counted as errors)"
                            );
                        }
                        decoded.dns_errors += 1;
                    }
                }
                continue;
            }
            match decode_packet(&item, clock) {
                Ok(ev) => {
                    n += 1;
                    *self
                        .delivered
                        .entry((
                            ev.device.netns,
                            ev.device.ifindex,
                            ev.direction,
                            ev.transport,
                            ev.locality,
                        ))
                        .or_default() += 1;
                    f(ev);
                }
                Err(e) => {
                    if decoded.decode_errors == 0 {
                        tracing::error!("undecodable packet record: {e}");
                    }
                    decoded.decode_errors += 1;
                }
            }
        }
        n
    }

    /// Exact totals per device, direction and transport of the namespaces and devices in
    /// `scope`, stamped `now`, sorted by namespace, device, direction and transport.
    pub(super) fn counters(&mut self, now: u64, scope: Scope<'_>) -> Vec<DeviceCounters> {
        let mut agg: HashMap<DeliveredKey, DeviceCounters> = HashMap::new();
        let flows = self.flows.is_some();
        // With flows on, most packets are in the flow slots only: drain them first.
        if let Some(table) = &mut self.flows {
            table.drain();
        }
        let read = self
            .table
            .read_all(self.counters.fd().as_fd(), &mut |key, c| {
                let netns = NetnsId {
                    inode: key.netns_inode,
                    cookie: key.netns_cookie,
                };
                if !scope.takes(netns, key.ifindex) {
                    return;
                }
                let Some(direction) = direction(key.direction) else {
                    return;
                };
                let transport = Transport::from_ip_protocol(key.l4_proto);
                let locality = Locality::from_kernel(key.locality);
                let e = entry(
                    &mut agg,
                    (netns, key.ifindex, direction, transport, locality),
                    now,
                );
                e.packets += c.packets;
                e.bytes += c.bytes;
                e.records_lost += c.records_lost;
                e.flows = flows;
                e.flows_overflow_packets += c.flows_overflow_packets;
                e.flows_overflow_bytes += c.flows_overflow_bytes;
            });
        if let Err(e) = read {
            tracing::warn!("reading periscope_counters: {e}");
        }
        if let Some(table) = &self.flows {
            for (&(netns, ifindex, direction, transport, locality), f) in table.devices() {
                if !scope.takes(netns, ifindex) {
                    continue;
                }
                let e = entry(
                    &mut agg,
                    (netns, ifindex, direction, transport, locality),
                    now,
                );
                e.flows = true;
                e.packets += f.packets;
                e.bytes += f.bytes;
                e.flows_overflow_packets += f.overflow_packets;
                e.flows_overflow_bytes += f.overflow_bytes;
            }
        }
        for (key, c) in agg.iter_mut() {
            c.records_delivered = self.delivered.get(key).copied().unwrap_or(0);
        }
        let mut v: Vec<_> = agg.into_values().collect();
        v.sort_by_key(|c| {
            (
                c.device.netns.cookie,
                c.device.ifindex,
                c.direction,
                c.transport,
                c.locality,
            )
        });
        v
    }

    /// Deletes the counters of the devices `gone` says yes to (by namespace and ifindex) from
    /// the kernel's map, with what was counted of their records here (an ifindex may be
    /// reused by a later device): read them first.
    pub(super) fn forget(&mut self, gone: impl Fn(NetnsId, u32) -> bool) {
        let mut keys: Vec<DevKey> = Vec::new();
        let read = self
            .table
            .read_all(self.counters.fd().as_fd(), &mut |k, _| {
                let n = NetnsId {
                    inode: k.netns_inode,
                    cookie: k.netns_cookie,
                };
                if gone(n, k.ifindex) {
                    keys.push(*k);
                }
            });
        if let Err(e) = read {
            tracing::warn!("reading periscope_counters: {e}");
        }
        for k in &keys {
            let _ = sys::delete(self.counters.fd().as_fd(), k);
        }
        self.delivered.retain(|(n, i, _, _, _), _| !gone(*n, *i));
        if let Some(table) = &mut self.flows {
            table.forget(&gone);
        }
    }

    /// Records lost to a full ring buffer since the last call.
    pub(super) fn new_losses(&mut self) -> u64 {
        let Ok(per_cpu) = self.stats.get(&0, 0) else {
            return 0;
        };
        let total = sum(&per_cpu, |a, b| a.add(b)).records_lost;
        let new = total.saturating_sub(self.lost_seen);
        self.lost_seen = total;
        new
    }

    /// Burst records lost to a full ring buffer and packets the burst detector could not
    /// check (its state table full), since the last call.
    pub(super) fn new_burst_losses(&mut self) -> (u64, u64) {
        let mut total = (0, 0);
        if let Ok(per_cpu) = self.burst_stats.get(&0, 0) {
            for s in per_cpu.iter() {
                total.0 += s.records_lost;
                total.1 += s.state_full;
            }
        }
        let new = (
            total.0.saturating_sub(self.burst_losses_seen.0),
            total.1.saturating_sub(self.burst_losses_seen.1),
        );
        self.burst_losses_seen = total;
        new
    }
}

/// The sum of every CPU's value.
fn sum<T: Pod + Copy + Default>(per_cpu: &[T], add: impl Fn(&mut T, &T)) -> T {
    let mut total = T::default();
    per_cpu.iter().for_each(|v| add(&mut total, v));
    total
}

/// The totals of `key` in `agg`: zero, stamped `now`, if it has none yet.
fn entry(
    agg: &mut HashMap<DeliveredKey, DeviceCounters>,
    key: DeliveredKey,
    now: u64,
) -> &mut DeviceCounters {
    agg.entry(key).or_insert_with(|| {
        let (netns, ifindex, direction, transport, locality) = key;
        DeviceCounters {
            timestamp_ns: now,
            device: device(netns.inode, netns.cookie, ifindex),
            direction,
            transport,
            locality,
            ..DeviceCounters::default()
        }
    })
}

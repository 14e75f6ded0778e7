//! The `flow` processor: aggregates packet events into `periscope.network.packets` and
//! `periscope.network.bytes` per namespace, device, direction and transport (and, on request,
//! per 5-tuple), emitted every `interval`.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Emitter, Processor, ProcessorConfig,
};
use periscope_pipeline::config::PositiveDuration;
use periscope_pipeline::devices::{DeviceTable, NamespaceTable};
use periscope_pipeline::model::{
    CgroupCounters, DeviceCounters, DeviceRef, Direction, Event, FlowCounters, KeyValue, Locality,
    Metric, MetricData, NetnsId, NetworkType, NumberPoint, PacketEvent, Payload, Temporality,
    Transport, WorkloadDirection,
};
use periscope_pipeline::telemetry::{names, now_ns};
use periscope_pipeline::SocketTable;

use crate::device_names::{push_netns, DeviceNames};
use crate::gone::{self, Finished, Grace};
use crate::output;
use crate::series::{overflow_attributes, Counts, Series, SeriesTable, TableOptions, TotalsTable};

/// Counts packets and bytes (L2 frame length at the hook) per network namespace, interface,
/// direction and transport, optionally per 5-tuple. Consumes packet events; passes telemetry on.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// How often the counters are emitted (the last values are always emitted at shutdown).
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// `cumulative` (each point counts from the start) or `delta` (since the last point).
    #[serde(default)]
    pub temporality: Temporality,
    /// Add `source.address`, `source.port`, `destination.address` and `destination.port` to
    /// every series: one series per 5-tuple, so mind `cardinality_limit`. Devices of an
    /// `xdp`/`tcx` receiver with `flows` on get exact per-flow totals from the kernel's flow
    /// table (their packet records are not counted again); packets that found that table full
    /// go to the overflow series.
    #[serde(default)]
    pub flow_attributes: bool,
    /// Most series per metric; packets of further series are counted in one series marked
    /// `otel.metric.overflow=true`.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: NonZeroUsize,
}

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}

fn default_cardinality_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(2000).unwrap() }
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            interval: default_interval(),
            temporality: Temporality::Cumulative,
            flow_attributes: false,
            cardinality_limit: default_cardinality_limit(),
        }
    }
}

impl ComponentConfig for FlowConfig {
    const TYPE: &'static str = "flow";
}

impl ProcessorConfig for FlowConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(
            Flow::new(self.clone(), ctx.devices.clone(), ctx.id.to_string())
                .with_namespaces(ctx.namespaces.clone())
                .with_sockets(ctx.sockets.clone()),
        ))
    }
}

/// What a series is keyed by. Addresses and ports stay zero unless `flow_attributes` is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    device: DeviceRef,
    direction: Direction,
    transport: Transport,
    locality: Locality,
    src_addr: IpAddr,
    src_port: u16,
    dst_addr: IpAddr,
    dst_port: u16,
}

/// What a per-workload series (`periscope.workload.*`) is keyed by: the namespace the
/// counted devices serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct WorkloadKey {
    netns: NetnsId,
    direction: WorkloadDirection,
    transport: Transport,
    locality: Locality,
}

/// A device's exact totals per direction, transport and locality (a device counters' key).
type DeviceSeries = (DeviceRef, Direction, Transport, Locality);

/// What a cgroup series is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CgroupKey {
    cgroup_id: u64,
    direction: Direction,
    network: NetworkType,
    transport: Transport,
}

/// Packets and bytes of a series (`[PACKETS]`, `[BYTES]`); for the record metrics, records
/// delivered and lost (`[DELIVERED]`, `[LOST]`).
type Totals = [u64; 2];
const PACKETS: usize = 0;
const BYTES: usize = 1;
const DELIVERED: usize = 0;
const LOST: usize = 1;

/// The running processor.
pub struct Flow {
    config: FlowConfig,
    /// The names of the devices of the series, captured when a series is made.
    names: DeviceNames,
    /// Devices found gone without their final counters.
    grace: Grace<DeviceRef>,
    /// Devices whose series had their final point.
    finished: Finished<DeviceRef>,
    /// Packet records of finished devices (arriving after their final counters), not counted.
    late_records: u64,
    scope_name: String,
    /// Packets and bytes counted from packet records.
    series: SeriesTable<SeriesKey, Totals>,
    /// Exact cumulative totals from the kernel: with `flow_attributes` off, per series
    /// without the 5-tuple (device counters); with it on, per 5-tuple (flow counters of
    /// devices whose flows the kernel counts). Where a series has them they replace what
    /// packet records add up to (records may be sampled or lost). Emitted with `series`, one
    /// overflow series for both.
    exact: TotalsTable<SeriesKey, Totals>,
    /// With `flow_attributes`: devices whose flows come from the kernel (their packet records
    /// are not counted again).
    kernel_flows: FxHashSet<DeviceRef>,
    /// With `flow_attributes`: packets of flows that found the kernel's flow table full, per
    /// series without the 5-tuple; emitted in the overflow series.
    kernel_overflow: TotalsTable<SeriesKey, Totals>,
    /// Packet records a kernel receiver delivered and lost, per series without the 5-tuple.
    records: TotalsTable<SeriesKey, Totals>,
    /// Exact cumulative cgroup_skb totals per cgroup, direction, network and transport.
    cgroups: TotalsTable<CgroupKey, Totals>,
    /// With `flow_attributes`: the socket table, to join flows with their sockets
    /// (`flow/join.rs`).
    sockets: Option<SocketTable>,
    /// Per workload namespace, counted once: the exact totals of the devices that serve their
    /// own namespace (not node-side veth ends, not loopback), added as they grow.
    workload: SeriesTable<WorkloadKey, Totals>,
    /// What of each device series' kernel totals is in `workload` already.
    workload_seen: FxHashMap<DeviceSeries, Totals>,
    /// The counted devices of each workload namespace, and its name as captured: its series
    /// retire when the last of them is gone.
    workload_devices: FxHashMap<NetnsId, (FxHashSet<DeviceRef>, Option<std::sync::Arc<str>>)>,
    next_emit: Instant,
}

const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Flow {
    pub fn new(config: FlowConfig, devices: DeviceTable, scope_name: String) -> Self {
        let next_emit = Instant::now() + config.interval.get();
        let options = TableOptions::new(&scope_name, config.cardinality_limit, config.temporality);
        Flow {
            series: SeriesTable::new(&options, names::NETWORK_PACKETS),
            exact: TotalsTable::new(&options, names::NETWORK_PACKETS),
            kernel_flows: FxHashSet::default(),
            kernel_overflow: TotalsTable::new(&options, names::NETWORK_PACKETS),
            records: TotalsTable::new(&options, names::NETWORK_RECORDS_DELIVERED),
            cgroups: TotalsTable::new(&options, names::CGROUP_PACKETS),
            workload: SeriesTable::new(&options, names::WORKLOAD_PACKETS),
            workload_seen: FxHashMap::default(),
            workload_devices: FxHashMap::default(),
            config,
            names: DeviceNames::new(devices),
            grace: Grace::default(),
            finished: Finished::default(),
            late_records: 0,
            scope_name,
            sockets: None,
            next_emit,
        }
    }

    /// Names the container and pod of node-side devices' peers from what receivers captured
    /// of their namespaces.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.names.set_namespaces(namespaces);
        self
    }

    /// Joins flows with the sockets of `sockets` (with `flow_attributes`): the kernel's
    /// per-flow totals go there, and TCP flows get their socket's RTT and retransmits.
    pub fn with_sockets(mut self, sockets: SocketTable) -> Self {
        if self.config.flow_attributes {
            self.sockets = Some(sockets);
        }
        self
    }

    /// Series held (records, exact totals, record counters) and devices whose names are kept:
    /// what churn must not grow.
    pub fn sizes(&self) -> (usize, usize) {
        (
            self.series.len()
                + self.exact.len()
                + self.records.len()
                + self.kernel_overflow.len()
                + self.workload.len()
                + self.workload_devices.len(),
            self.names.len(),
        )
    }

    #[inline]
    fn record(&mut self, p: &PacketEvent) {
        let mut key = SeriesKey {
            device: p.device,
            direction: p.direction,
            transport: p.transport,
            locality: p.locality,
            src_addr: UNSPECIFIED,
            src_port: 0,
            dst_addr: UNSPECIFIED,
            dst_port: 0,
        };
        if self.config.flow_attributes {
            if self.kernel_flows.contains(&p.device) {
                return; // counted by the kernel's flow table
            }
            key.src_addr = p.src_addr;
            key.src_port = p.src_port;
            key.dst_addr = p.dst_addr;
            key.dst_port = p.dst_port;
        } else if self.exact.contains(&key) {
            return;
        }
        if let Some(totals) = self.series.get_mut(&key) {
            totals[PACKETS] += 1;
            totals[BYTES] += u64::from(p.length);
            return;
        }
        // A new series: not for a device whose final point went out (a late record).
        if self.finished.contains(&p.device) && !self.names.table().is_alive(&p.device) {
            self.late_records += 1;
            return;
        }
        self.names.capture(p.device);
        let totals = self.series.value(key, Totals::default);
        totals[PACKETS] += 1;
        totals[BYTES] += u64::from(p.length);
    }

    fn record_exact(&mut self, c: &DeviceCounters) {
        let key = SeriesKey {
            device: c.device,
            direction: c.direction,
            transport: c.transport,
            locality: c.locality,
            src_addr: UNSPECIFIED,
            src_port: 0,
            dst_addr: UNSPECIFIED,
            dst_port: 0,
        };
        self.names.capture(c.device);
        self.count_workload(c);
        let records = [c.records_delivered, c.records_lost];
        if c.last {
            // The device went away: these are its final totals, its series end with them.
            self.records.set_final(key, records);
            self.finished.mark(c.device);
            self.workload_device_gone(c.device);
        } else {
            self.records.set(key, records);
        }
        if self.config.flow_attributes {
            let same = |k: &SeriesKey| {
                k.device == c.device && k.direction == c.direction && k.transport == c.transport
            };
            if c.flows {
                self.flows_from_kernel(c.device);
                let overflow = [c.flows_overflow_packets, c.flows_overflow_bytes];
                if c.last {
                    self.kernel_overflow.set_final(key, overflow);
                } else {
                    self.kernel_overflow.set(key, overflow);
                }
            }
            if c.last {
                self.series.retire_if(same);
                self.exact.retire_if(same);
            }
            return;
        }
        // Counted from records until now: the kernel's totals include those packets.
        self.series.remove(&key);
        if c.last {
            self.exact.set_final(key, [c.packets, c.bytes]);
        } else {
            self.exact.set(key, [c.packets, c.bytes]);
        }
    }

    /// The exact totals of one flow, from the kernel's flow table (with `flow_attributes`;
    /// without, the device counters have the device's exact totals).
    fn record_flow(&mut self, f: &FlowCounters) {
        if !self.config.flow_attributes {
            return;
        }
        self.flows_from_kernel(f.device);
        self.names.capture(f.device);
        let key = SeriesKey {
            device: f.device,
            direction: f.direction,
            transport: f.transport,
            locality: f.locality,
            src_addr: f.src_addr,
            src_port: f.src_port,
            dst_addr: f.dst_addr,
            dst_port: f.dst_port,
        };
        if let Some(sockets) = &self.sockets {
            join::record_flow(sockets, f);
        }
        if f.last {
            // Idle and evicted, or its device gone: its series ends with this point.
            self.exact.set_final(key, [f.packets, f.bytes]);
        } else {
            self.exact.set(key, [f.packets, f.bytes]);
        }
    }

    /// Adds what a device's exact totals grew by to its workload's series, if the device
    /// counts there: it serves its own namespace (not the node-side end of a veth, whose
    /// packets the pod's own device counts) and is not loopback. Kernel receivers only.
    fn count_workload(&mut self, c: &DeviceCounters) {
        let Some(n) = self.names.captured(&c.device) else {
            return;
        };
        if c.device.netns.cookie == 0 || n.loopback || (n.serves_peer && n.peer.is_some()) {
            return;
        }
        let name = n.netns.clone();
        let series = (c.device, c.direction, c.transport, c.locality);
        let now = [c.packets, c.bytes];
        let seen = self.workload_seen.entry(series).or_default();
        // Kernel totals only grow while the device lives (a new device starts a new entry).
        let delta = [
            now[PACKETS].saturating_sub(seen[PACKETS]),
            now[BYTES].saturating_sub(seen[BYTES]),
        ];
        *seen = now;
        if c.last {
            self.workload_seen.remove(&series);
        }
        let entry = self
            .workload_devices
            .entry(c.device.netns)
            .or_insert_with(|| (FxHashSet::default(), None));
        entry.0.insert(c.device);
        if entry.1.is_none() {
            entry.1 = name;
        }
        if delta == Totals::default() {
            return;
        }
        let key = WorkloadKey {
            netns: c.device.netns,
            direction: WorkloadDirection::of(c.direction, false),
            transport: c.transport,
            locality: c.locality,
        };
        self.workload.value(key, Totals::default).add(delta);
    }

    /// A counted device is gone: its workload's series end with the last of them.
    fn workload_device_gone(&mut self, device: DeviceRef) {
        self.workload_seen.retain(|k, _| k.0 != device);
        let Some((devices, _)) = self.workload_devices.get_mut(&device.netns) else {
            return;
        };
        devices.remove(&device);
        if devices.is_empty() {
            self.workload_devices.remove(&device.netns);
            self.workload.retire_if(|k| k.netns == device.netns);
        }
    }

    fn workload_attributes(&self, key: &WorkloadKey) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(7);
        push_netns(&mut a, key.netns);
        if let Some((_, Some(name))) = self.workload_devices.get(&key.netns) {
            a.push(KeyValue::new(names::ATTR_NETNS_NAME, name.to_string()));
        }
        a.push(KeyValue::new(
            names::ATTR_WORKLOAD_DIRECTION,
            key.direction.as_str(),
        ));
        a.push(KeyValue::new(names::ATTR_TRANSPORT, key.transport.as_str()));
        a.push(KeyValue::new(
            names::ATTR_TRAFFIC_LOCALITY,
            key.locality.as_str(),
        ));
        a
    }

    /// The kernel counts `device`'s flows: what its packet records added up to so far is in
    /// the kernel's totals (they count from the attachment on), and records are not counted
    /// from now on.
    fn flows_from_kernel(&mut self, device: DeviceRef) {
        if self.kernel_flows.insert(device) {
            let counted: Vec<SeriesKey> = self
                .series
                .keys()
                .filter(|k| k.device == device)
                .copied()
                .collect();
            for k in &counted {
                self.series.remove(k);
            }
        }
    }

    /// Ends every series of `device` at this collect (it is gone, or renamed).
    fn retire_device(&mut self, device: DeviceRef) {
        self.series.retire_if(|k| k.device == device);
        self.exact.retire_if(|k| k.device == device);
        self.records.retire_if(|k| k.device == device);
        self.kernel_overflow.retire_if(|k| k.device == device);
    }

    /// Retires the series of devices gone for a whole collect without final counters, and of
    /// renamed devices (their next series carry the new name).
    fn retire_gone_and_renamed(&mut self) {
        let table = self.names.table().clone();
        let due = self
            .grace
            .due(self.names.devices(), |d| gone::device_gone(&table, d));
        for d in due {
            self.retire_device(d);
            self.finished.mark(d);
            self.workload_device_gone(d);
        }
        for d in self.names.renamed() {
            self.retire_device(d);
        }
    }

    /// Forgets the names of devices no series is about any more.
    fn forget_unused_names(&mut self) {
        let mut in_use = FxHashSet::default();
        in_use.extend(self.series.keys().map(|k| k.device));
        in_use.extend(self.exact.keys().map(|k| k.device));
        in_use.extend(self.records.keys().map(|k| k.device));
        in_use.extend(self.kernel_overflow.keys().map(|k| k.device));
        self.kernel_flows.retain(|d| in_use.contains(d));
        self.names.after_collect(&in_use);
    }

    fn record_cgroup(&mut self, c: &CgroupCounters) {
        let key = CgroupKey {
            cgroup_id: c.cgroup_id,
            direction: c.direction,
            network: c.network,
            transport: c.transport,
        };
        self.cgroups.set(key, [c.packets, c.bytes]);
    }

    fn cgroup_attributes(key: &CgroupKey) -> Vec<KeyValue> {
        vec![
            KeyValue::new(
                names::ATTR_CGROUP_ID,
                i64::try_from(key.cgroup_id).unwrap_or(i64::MAX),
            ),
            KeyValue::new(names::ATTR_IO_DIRECTION, key.direction.as_str()),
            KeyValue::new(names::ATTR_NETWORK_TYPE, key.network.as_str()),
            KeyValue::new(names::ATTR_TRANSPORT, key.transport.as_str()),
        ]
    }

    /// A series' attributes; `tuple`: with the 5-tuple (when `flow_attributes` is on).
    fn attributes(&self, key: &SeriesKey, tuple: bool) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(18);
        let n = self.names.get(&key.device);
        n.push_attributes(&mut a, &key.device);
        a.push(KeyValue::new(
            names::ATTR_IO_DIRECTION,
            key.direction.as_str(),
        ));
        a.push(KeyValue::new(names::ATTR_TRANSPORT, key.transport.as_str()));
        // Live hooks only: a capture knows no workload, and its output stays as it was.
        if key.device.netns.cookie != 0 {
            a.push(KeyValue::new(
                names::ATTR_WORKLOAD_DIRECTION,
                n.workload_direction(key.direction).as_str(),
            ));
            a.push(KeyValue::new(
                names::ATTR_TRAFFIC_LOCALITY,
                key.locality.as_str(),
            ));
        }
        if tuple && self.config.flow_attributes {
            a.push(KeyValue::new(
                names::ATTR_SOURCE_ADDRESS,
                key.src_addr.to_string(),
            ));
            a.push(KeyValue::new(
                names::ATTR_SOURCE_PORT,
                i64::from(key.src_port),
            ));
            a.push(KeyValue::new(
                names::ATTR_DESTINATION_ADDRESS,
                key.dst_addr.to_string(),
            ));
            a.push(KeyValue::new(
                names::ATTR_DESTINATION_PORT,
                i64::from(key.dst_port),
            ));
        }
        a
    }

    /// The current counters as telemetry; in delta mode, starts a new period.
    fn emit(&mut self, out: &mut Emitter) {
        let now = now_ns();
        self.retire_gone_and_renamed();
        if self.late_records > 0 {
            tracing::debug!(
                processor = %self.scope_name,
                records = self.late_records,
                "packet records of devices after their final counters, not counted"
            );
            self.late_records = 0;
        }
        // Counted from records, then exact: one overflow series for both.
        let mut rows: Vec<(Vec<KeyValue>, Totals)> = Vec::new();
        let mut overflow: Option<Totals> = None;
        let counted = self.series.iter().map(|(s, t)| (s, *t));
        for (s, t) in counted.chain(self.exact.iter()) {
            match s {
                Series::Key(k) => rows.push((self.attributes(k, true), t)),
                Series::Overflow => overflow.get_or_insert_with(Totals::default).add(t),
            }
        }
        // Packets whose flow found the kernel's flow table full: in the overflow series too.
        for (_, t) in self.kernel_overflow.iter() {
            if t != Totals::default() {
                overflow.get_or_insert_with(Totals::default).add(t);
            }
        }
        if let Some(t) = overflow {
            rows.push((overflow_attributes(), t));
        }
        // Without flow attributes these rows share the traffic series' attributes.
        let record_rows: Vec<(Vec<KeyValue>, Totals)> = self
            .records
            .iter()
            .map(|(s, t)| {
                let attributes = s.attributes(|k| self.attributes(k, false));
                (attributes, t)
            })
            .collect();
        let cgroup_rows: Vec<(Vec<KeyValue>, Totals)> = self
            .cgroups
            .iter()
            .map(|(s, t)| (s.attributes(Self::cgroup_attributes), t))
            .collect();
        let workload_rows: Vec<(Vec<KeyValue>, Totals)> = self
            .workload
            .iter()
            .map(|(s, t)| (s.attributes(|k| self.workload_attributes(k)), *t))
            .collect();
        if rows.is_empty()
            && record_rows.is_empty()
            && cgroup_rows.is_empty()
            && workload_rows.is_empty()
        {
            return;
        }
        // The four tables start their periods together.
        let start = self.series.start_ns();
        let joined = match &self.sockets {
            Some(sockets) => {
                let keys = self.series.keys().chain(self.exact.keys());
                join::socket_metrics(
                    sockets,
                    keys.map(|k| (k, self.attributes(k, true))),
                    start,
                    now,
                )
            }
            None => Vec::new(),
        };
        self.series.finish_collect(now);
        self.exact.finish_collect(now);
        self.kernel_overflow.finish_collect(now);
        self.records.finish_collect(now);
        self.cgroups.finish_collect(now);
        self.workload.finish_collect(now);
        self.forget_unused_names();
        let point = |attributes: &Vec<KeyValue>, v: u64| NumberPoint {
            attributes: attributes.clone(),
            start_time_ns: start,
            time_ns: now,
            value: output::int(v),
        };
        let packets = rows.iter().map(|(a, t)| point(a, t[PACKETS])).collect();
        let bytes = rows.iter().map(|(a, t)| point(a, t[BYTES])).collect();
        let sum = |points| MetricData::Sum {
            points,
            temporality: self.config.temporality,
            monotonic: true,
        };
        let mut metrics = Vec::with_capacity(8);
        if !rows.is_empty() {
            metrics.push(Metric {
                name: Cow::Borrowed(names::NETWORK_PACKETS),
                description: Cow::Borrowed("Packets seen at the hook."),
                unit: Cow::Borrowed("{packet}"),
                data: sum(packets),
            });
            metrics.push(Metric {
                name: Cow::Borrowed(names::NETWORK_BYTES),
                description: Cow::Borrowed("Bytes seen at the hook (L2 frame length)."),
                unit: Cow::Borrowed("By"),
                data: sum(bytes),
            });
        }
        if !cgroup_rows.is_empty() {
            let packets = cgroup_rows
                .iter()
                .map(|(a, t)| point(a, t[PACKETS]))
                .collect();
            let bytes = cgroup_rows
                .iter()
                .map(|(a, t)| point(a, t[BYTES]))
                .collect();
            metrics.push(Metric {
                name: Cow::Borrowed(names::CGROUP_PACKETS),
                description: Cow::Borrowed(
                    "IP packets of a cgroup's sockets at the cgroup_skb hooks.",
                ),
                unit: Cow::Borrowed("{packet}"),
                data: sum(packets),
            });
            metrics.push(Metric {
                name: Cow::Borrowed(names::CGROUP_BYTES),
                description: Cow::Borrowed(
                    "Bytes of a cgroup's IP packets at the cgroup_skb hooks (no L2 header).",
                ),
                unit: Cow::Borrowed("By"),
                data: sum(bytes),
            });
        }
        if !workload_rows.is_empty() {
            let packets = workload_rows
                .iter()
                .map(|(a, t)| point(a, t[PACKETS]))
                .collect();
            let bytes = workload_rows
                .iter()
                .map(|(a, t)| point(a, t[BYTES]))
                .collect();
            metrics.push(Metric {
                name: Cow::Borrowed(names::WORKLOAD_PACKETS),
                description: Cow::Borrowed(
                    "Packets into and out of a workload's namespace, counted once: on the devices \
                     that serve their own namespace.",
                ),
                unit: Cow::Borrowed("{packet}"),
                data: sum(packets),
            });
            metrics.push(Metric {
                name: Cow::Borrowed(names::WORKLOAD_BYTES),
                description: Cow::Borrowed(
                    "Bytes (L2 frame length) into and out of a workload's namespace, counted once.",
                ),
                unit: Cow::Borrowed("By"),
                data: sum(bytes),
            });
        }
        if !record_rows.is_empty() {
            let delivered = record_rows
                .iter()
                .map(|(a, t)| point(a, t[DELIVERED]))
                .collect();
            let lost = record_rows.iter().map(|(a, t)| point(a, t[LOST])).collect();
            metrics.push(Metric {
                name: Cow::Borrowed(names::NETWORK_RECORDS_DELIVERED),
                description: Cow::Borrowed(
                    "Packet records a kernel receiver read from its ring buffer.",
                ),
                unit: Cow::Borrowed("{record}"),
                data: sum(delivered),
            });
            metrics.push(Metric {
                name: Cow::Borrowed(names::NETWORK_RECORDS_LOST),
                description: Cow::Borrowed(
                    "Packet records lost to a full ring buffer (the packets are still counted).",
                ),
                unit: Cow::Borrowed("{record}"),
                data: sum(lost),
            });
        }
        metrics.extend(joined);
        output::send_metrics(out, output::scope(&self.scope_name, ""), metrics);
    }
}

impl Processor for Flow {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(batch) => {
                for event in &batch.events {
                    match event {
                        Event::Packet(p) => self.record(p),
                        Event::DeviceCounters(c) => self.record_exact(c),
                        Event::CgroupCounters(c) => self.record_cgroup(c),
                        Event::FlowCounters(f) => self.record_flow(f),
                        // Socket events and drops are the `connections` processor's, DNS
                        // messages the `dns` processor's (their packets are counted), bursts the
                        // `burst` processor's, queue delays the `queue` processor's.
                        Event::Socket(_)
                        | Event::Drop(_)
                        | Event::Dns(_)
                        | Event::Burst(_)
                        | Event::Queue(_) => {}
                    }
                }
            }
            other => out.payload(other),
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.next_emit)
    }

    fn tick(&mut self, now: Instant, out: &mut Emitter) {
        self.emit(out);
        self.next_emit = now + self.config.interval.get();
    }

    fn flush(&mut self, out: &mut Emitter) {
        self.emit(out);
    }
}

mod join;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod churn_tests;

#[cfg(test)]
mod kernel_flow_tests;

#[cfg(test)]
mod workload_tests;

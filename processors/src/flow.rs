//! The `flow` processor: aggregates packet events into `periscope.network.packets` and
//! `periscope.network.bytes` per namespace, device, direction and transport (and, on request,
//! per 5-tuple), emitted every `interval`.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Emitter, Invalid, Processor, ProcessorConfig,
};
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::model::{
    CgroupCounters, DeviceCounters, DeviceRef, Direction, Event, KeyValue, Metric, MetricData,
    MetricsBatch, NetworkType, Number, NumberPoint, PacketEvent, Payload, Scope, Telemetry,
    Temporality, Transport,
};
use periscope_pipeline::telemetry::{names, now_ns};

/// Counts packets and bytes (L2 frame length at the hook) per network namespace, interface,
/// direction and transport, optionally per 5-tuple. Consumes packet events; passes telemetry on.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// How often the counters are emitted (the last values are always emitted at shutdown).
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// `cumulative` (each point counts from the start) or `delta` (since the last point).
    #[serde(default)]
    pub temporality: Temporality,
    /// Add `source.address`, `source.port`, `destination.address` and `destination.port` to
    /// every series: one series per 5-tuple, so mind `cardinality_limit`.
    #[serde(default)]
    pub flow_attributes: bool,
    /// Most series per metric; packets of further series are counted in one series marked
    /// `otel.metric.overflow=true`.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: usize,
}

fn default_interval() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}

fn default_cardinality_limit() -> usize {
    2000
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

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut problems = Vec::new();
        if self.interval.0.is_zero() {
            problems.push(Invalid::new(
                "interval",
                "must be longer than zero, e.g. 10s",
            ));
        }
        if self.cardinality_limit == 0 {
            problems.push(Invalid::new("cardinality_limit", "must be at least 1"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl ProcessorConfig for FlowConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(Flow::new(
            self.clone(),
            ctx.devices.clone(),
            ctx.id.to_string(),
        )))
    }
}

/// What a series is keyed by. Addresses and ports stay zero unless `flow_attributes` is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    device: DeviceRef,
    direction: Direction,
    transport: Transport,
    src_addr: IpAddr,
    src_port: u16,
    dst_addr: IpAddr,
    dst_port: u16,
}

/// Cumulative packet-record totals of a kernel receiver for one series.
#[derive(Clone, Copy, Debug, Default)]
struct RecordTotals {
    delivered: u64,
    lost: u64,
}

/// What a cgroup series is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CgroupKey {
    cgroup_id: u64,
    direction: Direction,
    network: NetworkType,
    transport: Transport,
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    packets: u64,
    bytes: u64,
}

/// The running processor.
pub struct Flow {
    config: FlowConfig,
    devices: DeviceTable,
    scope_name: String,
    series: FxHashMap<SeriesKey, Totals>,
    overflow: Option<Totals>,
    /// Exact cumulative totals from kernel counters, per series without the 5-tuple. Where a
    /// series has them they replace what packet records add up to (records may be sampled or
    /// lost); only used when `flow_attributes` is off.
    exact: FxHashMap<SeriesKey, Totals>,
    /// In delta mode, the exact totals emitted last, to report their difference.
    exact_emitted: FxHashMap<SeriesKey, Totals>,
    /// Packet records a kernel receiver delivered and lost, per series without the 5-tuple.
    records: FxHashMap<SeriesKey, RecordTotals>,
    /// In delta mode, the record totals emitted last.
    records_emitted: FxHashMap<SeriesKey, RecordTotals>,
    /// Exact cumulative cgroup_skb totals per cgroup, direction, network and transport.
    cgroups: FxHashMap<CgroupKey, Totals>,
    /// In delta mode, the cgroup totals emitted last.
    cgroups_emitted: FxHashMap<CgroupKey, Totals>,
    /// Start of the current cumulative series, or of the current delta period.
    start_ns: u64,
    next_emit: Instant,
    warned_overflow: bool,
}

const UNSPECIFIED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Flow {
    pub fn new(config: FlowConfig, devices: DeviceTable, scope_name: String) -> Self {
        let next_emit = Instant::now() + config.interval.0.max(Duration::from_millis(1));
        Flow {
            config,
            devices,
            scope_name,
            series: FxHashMap::default(),
            overflow: None,
            exact: FxHashMap::default(),
            exact_emitted: FxHashMap::default(),
            records: FxHashMap::default(),
            records_emitted: FxHashMap::default(),
            cgroups: FxHashMap::default(),
            cgroups_emitted: FxHashMap::default(),
            start_ns: now_ns(),
            next_emit,
            warned_overflow: false,
        }
    }

    #[inline]
    fn record(&mut self, p: &PacketEvent) {
        let mut key = SeriesKey {
            device: p.device,
            direction: p.direction,
            transport: p.transport,
            src_addr: UNSPECIFIED,
            src_port: 0,
            dst_addr: UNSPECIFIED,
            dst_port: 0,
        };
        if self.config.flow_attributes {
            key.src_addr = p.src_addr;
            key.src_port = p.src_port;
            key.dst_addr = p.dst_addr;
            key.dst_port = p.dst_port;
        } else if self.exact.contains_key(&key) {
            return;
        }
        let limit = self.config.cardinality_limit;
        // Below the limit every key gets a series; at the limit only existing ones do.
        let totals = if self.series.len() < limit {
            self.series.entry(key).or_default()
        } else if let Some(t) = self.series.get_mut(&key) {
            t
        } else {
            if !self.warned_overflow {
                self.warned_overflow = true;
                tracing::warn!(
                    processor = %self.scope_name,
                    limit,
                    "flow: cardinality limit reached; further series are counted in the overflow series (otel.metric.overflow=true)"
                );
            }
            self.overflow.get_or_insert_with(Totals::default)
        };
        totals.packets += 1;
        totals.bytes += u64::from(p.length);
    }

    fn record_exact(&mut self, c: &DeviceCounters) {
        let key = SeriesKey {
            device: c.device,
            direction: c.direction,
            transport: c.transport,
            src_addr: UNSPECIFIED,
            src_port: 0,
            dst_addr: UNSPECIFIED,
            dst_port: 0,
        };
        self.records.insert(
            key,
            RecordTotals {
                delivered: c.records_delivered,
                lost: c.records_lost,
            },
        );
        if self.config.flow_attributes {
            return;
        }
        // Counted from records until now: the kernel's totals include those packets.
        self.series.remove(&key);
        self.exact.insert(
            key,
            Totals {
                packets: c.packets,
                bytes: c.bytes,
            },
        );
    }

    fn record_cgroup(&mut self, c: &CgroupCounters) {
        let key = CgroupKey {
            cgroup_id: c.cgroup_id,
            direction: c.direction,
            network: c.network,
            transport: c.transport,
        };
        // Kernel totals are cumulative; a bounded map (a cgroup per key, and cgroups come and
        // go) — beyond the limit new cgroups are dropped with one warning.
        if self.cgroups.len() >= self.config.cardinality_limit && !self.cgroups.contains_key(&key) {
            if !self.warned_overflow {
                self.warned_overflow = true;
                tracing::warn!(
                    processor = %self.scope_name,
                    "flow: cardinality limit reached for cgroup series; new cgroups are not reported"
                );
            }
            return;
        }
        self.cgroups.insert(
            key,
            Totals {
                packets: c.packets,
                bytes: c.bytes,
            },
        );
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

    fn attributes(&self, key: &SeriesKey) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(8);
        a.push(KeyValue::new(
            names::ATTR_NETNS_INODE,
            i64::from(key.device.netns.inode),
        ));
        a.push(KeyValue::new(
            names::ATTR_INTERFACE_NAME,
            self.devices.interface_name(&key.device),
        ));
        a.push(KeyValue::new(
            names::ATTR_IO_DIRECTION,
            key.direction.as_str(),
        ));
        a.push(KeyValue::new(names::ATTR_TRANSPORT, key.transport.as_str()));
        if self.config.flow_attributes {
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
        let mut rows: Vec<(Vec<KeyValue>, Totals)> = self
            .series
            .iter()
            .map(|(k, t)| (self.attributes(k), *t))
            .collect();
        for (k, t) in &self.exact {
            let mut value = *t;
            if self.config.temporality == Temporality::Delta {
                let last = self.exact_emitted.insert(*k, *t).unwrap_or_default();
                value.packets = t.packets.saturating_sub(last.packets);
                value.bytes = t.bytes.saturating_sub(last.bytes);
            }
            rows.push((self.attributes(k), value));
        }
        if let Some(t) = self.overflow {
            rows.push((vec![KeyValue::new(names::ATTR_OVERFLOW, true)], t));
        }
        let mut record_rows: Vec<(Vec<KeyValue>, RecordTotals)> = Vec::new();
        for (k, t) in &self.records {
            let mut value = *t;
            if self.config.temporality == Temporality::Delta {
                let last = self.records_emitted.insert(*k, *t).unwrap_or_default();
                value.delivered = t.delivered.saturating_sub(last.delivered);
                value.lost = t.lost.saturating_sub(last.lost);
            }
            // Without flow attributes these rows share the traffic series' attributes.
            let mut attributes = self.attributes(k);
            attributes.truncate(4);
            record_rows.push((attributes, value));
        }
        let mut cgroup_rows: Vec<(Vec<KeyValue>, Totals)> = Vec::new();
        for (k, t) in &self.cgroups {
            let mut value = *t;
            if self.config.temporality == Temporality::Delta {
                let last = self.cgroups_emitted.insert(*k, *t).unwrap_or_default();
                value.packets = t.packets.saturating_sub(last.packets);
                value.bytes = t.bytes.saturating_sub(last.bytes);
            }
            cgroup_rows.push((Self::cgroup_attributes(k), value));
        }
        if self.config.temporality == Temporality::Delta {
            self.series.clear();
            self.overflow = None;
        }
        if rows.is_empty() && record_rows.is_empty() && cgroup_rows.is_empty() {
            return;
        }
        let start = self.start_ns;
        if self.config.temporality == Temporality::Delta {
            self.start_ns = now;
        }
        let point = |attributes: &Vec<KeyValue>, v: u64| NumberPoint {
            attributes: attributes.clone(),
            start_time_ns: start,
            time_ns: now,
            value: Number::Int(i64::try_from(v).unwrap_or(i64::MAX)),
        };
        let packets = rows.iter().map(|(a, t)| point(a, t.packets)).collect();
        let bytes = rows.iter().map(|(a, t)| point(a, t.bytes)).collect();
        let sum = |points| MetricData::Sum {
            points,
            temporality: self.config.temporality,
            monotonic: true,
        };
        let mut metrics = Vec::with_capacity(4);
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
                .map(|(a, t)| point(a, t.packets))
                .collect();
            let bytes = cgroup_rows.iter().map(|(a, t)| point(a, t.bytes)).collect();
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
        if !record_rows.is_empty() {
            let delivered = record_rows
                .iter()
                .map(|(a, t)| point(a, t.delivered))
                .collect();
            let lost = record_rows.iter().map(|(a, t)| point(a, t.lost)).collect();
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
        out.telemetry(Telemetry::Metrics(MetricsBatch {
            resource: Default::default(),
            scope: Scope {
                name: Cow::Owned(format!("periscope/{}", self.scope_name)),
                version: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
            },
            metrics,
        }));
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
                        // Socket events and drops are the `connections` processor's, DNS
                        // messages the `dns` processor's (their packets are counted), bursts the
                        // `burst` processor's.
                        Event::Socket(_) | Event::Drop(_) | Event::Dns(_) | Event::Burst(_) => {}
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
        self.next_emit = now + self.config.interval.0;
    }

    fn flush(&mut self, out: &mut Emitter) {
        self.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_pipeline::model::EventBatch;

    fn packet(ifindex: u32, len: u32, sport: u16) -> Event {
        let mut p = PacketEvent {
            length: len,
            transport: Transport::Tcp,
            src_port: sport,
            dst_port: 80,
            ..PacketEvent::default()
        };
        p.device.ifindex = ifindex;
        Event::Packet(p)
    }

    /// (metric name, [(attributes, value)]) of every emitted sum.
    type Sums = Vec<(String, Vec<(Vec<KeyValue>, i64)>)>;

    fn sums(out: &mut Emitter) -> Sums {
        let mut result = Vec::new();
        for p in out.take() {
            let Payload::Telemetry(Telemetry::Metrics(m)) = p else {
                panic!("expected metrics")
            };
            for metric in m.metrics {
                let MetricData::Sum { points, .. } = metric.data else {
                    panic!("expected a sum")
                };
                let mut pts: Vec<_> = points
                    .into_iter()
                    .map(|p| match p.value {
                        Number::Int(v) => (p.attributes, v),
                        Number::Double(_) => panic!("expected ints"),
                    })
                    .collect();
                pts.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
                result.push((metric.name.to_string(), pts));
            }
        }
        result
    }

    fn flow(config: FlowConfig) -> Flow {
        Flow::new(config, DeviceTable::default(), "flow".into())
    }

    #[test]
    fn counts_packets_and_bytes_per_device() {
        let mut f = flow(FlowConfig::default());
        let batch = EventBatch {
            events: vec![packet(1, 100, 1), packet(1, 60, 2), packet(2, 1500, 3)],
        };
        let mut out = Emitter::default();
        f.process(Payload::Events(batch), &mut out);
        assert!(out.take().is_empty(), "flow consumes events");
        f.flush(&mut out);
        let s = sums(&mut out);
        assert_eq!(s[0].0, names::NETWORK_PACKETS);
        assert_eq!(s[0].1.iter().map(|p| p.1).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(
            s[1].1.iter().map(|p| p.1).collect::<Vec<_>>(),
            vec![160, 1500]
        );
        assert!(s[0].1[0]
            .0
            .contains(&KeyValue::new(names::ATTR_INTERFACE_NAME, "if1")));
    }

    #[test]
    fn overflow_series_past_the_limit() {
        let mut f = flow(FlowConfig {
            flow_attributes: true,
            cardinality_limit: 2,
            ..FlowConfig::default()
        });
        let batch = EventBatch {
            events: (0..5).map(|i| packet(1, 10, i)).collect(),
        };
        let mut out = Emitter::default();
        f.process(Payload::Events(batch), &mut out);
        f.flush(&mut out);
        let s = sums(&mut out);
        let packets = &s[0].1;
        assert_eq!(packets.len(), 3);
        assert_eq!(packets.iter().map(|p| p.1).sum::<i64>(), 5);
        let overflow = packets
            .iter()
            .find(|p| p.0.contains(&KeyValue::new(names::ATTR_OVERFLOW, true)))
            .expect("overflow series");
        assert_eq!(overflow.1, 3);
    }

    #[test]
    fn delta_resets_each_period() {
        let mut f = flow(FlowConfig {
            temporality: Temporality::Delta,
            ..FlowConfig::default()
        });
        let mut out = Emitter::default();
        f.process(
            Payload::Events(EventBatch {
                events: vec![packet(1, 10, 1)],
            }),
            &mut out,
        );
        f.tick(Instant::now(), &mut out);
        f.process(
            Payload::Events(EventBatch {
                events: vec![packet(1, 10, 1), packet(1, 10, 1)],
            }),
            &mut out,
        );
        f.flush(&mut out);
        let s = sums(&mut out);
        assert_eq!(s[0].1[0].1, 1);
        assert_eq!(s[2].1[0].1, 2);
    }

    #[test]
    fn kernel_counters_replace_record_counts() {
        let mut f = flow(FlowConfig::default());
        let mut out = Emitter::default();
        // Two records seen, but the kernel counted 5 packets (3 records were lost).
        f.process(
            Payload::Events(EventBatch {
                events: vec![packet(1, 10, 1), packet(1, 10, 2)],
            }),
            &mut out,
        );
        let mut c = DeviceCounters {
            transport: Transport::Tcp,
            packets: 5,
            bytes: 50,
            records_delivered: 2,
            records_lost: 3,
            ..DeviceCounters::default()
        };
        c.device.ifindex = 1;
        f.process(
            Payload::Events(EventBatch {
                events: vec![Event::DeviceCounters(c)],
            }),
            &mut out,
        );
        // Records after the counters are not added on top of them.
        f.process(
            Payload::Events(EventBatch {
                events: vec![packet(1, 10, 3)],
            }),
            &mut out,
        );
        f.flush(&mut out);
        let s = sums(&mut out);
        assert_eq!(s[0].1.iter().map(|p| p.1).collect::<Vec<_>>(), vec![5]);
        assert_eq!(s[1].1.iter().map(|p| p.1).collect::<Vec<_>>(), vec![50]);
        assert_eq!(s[2].0, names::NETWORK_RECORDS_DELIVERED);
        assert_eq!(s[2].1.iter().map(|p| p.1).collect::<Vec<_>>(), vec![2]);
        assert_eq!(s[3].0, names::NETWORK_RECORDS_LOST);
        assert_eq!(s[3].1.iter().map(|p| p.1).collect::<Vec<_>>(), vec![3]);
        assert_eq!(
            s[2].1[0].0, s[0].1[0].0,
            "same attributes as the traffic series"
        );
    }

    #[test]
    fn validation_rejects_zero_interval_and_limit() {
        let bad = FlowConfig {
            interval: ConfigDuration::from_secs(0),
            cardinality_limit: 0,
            ..FlowConfig::default()
        };
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 2);
    }
}

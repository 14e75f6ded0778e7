//! The `burst` processor: the kernel's burst reports (`bursts` on the `xdp`/`tcx` receivers)
//! → one burst per device, direction and time span (the per-CPU reports of one burst merged),
//! metrics (`periscope.burst.count`, `.duration`, `.packets`, `.peak_rate`) and, for traces
//! pipelines, a `network.burst` span per burst with the flows that sent the most packets in it.
//!
//! Merging: the kernel's detector runs per CPU, so a burst whose packets were handled on
//! several CPUs is reported once per CPU. End reports of one device and direction whose time
//! spans overlap are one burst (start: the earliest, end: the latest, packets and bytes
//! summed, peak rates summed over CPUs — an upper bound). A burst is final `merge_delay` after
//! its last report, once no CPU still has a burst open on that device that began before its
//! end (or, at the latest, one second after that).
//!
//! Top flows: packet events of a device are counted per 5-tuple while one of its bursts is open
//! (from the first CPU's start report) and within a finished burst's time span until it is
//! final; the packets just before the detection come from a short per-device history of the
//! last packets. With sampled packet records the counts are of sampled packets.
//!
//! Queue: with the `qdisc` receiver in the same pipeline, a transmit burst's span carries the
//! most time a packet that entered the device's queue during the burst waited there, the most
//! bytes and packets queued, and the queue's drops meanwhile; a burst on such a device waits
//! (at most a second) until a queue record of a packet that entered after its end has come.
//!
//! Memory is bounded: `max_devices` devices tracked (burst reports and packets of others are
//! counted in `periscope.burst.untracked` with `reason=device`), `max_flows` flows per burst
//! (`reason=flow`), and `cardinality_limit` series per metric (further series go to one
//! series marked `otel.metric.overflow=true`).

mod config;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Emitter, Processor, ProcessorConfig,
};
use periscope_pipeline::devices::{DeviceTable, NamespaceTable};
use periscope_pipeline::model::{
    BurstEvent, BurstPhase, DeviceRef, Direction, Event, HistogramPoint, KeyValue, Metric,
    MetricData, NumberPoint, PacketEvent, Payload, QueueEvent, QueueEventKind, Span, SpanEvent,
    SpanKind, SpanStatus, Temporality, Transport,
};
use periscope_pipeline::telemetry::{names, now_ns};

use crate::device_names::DeviceNames;
use crate::gone::{self, Grace};
use crate::latency::Recorder;
use crate::output::{self, SpanIds};
use crate::series::{SeriesTable, TableOptions};

pub use config::{BurstConfig, DEFAULT_BOUNDARIES};

impl ProcessorConfig for BurstConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(
            Burst::new(
                BurstConfig {
                    // Not in a metrics pipeline, which drops them.
                    spans: self.spans && ctx.carries_spans(),
                    ..self.clone()
                },
                ctx.id.to_string(),
                ctx.devices.clone(),
            )?
            .with_namespaces(ctx.namespaces.clone()),
        ))
    }
}

/// A device and direction: what a detector, a series and a span are about.
type DevKey = (DeviceRef, Direction);

/// A flow: 5-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    transport: Transport,
}

impl FlowKey {
    fn of(p: &PacketEvent) -> Self {
        FlowKey {
            src: p.src_addr,
            dst: p.dst_addr,
            sport: p.src_port,
            dport: p.dst_port,
            transport: p.transport,
        }
    }
}

/// Packets kept per device for the flows of a burst's first (pre-detection) packets.
const HISTORY: usize = 256;
/// Longest a burst waits for a CPU whose report of it never comes.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Packets enqueued this long after a burst's end still count as the burst's (the qdisc
/// enqueues right after the TCX egress hook that timed the burst).
const QUEUE_SLACK_NS: u64 = 1_000_000;

/// What a device's queue (`qdisc` receiver) held during a burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QueueMax {
    /// Packets dequeued (samples) and dropped.
    samples: u64,
    drops: u64,
    delay_ns: u64,
    backlog_bytes: u32,
    backlog_packets: u32,
}

impl QueueMax {
    fn add(&mut self, q: &QueueEvent) {
        match q.kind {
            QueueEventKind::Dequeue => {
                self.samples += 1;
                self.delay_ns = self.delay_ns.max(q.delay_ns);
            }
            QueueEventKind::Drop => self.drops += 1,
        }
        self.backlog_bytes = self.backlog_bytes.max(q.backlog_bytes);
        self.backlog_packets = self.backlog_packets.max(q.backlog_packets);
    }

    fn merge(&mut self, o: &QueueMax) {
        self.samples += o.samples;
        self.drops += o.drops;
        self.delay_ns = self.delay_ns.max(o.delay_ns);
        self.backlog_bytes = self.backlog_bytes.max(o.backlog_bytes);
        self.backlog_packets = self.backlog_packets.max(o.backlog_packets);
    }
}

/// When a queue record's packet entered the queue (drops: when it was refused).
fn entered(q: &QueueEvent) -> u64 {
    q.enqueued_ns()
}

/// A burst waiting for further CPUs' reports.
#[derive(Debug)]
struct Pending {
    ev: BurstEvent,
    /// The device's queue during the burst.
    queue: QueueMax,
    /// CPUs merged in, with their peak rates (a CPU reporting twice keeps its highest).
    cpus: Vec<(u32, u64, u64)>,
    flows: FxHashMap<FlowKey, u64>,
    final_at: Instant,
}

/// What is tracked per device and direction.
#[derive(Debug, Default)]
struct DevState {
    /// CPUs with an open burst, and their bursts' starts.
    open: Vec<(u32, u64)>,
    /// Flows of the open burst.
    flows: FxHashMap<FlowKey, u64>,
    /// The last packets (time, flow).
    recent: VecDeque<(u64, FlowKey)>,
    /// The queue during the open burst.
    queue: QueueMax,
    /// The last queue records (enqueue time and record), for the packets before a detection.
    recent_queue: VecDeque<(u64, QueueEvent)>,
    /// The latest enqueue time of a queue record of this device (0: none ever): a burst waits
    /// until its last packets have left the queue.
    queue_seen_ns: u64,
    pending: Vec<Pending>,
    seen: Option<Instant>,
}

/// The series of one device and direction.
#[derive(Clone, Debug)]
struct DeviceSeries {
    count: u64,
    packets: u64,
    duration: Recorder,
    /// Highest peak packets/s since the last emit.
    peak_pps: Option<u64>,
}

impl DeviceSeries {
    fn new() -> Self {
        DeviceSeries {
            count: 0,
            packets: 0,
            duration: Recorder::new(2, None),
            peak_pps: None,
        }
    }

    fn record(&mut self, b: &BurstEvent) {
        self.count += 1;
        self.packets += b.packets;
        self.duration.record(b.duration_ns());
        self.peak_pps = Some(self.peak_pps.unwrap_or(0).max(b.peak_pps));
    }
}

/// The running processor.
pub struct Burst {
    config: BurstConfig,
    scope_name: String,
    /// Names of the devices of the series, captured when a series is made.
    names: DeviceNames,
    /// Devices found gone: their series retire after one grace collect.
    grace: Grace<DeviceRef>,
    state: FxHashMap<DevKey, DevState>,
    series: SeriesTable<DevKey, DeviceSeries>,
    spans: Vec<Span>,
    untracked_devices: u64,
    untracked_flows: u64,
    ids: SpanIds,
    next_emit: Instant,
}

impl Burst {
    /// Names the container and pod of node-side devices' peers from what receivers captured
    /// of their namespaces.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.names.set_namespaces(namespaces);
        self
    }

    pub fn new(
        config: BurstConfig,
        scope_name: String,
        devices: DeviceTable,
    ) -> anyhow::Result<Self> {
        config.ensure_valid()?;
        let options = TableOptions::new(&scope_name, config.cardinality_limit, config.temporality);
        Ok(Burst {
            series: SeriesTable::new(&options, names::BURST_COUNT),
            next_emit: Instant::now() + config.interval.get(),
            config,
            scope_name,
            names: DeviceNames::new(devices),
            grace: Grace::default(),
            state: FxHashMap::default(),
            spans: Vec::new(),
            untracked_devices: 0,
            untracked_flows: 0,
            ids: SpanIds::new(),
        })
    }

    /// The state of a device, if it is or can be tracked.
    fn dev(&mut self, key: DevKey, now: Instant) -> Option<&mut DevState> {
        if !self.state.contains_key(&key) {
            if self.state.len() >= self.config.max_devices.get() {
                // Make room: forget a device with nothing open or pending, idle longest.
                let idle = self
                    .state
                    .iter()
                    .filter(|(_, s)| s.open.is_empty() && s.pending.is_empty())
                    .min_by_key(|(_, s)| s.seen)
                    .map(|(k, _)| *k);
                match idle {
                    Some(k) => {
                        self.state.remove(&k);
                    }
                    None => {
                        self.untracked_devices += 1;
                        return None;
                    }
                }
            }
            self.state.insert(key, DevState::default());
        }
        let s = self.state.get_mut(&key)?;
        s.seen = Some(now);
        Some(s)
    }

    fn on_packet(&mut self, p: &PacketEvent, now: Instant) {
        let max_flows = self.config.max_flows.get();
        let key = (p.device, p.direction);
        // Packets of devices never seen bursting are only remembered while there is room.
        if !self.state.contains_key(&key) && self.state.len() >= self.config.max_devices.get() {
            return;
        }
        let Some(s) = self.dev(key, now) else {
            return;
        };
        let flow = FlowKey::of(p);
        if s.recent.len() >= HISTORY {
            s.recent.pop_front();
        }
        s.recent.push_back((p.timestamp_ns, flow));
        let mut lost = 0;
        let open_start = s.open.iter().map(|(_, st)| *st).min();
        if open_start.is_some_and(|st| p.timestamp_ns >= st) {
            lost += count_flow(&mut s.flows, flow, max_flows);
        } else if let Some(pd) = s
            .pending
            .iter_mut()
            .find(|pd| pd.ev.start_ns <= p.timestamp_ns && p.timestamp_ns <= pd.ev.end_ns)
        {
            lost += count_flow(&mut pd.flows, flow, max_flows);
        }
        self.untracked_flows += lost;
    }

    /// A packet that left (or was dropped by) the device's queue: counted in the burst it
    /// entered the queue during.
    fn on_queue(&mut self, q: &QueueEvent, now: Instant) {
        let key = (q.device, Direction::Egress);
        if !self.state.contains_key(&key) && self.state.len() >= self.config.max_devices.get() {
            return;
        }
        let Some(s) = self.dev(key, now) else {
            return;
        };
        let at = entered(q);
        s.queue_seen_ns = s.queue_seen_ns.max(at);
        if s.recent_queue.len() >= HISTORY {
            s.recent_queue.pop_front();
        }
        s.recent_queue.push_back((at, *q));
        let open_start = s.open.iter().map(|(_, st)| *st).min();
        if open_start.is_some_and(|st| at >= st) {
            s.queue.add(q);
        } else if let Some(pd) = s
            .pending
            .iter_mut()
            .find(|pd| pd.ev.start_ns <= at && at <= pd.ev.end_ns.saturating_add(QUEUE_SLACK_NS))
        {
            pd.queue.add(q);
        }
    }

    fn on_burst(&mut self, b: &BurstEvent, now: Instant) {
        let max_flows = self.config.max_flows.get();
        let delay = self.config.merge_delay.0;
        let key = (b.device, b.direction);
        let Some(s) = self.dev(key, now) else {
            return;
        };
        match b.phase {
            BurstPhase::Start => {
                s.open.retain(|(cpu, _)| *cpu != b.cpu);
                let mut lost = 0;
                if s.open.is_empty() {
                    s.flows.clear();
                    // The packets that led up to the detection.
                    for (ts, f) in &s.recent {
                        if *ts >= b.start_ns {
                            lost += count_flow(&mut s.flows, *f, max_flows);
                        }
                    }
                    s.queue = QueueMax::default();
                    for (at, q) in &s.recent_queue {
                        if *at >= b.start_ns {
                            s.queue.add(q);
                        }
                    }
                }
                s.open.push((b.cpu, b.start_ns));
                self.untracked_flows += lost;
            }
            BurstPhase::End => {
                s.open.retain(|(cpu, _)| *cpu != b.cpu);
                let flows = if s.open.is_empty() {
                    std::mem::take(&mut s.flows)
                } else {
                    s.flows.clone()
                };
                let queue = if s.open.is_empty() {
                    std::mem::take(&mut s.queue)
                } else {
                    s.queue
                };
                if let Some(pd) = s
                    .pending
                    .iter_mut()
                    .find(|pd| b.start_ns <= pd.ev.end_ns && b.end_ns >= pd.ev.start_ns)
                {
                    pd.ev.start_ns = pd.ev.start_ns.min(b.start_ns);
                    pd.ev.end_ns = pd.ev.end_ns.max(b.end_ns);
                    pd.ev.packets += b.packets;
                    pd.ev.bytes += b.bytes;
                    match pd.cpus.iter_mut().find(|(c, _, _)| *c == b.cpu) {
                        Some(c) => {
                            c.1 = c.1.max(b.peak_pps);
                            c.2 = c.2.max(b.peak_bytes_per_s);
                        }
                        None => pd.cpus.push((b.cpu, b.peak_pps, b.peak_bytes_per_s)),
                    }
                    // Another CPU's view of the same queue: the same records, keep the larger.
                    if queue.samples + queue.drops > pd.queue.samples + pd.queue.drops {
                        let mut q = queue;
                        q.merge(&QueueMax {
                            samples: 0,
                            drops: 0,
                            ..pd.queue
                        });
                        pd.queue = q;
                    }
                    pd.ev.peak_pps = pd.cpus.iter().map(|c| c.1).sum();
                    pd.ev.peak_bytes_per_s = pd.cpus.iter().map(|c| c.2).sum();
                    // Another CPU's view of the same device: the counts are of the same
                    // packet events, so keep the larger.
                    for (f, n) in flows {
                        if let Some(c) = pd.flows.get_mut(&f) {
                            *c = (*c).max(n);
                        } else if pd.flows.len() < max_flows {
                            pd.flows.insert(f, n);
                        }
                    }
                    pd.final_at = now + delay;
                } else {
                    let mut ev = *b;
                    ev.cpu = BurstEvent::MERGED;
                    s.pending.push(Pending {
                        ev,
                        queue,
                        cpus: vec![(b.cpu, b.peak_pps, b.peak_bytes_per_s)],
                        flows,
                        final_at: now + delay,
                    });
                }
            }
        }
    }

    /// Records the bursts that are final.
    fn settle(&mut self, now: Instant, all: bool) {
        let mut done: Vec<(DevKey, Pending)> = Vec::new();
        for (key, s) in self.state.iter_mut() {
            let open = &s.open;
            let mut i = 0;
            while i < s.pending.len() {
                if all || now >= ready_at(open, s.queue_seen_ns, &s.pending[i]) {
                    done.push((*key, s.pending.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
        }
        done.sort_by_key(|(_, pd)| pd.ev.start_ns);
        for (key, pd) in done {
            self.finish(key, pd);
        }
    }

    fn finish(&mut self, key: DevKey, pd: Pending) {
        self.names.capture(key.0);
        self.series.value(key, DeviceSeries::new).record(&pd.ev);
        if self.config.spans {
            let span = self.span(key, &pd);
            self.spans.push(span);
        }
    }

    fn device_attributes(&self, key: DevKey) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(16);
        let n = self.names.get(&key.0);
        n.push_attributes(&mut a, &key.0);
        a.push(KeyValue::new(names::ATTR_IO_DIRECTION, key.1.as_str()));
        if key.0.netns.cookie != 0 {
            a.push(KeyValue::new(
                names::ATTR_WORKLOAD_DIRECTION,
                n.workload_direction(key.1).as_str(),
            ));
        }
        a
    }

    /// Retires the series of devices gone for a whole collect, and of renamed devices.
    fn retire_gone_and_renamed(&mut self) {
        let table = self.names.table().clone();
        let mut done = self
            .grace
            .due(self.names.devices(), |d| gone::device_gone(&table, d));
        done.extend(self.names.renamed());
        for d in done {
            self.series.retire_if(|k| k.0 == d);
        }
    }

    fn span(&mut self, key: DevKey, pd: &Pending) -> Span {
        let (trace_id, span_id) = self.ids.next(pd.ev.start_ns);
        let ev = &pd.ev;
        let mut attributes = self.device_attributes(key);
        attributes.push(KeyValue::new(
            names::ATTR_BURST_PACKETS,
            i64::try_from(ev.packets).unwrap_or(i64::MAX),
        ));
        attributes.push(KeyValue::new(
            names::ATTR_BURST_BYTES,
            i64::try_from(ev.bytes).unwrap_or(i64::MAX),
        ));
        attributes.push(KeyValue::new(
            names::ATTR_BURST_PEAK_PPS,
            i64::try_from(ev.peak_pps).unwrap_or(i64::MAX),
        ));
        attributes.push(KeyValue::new(
            names::ATTR_BURST_PEAK_BPS,
            i64::try_from(ev.peak_bytes_per_s.saturating_mul(8)).unwrap_or(i64::MAX),
        ));
        attributes.push(KeyValue::new(names::ATTR_BURST_CPUS, pd.cpus.len() as i64));
        let q = &pd.queue;
        if q.samples + q.drops > 0 {
            attributes.push(KeyValue::new(
                names::ATTR_QUEUE_MAX_DELAY_US,
                i64::try_from(q.delay_ns / 1000).unwrap_or(i64::MAX),
            ));
            attributes.push(KeyValue::new(
                names::ATTR_QUEUE_MAX_BACKLOG_BYTES,
                i64::from(q.backlog_bytes),
            ));
            attributes.push(KeyValue::new(
                names::ATTR_QUEUE_MAX_BACKLOG_PACKETS,
                i64::from(q.backlog_packets),
            ));
            attributes.push(KeyValue::new(
                names::ATTR_QUEUE_DROPS,
                i64::try_from(q.drops).unwrap_or(i64::MAX),
            ));
        }
        let mut flows: Vec<(&FlowKey, &u64)> = pd.flows.iter().collect();
        flows.sort_by(|a, b| {
            b.1.cmp(a.1)
                .then_with(|| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)))
        });
        let events = flows
            .into_iter()
            .take(self.config.top_flows)
            .map(|(f, n)| SpanEvent {
                time_ns: ev.start_ns,
                name: Cow::Borrowed(names::SPAN_EVENT_BURST_FLOW),
                attributes: vec![
                    KeyValue::new(names::ATTR_TRANSPORT, f.transport.as_str()),
                    KeyValue::new(names::ATTR_SOURCE_ADDRESS, f.src.to_string()),
                    KeyValue::new(names::ATTR_SOURCE_PORT, i64::from(f.sport)),
                    KeyValue::new(names::ATTR_DESTINATION_ADDRESS, f.dst.to_string()),
                    KeyValue::new(names::ATTR_DESTINATION_PORT, i64::from(f.dport)),
                    KeyValue::new(
                        names::ATTR_BURST_FLOW_PACKETS,
                        i64::try_from(*n).unwrap_or(i64::MAX),
                    ),
                ],
            })
            .collect();
        Span {
            trace_id,
            span_id,
            parent_span_id: [0; 8],
            name: Cow::Borrowed(names::SPAN_NETWORK_BURST),
            kind: SpanKind::Internal,
            start_time_ns: ev.start_ns,
            end_time_ns: ev.end_ns.max(ev.start_ns),
            attributes,
            events,
            status: SpanStatus::Unset,
        }
    }

    fn emit(&mut self, out: &mut Emitter) {
        let scope = output::scope(&self.scope_name, "");
        output::send_spans(out, scope.clone(), &mut self.spans);
        let now = now_ns();
        self.retire_gone_and_renamed();
        let start = self.series.start_ns();
        let temporality = self.config.temporality;
        let all: Vec<(Vec<KeyValue>, &DeviceSeries)> = self
            .series
            .sorted_by_key(|k| *k)
            .into_iter()
            .map(|(s, v)| (s.attributes(|k| self.device_attributes(*k)), v))
            .collect();
        let point = |attributes: &Vec<KeyValue>, v: u64| NumberPoint {
            attributes: attributes.clone(),
            start_time_ns: start,
            time_ns: now,
            value: output::int(v),
        };
        let mut metrics = Vec::new();
        let count: Vec<NumberPoint> = all.iter().map(|(a, s)| point(a, s.count)).collect();
        let packets: Vec<NumberPoint> = all.iter().map(|(a, s)| point(a, s.packets)).collect();
        let duration: Vec<HistogramPoint> = all
            .iter()
            .filter(|(_, s)| s.duration.count() > 0)
            .map(|(a, s)| HistogramPoint {
                attributes: a.clone(),
                start_time_ns: start,
                time_ns: now,
                count: s.duration.count(),
                sum: Some(s.duration.sum()),
                min: None,
                max: None,
                explicit_bounds: self.config.boundaries.to_vec(),
                bucket_counts: s.duration.explicit_counts(&self.config.boundaries),
            })
            .collect();
        let peak: Vec<NumberPoint> = all
            .iter()
            .filter_map(|(a, s)| s.peak_pps.map(|p| point(a, p)))
            .collect();
        let metric =
            |name: &'static str, description: &'static str, unit: &'static str, data| Metric {
                name: Cow::Borrowed(name),
                description: Cow::Borrowed(description),
                unit: Cow::Borrowed(unit),
                data,
            };
        if !count.is_empty() {
            metrics.push(metric(
                names::BURST_COUNT,
                "Microbursts detected (per-CPU reports of one burst merged).",
                "{burst}",
                MetricData::Sum {
                    points: count,
                    temporality,
                    monotonic: true,
                },
            ));
            metrics.push(metric(
                names::BURST_PACKETS,
                "Packets in microbursts.",
                "{packet}",
                MetricData::Sum {
                    points: packets,
                    temporality,
                    monotonic: true,
                },
            ));
        }
        if !duration.is_empty() {
            metrics.push(metric(
                names::BURST_DURATION,
                "How long microbursts lasted.",
                "s",
                MetricData::Histogram {
                    points: duration,
                    temporality,
                },
            ));
        }
        if !peak.is_empty() {
            metrics.push(metric(
                names::BURST_PEAK_RATE,
                "Highest packet rate over the detector's window in a burst since the last point.",
                "{packet}/s",
                MetricData::Gauge { points: peak },
            ));
        }
        let mut untracked = Vec::new();
        for (reason, v) in [
            ("device", self.untracked_devices),
            ("flow", self.untracked_flows),
        ] {
            if v > 0 {
                untracked.push(NumberPoint {
                    attributes: vec![KeyValue::new(names::ATTR_BURST_UNTRACKED_REASON, reason)],
                    start_time_ns: start,
                    time_ns: now,
                    value: output::int(v),
                });
            }
        }
        if !untracked.is_empty() {
            metrics.push(metric(
                names::BURST_UNTRACKED,
                "Burst reports and packets not tracked (max_devices), and packets of flows not \
                 counted in a burst's top flows (max_flows); cumulative.",
                "{event}",
                MetricData::Sum {
                    points: untracked,
                    temporality: Temporality::Cumulative,
                    monotonic: true,
                },
            ));
        }
        // The peak rate is a gauge: each point covers the time since the last one.
        for s in self.series.values_mut() {
            s.peak_pps = None;
        }
        self.series.finish_collect(now);
        let in_use = self.series.keys().map(|k| k.0).collect();
        self.names.after_collect(&in_use);
        output::send_metrics(out, scope, metrics);
    }

    /// Sends the spans of bursts made final; after every batch, so the scope (a formatted
    /// string) is made only when there are some.
    fn flush_spans(&mut self, out: &mut Emitter) {
        if !self.spans.is_empty() {
            output::send_spans(out, output::scope(&self.scope_name, ""), &mut self.spans);
        }
    }
}

/// When a pending burst is final: `merge_delay` after its last report, unless a CPU still has
/// a burst open on the device that began before its end, or the device has a queue whose
/// records have not yet reached the burst's end (then at most [`MAX_WAIT`] later).
fn ready_at(open: &[(u32, u64)], queue_seen_ns: u64, pd: &Pending) -> Instant {
    let queue_behind = queue_seen_ns != 0 && queue_seen_ns < pd.ev.end_ns;
    if queue_behind || open.iter().any(|(_, st)| *st <= pd.ev.end_ns) {
        pd.final_at + MAX_WAIT
    } else {
        pd.final_at
    }
}

/// Counts a packet of `flow`; 1 if it could not be (table full).
fn count_flow(flows: &mut FxHashMap<FlowKey, u64>, flow: FlowKey, max: usize) -> u64 {
    if let Some(n) = flows.get_mut(&flow) {
        *n += 1;
        0
    } else if flows.len() < max {
        flows.insert(flow, 1);
        0
    } else {
        1
    }
}

impl Processor for Burst {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(batch) => {
                let now = Instant::now();
                for event in &batch.events {
                    match event {
                        Event::Packet(p) => self.on_packet(p, now),
                        Event::Burst(b) => self.on_burst(b, now),
                        Event::Queue(q) => self.on_queue(q, now),
                        _ => {}
                    }
                }
                self.settle(now, false);
                // Spans go out as soon as their burst is final.
                self.flush_spans(out);
                out.events(batch);
            }
            other => out.payload(other),
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        let due = self
            .state
            .values()
            .flat_map(|s| {
                s.pending
                    .iter()
                    .map(|p| ready_at(&s.open, s.queue_seen_ns, p))
            })
            .min();
        Some(due.map_or(self.next_emit, |d| d.min(self.next_emit)))
    }

    fn tick(&mut self, now: Instant, out: &mut Emitter) {
        self.settle(now, false);
        self.flush_spans(out);
        if now >= self.next_emit {
            self.emit(out);
            self.next_emit = now + self.config.interval.get();
            // Devices idle for long with nothing open are forgotten.
            self.state.retain(|_, s| {
                !s.open.is_empty()
                    || !s.pending.is_empty()
                    || s.seen
                        .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
            });
        }
    }

    fn flush(&mut self, out: &mut Emitter) {
        self.settle(Instant::now(), true);
        self.emit(out);
    }
}

#[cfg(test)]
mod tests;

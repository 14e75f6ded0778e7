//! The `queue` processor: the `qdisc` receiver's records → per-device series of how long
//! packets waited in the device's transmit queue (`periscope.network.queue.delay`, seconds),
//! the most bytes and packets queued at an enqueue since the last point
//! (`periscope.network.queue.backlog`, `periscope.network.queue.length`) and the packets the
//! queueing discipline dropped, by reason (`periscope.network.queue.drops`).
//!
//! A series is one device (namespace inode and cookie, ifindex) under the name the kernel
//! read when the packet left: a renamed device starts a new series, and a series keeps its
//! name after the device is gone. Series of namespaces found gone retire after one grace
//! collect (as the `latency` processor's do).

mod config;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use rustc_hash::FxHashSet;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Emitter, Processor, ProcessorConfig,
};
use periscope_pipeline::model::{
    DeviceRef, Direction, Event, KeyValue, Metric, MetricData, NumberPoint, Payload, QueueEvent,
    QueueEventKind,
};
use periscope_pipeline::telemetry::{names, now_ns};
use periscope_pipeline::NamespaceTable;

pub use config::{QueueConfig, DEFAULT_BOUNDARIES};

use crate::device_names::push_netns;
use crate::gone::{self, Grace};
use crate::latency::{HistogramKind, Recorder};
use crate::output;
use crate::series::{SeriesTable, TableOptions};

impl ProcessorConfig for QueueConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(
            Queue::new(self.clone(), ctx.id.to_string())?.with_namespaces(ctx.namespaces.clone()),
        ))
    }
}

/// A device under one name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DevKey {
    device: DeviceRef,
    name: Arc<str>,
}

/// What one device's delay series holds.
#[derive(Clone, Debug)]
struct DelaySeries {
    delay: Recorder,
    /// Most bytes and packets queued at an enqueue since the last point.
    backlog: Option<(u32, u32)>,
}

/// The running processor.
pub struct Queue {
    config: QueueConfig,
    scope_name: String,
    explicit: bool,
    exponential: Option<(usize, i32)>,
    bounds: Vec<f64>,
    delay: SeriesTable<DevKey, DelaySeries>,
    drops: SeriesTable<(DevKey, &'static str), u64>,
    /// The last name seen per device and ifname bytes, so a name is made once per device.
    names: rustc_hash::FxHashMap<(DeviceRef, [u8; 16]), Arc<str>>,
    namespaces: NamespaceTable,
    grace: Grace<periscope_pipeline::model::NetnsId>,
    next_emit: Instant,
}

impl Queue {
    pub fn new(config: QueueConfig, scope_name: String) -> anyhow::Result<Self> {
        config.ensure_valid()?;
        let options = TableOptions::new(&scope_name, config.cardinality_limit, config.temporality);
        Ok(Queue {
            delay: SeriesTable::new(&options, names::QUEUE_DELAY),
            drops: SeriesTable::new(&options, names::QUEUE_DROPS),
            explicit: config.histograms.contains(&HistogramKind::Explicit),
            exponential: config
                .histograms
                .contains(&HistogramKind::Exponential)
                .then_some((config.max_size as usize, config.max_scale)),
            bounds: config.boundaries.to_vec(),
            next_emit: Instant::now() + config.interval.get(),
            config,
            scope_name,
            names: Default::default(),
            namespaces: NamespaceTable::default(),
            grace: Grace::default(),
        })
    }

    /// Tells gone namespaces from `namespaces` (filled by the receivers): their series end.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.namespaces = namespaces;
        self
    }

    fn key(&mut self, q: &QueueEvent) -> DevKey {
        let name = self
            .names
            .entry((q.device, q.ifname))
            .or_insert_with(|| Arc::from(q.ifname()))
            .clone();
        DevKey {
            device: q.device,
            name,
        }
    }

    fn on_queue(&mut self, q: &QueueEvent) {
        let key = self.key(q);
        match q.kind {
            QueueEventKind::Dequeue => {
                let (sf, exp) = (self.config.significant_figures, self.exponential);
                let s = self.delay.value(key, || DelaySeries {
                    delay: Recorder::new(sf, exp),
                    backlog: None,
                });
                s.delay.record(q.delay_ns);
                let (b, p) = s.backlog.unwrap_or((0, 0));
                s.backlog = Some((b.max(q.backlog_bytes), p.max(q.backlog_packets)));
            }
            QueueEventKind::Drop => {
                *self.drops.value((key, q.reason), || 0) += 1;
            }
        }
    }

    fn attributes(k: &DevKey) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(5);
        push_netns(&mut a, k.device.netns);
        a.push(KeyValue::new(
            names::ATTR_INTERFACE_NAME,
            k.name.to_string(),
        ));
        a.push(KeyValue::new(
            names::ATTR_IO_DIRECTION,
            Direction::Egress.as_str(),
        ));
        a
    }

    /// Retires the series of namespaces gone for a whole collect.
    fn retire_gone(&mut self) {
        let mut sources = FxHashSet::default();
        sources.extend(self.delay.keys().map(|k| k.device.netns));
        sources.extend(self.drops.keys().map(|k| k.0.device.netns));
        let table = self.namespaces.clone();
        for n in self.grace.due(sources, |n| gone::netns_gone(&table, n)) {
            self.delay.retire_if(|k| k.device.netns == n);
            self.drops.retire_if(|k| k.0.device.netns == n);
        }
    }

    fn emit(&mut self, out: &mut Emitter) {
        let now = now_ns();
        self.retire_gone();
        let start = self.delay.start_ns();
        let temporality = self.config.temporality;
        let bounds = self.explicit.then_some(self.bounds.as_slice());
        let mut hist = Vec::new();
        let mut expo = Vec::new();
        let mut backlog = Vec::new();
        let mut length = Vec::new();
        for (s, v) in self.delay.sorted_by_key(|k| k.clone()) {
            let attributes = s.attributes(Self::attributes);
            if let Some((bytes, packets)) = v.backlog {
                let point = |value: u32| NumberPoint {
                    attributes: attributes.clone(),
                    start_time_ns: start,
                    time_ns: now,
                    value: output::int(u64::from(value)),
                };
                backlog.push(point(bytes));
                length.push(point(packets));
            }
            if v.delay.count() == 0 {
                continue;
            }
            let (h, e) = v.delay.points(attributes, start, now, bounds);
            hist.extend(h);
            expo.extend(e);
        }
        let drops: Vec<NumberPoint> = self
            .drops
            .sorted_by_key(|k| k.clone())
            .into_iter()
            .map(|(s, v)| NumberPoint {
                attributes: s.attributes(|(k, reason)| {
                    let mut a = Self::attributes(k);
                    a.push(KeyValue::new(names::ATTR_DROP_REASON, *reason));
                    a
                }),
                start_time_ns: self.drops.start_ns(),
                time_ns: now,
                value: output::int(*v),
            })
            .collect();
        let metric =
            |name: &'static str, description: &'static str, unit: &'static str, data| Metric {
                name: Cow::Borrowed(name),
                description: Cow::Borrowed(description),
                unit: Cow::Borrowed(unit),
                data,
            };
        const DELAY: &str = "Time packets waited in the device's transmit queue (root qdisc), \
                             enqueue to dequeue toward the driver.";
        let mut metrics = Vec::new();
        let mut exponential_metrics = Vec::new();
        if !hist.is_empty() {
            metrics.push(metric(
                names::QUEUE_DELAY,
                DELAY,
                "s",
                MetricData::Histogram {
                    points: hist,
                    temporality,
                },
            ));
        }
        if !expo.is_empty() {
            exponential_metrics.push(metric(
                names::QUEUE_DELAY,
                DELAY,
                "s",
                MetricData::ExponentialHistogram {
                    points: expo,
                    temporality,
                },
            ));
        }
        if !backlog.is_empty() {
            metrics.push(metric(
                names::QUEUE_BACKLOG,
                "Most bytes in the device's transmit queue at an enqueue since the last point.",
                "By",
                MetricData::Gauge { points: backlog },
            ));
            metrics.push(metric(
                names::QUEUE_LENGTH,
                "Most packets in the device's transmit queue at an enqueue since the last point.",
                "{packet}",
                MetricData::Gauge { points: length },
            ));
        }
        if !drops.is_empty() {
            metrics.push(metric(
                names::QUEUE_DROPS,
                "Packets the device's queueing discipline dropped, by the kernel's reason.",
                "{packet}",
                MetricData::Sum {
                    points: drops,
                    temporality,
                    monotonic: true,
                },
            ));
        }
        // The gauges cover the time since the last point.
        for s in self.delay.values_mut() {
            s.backlog = None;
        }
        self.delay.finish_collect(now);
        self.drops.finish_collect(now);
        // Names of devices without series any more are forgotten.
        let in_use: FxHashSet<DeviceRef> = self
            .delay
            .keys()
            .map(|k| k.device)
            .chain(self.drops.keys().map(|k| k.0.device))
            .collect();
        self.names.retain(|(d, _), _| in_use.contains(d));
        if self.explicit && self.exponential.is_some() {
            let scope = output::scope(&self.scope_name, "/exponential");
            output::send_metrics(out, scope, exponential_metrics);
        } else {
            metrics.append(&mut exponential_metrics);
        }
        output::send_metrics(out, output::scope(&self.scope_name, ""), metrics);
    }
}

impl Processor for Queue {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(mut batch) => {
                let mut any = false;
                for event in &batch.events {
                    if let Event::Queue(q) = event {
                        self.on_queue(q);
                        any = true;
                    }
                }
                if any {
                    batch.events.retain(|e| !matches!(e, Event::Queue(_)));
                }
                if !batch.events.is_empty() {
                    out.events(batch);
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

#[cfg(test)]
mod tests;

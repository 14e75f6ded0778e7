//! The topology with test components: fan-in, fan-out, drop policies, drain and the shutdown
//! deadline. Every item is accounted for: delivered or counted as dropped.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Emitter, Exporter, ExporterConfig, Processor, ProcessorConfig,
    Receiver, ReceiverConfig, Registry,
};
use periscope_pipeline::config::load_str;
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::{
    Event, KeyValue, Metric, MetricData, MetricsBatch, Number, NumberPoint, PacketEvent, Payload,
    Telemetry, Temporality,
};
use periscope_pipeline::telemetry::CounterValues;
use periscope_pipeline::topology;

/// Emits `count` events (or forever, when absent) in batches of `batch`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct TestSourceConfig {
    /// Events to emit; none = until stopped.
    count: Option<u64>,
    /// Events per batch.
    batch: usize,
}

impl ComponentConfig for TestSourceConfig {
    const TYPE: &'static str = "source";
}

impl ReceiverConfig for TestSourceConfig {
    fn is_finite(&self) -> bool {
        self.count.is_some()
    }
    fn build(&self, _: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(TestSource {
            count: self.count,
            batch: self.batch,
        }))
    }
}

struct TestSource {
    count: Option<u64>,
    batch: usize,
}

impl Receiver for TestSource {
    fn run(self: Box<Self>, output: &mut EventOutput, stop: &StopSignal) -> anyhow::Result<()> {
        let mut sent = 0u64;
        while !stop.is_raised() && self.count.is_none_or(|c| sent < c) {
            let n = match self.count {
                Some(c) => (c - sent).min(self.batch as u64),
                None => self.batch as u64,
            };
            let mut b = output.new_batch();
            for _ in 0..n {
                b.push(Event::Packet(PacketEvent {
                    length: 1,
                    ..PacketEvent::default()
                }));
            }
            output.send(b);
            sent += n;
            if self.count.is_none() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }
}

/// Counts events; emits the total as one data point on flush. `delay_us` slows each batch.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CountConfig {
    /// Sleep per batch.
    #[serde(default)]
    delay_us: u64,
}

impl ComponentConfig for CountConfig {
    const TYPE: &'static str = "count";
}

impl ProcessorConfig for CountConfig {
    fn build(&self, _: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(Count {
            total: 0,
            delay: Duration::from_micros(self.delay_us),
        }))
    }
}

struct Count {
    total: i64,
    delay: Duration,
}

impl Processor for Count {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(b) => {
                self.total += b.len() as i64;
                std::thread::sleep(self.delay);
            }
            other => out.payload(other),
        }
    }
    fn flush(&mut self, out: &mut Emitter) {
        out.telemetry(Telemetry::Metrics(MetricsBatch {
            metrics: vec![Metric {
                name: "events".into(),
                description: "".into(),
                unit: "1".into(),
                data: MetricData::Sum {
                    points: vec![NumberPoint {
                        attributes: vec![KeyValue::new("k", "v")],
                        start_time_ns: 0,
                        time_ns: 0,
                        value: Number::Int(self.total),
                    }],
                    temporality: Temporality::Cumulative,
                    monotonic: true,
                },
            }],
            ..MetricsBatch::default()
        }));
    }
}

fn sinks() -> &'static Mutex<HashMap<String, Vec<Telemetry>>> {
    static SINKS: OnceLock<Mutex<HashMap<String, Vec<Telemetry>>>> = OnceLock::new();
    SINKS.get_or_init(Default::default)
}

/// Collects telemetry under `name`; `flush_delay_ms` makes the flush slow.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CollectConfig {
    /// Where the telemetry is kept (test-global).
    name: String,
    /// Sleep in flush.
    #[serde(default)]
    flush_delay_ms: u64,
}

impl ComponentConfig for CollectConfig {
    const TYPE: &'static str = "collect";
}

impl ExporterConfig for CollectConfig {
    fn build(&self, _: &BuildContext) -> anyhow::Result<Box<dyn Exporter>> {
        Ok(Box::new(Collect {
            name: self.name.clone(),
            flush_delay: Duration::from_millis(self.flush_delay_ms),
        }))
    }
}

struct Collect {
    name: String,
    flush_delay: Duration,
}

impl Exporter for Collect {
    fn export(&mut self, t: Telemetry) -> anyhow::Result<()> {
        sinks()
            .lock()
            .unwrap()
            .entry(self.name.clone())
            .or_default()
            .push(t);
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        std::thread::sleep(self.flush_delay);
        Ok(())
    }
}

fn registry() -> Registry {
    Registry::new()
        .receiver::<TestSourceConfig>()
        .processor::<CountConfig>()
        .exporter::<CollectConfig>()
}

/// The `events` totals a sink received, in order.
fn totals(sink: &str) -> Vec<i64> {
    let sinks = sinks().lock().unwrap();
    let mut out = Vec::new();
    for t in sinks.get(sink).into_iter().flatten() {
        if let Telemetry::Metrics(m) = t {
            for metric in m.metrics.iter().filter(|m| m.name == "events") {
                if let MetricData::Sum { points, .. } = &metric.data {
                    for p in points {
                        if let Number::Int(v) = p.value {
                            out.push(v);
                        }
                    }
                }
            }
        }
    }
    out
}

fn counters(
    t: &periscope_pipeline::telemetry::SelfTelemetry,
    kind: &str,
    id: &str,
) -> CounterValues {
    t.values()
        .into_iter()
        .find(|(k, i, ..)| *k == kind && i == id)
        .map(|(.., v)| v)
        .unwrap_or_else(|| panic!("no counters for {kind} {id}"))
}

fn never() -> crossbeam_channel::Receiver<()> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::mem::forget(tx);
    rx
}

#[test]
fn fan_in_and_fan_out_deliver_everything() {
    let yaml = r#"
receivers:
  source/a: {count: 1000, batch: 64}
  source/b: {count: 2500, batch: 100}
processors:
  count: {}
exporters:
  collect/one: {name: fan-one}
  collect/two: {name: fan-two}
service:
  pipelines:
    metrics: {receivers: [source/a, source/b], processors: [count], exporters: [collect/one, collect/two]}
  telemetry: {metrics: {enabled: false}}
"#;
    let config = load_str(yaml, None, &registry(), &|_| None).unwrap();
    let topo = topology::build(&config, &DeviceTable::default()).unwrap();
    assert!(topo.is_finite());
    let t = topo.self_telemetry();
    let report = topo.run(never()).unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(totals("fan-one"), vec![3500]);
    assert_eq!(totals("fan-two"), vec![3500]);
    assert_eq!(counters(&t, "receiver", "source/a").sent, 1000);
    assert_eq!(counters(&t, "receiver", "source/b").sent, 2500);
    assert_eq!(counters(&t, "processor", "count").received, 3500);
    assert_eq!(counters(&t, "exporter", "collect/one").sent, 1);
}

#[test]
fn drop_newest_counts_every_dropped_event() {
    let yaml = r#"
receivers:
  source: {count: 20000, batch: 10}
processors:
  count: {delay_us: 200}
exporters:
  collect: {name: drops}
service:
  pipelines:
    metrics:
      receivers: [source]
      processors: [count]
      exporters: [collect]
      edges: {input: {capacity: 2, when_full: drop_newest}}
  telemetry: {metrics: {enabled: false}}
"#;
    let config = load_str(yaml, None, &registry(), &|_| None).unwrap();
    let topo = topology::build(&config, &DeviceTable::default()).unwrap();
    let t = topo.self_telemetry();
    assert!(topo.run(never()).unwrap().is_success());
    let source = counters(&t, "receiver", "source");
    let delivered = totals("drops")[0] as u64;
    assert!(
        source.dropped > 0,
        "a slow processor behind a 2-batch queue must cause drops"
    );
    assert_eq!(
        delivered + source.dropped,
        20000,
        "delivered {delivered}, dropped {}",
        source.dropped
    );
    assert_eq!(counters(&t, "processor", "count").received, delivered);
}

#[test]
fn shutdown_drains_and_flushes_with_block_policy() {
    let yaml = r#"
receivers:
  source: {batch: 50}
processors:
  count: {}
exporters:
  collect: {name: drain}
service:
  pipelines:
    metrics: {receivers: [source], processors: [count], exporters: [collect]}
  telemetry: {metrics: {enabled: true, interval: 1h, exporters: [collect]}}
  shutdown_timeout: 5s
"#;
    let config = load_str(yaml, None, &registry(), &|_| None).unwrap();
    let topo = topology::build(&config, &DeviceTable::default()).unwrap();
    assert!(!topo.is_finite());
    let t = topo.self_telemetry();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let started = Instant::now();
    let handle = std::thread::spawn(move || topo.run(rx));
    std::thread::sleep(Duration::from_millis(300));
    tx.send(()).unwrap();
    let report = handle.join().unwrap().unwrap();
    assert!(report.is_success(), "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let sent = counters(&t, "receiver", "source").sent;
    assert!(sent > 0);
    assert_eq!(
        totals("drain"),
        vec![sent as i64],
        "every event sent before the stop is counted"
    );
    // The final self-telemetry snapshot reached the exporter after the pipeline's flush.
    let sinks = sinks().lock().unwrap();
    let self_metrics = sinks["drain"].iter().any(|t| match t {
        Telemetry::Metrics(m) => m
            .metrics
            .iter()
            .any(|m| m.name == "periscope.component.sent"),
        _ => false,
    });
    assert!(self_metrics, "periscope.component.* metrics were exported");
}

#[test]
fn shutdown_deadline_is_enforced() {
    let yaml = r#"
receivers:
  source: {batch: 10}
exporters:
  collect: {name: slow, flush_delay_ms: 3000}
processors:
  count: {}
service:
  pipelines:
    metrics: {receivers: [source], processors: [count], exporters: [collect]}
  telemetry: {metrics: {enabled: false}}
  shutdown_timeout: 300ms
"#;
    let config = load_str(yaml, None, &registry(), &|_| None).unwrap();
    let topo = topology::build(&config, &DeviceTable::default()).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let handle = std::thread::spawn(move || topo.run(rx));
    std::thread::sleep(Duration::from_millis(100));
    let stop_at = Instant::now();
    tx.send(()).unwrap();
    let report = handle.join().unwrap().unwrap();
    let took = stop_at.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(report.unfinished, vec!["exporter `collect`".to_string()]);
}

//! Tests of the queue processor: delay histograms per device, backlog gauges, drops by reason,
//! renamed devices, bounded series, events passed on.

use super::*;
use periscope_pipeline::config::problems;
use periscope_pipeline::model::{
    AnyValue, EventBatch, MetricData, NetnsId, Number, PacketEvent, Telemetry, Temporality,
};

use crate::testing::{at_least_one, overflow_warnings, warnings};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

fn dev(ifindex: u32) -> DeviceRef {
    DeviceRef {
        netns: NetnsId {
            inode: 4026532000,
            cookie: 9,
        },
        ifindex,
    }
}

fn name(s: &str) -> [u8; 16] {
    let mut n = [0u8; 16];
    n[..s.len()].copy_from_slice(s.as_bytes());
    n
}

fn dequeue(ifindex: u32, ifname: &str, at: u64, delay: u64, backlog: (u32, u32)) -> Event {
    Event::Queue(QueueEvent {
        kind: QueueEventKind::Dequeue,
        timestamp_ns: T0 + at,
        device: dev(ifindex),
        ifname: name(ifname),
        delay_ns: delay,
        backlog_bytes: backlog.0,
        backlog_packets: backlog.1,
        length: 1042,
        reason: "",
    })
}

fn dropped(ifindex: u32, ifname: &str, reason: &'static str) -> Event {
    Event::Queue(QueueEvent {
        kind: QueueEventKind::Drop,
        timestamp_ns: T0,
        device: dev(ifindex),
        ifname: name(ifname),
        reason,
        ..QueueEvent::default()
    })
}

fn processor(config: QueueConfig) -> Queue {
    Queue::new(config, "queue".into()).unwrap()
}

fn feed(p: &mut Queue, events: Vec<Event>) -> Vec<Payload> {
    let mut out = Emitter::default();
    p.process(Payload::Events(EventBatch { events }), &mut out);
    out.take()
}

fn collect(p: &mut Queue) -> Vec<Metric> {
    let mut out = Emitter::default();
    p.flush(&mut out);
    out.take()
        .into_iter()
        .flat_map(|payload| match payload {
            Payload::Telemetry(Telemetry::Metrics(m)) => m.metrics,
            _ => Vec::new(),
        })
        .collect()
}

fn attr<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    a.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

fn ints(m: &[Metric], name: &str) -> Vec<(String, i64)> {
    m.iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            MetricData::Sum { points, .. } | MetricData::Gauge { points } => points
                .iter()
                .map(|p| {
                    let dev = match attr(&p.attributes, names::ATTR_INTERFACE_NAME) {
                        Some(AnyValue::String(s)) => s.to_string(),
                        _ => "?".into(),
                    };
                    let reason = match attr(&p.attributes, names::ATTR_DROP_REASON) {
                        Some(AnyValue::String(s)) => format!("/{s}"),
                        _ => String::new(),
                    };
                    let v = match p.value {
                        Number::Int(v) => v,
                        Number::Double(v) => v as i64,
                    };
                    (format!("{dev}{reason}"), v)
                })
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn delays_backlog_and_drops_per_device() {
    let mut p = processor(QueueConfig::default());
    let passed = feed(
        &mut p,
        vec![
            dequeue(2, "eth0", 0, 30_000, (1042, 1)),
            dequeue(2, "eth0", MS, 8 * MS, (5210, 5)),
            dequeue(2, "eth0", 2 * MS, 800 * MS, (3126, 3)),
            dequeue(3, "qd-b", 0, 0, (0, 0)),
            dropped(2, "eth0", "QDISC_DROP"),
            dropped(2, "eth0", "QDISC_DROP"),
            dropped(3, "qd-b", "QDISC_OVERLIMIT"),
            Event::Packet(PacketEvent::default()),
        ],
    );
    // Queue events are consumed, the rest passed on.
    let [Payload::Events(b)] = passed.as_slice() else {
        panic!("{passed:?}")
    };
    assert_eq!(b.events.len(), 1);
    let metrics = collect(&mut p);
    let h = metrics
        .iter()
        .find(|m| m.name == names::QUEUE_DELAY)
        .expect("a delay histogram");
    assert_eq!(h.unit, "s");
    let MetricData::Histogram { points, .. } = &h.data else {
        panic!("{h:?}")
    };
    assert_eq!(points.len(), 2);
    let eth0 = points
        .iter()
        .find(|p| {
            attr(&p.attributes, names::ATTR_INTERFACE_NAME)
                == Some(&AnyValue::String("eth0".into()))
        })
        .unwrap();
    assert_eq!(eth0.count, 3);
    let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
    assert!(near(eth0.max, 0.8), "{:?}", eth0.max);
    assert!(near(eth0.min, 30e-6), "{:?}", eth0.min);
    // 30µs ≤ 50µs, 8ms ≤ 10ms, 800ms ≤ 1s.
    let bucket = |secs: f64| DEFAULT_BOUNDARIES.partition_point(|b| *b < secs);
    let mut want = vec![0u64; DEFAULT_BOUNDARIES.len() + 1];
    for s in [30e-6, 8e-3, 0.8] {
        want[bucket(s)] += 1;
    }
    assert_eq!(eth0.bucket_counts, want);
    assert_eq!(
        attr(&eth0.attributes, names::ATTR_IO_DIRECTION),
        Some(&AnyValue::String("transmit".into()))
    );
    assert_eq!(
        attr(&eth0.attributes, names::ATTR_NETNS_COOKIE),
        Some(&AnyValue::Int(9))
    );
    assert_eq!(
        ints(&metrics, names::QUEUE_BACKLOG),
        [("eth0".into(), 5210), ("qd-b".into(), 0)]
    );
    assert_eq!(
        ints(&metrics, names::QUEUE_LENGTH),
        [("eth0".into(), 5), ("qd-b".into(), 0)]
    );
    assert_eq!(
        ints(&metrics, names::QUEUE_DROPS),
        [
            ("eth0/QDISC_DROP".into(), 2),
            ("qd-b/QDISC_OVERLIMIT".into(), 1)
        ]
    );
    // The gauges cover one interval; the cumulative histogram and drops stay.
    let again = collect(&mut p);
    assert!(ints(&again, names::QUEUE_BACKLOG).is_empty());
    assert_eq!(ints(&again, names::QUEUE_DROPS).len(), 2);
}

#[test]
fn exponential_histograms_come_in_their_own_scope_with_both() {
    let mut p = processor(QueueConfig {
        histograms: vec![HistogramKind::Explicit, HistogramKind::Exponential],
        temporality: Temporality::Delta,
        ..QueueConfig::default()
    });
    feed(
        &mut p,
        (1..=100)
            .map(|i| dequeue(2, "eth0", i * MS, i * 100_000, (0, 0)))
            .collect(),
    );
    let mut out = Emitter::default();
    p.flush(&mut out);
    let mut scopes = Vec::new();
    for payload in out.take() {
        if let Payload::Telemetry(Telemetry::Metrics(m)) = payload {
            for metric in &m.metrics {
                if metric.name == names::QUEUE_DELAY {
                    scopes.push((m.scope.name.to_string(), metric.data.clone()));
                }
            }
        }
    }
    assert_eq!(scopes.len(), 2, "{scopes:?}");
    let (scope, data) = scopes
        .iter()
        .find(|(_, d)| matches!(d, MetricData::ExponentialHistogram { .. }))
        .unwrap();
    assert_eq!(scope, "periscope/queue/exponential");
    let MetricData::ExponentialHistogram { points, .. } = data else {
        unreachable!()
    };
    assert_eq!(points[0].count, 100);
    assert_eq!(points[0].positive.bucket_counts.iter().sum::<u64>(), 100);
    // Delta: nothing new, nothing emitted.
    assert!(collect(&mut p).iter().all(|m| m.name != names::QUEUE_DELAY));
}

#[test]
fn a_renamed_device_is_a_new_series() {
    let mut p = processor(QueueConfig::default());
    feed(
        &mut p,
        vec![
            dequeue(5, "tmp1234", 0, MS, (0, 0)),
            dequeue(5, "eth0", MS, 2 * MS, (0, 0)),
        ],
    );
    let metrics = collect(&mut p);
    let mut names_seen: Vec<String> = ints(&metrics, names::QUEUE_LENGTH)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names_seen.sort();
    assert_eq!(names_seen, ["eth0", "tmp1234"]);
}

#[test]
fn series_past_the_limit_go_to_the_overflow_series() {
    let (metrics, lines) = warnings(|| {
        let mut p = processor(QueueConfig {
            cardinality_limit: at_least_one(2),
            ..QueueConfig::default()
        });
        feed(
            &mut p,
            (1..=5).map(|i| dequeue(i, "eth0", 0, MS, (0, 0))).collect(),
        );
        collect(&mut p)
    });
    let h = metrics
        .iter()
        .find(|m| m.name == names::QUEUE_DELAY)
        .unwrap();
    let MetricData::Histogram { points, .. } = &h.data else {
        panic!()
    };
    assert_eq!(points.len(), 3);
    assert_eq!(points.iter().map(|p| p.count).sum::<u64>(), 5);
    assert_eq!(overflow_warnings(&lines), 1, "{lines:?}");
}

#[test]
fn config_errors_are_located() {
    let errors = problems::<QueueConfig>("histograms: []\nmax_scale: 30\nsignificant_figures: 9\n");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["histograms", "max_scale", "significant_figures"]);
    assert!(problems::<QueueConfig>("{}").is_empty());
}

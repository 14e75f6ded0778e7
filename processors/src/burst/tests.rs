//! Tests of the burst processor: merging per-CPU reports, top flows, metrics, bounded memory.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use periscope_pipeline::config::problems;
use periscope_pipeline::model::{Number, Telemetry};

use crate::testing::{at_least_one, overflow_warnings, warnings};
use periscope_pipeline::model::{EventBatch, NetnsId};

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

fn report(phase: BurstPhase, ifindex: u32, cpu: u32, start: u64, end: u64, packets: u64) -> Event {
    Event::Burst(BurstEvent {
        phase,
        device: dev(ifindex),
        direction: Direction::Egress,
        cpu,
        start_ns: T0 + start,
        end_ns: T0 + end,
        packets,
        bytes: packets * 100,
        peak_pps: 100_000,
        peak_bytes_per_s: 10_000_000,
    })
}

fn packet(ifindex: u32, ts: u64, sport: u16) -> Event {
    Event::Packet(PacketEvent {
        timestamp_ns: T0 + ts,
        device: dev(ifindex),
        direction: Direction::Egress,
        network: periscope_pipeline::model::NetworkType::Ipv4,
        transport: Transport::Udp,
        src_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        dst_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        src_port: sport,
        dst_port: 9,
        length: 100,
        tcp_flags: 0,
        locality: Default::default(),
    })
}

fn processor(config: BurstConfig) -> Burst {
    Burst::new(config, "burst".into(), DeviceTable::default()).unwrap()
}

fn feed(p: &mut Burst, events: Vec<Event>) -> Vec<Payload> {
    let mut out = Emitter::default();
    p.process(Payload::Events(EventBatch { events }), &mut out);
    out.take()
}

fn finish(p: &mut Burst) -> (Vec<Span>, Vec<Metric>) {
    let mut out = Emitter::default();
    p.flush(&mut out);
    let mut spans = Vec::new();
    let mut metrics = Vec::new();
    for payload in out.take() {
        match payload {
            Payload::Telemetry(Telemetry::Traces(t)) => spans.extend(t.spans),
            Payload::Telemetry(Telemetry::Metrics(m)) => metrics.extend(m.metrics),
            _ => {}
        }
    }
    (spans, metrics)
}

fn int(m: &[Metric], name: &str) -> Vec<i64> {
    m.iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            MetricData::Sum { points, .. } | MetricData::Gauge { points } => points
                .iter()
                .map(|p| match p.value {
                    Number::Int(v) => v,
                    Number::Double(v) => v as i64,
                })
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        })
        .collect()
}

fn attr<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a periscope_pipeline::model::AnyValue> {
    a.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

#[test]
fn merges_the_cpus_reports_of_one_burst() {
    let mut p = processor(BurstConfig::default());
    feed(
        &mut p,
        vec![
            report(BurstPhase::Start, 2, 0, 10 * MS, 10 * MS + 200_000, 20),
            report(BurstPhase::Start, 2, 1, 11 * MS, 11 * MS + 100_000, 20),
            report(BurstPhase::End, 2, 0, 10 * MS, 14 * MS, 300),
            report(BurstPhase::End, 2, 1, 11 * MS, 15 * MS, 200),
            // A second, separate burst on the same device.
            report(BurstPhase::End, 2, 0, 100 * MS, 102 * MS, 500),
        ],
    );
    let (spans, metrics) = finish(&mut p);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let s = &spans[0];
    assert_eq!(s.name, names::SPAN_NETWORK_BURST);
    assert_eq!(
        (s.start_time_ns, s.end_time_ns),
        (T0 + 10 * MS, T0 + 15 * MS)
    );
    assert_eq!(
        attr(&s.attributes, names::ATTR_BURST_PACKETS),
        Some(&periscope_pipeline::model::AnyValue::Int(500))
    );
    assert_eq!(
        attr(&s.attributes, names::ATTR_BURST_CPUS),
        Some(&periscope_pipeline::model::AnyValue::Int(2))
    );
    assert_eq!(int(&metrics, names::BURST_COUNT), [2]);
    assert_eq!(int(&metrics, names::BURST_PACKETS), [1000]);
    // Two CPUs at 100k each: 200k.
    assert_eq!(int(&metrics, names::BURST_PEAK_RATE), [200_000]);
    let h = metrics
        .iter()
        .find(|m| m.name == names::BURST_DURATION)
        .unwrap();
    let MetricData::Histogram { points, .. } = &h.data else {
        panic!("{h:?}")
    };
    assert_eq!(points[0].count, 2);
    assert!(
        (points[0].sum.unwrap() - 0.007).abs() < 0.0002,
        "{points:?}"
    );
}

#[test]
fn lists_the_top_flows_of_a_burst() {
    let mut p = processor(BurstConfig {
        top_flows: 2,
        ..BurstConfig::default()
    });
    let mut events = vec![packet(3, MS, 1)]; // before the burst: not counted
    events.extend((0..5).map(|i| packet(3, 10 * MS + i * 10_000, 7))); // before the detection
    events.push(report(
        BurstPhase::Start,
        3,
        0,
        10 * MS,
        10 * MS + 50_000,
        5,
    ));
    for i in 0..100u64 {
        events.push(packet(
            3,
            10 * MS + 60_000 + i * 10_000,
            if i % 4 == 0 { 8 } else { 7 },
        ));
    }
    events.push(packet(3, 11 * MS + 60_000, 5));
    events.push(report(
        BurstPhase::End,
        3,
        0,
        10 * MS,
        11 * MS + 60_000,
        106,
    ));
    events.push(packet(3, 30 * MS, 6)); // after: not counted
    feed(&mut p, events);
    let (spans, _) = finish(&mut p);
    assert_eq!(spans.len(), 1);
    let flows: Vec<(i64, i64)> = spans[0]
        .events
        .iter()
        .map(|e| {
            let port = match attr(&e.attributes, names::ATTR_SOURCE_PORT) {
                Some(periscope_pipeline::model::AnyValue::Int(v)) => *v,
                other => panic!("{other:?}"),
            };
            let n = match attr(&e.attributes, names::ATTR_BURST_FLOW_PACKETS) {
                Some(periscope_pipeline::model::AnyValue::Int(v)) => *v,
                other => panic!("{other:?}"),
            };
            (port, n)
        })
        .collect();
    assert_eq!(flows, [(7, 80), (8, 25)]);
}

#[test]
fn memory_stays_bounded_and_caps_are_counted() {
    let mut p = processor(BurstConfig {
        max_devices: at_least_one(2),
        max_flows: at_least_one(3),
        cardinality_limit: at_least_one(1),
        ..BurstConfig::default()
    });
    let mut events = vec![report(BurstPhase::Start, 1, 0, 0, 10, 1)];
    events.extend((0..10).map(|i| packet(1, 20 + i, 100 + i as u16)));
    events.push(report(BurstPhase::Start, 2, 0, 0, 10, 1));
    // A third device while both others have a burst open: not tracked.
    events.push(report(BurstPhase::Start, 3, 0, 0, 10, 1));
    events.push(report(BurstPhase::End, 1, 0, 0, 100, 10));
    events.push(report(BurstPhase::End, 2, 0, 0, 100, 10));
    feed(&mut p, events);
    let (spans, metrics) = finish(&mut p);
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].events.len().max(spans[1].events.len()), 3);
    // One series, then the overflow series.
    let count = metrics
        .iter()
        .find(|m| m.name == names::BURST_COUNT)
        .unwrap();
    let MetricData::Sum { points, .. } = &count.data else {
        panic!()
    };
    assert_eq!(points.len(), 2);
    assert!(points[1]
        .attributes
        .iter()
        .any(|kv| kv.key == names::ATTR_OVERFLOW));
    // 7 flows not counted, 1 device report not tracked.
    let mut untracked = int(&metrics, names::BURST_UNTRACKED);
    untracked.sort();
    assert_eq!(untracked, [1, 7]);
}

#[test]
fn validation_names_the_key() {
    // As `periscope validate` reads it: the option types refuse both values.
    let errors = problems::<BurstConfig>("{boundaries: [0.1, 0.05], max_flows: 0}");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["boundaries.1", "max_flows"]);
}

#[test]
fn series_past_the_limit_fold_into_one_overflow_series_with_one_warning() {
    // Devices 1..=5 burst 1..=5 times each (10 packets per burst); room for 2 series.
    let ((_, metrics), logged) = warnings(|| {
        let mut p = processor(BurstConfig {
            cardinality_limit: at_least_one(2),
            ..BurstConfig::default()
        });
        // One after the other, so that devices 1 and 2 are first to need a series.
        let mut events = Vec::new();
        let mut start = 0;
        for ifindex in 1..=5u32 {
            for _ in 0..ifindex {
                events.push(report(BurstPhase::End, ifindex, 0, start, start + MS, 10));
                start += 1_000 * MS;
            }
        }
        feed(&mut p, events);
        finish(&mut p)
    });
    for (name, per_burst) in [(names::BURST_COUNT, 1), (names::BURST_PACKETS, 10)] {
        let metric = metrics.iter().find(|m| m.name == name).expect(name);
        let MetricData::Sum { points, .. } = &metric.data else {
            panic!("{name} is a sum")
        };
        let value = |p: &NumberPoint| match p.value {
            Number::Int(i) => i,
            Number::Double(d) => d as i64,
        };
        assert_eq!(points.len(), 3, "{name}: 2 series and the overflow series");
        let overflow = &points[2];
        assert_eq!(overflow.attributes, crate::series::overflow_attributes());
        assert_eq!(
            value(overflow),
            (3 + 4 + 5) * per_burst,
            "{name}: devices 3 to 5"
        );
        assert_eq!(
            points.iter().map(value).sum::<i64>(),
            15 * per_burst,
            "{name}: totals"
        );
    }
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
}

#[test]
fn a_gone_devices_series_keep_its_name_and_retire_after_one_grace_collect() {
    let devices = DeviceTable::default();
    let mut p = Burst::new(BurstConfig::default(), "burst".into(), devices.clone()).unwrap();
    devices.insert(
        dev(2),
        periscope_pipeline::devices::DeviceInfo {
            name: "eth0".into(),
            netns_name: Some("pod-a".into()),
            ..Default::default()
        },
    );
    feed(
        &mut p,
        vec![
            report(BurstPhase::Start, 2, 0, 10 * MS, 10 * MS, 20),
            report(BurstPhase::End, 2, 0, 10 * MS, 14 * MS, 300),
        ],
    );
    devices.retire(&dev(2));
    let (spans, metrics) = finish(&mut p);
    assert_eq!(int(&metrics, names::BURST_COUNT), vec![1]);
    let a = &spans[0].attributes;
    assert_eq!(attr(a, names::ATTR_INTERFACE_NAME), Some(&"eth0".into()));
    assert_eq!(attr(a, names::ATTR_NETNS_NAME), Some(&"pod-a".into()));
    assert_eq!(attr(a, names::ATTR_NETNS_COOKIE), Some(&9i64.into()));
    let (_, metrics) = finish(&mut p);
    assert_eq!(int(&metrics, names::BURST_COUNT), vec![1], "the last point");
    let (_, metrics) = finish(&mut p);
    assert!(int(&metrics, names::BURST_COUNT).is_empty(), "retired");
}

fn queued(ifindex: u32, enqueued: u64, delay: u64, backlog: u32) -> Event {
    Event::Queue(QueueEvent {
        kind: QueueEventKind::Dequeue,
        timestamp_ns: T0 + enqueued + delay,
        device: dev(ifindex),
        delay_ns: delay,
        backlog_bytes: backlog,
        backlog_packets: backlog / 1000,
        ..QueueEvent::default()
    })
}

#[test]
fn a_transmit_burst_carries_its_devices_queue() {
    let mut p = processor(BurstConfig::default());
    feed(
        &mut p,
        vec![
            // Before the burst: not counted.
            queued(2, 5 * MS, 9 * MS, 99_000),
            // Before the detection, in the burst.
            queued(2, 10 * MS + 100_000, 2 * MS, 4_000),
            report(BurstPhase::Start, 2, 0, 10 * MS, 10 * MS + 200_000, 20),
            queued(2, 12 * MS, 5 * MS, 20_000),
            report(BurstPhase::End, 2, 0, 10 * MS, 14 * MS, 300),
            // Enqueued at the end, dequeued after: counted once it comes.
            queued(2, 14 * MS, 40 * MS, 30_000),
            Event::Queue(QueueEvent {
                kind: QueueEventKind::Drop,
                timestamp_ns: T0 + 13 * MS,
                device: dev(2),
                backlog_bytes: 31_000,
                ..QueueEvent::default()
            }),
            // Another device's queue.
            queued(3, 12 * MS, 500 * MS, 1),
        ],
    );
    let (spans, _) = finish(&mut p);
    assert_eq!(spans.len(), 1, "{spans:?}");
    let a = &spans[0].attributes;
    let int = |k| match attr(a, k) {
        Some(periscope_pipeline::model::AnyValue::Int(v)) => *v,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(int(names::ATTR_QUEUE_MAX_DELAY_US), 40_000);
    assert_eq!(int(names::ATTR_QUEUE_MAX_BACKLOG_BYTES), 31_000);
    assert_eq!(int(names::ATTR_QUEUE_MAX_BACKLOG_PACKETS), 30);
    assert_eq!(int(names::ATTR_QUEUE_DROPS), 1);
}

#[test]
fn a_burst_waits_for_its_queue_to_drain() {
    let mut p = processor(BurstConfig {
        merge_delay: periscope_pipeline::config::ConfigDuration::from_millis(0),
        ..BurstConfig::default()
    });
    let out = feed(
        &mut p,
        vec![
            queued(2, 9 * MS, MS, 1_000),
            report(BurstPhase::End, 2, 0, 10 * MS, 14 * MS, 300),
        ],
    );
    // The queue has not yet shown a packet that entered after the burst: no span yet.
    assert!(!out
        .iter()
        .any(|p| matches!(p, Payload::Telemetry(Telemetry::Traces(_)))));
    let out = feed(&mut p, vec![queued(2, 14 * MS, 3 * MS, 2_000)]);
    let spans: Vec<&Span> = out
        .iter()
        .flat_map(|p| match p {
            Payload::Telemetry(Telemetry::Traces(t)) => t.spans.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(spans.len(), 1);
    assert_eq!(
        attr(&spans[0].attributes, names::ATTR_QUEUE_MAX_DELAY_US),
        Some(&periscope_pipeline::model::AnyValue::Int(3_000))
    );
    // Without queue records a burst has no queue attributes.
    let mut p = processor(BurstConfig::default());
    feed(
        &mut p,
        vec![report(BurstPhase::End, 2, 0, 10 * MS, 14 * MS, 300)],
    );
    let (spans, _) = finish(&mut p);
    assert_eq!(
        attr(&spans[0].attributes, names::ATTR_QUEUE_MAX_DELAY_US),
        None
    );
}

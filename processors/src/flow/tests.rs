//! Tests of the flow processor: counting, overflow, temporality, kernel counters.

use super::*;
use periscope_pipeline::model::EventBatch;
use periscope_pipeline::model::{Number, Telemetry};

use periscope_pipeline::config::problems;

use crate::testing::{at_least_one, overflow_warnings, warnings};

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
        cardinality_limit: at_least_one(2),
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
    // Refused as the config is read (by the options' types), both at once.
    let problems = problems::<FlowConfig>("{interval: 0s, cardinality_limit: 0}");
    assert_eq!(problems.len(), 2);
}

fn is_overflow(attributes: &[KeyValue]) -> bool {
    attributes.contains(&KeyValue::new(names::ATTR_OVERFLOW, true))
}

#[test]
fn series_past_the_limit_fold_into_one_overflow_series_with_one_warning() {
    // Flows 1..=7 with 1..=7 packets each; room for 3 series.
    let (s, logged) = warnings(|| {
        let mut f = flow(FlowConfig {
            flow_attributes: true,
            cardinality_limit: at_least_one(3),
            ..FlowConfig::default()
        });
        let events = (1..=7u16)
            .flat_map(|sport| (0..sport).map(move |_| packet(1, 10, sport)))
            .collect();
        let mut out = Emitter::default();
        f.process(Payload::Events(EventBatch { events }), &mut out);
        f.flush(&mut out);
        sums(&mut out)
    });
    for (metric, per_packet) in [(&s[0], 1), (&s[1], 10)] {
        let (overflow, series): (Vec<_>, Vec<_>) = metric.1.iter().partition(|p| is_overflow(&p.0));
        assert_eq!(series.len(), 3, "{}", metric.0);
        assert_eq!(overflow.len(), 1, "{}", metric.0);
        assert_eq!(overflow[0].0.len(), 1, "no other attributes");
        assert_eq!(overflow[0].1, (4 + 5 + 6 + 7) * per_packet, "flows 4 to 7");
        assert_eq!(
            metric.1.iter().map(|p| p.1).sum::<i64>(),
            28 * per_packet,
            "totals preserved"
        );
    }
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
}

fn cgroup(id: u64, packets: u64) -> Event {
    Event::CgroupCounters(CgroupCounters {
        cgroup_id: id,
        transport: Transport::Tcp,
        packets,
        bytes: packets * 100,
        ..CgroupCounters::default()
    })
}

#[test]
fn cgroup_series_past_the_limit_go_to_the_overflow_series() {
    let (s, logged) = warnings(|| {
        let mut f = flow(FlowConfig {
            cardinality_limit: at_least_one(2),
            ..FlowConfig::default()
        });
        let mut out = Emitter::default();
        // Kernel totals, read twice: cgroups 3 and 4 are past the limit.
        for events in [
            vec![cgroup(1, 10), cgroup(2, 20), cgroup(3, 30), cgroup(4, 40)],
            vec![cgroup(1, 11), cgroup(3, 35), cgroup(4, 45)],
        ] {
            f.process(Payload::Events(EventBatch { events }), &mut out);
        }
        f.flush(&mut out);
        sums(&mut out)
    });
    assert_eq!(s[0].0, names::CGROUP_PACKETS);
    let values = |points: &[(Vec<KeyValue>, i64)]| -> Vec<(bool, i64)> {
        points.iter().map(|p| (is_overflow(&p.0), p.1)).collect()
    };
    let mut packets = values(&s[0].1);
    packets.sort();
    assert_eq!(packets, [(false, 11), (false, 20), (true, 80)]);
    let mut bytes = values(&s[1].1);
    bytes.sort();
    assert_eq!(bytes, [(false, 1100), (false, 2000), (true, 8000)]);
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
}

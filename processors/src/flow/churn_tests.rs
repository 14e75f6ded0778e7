//! Tests of the flow processor under churn: devices and namespaces that go away, renames,
//! reused inodes, and memory under endless churn.

use super::*;
use periscope_pipeline::devices::DeviceInfo;
use periscope_pipeline::model::{AnyValue, EventBatch, NetnsId, Number, Telemetry};

/// (attributes, value) of every `periscope.network.packets` point emitted.
fn packets(out: &mut Emitter) -> Vec<(Vec<KeyValue>, i64)> {
    let mut result = Vec::new();
    for p in out.take() {
        let Payload::Telemetry(Telemetry::Metrics(m)) = p else {
            panic!("expected metrics")
        };
        for metric in m.metrics {
            if metric.name != names::NETWORK_PACKETS {
                continue;
            }
            let MetricData::Sum { points, .. } = metric.data else {
                panic!("expected a sum")
            };
            for p in points {
                let Number::Int(v) = p.value else {
                    panic!("expected ints")
                };
                result.push((p.attributes, v));
            }
        }
    }
    result
}

fn attr<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    a.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

fn text(a: &[KeyValue], key: &str) -> Option<String> {
    match attr(a, key) {
        Some(AnyValue::String(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn dev(inode: u32, cookie: u64, ifindex: u32) -> DeviceRef {
    DeviceRef {
        netns: NetnsId { inode, cookie },
        ifindex,
    }
}

fn register(t: &DeviceTable, d: DeviceRef, name: &str, pod: &str) {
    t.insert(
        d,
        DeviceInfo {
            name: name.into(),
            netns_name: Some(pod.into()),
            ..Default::default()
        },
    );
}

fn packet(d: DeviceRef) -> Event {
    Event::Packet(PacketEvent {
        device: d,
        length: 100,
        transport: Transport::Udp,
        ..PacketEvent::default()
    })
}

fn counters(d: DeviceRef, packets: u64, last: bool) -> Event {
    Event::DeviceCounters(DeviceCounters {
        device: d,
        transport: Transport::Udp,
        packets,
        bytes: packets * 100,
        last,
        ..DeviceCounters::default()
    })
}

fn feed(f: &mut Flow, events: Vec<Event>) {
    let mut out = Emitter::default();
    f.process(Payload::Events(EventBatch { events }), &mut out);
}

fn collect(f: &mut Flow) -> Vec<(Vec<KeyValue>, i64)> {
    let mut out = Emitter::default();
    f.tick(Instant::now(), &mut out);
    packets(&mut out)
}

#[test]
fn final_counters_give_one_last_point_under_the_devices_names_then_the_series_retires() {
    let t = DeviceTable::default();
    let mut f = Flow::new(FlowConfig::default(), t.clone(), "flow".into());
    let d = dev(4026532001, 77, 2);
    register(&t, d, "eth0", "pod-a");
    feed(&mut f, vec![counters(d, 5, false)]);
    let first = collect(&mut f);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].1, 5);
    let a = &first[0].0;
    assert_eq!(text(a, names::ATTR_INTERFACE_NAME).as_deref(), Some("eth0"));
    assert_eq!(text(a, names::ATTR_NETNS_NAME).as_deref(), Some("pod-a"));
    assert_eq!(attr(a, names::ATTR_NETNS_COOKIE), Some(&AnyValue::Int(77)));
    // The pod is deleted: the receiver retires the device and sends its final totals.
    t.retire(&d);
    feed(&mut f, vec![counters(d, 9, true)]);
    // A record still in flight after the final counters is not a new series.
    feed(&mut f, vec![packet(d)]);
    let last = collect(&mut f);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].1, 9, "the final totals");
    assert_eq!(
        text(&last[0].0, names::ATTR_INTERFACE_NAME).as_deref(),
        Some("eth0")
    );
    assert!(collect(&mut f).is_empty(), "retired after its final point");
    feed(&mut f, vec![packet(d)]);
    assert!(collect(&mut f).is_empty(), "late records make no series");
    assert_eq!(f.sizes(), (0, 0));
}

#[test]
fn a_gone_device_without_final_counters_retires_after_one_grace_collect() {
    let t = DeviceTable::default();
    let mut f = Flow::new(FlowConfig::default(), t.clone(), "flow".into());
    let d = dev(4026532001, 77, 3);
    register(&t, d, "veth1", "node");
    feed(&mut f, vec![packet(d), packet(d)]);
    t.retire(&d);
    let grace = collect(&mut f);
    assert_eq!(grace.len(), 1, "still emitted: records may be in flight");
    feed(&mut f, vec![packet(d)]);
    let last = collect(&mut f);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].1, 3, "with what arrived during the grace collect");
    assert_eq!(
        text(&last[0].0, names::ATTR_INTERFACE_NAME).as_deref(),
        Some("veth1"),
        "never if<N>"
    );
    assert!(collect(&mut f).is_empty());
    assert_eq!(f.sizes(), (0, 0));
}

#[test]
fn a_rename_ends_the_series_under_the_old_name_and_starts_one_under_the_new() {
    let t = DeviceTable::default();
    let mut f = Flow::new(FlowConfig::default(), t.clone(), "flow".into());
    let d = dev(4026532001, 77, 4);
    register(&t, d, "tmp9f2", "pod-a");
    feed(&mut f, vec![packet(d)]);
    assert_eq!(collect(&mut f).len(), 1);
    register(&t, d, "eth0", "pod-a");
    feed(&mut f, vec![packet(d)]);
    let renamed = collect(&mut f);
    assert_eq!(renamed.len(), 1);
    assert_eq!(
        text(&renamed[0].0, names::ATTR_INTERFACE_NAME).as_deref(),
        Some("tmp9f2"),
        "the last point under the old name"
    );
    assert_eq!(renamed[0].1, 2);
    feed(&mut f, vec![packet(d)]);
    let after = collect(&mut f);
    assert_eq!(after.len(), 1);
    assert_eq!(
        text(&after[0].0, names::ATTR_INTERFACE_NAME).as_deref(),
        Some("eth0")
    );
    assert_eq!(after[0].1, 1, "a new series");
}

#[test]
fn a_reused_inode_never_carries_the_previous_pods_names() {
    let t = DeviceTable::default();
    let mut f = Flow::new(FlowConfig::default(), t.clone(), "flow".into());
    let old = dev(4026532001, 10, 2);
    let new = dev(4026532001, 11, 2);
    register(&t, old, "eth0", "pod-a");
    feed(&mut f, vec![packet(old)]);
    t.retire(&old);
    register(&t, new, "eth0", "pod-b");
    feed(&mut f, vec![packet(new), packet(new)]);
    let mut points = collect(&mut f);
    points.sort_by_key(|p| p.1);
    assert_eq!(points.len(), 2, "two series: one per namespace");
    assert_eq!(
        text(&points[0].0, names::ATTR_NETNS_NAME).as_deref(),
        Some("pod-a")
    );
    assert_eq!(
        attr(&points[0].0, names::ATTR_NETNS_COOKIE),
        Some(&AnyValue::Int(10))
    );
    assert_eq!(
        text(&points[1].0, names::ATTR_NETNS_NAME).as_deref(),
        Some("pod-b")
    );
    assert_eq!(
        attr(&points[1].0, names::ATTR_NETNS_COOKIE),
        Some(&AnyValue::Int(11))
    );
}

#[test]
fn memory_stays_bounded_under_endless_churn() {
    let t = DeviceTable::default();
    let mut f = Flow::new(FlowConfig::default(), t.clone(), "flow".into());
    let mut peak = (0, 0);
    for i in 0..10_000u32 {
        let d = dev(4026532000 + i % 50, u64::from(i) + 1, 2);
        register(&t, d, "eth0", &format!("pod-{i}"));
        feed(&mut f, vec![packet(d), counters(d, 3, false)]);
        t.retire(&d);
        // Every other device ends with its final counters, the rest only goes away.
        if i % 2 == 0 {
            feed(&mut f, vec![counters(d, 4, true)]);
        }
        if i % 100 == 99 {
            collect(&mut f);
            let s = f.sizes();
            peak = (peak.0.max(s.0), peak.1.max(s.1));
        }
    }
    collect(&mut f);
    collect(&mut f);
    assert_eq!(
        f.sizes(),
        (0, 0),
        "every series retired, every name forgotten"
    );
    // Right after a collect only the devices in their grace collect are held (50 of each
    // 100: two series each, exact totals and record counters; and each one's namespace, a
    // workload: its series and its device list).
    assert_eq!(peak, (200, 50));
}

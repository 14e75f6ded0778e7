//! Tests of the flow processor's workload view: the direction relative to the workload a
//! device serves, locality, the peer's names, and the per-workload totals counted once.

use super::*;
use periscope_pipeline::devices::{DeviceInfo, DevicePeer};
use periscope_pipeline::model::{AnyValue, EventBatch, Number, Telemetry};

/// (metric, attributes, value) of every sum point emitted.
fn points(out: &mut Emitter) -> Vec<(String, Vec<KeyValue>, i64)> {
    let mut result = Vec::new();
    for p in out.take() {
        let Payload::Telemetry(Telemetry::Metrics(m)) = p else {
            panic!("expected metrics")
        };
        for metric in m.metrics {
            let MetricData::Sum { points, .. } = metric.data else {
                panic!("expected a sum")
            };
            for p in points {
                let Number::Int(v) = p.value else {
                    panic!("expected ints")
                };
                result.push((metric.name.to_string(), p.attributes, v));
            }
        }
    }
    result
}

fn text(a: &[KeyValue], key: &str) -> String {
    match a.iter().find(|kv| kv.key == key).map(|kv| &kv.value) {
        Some(AnyValue::String(s)) => s.to_string(),
        Some(other) => format!("{other:?}"),
        None => "-".into(),
    }
}

fn dev(inode: u32, cookie: u64, ifindex: u32) -> DeviceRef {
    DeviceRef {
        netns: NetnsId { inode, cookie },
        ifindex,
    }
}

fn counters(d: DeviceRef, direction: Direction, locality: Locality, packets: u64) -> Event {
    Event::DeviceCounters(DeviceCounters {
        device: d,
        direction,
        transport: Transport::Udp,
        locality,
        packets,
        bytes: packets * 100,
        ..DeviceCounters::default()
    })
}

/// A node (cookie 10) with a bridge port `veth-a` (serving pod a, cookie 20) and the pod's
/// `eth0`; one exchange a → elsewhere seen on both.
#[test]
fn node_side_veths_take_their_pods_direction_and_names_and_count_once_per_workload() {
    let t = DeviceTable::default();
    let (node, pod) = (dev(4026532010, 10, 5), dev(4026532020, 20, 2));
    t.insert(
        node,
        DeviceInfo {
            name: "veth-a".into(),
            netns_name: Some("node".into()),
            peer: Some(DevicePeer {
                device: pod,
                name: None,
                netns_name: None,
            }),
            serves_peer: true,
            loopback: false,
        },
    );
    t.insert(
        pod,
        DeviceInfo {
            name: "eth0".into(),
            netns_name: Some("pod-a".into()),
            peer: Some(DevicePeer {
                device: node,
                name: Some("veth-a".into()),
                netns_name: Some("node".into()),
            }),
            serves_peer: false,
            loopback: false,
        },
    );
    let mut f = Flow::new(FlowConfig::default(), t, "flow".into());
    let mut out = Emitter::default();
    let feed = |f: &mut Flow, out: &mut Emitter, events| {
        f.process(Payload::Events(EventBatch { events }), out);
    };
    feed(
        &mut f,
        &mut out,
        vec![
            counters(pod, Direction::Egress, Locality::Local, 7),
            counters(node, Direction::Ingress, Locality::Forwarded, 7),
            // Replies into the pod.
            counters(pod, Direction::Ingress, Locality::Local, 3),
            counters(node, Direction::Egress, Locality::Forwarded, 3),
        ],
    );
    f.tick(Instant::now(), &mut out);
    // The kernel's totals grow: the workload series add what they grew by.
    feed(
        &mut f,
        &mut out,
        vec![
            counters(pod, Direction::Egress, Locality::Local, 12),
            counters(node, Direction::Ingress, Locality::Forwarded, 12),
        ],
    );
    f.flush(&mut out);
    let all = points(&mut out);
    let last = |metric: &str, pred: &dyn Fn(&[KeyValue]) -> bool| {
        all.iter()
            .filter(|(m, a, _)| m == metric && pred(a))
            .map(|(_, _, v)| *v)
            .next_back()
    };
    // The node-side end: receive is the pod's egress, named after the pod.
    let veth_rx = |a: &[KeyValue]| {
        text(a, names::ATTR_INTERFACE_NAME) == "veth-a"
            && text(a, names::ATTR_IO_DIRECTION) == "receive"
    };
    let a = all
        .iter()
        .find(|(m, a, _)| m == names::NETWORK_PACKETS && veth_rx(a))
        .map(|(_, a, _)| a.clone())
        .expect("veth-a receive series");
    assert_eq!(text(&a, names::ATTR_WORKLOAD_DIRECTION), "egress");
    assert_eq!(text(&a, names::ATTR_TRAFFIC_LOCALITY), "forwarded");
    assert_eq!(text(&a, names::ATTR_INTERFACE_SERVES), "peer");
    // The peer's names come from its own registration (learned after this device's).
    assert_eq!(text(&a, names::ATTR_PEER_NETNS_NAME), "pod-a");
    assert_eq!(text(&a, names::ATTR_PEER_INTERFACE_NAME), "eth0");
    assert_eq!(last(names::NETWORK_PACKETS, &veth_rx), Some(12));
    // The pod's own eth0: transmit is egress; it serves itself.
    let eth0_tx = |a: &[KeyValue]| {
        text(a, names::ATTR_INTERFACE_NAME) == "eth0"
            && text(a, names::ATTR_IO_DIRECTION) == "transmit"
    };
    let e = all
        .iter()
        .find(|(m, a, _)| m == names::NETWORK_PACKETS && eth0_tx(a))
        .map(|(_, a, _)| a.clone())
        .expect("eth0 transmit series");
    assert_eq!(text(&e, names::ATTR_WORKLOAD_DIRECTION), "egress");
    assert_eq!(text(&e, names::ATTR_INTERFACE_SERVES), "own");
    assert_eq!(text(&e, names::ATTR_PEER_NETNS_NAME), "node");
    // Per workload: the pod's packets once (not the node-side end's), none for the node.
    let workload = |ns: &str, dir: &str| {
        last(names::WORKLOAD_PACKETS, &|a: &[KeyValue]| {
            text(a, names::ATTR_NETNS_NAME) == ns && text(a, names::ATTR_WORKLOAD_DIRECTION) == dir
        })
    };
    assert_eq!(workload("pod-a", "egress"), Some(12));
    assert_eq!(workload("pod-a", "ingress"), Some(3));
    assert_eq!(workload("node", "egress"), None);
    assert_eq!(workload("node", "ingress"), None);
}

#[test]
fn workload_totals_stay_monotonic_across_a_rename_and_retire_with_the_last_device() {
    let t = DeviceTable::default();
    let pod = dev(4026532030, 30, 2);
    let info = |name: &str| DeviceInfo {
        name: name.into(),
        netns_name: Some("pod-b".into()),
        ..DeviceInfo::default()
    };
    t.insert(pod, info("tmp1"));
    let mut f = Flow::new(FlowConfig::default(), t.clone(), "flow".into());
    let mut out = Emitter::default();
    let mut feed = |f: &mut Flow, events| {
        f.process(Payload::Events(EventBatch { events }), &mut out);
        f.tick(Instant::now(), &mut out);
        points(&mut out)
            .into_iter()
            .filter(|(m, _, _)| m == names::WORKLOAD_PACKETS)
            .map(|(_, _, v)| v)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        feed(
            &mut f,
            vec![counters(pod, Direction::Ingress, Locality::Local, 4)]
        ),
        vec![4]
    );
    // Renamed to eth0 (the device's series start again); the workload's goes on.
    t.insert(pod, info("eth0"));
    assert_eq!(
        feed(
            &mut f,
            vec![counters(pod, Direction::Ingress, Locality::Local, 9)]
        ),
        vec![9]
    );
    // Its final counters: one last point, then nothing.
    let mut last = counters(pod, Direction::Ingress, Locality::Local, 11);
    if let Event::DeviceCounters(c) = &mut last {
        c.last = true;
    }
    t.retire(&pod);
    assert_eq!(feed(&mut f, vec![last]), vec![11]);
    assert_eq!(feed(&mut f, vec![]), Vec::<i64>::new());
    assert_eq!(
        f.sizes().0,
        0,
        "nothing of the device or its workload is kept"
    );
}

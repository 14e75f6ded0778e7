//! Tests of the connections processor when namespaces go away.

use super::*;
use periscope_pipeline::model::{AnyValue, EventBatch, NetnsId, SocketHook, Telemetry};
use periscope_pipeline::NamespaceInfo;
use std::net::Ipv4Addr;

fn pod(cookie: u64) -> NetnsId {
    NetnsId {
        inode: 4026532100,
        cookie,
    }
}

fn ev(kind: SocketEventKind, netns: NetnsId, cookie: u64) -> SocketEvent {
    SocketEvent {
        timestamp_ns: 1_000_000,
        cookie,
        netns,
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        remote_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        local_port: 40000,
        remote_port: 80,
        kind,
        hook: SocketHook::Sockops,
        transport: Transport::Tcp,
        role: SocketRole::Client,
        state: 1,
        old_state: 2,
        ..SocketEvent::default()
    }
}

fn feed(p: &mut Connections, events: Vec<SocketEvent>) {
    let mut out = Emitter::default();
    let mut batch = EventBatch::with_capacity(events.len());
    for e in events {
        batch.push(Event::Socket(e));
    }
    p.process(Payload::Events(batch), &mut out);
}

/// (spans, connection points) of one collect.
fn collect(p: &mut Connections) -> (Vec<Span>, Vec<NumberPoint>) {
    let mut out = Emitter::default();
    p.tick(Instant::now(), &mut out);
    let mut spans = Vec::new();
    let mut points = Vec::new();
    for payload in out.take() {
        match payload {
            Payload::Telemetry(Telemetry::Traces(t)) => spans.extend(t.spans),
            Payload::Telemetry(Telemetry::Metrics(m)) => {
                for metric in m.metrics {
                    if let MetricData::Sum { points: pts, .. } = metric.data {
                        points.extend(pts);
                    }
                }
            }
            _ => {}
        }
    }
    (spans, points)
}

fn attr<'a>(a: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    a.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
}

fn named(t: &NamespaceTable, netns: NetnsId, name: &str) {
    t.insert(
        netns,
        NamespaceInfo {
            name: Some(name.into()),
            cgroup: None,
            cgroup_late: false,
        },
    );
}

#[test]
fn a_connection_whose_namespace_is_gone_ends_with_its_pods_name() {
    let ns = NamespaceTable::default();
    let mut p = Connections::new(
        ConnectionsConfig::default(),
        SocketTable::default(),
        "connections".into(),
    )
    .with_namespaces(ns.clone());
    named(&ns, pod(1), "pod-a");
    feed(&mut p, vec![ev(SocketEventKind::Established, pod(1), 11)]);
    // The pod is deleted without a close record; the inode goes to the next pod.
    ns.retire(&pod(1));
    named(&ns, pod(2), "pod-b");
    let (spans, points) = collect(&mut p);
    assert!(
        spans.is_empty(),
        "one grace collect: its close may be in flight"
    );
    assert_eq!(points.len(), 1);
    let (spans, points) = collect(&mut p);
    assert_eq!(spans.len(), 1, "the connection ends with its namespace");
    let a = &spans[0].attributes;
    assert_eq!(
        attr(a, ATTR_CONNECTION_END),
        Some(&AnyValue::from("netns_gone"))
    );
    assert_eq!(
        attr(a, names::ATTR_NETNS_NAME),
        Some(&AnyValue::from("pod-a"))
    );
    assert_eq!(attr(a, names::ATTR_NETNS_COOKIE), Some(&AnyValue::Int(1)));
    assert_eq!(attr(a, conn::ATTR_CONNECTION_OPEN), None);
    assert_eq!(points.len(), 1, "the series' last point");
    // A close arriving now is late: no second span, no new series.
    feed(&mut p, vec![ev(SocketEventKind::Close, pod(1), 11)]);
    let (spans, points) = collect(&mut p);
    assert!(spans.is_empty() && points.is_empty());
    assert_eq!(p.sizes(), (0, 0));
}

#[test]
fn series_and_connections_stay_bounded_under_namespace_churn() {
    let ns = NamespaceTable::default();
    let mut p = Connections::new(
        ConnectionsConfig::default(),
        SocketTable::default(),
        "connections".into(),
    )
    .with_namespaces(ns.clone());
    for i in 0..10_000u64 {
        let n = pod(i + 1);
        named(&ns, n, &format!("pod-{i}"));
        let mut events = vec![ev(SocketEventKind::Established, n, i + 1)];
        // Half close, half are cut off by their namespace's end.
        if i % 2 == 0 {
            events.push(ev(SocketEventKind::Close, n, i + 1));
        }
        feed(&mut p, events);
        ns.retire(&n);
        if i % 100 == 99 {
            collect(&mut p);
        }
    }
    collect(&mut p);
    collect(&mut p);
    assert_eq!(p.sizes(), (0, 0));
}

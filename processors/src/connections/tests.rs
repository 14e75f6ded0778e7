//! Tests of the connections processor: counting once per socket, spans, retransmits, UDP, drops, overflow.

use super::*;
use periscope_pipeline::model::{EventBatch, NetnsId, ProcessRef, SocketHook, SpanKind};
use periscope_pipeline::model::{Number, Telemetry};
use std::net::Ipv4Addr;

use crate::testing::{at_least_one, overflow_warnings, warnings};

fn ev(kind: SocketEventKind, hook: SocketHook, cookie: u64) -> SocketEvent {
    SocketEvent {
        timestamp_ns: 1_000_000 + cookie,
        cookie,
        netns: NetnsId {
            inode: 7,
            cookie: 0,
        },
        process: ProcessRef {
            pid: 42,
            tid: 42,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        },
        local_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        remote_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        local_port: 40000,
        remote_port: 80,
        kind,
        hook,
        transport: Transport::Tcp,
        role: SocketRole::Client,
        state: 1,
        old_state: 2,
        ..SocketEvent::default()
    }
}

fn run(events: Vec<SocketEvent>) -> (Vec<Telemetry>, Vec<Payload>) {
    let mut p = Connections::new(
        ConnectionsConfig::default(),
        SocketTable::default(),
        "connections".into(),
    );
    let mut out = Emitter::default();
    let mut batch = EventBatch::with_capacity(events.len() + 1);
    for e in events {
        batch.push(Event::Socket(e));
    }
    batch.push(Event::Packet(Default::default()));
    p.process(Payload::Events(batch), &mut out);
    let passed = out.take();
    p.flush(&mut out);
    (telemetry(&mut out), passed)
}

/// The telemetry emitted so far.
fn telemetry(out: &mut Emitter) -> Vec<Telemetry> {
    out.take()
        .into_iter()
        .filter_map(|p| match p {
            Payload::Telemetry(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// The points of every sum, or of the sum named `name`.
fn points(t: &[Telemetry], name: Option<&str>) -> Vec<NumberPoint> {
    t.iter()
        .filter_map(|t| match t {
            Telemetry::Metrics(m) => Some(m),
            _ => None,
        })
        .flat_map(|m| m.metrics.iter())
        .filter(|m| name.is_none_or(|n| m.name == n))
        .flat_map(|m| match &m.data {
            MetricData::Sum { points, .. } => points.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn value(p: &NumberPoint) -> i64 {
    match p.value {
        Number::Int(i) => i,
        Number::Double(d) => d as i64,
    }
}

fn sum_of(t: &[Telemetry], name: &str) -> i64 {
    points(t, Some(name)).iter().map(value).sum()
}

fn spans(t: &[Telemetry]) -> Vec<Span> {
    t.iter()
        .filter_map(|t| match t {
            Telemetry::Traces(s) => Some(s.spans.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_connection_two_receivers_report_counts_once_with_one_span() {
    use SocketEventKind::*;
    let mut close = ev(Close, SocketHook::Tracepoint, 1);
    close.old_state = 4;
    close.state = 7;
    close.bytes_sent = 100;
    let mut close2 = close;
    close2.hook = SocketHook::Sockops;
    let mut established = ev(Established, SocketHook::Sockops, 1);
    established.duration_ns = 50_000;
    let (t, passed) = run(vec![
        ev(Connect, SocketHook::Tracepoint, 1),
        ev(Connect, SocketHook::Sockops, 1),
        established,
        ev(Established, SocketHook::Tracepoint, 1),
        close,
        close2,
    ]);
    // opened once + closed once
    assert_eq!(sum_of(&t, names::TCP_CONNECTIONS), 2);
    let s = spans(&t);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].kind, SpanKind::Client);
    assert!(s[0]
        .attributes
        .iter()
        .any(|kv| kv.key == names::ATTR_CONNECT_DURATION));
    // Socket events are consumed; the packet goes on.
    let Payload::Events(b) = &passed[0] else {
        panic!("no events passed on")
    };
    assert_eq!(b.events.len(), 1);
    assert!(matches!(b.events[0], Event::Packet(_)));
}

#[test]
fn retransmits_come_from_the_kernels_running_total_once() {
    use SocketEventKind::*;
    let mut events = vec![ev(Connect, SocketHook::Sockops, 9)];
    for (total, hook) in [
        (1, SocketHook::Sockops),
        (1, SocketHook::Tracepoint),
        (3, SocketHook::Tracepoint),
        (2, SocketHook::Sockops), // late and lower: nothing new
        (3, SocketHook::Sockops),
    ] {
        let mut r = ev(Retransmit, hook, 9);
        r.total_retrans = total;
        r.size = 1;
        events.push(r);
    }
    let mut close = ev(Close, SocketHook::Sockops, 9);
    close.total_retrans = 4;
    events.push(close);
    let (t, _) = run(events);
    assert_eq!(sum_of(&t, names::TCP_RETRANSMITS), 4);
}

#[test]
fn udp_calls_and_drops_are_counted() {
    let mut send = ev(SocketEventKind::Send, SocketHook::Tracepoint, 3);
    send.transport = Transport::Udp;
    let mut recv = send;
    recv.kind = SocketEventKind::Receive;
    let mut p = Connections::new(
        ConnectionsConfig::default(),
        SocketTable::default(),
        "c".into(),
    );
    let mut out = Emitter::default();
    let mut batch = EventBatch::with_capacity(8);
    batch.push(Event::Socket(send));
    batch.push(Event::Socket(send));
    batch.push(Event::Socket(recv));
    batch.push(Event::Drop(DropEvent {
        timestamp_ns: 1,
        netns: NetnsId::default(),
        ifindex: 2,
        reason: "NO_SOCKET",
        network: periscope_pipeline::model::NetworkType::Ipv4,
        transport: Transport::Udp,
        src_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        dst_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        src_port: 1,
        dst_port: 9,
        length: 28,
    }));
    p.process(Payload::Events(batch), &mut out);
    p.flush(&mut out);
    let t = telemetry(&mut out);
    assert_eq!(sum_of(&t, names::UDP_DATAGRAMS), 3);
    assert_eq!(sum_of(&t, names::DROPS), 1);
}

#[test]
fn the_cardinality_limit_sends_new_series_to_overflow() {
    let mut p = Connections::new(
        ConnectionsConfig {
            cardinality_limit: at_least_one(1),
            socket_attributes: true,
            ..ConnectionsConfig::default()
        },
        SocketTable::default(),
        "c".into(),
    );
    let mut out = Emitter::default();
    let mut batch = EventBatch::with_capacity(8);
    for port in [1u16, 2, 3] {
        let mut s = ev(
            SocketEventKind::Send,
            SocketHook::Tracepoint,
            u64::from(port),
        );
        s.transport = Transport::Udp;
        s.local_port = port;
        batch.push(Event::Socket(s));
    }
    p.process(Payload::Events(batch), &mut out);
    p.flush(&mut out);
    let t = telemetry(&mut out);
    assert_eq!(sum_of(&t, names::UDP_DATAGRAMS), 3);
    let overflow: usize = points(&t, None)
        .iter()
        .filter(|p| p.attributes.iter().any(|kv| kv.key == names::ATTR_OVERFLOW))
        .count();
    assert_eq!(overflow, 1);
}

#[test]
fn series_past_the_limit_fold_into_one_overflow_series_with_one_warning() {
    // Sockets 1..=6 send 1..=6 datagrams each; room for 2 series.
    let (t, logged) = warnings(|| {
        let mut p = Connections::new(
            ConnectionsConfig {
                cardinality_limit: at_least_one(2),
                socket_attributes: true,
                ..ConnectionsConfig::default()
            },
            SocketTable::default(),
            "connections/x".into(),
        );
        let mut out = Emitter::default();
        let mut batch = EventBatch::with_capacity(32);
        for port in 1..=6u16 {
            for _ in 0..port {
                let mut s = ev(SocketEventKind::Send, SocketHook::Tracepoint, port.into());
                s.transport = Transport::Udp;
                s.local_port = port;
                batch.push(Event::Socket(s));
            }
        }
        p.process(Payload::Events(batch), &mut out);
        p.flush(&mut out);
        telemetry(&mut out)
    });
    let points = points(&t, Some(names::UDP_DATAGRAMS));
    let (overflow, series): (Vec<_>, Vec<_>) = points
        .iter()
        .partition(|p| p.attributes == crate::series::overflow_attributes());
    assert_eq!(series.len(), 2);
    assert_eq!(overflow.len(), 1);
    assert_eq!(value(overflow[0]), 3 + 4 + 5 + 6, "sockets 3 to 6");
    assert_eq!(
        points.iter().map(value).sum::<i64>(),
        21,
        "totals preserved"
    );
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
}

#[test]
fn in_a_metrics_pipeline_connections_are_counted_without_spans() {
    // The pipeline's end drops spans: a processor built for a metrics pipeline makes none
    // (nor their ids and attributes per connection); one built for traces does.
    let events = [
        ev(SocketEventKind::Established, SocketHook::Sockops, 1),
        ev(SocketEventKind::Close, SocketHook::Sockops, 1),
    ];
    for (signal, want_spans) in [
        (periscope_pipeline::model::Signal::Metrics, 0),
        (periscope_pipeline::model::Signal::Traces, 1),
    ] {
        let mut ctx = BuildContext::standalone(
            periscope_pipeline::component::ComponentId::parse("connections").unwrap(),
        );
        ctx.signal = Some(signal);
        let mut p = ProcessorConfig::build(&ConnectionsConfig::default(), &ctx).unwrap();
        let mut out = Emitter::default();
        let mut batch = EventBatch::with_capacity(2);
        for e in events {
            batch.push(Event::Socket(e));
        }
        p.process(Payload::Events(batch), &mut out);
        p.flush(&mut out);
        let t = telemetry(&mut out);
        assert_eq!(spans(&t).len(), want_spans, "{signal:?}");
        assert_eq!(
            sum_of(&t, names::TCP_CONNECTIONS),
            2,
            "{signal:?}: opened and closed"
        );
    }
}

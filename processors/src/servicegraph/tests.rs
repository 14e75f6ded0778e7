//! Tests of the servicegraph processor: edges between named workloads, failures, virtual
//! nodes, counting a socket once, response times, overflow.

use super::*;
use std::net::Ipv4Addr;

use periscope_pipeline::devices::{NamespaceInfo, NamespaceTable};
use periscope_pipeline::model::{
    EventBatch, HistogramPoint, MetricData, NetnsId, NumberPoint, ProcessRef, Telemetry,
};
use periscope_pipeline::telemetry::names;
use periscope_pipeline::SocketTable;

use crate::identity::IdentityConfig;
use crate::testing::{at_least_one, overflow_warnings, warnings};

const FRONT: NetnsId = NetnsId {
    inode: 11,
    cookie: 101,
};
const API: NetnsId = NetnsId {
    inode: 12,
    cookie: 102,
};
const DB: NetnsId = NetnsId {
    inode: 13,
    cookie: 103,
};

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 62, 0, last))
}

fn processor(config: ServiceGraphConfig) -> ServiceGraph {
    let namespaces = NamespaceTable::default();
    for (ns, name) in [(FRONT, "front"), (API, "api"), (DB, "db")] {
        namespaces.insert(
            ns,
            NamespaceInfo {
                name: Some(name.into()),
                cgroup: None,
                cgroup_late: false,
            },
        );
    }
    let mut identity_config = IdentityConfig::default();
    identity_config.container.enabled = false;
    let identity = Identity::new(&identity_config, SocketTable::default(), Arc::default())
        .with_namespaces(namespaces);
    ServiceGraph::new(&config, identity, Arc::default(), "servicegraph".into())
}

/// One event of the socket `cookie` in `netns` from `local` to `remote`.
#[allow(clippy::too_many_arguments)]
fn ev(
    kind: SocketEventKind,
    role: SocketRole,
    cookie: u64,
    netns: NetnsId,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    t_ms: u64,
) -> SocketEvent {
    SocketEvent {
        timestamp_ns: t_ms * 1_000_000,
        cookie,
        netns,
        local_addr: local.0,
        local_port: local.1,
        remote_addr: remote.0,
        remote_port: remote.1,
        kind,
        role,
        transport: Transport::Tcp,
        hook: SocketHook::Tracepoint,
        state: 1,
        ..SocketEvent::default()
    }
}

/// A connection from `client` (in `cns` at `caddr`) to `server` (in `sns` at `saddr`:`port`)
/// at `t_ms`, lasting `ms`, `sent` bytes to the server and `answered` back; `None` for the
/// server: not observed (another host).
#[allow(clippy::too_many_arguments)]
fn connection(
    events: &mut Vec<SocketEvent>,
    cookie: u64,
    cns: NetnsId,
    caddr: IpAddr,
    server: Option<NetnsId>,
    saddr: IpAddr,
    port: u16,
    t_ms: u64,
    ms: u64,
) {
    let cport = 40000 + cookie as u16;
    let c = (caddr, cport);
    let s = (saddr, port);
    let mut established = ev(
        SocketEventKind::Established,
        SocketRole::Client,
        cookie,
        cns,
        c,
        s,
        t_ms,
    );
    established.duration_ns = 50_000;
    events.push(ev(
        SocketEventKind::Connect,
        SocketRole::Client,
        cookie,
        cns,
        (caddr, 0),
        s,
        t_ms,
    ));
    events.push(established);
    if let Some(sns) = server {
        events.push(ev(
            SocketEventKind::Established,
            SocketRole::Server,
            cookie + 1_000_000,
            sns,
            s,
            c,
            t_ms,
        ));
    }
    events.push(ev(
        SocketEventKind::Send,
        SocketRole::Client,
        cookie,
        cns,
        c,
        s,
        t_ms + 1,
    ));
    events.push(ev(
        SocketEventKind::Receive,
        SocketRole::Client,
        cookie,
        cns,
        c,
        s,
        t_ms + ms - 1,
    ));
    let mut close = ev(
        SocketEventKind::Close,
        SocketRole::Client,
        cookie,
        cns,
        c,
        s,
        t_ms + ms,
    );
    close.old_state = 5;
    close.bytes_sent = 100;
    close.bytes_received = 1000;
    close.total_retrans = 1;
    if let Some(sns) = server {
        let mut sclose = ev(
            SocketEventKind::Close,
            SocketRole::Server,
            cookie + 1_000_000,
            sns,
            s,
            c,
            t_ms + ms,
        );
        sclose.old_state = 9;
        sclose.bytes_sent = 1000;
        sclose.bytes_received = 100;
        events.push(sclose);
    }
    events.push(close);
}

/// A failed connect from `cns` to `saddr`:`port`.
fn failure(
    events: &mut Vec<SocketEvent>,
    cookie: u64,
    cns: NetnsId,
    caddr: IpAddr,
    saddr: IpAddr,
    port: u16,
) {
    let s = (saddr, port);
    events.push(ev(
        SocketEventKind::Connect,
        SocketRole::Client,
        cookie,
        cns,
        (caddr, 0),
        s,
        1,
    ));
    let mut close = ev(
        SocketEventKind::Close,
        SocketRole::Client,
        cookie,
        cns,
        (caddr, 45000),
        s,
        2,
    );
    close.old_state = 2;
    events.push(close);
}

fn run(p: &mut ServiceGraph, events: Vec<SocketEvent>) -> Vec<Telemetry> {
    let mut out = Emitter::default();
    let mut batch = EventBatch::with_capacity(events.len());
    for e in events {
        batch.push(Event::Socket(e));
    }
    let n = batch.events.len();
    p.process(Payload::Events(batch), &mut out);
    let passed = out.take();
    // Every event passes on.
    assert!(matches!(&passed[..], [Payload::Events(b)] if b.events.len() == n));
    p.flush(&mut out);
    out.take()
        .into_iter()
        .filter_map(|p| match p {
            Payload::Telemetry(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn metric<'a>(t: &'a [Telemetry], name: &str) -> Option<&'a MetricData> {
    t.iter()
        .filter_map(|t| match t {
            Telemetry::Metrics(m) => Some(m),
            _ => None,
        })
        .flat_map(|m| m.metrics.iter())
        .find(|m| m.name == name)
        .map(|m| &m.data)
}

fn attr(a: &[periscope_pipeline::model::KeyValue], key: &str) -> String {
    a.iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

/// Sum points by (client, server, port, connection_type).
fn sums(t: &[Telemetry], name: &str) -> Vec<(String, String, String, String, i64)> {
    let Some(MetricData::Sum { points, .. }) = metric(t, name) else {
        return Vec::new();
    };
    let mut v: Vec<_> = points
        .iter()
        .map(|p: &NumberPoint| {
            let value = match p.value {
                periscope_pipeline::model::Number::Int(i) => i,
                periscope_pipeline::model::Number::Double(d) => d as i64,
            };
            (
                attr(&p.attributes, names::ATTR_SERVICE_GRAPH_CLIENT),
                attr(&p.attributes, names::ATTR_SERVICE_GRAPH_SERVER),
                attr(&p.attributes, names::ATTR_SERVER_PORT),
                attr(&p.attributes, names::ATTR_SERVICE_GRAPH_CONNECTION_TYPE),
                value,
            )
        })
        .collect();
    v.sort();
    v
}

fn hists<'a>(t: &'a [Telemetry], name: &str) -> Vec<&'a HistogramPoint> {
    match metric(t, name) {
        Some(MetricData::Histogram { points, .. }) => points.iter().collect(),
        _ => Vec::new(),
    }
}

fn row(c: &str, s: &str, port: u16, ty: &str, v: i64) -> (String, String, String, String, i64) {
    (c.into(), s.into(), port.to_string(), ty.into(), v)
}

#[test]
fn three_workloads_make_their_edges_with_counts_failures_and_latencies() {
    let mut p = processor(ServiceGraphConfig::default());
    let mut events = Vec::new();
    // front → api:8080 three times (20 ms each), api → db:5432 twice (5 ms), api → db:5433
    // refused once.
    for i in 0..3 {
        connection(
            &mut events,
            10 + i,
            FRONT,
            addr(1),
            Some(API),
            addr(2),
            8080,
            100 * i,
            20,
        );
    }
    for i in 0..2 {
        connection(
            &mut events,
            20 + i,
            API,
            addr(2),
            Some(DB),
            addr(3),
            5432,
            500 + 10 * i,
            5,
        );
    }
    failure(&mut events, 30, API, addr(2), addr(3), 5433);
    let t = run(&mut p, events);
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![
            row("api", "db", 5432, "", 2),
            row("api", "db", 5433, "", 1),
            row("front", "api", 8080, "", 3),
        ]
    );
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_FAILED_TOTAL),
        vec![
            row("api", "db", 5432, "", 0),
            row("api", "db", 5433, "", 1),
            row("front", "api", 8080, "", 0),
        ]
    );
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_RETRANSMITS),
        vec![
            row("api", "db", 5432, "", 2),
            row("api", "db", 5433, "", 0),
            row("front", "api", 8080, "", 3),
        ]
    );
    // Bytes: 100 per connection to the server, 1000 back.
    let bytes = sums(&t, names::SERVICE_GRAPH_BYTES);
    assert_eq!(bytes.iter().map(|r| r.4).sum::<i64>(), 5 * 1100);
    // Server side: one sample per accepted connection (none for the refused one); client side
    // one per connection; response times one per exchange, 18 ms and 3 ms.
    for (name, front, db) in [
        (names::SERVICE_GRAPH_REQUEST_SERVER_SECONDS, 3, 2),
        (names::SERVICE_GRAPH_REQUEST_CLIENT_SECONDS, 3, 2),
        (names::SERVICE_GRAPH_RESPONSE_DURATION, 3, 2),
        (names::SERVICE_GRAPH_CONNECT_DURATION, 3, 2),
    ] {
        let h = hists(&t, name);
        let count = |c: &str, port: &str| {
            h.iter()
                .filter(|p| {
                    attr(&p.attributes, "client") == c
                        && attr(&p.attributes, names::ATTR_SERVER_PORT) == port
                })
                .map(|p| p.count)
                .sum::<u64>()
        };
        assert_eq!(count("front", "8080"), front, "{name}");
        assert_eq!(count("api", "5432"), db, "{name}");
    }
    let response = hists(&t, names::SERVICE_GRAPH_RESPONSE_DURATION);
    let front = response
        .iter()
        .find(|p| attr(&p.attributes, "client") == "front")
        .expect("front's responses");
    assert_eq!(front.min, Some(0.018));
    assert_eq!(front.max, Some(0.018));
    // 18 ms: in the (10 ms, 50 ms] bucket.
    assert_eq!(front.bucket_counts[5], 3);
    let server = hists(&t, names::SERVICE_GRAPH_REQUEST_SERVER_SECONDS);
    let db = server
        .iter()
        .find(|p| attr(&p.attributes, "server") == "db" && p.count > 0)
        .expect("db's server side");
    assert_eq!(db.sum, Some(0.010));
}

#[test]
fn a_server_not_observed_here_is_a_virtual_node_named_from_its_address() {
    let mut p = processor(ServiceGraphConfig::default());
    let mut events = Vec::new();
    let outside = IpAddr::V4(Ipv4Addr::new(10, 62, 9, 9));
    connection(&mut events, 1, FRONT, addr(1), None, outside, 443, 100, 30);
    let t = run(&mut p, events);
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![row("front", "10.62.9.9", 443, "virtual_node", 1)]
    );
    // Its latency is the client's view (nothing else saw it): connect (50 µs before
    // established) → close.
    let server = hists(&t, names::SERVICE_GRAPH_REQUEST_SERVER_SECONDS);
    assert_eq!(server.len(), 1);
    assert_eq!(server[0].sum, Some(0.030_05));
}

#[test]
fn a_client_not_observed_here_is_counted_by_the_server() {
    let mut p = processor(ServiceGraphConfig::default());
    let outside = (IpAddr::V4(Ipv4Addr::new(10, 62, 8, 8)), 50000);
    let s = (addr(3), 5432);
    let mut close = ev(
        SocketEventKind::Close,
        SocketRole::Server,
        5,
        DB,
        s,
        outside,
        40,
    );
    close.bytes_received = 77;
    close.old_state = 9;
    let t = run(
        &mut p,
        vec![
            ev(
                SocketEventKind::Established,
                SocketRole::Server,
                5,
                DB,
                s,
                outside,
                0,
            ),
            close,
        ],
    );
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![row("10.62.8.8", "db", 5432, "virtual_node", 1)]
    );
    let bytes = sums(&t, names::SERVICE_GRAPH_BYTES);
    assert!(bytes.iter().any(|r| r.4 == 77), "{bytes:?}");
}

#[test]
fn a_socket_reported_by_two_receivers_counts_once() {
    let mut p = processor(ServiceGraphConfig::default());
    let mut events = Vec::new();
    connection(
        &mut events,
        1,
        FRONT,
        addr(1),
        Some(API),
        addr(2),
        8080,
        0,
        10,
    );
    let mut twice = events.clone();
    for e in &mut events {
        e.hook = SocketHook::Sockops;
    }
    twice.extend(events);
    let t = run(&mut p, twice);
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![row("front", "api", 8080, "", 1)]
    );
    let server = hists(&t, names::SERVICE_GRAPH_REQUEST_SERVER_SECONDS);
    assert_eq!(server.iter().map(|p| p.count).sum::<u64>(), 1);
}

#[test]
fn a_process_on_a_plain_host_is_named_after_its_executable() {
    let mut p = processor(ServiceGraphConfig::default());
    let host = NetnsId {
        inode: 99,
        cookie: 1,
    };
    let mut events = Vec::new();
    // A pid no process has: identity finds nothing, the kernel's command name stays.
    connection(&mut events, 1, host, addr(7), None, addr(8), 80, 0, 10);
    for e in &mut events {
        e.process = ProcessRef {
            pid: u32::MAX - 5,
            tid: u32::MAX - 5,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
        };
    }
    let t = run(&mut p, events);
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![row("curl", "10.62.0.8", 80, "virtual_node", 1)]
    );
}

#[test]
fn edges_past_the_limit_go_to_the_overflow_series_with_one_warning() {
    let config = ServiceGraphConfig {
        cardinality_limit: at_least_one(1),
        ..ServiceGraphConfig::default()
    };
    let mut p = processor(config);
    let mut events = Vec::new();
    for i in 0..4 {
        connection(
            &mut events,
            1 + i,
            FRONT,
            addr(1),
            Some(API),
            addr(2),
            8000 + i as u16,
            0,
            10,
        );
    }
    let (t, lines) = warnings(|| run(&mut p, events));
    assert_eq!(overflow_warnings(&lines), 1, "{lines:?}");
    let Some(MetricData::Sum { points, .. }) = metric(&t, names::SERVICE_GRAPH_REQUEST_TOTAL)
    else {
        panic!("no requests");
    };
    let overflow: Vec<_> = points
        .iter()
        .filter(|p| p.attributes.iter().any(|kv| kv.key == names::ATTR_OVERFLOW))
        .collect();
    assert_eq!(points.len(), 2);
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].attributes.len(), 1);
    assert_eq!(overflow[0].value, periscope_pipeline::model::Number::Int(3));
}

#[test]
fn sockets_past_max_sockets_are_dropped_and_counted() {
    let config = ServiceGraphConfig {
        max_sockets: at_least_one(1),
        ..ServiceGraphConfig::default()
    };
    let mut p = processor(config);
    let counters = p.counters.clone();
    let mut events = Vec::new();
    for i in 0..3 {
        events.push(ev(
            SocketEventKind::Established,
            SocketRole::Client,
            1 + i,
            FRONT,
            (addr(1), 1000),
            (addr(2), 80),
            0,
        ));
    }
    let (_, lines) = warnings(|| run(&mut p, events));
    assert_eq!(counters.values().dropped, 2);
    assert_eq!(
        lines.iter().filter(|l| l.contains("max_sockets")).count(),
        1
    );
}

#[test]
fn validation_refuses_an_empty_bucket_list_and_locates_identity_options() {
    use periscope_pipeline::config::problems;
    let p = problems::<ServiceGraphConfig>("boundaries: []\nidentity: {exclude: [nope]}\n");
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"boundaries"), "{p:?}");
    assert!(
        paths.iter().any(|x| x.starts_with("identity.exclude")),
        "{p:?}"
    );
}

#[test]
fn records_of_a_socket_after_another_receivers_close_still_count() {
    let mut p = processor(ServiceGraphConfig::default());
    let mut events = Vec::new();
    connection(
        &mut events,
        1,
        FRONT,
        addr(1),
        Some(API),
        addr(2),
        8080,
        100,
        20,
    );
    // The client's close (sockops) is read before its send and receive (tcp_udp).
    let close = events
        .iter()
        .position(|e| e.kind == SocketEventKind::Close && e.role == SocketRole::Client)
        .expect("close");
    let mut close = events.remove(close);
    close.hook = SocketHook::Sockops;
    let send = events
        .iter()
        .position(|e| e.kind == SocketEventKind::Send)
        .expect("send");
    events.insert(send, close);
    let t = run(&mut p, events);
    let response = hists(&t, names::SERVICE_GRAPH_RESPONSE_DURATION);
    assert_eq!(response.iter().map(|h| h.count).sum::<u64>(), 1);
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![row("front", "api", 8080, "", 1)]
    );
}

#[test]
fn delta_points_count_only_the_period_and_leave_idle_edges_out() {
    let config = ServiceGraphConfig {
        temporality: Temporality::Delta,
        ..ServiceGraphConfig::default()
    };
    let mut p = processor(config);
    let mut first = Vec::new();
    connection(
        &mut first,
        1,
        FRONT,
        addr(1),
        Some(API),
        addr(2),
        8080,
        100,
        10,
    );
    connection(
        &mut first,
        2,
        API,
        addr(2),
        Some(DB),
        addr(3),
        5432,
        100,
        10,
    );
    let t = run(&mut p, first);
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![
            row("api", "db", 5432, "", 1),
            row("front", "api", 8080, "", 1)
        ]
    );
    let mut second = Vec::new();
    for i in 0..2 {
        connection(
            &mut second,
            10 + i,
            FRONT,
            addr(1),
            Some(API),
            addr(2),
            8080,
            200,
            10,
        );
    }
    let t = run(&mut p, second);
    assert_eq!(
        sums(&t, names::SERVICE_GRAPH_REQUEST_TOTAL),
        vec![row("front", "api", 8080, "", 2)]
    );
    let server = hists(&t, names::SERVICE_GRAPH_REQUEST_SERVER_SECONDS);
    assert_eq!(server.iter().map(|h| h.count).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn sockets_and_endpoints_stay_bounded_through_many_connections() {
    let config = ServiceGraphConfig {
        max_endpoints: at_least_one(64),
        ..ServiceGraphConfig::default()
    };
    let mut p = processor(config);
    for round in 0..20u64 {
        let mut events = Vec::new();
        for i in 0..500 {
            let cookie = 1 + round * 500 + i;
            connection(
                &mut events,
                cookie,
                FRONT,
                addr(1),
                Some(API),
                addr(2),
                8080,
                100,
                5,
            );
        }
        run(&mut p, events);
        let (sockets, endpoints, edges) = p.sizes();
        assert_eq!(sockets, 0, "round {round}: closed sockets are forgotten");
        assert!(endpoints <= 64, "round {round}: {endpoints} endpoints");
        assert_eq!(edges, 1);
    }
}

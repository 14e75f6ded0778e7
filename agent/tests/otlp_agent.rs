//! The agent's own spans and metrics through a real third-party collector: `periscope run`
//! (sockops + tcp_udp → connections → otlp over gRPC) → rotel (`pip install rotel==0.0.1a15`)
//! → a sink that decodes with the official protobuf definitions (the test kit's).
//!
//! A Python client in pod-a makes 5 connections to an echo server in pod-b, sending and
//! receiving 1,000 bytes on each. Each must arrive as one CLIENT `tcp.connection` span with the
//! client's 4-tuple, namespace and pid, 1,000 bytes sent and received (+1 for the server's FIN), and a SERVER span for
//! the same connection; `periscope.tcp.connections` arrives as a monotonic cumulative sum.
//!
//! Needs root, `ip`, `python3` and rotel; skips otherwise, except under CI.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::metrics::v1::{metric::Data, AggregationTemporality};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use periscope_testkit::netns::pods;
use periscope_testkit::otlp::rotel::{self, rotel_binary, start_rotel};
use periscope_testkit::otlp::sink::{free_port, int_attr, str_attr, Sink};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::{poll, run_ok, Background};
use periscope_testkit::python::tcp_server;
use periscope_testkit::{require_root_and_tools, skip, test_name, TestDir};

/// What the server does with each connection (see `tcp_server`).
const SERVER_PER_CONNECTION: &str = r#"
data = b""
while len(data) < 1000:
    d = c.recv(65536)
    if not d:
        break
    data += d
c.sendall(data)
c.close()
"#;

const CLIENT: &str = r#"
import os, socket, sys
ports = []
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.connect((sys.argv[1], int(sys.argv[2])))
    ports.append(s.getsockname()[1])
    s.sendall(bytes(1000))
    got = 0
    while got < 1000:
        d = s.recv(65536)
        if not d:
            break
        got += len(d)
    s.close()
print(os.getpid())
print(" ".join(map(str, ports)))
"#;

#[test]
fn connection_spans_and_metrics_reach_a_real_collector() {
    let test = test_name!();
    if !require_root_and_tools(test, &["ip", "python3"]) {
        return;
    }
    let Some(rotel) = rotel_binary() else {
        skip(test, &format!("rotel is missing ({})", rotel::INSTALL));
        return;
    };
    let sink = Sink::start(free_port());
    let (grpc, http) = (free_port(), free_port());
    let _rotel = start_rotel(&rotel, grpc, http, sink.port);

    let dir = TestDir::new("otlp_agent");
    let (a, b) = pods("oa0", "10.214.0.1/24", "ob0", "10.214.0.2/24");
    let a_ino = a.inode() as i64;
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  sockops: {{poll_interval: 20ms}}\n  tcp_udp: {{poll_interval: 20ms}}\n\
             processors:\n  connections: {{interval: 300ms}}\n\
             exporters:\n  otlp: {{endpoint: \"http://127.0.0.1:{grpc}\", protocol: grpc, batch: {{timeout: 100ms}}}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [sockops, tcp_udp], processors: [connections], exporters: [otlp]}}\n    \
             traces: {{receivers: [sockops, tcp_udp], processors: [connections], exporters: [otlp]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n"
        ),
    );
    let mut agent = start_agent(&config, "periscope");
    agent.wait_until(Duration::from_secs(60), "the receivers attached", |p| {
        p.stderr().contains("sockops attached") && p.stderr().contains("tcp_udp: ")
    });

    let server_py = dir.write("server.py", tcp_server(16, SERVER_PER_CONNECTION));
    let client_py = dir.write("client.py", CLIENT);
    let server = Background::serve(
        b.exec("python3")
            .arg(&server_py)
            .args(["10.214.0.2", "9500"]),
        "echo server",
    );
    let out = run_ok(
        a.exec("python3")
            .arg(&client_py)
            .args(["10.214.0.2", "9500", "5"]),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let pid: i64 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("client pid");
    let ports: Vec<i64> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().expect("port"))
        .collect();
    assert_eq!(ports.len(), 5);

    // Wait for the client spans to come through rotel.
    poll(
        Duration::from_secs(30),
        || {
            sink.received
                .lock()
                .expect("sink")
                .all_spans()
                .iter()
                .filter(|(_, s)| {
                    s.kind == SpanKind::Client as i32
                        && int_attr(&s.attributes, "periscope.netns.inode") == Some(a_ino)
                })
                .count()
        },
        |got| *got >= 5,
    );
    std::thread::sleep(Duration::from_millis(800));
    stop_agent(agent, Duration::from_secs(30));
    drop(server);

    let received = sink.received.lock().expect("sink");
    let spans = received.all_spans();
    let mut clients: BTreeMap<i64, _> = BTreeMap::new();
    for (rs, s) in &spans {
        if s.name != "tcp.connection" || s.kind != SpanKind::Client as i32 {
            continue;
        }
        if int_attr(&s.attributes, "periscope.netns.inode") != Some(a_ino) {
            continue;
        }
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| str_attr(&r.attributes, "service.name"));
        assert_eq!(service.as_deref(), Some("periscope"), "resource of {s:?}");
        let port = int_attr(&s.attributes, "network.local.port").expect("local port");
        assert!(
            clients.insert(port, *s).is_none(),
            "two client spans for port {port}"
        );
    }
    for port in &ports {
        let s = clients
            .get(port)
            .unwrap_or_else(|| panic!("no client span for port {port}; got {:?}", clients.keys()));
        assert_eq!(int_attr(&s.attributes, "process.pid"), Some(pid));
        assert_eq!(int_attr(&s.attributes, "network.peer.port"), Some(9500));
        assert_eq!(
            int_attr(&s.attributes, "periscope.tcp.bytes_sent"),
            Some(1000)
        );
        // The kernel's bytes_received counts the peer's FIN as one byte when it came first.
        let received = int_attr(&s.attributes, "periscope.tcp.bytes_received").unwrap_or(0);
        assert!(
            (1000..=1001).contains(&received),
            "bytes received {received}"
        );
        assert!(s.end_time_unix_nano > s.start_time_unix_nano, "{s:?}");
        // The server's side of the same connection.
        let server_side = spans.iter().any(|(_, t)| {
            t.kind == SpanKind::Server as i32
                && int_attr(&t.attributes, "network.local.port") == Some(9500)
                && int_attr(&t.attributes, "network.peer.port") == Some(*port)
        });
        assert!(server_side, "no server span for client port {port}");
    }
    let opened: i64 = received
        .all_metrics()
        .iter()
        .filter(|(_, m)| m.name == "periscope.tcp.connections")
        .filter_map(|(_, m)| match &m.data {
            Some(Data::Sum(sum)) => {
                assert!(sum.is_monotonic);
                assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
                assert_eq!(m.unit, "{connection}");
                sum.data_points
                    .iter()
                    .filter(|p| {
                        int_attr(&p.attributes, "periscope.netns.inode") == Some(a_ino)
                            && str_attr(&p.attributes, "periscope.tcp.event").as_deref() == Some("opened")
                    })
                    .map(|p| match p.value {
                        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v)) => v,
                        _ => 0,
                    })
                    .max()
            }
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert_eq!(
        opened, 5,
        "periscope.tcp.connections opened in pod-a, as the collector got it"
    );
    eprintln!("through rotel: {} client spans with pid {pid}, 5 server spans, connections opened = {opened}", clients.len());
}

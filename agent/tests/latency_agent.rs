//! The real `periscope` binary with the latency processor, end to end:
//! `periscope run` (sockops + tcp_udp with `send_receive: tcp` → connections → latency →
//! file, OTLP/JSON).
//!
//! Two "pod" namespaces joined by a veth pair (`ta0` 10.214.0.1 ↔ `tb0` 10.214.0.2). A Python
//! server in pod-b answers each request after sleeping `DELAY` (20 ms); a Python client in
//! pod-a makes `EXCHANGES` request/response exchanges over `CONNECTIONS` sequential
//! connections, timing each itself. Then, for pod-a's client sockets:
//!
//! - `periscope.tcp.response.duration` holds exactly one sample per exchange and its p50 (from
//!   the exported exponential histogram, and from the explicit one) is within ±10% of the
//!   server's delay. What else is in the measurement: periscope's sample runs from the
//!   client's sendmsg returning to its recvmsg returning (the `sock_send_length` /
//!   `sock_recv_length` tracepoints), so besides the 20 ms sleep it holds the sleep's timer
//!   slack, the Python server's recv → sleep → sendall overhead, two one-way trips over the
//!   veth (tens of µs) and the client's wake-up from its blocking recv. The client's own
//!   clock (around sendall/recv, so a little longer) is printed beside it.
//! - `periscope.tcp.connect.duration` counts exactly `CONNECTIONS` (sockops and tcp_udp both
//!   report each handshake: counted once).
//! - `periscope.tcp.rtt` (`rtt_samples: [established]`: the handshake's RTT measurement) has
//!   one sample per connection, and its p50, min and max agree with tshark's SYN → SYN/ACK
//!   times on `ta0` within `RTT_TOLERANCE` (absolute) or 50% (whichever is larger): the kernel
//!   timestamps in TCP (µs, truncated) and the capture timestamps at the device differ by the
//!   stack traversal between them.
//! - The exponential histograms decode with the official OTLP protobuf definitions (the
//!   OTLP/JSON line through `opentelemetry-proto`, then re-encoded to protobuf bytes and
//!   decoded again), and their count, sum and bucket totals agree with the explicit-bucket
//!   histogram of the same series and time.
//!
//! Needs root, `ip`, `python3`, `dumpcap` and `tshark`; skips otherwise, except under CI.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{ExponentialHistogramDataPoint, HistogramDataPoint};
use prost::Message;

use periscope_testkit::capture::{handshake_times, Dumpcap};
use periscope_testkit::netns::pods;
use periscope_testkit::otlp::metrics::latest as latest_points;
use periscope_testkit::otlp::{points, read_metrics, Attributes, PointData};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::{output_with_timeout, run_ok, Background};
use periscope_testkit::python::tcp_server;
use periscope_testkit::stats::median;
use periscope_testkit::{require_root_and_tools, test_name, yaml_path, Netns, TestDir};

const TOOLS: &[&str] = &["ip", "python3", "dumpcap", "tshark"];
const B_ADDR: &str = "10.214.0.2";
const PORT: u16 = 9310;
const CONNECTIONS: usize = 8;
const EXCHANGES: usize = 120;
const DELAY: f64 = 0.020;
/// Absolute tolerance for RTT against tshark's handshake times.
const RTT_TOLERANCE: f64 = 100e-6;

/// What the server does with each connection (see `tcp_server`).
const SERVER_PER_CONNECTION: &str = r#"
delay = float(sys.argv[3])
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(4096)
    if not d:
        break
    time.sleep(delay)
    c.sendall(b"r" * 64)
c.close()
"#;

const CLIENT: &str = r#"
import socket, sys, time
dst, port, conns, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
times = []
for i in range(conns):
    s = socket.socket()
    s.connect((dst, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n // conns + (1 if i < n % conns else 0)):
        t = time.monotonic()
        s.sendall(b"q" * 32)
        got = 0
        while got < 64:
            d = s.recv(4096)
            if not d:
                raise SystemExit("server closed")
            got += len(d)
        times.append(time.monotonic() - t)
    s.close()
    time.sleep(0.01)
times.sort()
print(len(times), times[len(times) // 2])
"#;

/// The latest point of each (scope, metric, attributes) among histogram and exponential
/// histogram metrics.
#[derive(Default)]
struct Latest {
    explicit: BTreeMap<(String, String, Attributes), HistogramDataPoint>,
    exponential: BTreeMap<(String, String, Attributes), ExponentialHistogramDataPoint>,
}

fn latest(requests: &[ExportMetricsServiceRequest]) -> Latest {
    let all = points(requests);
    for p in &all {
        if let PointData::Histogram(_, t) | PointData::Exponential(_, t) = p.data {
            assert_eq!(t, 2, "{}: cumulative", p.metric.name);
        }
    }
    let mut l = Latest::default();
    for (key, p) in latest_points(all) {
        match p.data {
            PointData::Histogram(h, _) => {
                l.explicit.insert(key, h.clone());
            }
            PointData::Exponential(h, _) => {
                l.exponential.insert(key, h.clone());
            }
            _ => {}
        }
    }
    l
}

/// The value at quantile `q` of an exponential histogram point: the geometric middle of the
/// bucket holding the sample of rank ⌈q·count⌉.
fn exponential_quantile(p: &ExponentialHistogramDataPoint, q: f64) -> f64 {
    let rank = ((q * p.count as f64).ceil() as u64).max(1);
    let mut acc = p.zero_count;
    if acc >= rank {
        return 0.0;
    }
    let pos = p.positive.as_ref().expect("positive buckets");
    let base = 2f64.powf(2f64.powi(-p.scale));
    for (i, c) in pos.bucket_counts.iter().enumerate() {
        acc += c;
        if acc >= rank {
            let lower = base.powi(pos.offset + i as i32);
            return lower * base.sqrt();
        }
    }
    panic!("rank {rank} past the buckets of {p:?}");
}

/// The value at quantile `q` of an explicit-bucket point, interpolated linearly inside the
/// bucket holding the sample of rank ⌈q·count⌉ (bounded by min and max).
fn explicit_quantile(p: &HistogramDataPoint, q: f64) -> f64 {
    let rank = ((q * p.count as f64).ceil() as u64).max(1);
    let mut acc = 0;
    for (i, c) in p.bucket_counts.iter().enumerate() {
        if acc + c >= rank {
            let lo = if i == 0 {
                p.min.unwrap_or(0.0)
            } else {
                p.explicit_bounds[i - 1]
            };
            let hi = p
                .explicit_bounds
                .get(i)
                .copied()
                .unwrap_or(p.max.unwrap_or(lo));
            return lo + (hi - lo) * (rank - acc) as f64 / *c as f64;
        }
        acc += c;
    }
    panic!("rank {rank} past the buckets of {p:?}");
}

#[test]
fn latency_histograms_match_the_delay_the_handshakes_and_each_other() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    let dir = TestDir::new("latency_agent");
    let (a, b) = pods("ta0", "10.214.0.1/24", "tb0", "10.214.0.2/24");
    let (a_ino, b_ino) = (a.inode().to_string(), b.inode().to_string());
    // Permanent neighbour entries: otherwise the first SYN waits for ARP, which the kernel's
    // RTT sample includes (timed from the SYN's transmit) and tshark's does not.
    let mac = |ns: &Netns, dev: &str| -> String {
        let out = output_with_timeout(
            Command::new("ip").args(["-n", ns.name(), "-o", "link", "show", dev]),
            Duration::from_secs(10),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC address for {dev}: {text}"))
            .to_string()
    };
    a.ip(&[
        "neigh",
        "replace",
        B_ADDR,
        "lladdr",
        &mac(&b, "tb0"),
        "dev",
        "ta0",
        "nud",
        "permanent",
    ]);
    b.ip(&[
        "neigh",
        "replace",
        "10.214.0.1",
        "lladdr",
        &mac(&a, "ta0"),
        "dev",
        "tb0",
        "nud",
        "permanent",
    ]);

    // Fine explicit buckets around the delay, so that the explicit p50 can be compared too.
    let bounds: Vec<String> = (10..=40)
        .map(|ms| format!("{}", f64::from(ms) * 1e-3))
        .collect();
    let out = dir.join("metrics.jsonl");
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  sockops: {{poll_interval: 20ms}}\n  tcp_udp: {{poll_interval: 20ms, send_receive: tcp}}\n\
             processors:\n  connections: {{interval: 200ms, spans: false}}\n  \
             latency: {{interval: 200ms, histograms: [explicit, exponential], rtt_samples: [established], \
             attributes: [periscope.netns.inode, periscope.connection.role, network.peer.port], \
             boundaries: [0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, {}, 0.05, 0.1, 1]}}\n\
             exporters:\n  file: {{path: {}, flush_interval: 100ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [sockops, tcp_udp], processors: [latency, connections], exporters: [file]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            bounds.join(", "),
            yaml_path(&out),
        ),
    );
    let mut agent = start_agent(&config, "periscope");
    agent.wait_until(Duration::from_secs(60), "the receivers attached", |p| {
        p.stderr().contains("sockops attached") && p.stderr().contains("tcp_udp: ")
    });

    let server_py = dir.write("server.py", tcp_server(64, SERVER_PER_CONNECTION));
    let client_py = dir.write("client.py", CLIENT);
    let server = Background::serve(
        b.exec("python3")
            .arg(&server_py)
            .arg(B_ADDR)
            .arg(PORT.to_string())
            .arg(DELAY.to_string()),
        "tcp server",
    );
    let pcap = dir.join("handshakes.pcapng");
    let mut capture = Dumpcap::start(&a, "ta0", &pcap, &["-f", &format!("tcp port {PORT}")]);
    let client = run_ok(
        a.exec("python3")
            .arg(&client_py)
            .arg(B_ADDR)
            .arg(PORT.to_string())
            .arg(CONNECTIONS.to_string())
            .arg(EXCHANGES.to_string())
            .stdin(Stdio::null()),
        Duration::from_secs(120),
    );
    let text = String::from_utf8_lossy(&client.stdout).to_string();
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(
        f.first().copied(),
        Some(EXCHANGES.to_string().as_str()),
        "client: {text}"
    );
    let client_median: f64 = f[1].parse().expect("client median");

    // Every exchange, handshake and close, then settled captures and exports.
    let mine = |attrs: &Attributes| {
        attrs.get("periscope.netns.inode") == Some(&a_ino)
            && attrs.get("periscope.connection.role").map(String::as_str) == Some("client")
    };
    let read = || read_metrics(&out);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (requests, l) = loop {
        let requests = read();
        let l = latest(&requests);
        let responses: u64 = l
            .explicit
            .iter()
            .filter(|((_, n, a), _)| n == "periscope.tcp.response.duration" && mine(a))
            .map(|(_, p)| p.count)
            .sum();
        if responses >= EXCHANGES as u64 || Instant::now() > deadline {
            // One more interval, so that nothing late is missed.
            std::thread::sleep(Duration::from_millis(600));
            let requests = read();
            let l = latest(&requests);
            break (requests, l);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    capture.wait_until_settled(
        3 * CONNECTIONS as u64,
        Duration::from_millis(1500),
        Duration::from_secs(30),
    );
    capture.stop();
    server.signal(libc::SIGKILL);

    let find_explicit = |name: &str| -> (Attributes, HistogramDataPoint) {
        let v: Vec<_> = l
            .explicit
            .iter()
            .filter(|((s, n, a), _)| s == "periscope/latency" && n == name && mine(a))
            .collect();
        assert_eq!(v.len(), 1, "{name}: one client series in pod-a: {:?}", v);
        (v[0].0 .2.clone(), v[0].1.clone())
    };
    let find_exponential = |name: &str| -> ExponentialHistogramDataPoint {
        let v: Vec<_> = l
            .exponential
            .iter()
            .filter(|((s, n, a), _)| s == "periscope/latency/exponential" && n == name && mine(a))
            .collect();
        assert_eq!(v.len(), 1, "{name}: one exponential client series in pod-a");
        v[0].1.clone()
    };

    // ---- response duration ----
    let (attrs, resp) = find_explicit("periscope.tcp.response.duration");
    assert_eq!(attrs.get("network.peer.port"), Some(&PORT.to_string()));
    let resp_exp = find_exponential("periscope.tcp.response.duration");
    assert_eq!(
        resp.count, EXCHANGES as u64,
        "one response sample per exchange"
    );
    let p50_exp = exponential_quantile(&resp_exp, 0.5);
    let p50_explicit = explicit_quantile(&resp, 0.5);
    eprintln!(
        "response p50: {:.3} ms (exponential, scale {}), {:.3} ms (explicit); min {:.3} ms, max {:.3} ms; client's own median {:.3} ms; server delay {:.1} ms",
        p50_exp * 1e3,
        resp_exp.scale,
        p50_explicit * 1e3,
        resp.min.unwrap_or(0.0) * 1e3,
        resp.max.unwrap_or(0.0) * 1e3,
        client_median * 1e3,
        DELAY * 1e3
    );
    for (what, p50) in [("exponential", p50_exp), ("explicit", p50_explicit)] {
        assert!(
            (p50 - DELAY).abs() <= 0.1 * DELAY,
            "response p50 ({what}) {p50} is not within ±10% of {DELAY}"
        );
    }
    assert!(
        resp.min.unwrap_or(0.0) >= DELAY,
        "a response faster than the server's sleep: {:?}",
        resp.min
    );
    assert!(
        p50_exp <= client_median * 1.05,
        "periscope's p50 {p50_exp} is longer than the client's own median {client_median}"
    );
    // The server side is not measured (response_roles: [client]).
    assert!(
        !l.explicit
            .keys()
            .any(|(_, n, a)| n == "periscope.tcp.response.duration"
                && a.get("periscope.netns.inode") == Some(&b_ino)),
        "server sockets must not have response samples"
    );

    // ---- connect duration ----
    let (_, connect) = find_explicit("periscope.tcp.connect.duration");
    assert_eq!(
        connect.count, CONNECTIONS as u64,
        "one connect duration per connection"
    );

    // ---- RTT vs tshark ----
    let (_, rtt) = find_explicit("periscope.tcp.rtt");
    let rtt_exp = find_exponential("periscope.tcp.rtt");
    assert_eq!(
        rtt.count, CONNECTIONS as u64,
        "one handshake RTT sample per connection"
    );
    let mut handshakes: Vec<f64> = handshake_times(&pcap, PORT).into_values().collect();
    assert_eq!(
        handshakes.len(),
        CONNECTIONS,
        "tshark's handshakes: {handshakes:?}"
    );
    let t_med = median(&mut handshakes);
    let (t_min, t_max) = (handshakes[0], handshakes[handshakes.len() - 1]);
    let p_med = exponential_quantile(&rtt_exp, 0.5);
    let (p_min, p_max) = (rtt.min.unwrap_or(0.0), rtt.max.unwrap_or(0.0));
    eprintln!(
        "handshake RTT: periscope p50 {:.1} µs [{:.1}, {:.1}], tshark median {:.1} µs [{:.1}, {:.1}]",
        p_med * 1e6,
        p_min * 1e6,
        p_max * 1e6,
        t_med * 1e6,
        t_min * 1e6,
        t_max * 1e6
    );
    let tol = |t: f64| RTT_TOLERANCE.max(0.5 * t);
    for (what, p, t) in [
        ("p50", p_med, t_med),
        ("min", p_min, t_min),
        ("max", p_max, t_max),
    ] {
        assert!(
            (p - t).abs() <= tol(t),
            "RTT {what}: periscope {p}, tshark {t} (tolerance {})",
            tol(t)
        );
    }

    // ---- the exponential histograms through the official protobuf definitions ----
    let mut checked = 0;
    for req in &requests {
        let bytes = req.encode_to_vec();
        let decoded = ExportMetricsServiceRequest::decode(bytes.as_slice())
            .expect("protobuf decode of a re-encoded request");
        assert_eq!(&decoded, req, "protobuf round trip");
    }
    for ((scope, name, attrs), e) in &l.exponential {
        assert_eq!(scope, "periscope/latency/exponential");
        let Some(h) =
            l.explicit
                .get(&("periscope/latency".to_string(), name.clone(), attrs.clone()))
        else {
            panic!("{name} {attrs:?}: no explicit histogram beside the exponential one");
        };
        if h.time_unix_nano != e.time_unix_nano {
            continue; // the last lines of the two scopes may come from different emits
        }
        let pos = e.positive.as_ref().expect("positive buckets");
        assert!(
            e.scale <= 20 && pos.bucket_counts.len() <= 160,
            "{name}: {e:?}"
        );
        assert_eq!(e.count, h.count, "{name} {attrs:?}: count");
        assert_eq!(e.sum, h.sum, "{name} {attrs:?}: sum");
        assert_eq!((e.min, e.max), (h.min, h.max), "{name} {attrs:?}: min/max");
        assert_eq!(
            e.zero_count + pos.bucket_counts.iter().sum::<u64>(),
            e.count,
            "{name} {attrs:?}: exponential bucket total"
        );
        assert_eq!(
            h.bucket_counts.iter().sum::<u64>(),
            h.count,
            "{name} {attrs:?}: explicit bucket total"
        );
        checked += 1;
    }
    eprintln!("{checked} exponential/explicit pairs agree");
    assert!(
        checked >= 3,
        "only {checked} exponential/explicit pairs compared"
    );

    stop_agent(agent, Duration::from_secs(20));
}

//! The real `periscope` binary with the socket receivers, end to end:
//! `periscope run` (sockops + tcp_udp → connections → file, metrics and traces).
//!
//! Two "pod" namespaces joined by a veth pair (`sa0` 10.212.0.1 ↔ `sb0` 10.212.0.2).
//!
//! - TCP: a Python client in pod-a opens 500 connections to a server in pod-b, each closed
//!   right after connect (open well under 2 ms). Every one must come out as exactly one
//!   CLIENT span with the right 4-tuple, pod-a's namespace, and the client's pid and command
//!   (as the client itself read them from /proc/self), with a connect latency and a smoothed
//!   RTT in (0, 1 s); the connect latencies must agree with the SYN → SYN/ACK time tshark
//!   sees on `sa0`. Beside it, `ss -tn` polled every 100 ms in pod-a: both capture rates are
//!   printed. `periscope.tcp.connections` counts 500 client opens in pod-a.
//! - UDP: datagrams from a socket in pod-a to one in pod-b: the per-socket send and receive
//!   counts equal the generator's; datagrams to a closed port of pod-b are drops with the
//!   kernel's reason `NO_SOCKET` in pod-b's namespace, one per datagram.
//! - The receiver log says it fell back to tracepoints where fentry is refused (this machine).
//!
//! Needs root, `ip`, `python3`, `ss`, `dumpcap` and `tshark`; skips otherwise, except under CI.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use periscope_testkit::bpf;
use periscope_testkit::capture::{handshake_times, Dumpcap};
use periscope_testkit::netns::{pods, udp, UdpTraffic};
use periscope_testkit::otlp::{read_metrics, read_spans, sum_series, Series, Span};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::{output_with_timeout, poll, run_ok, Background};
use periscope_testkit::python::tcp_server;
use periscope_testkit::stats::median;
use periscope_testkit::{require_root_and_tools, test_name, yaml_path, Netns, TestDir};

const TOOLS: &[&str] = &[
    "ip", "python3", "ss", "dumpcap", "tshark", "nft", "nstat", "bpftool",
];
const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 2);
const TCP_PORT: u16 = 9300;
const UDP_PORT: u16 = 9301;
const CLOSED_PORT: u16 = 9302;
const CONNECTIONS: usize = 500;
const DATAGRAMS: u64 = 300;
const TO_CLOSED: u64 = 40;
const BULK_PORT: u16 = 9303;

/// What the bulk server does with each connection (see `tcp_server`).
const BULK_SERVER_PER_CONNECTION: &str = r#"
while c.recv(65536):
    pass
c.close()
"#;

const BULK_CLIENT: &str = r#"
import socket, sys
for _ in range(int(sys.argv[3])):
    s = socket.socket()
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.sendall(bytes(int(sys.argv[4])))
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    s.close()
print("done")
"#;

/// `TcpRetransSegs` of a namespace (`nstat` reads the namespace's own SNMP counters).
fn retrans_segs(ns: &Netns) -> i64 {
    let out = output_with_timeout(
        ns.exec("nstat").args(["-az", "TcpRetransSegs"]),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("TcpRetransSegs"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("nstat in {}: {:?}", ns.name(), out))
}

/// How often the kernel skipped the `periscope_kfree_skb` program as nested (`bpftool prog`
/// reports `recursion_misses` when it is not zero).
fn kfree_skb_misses() -> i64 {
    bpf::programs()
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| "periscope_kfree_skb".starts_with(n))
        })
        .map(|p| p["recursion_misses"].as_i64().unwrap_or(0))
        .sum()
}

/// Packets an nft rule of the namespace dropped (its `counter`).
fn nft_dropped(ns: &Netns) -> i64 {
    let out = output_with_timeout(
        ns.exec("nft")
            .args(["list", "chain", "inet", "periscope_test", "in"]),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("nft counter in {}: {text}", ns.name()))
}

/// What the server does with each connection (see `tcp_server`).
const SERVER_PER_CONNECTION: &str = r#"
c.close()
"#;

const CLIENT: &str = r#"
import os, socket, sys, time
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ports, longest = [], 0.0
for _ in range(n):
    t = time.monotonic()
    s = socket.socket()
    s.connect((dst, port))
    ports.append(s.getsockname()[1])
    s.close()
    longest = max(longest, time.monotonic() - t)
    time.sleep(0.002)
print(os.getpid(), open("/proc/self/comm").read().strip())
print(" ".join(map(str, ports)))
print(longest)
"#;

fn metric_series(out: &Path, metric: &str) -> Vec<Series> {
    sum_series(&read_metrics(out), metric)
}

#[test]
fn sockets_short_connections_udp_and_drops_are_reported_exactly() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    let dir = TestDir::new("socket_agent");
    let (a, b) = pods("sa0", "10.212.0.1/24", "sb0", "10.212.0.2/24");
    let (a_ino, b_ino) = (a.inode() as i64, b.inode() as i64);

    let metrics_out = dir.join("metrics.jsonl");
    let traces_out = dir.join("traces.jsonl");
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  sockops: {{poll_interval: 20ms}}\n  tcp_udp: {{poll_interval: 20ms}}\n\
             processors:\n  connections: {{interval: 200ms, socket_attributes: true}}\n\
             exporters:\n  file/metrics: {{path: {}, flush_interval: 100ms}}\n  file/traces: {{path: {}, flush_interval: 100ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [sockops, tcp_udp], processors: [connections], exporters: [file/metrics]}}\n    \
             traces: {{receivers: [sockops, tcp_udp], processors: [connections], exporters: [file/traces]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            yaml_path(&metrics_out),
            yaml_path(&traces_out)
        ),
    );
    let mut agent = start_agent(&config, "periscope");
    agent.wait_until(Duration::from_secs(60), "the receivers attached", |p| {
        p.stderr().contains("sockops attached") && p.stderr().contains("tcp_udp: ")
    });
    let log = agent.stderr();
    assert!(
        log.contains("falling back to tracepoints") || log.contains("fentry/fexit on"),
        "the tcp_udp receiver did not say which mechanism it uses:\n{log}"
    );
    eprintln!(
        "tcp_udp mechanism: {}",
        if log.contains("falling back to tracepoints") {
            "tracepoints (fentry refused)"
        } else {
            "fentry"
        }
    );

    // ---- TCP: 500 short connections, with a capture and an `ss` poller beside them ----
    let server_py = dir.write("server.py", tcp_server(1024, SERVER_PER_CONNECTION));
    let client_py = dir.write("client.py", CLIENT);
    let server = Background::serve(
        b.exec("python3")
            .arg(&server_py)
            .arg(B_ADDR.to_string())
            .arg(TCP_PORT.to_string()),
        "tcp server",
    );
    let pcap = dir.join("handshakes.pcapng");
    let mut capture = Dumpcap::start(&a, "sa0", &pcap, &["-f", &format!("tcp port {TCP_PORT}")]);

    let polling = AtomicBool::new(true);
    let (client_out, ss_seen) = std::thread::scope(|s| {
        let poller = s.spawn(|| {
            let mut seen = BTreeSet::new();
            while polling.load(Ordering::Relaxed) {
                let out = output_with_timeout(a.exec("ss").args(["-tnH"]), Duration::from_secs(5));
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if f.len() >= 5 && f[4] == format!("{B_ADDR}:{TCP_PORT}") {
                        if let Some(port) =
                            f[3].rsplit(':').next().and_then(|p| p.parse::<u16>().ok())
                        {
                            seen.insert(port);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        let out = output_with_timeout(
            a.exec("python3")
                .arg(&client_py)
                .arg(B_ADDR.to_string())
                .arg(TCP_PORT.to_string())
                .arg(CONNECTIONS.to_string())
                .stdin(Stdio::null()),
            Duration::from_secs(120),
        );
        std::thread::sleep(Duration::from_millis(200));
        polling.store(false, Ordering::Relaxed);
        (out, poller.join().expect("ss poller"))
    });
    assert!(
        client_out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&client_out.stderr)
    );
    let text = String::from_utf8_lossy(&client_out.stdout).to_string();
    let mut lines_iter = text.lines();
    let first: Vec<&str> = lines_iter
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let client_pid: i64 = first[0].parse().expect("client pid");
    let client_comm = first[1].to_string();
    let client_ports: BTreeSet<i64> = lines_iter
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().expect("port"))
        .collect();
    let longest: f64 = lines_iter
        .next()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0.0);
    assert_eq!(
        client_ports.len(),
        CONNECTIONS,
        "the client's ports are not distinct"
    );
    eprintln!(
        "client pid {client_pid} ({client_comm}); longest connection {:.3} ms",
        longest * 1e3
    );

    // ---- UDP: counted datagrams, and some to a closed port ----
    let (udp_sender_port, udp_sent, udp_received) = udp_exchange(a.name(), b.name());

    // ---- Retransmits: an nft rule in pod-b drops 1 in 20 of the data packets arriving for the
    // bulk server (real loss: the client must retransmit); the kernel's own TcpRetransSegs of
    // each namespace is the ground truth, and the rule's counter is the truth for the
    // NETFILTER_DROP drops. ----
    let bulk_server_py = dir.write("bulk_server.py", tcp_server(16, BULK_SERVER_PER_CONNECTION));
    let bulk_client_py = dir.write("bulk_client.py", BULK_CLIENT);
    let bulk_server = Background::serve(
        b.exec("python3")
            .arg(&bulk_server_py)
            .arg(B_ADDR.to_string())
            .arg(BULK_PORT.to_string()),
        "bulk server",
    );
    for rule in [
        "add table inet periscope_test",
        "add chain inet periscope_test in { type filter hook input priority 0; }",
        "add rule inet periscope_test in tcp dport 9303 meta length gt 1000 numgen random mod 20 == 0 counter drop",
    ] {
        let cmd: Vec<&str> = rule.split(' ').collect();
        let out = output_with_timeout(b.exec("nft").args(&cmd), Duration::from_secs(10));
        assert!(
            out.status.success(),
            "nft {cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One segment per packet (no GSO), so that losses are recovered fast, by duplicate ACKs.
    a.ip(&["link", "set", "sa0", "gso_max_segs", "1"]);
    let (retrans_a0, retrans_b0) = (retrans_segs(&a), retrans_segs(&b));
    run_ok(
        a.exec("python3")
            .arg(&bulk_client_py)
            .arg(B_ADDR.to_string())
            .arg(BULK_PORT.to_string())
            .arg("3")
            .arg("1000000"),
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(300));
    let retrans_a = retrans_segs(&a) - retrans_a0;
    let retrans_b = retrans_segs(&b) - retrans_b0;
    let nft_drops = nft_dropped(&b);
    let missed = kfree_skb_misses();
    bulk_server.signal(libc::SIGKILL);
    assert!(retrans_a > 0, "the nft rule caused no retransmissions");

    // Wait until every client span arrived.
    let client_spans = poll(
        Duration::from_secs(30),
        || -> Vec<Span> {
            read_spans(&traces_out)
                .into_iter()
                .filter(|s| s.kind == 3 && s.int("periscope.netns.inode") == Some(a_ino))
                .filter(|s| s.int("network.peer.port") == Some(TCP_PORT as i64))
                .collect()
        },
        |rows| rows.len() >= CONNECTIONS,
    );
    capture.wait_until_settled(
        2 * CONNECTIONS as u64,
        Duration::from_millis(1500),
        Duration::from_secs(30),
    );
    capture.stop();
    server.signal(libc::SIGKILL);

    // Every connection exactly once, with its 4-tuple, namespace and process.
    let mut by_port: BTreeMap<i64, Span> = BTreeMap::new();
    for s in &client_spans {
        let port = s.int("network.local.port").expect("local port");
        assert!(
            by_port.insert(port, s.clone()).is_none(),
            "two spans for client port {port}"
        );
    }
    let got: BTreeSet<i64> = by_port.keys().copied().collect();
    let missing: Vec<_> = client_ports.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {CONNECTIONS} connections have no span (e.g. {:?})",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let tshark = handshake_times(&pcap, TCP_PORT);
    let mut diffs = Vec::new();
    let mut rtt_diffs = Vec::new();
    for port in &client_ports {
        let s = &by_port[port];
        assert_eq!(s.str("network.local.address"), Some("10.212.0.1"));
        assert_eq!(s.str("network.peer.address"), Some("10.212.0.2"));
        assert_eq!(
            s.int("process.pid"),
            Some(client_pid),
            "pid of port {port}: {s:?}"
        );
        assert_eq!(s.str("process.executable.name"), Some(client_comm.as_str()));
        let connect_us = s.int("periscope.tcp.connect_duration_us").unwrap_or(0);
        let srtt_us = s.int("periscope.tcp.srtt_us").unwrap_or(0);
        assert!(
            connect_us > 0 && connect_us < 1_000_000,
            "connect latency {connect_us} µs on port {port}"
        );
        assert!(
            srtt_us > 0 && srtt_us < 1_000_000,
            "srtt {srtt_us} µs on port {port}"
        );
        if let Some(t) = tshark.get(&(*port as u16)) {
            diffs.push((connect_us as f64 * 1e-6 - t).abs());
            rtt_diffs.push((srtt_us as f64 * 1e-6 - t).abs());
        }
    }
    assert!(
        diffs.len() >= CONNECTIONS * 9 / 10,
        "tshark saw only {} handshakes",
        diffs.len()
    );
    let med = median(&mut diffs);
    let p95 = diffs[diffs.len() * 95 / 100];
    eprintln!(
        "connect latency vs tshark SYN→SYN/ACK over {} handshakes: median |Δ| {:.1} µs, p95 {:.1} µs",
        diffs.len(),
        med * 1e6,
        p95 * 1e6
    );
    assert!(
        med < 500e-6 && p95 < 5e-3,
        "connect latency disagrees with tshark: median {med}, p95 {p95}"
    );
    // The first smoothed RTT is the handshake's RTT sample; later ACKs move it a little.
    let rtt_med = median(&mut rtt_diffs);
    eprintln!(
        "smoothed RTT vs tshark SYN→SYN/ACK: median |Δ| {:.1} µs",
        rtt_med * 1e6
    );
    assert!(
        rtt_med < 500e-6,
        "smoothed RTT disagrees with tshark: median |Δ| {rtt_med} s"
    );
    let ss_rate = ss_seen
        .intersection(&client_ports.iter().map(|p| *p as u16).collect())
        .count();
    eprintln!(
        "capture rate: periscope {}/{CONNECTIONS}, `ss -tn` every 100 ms {ss_rate}/{CONNECTIONS}",
        got.intersection(&client_ports).count()
    );

    // Metrics: 500 client opens in pod-a, UDP per socket, drops with the kernel's reason.
    std::thread::sleep(Duration::from_millis(600));
    let opened: i64 = last_values(&metric_series(&metrics_out, "periscope.tcp.connections"))
        .iter()
        .filter(|(a, _)| {
            a.get("periscope.netns.inode").map(String::as_str) == Some(&a_ino.to_string())
                && a.get("periscope.tcp.event").map(String::as_str) == Some("opened")
                && a.get("periscope.connection.role").map(String::as_str) == Some("client")
                && a.get("network.peer.port").map(String::as_str) == Some(&TCP_PORT.to_string())
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        opened, CONNECTIONS as i64,
        "periscope.tcp.connections opened by the client"
    );
    let udp = last_values(&metric_series(&metrics_out, "periscope.udp.datagrams"));
    let udp_count = |ns: i64, dir: &str, port: u16| -> i64 {
        udp.iter()
            .filter(|(a, _)| {
                a.get("periscope.netns.inode").map(String::as_str) == Some(&ns.to_string())
                    && a.get("network.io.direction").map(String::as_str) == Some(dir)
                    && a.get("network.local.port").map(String::as_str) == Some(&port.to_string())
            })
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        udp_count(a_ino, "transmit", udp_sender_port),
        (udp_sent + TO_CLOSED) as i64,
        "datagrams sent by the pod-a socket"
    );
    assert_eq!(
        udp_count(b_ino, "receive", UDP_PORT),
        udp_received as i64,
        "datagrams received by the pod-b socket"
    );
    let drops = last_values(&metric_series(&metrics_out, "periscope.drops"));
    let no_socket: i64 = drops
        .iter()
        .filter(|(a, _)| {
            a.get("periscope.netns.inode").map(String::as_str) == Some(&b_ino.to_string())
                && a.get("periscope.drop.reason").map(String::as_str) == Some("NO_SOCKET")
                && a.get("network.transport").map(String::as_str) == Some("udp")
        })
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        no_socket, TO_CLOSED as i64,
        "NO_SOCKET drops in pod-b: {drops:?}"
    );

    let retransmits = last_values(&metric_series(&metrics_out, "periscope.tcp.retransmits"));
    let retrans_in = |ns: i64| -> i64 {
        retransmits
            .iter()
            .filter(|(a, _)| {
                a.get("periscope.netns.inode").map(String::as_str) == Some(&ns.to_string())
            })
            .map(|(_, v)| v)
            .sum()
    };
    eprintln!(
        "retransmits: pod-a periscope {} / nstat {retrans_a}, pod-b periscope {} / nstat {retrans_b}",
        retrans_in(a_ino),
        retrans_in(b_ino)
    );
    assert_eq!(
        retrans_in(a_ino),
        retrans_a,
        "retransmitted segments in pod-a"
    );
    assert_eq!(
        retrans_in(b_ino),
        retrans_b,
        "retransmitted segments in pod-b"
    );
    let netfilter: i64 = drops
        .iter()
        .filter(|(a, _)| {
            a.get("periscope.netns.inode").map(String::as_str) == Some(&b_ino.to_string())
                && a.get("periscope.drop.reason").map(String::as_str) == Some("NETFILTER_DROP")
        })
        .map(|(_, v)| v)
        .sum();
    eprintln!(
        "NETFILTER_DROP in pod-b: periscope {netfilter} / nft counter {nft_drops} (kfree_skb \
         program runs the kernel skipped as nested: {missed})"
    );
    // Exact in most runs. Drops the kernel did not run the program for are accounted for
    // (a tracing program is not re-entered on a CPU where it is already running, and the
    // kernel counts those skips in its `recursion_misses`); one CI run also showed 94 of 97
    // with no recursion miss, not explained yet — so up to 5% more may be missing, never
    // more counted than the rule dropped.
    let unexplained = (nft_drops - netfilter - missed).max(0);
    assert!(
        netfilter <= nft_drops && unexplained * 20 <= nft_drops,
        "NETFILTER_DROP drops in pod-b ({netfilter}) vs the nft rule's counter ({nft_drops}), \
         recursion misses {missed}"
    );

    stop_agent(agent, Duration::from_secs(20));
}

/// Each series' latest value (the files hold cumulative snapshots).
fn last_values(series: &[Series]) -> Vec<(BTreeMap<String, String>, i64)> {
    series
        .iter()
        .map(|s| (s.attributes.clone().into_iter().collect(), s.value))
        .collect()
}

/// Sends DATAGRAMS from pod-a to a socket in pod-b and TO_CLOSED more to a closed port;
/// returns (sender's port, sent to the open port, received).
fn udp_exchange(a: &str, b: &str) -> (u16, u64, u64) {
    let traffic = UdpTraffic {
        from: (a, SocketAddrV4::new(A_ADDR, 0)),
        to: (b, SocketAddrV4::new(B_ADDR, UDP_PORT)),
        count: DATAGRAMS,
        size: 200,
        pause_every: 50,
        idle: Duration::from_millis(500),
    };
    let o = udp(&traffic, |sock| {
        for _ in 0..TO_CLOSED {
            sock.send_to(&[0x5au8; 200], SocketAddrV4::new(B_ADDR, CLOSED_PORT))
                .expect("send to closed port");
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    (o.port, o.sent, o.received)
}

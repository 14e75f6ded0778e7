//! `periscope observe` against the real agent (`tcx` + `sockops` → `connections`, `flow`,
//! `identity` → the `observe` exporter): two namespaces made here, known UDP datagrams and one
//! TCP connection between them; each filter returns exactly the records of that traffic,
//! compared with what the generator sent. Also: the error when no agent listens.
//!
//! Needs root and `ip`; skips otherwise, except under CI.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use periscope_testkit::netns::{in_netns, pods, udp, UdpTraffic};
use periscope_testkit::periscope::{run_periscope, start_agent, stop_agent};
use periscope_testkit::{bpf_capable, require_tools, yaml_path, TestDir};

fn observe(socket: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec![
        "observe",
        "--socket",
        socket.to_str().unwrap_or_default(),
        "-o",
        "json",
    ];
    all.extend_from_slice(args);
    let out = run_periscope(&all, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn sum(records: &[Value], field: &str) -> u64 {
    records.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum()
}

#[test]
fn observe_filters_return_exactly_the_generated_traffic() {
    const TEST: &str = "observe_filters_return_exactly_the_generated_traffic";
    if !(bpf_capable(TEST) && require_tools(TEST, &["ip"])) {
        return;
    }
    // No agent: a clear error that says how to start one.
    let out = run_periscope(
        &["observe", "--socket", "/nonexistent/observe.sock"],
        Duration::from_secs(10),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("periscope run"),
        "{stderr}"
    );

    let dir = TestDir::new("observe_agent");
    let (a, b) = pods("oba0", "10.77.1.1/24", "obb0", "10.77.1.2/24");
    let socket = dir.join("observe.sock");
    let cfg = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  sockops: {{poll_interval: 20ms}}\n  \
             tcx: {{interfaces: {{include: [oba0, obb0]}}, events: none, counters_interval: 250ms}}\n\
             processors:\n  connections: {{interval: 1s}}\n  flow: {{interval: 1s}}\n  identity: {{}}\n\
             exporters:\n  observe: {{socket: {}}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [sockops, tcx], processors: [connections, flow, identity], exporters: [observe]}}\n    \
             traces: {{receivers: [sockops], processors: [connections, identity], exporters: [observe]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            yaml_path(&socket)
        ),
    );
    let mut agent = start_agent(&cfg, "periscope (observe)");
    agent.wait_until(Duration::from_secs(60), "the receivers attached", |p| {
        let log = p.stderr();
        log.contains("sockops attached") && socket.exists()
    });
    std::thread::sleep(Duration::from_secs(2));

    // Ground truth: what the generator sent.
    let sent = udp(
        &UdpTraffic {
            from: (a.name(), SocketAddrV4::new([10, 77, 1, 1].into(), 0)),
            to: (b.name(), SocketAddrV4::new([10, 77, 1, 2].into(), 7000)),
            count: 700,
            size: 100,
            pause_every: 50,
            idle: Duration::from_secs(2),
        },
        |_| {},
    );
    assert_eq!(sent.sent, 700);
    let listener = in_netns(b.name(), || {
        TcpListener::bind("10.77.1.2:7001").expect("listen")
    });
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).expect("read");
        s.write_all(b"world").expect("write");
    });
    in_netns(a.name(), || {
        let mut c = TcpStream::connect("10.77.1.2:7001").expect("connect");
        c.write_all(b"hello").expect("write");
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).expect("read");
    });
    server.join().expect("server");

    // Until the connection's spans and the last flow points are in.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let conns = observe(&socket, &["--type", "connection", "--to-port", "7001"]);
        if conns.iter().filter(|r| r["type"] == "connection").count() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection records: {conns:?}\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(2));

    // UDP packets a sent, on its device: exactly the generator's count.
    let udp_tx = observe(
        &socket,
        &[
            "--netns",
            a.name(),
            "--interface",
            "oba0",
            "--type",
            "flow",
            "--protocol",
            "udp",
        ],
    );
    let tx: Vec<Value> = udp_tx
        .iter()
        .filter(|r| r["direction"] == "transmit")
        .cloned()
        .collect();
    eprintln!(
        "{} udp flow records from a; {} transmit",
        udp_tx.len(),
        tx.len()
    );
    assert_eq!(sum(&tx, "packets"), sent.sent, "{udp_tx:?}");
    assert!(udp_tx
        .iter()
        .all(|r| r["netns"] == a.name() && r["protocol"] == "udp"));
    // Received in b: the same count; the netns filter by inode too.
    let inode = b.inode().to_string();
    let rx = observe(
        &socket,
        &["--netns", &inode, "--type", "flow", "--protocol", "UDP"],
    );
    let rx: Vec<Value> = rx
        .into_iter()
        .filter(|r| r["direction"] == "receive")
        .collect();
    assert_eq!(sum(&rx, "packets"), sent.received);
    // The connection: one client record in a, one server record in b, both from a to b.
    for (ns, role) in [(a.name(), "client"), (b.name(), "server")] {
        let c = observe(
            &socket,
            &[
                "--type",
                "connection",
                "--netns",
                ns,
                "--from-ip",
                "10.77.1.1",
                "--to-port",
                "7001",
            ],
        );
        let spans: Vec<&Value> = c.iter().filter(|r| r["type"] == "connection").collect();
        assert_eq!(spans.len(), 1, "{ns}: {c:?}");
        assert_eq!(spans[0]["role"], role);
        assert_eq!(spans[0]["dst_ip"], "10.77.1.2");
        // sockops knows the process of the socket that connects (not of an accepted one).
        if role == "client" {
            assert_eq!(
                spans[0]["pid"].as_u64(),
                Some(u64::from(std::process::id())),
                "{}",
                spans[0]
            );
        }
    }
    let pid = std::process::id().to_string();
    let by_pid = observe(
        &socket,
        &["--type", "connection", "--pid", &pid, "--to-port", "7001"],
    );
    let by_pid: Vec<&Value> = by_pid
        .iter()
        .filter(|r| r["type"] == "connection")
        .collect();
    assert!(by_pid.iter().any(|r| r["role"] == "client"), "{by_pid:?}");
    assert!(by_pid
        .iter()
        .all(|r| r["pid"].as_u64() == Some(u64::from(std::process::id()))));
    // Filters that match nothing of this traffic.
    assert!(observe(
        &socket,
        &[
            "--netns",
            a.name(),
            "--from-ip",
            "10.77.9.9",
            "--type",
            "connection"
        ]
    )
    .is_empty());
    assert!(observe(&socket, &["--netns", a.name(), "--type", "drop"]).is_empty());
    // --last.
    assert_eq!(
        observe(&socket, &["--netns", a.name(), "--last", "2"]).len(),
        2
    );
    // Top talkers: both namespaces.
    let out = run_periscope(
        &[
            "observe",
            "--socket",
            socket.to_str().unwrap_or_default(),
            "--aggregate-by",
            "netns",
        ],
        Duration::from_secs(20),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(a.name()) && table.contains(b.name()),
        "{table}"
    );
    eprintln!("{table}");
    let out = stop_agent(agent, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .args(args)
        .output()
        .expect("run tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the test's tmux session, even when the test fails.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

/// `periscope top` in a real terminal (tmux): a namespace's packet rate within 10% of the
/// generator's, `s` and `a` change the view, `q` quits and gives the shell its screen back.
#[test]
fn top_shows_the_generators_rate_and_quits_cleanly() {
    const TEST: &str = "top_shows_the_generators_rate_and_quits_cleanly";
    if !(bpf_capable(TEST) && require_tools(TEST, &["ip", "tmux"])) {
        return;
    }
    let dir = TestDir::new("observe_top");
    let (a, b) = pods("ota0", "10.77.2.1/24", "otb0", "10.77.2.2/24");
    let socket = dir.join("observe.sock");
    let cfg = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  tcx: {{interfaces: {{include: [ota0, otb0]}}, events: none, counters_interval: 250ms}}\n\
             processors:\n  flow: {{interval: 1s}}\n\
             exporters:\n  observe: {{socket: {}}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [tcx], processors: [flow], exporters: [observe]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            yaml_path(&socket)
        ),
    );
    let mut agent = start_agent(&cfg, "periscope (top)");
    agent.wait_until(Duration::from_secs(60), "the observe socket", |_| {
        socket.exists()
    });
    std::thread::sleep(Duration::from_secs(1));

    // ~2000 datagrams/s from a to b for 10 s; the rate is what the generator measured.
    let sink = in_netns(b.name(), || {
        std::net::UdpSocket::bind("10.77.2.2:7100").expect("sink")
    });
    let (bname, aname) = (b.name().to_string(), a.name().to_string());
    let generator = std::thread::spawn(move || {
        in_netns(&aname, || {
            let s = std::net::UdpSocket::bind("10.77.2.1:0").expect("socket");
            let start = Instant::now();
            let mut sent = 0u64;
            while start.elapsed() < Duration::from_secs(10) {
                for _ in 0..20 {
                    if s.send_to(&[0u8; 64], "10.77.2.2:7100").is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            sent as f64 / start.elapsed().as_secs_f64()
        })
    });
    std::thread::sleep(Duration::from_secs(4));
    let session = Session(format!("periscope-top-{}", std::process::id()));
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session.0,
        "-x",
        "160",
        "-y",
        "30",
        "bash --norc",
    ]);
    let cmd = format!(
        "{} top --socket {} --window 3s; echo TOP-EXITED-$?",
        periscope_testkit::periscope::periscope_bin().display(),
        socket.display()
    );
    tmux(&["send-keys", "-t", &session.0, &cmd, "Enter"]);
    std::thread::sleep(Duration::from_secs(4));
    let pane = tmux(&["capture-pane", "-p", "-t", &session.0]);
    let rate = generator.join().expect("generator");
    drop(sink);
    eprintln!("generator {rate:.1} datagrams/s\n{pane}");
    let line = pane
        .lines()
        .find(|l| l.contains(a.name()))
        .unwrap_or_else(|| panic!("{} not in\n{pane}", a.name()));
    assert!(pane.lines().any(|l| l.contains(&bname)), "{pane}");
    let cols: Vec<&str> = line.split_whitespace().collect();
    let pkts = cols
        .iter()
        .position(|c| c.contains(a.name()))
        .and_then(|i| cols.get(i + 2))
        .map(|v| match v.strip_suffix('k') {
            Some(k) => k.parse::<f64>().unwrap_or(0.0) * 1e3,
            None => v.parse::<f64>().unwrap_or(0.0),
        })
        .unwrap_or(0.0);
    assert!(
        (pkts - rate).abs() <= rate * 0.10,
        "top {pkts} pkt/s, generator {rate:.1}\n{pane}"
    );
    tmux(&["send-keys", "-t", &session.0, "s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let pane = tmux(&["capture-pane", "-p", "-t", &session.0]);
    assert!(pane.contains("sort: pkts/s"), "{pane}");
    tmux(&["send-keys", "-t", &session.0, "a"]);
    std::thread::sleep(Duration::from_millis(1500));
    let pane = tmux(&["capture-pane", "-p", "-t", &session.0]);
    assert!(pane.contains("by Pod"), "{pane}");
    tmux(&["send-keys", "-t", &session.0, "q"]);
    std::thread::sleep(Duration::from_millis(1500));
    let pane = tmux(&["capture-pane", "-p", "-t", &session.0]);
    assert!(pane.contains("TOP-EXITED-0"), "{pane}");
    assert!(
        !pane.contains("top talkers"),
        "the screen is not restored:\n{pane}"
    );
    let out = stop_agent(agent, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// CPU seconds (user + system) process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// One UDP datagram from each of `ports` (in the sender's namespace) to `to`: that many
/// distinct flows. Returns how many were sent.
fn one_datagram_per_port(from: &str, ports: std::ops::Range<u16>, to: SocketAddrV4) -> u64 {
    in_netns(from, || {
        let mut sent = 0;
        for port in ports {
            let s = std::net::UdpSocket::bind(SocketAddrV4::new([10, 77, 3, 1].into(), port))
                .expect("bind");
            if s.send_to(&[7u8; 64], to).is_ok() {
                sent += 1;
            }
            // Paced so that the receiver's socket buffer never overflows.
            if port % 50 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        sent
    })
}

/// A client that connects to the observe socket and never reads: it loses records and is told
/// how many when it reads again, and the agent keeps pace. The same number of distinct flows is
/// sent twice, first with no client, then with the stalled one (each phase's flows end, idle,
/// before the next begins, so both have as many live series): both phases are counted
/// exactly (the file exporter, against the generator's and the receiver's counts) and arrive
/// within one flow interval and harvest of the traffic's end (by the points' export times),
/// the observe exporter counts what the stalled client lost as dropped and nothing else in the
/// pipeline drops, and the agent's CPU time stays about the same. Prints the CPU time and the
/// delivery delay of each phase, and their ratios.
#[test]
fn a_stalled_client_loses_records_and_the_agent_keeps_pace() {
    const TEST: &str = "a_stalled_client_loses_records_and_the_agent_keeps_pace";
    if !(bpf_capable(TEST) && require_tools(TEST, &["ip"])) {
        return;
    }
    use periscope_testkit::otlp::metrics::{read_metrics, sum_series};
    const FLOWS: u16 = 2000;
    let dir = TestDir::new("observe_stalled");
    let (a, b) = pods("osa0", "10.77.3.1/24", "osb0", "10.77.3.2/24");
    let socket = dir.join("observe.sock");
    let metrics = dir.join("metrics.jsonl");
    let cfg = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  tcx: {{interfaces: {{include: [osa0, osb0]}}, events: none, counters_interval: 250ms, flows: {{enabled: true, idle_timeout: 1s}}}}\n\
             processors:\n  flow: {{interval: 1s, flow_attributes: true, cardinality_limit: 50000}}\n\
             exporters:\n  observe: {{socket: {}, client_queue: 128, ring_size: 1024}}\n  \
             file/metrics: {{path: {}, flush_interval: 100ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [tcx], processors: [flow], exporters: [observe, file/metrics]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: true, interval: 1s, exporters: [file/metrics]}}}}\n",
            yaml_path(&socket),
            yaml_path(&metrics)
        ),
    );
    let mut agent = start_agent(&cfg, "periscope (stalled observe client)");
    agent.wait_until(Duration::from_secs(60), "tcx attached", |_| {
        socket.exists() && metrics.exists()
    });
    std::thread::sleep(Duration::from_secs(2));
    let sink = in_netns(b.name(), || {
        std::net::UdpSocket::bind("10.77.3.2:7200").expect("sink")
    });
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let to = SocketAddrV4::new([10, 77, 3, 2].into(), 7200);

    // Transmitted packets of flows from `ports` on a's device, as the agent last reported them.
    let counted = |ports: std::ops::Range<u16>| -> i64 {
        sum_series(&read_metrics(&metrics), "periscope.network.packets")
            .iter()
            .filter(|s| {
                s.attr("network.interface.name") == Some("osa0")
                    && s.attr("network.io.direction") == Some("transmit")
                    && s.attr("network.transport") == Some("udp")
                    && s.attr("source.port")
                        .and_then(|p| p.parse::<u16>().ok())
                        .is_some_and(|p| ports.contains(&p))
            })
            .map(|s| s.value)
            .sum()
    };
    // The receiver counts on its own thread, so that its socket buffer never overflows.
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let (received, done) = (received.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if sink.recv(&mut buf).is_ok() {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let receiver_count = || received.load(std::sync::atomic::Ordering::Relaxed);
    // One phase: its flows, then until the agent has counted them all. Returns (sent, CPU
    // seconds the agent used, delivery delay after the last datagram).
    let phase = |ports: std::ops::Range<u16>, agent: &periscope_testkit::process::Background| {
        let cpu0 = cpu_seconds(agent.pid());
        let before = receiver_count();
        let sent = one_datagram_per_port(a.name(), ports.clone(), to);
        let end = Instant::now();
        let end_ns = periscope_pipeline::telemetry::now_ns();
        while receiver_count() - before < sent && end.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(receiver_count() - before, sent, "the receiver's own count");
        loop {
            let got = counted(ports.clone());
            if got == sent as i64 {
                break;
            }
            assert!(
                end.elapsed() < Duration::from_secs(15),
                "{got} of {sent} packets counted 15 s after the traffic\n{}",
                agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        // When the agent exported the last of them: the export time of the first point at which
        // every flow of the phase had its packet, after the last datagram (the test's own
        // polling is left out).
        let requests = read_metrics(&metrics);
        let mut first: std::collections::BTreeMap<String, u64> = Default::default();
        for p in periscope_testkit::otlp::metrics::points(&requests) {
            let a = &p.attributes;
            let value = match p.data {
                periscope_testkit::otlp::metrics::PointData::Sum { point, .. } => match point.value
                {
                    Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(v),
                    ) => v,
                    _ => 0,
                },
                _ => 0,
            };
            let port = a.get("source.port").and_then(|p| p.parse::<u16>().ok());
            if p.metric.name == "periscope.network.packets"
                && a.get("network.interface.name").map(String::as_str) == Some("osa0")
                && a.get("network.io.direction").map(String::as_str) == Some("transmit")
                && port.is_some_and(|p| ports.contains(&p))
                && value >= 1
            {
                let t = first.entry(format!("{port:?}")).or_insert(u64::MAX);
                *t = (*t).min(p.time());
            }
        }
        let last = first.values().copied().max().unwrap_or(0);
        let took = Duration::from_nanos(last.saturating_sub(end_ns));
        // The phase's flows go idle and end, so that both phases have as many live series.
        std::thread::sleep(Duration::from_secs(4));
        (sent, cpu_seconds(agent.pid()) - cpu0, took)
    };

    // Neighbours resolved first: datagrams queued behind an ARP request may be dropped.
    one_datagram_per_port(a.name(), 19_999..20_000, to);
    std::thread::sleep(Duration::from_millis(500));
    let warm = receiver_count();
    assert_eq!(warm, 1, "the warm-up datagram");
    let (sent_a, cpu_a, delay_a) = phase(20_000..20_000 + FLOWS, &agent);
    // The stalled client: asks for the live stream, never reads.
    let mut stalled = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
    writeln!(stalled, "{}", serde_json::json!({"follow": true})).expect("request");
    std::thread::sleep(Duration::from_secs(2));
    let (sent_b, cpu_b, delay_b) = phase(30_000..30_000 + FLOWS, &agent);
    assert_eq!((sent_a, sent_b), (u64::from(FLOWS), u64::from(FLOWS)));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    receiver.join().expect("receiver");
    eprintln!(
        "without a stalled client: {cpu_a:.2} s CPU, counted {:.0} ms after the traffic; \
         with one: {cpu_b:.2} s CPU ({:.2}×), {:.0} ms ({:.2}×)",
        delay_a.as_secs_f64() * 1e3,
        cpu_b / cpu_a.max(0.01),
        delay_b.as_secs_f64() * 1e3,
        delay_b.as_secs_f64() / delay_a.as_secs_f64().max(0.001)
    );

    // The stalled client, reading at last: live records, then how many it lost.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut lines = std::io::BufReader::new(stalled);
    let mut line = String::new();
    let (mut records, mut lost) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lost == 0 && Instant::now() < deadline {
        line.clear();
        if std::io::BufRead::read_line(&mut lines, &mut line).unwrap_or(0) == 0 {
            break;
        }
        let r: Value = serde_json::from_str(&line).expect("json");
        match r["type"].as_str() {
            Some("lost") => lost = r["lost"].as_u64().unwrap_or(0),
            _ => records += 1,
        }
    }
    assert!(lost > 0, "no lost notice after {records} records");
    // Self-telemetry: the observe exporter counted the loss as dropped; nothing else dropped.
    std::thread::sleep(Duration::from_millis(1500));
    let dropped = sum_series(&read_metrics(&metrics), "periscope.component.dropped");
    let by = |id: &str| -> i64 {
        dropped
            .iter()
            .filter(|s| s.attr("periscope.component.id") == Some(id))
            .map(|s| s.value)
            .sum()
    };
    assert!(
        by("observe") >= lost as i64,
        "observe dropped {}",
        by("observe")
    );
    let others: Vec<String> = dropped
        .iter()
        .filter(|s| s.value > 0 && s.attr("periscope.component.id") != Some("observe"))
        .map(|s| format!("{:?}={}", s.attr("periscope.component.id"), s.value))
        .collect();
    assert!(others.is_empty(), "other components dropped: {others:?}");
    eprintln!("stalled client: {records} records read, {lost} lost (told)");
    // Keeping pace: the pipeline did not wait for the client (a blocked export would never
    // have delivered phase two at all): each phase is out within one flow interval (1 s) plus
    // one harvest (250 ms) of its end, give or take a second for a busy machine (where in the
    // interval a phase ends decides the rest); the agent's CPU did not grow with the client (a
    // spinning writer would show).
    for d in [delay_a, delay_b] {
        assert!(d < Duration::from_millis(2250), "{delay_a:?} / {delay_b:?}");
    }
    assert!(cpu_b < 2.0 * cpu_a + 0.3, "{cpu_a:.2} s / {cpu_b:.2} s");
    let out = stop_agent(agent, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

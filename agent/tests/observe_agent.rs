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

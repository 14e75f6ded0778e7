//! The `sk_msg`, `cgroup_skb` and `tcp_udp` receivers, built and run in this process against
//! traffic of processes the test starts in namespaces and cgroups it makes:
//!
//! - sk_msg: 1,000 messages of known sizes from a client to a server (both in a test cgroup,
//!   in two pod namespaces) are reported one by one with their exact sizes and the sender's
//!   pid; the sk_skb side reports every received byte; the server receives every byte
//!   unchanged (its digest equals the client's).
//! - cgroup_skb (attached at the cgroup v2 root): a UDP client moved into its own cgroup sends
//!   datagrams that a server echoes; that cgroup's egress and ingress packet and byte counts
//!   equal the generator's (IP-level lengths: payload + 28).
//! - tcp_udp with `mode: fentry` fails with a clear error where the kernel refuses fentry (as
//!   on this machine), and works where it does not.
//!
//! Needs root, `ip` and `python3`; skips otherwise, except under CI.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use periscope_pipeline::model::{
    CgroupCounters, Direction, Event, SocketEvent, SocketEventKind, SocketHook, Transport,
};
use periscope_receivers::cgroup_skb::CgroupSkbConfig;
use periscope_receivers::sk_msg::SkMsgConfig;
use periscope_receivers::socket::find_cgroup2;
use periscope_receivers::tcp_udp::{Mechanism, TcpUdpConfig, TcpUdpMode};
use periscope_testkit::cgroup::TestCgroup;
use periscope_testkit::netns::pods;
use periscope_testkit::process::{run_ok, Background};
use periscope_testkit::receiver::Running;
use periscope_testkit::{require_root, require_root_and_tools, test_name, Netns, TestDir};

/// A new test cgroup under the cgroup v2 mount.
fn test_cgroup() -> TestCgroup {
    TestCgroup::new(&find_cgroup2().expect("a cgroup v2 mount"))
}

/// `python3 SCRIPT ARGS...` in `cgroup` and inside `ns`.
fn python(cgroup: &TestCgroup, ns: &Netns, script: &Path, args: &[String]) -> Command {
    let mut cmd = cgroup.command(ns, "python3");
    cmd.arg(script).args(args);
    cmd
}

const TOOLS: &[&str] = &["ip", "python3"];

fn two_pods() -> (Netns, Netns) {
    pods("ma0", "10.213.0.1/24", "mb0", "10.213.0.2/24")
}

const MSG_SERVER: &str = r#"
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
h, n = hashlib.sha256(), 0
while True:
    d = c.recv(65536)
    if not d:
        break
    h.update(d)
    n += len(d)
print(n, h.hexdigest(), flush=True)
"#;

const MSG_CLIENT: &str = r#"
import hashlib, os, random, socket, sys, time
rng = random.Random(int(sys.argv[3]))
sizes = [rng.randint(1, 3000) for _ in range(int(sys.argv[4]))]
s = socket.socket()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.connect((sys.argv[1], int(sys.argv[2])))
h = hashlib.sha256()
for i, n in enumerate(sizes):
    data = bytes((i + j) % 251 for j in range(n))
    h.update(data)
    s.sendall(data)
s.close()
print(os.getpid())
print(" ".join(map(str, sizes)))
print(sum(sizes), h.hexdigest())
"#;

#[test]
fn sk_msg_reports_every_message_with_its_size_and_sender() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    const MESSAGES: usize = 1000;
    let dir = TestDir::new("sk_msg");
    let (a, b) = two_pods();
    let cgroup = test_cgroup();
    let config = SkMsgConfig {
        cgroup: cgroup.path().to_path_buf(),
        poll_interval: periscope_pipeline::config::PositiveDuration::from_millis(10),
        ..SkMsgConfig::default()
    };
    let running = Running::start(
        Box::new(config.build_receiver("sk_msg").expect("build sk_msg")),
        1 << 16,
    );

    let server_py = dir.write("server.py", MSG_SERVER);
    let client_py = dir.write("client.py", MSG_CLIENT);
    let server = Background::serve(
        &mut python(
            &cgroup,
            &b,
            &server_py,
            &["10.213.0.2".into(), "9400".into()],
        ),
        "message server",
    );
    let out = run_ok(
        &mut python(
            &cgroup,
            &a,
            &client_py,
            &[
                "10.213.0.2".into(),
                "9400".into(),
                "7".into(),
                MESSAGES.to_string(),
            ],
        ),
        Duration::from_secs(60),
    );
    let server_out = server.wait(Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    let client_pid: u32 = lines
        .next()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("client pid");
    let sizes: Vec<u32> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|s| s.parse().expect("size"))
        .collect();
    let client_total = lines.next().unwrap_or_default().to_string();
    let server_total = String::from_utf8_lossy(&server_out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        server_total, client_total,
        "the server did not receive the bytes unchanged"
    );
    assert_eq!(sizes.len(), MESSAGES);

    std::thread::sleep(Duration::from_millis(100));
    let counters = running.counters().clone();
    let events = running.stop();
    let socket: Vec<SocketEvent> = events
        .iter()
        .filter_map(|e| match e {
            Event::Socket(s) => Some(*s),
            _ => None,
        })
        .collect();
    let sent: Vec<&SocketEvent> = socket
        .iter()
        .filter(|s| s.hook == SocketHook::SkMsg && s.kind == SocketEventKind::Send)
        .filter(|s| s.remote_port == 9400)
        .collect();
    let sent_sizes: Vec<u32> = sent.iter().map(|s| s.size).collect();
    assert_eq!(
        sent_sizes, sizes,
        "sk_msg message sizes differ from the client's"
    );
    assert!(
        sent.iter().all(|s| s.process.pid == client_pid),
        "a message without the sender's pid {client_pid}: {:?}",
        sent.iter().find(|s| s.process.pid != client_pid)
    );
    let received: u64 = socket
        .iter()
        .filter(|s| s.hook == SocketHook::SkSkb && s.kind == SocketEventKind::Receive)
        .filter(|s| s.local_port == 9400)
        .map(|s| u64::from(s.size))
        .sum();
    let total: u64 = sizes.iter().map(|s| u64::from(*s)).sum();
    assert_eq!(received, total, "sk_skb received bytes");
    assert_eq!(counters.values().dropped, 0, "records lost");
    eprintln!(
        "sk_msg: {} messages, {total} bytes, pid {client_pid}; sk_skb: {received} bytes",
        sent.len()
    );
}

const ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, peer = s.recvfrom(65536)
    s.sendto(d, peer)
"#;

const ECHO_CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
n, size = int(sys.argv[3]), int(sys.argv[4])
got = 0
for i in range(n):
    s.sendto(bytes(size), (sys.argv[1], int(sys.argv[2])))
    try:
        s.recvfrom(65536)
        got += 1
    except socket.timeout:
        pass
print(n, got)
"#;

#[test]
fn cgroup_skb_counts_a_cgroups_traffic_exactly() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    const DATAGRAMS: u64 = 200;
    const SIZE: u64 = 300;
    let dir = TestDir::new("cgroup_skb");
    let (a, b) = two_pods();
    let client_cgroup = test_cgroup();
    let server_cgroup = test_cgroup();
    let config = CgroupSkbConfig {
        counters_interval: periscope_pipeline::config::PositiveDuration::from_millis(100),
        ..CgroupSkbConfig::default()
    };
    let running = Running::start(
        Box::new(
            config
                .build_receiver("cgroup_skb")
                .expect("build cgroup_skb"),
        ),
        1 << 16,
    );
    let server_py = dir.write("echo_server.py", ECHO_SERVER);
    let client_py = dir.write("echo_client.py", ECHO_CLIENT);
    let server = Background::serve(
        &mut python(
            &server_cgroup,
            &b,
            &server_py,
            &["10.213.0.2".into(), "9401".into()],
        ),
        "echo server",
    );
    let out = run_ok(
        &mut python(
            &client_cgroup,
            &a,
            &client_py,
            &[
                "10.213.0.2".into(),
                "9401".into(),
                DATAGRAMS.to_string(),
                SIZE.to_string(),
            ],
        ),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let counts: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().expect("count"))
        .collect();
    let (sent, echoed) = (counts[0], counts[1]);
    std::thread::sleep(Duration::from_millis(300));
    let events = running.stop();
    drop(server);
    let latest = |cgroup: u64, dir: Direction| -> (u64, u64) {
        events
            .iter()
            .rev()
            .filter_map(|e| match e {
                Event::CgroupCounters(c) => Some(*c),
                _ => None,
            })
            .find(|c: &CgroupCounters| {
                c.cgroup_id == cgroup && c.direction == dir && c.transport == Transport::Udp
            })
            .map_or((0, 0), |c| (c.packets, c.bytes))
    };
    let ip_len = SIZE + 28;
    let id = client_cgroup.id();
    assert_eq!(
        latest(id, Direction::Egress),
        (sent, sent * ip_len),
        "client cgroup egress"
    );
    assert_eq!(
        latest(id, Direction::Ingress),
        (echoed, echoed * ip_len),
        "client cgroup ingress"
    );
    let sid = server_cgroup.id();
    assert_eq!(
        latest(sid, Direction::Ingress),
        (sent, sent * ip_len),
        "server cgroup ingress"
    );
    assert_eq!(
        latest(sid, Direction::Egress),
        (echoed, echoed * ip_len),
        "server cgroup egress"
    );
    eprintln!("cgroup_skb: client cgroup {id}: {sent} out, {echoed} in, {ip_len} bytes each");
}

#[test]
fn tcp_udp_fentry_mode_says_clearly_when_the_kernel_refuses_it() {
    let test = test_name!();
    if !require_root(test) {
        return;
    }
    let auto = TcpUdpConfig::default()
        .build_receiver("tcp_udp")
        .expect("mode: auto builds");
    let config = TcpUdpConfig {
        mode: TcpUdpMode::Fentry,
        ..TcpUdpConfig::default()
    };
    match config.build_receiver("tcp_udp") {
        Ok((_, mechanism)) => {
            assert_eq!(mechanism, Mechanism::Fentry);
            assert_eq!(
                auto.1,
                Mechanism::Fentry,
                "auto must prefer fentry where it loads"
            );
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("mode: fentry")
                    && msg.contains("refused")
                    && msg.contains("mode: auto"),
                "unclear error: {msg}"
            );
            assert_eq!(auto.1, Mechanism::Tracepoint, "auto must fall back");
            eprintln!("mode: fentry → {msg}");
        }
    }
}

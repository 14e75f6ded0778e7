//! The agent as the DaemonSet runs it: under exactly the capabilities the manifest adds (read
//! from the rendered DaemonSet, not repeated here), on the ConfigMap's config adapted to a test
//! host (Prometheus on 127.0.0.1, OTLP to a local sink, the host's cgroup v2 mount, only the
//! test's devices attached), it counts a pod namespace's traffic exactly; with any one of those
//! capabilities fewer it refuses to start, naming it.

use std::collections::BTreeMap;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use periscope_testkit::http::http_get;
use periscope_testkit::netns::{in_netns, pods, udp, UdpTraffic};
use periscope_testkit::otlp::{free_port, Sink};
use periscope_testkit::periscope::periscope_bin;
use periscope_testkit::{
    bpf_capable, output_with_timeout, require_root_and_tools, test_name, Background, Serial,
    TestDir,
};

use crate::render::render;

static SERIAL: Serial = Serial::new();

/// `setpriv` as the container runtime sets a root container up: these capabilities bounding,
/// permitted and effective, nothing else.
fn under(caps: &[String]) -> Command {
    let list: Vec<String> = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let set = format!(
        "-all{}{}",
        if list.is_empty() { "" } else { "," },
        list.join(",")
    );
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--inh-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg("--")
        .arg(periscope_bin())
        .env("NO_COLOR", "1");
    cmd
}

/// `config` with `from` replaced by `to`, which must be there (or the adaptation is stale).
fn replace(config: &str, from: &str, to: &str) -> String {
    assert!(
        config.contains(from),
        "the ConfigMap's config no longer has `{from}`:\n{config}"
    );
    config.replacen(from, to, 1)
}

/// The cgroup v2 mount of this host (the DaemonSet mounts the node's at /host/sys/fs/cgroup).
fn cgroup2() -> String {
    std::fs::read_to_string("/proc/self/mounts")
        .expect("mounts")
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&"cgroup2")).then(|| f[1].to_string())
        })
        .expect("a cgroup v2 mount")
}

/// Sends `n` broadcast frames of a local experimental ethertype (0x88b5: no IP, so counted as
/// `other`) out of the device `ifindex` of the calling thread's namespace.
fn send_frames(ifindex: u32, n: usize) {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd of ours.
    let _fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: plain data, zeroed then filled.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&0x88b5u16.to_be_bytes());
    frame.resize(60, 0);
    for _ in 0..n {
        // SAFETY: `frame` and `addr` outlive the call; lengths are theirs.
        let rc = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert!(rc >= 0, "sendto: {}", std::io::Error::last_os_error());
    }
}

/// A series the test expects, by its labels (besides the pod's namespace).
struct Series {
    what: String,
    metric: &'static str,
    labels: Vec<(&'static str, &'static str)>,
}

/// Sums of the Prometheus samples of `metric` whose labels include `labels`.
fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        if name != metric {
            continue;
        }
        let Some((set, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let has = |k: &str, v: &str| set.contains(&format!("{k}=\"{v}\""));
        if labels.iter().all(|(k, v)| has(k, v)) {
            total += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    total as u64
}

#[test]
fn the_daemonsets_capabilities_count_a_pods_traffic_and_one_fewer_is_named() {
    let test = test_name!();
    let Some(_serial) = SERIAL.lock_if(
        require_root_and_tools(test, &["setpriv", "ip", "ping", "kubectl"]) && bpf_capable(test),
    ) else {
        return;
    };
    let Some(base) = render(test, "deploy/kubernetes") else {
        return;
    };
    let caps = base.capabilities();
    assert!(!caps.is_empty());

    let prom = free_port();
    let sink = Sink::start(free_port());
    let mut config = base.agent_config();
    config = replace(
        &config,
        "${env:K8S_NODE_IP}:9464",
        &format!("127.0.0.1:{prom}"),
    );
    config = replace(
        &config,
        "http://periscope-gateway.periscope.svc:4317",
        &format!("http://127.0.0.1:{}", sink.port),
    );
    config = replace(&config, "/host/sys/fs/cgroup", &cgroup2());
    // Every namespace is watched (entered, read through /proc), but only the test's devices
    // get programs: other tests on this host keep theirs to themselves.
    config = replace(
        &config,
        "    namespaces: all\n",
        "    namespaces: all\n    interfaces: {include: [k8sp*, k8sn*]}\n",
    );
    let dir = TestDir::new(test);
    let path = dir.write("agent.yaml", &config);

    // With one capability fewer: refused at start, naming it and what it is for.
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let out = output_with_timeout(
            under(&fewer).args(["run", "-c"]).arg(&path),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "runs without {missing}:\n{stderr}");
        assert!(
            stderr.contains(&format!("{missing} (to ")),
            "without {missing} the error does not name it:\n{stderr}"
        );
        eprintln!(
            "without {missing}: {}",
            stderr.lines().last().unwrap_or_default()
        );
    }

    // A pod and the node it talks to, as a CNI makes them (the pod's namespace bind-mounted
    // under /run/netns).
    let (pod, node) = pods("k8sp0", "10.231.0.2/24", "k8sn0", "10.231.0.1/24");
    let mut agent = Background::spawn(under(&caps).args(["run", "-c"]).arg(&path), "agent");
    agent.wait_until(Duration::from_secs(60), "the Prometheus endpoint", |_| {
        TcpStream::connect(("127.0.0.1", prom)).is_ok()
    });
    // Attaching (to every namespace of this host first) takes a while on a busy machine: send
    // frames of no IP protocol (counted as `other`) until they are counted, so that the
    // measured traffic below is all seen.
    let deadline = Instant::now() + Duration::from_secs(90);
    let other = |body: &str| {
        sample(
            body,
            "periscope_network_packets_total",
            &[
                ("network_interface_name", "k8sp0"),
                ("network_transport", "other"),
            ],
        )
    };
    let ifindex = pod.ifindex("k8sp0");
    while other(&http_get(prom, "/metrics", None).1) == 0 {
        assert!(
            Instant::now() < deadline,
            "the pod's device was never counted:\n{}",
            agent.stderr()
        );
        assert!(!agent.has_exited(), "the agent exited:\n{}", agent.stderr());
        in_netns(pod.name(), || send_frames(ifindex, 5));
        std::thread::sleep(Duration::from_millis(200));
    }

    let ping = pod
        .exec("ping")
        .args(["-c", "7", "-i", "0.2", "-W", "2", "10.231.0.1"])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&ping.stdout).to_string();
    let counts: Vec<u64> = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .map(|l| {
            l.split(',')
                .filter_map(|p| p.split_whitespace().next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (echoes, replies) = (counts[0], counts[1]);
    assert!(replies > 0, "ping got no replies:\n{text}");
    let sent = udp(
        &UdpTraffic {
            from: (pod.name(), SocketAddrV4::new([10, 231, 0, 2].into(), 0)),
            to: (node.name(), SocketAddrV4::new([10, 231, 0, 1].into(), 9999)),
            count: 23,
            size: 100,
            pause_every: 8,
            idle: Duration::from_secs(1),
        },
        |_| {},
    )
    .sent;
    let connections = 3;
    let listener = in_netns(node.name(), || {
        TcpListener::bind("10.231.0.1:8080").expect("bind")
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..connections {
                let _ = listener.accept().expect("accept");
            }
        });
        in_netns(pod.name(), || {
            for _ in 0..connections {
                drop(TcpStream::connect("10.231.0.1:8080").expect("connect"));
            }
        });
    });

    let inode = pod.inode().to_string();
    let pkts = |dir: &'static str, transport: &'static str| Series {
        what: format!("k8sp0 {dir} {transport}"),
        metric: "periscope_network_packets_total",
        labels: vec![
            ("network_interface_name", "k8sp0"),
            ("network_io_direction", dir),
            ("network_transport", transport),
        ],
    };
    let expected: Vec<(Series, u64)> = vec![
        (pkts("transmit", "icmp"), echoes),
        (pkts("receive", "icmp"), replies),
        (pkts("transmit", "udp"), sent),
        (
            Series {
                what: "client connections opened".to_string(),
                metric: "periscope_tcp_connections_total",
                labels: vec![
                    ("periscope_tcp_event", "opened"),
                    ("periscope_connection_role", "client"),
                ],
            },
            connections,
        ),
    ];
    let read = || -> BTreeMap<String, u64> {
        let (_, body) = http_get(prom, "/metrics", None);
        expected
            .iter()
            .map(|(s, _)| {
                let mut labels: Vec<(&str, &str)> = s.labels.clone();
                labels.push(("periscope_netns_inode", &inode));
                (s.what.clone(), sample(&body, s.metric, &labels))
            })
            .collect()
    };
    let want: BTreeMap<String, u64> = expected.iter().map(|(s, n)| (s.what.clone(), *n)).collect();
    // The config's intervals: flow every 10 s, connections every 10 s.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut got = read();
    while got != want && Instant::now() < deadline && !agent.has_exited() {
        std::thread::sleep(Duration::from_millis(500));
        got = read();
    }
    let otlp_requests = sink.received.lock().map(|r| r.metric_requests).unwrap_or(0);
    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(30));
    eprintln!("capabilities: {caps:?}");
    for (what, n) in &want {
        eprintln!(
            "{what:<28} generator {n:>4}  periscope {:>4}",
            got.get(what).copied().unwrap_or(0)
        );
    }
    assert_eq!(
        got,
        want,
        "agent log:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        otlp_requests > 0,
        "nothing reached the OTLP sink (the gateway's stand-in)"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

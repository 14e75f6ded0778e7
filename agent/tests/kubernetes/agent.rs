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
use periscope_testkit::kube_api::FakeKubeApi;
use periscope_testkit::netns::{in_netns, pods, udp, UdpTraffic};
use periscope_testkit::otlp::{free_port, Sink};
use periscope_testkit::periscope::periscope_bin;
use periscope_testkit::{
    bpf_capable, output_with_timeout, require_root_and_tools, test_name, Background, Netns, Serial,
    TestDir,
};

use crate::render::{render, Rendered};

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

/// The rendered `dir`'s capabilities and its ConfigMap's config adapted to this host:
/// Prometheus on 127.0.0.1:`prom`, OTLP to the local sink, this host's cgroup v2 mount, and
/// programs on the devices matching `include` only (every namespace is still watched —
/// entered, read through /proc — but other tests on this host keep their devices to
/// themselves).
fn adapted(
    dir: &Rendered,
    namespaces: &str,
    include: &str,
    prom: u16,
    sink: &Sink,
    kubeconfig: &std::path::Path,
) -> String {
    let mut config = dir.agent_config();
    // The Kubernetes source against a fake API server (it knows no pod: names stay uids).
    config = replace(
        &config,
        "node_name: \"${env:K8S_NODE_NAME}\"",
        &format!(
            "node_name: test-node\n      kubeconfig: {}",
            kubeconfig.display()
        ),
    );
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
    let line = format!("    namespaces: {namespaces}");
    replace(
        &config,
        &line,
        &format!("{line}\n    interfaces: {{include: [{include}]}}"),
    )
}

/// With any one of `caps` fewer, `periscope run -c config` refuses to start and names it,
/// with what it is for.
fn one_fewer_is_named(caps: &[String], config: &std::path::Path) {
    for missing in caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let out = output_with_timeout(
            under(&fewer).args(["run", "-c"]).arg(config),
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
}

/// Starts the agent under `caps`, and waits until frames sent out of `device` (index
/// `ifindex` in `netns`) are counted: attaching (to every namespace of this host first) takes
/// a while on a busy machine, and the traffic measured after this must all be seen. The frames
/// carry no IP protocol (counted as `other`).
fn start_and_attach(
    caps: &[String],
    config: &std::path::Path,
    prom: u16,
    netns: &str,
    device: &str,
    ifindex: u32,
) -> Background {
    let mut agent = Background::spawn(under(caps).args(["run", "-c"]).arg(config), "agent");
    agent.wait_until(Duration::from_secs(60), "the Prometheus endpoint", |_| {
        TcpStream::connect(("127.0.0.1", prom)).is_ok()
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let other = |body: &str| {
        sample(
            body,
            "periscope_network_packets_total",
            &[
                ("network_interface_name", device),
                ("network_transport", "other"),
            ],
        )
    };
    while other(&http_get(prom, "/metrics", None).1) == 0 {
        assert!(
            Instant::now() < deadline,
            "{device} was never counted:\n{}",
            agent.stderr()
        );
        assert!(!agent.has_exited(), "the agent exited:\n{}", agent.stderr());
        in_netns(netns, || send_frames(ifindex, 5));
        std::thread::sleep(Duration::from_millis(200));
    }
    agent
}

/// Polls `/metrics` until every expected series has its generator's count (the config's
/// intervals are 10 s), stops the agent, prints expected against counted, and asserts.
fn assert_counted(
    mut agent: Background,
    prom: u16,
    sink: &Sink,
    inode: Option<&str>,
    expected: &[(Series, u64)],
) {
    let read = || -> BTreeMap<String, u64> {
        let (_, body) = http_get(prom, "/metrics", None);
        expected
            .iter()
            .map(|(s, _)| {
                let mut labels: Vec<(&str, &str)> = s.labels.clone();
                if let Some(inode) = inode {
                    labels.push(("periscope_netns_inode", inode));
                }
                (s.what.clone(), sample(&body, s.metric, &labels))
            })
            .collect()
    };
    let want: BTreeMap<String, u64> = expected.iter().map(|(s, n)| (s.what.clone(), *n)).collect();
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut got = read();
    while got != want && Instant::now() < deadline && !agent.has_exited() {
        std::thread::sleep(Duration::from_millis(500));
        got = read();
    }
    let otlp_requests = sink.received.lock().map(|r| r.metric_requests).unwrap_or(0);
    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(30));
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

fn packets(device: &'static str, dir: &'static str, transport: &'static str) -> Series {
    Series {
        what: format!("{device} {dir} {transport}"),
        metric: "periscope_network_packets_total",
        labels: vec![
            ("network_interface_name", device),
            ("network_io_direction", dir),
            ("network_transport", transport),
        ],
    }
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
    eprintln!("capabilities: {caps:?}");
    let prom = free_port();
    let sink = Sink::start(free_port());
    let dir = TestDir::new(test);
    let api = FakeKubeApi::start();
    let kubeconfig = api.kubeconfig(dir.path());
    let path = dir.write(
        "agent.yaml",
        adapted(&base, "all", "k8sp*, k8sn*", prom, &sink, &kubeconfig),
    );
    one_fewer_is_named(&caps, &path);

    // A pod and the node it talks to, as a CNI makes them (the pod's namespace bind-mounted
    // under /run/netns).
    let (pod, node) = pods("k8sp0", "10.231.0.2/24", "k8sn0", "10.231.0.1/24");
    let agent = start_and_attach(
        &caps,
        &path,
        prom,
        pod.name(),
        "k8sp0",
        pod.ifindex("k8sp0"),
    );

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
    assert!(
        counts.len() >= 2 && counts[1] > 0,
        "ping got no replies:\n{text}"
    );
    let (echoes, replies) = (counts[0], counts[1]);
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
    let expected = vec![
        (packets("k8sp0", "transmit", "icmp"), echoes),
        (packets("k8sp0", "receive", "icmp"), replies),
        (packets("k8sp0", "transmit", "udp"), sent),
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
    assert_counted(agent, prom, &sink, Some(&inode), &expected);
}

#[test]
fn the_host_only_overlays_capabilities_count_the_nodes_traffic_and_one_fewer_is_named() {
    let test = test_name!();
    let Some(_serial) = SERIAL
        .lock_if(require_root_and_tools(test, &["setpriv", "ip", "kubectl"]) && bpf_capable(test))
    else {
        return;
    };
    let Some(host_only) = render(test, "deploy/kubernetes/overlays/host-only") else {
        return;
    };
    let caps = host_only.capabilities();
    eprintln!("capabilities: {caps:?}");
    let prom = free_port();
    let sink = Sink::start(free_port());
    let dir = TestDir::new(test);
    let api = FakeKubeApi::start();
    let kubeconfig = api.kubeconfig(dir.path());
    let config = adapted(&host_only, "[host]", "k8sh*", prom, &sink, &kubeconfig);
    let path = dir.write("agent.yaml", config);
    one_fewer_is_named(&caps, &path);

    // A device of the node's own namespace, and a peer namespace that sends to it. The node
    // end has no address (10.x stays in namespaces the test makes): the peer's datagrams go
    // to a made-up MAC, so the node drops them as "other host" right after the hooks.
    let peer = Netns::new();
    peer.disable_ipv6();
    let dev = "k8sh0";
    // A crashed run's, if any.
    let _ = Command::new("ip")
        .args(["link", "del", dev])
        .stderr(std::process::Stdio::null())
        .status();
    let _host_dev = HostDevice(dev.to_string());
    peer.ip(&[
        "link", "add", "k8sq0", "type", "veth", "peer", "name", dev, "netns", "1",
    ]);
    let status = Command::new("ip")
        .args(["link", "set", dev, "up"])
        .status()
        .expect("ip");
    assert!(status.success());
    peer.ip(&["addr", "add", "10.232.0.2/24", "dev", "k8sq0"]);
    peer.ip(&["link", "set", "k8sq0", "up"]);
    peer.ip(&[
        "neigh",
        "add",
        "10.232.0.1",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "k8sq0",
    ]);
    // The frames that show the attachment go out of the peer's end, into the node's device.
    let agent = start_and_attach(&caps, &path, prom, peer.name(), dev, peer.ifindex("k8sq0"));
    let datagrams = 17;
    in_netns(peer.name(), || {
        let s = std::net::UdpSocket::bind("10.232.0.2:0").expect("bind");
        for _ in 0..datagrams {
            s.send_to(&[0u8; 64], "10.232.0.1:9").expect("send");
        }
    });
    let expected = vec![(packets(dev, "receive", "udp"), datagrams)];
    assert_counted(agent, prom, &sink, None, &expected);
}

/// A device of the host's namespace, deleted when dropped.
struct HostDevice(String);

impl Drop for HostDevice {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

//! Where traffic is, end to end: the real `periscope` binary (`tcx` → `flow` → file) on a
//! node-like topology this test builds, and the direction relative to the workload, the
//! local/forwarded flag, the names of node-side devices and the per-workload totals it reports,
//! against the generator's own counts.
//!
//! ```text
//!   pod a (eth0 10.61.1.2/24) ─ wd-va ┐
//!                                     ├ wd-br0 10.61.1.1/24 ── node stack ── wd-vc 10.61.2.1/32 ─ pod c (eth0 10.61.2.2/32)
//!   pod b (eth0 10.61.1.3/24) ─ wd-vb ┘        (node namespace, forwarding on; c is routed: a /32 route, no bridge)
//! ```
//!
//! UDP flows, each with its own count and size (the generator counts what it sent and what
//! arrived): a → b (bridged), a → the node's bridge address (local to the node), a → c (routed
//! through the node), the node → c (from the node's own stack). Every `udp` series must carry
//! the workload direction, locality and role the test expects for its device, with exactly the
//! generator's packets; node-side veths must carry their pod's namespace name and device; and
//! `periscope.workload.packets` must count each pod's datagrams once (a → b: once out of a,
//! once into b, although four devices saw each).
//!
//! Needs root and `ip`; skips with a reason otherwise, except under CI.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use periscope_testkit::kube_api::{pod as kube_pod, FakeKubeApi, Resource};
use periscope_testkit::netns::{udp as send_udp, UdpTraffic};
use periscope_testkit::otlp::{read_metrics, sum_series, Series};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::Background;
use periscope_testkit::{in_netns, require_root_and_tools, yaml_path, Netns, TestDir};

const TOOLS: &[&str] = &["ip"];
const PORT: u16 = 9610;
/// Ethernet (14) + IPv4 (20) + UDP (8).
const L2_OVERHEAD: i64 = 42;
const BR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 61, 1, 1);
const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 61, 1, 2);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 61, 1, 3);
const VC_ADDR: Ipv4Addr = Ipv4Addr::new(10, 61, 2, 1);
const C_ADDR: Ipv4Addr = Ipv4Addr::new(10, 61, 2, 2);

/// Namespaces `wd-<pid>-<role>`, deleted on drop; those of test processes that are gone are
/// removed first.
fn namespace(role: &str) -> Netns {
    sweep_stale();
    let ns = Netns::create(&format!("wd-{}-{role}", std::process::id()));
    ns.disable_ipv6();
    ns
}

fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("wd-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            drop(Netns::adopt(&name));
        }
    }
}

/// The node and its three pods.
struct Node {
    node: Netns,
    a: Netns,
    b: Netns,
    c: Netns,
}

impl Node {
    fn new() -> Node {
        let node = namespace("node");
        let (a, b, c) = (namespace("a"), namespace("b"), namespace("c"));
        node.sysctl("net/ipv4/ip_forward", "1");
        node.ip(&["link", "add", "wd-br0", "type", "bridge"]);
        node.ip(&["addr", "add", "10.61.1.1/24", "dev", "wd-br0"]);
        node.ip(&["link", "set", "wd-br0", "up"]);
        // Bridged pods: the veth made in the node, its pod end moved in at once (as CNI does).
        for (pod, host_if, cidr) in [(&a, "wd-va", "10.61.1.2/24"), (&b, "wd-vb", "10.61.1.3/24")] {
            node.ip(&[
                "link",
                "add",
                host_if,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.name(),
            ]);
            node.ip(&["link", "set", host_if, "master", "wd-br0"]);
            node.ip(&["link", "set", host_if, "up"]);
            pod.ip(&["addr", "add", cidr, "dev", "eth0"]);
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&["route", "add", "default", "via", "10.61.1.1"]);
        }
        // The routed pod: made inside the pod, the node end moved out (the other CNI way).
        c.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "wd-vc",
            "netns",
            node.name(),
        ]);
        c.ip(&["addr", "add", "10.61.2.2/32", "dev", "eth0"]);
        c.ip(&["link", "set", "eth0", "up"]);
        c.ip(&["route", "add", "10.61.2.1/32", "dev", "eth0"]);
        c.ip(&["route", "add", "default", "via", "10.61.2.1"]);
        node.ip(&["addr", "add", "10.61.2.1/32", "dev", "wd-vc"]);
        node.ip(&["link", "set", "wd-vc", "up"]);
        node.ip(&["route", "add", "10.61.2.2/32", "dev", "wd-vc"]);
        Node { node, a, b, c }
    }
}

/// Sends `count` datagrams of `size` bytes; returns what the generator sent (all of which
/// must have arrived).
fn udp(from: (&Netns, Ipv4Addr), to: (&Netns, Ipv4Addr), count: u64, size: usize) -> i64 {
    let t = UdpTraffic {
        from: (from.0.name(), SocketAddrV4::new(from.1, 0)),
        to: (to.0.name(), SocketAddrV4::new(to.1, PORT)),
        count,
        size,
        pause_every: 50,
        idle: Duration::from_millis(300),
    };
    let o = send_udp(&t, |_| {});
    assert_eq!(
        (o.sent, o.received),
        (count, count),
        "{} → {}: the generator lost datagrams",
        from.1,
        to.1
    );
    count as i64
}

/// A TCP SYN to a closed port (transport `tcp`: never mixed with the UDP counts).
fn probe(from: &Netns, dst: Ipv4Addr) {
    in_netns(from.name(), || {
        let _ = TcpStream::connect_timeout(
            &SocketAddrV4::new(dst, 9).into(),
            Duration::from_millis(200),
        );
    });
}

fn series(out: &Path, metric: &str) -> Vec<Series> {
    sum_series(&read_metrics(out), metric)
}

/// What the test expects of one device's `udp` series in one direction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    netns: String,
    interface: String,
    io: String,
    workload: String,
    locality: String,
    serves: String,
    peer_netns: String,
    peer_interface: String,
}

fn row(s: &Series) -> Row {
    let a = |k: &str| s.attr(k).unwrap_or("-").to_string();
    Row {
        netns: a("periscope.netns.name"),
        interface: a("network.interface.name"),
        io: a("network.io.direction"),
        workload: a("periscope.workload.direction"),
        locality: a("periscope.traffic.locality"),
        serves: a("periscope.interface.serves"),
        peer_netns: a("periscope.peer.netns.name"),
        peer_interface: a("periscope.peer.interface.name"),
    }
}

/// `udp` series of the namespaces `names`, summed by [`Row`]: (packets, bytes).
fn udp_rows(out: &Path, names: &[&str]) -> BTreeMap<Row, (i64, i64)> {
    let mut m: BTreeMap<Row, (i64, i64)> = BTreeMap::new();
    let bytes: BTreeMap<Row, i64> = series(out, "periscope.network.bytes")
        .iter()
        .filter(|s| s.attr("network.transport") == Some("udp"))
        .fold(BTreeMap::new(), |mut m, s| {
            *m.entry(row(s)).or_default() += s.value;
            m
        });
    for s in series(out, "periscope.network.packets") {
        if s.attr("network.transport") != Some("udp")
            || !names.contains(&s.attr("periscope.netns.name").unwrap_or(""))
        {
            continue;
        }
        let r = row(&s);
        let b = bytes.get(&r).copied().unwrap_or(0);
        let e = m.entry(r).or_default();
        e.0 += s.value;
        e.1 = b;
    }
    m
}

/// `periscope.workload.packets` of `udp`, by (namespace name, workload direction, locality).
fn workload_rows(out: &Path, names: &[&str]) -> BTreeMap<(String, String, String), i64> {
    let mut m = BTreeMap::new();
    for s in series(out, "periscope.workload.packets") {
        let netns = s.attr("periscope.netns.name").unwrap_or("-");
        if s.attr("network.transport") != Some("udp") || !names.contains(&netns) {
            continue;
        }
        let key = (
            netns.to_string(),
            s.attr("periscope.workload.direction")
                .unwrap_or("-")
                .to_string(),
            s.attr("periscope.traffic.locality")
                .unwrap_or("-")
                .to_string(),
        );
        *m.entry(key).or_default() += s.value;
    }
    m
}

fn table<K: std::fmt::Debug + Ord, V: std::fmt::Debug + PartialEq>(
    want: &BTreeMap<K, V>,
    got: &BTreeMap<K, V>,
) -> String {
    let mut keys: Vec<&K> = want.keys().chain(got.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut t = String::new();
    for k in keys {
        let (w, g) = (want.get(k), got.get(k));
        let mark = if w == g { "  " } else { "!!" };
        t.push_str(&format!("{mark} {k:?}\n     expected {w:?}, got {g:?}\n"));
    }
    t
}

/// Waits until the agent names every node-side device after its pod (probes make traffic on
/// each path meanwhile).
fn wait_named(agent: &mut Background, out: &Path, n: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = [
        ("wd-va", n.a.name()),
        ("wd-vb", n.b.name()),
        ("wd-vc", n.c.name()),
    ];
    loop {
        probe(&n.a, B_ADDR);
        probe(&n.a, BR_ADDR);
        probe(&n.a, C_ADDR);
        probe(&n.node, C_ADDR);
        let seen = series(out, "periscope.network.packets");
        let named = want.iter().all(|(dev, pod)| {
            seen.iter().any(|s| {
                s.attr("network.interface.name") == Some(dev)
                    && s.attr("periscope.peer.netns.name") == Some(pod)
                    && s.attr("periscope.peer.interface.name") == Some("eth0")
                    && s.attr("periscope.interface.serves") == Some("peer")
            })
        });
        let pods_seen = [&n.a, &n.b, &n.c].iter().all(|p| {
            seen.iter().any(|s| {
                s.attr("periscope.netns.name") == Some(p.name())
                    && s.attr("network.interface.name") == Some("eth0")
                    && s.attr("periscope.peer.netns.name") == Some(n.node.name())
            })
        });
        if named && pods_seen {
            return;
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "node-side devices not named after their pods in time; seen:\n{}\n--- stderr ---\n{}",
            seen.iter()
                .filter(|s| s.attr("network.transport") == Some("tcp"))
                .map(|s| format!("{:?}", s.attributes))
                .collect::<Vec<_>>()
                .join("\n"),
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn workload_direction_locality_and_pod_names_on_a_node() {
    if !require_root_and_tools("workload_direction_locality_and_pod_names_on_a_node", TOOLS) {
        return;
    }
    let dir = TestDir::new("workload");
    let n = Node::new();
    let (node, a, b, c) = (n.node.name(), n.a.name(), n.b.name(), n.c.name());
    let out = dir.join("workload.jsonl");
    let yaml = format!(
        "receivers:\n  tcx:\n    namespaces: [{node}, {a}, {b}, {c}]\n    events: none\n    \
         counters_interval: 100ms\n\
         processors:\n  flow: {{interval: 200ms}}\n\
         exporters:\n  file: {{path: {}, flush_interval: 100ms}}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [tcx], processors: [flow], exporters: [file]}}\n  \
         telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
        yaml_path(&out)
    );
    let config = dir.write("workload.yaml", yaml);
    let mut agent = start_agent(&config, "periscope run (tcx, workload)");
    wait_named(&mut agent, &out, &n);

    // Counts and sizes differ per path, so that no path can stand in for another.
    let ab = udp((&n.a, A_ADDR), (&n.b, B_ADDR), 300, 100);
    let a_node = udp((&n.a, A_ADDR), (&n.node, BR_ADDR), 120, 200);
    let ac = udp((&n.a, A_ADDR), (&n.c, C_ADDR), 210, 300);
    let node_c = udp((&n.node, VC_ADDR), (&n.c, C_ADDR), 70, 400);
    let l2 = |count: i64, size: i64| count * (size + L2_OVERHEAD);

    // Per device and direction: (workload direction, locality, role, peer) → (packets, bytes).
    let r =
        |ns: &str, dev: &str, io: &str, wl: &str, loc: &str, serves: &str, peer: (&str, &str)| {
            Row {
                netns: ns.into(),
                interface: dev.into(),
                io: io.into(),
                workload: wl.into(),
                locality: loc.into(),
                serves: serves.into(),
                peer_netns: peer.0.into(),
                peer_interface: peer.1.into(),
            }
        };
    let mut want: BTreeMap<Row, (i64, i64)> = BTreeMap::new();
    let mut add = |row: Row, packets: i64, bytes: i64| {
        let e = want.entry(row).or_default();
        e.0 += packets;
        e.1 += bytes;
    };
    // Pod a's eth0: everything it sends is its own (local), out of the workload.
    let a_eth0 = r(
        a,
        "eth0",
        "transmit",
        "egress",
        "local",
        "own",
        (node, "wd-va"),
    );
    add(a_eth0.clone(), ab, l2(ab, 100));
    add(a_eth0.clone(), a_node, l2(a_node, 200));
    add(a_eth0, ac, l2(ac, 300));
    // wd-va receives what pod a sends: pod a's egress; to the node's address local, the rest
    // bridged or routed through the node.
    add(
        r(
            node,
            "wd-va",
            "receive",
            "egress",
            "forwarded",
            "peer",
            (a, "eth0"),
        ),
        ab + ac,
        l2(ab, 100) + l2(ac, 300),
    );
    add(
        r(
            node,
            "wd-va",
            "receive",
            "egress",
            "local",
            "peer",
            (a, "eth0"),
        ),
        a_node,
        l2(a_node, 200),
    );
    // wd-vb transmits what is bridged to pod b: its ingress, forwarded by the node.
    add(
        r(
            node,
            "wd-vb",
            "transmit",
            "ingress",
            "forwarded",
            "peer",
            (b, "eth0"),
        ),
        ab,
        l2(ab, 100),
    );
    add(
        r(
            b,
            "eth0",
            "receive",
            "ingress",
            "local",
            "own",
            (node, "wd-vb"),
        ),
        ab,
        l2(ab, 100),
    );
    // The bridge device: what goes up into the node's stack (for it, or routed on to c).
    add(
        r(
            node,
            "wd-br0",
            "receive",
            "ingress",
            "local",
            "own",
            ("-", "-"),
        ),
        a_node,
        l2(a_node, 200),
    );
    add(
        r(
            node,
            "wd-br0",
            "receive",
            "ingress",
            "forwarded",
            "own",
            ("-", "-"),
        ),
        ac,
        l2(ac, 300),
    );
    // The routed pod's node-side end: a's datagrams forwarded, the node's own local.
    add(
        r(
            node,
            "wd-vc",
            "transmit",
            "ingress",
            "forwarded",
            "peer",
            (c, "eth0"),
        ),
        ac,
        l2(ac, 300),
    );
    add(
        r(
            node,
            "wd-vc",
            "transmit",
            "ingress",
            "local",
            "peer",
            (c, "eth0"),
        ),
        node_c,
        l2(node_c, 400),
    );
    let c_eth0 = r(
        c,
        "eth0",
        "receive",
        "ingress",
        "local",
        "own",
        (node, "wd-vc"),
    );
    add(c_eth0.clone(), ac, l2(ac, 300));
    add(c_eth0, node_c, l2(node_c, 400));

    // Per workload, counted once.
    let w = |ns: &str, dir: &str, loc: &str| (ns.to_string(), dir.to_string(), loc.to_string());
    let want_workload: BTreeMap<(String, String, String), i64> = [
        (w(a, "egress", "local"), ab + a_node + ac),
        (w(b, "ingress", "local"), ab),
        (w(c, "ingress", "local"), ac + node_c),
        // The node's own devices: its bridge (the node's traffic to the routed pod crosses
        // only c's node-side end, which counts for c).
        (w(node, "ingress", "local"), a_node),
        (w(node, "ingress", "forwarded"), ac),
    ]
    .into_iter()
    .collect();

    let names = [node, a, b, c];
    let deadline = Instant::now() + Duration::from_secs(15);
    let (got, got_workload) = loop {
        let got = udp_rows(&out, &names);
        let got_workload = workload_rows(&out, &names);
        if (got == want && got_workload == want_workload) || Instant::now() > deadline {
            break (got, got_workload);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = stop_agent(agent, Duration::from_secs(15));
    eprintln!(
        "udp series per device (packets, bytes):\n{}",
        table(&want, &got)
    );
    eprintln!(
        "periscope.workload.packets (udp):\n{}",
        table(&want_workload, &got_workload)
    );
    assert_eq!(
        got,
        want,
        "device series differ (see the table above)\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(got_workload, want_workload, "per-workload totals differ");
    // The pod-to-pod datagrams: on four devices' series (a's eth0, wd-va, wd-vb, b's eth0),
    // once out of a and once into b in the workload totals (asserted above, exactly).
    drop(n);
}

/// Pods made the way CNI makes them: the namespace (a bind mount) and its veth first, the
/// container's process only after the agent has found the namespace. The node-side veth's
/// series must carry the container (`periscope.peer.container.id`, `.name` from Docker's state)
/// and the pod (`periscope.peer.k8s.pod.uid`, its name and namespace from a fake Kubernetes
/// API) from its first point, with exactly the generator's datagrams; so must the pod's own
/// device (`container.id`): nothing of its namespace was named before. A third pod sends
/// before its container starts: its series were named without a container, and keep that
/// (identity names every point: naming them later would split their counts in two series).
#[test]
fn a_node_side_veth_names_the_container_that_came_after_its_namespace() {
    use periscope_receivers::socket::find_cgroup2;
    use periscope_testkit::cgroup::{command_in, container_id, pod_uid, Cgroups};
    let test = "a_node_side_veth_names_the_container_that_came_after_its_namespace";
    if !require_root_and_tools(test, &["ip", "sleep"]) {
        return;
    }
    let Some(cg2) = find_cgroup2() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: no cgroup v2 mount"
        );
        periscope_testkit::skip(test, "no cgroup v2 mount");
        return;
    };
    let dir = TestDir::new("workload_late");
    let pid = std::process::id();
    let (docker_id, cri_id, uid_hex, late_id) = (
        container_id(1),
        container_id(2),
        container_id(3),
        container_id(4),
    );
    let pod_uid = pod_uid(&uid_hex);
    // Docker's state for the containers' names.
    let docker_root = dir.join("docker");
    for (id, config) in [
        (
            &docker_id,
            r#"{"Name":"/wk-checkout","Config":{"Image":"shop/checkout:2.1"}}"#,
        ),
        (
            &late_id,
            r#"{"Name":"/wk-late","Config":{"Image":"shop/late:1"}}"#,
        ),
    ] {
        let state = docker_root.join("containers").join(id);
        std::fs::create_dir_all(&state).expect("mkdir docker state");
        std::fs::write(state.join("config.v2.json"), config).expect("docker state");
    }

    // The API knows pod b (by the uid in its cgroup path) before its container starts.
    let api = FakeKubeApi::start();
    let pod_name = format!("checkout-7d9f-{}", &uid_hex[32..37]);
    api.apply(
        Resource::Pods,
        kube_pod(
            "shop",
            &pod_name,
            &pod_uid,
            "node-e2e",
            Some("10.62.2.2"),
            Some(("ReplicaSet", "checkout-7d9f")),
            &[&cri_id],
        ),
    );
    let kubeconfig = api.kubeconfig(dir.path());

    let out = dir.join("late.jsonl");
    let (va, vb, vc, pa, pb, pc) = (
        format!("wv{pid}a"),
        format!("wv{pid}b"),
        format!("wv{pid}c"),
        format!("wp{pid}a"),
        format!("wp{pid}b"),
        format!("wp{pid}c"),
    );
    let yaml = format!(
        "receivers:\n  tcx:\n    namespaces: all\n    interfaces: {{include: [\"wv{pid}*\", \"wp{pid}*\"]}}\n    \
         events: none\n    counters_interval: 100ms\n\
         processors:\n  flow: {{interval: 500ms}}\n  identity: {{container: {{docker_root: {}}}, \
         kubernetes: {{enabled: true, node_name: node-e2e, kubeconfig: {}}}}}\n\
         exporters:\n  file: {{path: {}, flush_interval: 100ms}}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [tcx], processors: [flow, identity], exporters: [file]}}\n  \
         telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
        yaml_path(&docker_root),
        yaml_path(&kubeconfig),
        yaml_path(&out)
    );
    let config = dir.write("late.yaml", yaml);
    let mut agent = start_agent(&config, "periscope run (tcx, all namespaces)");
    // Attached to what is there already before the pods come.
    std::thread::sleep(Duration::from_secs(2));

    let node = namespace("knode");
    let (a, b, c) = (namespace("ka"), namespace("kb"), namespace("kc"));
    for (pod, host_if, pod_if, net) in [(&a, &va, &pa, 1), (&b, &vb, &pb, 2), (&c, &vc, &pc, 3)] {
        node.ip(&[
            "link",
            "add",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            pod_if,
            "netns",
            pod.name(),
        ]);
        node.ip(&["addr", "add", &format!("10.62.{net}.1/24"), "dev", host_if]);
        node.ip(&["link", "set", host_if, "up"]);
        pod.ip(&["addr", "add", &format!("10.62.{net}.2/24"), "dev", pod_if]);
        pod.ip(&["link", "set", pod_if, "up"]);
    }
    // The agent finds the namespaces (bind mounts) with nobody in them. Pod c sends before
    // its container starts: its series are named (without a container) before the agent
    // learns whose namespace it is, and must keep their attributes after.
    let early_c = udp(
        (&c, Ipv4Addr::new(10, 62, 3, 2)),
        (&node, Ipv4Addr::new(10, 62, 3, 1)),
        15,
        100,
    );
    std::thread::sleep(Duration::from_secs(2));

    // The containers: a Docker one in pod a, a pod's CRI container in pod b.
    let mut tree = Cgroups::new();
    let parent = tree.mkdir(cg2.join(format!("periscope-workload-{pid}.slice")));
    let docker_cgroup = tree.mkdir(parent.join(format!("docker-{docker_id}.scope")));
    let pod_slice = tree.mkdir(parent.join(format!(
        "kubepods-besteffort-pod{}.slice",
        pod_uid.replace('-', "_")
    )));
    let cri_cgroup = tree.mkdir(pod_slice.join(format!("cri-containerd-{cri_id}.scope")));
    let late_cgroup = tree.mkdir(parent.join(format!("docker-{late_id}.scope")));
    let _containers: Vec<Background> =
        [(&docker_cgroup, &a), (&cri_cgroup, &b), (&late_cgroup, &c)]
            .into_iter()
            .map(|(cg, ns)| Background::spawn(command_in(cg, ns, "sleep").arg("300"), "container"))
            .collect();
    std::thread::sleep(Duration::from_millis(500));

    let sent_a = udp(
        (&a, Ipv4Addr::new(10, 62, 1, 2)),
        (&node, Ipv4Addr::new(10, 62, 1, 1)),
        40,
        100,
    );
    let sent_b = udp(
        (&b, Ipv4Addr::new(10, 62, 2, 2)),
        (&node, Ipv4Addr::new(10, 62, 2, 1)),
        25,
        100,
    );
    let sent_c = early_c
        + udp(
            (&c, Ipv4Addr::new(10, 62, 3, 2)),
            (&node, Ipv4Addr::new(10, 62, 3, 1)),
            20,
            100,
        );

    // Per (device, container id, container name, pod uid, pod name, its namespace, own
    // container id): udp packets.
    type Key = (String, String, String, String, String, String, String);
    // `-`: not there.
    let key = |dev: &str, attrs: [&str; 6]| -> Key {
        let [a, b, c, d, e, f] = attrs.map(str::to_string);
        (dev.to_string(), a, b, c, d, e, f)
    };
    let none = ["-"; 6];
    let want: BTreeMap<Key, i64> = [
        (
            key(&va, [&docker_id, "wk-checkout", "-", "-", "-", "-"]),
            sent_a,
        ),
        (
            key(&vb, [&cri_id, "-", &pod_uid, &pod_name, "shop", "-"]),
            sent_b,
        ),
        // Nothing of pods a and b was named before their containers started: their own
        // series carry their containers from the first point.
        (key(&pa, ["-", "-", "-", "-", "-", &docker_id]), sent_a),
        (key(&pb, ["-", "-", "-", "-", "-", &cri_id]), sent_b),
        // Pod c's were: one series each, without the container, before and after.
        (key(&vc, none), sent_c),
        (key(&pc, none), sent_c),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut got: BTreeMap<Key, i64> = BTreeMap::new();
        for s in series(&out, "periscope.network.packets") {
            let dev = s.attr("network.interface.name").unwrap_or("-");
            if s.attr("network.transport") != Some("udp")
                || ![&va, &vb, &vc, &pa, &pb, &pc].contains(&&dev.to_string())
            {
                continue;
            }
            let a = |k: &str| s.attr(k).unwrap_or("-").to_string();
            let key = (
                dev.to_string(),
                a("periscope.peer.container.id"),
                a("periscope.peer.container.name"),
                a("periscope.peer.k8s.pod.uid"),
                a("periscope.peer.k8s.pod.name"),
                a("periscope.peer.k8s.namespace.name"),
                a("container.id"),
            );
            *got.entry(key).or_default() += s.value;
        }
        if got == want {
            break;
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "{test}: udp packets by (device, peer container id, name, pod uid, name, namespace, own container):\n{}\n--- stderr ---\n{}",
            table(&want, &got),
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("{test}:\n{}", table(&want, &want));
    stop_agent(agent, Duration::from_secs(10));
}

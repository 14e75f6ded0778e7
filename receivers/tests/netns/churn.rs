//! Devices that come and go the ways CNI plugins and container runtimes make them: the `tcx`
//! receiver, driven by its own namespace watcher, must attach to each pod's device wherever
//! and however it appears, and count exactly what the pod sent, under the device's real name
//! and the pod namespace's cookie.
//!
//! Each pattern is one test. Namespaces are listed in the receiver's scope by name before
//! they exist (`namespaces: [names]`), so that the receiver observes only this test's
//! namespaces and devices can be called `eth0` as in a pod. Devices of the "node" namespace
//! are `cq*`; addresses are 10.203.x.x, inside these namespaces only.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::Arc;

use periscope_pipeline::component::ReceiverConfig;
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::devices::{DeviceTable, NamespaceTable};
use periscope_pipeline::model::{DeviceCounters, DeviceRef, Direction, Transport};
use periscope_pipeline::telemetry::ComponentCounters;
use std::os::unix::fs::MetadataExt;

use periscope_receivers::netdev::{AllNamespaces, InterfacesConfig, NamespacesConfig};
use periscope_receivers::tcx::TcxConfig;
use periscope_testkit::context;
use periscope_testkit::netns::{udp, UdpTraffic};
use periscope_testkit::receiver::Running;

use super::*;

/// The `tcx` receiver with its own watcher, counters every 100 ms.
pub(crate) struct Agent {
    running: Running,
    pub(crate) devices: DeviceTable,
    pub(crate) namespaces: NamespaceTable,
}

impl Agent {
    pub(crate) fn start(namespaces: NamespacesConfig, include: &[&str]) -> Agent {
        let ctx = context("tcx/churn");
        let config = TcxConfig {
            namespaces,
            interfaces: InterfacesConfig {
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: Vec::new(),
            },
            counters_interval: ConfigDuration::from_millis(100),
            ..TcxConfig::default()
        };
        let receiver = config.build(&ctx).expect("build tcx");
        Agent {
            running: Running::start(receiver, 4096),
            devices: ctx.devices,
            namespaces: ctx.namespaces,
        }
    }

    /// Listing these namespaces (by name) only.
    pub(crate) fn listed(names: &[&str]) -> Agent {
        Agent::start(
            NamespacesConfig::Listed(names.iter().map(|s| s.to_string()).collect()),
            &[],
        )
    }

    #[allow(dead_code)]
    pub(crate) fn counters(&self) -> &Arc<ComponentCounters> {
        self.running.counters()
    }

    /// Waits until `dev` of `ns` is attached under the name `name`; returns its key and how
    /// long it took.
    pub(crate) fn wait_attached(&self, d: DeviceRef, name: &str) -> Duration {
        let t = Instant::now();
        let deadline = t + Duration::from_secs(5);
        loop {
            let now = self.devices.get(&d);
            if self.devices.is_alive(&d) && now.as_ref().is_some_and(|i| i.name == name) {
                return t.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{name} ({d:?}) not attached within 5 s (device table: {now:?})"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops; returns every event it sent.
    pub(crate) fn stop_events(self) -> Vec<periscope_pipeline::model::Event> {
        self.running.stop()
    }

    /// Stops; returns the last counters per (device, direction, transport) and the device
    /// table.
    pub(crate) fn stop(self) -> Counted {
        let devices = self.devices.clone();
        let mut m = HashMap::new();
        for e in self.running.stop() {
            if let periscope_pipeline::model::Event::DeviceCounters(c) = e {
                m.insert((c.device, c.direction, c.transport), c);
            }
        }
        Counted(m, devices)
    }
}

/// Final counters of a run.
pub(crate) struct Counted(
    pub(crate) HashMap<(DeviceRef, Direction, Transport), DeviceCounters>,
    /// The receiver's device table, after it stopped.
    pub(crate) DeviceTable,
);

impl Counted {
    pub(crate) fn udp(&self, d: DeviceRef, dir: Direction) -> u64 {
        self.0
            .get(&(d, dir, Transport::Udp))
            .map_or(0, |c| c.packets)
    }
}

/// The key of device `dev` in `ns` as the receiver reports it (inode and cookie).
pub(crate) fn device_ref(ns: &Netns, dev: &str) -> DeviceRef {
    DeviceRef {
        netns: NetnsId {
            inode: ns.inode() as u32,
            cookie: ns.cookie(),
        },
        ifindex: ns.ifindex(dev),
    }
}

/// A "node" namespace and pods wired to it, IPv6 off (no stray packets).
pub(crate) fn fresh(name: &str) -> Netns {
    let ns = Netns::create(name);
    ns.disable_ipv6();
    ns
}

/// Addresses `10.203.<i>.1` (node end) and `.2` (pod end), up; resolves the neighbours
/// with one ping (ICMP: not counted as UDP).
pub(crate) fn wire(node: &Netns, node_if: &str, pod: &Netns, pod_if: &str, i: u8) {
    node.ip(&["addr", "add", &format!("10.203.{i}.1/24"), "dev", node_if]);
    node.ip(&["link", "set", node_if, "up"]);
    pod.ip(&["addr", "add", &format!("10.203.{i}.2/24"), "dev", pod_if]);
    pod.ip(&["link", "set", pod_if, "up"]);
    run_ok(
        pod.exec("ping")
            .args(["-c", "1", "-W", "2", &format!("10.203.{i}.1")]),
        Duration::from_secs(10),
    );
}

/// `count` datagrams from the pod to the node end; returns how many the sender sent (all of
/// them arrived, checked).
pub(crate) fn send(node: &Netns, pod: &Netns, i: u8, count: u64) -> u64 {
    let out = udp(
        &UdpTraffic {
            from: (pod.name(), SocketAddrV4::new([10, 203, i, 2].into(), 0)),
            to: (node.name(), SocketAddrV4::new([10, 203, i, 1].into(), 7000)),
            count,
            size: 100,
            pause_every: 32,
            idle: Duration::from_millis(500),
        },
        |_| {},
    );
    assert_eq!(out.received, out.sent, "datagrams lost on the way: {out:?}");
    out.sent
}

/// A receiver listing a node and a pod namespace by name, started before both are made (so
/// that they are found as they appear), and the two fresh namespaces.
fn listed_node_and_pod() -> (Agent, Netns, Netns) {
    let (node_name, pod_name) = (Netns::unique_name(), Netns::unique_name());
    let agent = Agent::listed(&[&node_name, &pod_name]);
    (agent, fresh(&node_name), fresh(&pod_name))
}

/// Once the pod's `eth0` and the node's `node_if` are attached under those names: wires them
/// (subnet `i`), sends `count` datagrams from the pod, stops and checks both ends counted them.
fn attached_wired_counted(
    agent: Agent,
    node: &Netns,
    node_if: &str,
    pod: &Netns,
    i: u8,
    count: u64,
) {
    let pod_ref = device_ref(pod, "eth0");
    let node_ref = device_ref(node, node_if);
    agent.wait_attached(pod_ref, "eth0");
    agent.wait_attached(node_ref, node_if);
    wire(node, node_if, pod, "eth0", i);
    let sent = send(node, pod, i, count);
    let counted = agent.stop();
    check(&counted, (pod_ref, "eth0"), (node_ref, node_if), sent);
}

/// Checks the pod's device counted exactly `sent` datagrams out, and the node end as many in,
/// under their names and the pods' cookies.
fn check(counted: &Counted, pod: (DeviceRef, &str), node: (DeviceRef, &str), sent: u64) {
    assert_eq!(
        counted.udp(pod.0, Direction::Egress),
        sent,
        "UDP out of the pod's {} ({:?})",
        pod.1,
        pod.0
    );
    assert_eq!(
        counted.udp(node.0, Direction::Ingress),
        sent,
        "UDP into the node's {} ({:?})",
        node.1,
        node.0
    );
    for (d, name) in [pod, node] {
        let info = counted.1.get(&d).expect("named");
        assert_eq!(info.name, name, "{d:?}");
    }
}

/// `ip link add a type veth peer name b; ip link set b netns X` in the node, at once after X
/// was made: the peer is seen (and attached) in the node first, then moves. Ten times, to
/// catch the race.
#[test]
fn veth_made_in_the_node_and_moved_into_a_new_pod() {
    let _serial = serial_root!();
    const PODS: u8 = 10;
    let node_name = Netns::unique_name();
    let pod_names: Vec<String> = (0..PODS).map(|_| Netns::unique_name()).collect();
    let mut listed: Vec<&str> = vec![&node_name];
    listed.extend(pod_names.iter().map(String::as_str));
    let agent = Agent::listed(&listed);
    let node = fresh(&node_name);
    let mut done = Vec::new();
    let mut latencies = Vec::new();
    for (i, name) in pod_names.iter().enumerate() {
        let pod = fresh(name);
        let host_if = format!("cqa{i}");
        node.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
        ]);
        node.ip(&["link", "set", "eth0", "netns", name]);
        let pod_ref = device_ref(&pod, "eth0");
        latencies.push(agent.wait_attached(pod_ref, "eth0"));
        let known = agent
            .namespaces
            .get(&pod_ref.netns)
            .expect("namespace registered");
        assert_eq!(known.name.as_deref(), Some(name.as_str()));
        let node_ref = device_ref(&node, &host_if);
        agent.wait_attached(node_ref, &host_if);
        wire(&node, &host_if, &pod, "eth0", i as u8);
        let sent = send(&node, &pod, i as u8, 200 + i as u64);
        done.push((pod, pod_ref, node_ref, host_if, sent));
    }
    let (p50, p99) = percentiles(latencies);
    eprintln!(
        "veth moved into a pod: attached in the pod {p50:?} (p50), {p99:?} (p99) after the move"
    );
    let counted = agent.stop();
    for (_, pod_ref, node_ref, host_if, sent) in &done {
        check(&counted, (*pod_ref, "eth0"), (*node_ref, host_if), *sent);
    }
}

/// The CNI bridge plugin's way: the veth is made inside the pod, the host end moved out to
/// the node, the pod end renamed to `eth0` after.
#[test]
fn veth_made_in_the_pod_host_end_moved_out_pod_end_renamed() {
    let _serial = serial_root!();
    let (agent, node, pod) = listed_node_and_pod();
    pod.ip(&[
        "link", "add", "cqtmp", "type", "veth", "peer", "name", "cqh",
    ]);
    pod.ip(&["link", "set", "cqh", "netns", node.name()]);
    pod.ip(&["link", "set", "cqtmp", "name", "eth0"]);
    attached_wired_counted(agent, &node, "cqh", &pod, 20, 300);
}

/// `ip link add A type veth peer name eth0 netns POD`: the pod end is born in the pod.
#[test]
fn veth_peer_created_directly_in_the_pod() {
    let _serial = serial_root!();
    let (agent, node, pod) = listed_node_and_pod();
    node.ip(&[
        "link",
        "add",
        "cqn",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ]);
    attached_wired_counted(agent, &node, "cqn", &pod, 21, 250);
}

/// A macvlan made on a parent in the node, moved into the pod and renamed `eth0` there.
/// (ipvlan and dummy are not built into this kernel and there is no modprobe: macvlan only.)
#[test]
fn macvlan_on_a_node_parent_moved_into_the_pod() {
    let _serial = serial_root!();
    let (agent, node, pod) = listed_node_and_pod();
    // cqp (addressed) — cqq (the macvlan's parent), both in the node.
    node.ip(&["link", "add", "cqp", "type", "veth", "peer", "name", "cqq"]);
    node.ip(&["link", "set", "cqq", "up"]);
    node.ip(&[
        "link", "add", "cqm", "link", "cqq", "type", "macvlan", "mode", "bridge",
    ]);
    node.ip(&["link", "set", "cqm", "netns", pod.name()]);
    pod.ip(&["link", "set", "cqm", "name", "eth0"]);
    attached_wired_counted(agent, &node, "cqp", &pod, 22, 150);
}

/// A device renamed after it was attached: the device table follows, and its counts (before
/// and after) are one series under the new name.
#[test]
fn a_rename_after_attach_is_followed() {
    let _serial = serial_root!();
    let (agent, node, pod) = listed_node_and_pod();
    node.ip(&[
        "link",
        "add",
        "cqr",
        "type",
        "veth",
        "peer",
        "name",
        "cqold",
        "netns",
        pod.name(),
    ]);
    let pod_ref = device_ref(&pod, "cqold");
    let node_ref = device_ref(&node, "cqr");
    agent.wait_attached(pod_ref, "cqold");
    wire(&node, "cqr", &pod, "cqold", 23);
    let before = send(&node, &pod, 23, 120);
    pod.ip(&["link", "set", "cqold", "down"]);
    pod.ip(&["link", "set", "cqold", "name", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    agent.wait_attached(pod_ref, "eth0");
    assert_eq!(
        pod.ifindex("eth0"),
        pod_ref.ifindex,
        "a rename keeps the ifindex"
    );
    // Up again: the neighbour may need resolving again.
    run_ok(
        pod.exec("ping").args(["-c", "1", "-W", "2", "10.203.23.1"]),
        Duration::from_secs(10),
    );
    let after = send(&node, &pod, 23, 80);
    let counted = agent.stop();
    check(
        &counted,
        (pod_ref, "eth0"),
        (node_ref, "cqr"),
        before + after,
    );
}

/// The pattern of the issue, in the host itself: `ip netns add X; ip link add a type veth peer
/// name b; ip link set b netns X`, with the receiver observing every namespace (only devices
/// `cq*`, so that nothing of the host or of other tests is attached). The peer is often
/// attached in the host an instant before it moves (or that attempt fails because it moved):
/// either way it must end up attached, and counting, in X. Ten times.
#[test]
fn veth_made_in_the_host_and_moved_into_a_new_namespace() {
    let _serial = serial_root!();
    const PODS: u8 = 10;
    let agent = Agent::start(NamespacesConfig::All(AllNamespaces::All), &["cq*"]);
    let mut latencies = Vec::new();
    let mut done = Vec::new();
    for i in 0..PODS {
        let pod = fresh(&Netns::unique_name());
        let (a, b) = (format!("cqha{i}"), format!("cqhb{i}"));
        let _link = HostLink(a.clone());
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &b, "netns", pod.name()]);
        let pod_ref = device_ref(&pod, &b);
        latencies.push(agent.wait_attached(pod_ref, &b));
        // The host end stays in the host: addressed there, traffic goes pod → host.
        let host_ref = DeviceRef {
            netns: NetnsId {
                inode: std::fs::metadata("/proc/self/ns/net").expect("stat").ino() as u32,
                cookie: host_cookie(),
            },
            ifindex: ifindex(None, &a),
        };
        agent.wait_attached(host_ref, &a);
        ip(&["link", "set", &a, "up"]);
        pod.ip(&["addr", "add", &format!("10.203.{}.2/24", 40 + i), "dev", &b]);
        pod.ip(&["link", "set", &b, "up"]);
        // Counted on the pod's device only: the host end gets no address (10.x traffic stays
        // out of the host's stack); datagrams go to a neighbour that is made up, on the link.
        pod.ip(&[
            "neigh",
            "add",
            &format!("10.203.{}.1", 40 + i),
            "lladdr",
            "02:00:00:00:00:01",
            "dev",
            &b,
            "nud",
            "permanent",
        ]);
        let sent = 100 + u64::from(i);
        pod.run(|| {
            let s = std::net::UdpSocket::bind(format!("10.203.{}.2:0", 40 + i)).expect("bind");
            for _ in 0..sent {
                s.send_to(&[1; 64], format!("10.203.{}.1:7000", 40 + i))
                    .expect("send");
            }
        });
        done.push((pod, pod_ref, host_ref, b, a, sent, _link));
    }
    let (p50, p99) = percentiles(latencies);
    eprintln!("veth moved from the host: attached in the namespace {p50:?} (p50), {p99:?} (p99)");
    let counted = agent.stop();
    for (_, pod_ref, host_ref, b, a, sent, _) in &done {
        assert_eq!(
            counted.udp(*pod_ref, Direction::Egress),
            *sent,
            "out of {b}"
        );
        assert_eq!(
            counted.udp(*host_ref, Direction::Ingress),
            *sent,
            "into {a}"
        );
        assert_eq!(
            counted.1.get(pod_ref).map(|d| d.name).as_deref(),
            Some(b.as_str())
        );
    }
}

/// The host namespace's cookie.
fn host_cookie() -> u64 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_NETNS_COOKIE writes a u64 into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    cookie
}

/// A device deleted while its namespace stays: its final counters arrive marked `last`, its
/// names are retired (kept), and a new device given the same ifindex starts from zero
/// (counters and records delivered).
#[test]
fn a_deleted_device_ends_with_a_last_point_and_its_ifindex_starts_clean() {
    let _serial = serial_root!();
    let (agent, node, pod) = listed_node_and_pod();
    pod.ip(&[
        "link",
        "add",
        "eth0",
        "index",
        "77",
        "type",
        "veth",
        "peer",
        "name",
        "cqx",
        "netns",
        node.name(),
    ]);
    let pod_ref = device_ref(&pod, "eth0");
    assert_eq!(pod_ref.ifindex, 77);
    agent.wait_attached(pod_ref, "eth0");
    wire(&node, "cqx", &pod, "eth0", 50);
    let first = send(&node, &pod, 50, 180);
    node.ip(&["link", "del", "cqx"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.devices.is_alive(&pod_ref) {
        assert!(
            Instant::now() < deadline,
            "eth0 not retired after its deletion"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        agent.devices.get(&pod_ref).map(|d| d.name).as_deref(),
        Some("eth0"),
        "a retired device keeps its name"
    );
    // A new device with the same ifindex (and name) in the same namespace.
    pod.ip(&[
        "link",
        "add",
        "eth0",
        "index",
        "77",
        "type",
        "veth",
        "peer",
        "name",
        "cqy",
        "netns",
        node.name(),
    ]);
    agent.wait_attached(pod_ref, "eth0");
    wire(&node, "cqy", &pod, "eth0", 51);
    let second = send(&node, &pod, 51, 70);
    let events = agent.stop_events();
    let points: Vec<DeviceCounters> = events
        .iter()
        .filter_map(|e| match e {
            periscope_pipeline::model::Event::DeviceCounters(c)
                if c.device == pod_ref
                    && c.direction == Direction::Egress
                    && c.transport == Transport::Udp =>
            {
                Some(*c)
            }
            _ => None,
        })
        .collect();
    let split = points
        .iter()
        .position(|c| c.last)
        .expect("a final point for the deleted eth0");
    assert_eq!(
        points[split].packets, first,
        "the deleted device's final count"
    );
    let after = &points[split + 1..];
    let new = after.last().expect("counters of the new eth0");
    assert_eq!(new.packets, second, "the new device starts from zero");
    assert!(
        after.iter().all(|c| c.packets <= second && !c.last),
        "nothing of the old device after its final point: {after:?}"
    );
    assert!(
        new.records_delivered <= second,
        "records delivered start from zero too: {new:?}"
    );
}

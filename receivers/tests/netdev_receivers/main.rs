//! The `xdp` and `tcx` receivers in real network namespaces: a "node" namespace holding a
//! bridge and two "pod" namespaces joined to it by veth pairs. Pod-to-pod UDP and TCP traffic
//! (the generator counts what it sent) must appear under the right (namespace, device,
//! direction, transport) with packet and byte counts equal to the generator's and to what
//! dumpcap/tshark captured on the same device, exactly.
//!
//! Namespaces and devices are fed to the receivers by the test (as the namespace watcher
//! would), so these tests exercise attachment, pinning, reading and counting on their own.
//!
//! Needs root, iproute2, dumpcap/tshark and bpftool. Without root these tests skip with a
//! one-line reason, except when `CI` is set: then they fail. Everything runs in the test kit's
//! namespaces (10.201.x.x addresses only there), deleted on drop even when a test fails; pins
//! go under /sys/fs/bpf/periscope/<test id>, removed on drop.

mod attach;
mod counting;
mod fallback;
mod flows;
mod pinning;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use periscope_pipeline::component::BuildContext;
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::model::{
    DeviceCounters, DeviceRef, Direction, Event, NetnsId, PacketEvent, Transport,
};
use periscope_pipeline::telemetry::ComponentCounters;
use periscope_receivers::netdev::{EventsMode, NetdevReceiver};
use periscope_receivers::shared::netns::{Device, Discovery, Namespace};
use periscope_receivers::tcx::TcxConfig;
use periscope_receivers::xdp::XdpConfig;
use periscope_testkit::bpf::{bpftool_json, links, periscope_programs};
use periscope_testkit::capture::{frames_and_bytes, Dumpcap};
use periscope_testkit::netns::{udp as send_udp, UdpTraffic};
use periscope_testkit::process::run_ok;
use periscope_testkit::stats::percentile;
use periscope_testkit::{bpf_capable, context, Netns, Serial, TestDir};

/// The tests share bpftool's view of the kernel: run them one at a time.
static SERIAL: Serial = Serial::new();

// ---- namespaces ---------------------------------------------------------------------------

/// A namespace with IPv6 off: no router solicitations or MLD reports between the test's
/// packets.
fn netns() -> Netns {
    let ns = Netns::new();
    ns.disable_ipv6();
    ns
}

/// What the namespace watcher would report for `ns`.
fn namespace(ns: &Netns) -> Namespace {
    Namespace {
        id: NetnsId {
            inode: ns.inode() as u32,
            cookie: ns.cookie(),
        },
        name: Some(ns.name().to_string()),
        path: ns.path(),
        cgroup: None,
        cgroup_late: false,
        fd: None,
    }
}

/// The namespace's devices, as the watcher would report them.
fn devices(ns: &Netns) -> Vec<Device> {
    ns.links()
        .into_iter()
        .map(|(ifindex, name)| Device {
            ifindex,
            loopback: name == "lo",
            name,
            kind: String::new(),
            up: true,
            link: 0,
            link_netnsid: None,
            master: 0,
            peer: None,
            serves_peer: false,
            leaf_peer: None,
        })
        .collect()
}

fn device(ns: &Netns, name: &str) -> Device {
    devices(ns)
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no {name} in {}", ns.name()))
}

/// node (bridge br0, ports vp1, vp2) — pod1 (eth0, 10.201.0.1) / pod2 (eth0, 10.201.0.2).
struct Topology {
    // Dropped in this order: pods, then the node.
    pod1: Netns,
    pod2: Netns,
    node: Netns,
}

const POD1: [u8; 4] = [10, 201, 0, 1];
const POD2: [u8; 4] = [10, 201, 0, 2];

impl Topology {
    fn new() -> Topology {
        let node = netns();
        let pod1 = netns();
        let pod2 = netns();
        node.ip(&["link", "add", "br0", "type", "bridge"]);
        node.ip(&["link", "set", "br0", "up"]);
        for (pod, port, addr) in [
            (&pod1, "vp1", "10.201.0.1/24"),
            (&pod2, "vp2", "10.201.0.2/24"),
        ] {
            node.ip(&[
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                pod.name(),
            ]);
            node.ip(&["link", "set", port, "master", "br0", "up"]);
            pod.ip(&["addr", "add", addr, "dev", "eth0"]);
            pod.ip(&["link", "set", "eth0", "up"]);
        }
        let t = Topology { pod1, pod2, node };
        warm_up(&t);
        t
    }

    fn all(&self) -> [&Netns; 3] {
        [&self.node, &self.pod1, &self.pod2]
    }
}

// ---- receivers ----------------------------------------------------------------------------

/// A receiver running on its thread, fed discovery events by the test.
struct Running {
    discovery: Sender<Discovery>,
    devices: DeviceTable,
    receiver: periscope_testkit::receiver::Running,
}

impl Running {
    fn start(
        build: impl FnOnce(&BuildContext) -> anyhow::Result<NetdevReceiver>,
        id: &str,
    ) -> Running {
        Running::start_with(build, id, true)
    }

    /// `xdp` with its defaults and counters every 200 ms, fed by the test.
    fn xdp(id: &str) -> Running {
        Running::start(
            |ctx| {
                XdpConfig {
                    counters_interval: ConfigDuration::from_millis(200),
                    ..XdpConfig::default()
                }
                .build_receiver(ctx)
            },
            id,
        )
    }

    /// `tcx` with its defaults and counters every 200 ms, fed by the test.
    fn tcx(id: &str) -> Running {
        Running::start(
            |ctx| {
                TcxConfig {
                    counters_interval: ConfigDuration::from_millis(200),
                    ..TcxConfig::default()
                }
                .build_receiver(ctx)
            },
            id,
        )
    }

    /// `fed`: the test reports namespaces and devices; otherwise the receiver's own
    /// namespace watcher finds them.
    fn start_with(
        build: impl FnOnce(&BuildContext) -> anyhow::Result<NetdevReceiver>,
        id: &str,
        fed: bool,
    ) -> Running {
        let ctx = context(id);
        let (tx, rx) = crossbeam_channel::unbounded();
        let receiver = build(&ctx).unwrap_or_else(|e| panic!("build {id}: {e:#}"));
        let receiver = if fed {
            receiver.with_discovery(rx)
        } else {
            receiver
        };
        Running {
            discovery: tx,
            devices: ctx.devices,
            receiver: periscope_testkit::receiver::Running::start(Box::new(receiver), 1024),
        }
    }

    /// The name and namespace name the device table has for `d`.
    fn devices_name(&self, d: DeviceRef) -> Option<(String, Option<String>)> {
        self.devices.get(&d).map(|i| (i.name, i.netns_name))
    }

    fn counters(&self) -> &std::sync::Arc<ComponentCounters> {
        self.receiver.counters()
    }

    /// Reports a namespace and all its devices; returns how long until every device was
    /// attached (registered in the device table).
    fn add(&self, ns: &Netns) -> Duration {
        let n = namespace(ns);
        let devices = devices(ns);
        let t = Instant::now();
        self.discovery
            .send(Discovery::NamespaceAdded(n.clone()))
            .expect("receiver gone");
        for d in &devices {
            self.discovery
                .send(Discovery::DeviceAdded {
                    netns: n.id,
                    device: d.clone(),
                })
                .expect("receiver gone");
        }
        for d in &devices {
            self.wait_for(n.id, d.ifindex);
        }
        t.elapsed()
    }

    /// Reports a namespace and all its devices; waits for `expect` to be attached.
    fn add_only(&self, ns: &Netns, expect: &[&str]) {
        let n = namespace(ns);
        self.discovery
            .send(Discovery::NamespaceAdded(n.clone()))
            .expect("receiver gone");
        for d in devices(ns) {
            self.discovery
                .send(Discovery::DeviceAdded {
                    netns: n.id,
                    device: d.clone(),
                })
                .expect("receiver gone");
        }
        for name in expect {
            self.wait_for(n.id, device(ns, name).ifindex);
        }
    }

    fn wait_for(&self, netns: NetnsId, ifindex: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.devices.get(&DeviceRef { netns, ifindex }).is_none() {
            assert!(Instant::now() < deadline, "device {ifindex} never attached");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops the receiver; returns every event it sent.
    fn stop(self) -> Vec<Event> {
        self.receiver.stop()
    }
}

/// The last (cumulative) counters per (device, direction, transport).
fn last_counters(events: &[Event]) -> HashMap<(DeviceRef, Direction, Transport), DeviceCounters> {
    let mut m = HashMap::new();
    for e in events {
        if let Event::DeviceCounters(c) = e {
            m.insert((c.device, c.direction, c.transport), *c);
        }
    }
    m
}

fn packets(events: &[Event]) -> Vec<PacketEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Packet(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn counted(
    c: &HashMap<(DeviceRef, Direction, Transport), DeviceCounters>,
    ns: &Netns,
    dev: &str,
    dir: Direction,
    t: Transport,
) -> (u64, u64) {
    let key = (
        DeviceRef {
            netns: namespace(ns).id,
            ifindex: device(ns, dev).ifindex,
        },
        dir,
        t,
    );
    c.get(&key).map_or((0, 0), |c| (c.packets, c.bytes))
}

// ---- traffic and captures -----------------------------------------------------------------

/// dumpcap on a device inside a namespace.
struct Capture {
    dumpcap: Dumpcap,
    _dir: TestDir,
}

impl Capture {
    fn start(ns: &Netns, dev: &str) -> Capture {
        let dir = TestDir::new("capture");
        let dumpcap = Dumpcap::start(ns, dev, &dir.join(format!("{dev}.pcapng")), &[]);
        Capture { dumpcap, _dir: dir }
    }

    /// Stops dumpcap (after the caller waited for quiet) and returns (frames, bytes) per
    /// display filter.
    fn finish(self, filters: &[&str]) -> Vec<(u64, u64)> {
        let file = self.dumpcap.file().to_path_buf();
        self.dumpcap.stop();
        frames_and_bytes(&file, filters)
    }
}

/// UDP from pod1 to pod2: `count` datagrams of `size` bytes; returns how many arrived.
fn udp(t: &Topology, count: usize, size: usize) -> usize {
    let traffic = UdpTraffic {
        from: (t.pod1.name(), SocketAddrV4::new(POD1.into(), 0)),
        to: (t.pod2.name(), SocketAddrV4::new(POD2.into(), 7000)),
        count: count as u64,
        size,
        pause_every: 32,
        idle: Duration::from_millis(500),
    };
    send_udp(&traffic, |_| {}).received as usize
}

/// Resolves the pods' neighbours before anything is counted (packets queued behind an
/// unresolved neighbour may be dropped).
fn warm_up(t: &Topology) {
    for (from, to) in [(&t.pod1, POD2), (&t.pod2, POD1)] {
        from.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
            let _ = s.send_to(b"warm-up", SocketAddr::from((to, 9)));
        });
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// TCP request/response from pod1 to pod2 (one segment in flight: nothing to merge).
fn tcp(t: &Topology, exchanges: usize, size: usize) -> usize {
    let addr = SocketAddr::from((POD2, 7001));
    let listener = t
        .pod2
        .run(|| TcpListener::bind(addr).expect("listen in pod2"));
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; size];
        let mut n = 0;
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf).expect("echo");
            n += 1;
        }
        n
    });
    t.pod1.run(|| {
        let mut c = TcpStream::connect(addr).expect("connect");
        c.set_nodelay(true).unwrap();
        let mut buf = vec![0x17; size];
        for _ in 0..exchanges {
            c.write_all(&buf).expect("write");
            c.read_exact(&mut buf).expect("read echo");
        }
    });
    server.join().expect("server")
}

// ---- tests --------------------------------------------------------------------------------

//! The real `periscope` binary with the `tcx` and `xdp` receivers, end to end:
//! `periscope run` (tcx|xdp → flow → file) limited to namespaces this test builds.
//!
//! Two "pod" namespaces joined by a veth pair (`pa0` 10.210.0.1 ↔ `pb0` 10.210.0.2). The
//! generator (threads of this test that enter the namespaces) sends UDP datagrams and counts
//! them; the file's last `periscope.network.packets`/`bytes` for `network.transport=udp` must
//! equal its counts exactly (L2 bytes = payload + 42 for IPv4 over Ethernet), under the right
//! interface name, direction and namespace, and nothing from outside the listed namespaces.
//! Readiness is probed with TCP SYNs to a closed port (transport `tcp`), so probes never mix
//! with the UDP counts.
//!
//! - tcx: also a namespace and veth created after the agent started are attached (the
//!   latency from `ip link add` to the new links being listed by the kernel is printed) and
//!   counted; the host namespace is observed too (its `lo` records a probe) and a second
//!   pipeline with per-5-tuple series shows none of the pods' addresses under the host's
//!   inode, and the pods' datagrams under theirs; after SIGTERM no program or link of the
//!   agent is left in the kernel.
//! - xdp: the same without `pin`, ingress only.
//! - pinned (xdp + tcx egress, `pin: true`): after SIGKILL the pinned counters keep counting,
//!   `ip link set dev pb0 xdp off` inside the namespace fails, and a restarted agent adopts the
//!   links (same programs, one link per hook) and reports totals across both runs; the pins
//!   are removed at the end.
//!
//! Needs root, `ip` and `bpftool`; skips with a reason otherwise, except under CI.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use periscope_integration::otlp::{parse_requests, sum_series, Series};
use periscope_integration::periscope::{describe_output, periscope_command};
use periscope_integration::process::{output_with_timeout, run_ok, Background};
use periscope_integration::{
    in_netns, require_root, require_tools, veth_pair, yaml_path, Netns, TestDir,
};

const TOOLS: &[&str] = &["ip", "bpftool"];
const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 2);
const C_ADDR: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
const BC_ADDR: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 2);
const UDP_PORT: u16 = 9100;
/// Ethernet (14) + IPv4 (20) + UDP (8).
const L2_OVERHEAD: u64 = 42;
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// One agent at a time: the kernel-wide program/link checks must see only ours.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready(test: &str) -> bool {
    require_root(test) && require_tools(test, TOOLS)
}

/// pod-a (`pa0`, 10.210.0.1/24) ↔ pod-b (`pb0`, 10.210.0.2/24).
struct Pods {
    a: Netns,
    b: Netns,
}

impl Pods {
    fn new() -> Pods {
        let a = Netns::new();
        let b = Netns::new();
        a.disable_ipv6();
        b.disable_ipv6();
        veth_pair(&a, "pa0", "10.210.0.1/24", &b, "pb0", "10.210.0.2/24");
        Pods { a, b }
    }
}

fn ns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn inode(name: &str) -> String {
    std::fs::metadata(ns_path(name))
        .unwrap_or_else(|e| panic!("stat {name}: {e}"))
        .ino()
        .to_string()
}

/// Sends `count` UDP datagrams of `size` bytes from `src` (in namespace `from`) to `dst` (in
/// namespace `to`, where a socket receives them); returns (sent, received).
fn udp(from: &str, src: Ipv4Addr, to: &str, dst: Ipv4Addr, count: u64, size: usize) -> (u64, u64) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let sink = s.spawn(|| {
            in_netns(to, || {
                let sock = UdpSocket::bind(SocketAddrV4::new(dst, UDP_PORT)).expect("bind sink");
                sock.set_read_timeout(Some(Duration::from_millis(300)))
                    .expect("timeout");
                ready_tx.send(()).expect("ready");
                let mut buf = [0u8; 2048];
                let mut got = 0;
                while got < count {
                    match sock.recv(&mut buf) {
                        Ok(_) => got += 1,
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            break
                        }
                        Err(e) => panic!("sink: {e}"),
                    }
                }
                got
            })
        });
        ready_rx.recv().expect("sink ready");
        let sent = in_netns(from, || {
            let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).expect("bind sender");
            let payload = vec![0xa5u8; size];
            let mut sent = 0;
            for i in 0..count {
                if sock
                    .send_to(&payload, SocketAddrV4::new(dst, UDP_PORT))
                    .is_ok()
                {
                    sent += 1;
                }
                if i % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            sent
        });
        (sent, sink.join().expect("sink thread"))
    })
}

/// A TCP SYN from `from` to a closed port of `dst` (answered by a RST): transport `tcp`.
fn probe(from: &str, dst: Ipv4Addr) {
    in_netns(from, || {
        let _ = TcpStream::connect_timeout(
            &SocketAddrV4::new(dst, 9).into(),
            Duration::from_millis(200),
        );
    });
}

fn agent_config(dir: &TestDir, name: &str, receivers: &str, pipeline: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let yaml = format!(
        "receivers:\n{receivers}\
         processors:\n  flow: {{interval: 200ms}}\n\
         exporters:\n  file: {{path: {}, flush_interval: 100ms}}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [{pipeline}], processors: [flow], exporters: [file]}}\n  \
         telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
        yaml_path(&out)
    );
    (dir.write(&format!("{name}.yaml"), yaml), out)
}

/// [`agent_config`] plus a second pipeline from the same receiver: `flow/tuples` with
/// `flow_attributes: true` (one series per 5-tuple, from the packet records) into its own
/// file, returned third.
fn agent_config_with_tuples(
    dir: &TestDir,
    name: &str,
    receivers: &str,
    pipeline: &str,
) -> (PathBuf, PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let tuples = dir.join(format!("{name}-tuples.jsonl"));
    let yaml = format!(
        "receivers:\n{receivers}\
         processors:\n  flow: {{interval: 200ms}}\n  \
         flow/tuples: {{interval: 200ms, flow_attributes: true}}\n\
         exporters:\n  file: {{path: {}, flush_interval: 100ms}}\n  \
         file/tuples: {{path: {}, flush_interval: 100ms}}\n\
         service:\n  pipelines:\n    \
         metrics: {{receivers: [{pipeline}], processors: [flow], exporters: [file]}}\n    \
         metrics/tuples: {{receivers: [{pipeline}], processors: [flow/tuples], exporters: [file/tuples]}}\n  \
         telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
        yaml_path(&out),
        yaml_path(&tuples)
    );
    (dir.write(&format!("{name}.yaml"), yaml), out, tuples)
}

/// The inode of this process's network namespace: the host's, where the agent's `host` is.
fn host_inode() -> String {
    std::fs::metadata("/proc/self/ns/net")
        .expect("stat /proc/self/ns/net")
        .ino()
        .to_string()
}

/// Per-5-tuple packet series (from a `flow_attributes` pipeline) of namespace `ns` whose
/// source or destination address is one of `addrs`: `(interface, direction, src, dst) →
/// packets`.
fn tuples_with(
    series: &[Series],
    ns: &str,
    addrs: &[Ipv4Addr],
) -> BTreeMap<(String, String, String, String), i64> {
    let addrs: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
    let mut m = BTreeMap::new();
    for s in series {
        if s.attr("periscope.netns.inode") != Some(ns) {
            continue;
        }
        let (src, dst) = (
            s.attr("source.address").unwrap_or("?"),
            s.attr("destination.address").unwrap_or("?"),
        );
        if addrs.iter().any(|a| a == src || a == dst) {
            *m.entry((
                s.attr("network.interface.name").unwrap_or("?").to_string(),
                s.attr("network.io.direction").unwrap_or("?").to_string(),
                src.to_string(),
                dst.to_string(),
            ))
            .or_default() += s.value;
        }
    }
    m
}

fn start(config: &Path, what: &str) -> Background {
    Background::spawn(periscope_command().arg("run").arg("-c").arg(config), what)
}

/// Series of `metric` in the file so far (lines still being written are left out).
fn series_now(out: &Path, metric: &str) -> Vec<Series> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    sum_series(
        &parse_requests(complete, &out.display().to_string()),
        metric,
    )
}

/// `(interface, direction, transport, netns inode) → value`.
type Totals = BTreeMap<(String, String, String, String), i64>;

fn totals(series: &[Series]) -> Totals {
    let mut m = Totals::new();
    for s in series {
        let key = (
            s.attr("network.interface.name").unwrap_or("?").to_string(),
            s.attr("network.io.direction").unwrap_or("?").to_string(),
            s.attr("network.transport").unwrap_or("?").to_string(),
            s.attr("periscope.netns.inode").unwrap_or("?").to_string(),
        );
        *m.entry(key).or_default() += s.value;
    }
    m
}

fn get(t: &Totals, iface: &str, dir: &str, transport: &str, ns: &str) -> i64 {
    t.get(&(iface.into(), dir.into(), transport.into(), ns.into()))
        .copied()
        .unwrap_or(0)
}

/// Probes with TCP SYNs until the file shows tcp packets on every `(iface, direction, netns)`.
fn wait_attached(
    agent: &mut Background,
    out: &Path,
    from: &str,
    dst: Ipv4Addr,
    want: &[(&str, &str, &str)],
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        probe(from, dst);
        let t = totals(&series_now(out, "periscope.network.packets"));
        if want.iter().all(|(i, d, n)| get(&t, i, d, "tcp", n) > 0) {
            return;
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "the agent did not count probes on {want:?} (seen {t:?})\n--- stderr ---\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bpftool_json(args: &[&str]) -> Value {
    let out = run_ok(
        Command::new("bpftool").arg("-j").args(args),
        Duration::from_secs(10),
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: {e}"))
}

/// Ids of loaded programs whose name starts with `periscope`.
fn periscope_programs() -> BTreeSet<u64> {
    bpftool_json(&["prog", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("periscope"))
        })
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// `(link id, prog id)` of every link.
fn links() -> Vec<(u64, u64)> {
    bpftool_json(&["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| Some((l["id"].as_u64()?, l["prog_id"].as_u64()?)))
        .collect()
}

/// Links of periscope programs with an id above `after` (loaded since): prog id → links.
fn new_periscope_links(after: u64) -> BTreeMap<u64, usize> {
    let progs = periscope_programs();
    let mut m = BTreeMap::new();
    for (_, prog) in links() {
        if prog > after && progs.contains(&prog) {
            *m.entry(prog).or_default() += 1;
        }
    }
    m
}

/// How many BPF links the kernel has (a `BPF_LINK_GET_NEXT_ID` walk: microseconds, so it
/// can be polled to time an attachment, unlike `bpftool`).
fn link_count() -> usize {
    const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
    #[repr(C)]
    struct Attr {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
        _pad: [u32; 13],
    }
    let (mut id, mut n) = (0, 0);
    loop {
        let mut attr = Attr {
            start_id: id,
            next_id: 0,
            open_flags: 0,
            _pad: [0; 13],
        };
        // SAFETY: a BPF_LINK_GET_NEXT_ID attr; the kernel writes `next_id` only.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_LINK_GET_NEXT_ID,
                &mut attr as *mut Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if rc != 0 {
            return n;
        }
        id = attr.next_id;
        n += 1;
    }
}

fn stop(agent: Background, signal: i32) -> std::process::Output {
    agent.signal(signal);
    agent.wait(STOP_TIMEOUT)
}

/// Checks that no program loaded after `baseline` with a periscope name, nor a link of one,
/// is left in the kernel.
fn assert_nothing_left(baseline: u64, ours: &BTreeSet<u64>) {
    assert!(!ours.is_empty(), "the agent had no programs loaded");
    let progs = periscope_programs();
    let left: Vec<_> = ours.intersection(&progs).collect();
    assert!(
        left.is_empty(),
        "programs left after a clean stop: {left:?}"
    );
    let linked = new_periscope_links(baseline);
    let stale: Vec<_> = links()
        .into_iter()
        .filter(|(_, p)| ours.contains(p))
        .collect();
    assert!(
        stale.is_empty() && linked.is_empty(),
        "links left after a clean stop: {stale:?} {linked:?}"
    );
}

/// A namespace that does not exist when the agent starts: named like the helpers' (so a
/// leftover is swept by the next test process), deleted on drop.
struct LateNetns(String);

impl LateNetns {
    fn name(test: &str) -> LateNetns {
        LateNetns(format!("periscope-t-{}-late-{test}", std::process::id()))
    }

    fn create(&self) {
        run_ok(
            Command::new("ip").args(["netns", "add", &self.0]),
            Duration::from_secs(10),
        );
        let ip = |args: &[&str]| {
            run_ok(
                Command::new("ip").args(["-n", &self.0]).args(args),
                Duration::from_secs(10),
            )
        };
        ip(&["link", "set", "lo", "up"]);
        run_ok(
            Command::new("ip")
                .args(["netns", "exec", &self.0, "sysctl", "-qw"])
                .arg("net.ipv6.conf.all.disable_ipv6=1"),
            Duration::from_secs(10),
        );
    }
}

impl Drop for LateNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn tcx_counts_pod_traffic_exactly_attaches_new_namespaces_and_leaves_nothing() {
    let test = "tcx_counts_pod_traffic_exactly_attaches_new_namespaces_and_leaves_nothing";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TestDir::new("netdev-tcx");
    let pods = Pods::new();
    let late = LateNetns::name("tcx");
    let (a, b, c) = (pods.a.name(), pods.b.name(), late.0.as_str());
    // The host namespace is observed too: it must see none of the pods' traffic.
    let (config, out, tuples) = agent_config_with_tuples(
        &dir,
        "tcx",
        &format!(
            "  tcx:\n    namespaces: [host, {a}, {b}, {c}]\n    events: all\n    counters_interval: 100ms\n"
        ),
        "tcx",
    );
    let baseline = periscope_programs().last().copied().unwrap_or(0);
    let started = Instant::now();
    let mut agent = start(&config, "periscope run (tcx)");
    let (ia, ib, ih) = (inode(a), inode(b), host_inode());
    wait_attached(
        &mut agent,
        &out,
        a,
        B_ADDR,
        &[("pa0", "transmit", &ia), ("pb0", "receive", &ib)],
    );
    // The host's lo is attached and recorded: a SYN to a closed port on 127.0.0.1 (from this
    // process, in the host namespace) shows up under the host's inode.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let _ = TcpStream::connect_timeout(
            &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9).into(),
            Duration::from_millis(200),
        );
        let seen = tuples_with(
            &series_now(&tuples, "periscope.network.packets"),
            &ih,
            &[Ipv4Addr::LOCALHOST],
        );
        if seen.keys().any(|k| k.0 == "lo") {
            break;
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "the agent did not record host lo traffic in namespace {ih}\n--- stderr ---\n{}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "tcx: attached and counting {:?} after start",
        started.elapsed()
    );

    // (a) pod-to-pod UDP, counted by the generator.
    let (n, size) = (400u64, 100usize);
    let (sent, received) = udp(a, A_ADDR, b, B_ADDR, n, size);
    assert_eq!(sent, n, "the generator could not send everything");

    // (b) a namespace and a veth created now.
    late.create();
    let settle = Instant::now() + Duration::from_secs(5);
    let mut before = link_count();
    // Let the agent attach the new namespace's lo (if it does) before timing the veth.
    loop {
        std::thread::sleep(Duration::from_millis(150));
        let now = link_count();
        if now == before || Instant::now() > settle {
            break;
        }
        before = now;
    }
    let periscope_before = new_periscope_links(baseline).values().sum::<usize>();
    let before = link_count();
    let t0 = Instant::now();
    run_ok(
        Command::new("ip").args([
            "-n", c, "link", "add", "pc0", "type", "veth", "peer", "name", "pbc0", "netns", b,
        ]),
        Duration::from_secs(10),
    );
    let created = Instant::now();
    let mut attached = None;
    while created.elapsed() < Duration::from_secs(5) {
        // Two devices, ingress and egress each.
        if link_count() >= before + 4 {
            attached = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let attached = attached.unwrap_or_else(|| {
        panic!(
            "the new veth's 4 TCX links did not appear within 5 s\n--- stderr ---\n{}",
            agent.stderr()
        )
    });
    assert!(
        new_periscope_links(baseline).values().sum::<usize>() >= periscope_before + 4,
        "the new links are not the agent's"
    );
    eprintln!(
        "tcx: a veth created after start (one end in a new namespace, one in a known one) had \
         its 4 links {:?} after `ip link add` returned ({:?} from before it ran; the kernel's \
         link list polled every 0.5 ms; debug build of the agent)",
        attached - created,
        attached - t0
    );
    for (ns, dev, cidr) in [(c, "pc0", "10.211.0.1/24"), (b, "pbc0", "10.211.0.2/24")] {
        run_ok(
            Command::new("ip").args(["-n", ns, "addr", "add", cidr, "dev", dev]),
            Duration::from_secs(10),
        );
        run_ok(
            Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]),
            Duration::from_secs(10),
        );
    }
    let (m, msize) = (150u64, 60usize);
    let (late_sent, _) = udp(c, C_ADDR, b, BC_ADDR, m, msize);
    assert_eq!(late_sent, m);

    // A last counters read and flow export happen at shutdown.
    let ours: BTreeSet<u64> = periscope_programs()
        .into_iter()
        .filter(|p| *p > baseline)
        .collect();
    let ended = stop(agent, libc::SIGTERM);
    assert!(ended.status.success(), "{}", describe_output(&ended));
    let stderr = String::from_utf8_lossy(&ended.stderr);
    if let Some(line) = stderr.lines().find(|l| l.contains("attach latency")) {
        eprintln!("tcx: agent log: {}", line.trim());
    }

    let ic = inode(c);
    let packets = totals(&series_now(&out, "periscope.network.packets"));
    let bytes = totals(&series_now(&out, "periscope.network.bytes"));
    let delivered = totals(&series_now(&out, "periscope.network.records.delivered"));
    let lost = totals(&series_now(&out, "periscope.network.records.lost"));
    let udp_bytes = |k: u64, s: usize| (k * (s as u64 + L2_OVERHEAD)) as i64;
    for (iface, dir, ns, k, s) in [
        ("pa0", "transmit", &ia, n, size),
        ("pb0", "receive", &ib, n, size),
        ("pc0", "transmit", &ic, m, msize),
        ("pbc0", "receive", &ib, m, msize),
    ] {
        // events: all, a large ring: every packet's record is delivered, none lost.
        assert_eq!(
            (
                get(&delivered, iface, dir, "udp", ns),
                get(&lost, iface, dir, "udp", ns)
            ),
            (k as i64, 0),
            "udp records delivered/lost on {iface} {dir} (netns {ns}); all: {delivered:#?}"
        );
        assert_eq!(
            get(&packets, iface, dir, "udp", ns),
            k as i64,
            "udp packets on {iface} {dir} (netns {ns}); all: {packets:#?}"
        );
        assert_eq!(
            get(&bytes, iface, dir, "udp", ns),
            udp_bytes(k, s),
            "udp bytes on {iface} {dir} (netns {ns}); all: {bytes:#?}"
        );
    }
    // Nothing else in the pods carried UDP: no other device, direction or pod namespace
    // (the host has UDP of its own; it is checked by address below).
    let udp_total: i64 = packets
        .iter()
        .filter(|(k, _)| k.2 == "udp" && k.3 != ih)
        .map(|(_, v)| v)
        .sum();
    assert_eq!(udp_total, 2 * (n + m) as i64, "{packets:#?}");
    let spaces: BTreeSet<&str> = packets.keys().map(|k| k.3.as_str()).collect();
    let allowed: BTreeSet<&str> = [ih.as_str(), ia.as_str(), ib.as_str(), ic.as_str()].into();
    assert!(
        spaces.is_subset(&allowed),
        "series from namespaces outside the list: {spaces:?} (allowed {allowed:?})"
    );
    // The host namespace's devices recorded none of the pods' traffic, though they were
    // attached and recording (lo above); the same check finds it in every pod namespace.
    let by_tuple = series_now(&tuples, "periscope.network.packets");
    let pod_addrs = [A_ADDR, B_ADDR, C_ADDR, BC_ADDR];
    let in_host = tuples_with(&by_tuple, &ih, &pod_addrs);
    assert!(
        in_host.is_empty(),
        "the host namespace ({ih}) recorded pod traffic: {in_host:#?}"
    );
    for (ns, iface, dir, src, k) in [
        (&ia, "pa0", "transmit", A_ADDR, n),
        (&ib, "pb0", "receive", A_ADDR, n),
        (&ic, "pc0", "transmit", C_ADDR, m),
        (&ib, "pbc0", "receive", C_ADDR, m),
    ] {
        // The check that finds nothing in the host finds the pods' traffic here.
        let seen = tuples_with(&by_tuple, ns, &pod_addrs);
        assert!(
            seen.keys().any(|k| k.0 == iface),
            "no pod 5-tuple on {iface} in namespace {ns}: {seen:#?}"
        );
        let udp: i64 = by_tuple
            .iter()
            .filter(|s| {
                s.attr("periscope.netns.inode") == Some(ns.as_str())
                    && s.attr("network.interface.name") == Some(iface)
                    && s.attr("network.io.direction") == Some(dir)
                    && s.attr("network.transport") == Some("udp")
                    && s.attr("source.address") == Some(src.to_string().as_str())
                    && s.attr("destination.port") == Some(UDP_PORT.to_string().as_str())
            })
            .map(|s| s.value)
            .sum();
        assert_eq!(
            udp, k as i64,
            "per-5-tuple udp packets from {src} on {iface} {dir} (netns {ns}); pod tuples \
             there: {seen:#?}"
        );
    }
    let host_series = by_tuple
        .iter()
        .filter(|s| s.attr("periscope.netns.inode") == Some(ih.as_str()))
        .count();
    eprintln!(
        "tcx: host namespace {ih} attached and recording ({host_series} 5-tuple series, lo \
         probe included), none with the pods' addresses; the pods' tuples are in theirs"
    );
    eprintln!(
        "tcx: {n} + {m} UDP datagrams ({received} received by the sink) counted exactly on \
         pa0/pb0/pc0/pbc0"
    );

    // (d) without pin, a clean stop leaves nothing.
    assert_nothing_left(baseline, &ours);
}

#[test]
fn xdp_counts_pod_traffic_exactly_and_leaves_nothing() {
    let test = "xdp_counts_pod_traffic_exactly_and_leaves_nothing";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TestDir::new("netdev-xdp");
    let pods = Pods::new();
    let (a, b) = (pods.a.name(), pods.b.name());
    let (config, out) = agent_config(
        &dir,
        "xdp",
        &format!(
            "  xdp:\n    namespaces: [{a}, {b}]\n    events: none\n    counters_interval: 100ms\n"
        ),
        "xdp",
    );
    let baseline = periscope_programs().last().copied().unwrap_or(0);
    let mut agent = start(&config, "periscope run (xdp)");
    let (ia, ib) = (inode(a), inode(b));
    // XDP sees ingress only: the SYN on pb0, the RST on pa0.
    wait_attached(
        &mut agent,
        &out,
        a,
        B_ADDR,
        &[("pa0", "receive", &ia), ("pb0", "receive", &ib)],
    );
    let (n, size) = (500u64, 200usize);
    let (sent, _) = udp(a, A_ADDR, b, B_ADDR, n, size);
    assert_eq!(sent, n);
    let ours: BTreeSet<u64> = periscope_programs()
        .into_iter()
        .filter(|p| *p > baseline)
        .collect();
    let ended = stop(agent, libc::SIGTERM);
    assert!(ended.status.success(), "{}", describe_output(&ended));
    let packets = totals(&series_now(&out, "periscope.network.packets"));
    let bytes = totals(&series_now(&out, "periscope.network.bytes"));
    assert_eq!(
        get(&packets, "pb0", "receive", "udp", &ib),
        n as i64,
        "{packets:#?}"
    );
    assert_eq!(
        get(&bytes, "pb0", "receive", "udp", &ib),
        (n * (size as u64 + L2_OVERHEAD)) as i64,
        "{bytes:#?}"
    );
    let udp_total: i64 = packets
        .iter()
        .filter(|(k, _)| k.2 == "udp")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(udp_total, n as i64, "only pb0 receives UDP: {packets:#?}");
    assert!(
        packets.keys().all(|k| k.3 == ia || k.3 == ib),
        "series from namespaces outside the list: {packets:#?}"
    );
    eprintln!("xdp: {n} UDP datagrams counted exactly on pb0 receive");
    assert_nothing_left(baseline, &ours);
}

/// Removes a receiver's pins (and so its pinned links) on drop.
struct Pins(Vec<PathBuf>);

impl Drop for Pins {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The pinned counters of the namespace with `inode` under `root`: udp packets on `ifindex`
/// at `hook` (1 XDP, 2 TC) in `direction` (0 ingress, 1 egress), summed over CPUs.
fn pinned_udp_packets(root: &Path, inode: &str, ifindex: u32, hook: u8, direction: u8) -> u64 {
    let dir = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{inode}-")))
        })
        .unwrap_or_else(|| panic!("no pins of namespace {inode} under {}", root.display()));
    let map = dir.join("map-periscope_counters");
    let dump = bpftool_json(&["map", "dump", "pinned", map.to_str().expect("utf-8")]);
    let bytes = |v: &Value| -> Vec<u8> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
            .filter_map(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .collect()
    };
    let mut total = 0;
    for entry in dump.as_array().into_iter().flatten() {
        // struct periscope_dev_key: u64 cookie, u32 inode, u32 ifindex, u8 direction, hook,
        // l4_proto; struct periscope_dev_counters: u64 packets, bytes, records_lost.
        let key = bytes(&entry["key"]);
        if key.len() < 19 {
            continue;
        }
        let k_ifindex = u32::from_le_bytes(key[12..16].try_into().expect("4 bytes"));
        if k_ifindex != ifindex || key[16] != direction || key[17] != hook || key[18] != 17 {
            continue;
        }
        for cpu in entry["values"].as_array().into_iter().flatten() {
            let v = bytes(&cpu["value"]);
            if v.len() >= 8 {
                total += u64::from_le_bytes(v[0..8].try_into().expect("8 bytes"));
            }
        }
    }
    total
}

fn ifindex(ns: &str, dev: &str) -> u32 {
    let out = run_ok(
        Command::new("ip")
            .args(["netns", "exec", ns, "cat"])
            .arg(format!("/sys/class/net/{dev}/ifindex")),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ifindex")
}

#[test]
fn pinned_links_keep_counting_after_sigkill_resist_detach_and_are_adopted() {
    let test = "pinned_links_keep_counting_after_sigkill_resist_detach_and_are_adopted";
    if !ready(test) {
        return;
    }
    let _serial = serial();
    let dir = TestDir::new("netdev-pin");
    let pods = Pods::new();
    let (a, b) = (pods.a.name(), pods.b.name());
    let pid = std::process::id();
    let (xdp_id, tcx_id) = (format!("xdp/it{pid}"), format!("tcx/it{pid}"));
    let xdp_root = Path::new("/sys/fs/bpf/periscope").join(xdp_id.replace('/', "_"));
    let tcx_root = Path::new("/sys/fs/bpf/periscope").join(tcx_id.replace('/', "_"));
    let pins = Pins(vec![xdp_root.clone(), tcx_root.clone()]);
    // XDP counts ingress and TCX egress: each packet is counted once per device.
    let receivers = format!(
        "  {xdp_id}:\n    namespaces: [{a}, {b}]\n    pin: true\n    events: none\n    counters_interval: 100ms\n\
         \x20 {tcx_id}:\n    namespaces: [{a}, {b}]\n    direction: [egress]\n    pin: true\n    events: none\n    counters_interval: 100ms\n"
    );
    let pipeline = format!("{xdp_id}, {tcx_id}");
    let (config1, out1) = agent_config(&dir, "pin-1", &receivers, &pipeline);
    let (config2, out2) = agent_config(&dir, "pin-2", &receivers, &pipeline);
    let (ia, ib) = (inode(a), inode(b));
    let want = [
        ("pa0", "transmit", ia.as_str()),
        ("pb0", "receive", ib.as_str()),
    ];
    let baseline = periscope_programs().last().copied().unwrap_or(0);

    let mut first = start(&config1, "periscope run (pinned, first)");
    wait_attached(&mut first, &out1, a, B_ADDR, &want);
    let size = 80usize;
    let (n1, _) = udp(a, A_ADDR, b, B_ADDR, 200, size);
    let links_before = new_periscope_links(baseline);
    let killed = stop(first, libc::SIGKILL);
    assert!(!killed.status.success());

    // The agent is gone: the pinned links keep counting.
    let (n2, _) = udp(a, A_ADDR, b, B_ADDR, 300, size);
    let pb0 = ifindex(b, "pb0");
    let pa0 = ifindex(a, "pa0");
    let in_kernel = pinned_udp_packets(&xdp_root, &ib, pb0, 1, 0);
    assert_eq!(
        in_kernel,
        n1 + n2,
        "pinned XDP counters of pb0 after SIGKILL"
    );
    let egress = pinned_udp_packets(&tcx_root, &ia, pa0, 2, 1);
    assert_eq!(
        egress,
        n1 + n2,
        "pinned TCX egress counters of pa0 after SIGKILL"
    );

    // Root inside the namespace cannot remove the pinned XDP link.
    let off = output_with_timeout(
        Command::new("ip").args([
            "netns", "exec", b, "ip", "link", "set", "dev", "pb0", "xdp", "off",
        ]),
        Duration::from_secs(10),
    );
    assert!(
        !off.status.success(),
        "`ip link set dev pb0 xdp off` must fail on a pinned XDP link"
    );
    eprintln!(
        "pinned: after SIGKILL {} more datagrams counted in the pinned maps; `xdp off` refused: {}",
        n2,
        String::from_utf8_lossy(&off.stderr).trim()
    );

    // A restarted agent adopts: the same programs, one link per hook, no new ones.
    let mut second = start(&config2, "periscope run (pinned, restarted)");
    wait_attached(&mut second, &out2, a, B_ADDR, &want);
    let links_after = new_periscope_links(baseline);
    assert_eq!(
        links_after, links_before,
        "links by program before the kill and after the restart (prog id → links)"
    );
    assert!(
        links_after.values().all(|&k| k <= 2),
        "a program with more links than its namespace has devices: {links_after:?}"
    );
    let (n3, _) = udp(a, A_ADDR, b, B_ADDR, 100, size);
    let ended = stop(second, libc::SIGTERM);
    assert!(ended.status.success(), "{}", describe_output(&ended));
    let stderr = String::from_utf8_lossy(&ended.stderr);
    assert!(
        stderr.contains("adopted"),
        "the restarted agent says nothing of adoption:\n{stderr}"
    );
    let packets = totals(&series_now(&out2, "periscope.network.packets"));
    let total = (n1 + n2 + n3) as i64;
    assert_eq!(
        get(&packets, "pb0", "receive", "udp", &ib),
        total,
        "{packets:#?}"
    );
    assert_eq!(
        get(&packets, "pa0", "transmit", "udp", &ia),
        total,
        "{packets:#?}"
    );
    // Pinned: a clean stop leaves the links attached.
    assert_eq!(new_periscope_links(baseline), links_before);
    eprintln!(
        "pinned: restarted agent adopted {} links and reported {total} datagrams across both runs",
        links_before.values().sum::<usize>()
    );

    // Removing the pins releases everything.
    drop(pins);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !new_periscope_links(baseline).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        new_periscope_links(baseline).is_empty(),
        "links left after the pins were removed"
    );
}

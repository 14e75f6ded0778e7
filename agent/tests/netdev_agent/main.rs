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

mod pinned;
mod tcx;
mod xdp;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use periscope_testkit::bpf::{bpftool_json, link_count, links, periscope_programs};
use periscope_testkit::netns::{pods, udp as send_udp, UdpTraffic};
use periscope_testkit::otlp::{read_metrics, sum_series, Series};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::{output_with_timeout, run_ok, Background};
use periscope_testkit::{in_netns, require_root_and_tools, yaml_path, Netns, Serial, TestDir};

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
static SERIAL: Serial = Serial::new();

fn ready(test: &str) -> bool {
    require_root_and_tools(test, TOOLS)
}

/// pod-a (`pa0`, 10.210.0.1/24) ↔ pod-b (`pb0`, 10.210.0.2/24).
struct Pods {
    a: Netns,
    b: Netns,
}

impl Pods {
    fn new() -> Pods {
        let (a, b) = pods("pa0", "10.210.0.1/24", "pb0", "10.210.0.2/24");
        Pods { a, b }
    }
}

/// A namespace's inode as the agent reports it (`periscope.netns.inode`).
fn inode(ns: &Netns) -> String {
    ns.inode().to_string()
}

/// Sends `count` UDP datagrams of `size` bytes from `src` (in namespace `from`) to `dst` (in
/// namespace `to`, where a socket receives them); returns (sent, received).
fn udp(from: &str, src: Ipv4Addr, to: &str, dst: Ipv4Addr, count: u64, size: usize) -> (u64, u64) {
    let traffic = UdpTraffic {
        from: (from, SocketAddrV4::new(src, 0)),
        to: (to, SocketAddrV4::new(dst, UDP_PORT)),
        count,
        size,
        pause_every: 50,
        idle: Duration::from_millis(300),
    };
    let o = send_udp(&traffic, |_| {});
    (o.sent, o.received)
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

/// Series of `metric` in the file so far (lines still being written are left out).
fn series_now(out: &Path, metric: &str) -> Vec<Series> {
    sum_series(&read_metrics(out), metric)
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

fn stop(agent: Background, signal: i32) -> std::process::Output {
    agent.signal(signal);
    agent.wait(STOP_TIMEOUT)
}

/// The agent's programs (periscope programs loaded after `baseline`), then a clean stop
/// (SIGTERM; a last counters read and flow export happen then; it must exit 0).
fn programs_then_stop(agent: Background, baseline: u64) -> (BTreeSet<u64>, Output) {
    let ours = periscope_programs()
        .into_iter()
        .filter(|p| *p > baseline)
        .collect();
    (ours, stop_agent(agent, STOP_TIMEOUT))
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

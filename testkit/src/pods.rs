//! Pods made the way CNI plugins and container runtimes make them, for churn tests: a
//! namespace, an `eth0` wired to a bridge in a [`Node`] namespace, a known amount of traffic a
//! few hundred milliseconds after the devices are up, then deleted. Six [`Pattern`]s cover the
//! ways a device reaches a pod (made outside and moved in, made inside with the other end
//! moved out, made in place with `netns`, a macvlan on a node parent moved in) and the ways a
//! namespace is held (a bind mount, a process only, a bind mount added later).
//!
//! Each pod is recorded in a [`PodRecord`]: the ground truth (what the generator sent, what the
//! kernel counted on both ends), the namespace's inode *and* cookie (inodes are reused within
//! seconds; cookies never are), its names. Every name starts with `ct<pid>` so that other
//! tests' names never collide; namespaces and processes are removed on drop, also on panic,
//! and leftovers of a dead run are swept on the next.

pub mod check;
mod node;
pub mod ns;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub use node::{Node, NODE_ADDR, TCP_PORT, UDP_PORT};
use ns::{ip_in, Counters};

/// How a pod's namespace is made and its `eth0` reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// `ip netns add X; ip link add a type veth peer name b; ip link set b netns X`, `b`
    /// renamed to `eth0` inside (the node end `a` on the bridge).
    HostVeth,
    /// The CNI bridge plugin's way: the veth made inside the pod (`eth0` and the node end), the
    /// node end moved out.
    CniBridge,
    /// `ip link add a type veth peer name eth0 netns X`: made in place.
    AddNetns,
    /// A macvlan on a parent in the node (a veth of its own whose peer is on the bridge), moved
    /// into the pod and renamed `eth0`.
    Macvlan,
    /// A namespace held by a process only (`unshare -n`, no bind mount: Docker's way); devices
    /// moved in by pid; deleted by the process exiting.
    Process,
    /// A namespace made by a process and bind-mounted under `/run/netns` only a moment later
    /// (the process then exits).
    LateMount,
}

impl Pattern {
    /// Every pattern, in the order pods cycle through them.
    pub const ALL: [Pattern; 6] = [
        Pattern::HostVeth,
        Pattern::CniBridge,
        Pattern::AddNetns,
        Pattern::Macvlan,
        Pattern::Process,
        Pattern::LateMount,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::HostVeth => "host-veth",
            Pattern::CniBridge => "cni-bridge",
            Pattern::AddNetns => "add-netns",
            Pattern::Macvlan => "macvlan",
            Pattern::Process => "process",
            Pattern::LateMount => "late-mount",
        }
    }

    /// Whether the namespace has an `ip netns` name (all but [`Pattern::Process`]).
    pub fn named(self) -> bool {
        self != Pattern::Process
    }
}

/// What a pod does once its devices are up.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// UDP datagrams to the node's sink.
    pub udp: u64,
    /// One TCP connection to the node's server (request, answer, close).
    pub tcp: bool,
    /// How long after the devices are up the traffic starts.
    pub quiet: Duration,
    /// During `quiet`, an ICMP echo to the node this often (to time the attachment: the
    /// echoes sent before the device was attached are not counted); none by default.
    pub probe_every: Option<Duration>,
    /// How long after the traffic the pod is deleted (the TCP close handshake finishes).
    pub linger: Duration,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            udp: 20,
            tcp: true,
            quiet: Duration::from_millis(300),
            probe_every: None,
            linger: Duration::from_millis(100),
        }
    }
}

/// One pod's ground truth and identity, kept after it is gone.
#[derive(Clone, Debug)]
pub struct PodRecord {
    /// Its number in the run.
    pub n: u64,
    /// Its name (`ct<pid>p<n>`): the `ip netns` name of named patterns.
    pub name: String,
    pub pattern: Pattern,
    /// The `periscope.netns.name` it must be reported with (`None`: held by a process only).
    pub netns_name: Option<String>,
    /// `periscope.netns.inode`.
    pub inode: u64,
    /// `periscope.netns.cookie`.
    pub cookie: u64,
    pub addr: Ipv4Addr,
    /// The pod's device (`eth0`) and the name it had before a rename, if any.
    pub eth0: String,
    pub temp_name: Option<String>,
    /// Its node-side device (on the bridge), in the node namespace.
    pub node_dev: String,
    /// Datagrams the generator's `send_to` accepted.
    pub udp_sent: u64,
    /// Whether a TCP connection was attempted.
    pub tcp_attempted: bool,
    /// The TCP connection's local port, if it completed (request answered). A connect that
    /// failed (rarely: a SYN unanswered) still makes a span, in state `syn_sent`.
    pub tcp_port: Option<u16>,
    /// ICMP echoes sent during `quiet`.
    pub probes_sent: u64,
    /// The kernel's counters when the main traffic started (probes and their ARP).
    pub eth0_before: Counters,
    pub node_dev_before: Counters,
    /// The kernel's counters just before the pod was deleted.
    pub eth0_end: Counters,
    pub node_dev_end: Counters,
    /// When creation started (wall clock, for matching with the agent's timestamps).
    pub created_at: SystemTime,
    /// Creation started → devices up and addressed.
    pub up_after: Duration,
    /// Creation started → deletion done.
    pub lifetime: Duration,
}

/// A pod that exists; deleted on drop.
pub struct Pod {
    rec: PodRecord,
    /// `/run/netns/NAME` or `/proc/PID/ns/net`.
    path: PathBuf,
    node_path: PathBuf,
    holder: Option<Child>,
    mounted: bool,
    macvlan_parent: Option<String>,
    started: Instant,
    deleted: bool,
}

/// The address of pod `n`: 10.178.(1..=250).(2..=251).
pub fn pod_addr(n: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, 178, 1 + ((n / 250) % 250) as u8, 2 + (n % 250) as u8)
}

impl Pod {
    /// Creates pod `n` with `pattern`, wired to `node`: `eth0` up with its address, the node
    /// end on `br0`.
    pub fn create(node: &Node, n: u64, pattern: Pattern) -> Pod {
        let started = Instant::now();
        let created_at = SystemTime::now();
        let name = ns::name('p', n);
        let node_dev = ns::name('v', n);
        let temp = ns::name('t', n);
        let node_path = node.path();
        let node_ip = |args: &[&str]| ip_in(&node_path, args);
        let mut pod = Pod {
            rec: PodRecord {
                n,
                name: name.clone(),
                pattern,
                netns_name: pattern.named().then(|| name.clone()),
                inode: 0,
                cookie: 0,
                addr: pod_addr(n),
                eth0: "eth0".into(),
                temp_name: None,
                node_dev: node_dev.clone(),
                udp_sent: 0,
                tcp_attempted: false,
                tcp_port: None,
                probes_sent: 0,
                eth0_before: Counters::default(),
                node_dev_before: Counters::default(),
                eth0_end: Counters::default(),
                node_dev_end: Counters::default(),
                created_at,
                up_after: Duration::ZERO,
                lifetime: Duration::ZERO,
            },
            path: Path::new("/run/netns").join(&name),
            node_path: node_path.clone(),
            holder: None,
            mounted: false,
            macvlan_parent: None,
            started,
            deleted: false,
        };
        // The namespace, and where `ip link set ... netns` finds it.
        let target = if matches!(pattern, Pattern::Process | Pattern::LateMount) {
            let (child, pid) = hold_netns();
            pod.holder = Some(child);
            pod.path = ns::proc_path(pid);
            pid.to_string()
        } else {
            ns::ip(&["netns", "add", &name]);
            pod.mounted = true;
            name.clone()
        };
        let pod_path = pod.path.clone();
        ns::run_in(&pod_path, ns::quiet_here);
        let pod_ip = |args: &[&str]| ip_in(&pod_path, args);
        match pattern {
            Pattern::HostVeth | Pattern::Process | Pattern::LateMount => {
                node_ip(&[
                    "link", "add", &node_dev, "type", "veth", "peer", "name", &temp,
                ]);
                node_ip(&["link", "set", &temp, "netns", &target]);
                pod_ip(&["link", "set", &temp, "name", "eth0"]);
                pod.rec.temp_name = Some(temp.clone());
            }
            Pattern::CniBridge => {
                pod_ip(&[
                    "link", "add", "eth0", "type", "veth", "peer", "name", &node_dev,
                ]);
                let node_name = node.name().to_string();
                pod_ip(&["link", "set", &node_dev, "netns", &node_name]);
            }
            Pattern::AddNetns => {
                node_ip(&[
                    "link", "add", &node_dev, "type", "veth", "peer", "name", "eth0", "netns",
                    &target,
                ]);
            }
            Pattern::Macvlan => {
                let parent = ns::name('q', n);
                node_ip(&[
                    "link", "add", &parent, "type", "veth", "peer", "name", &node_dev,
                ]);
                pod.macvlan_parent = Some(parent.clone());
                node_ip(&["link", "set", &parent, "up"]);
                node_ip(&[
                    "link", "add", &temp, "link", &parent, "type", "macvlan", "mode", "bridge",
                ]);
                node_ip(&["link", "set", &temp, "netns", &target]);
                pod_ip(&["link", "set", &temp, "name", "eth0"]);
                pod.rec.temp_name = Some(temp.clone());
            }
        }
        node_ip(&["link", "set", &node_dev, "master", "br0"]);
        node_ip(&["link", "set", &node_dev, "up"]);
        let cidr = format!("{}/16", pod.rec.addr);
        pod_ip(&["addr", "add", &cidr, "dev", "eth0"]);
        pod_ip(&["link", "set", "eth0", "up"]);
        pod.rec.up_after = started.elapsed();
        pod.rec.inode = ns::inode(&pod.path);
        pod.rec.cookie = ns::run_in(&pod.path, ns::own_cookie);
        pod
    }

    /// What is known of it so far.
    pub fn record(&self) -> &PodRecord {
        &self.rec
    }

    /// Waits `t.quiet` from when the devices came up (probing, if asked; a late-mount pod is
    /// bind-mounted 100 ms in), then sends the traffic and waits `t.linger`.
    pub fn traffic(&mut self, t: &Traffic) {
        let up = self.started + self.rec.up_after;
        let traffic_at = up + t.quiet;
        let path = self.path.clone();
        let probes = std::thread::scope(|s| {
            let prober = s.spawn(|| {
                ns::enter(&path);
                let mut sent = 0;
                if let Some(every) = t.probe_every {
                    let sock = ping_socket();
                    while Instant::now() + every <= traffic_at {
                        if send_echo(&sock, sent as u16) {
                            sent += 1;
                        }
                        std::thread::sleep(every);
                    }
                }
                sent
            });
            if self.rec.pattern == Pattern::LateMount {
                sleep_until(up + Duration::from_millis(100));
                self.late_mount();
            }
            prober
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        self.rec.probes_sent = probes;
        sleep_until(traffic_at);
        self.rec.eth0_before = ns::counters(&self.path, "eth0");
        self.rec.node_dev_before = ns::counters(&self.node_path, &self.rec.node_dev);
        let (addr, udp, tcp) = (self.rec.addr, t.udp, t.tcp);
        let (sent, port) = ns::run_in(&self.path, move || {
            (
                send_udp(addr, udp),
                tcp.then(|| tcp_exchange(addr)).flatten(),
            )
        });
        self.rec.udp_sent = sent;
        self.rec.tcp_attempted = tcp;
        self.rec.tcp_port = port;
        std::thread::sleep(t.linger);
        self.rec.eth0_end = ns::counters(&self.path, "eth0");
        self.rec.node_dev_end = ns::counters(&self.node_path, &self.rec.node_dev);
    }

    /// Bind-mounts the process's namespace as `/run/netns/NAME` and lets the process go.
    fn late_mount(&mut self) {
        let pid = self
            .holder
            .as_ref()
            .map(Child::id)
            .expect("a holder process");
        ns::ip(&["netns", "attach", &self.rec.name, &pid.to_string()]);
        self.mounted = true;
        self.path = Path::new("/run/netns").join(&self.rec.name);
        self.kill_holder();
    }

    fn kill_holder(&mut self) {
        if let Some(mut c) = self.holder.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes it (the namespace, its holder, a macvlan parent); returns the record.
    pub fn delete(mut self) -> PodRecord {
        self.remove();
        self.rec.lifetime = self.started.elapsed();
        self.rec.clone()
    }

    fn remove(&mut self) {
        if self.deleted {
            return;
        }
        self.deleted = true;
        if self.mounted {
            best_effort(Command::new("ip").args(["netns", "del", &self.rec.name]));
        }
        self.kill_holder();
        if let Some(parent) = self.macvlan_parent.take() {
            best_effort(
                Command::new("nsenter")
                    .arg(format!("--net={}", self.node_path.display()))
                    .args(["ip", "link", "del", &parent]),
            );
        }
    }

    /// Creates pod `n`, sends `t`, deletes it: its record.
    pub fn run(node: &Node, n: u64, pattern: Pattern, t: &Traffic) -> PodRecord {
        let mut pod = Pod::create(node, n, pattern);
        pod.traffic(t);
        pod.delete()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.remove();
    }
}

fn best_effort(cmd: &mut Command) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "warning: {cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("warning: {cmd:?}: {e}"),
    }
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// A process in a namespace of its own (`unshare --net sleep 60`: gone within a minute even
/// if the test is killed), once it is in it.
// The child is handed to the pod, which kills and waits for it (`kill_holder`).
#[allow(clippy::zombie_processes)]
fn hold_netns() -> (Child, u32) {
    let mut child = Command::new("unshare")
        .args(["--net", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start `unshare --net sleep 60`");
    let pid = child.id();
    let ours = ns::inode(Path::new("/proc/self/ns/net"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let theirs = std::fs::metadata(ns::proc_path(pid)).map(|m| m.ino());
        if theirs.is_ok_and(|ino| ino != ours) {
            return (child, pid);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unshare --net did not enter a namespace within 5 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `n` datagrams of 32 bytes to the node's sink, 1 ms apart; how many were accepted.
fn send_udp(from: Ipv4Addr, n: u64) -> u64 {
    let sock = UdpSocket::bind(SocketAddrV4::new(from, 0)).expect("bind the generator");
    let to = SocketAddrV4::new(NODE_ADDR, UDP_PORT);
    let mut sent = 0;
    for _ in 0..n {
        if sock.send_to(&[0x5a; 32], to).is_ok() {
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// One connection to the node's server: `hello`, `ok`, close. Its local port if answered.
fn tcp_exchange(from: Ipv4Addr) -> Option<u16> {
    let mut c = TcpStream::connect_timeout(
        &SocketAddrV4::new(NODE_ADDR, TCP_PORT).into(),
        Duration::from_secs(2),
    )
    .ok()?;
    let port = c.local_addr().ok()?.port();
    debug_assert_eq!(
        c.local_addr().ok().map(|a| a.ip()),
        Some(std::net::IpAddr::V4(from))
    );
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    c.write_all(b"hello").ok()?;
    let mut buf = [0u8; 2];
    c.read_exact(&mut buf).ok()?;
    Some(port)
}

/// An ICMP datagram ("ping") socket of the calling thread's namespace.
fn ping_socket() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain socket call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
    assert!(fd >= 0, "ping socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd nobody else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// An ICMP echo request to the node (the kernel sets the id and checksum).
fn send_echo(sock: &std::os::fd::OwnedFd, seq: u16) -> bool {
    use std::os::fd::AsRawFd;
    let s = seq.to_be_bytes();
    let msg = [8u8, 0, 0, 0, 0, 0, s[0], s[1]];
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(NODE_ADDR).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid buffer and sockaddr_in of the stated sizes.
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    rc == msg.len() as isize
}

/// Runs `count` pods one after another, cycling through the patterns (interleaved), each with
/// `t`; their records. `first` numbers the first pod.
pub fn churn(node: &Node, first: u64, count: u64, t: &Traffic) -> Vec<PodRecord> {
    (first..first + count)
        .map(|n| Pod::run(node, n, Pattern::ALL[(n % 6) as usize], t))
        .collect()
}

/// The agent's configuration for pod churn: `tcx` on the pods' and node's devices, the socket
/// receivers, `connections`, `flow` and `identity`, metrics and spans to files; logs at `log_level`.
pub fn churn_agent_config(metrics: &Path, traces: &Path, log_level: &str) -> String {
    format!(
        "receivers:\n  sockops: {{poll_interval: 20ms}}\n  tcp_udp: {{poll_interval: 20ms}}\n  \
         tcx: {{interfaces: {{include: [eth0, lo, br0, \"ct*\"]}}, events: none, counters_interval: 250ms}}\n\
         processors:\n  connections: {{interval: 1s}}\n  flow: {{interval: 1s}}\n  identity: {{}}\n\
         exporters:\n  file/metrics: {{path: {}, flush_interval: 200ms}}\n  file/traces: {{path: {}, flush_interval: 200ms}}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [sockops, tcp_udp, tcx], processors: [connections, flow, identity], exporters: [file/metrics]}}\n    \
         traces: {{receivers: [sockops, tcp_udp], processors: [connections, flow, identity], exporters: [file/traces]}}\n  \
         telemetry: {{logs: {{level: {}}}, metrics: {{enabled: false}}}}\n",
        crate::yaml_path(metrics),
        crate::yaml_path(traces),
        log_level
    )
}

#[cfg(test)]
mod tests;

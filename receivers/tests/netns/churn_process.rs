//! Namespaces without a bind mount (the Docker way) and namespaces bind-mounted only after
//! they were made (containerd pins a namespace a thread made; `ip netns attach`).

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

use periscope_pipeline::model::{DeviceRef, Direction, Event, Transport};
use periscope_receivers::netdev::{CgroupNamespaces, NamespacesConfig};

use super::churn::{fresh, Agent};
use super::*;

/// `NS_GET_ID` on an nsfs fd: the namespace's cookie (kernel ≥ 6.18).
fn cookie_of(path: &Path) -> u64 {
    let f = std::fs::File::open(path).expect("open ns");
    let mut id = 0u64;
    // SAFETY: NS_GET_ID writes one u64.
    let rc = unsafe {
        libc::ioctl(
            f.as_raw_fd(),
            0x8008_b70d_u64 as libc::c_ulong as _,
            &mut id as *mut u64,
        )
    };
    assert_eq!(rc, 0, "NS_GET_ID: {}", std::io::Error::last_os_error());
    id
}

/// Runs `f` on a thread inside the namespace at `path`.
fn in_ns<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(path).expect("open ns");
            // SAFETY: valid nsfs fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A pod whose namespace only its process holds, in a cgroup the receiver watches: attached,
/// counted exactly, and when the process exits its final counters arrive marked `last`, its
/// devices and namespace are retired (names kept, with the process's cgroup), and its links
/// released.
#[test]
fn a_namespace_held_only_by_a_process_counts_to_its_end() {
    let _serial = serial_root!();
    let root = Path::new("/sys/fs/cgroup/unified");
    let mut cgroups = Cgroups::new();
    let dir = cgroups.mkdir(root.join(format!("periscope-cq-{}", std::process::id())));
    let node = fresh(&Netns::unique_name());
    // The node's namespace is in scope through a process of the cgroup living in it.
    let _node_proc = Background::spawn(
        periscope_testkit::cgroup::command_in(&dir, &node, "sleep").arg("60"),
        "sleep in the node",
    );
    let agent = Agent::start(
        NamespacesConfig::Cgroup(CgroupNamespaces {
            cgroup: dir.clone(),
        }),
        &[],
    );
    let (pod_proc, pid) = holder_in(Some(&dir));
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let inode = std::fs::metadata(&ns_path).expect("stat").ino() as u32;
    let cookie = cookie_of(&ns_path);
    node.ip(&[
        "link",
        "add",
        "cqd",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &pid.to_string(),
    ]);
    node.ip(&["addr", "add", "10.203.30.1/24", "dev", "cqd"]);
    node.ip(&["link", "set", "cqd", "up"]);
    let nsenter = |args: &[&str]| {
        run_ok(
            Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-n", "ip"])
                .args(args),
            Duration::from_secs(10),
        )
    };
    nsenter(&["addr", "add", "10.203.30.2/24", "dev", "eth0"]);
    nsenter(&["link", "set", "eth0", "up"]);
    nsenter(&["link", "set", "lo", "up"]);
    // Neighbours resolved first (ICMP: not counted as UDP).
    run_ok(
        Command::new("nsenter").args([
            "-t",
            &pid.to_string(),
            "-n",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "10.203.30.1",
        ]),
        Duration::from_secs(10),
    );
    let ifindex = in_ns(&ns_path, || {
        // SAFETY: NUL-terminated name.
        unsafe { libc::if_nametoindex(c"eth0".as_ptr()) }
    });
    let pod_ref = DeviceRef {
        netns: NetnsId { inode, cookie },
        ifindex,
    };
    agent.wait_attached(pod_ref, "eth0");
    let known = agent.namespaces.get(&pod_ref.netns).expect("registered");
    let rel = format!("/periscope-cq-{}", std::process::id());
    assert_eq!(known.cgroup.as_deref(), Some(rel.as_str()), "{known:?}");
    // 300 datagrams from the pod, read in the node.
    const SENT: u64 = 300;
    let sink = node.run(|| UdpSocket::bind("10.203.30.1:7000").expect("bind sink"));
    sink.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    // Read while sending: a socket buffer holds ~256 of them.
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while got < SENT && sink.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    });
    in_ns(&ns_path, || {
        let s = UdpSocket::bind("10.203.30.2:0").expect("bind");
        for i in 0..SENT {
            s.send_to(&[0x5a; 100], "10.203.30.1:7000").expect("send");
            if i % 32 == 31 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let got = reader.join().expect("reader");
    assert_eq!(got, SENT, "datagrams lost on the way");
    // The process exits: nothing holds the namespace but the agent, which must let go.
    pod_proc.signal(libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while agent.namespaces.is_alive(&pod_ref.netns) || agent.devices.is_alive(&pod_ref) {
        assert!(Instant::now() < deadline, "the namespace was not retired");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Retired, still named.
    assert_eq!(
        agent.devices.get(&pod_ref).map(|d| d.name).as_deref(),
        Some("eth0")
    );
    assert_eq!(
        agent
            .namespaces
            .get(&pod_ref.netns)
            .and_then(|n| n.cgroup)
            .as_deref(),
        Some(rel.as_str())
    );
    let events = agent.stop_events();
    let last: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::DeviceCounters(c)
                if c.device == pod_ref
                    && c.direction == Direction::Egress
                    && c.transport == Transport::Udp =>
            {
                Some(*c)
            }
            _ => None,
        })
        .collect();
    let final_point = last.last().expect("counters of the pod's eth0");
    assert!(
        final_point.last,
        "the final point is marked last: {final_point:?}"
    );
    assert_eq!(final_point.packets, SENT);
    assert_eq!(
        last.iter().filter(|c| c.last).count(),
        1,
        "one final point, nothing after it"
    );
}

/// A namespace made by a thread that exits at once (containerd's way: the namespace is held
/// by an fd, no process is in it), bind-mounted under /run/netns only later: the watcher of
/// every namespace must report it when the mount appears, with its name.
#[test]
fn a_namespace_bind_mounted_after_its_maker_left_is_found() {
    let _serial = serial_root!();
    let (tx, rx) = unbounded();
    let watcher = watch(NamespaceScope::All, tx).expect("watch");
    let mut rx = Events::new(rx);
    // A thread makes the namespace and leaves; this process keeps an fd on it.
    let held = std::thread::spawn(|| {
        // SAFETY: changes this thread's namespace only; the thread ends right after.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        std::fs::File::open("/proc/thread-self/ns/net").expect("open own ns")
    })
    .join()
    .expect("thread");
    let inode = held.metadata().expect("stat").ino() as u32;
    // Not reachable through any process or mount: the watcher cannot see it yet.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !rx.rest()
            .iter()
            .any(|e| matches!(e, Discovery::NamespaceAdded(ns) if ns.id.inode == inode)),
        "reported before it was reachable"
    );
    // `ip netns attach`'s way: the file first, the mount a moment later.
    let name = Netns::unique_name();
    let path = Path::new("/run/netns").join(&name);
    std::fs::write(&path, b"").expect("create the mount point");
    std::thread::sleep(Duration::from_millis(50));
    let fd_path = format!("/proc/{}/fd/{}", std::process::id(), held.as_raw_fd());
    run_ok(
        Command::new("mount").args(["--bind", &fd_path]).arg(&path),
        Duration::from_secs(10),
    );
    let _guard = Netns::adopt(&name);
    drop(held);
    let (ev, _) = rx.expect(
        "the late-mounted namespace",
        |e| matches!(e, Discovery::NamespaceAdded(ns) if ns.id.inode == inode),
    );
    match ev {
        Discovery::NamespaceAdded(ns) => {
            assert_eq!(ns.name.as_deref(), Some(name.as_str()));
            assert_eq!(ns.id.cookie, cookie_of(&path));
        }
        _ => unreachable!(),
    }
    drop(watcher);
}

/// The receiver attaches to a namespace listed by a name that is bind-mounted only after the
/// namespace was made and given its devices.
#[test]
fn a_listed_namespace_mounted_late_is_attached() {
    let _serial = serial_root!();
    let (node_name, pod_name) = (Netns::unique_name(), Netns::unique_name());
    let agent = Agent::listed(&[&node_name, &pod_name]);
    let node = fresh(&node_name);
    // A process makes the namespace; its device is added before anything names it.
    let (holder, pid) = holder_in(None);
    node.ip(&[
        "link",
        "add",
        "cql",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &pid.to_string(),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    run_ok(
        Command::new("ip").args(["netns", "attach", &pod_name, &pid.to_string()]),
        Duration::from_secs(10),
    );
    let pod = Netns::adopt(&pod_name);
    holder.signal(libc::SIGKILL);
    pod.disable_ipv6();
    let pod_ref = super::churn::device_ref(&pod, "eth0");
    agent.wait_attached(pod_ref, "eth0");
    let node_ref = super::churn::device_ref(&node, "cql");
    super::churn::wire(&node, "cql", &pod, "eth0", 31);
    let sent = super::churn::send(&node, &pod, 31, 220);
    let counted = agent.stop();
    assert_eq!(counted.udp(pod_ref, Direction::Egress), sent);
    assert_eq!(counted.udp(node_ref, Direction::Ingress), sent);
    assert_eq!(
        counted
            .1
            .get(&pod_ref)
            .and_then(|d| d.netns_name)
            .as_deref(),
        Some(pod_name.as_str())
    );
}

/// A namespace first found through its process (no name), bind-mounted under a name later
/// (`ip netns attach`): the namespace and the devices already attached in it take the name.
#[test]
fn a_name_that_comes_later_reaches_the_namespace_and_its_devices() {
    let _serial = serial_root!();
    let root = Path::new("/sys/fs/cgroup/unified");
    let mut cgroups = Cgroups::new();
    let dir = cgroups.mkdir(root.join(format!("periscope-cqn-{}", std::process::id())));
    let agent = Agent::start(
        NamespacesConfig::Cgroup(CgroupNamespaces {
            cgroup: dir.clone(),
        }),
        &[],
    );
    let (holder, pid) = holder_in(Some(&dir));
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let lo = DeviceRef {
        netns: NetnsId {
            inode: std::fs::metadata(&ns_path).expect("stat").ino() as u32,
            cookie: cookie_of(&ns_path),
        },
        ifindex: 1,
    };
    agent.wait_attached(lo, "lo");
    assert_eq!(agent.devices.get(&lo).and_then(|d| d.netns_name), None);
    let name = Netns::unique_name();
    run_ok(
        Command::new("ip").args(["netns", "attach", &name, &pid.to_string()]),
        Duration::from_secs(10),
    );
    let _guard = Netns::adopt(&name);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ns_name = agent.namespaces.get(&lo.netns).and_then(|n| n.name);
        let dev_name = agent.devices.get(&lo).and_then(|d| d.netns_name);
        if ns_name.as_deref() == Some(name.as_str()) && dev_name.as_deref() == Some(name.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late name did not arrive: namespace {ns_name:?}, device {dev_name:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(holder);
    drop(agent.stop_events());
}

/// A process holding a namespace of its own (`unshare -n sleep 60`), in cgroup `dir` if given,
/// once it runs in it; and its pid.
fn holder_in(dir: Option<&Path>) -> (Background, u32) {
    let mut cmd = match dir {
        Some(dir) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "echo $$ > {}/cgroup.procs && exec unshare -n sleep 60",
                dir.display()
            ));
            c
        }
        None => {
            let mut c = Command::new("unshare");
            c.args(["-n", "sleep", "60"]);
            c
        }
    };
    let holder = Background::spawn(&mut cmd, "unshare -n sleep");
    let pid = holder.pid();
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "unshare -n sleep did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    (holder, pid)
}

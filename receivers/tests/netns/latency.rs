//! How fast the watcher reports what appears, and what it costs while idle.

use super::*;

#[test]
fn watch_latency() {
    let _serial = serial_root!();
    let a = Netns::new();
    let (tx, rx) = unbounded();
    let watcher = watch(NamespaceScope::All, tx).expect("watch");
    let mut rx = Events::new(rx);
    let na = ns_named(&mut rx, &a);
    let trials = 25;

    // A new device in a namespace already watched.
    let mut dev = Vec::new();
    for i in 0..trials {
        let name = format!("lt{i}");
        let t0 = Instant::now();
        ip(&[
            "-n",
            a.name(),
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("lu{i}"),
        ]);
        let (idx, at) = device_added(&mut rx, na.id, &name);
        dev.push(at - t0);
        ip(&["-n", a.name(), "link", "del", &name]);
        device_removed(&mut rx, na.id, idx);
    }

    // A new namespace, then a veth moved into it.
    let pid = std::process::id() % 100000;
    let mut nsl = Vec::new();
    let mut moved = Vec::new();
    let mut moved_cmd = Vec::new();
    let mut moved_after = Vec::new();
    for _ in 0..trials {
        let t0 = Instant::now();
        let n = Netns::new();
        let (ev, at) = rx.expect(
            "NamespaceAdded",
            |e| matches!(e, Discovery::NamespaceAdded(ns) if ns.name.as_deref() == Some(n.name())),
        );
        let Discovery::NamespaceAdded(nn) = ev else {
            unreachable!()
        };
        nsl.push(at - t0);
        let v = format!("ptm{pid}");
        let _link = HostLink(v.clone());
        ip(&[
            "link",
            "add",
            &v,
            "type",
            "veth",
            "peer",
            "name",
            &format!("ptn{pid}"),
        ]);
        let t1 = Instant::now();
        ip(&["link", "set", &v, "netns", n.name()]);
        let t2 = Instant::now();
        let (_, at) = device_added(&mut rx, nn.id, &v);
        moved.push(at - t1);
        moved_after.push(at.saturating_duration_since(t2));
        // The kernel announces the device in its new namespace only after an RCU grace
        // period or two (`synchronize_net`), which the command also waits for.
        moved_cmd.push(t2 - t1);
        ip_quiet(&["-n", n.name(), "link", "del", &v]);
        drop(n);
        rx.expect(
            "NamespaceRemoved",
            |e| matches!(e, Discovery::NamespaceRemoved(id) if *id == nn.id),
        );
    }
    drop(watcher);
    let (c50, c99) = percentiles(moved_cmd);
    eprintln!("`ip link set netns` itself took p50 {c50:?}, p99 {c99:?}");
    let (m50, m99) = percentiles(moved);
    eprintln!("latency, device moved into the new namespace (from `ip link set netns` start): p50 {m50:?}, p99 {m99:?}");
    let (a50, a99) = percentiles(moved_after);
    eprintln!("latency, device moved (after the command returned): p50 {a50:?}, p99 {a99:?}");
    assert!(
        a99 < Duration::from_millis(50),
        "moved: p99 {a99:?} after the command ≥ 50 ms"
    );
    for (what, v) in [
        (
            "device added in a watched namespace (from `ip link add` start)",
            dev,
        ),
        ("namespace added (from `ip netns add` start)", nsl),
    ] {
        let (p50, p99) = percentiles(v);
        eprintln!("latency, {what}: p50 {p50:?}, p99 {p99:?} ({trials} trials)");
        assert!(
            p99 < Duration::from_millis(50),
            "{what}: p99 {p99:?} ≥ 50 ms"
        );
    }
}

/// CPU time (user + system) of this process's thread named `comm`, from /proc.
fn thread_cpu(comm: &str) -> Option<Duration> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        if name == comm {
            let f: Vec<&str> = rest.split(' ').collect();
            let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            return Some(Duration::from_millis(ticks * 1000 / hz));
        }
    }
    None
}

#[test]
fn watch_finds_unnamed_namespaces_of_processes_and_idles_cheaply() {
    let _serial = serial_root!();
    let (tx, rx) = unbounded();
    let watcher = watch(NamespaceScope::All, tx).expect("watch");
    let mut rx = Events::new(rx);
    // Idle cost: periodic rescans only.
    std::thread::sleep(Duration::from_millis(300));
    let before = thread_cpu("netns-watch").expect("watcher thread");
    std::thread::sleep(Duration::from_secs(2));
    let idle = thread_cpu("netns-watch").expect("watcher thread") - before;
    eprintln!("watcher idle CPU: {idle:?} over 2 s");
    assert!(
        idle < Duration::from_millis(200),
        "watcher busy while idle: {idle:?}"
    );

    let mut found = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let mut child = Command::new("unshare")
            .args(["-n", "sleep", "30"])
            .spawn()
            .expect("spawn unshare");
        let pid = child.id();
        let (ev, at) = rx.expect("NamespaceAdded of unshare -n", |e| {
            matches!(e, Discovery::NamespaceAdded(n) if n.path == Path::new(&format!("/proc/{pid}/ns/net")))
        });
        let Discovery::NamespaceAdded(ns) = ev else {
            unreachable!()
        };
        found.push(at - t0);
        assert_eq!(ns.name, None);
        device_added(&mut rx, ns.id, "lo");
        let _ = child.kill();
        let _ = child.wait();
        rx.expect(
            "NamespaceRemoved",
            |e| matches!(e, Discovery::NamespaceRemoved(id) if *id == ns.id),
        );
    }
    let (p50, p99) = percentiles(found);
    eprintln!(
        "latency, unnamed namespace (from spawning `unshare -n sleep`): p50 {p50:?}, p99 {p99:?}"
    );
    // Includes spawning two programs and creating a namespace on a busy machine: only a
    // regression to the periodic scan's pace (≥ 250 ms) must fail.
    assert!(
        p99 < Duration::from_millis(150),
        "unnamed namespace: p99 {p99:?}"
    );
    drop(watcher);
}

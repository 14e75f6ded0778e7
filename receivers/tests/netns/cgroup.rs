//! A cgroup scope: the namespaces of the processes in a cgroup subtree, as they come and go.

use super::*;

#[test]
fn cgroup_scope_takes_namespaces_of_the_subtree() {
    let _serial = serial_root!();
    let root = Path::new("/sys/fs/cgroup/unified");
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    assert!(
        mounts.contains(" /sys/fs/cgroup/unified cgroup2 "),
        "cgroup v2 is expected at {}",
        root.display()
    );
    let a = Netns::new();
    let b = Netns::new();
    // Processes first: dropped (killed) after the cgroups, which kill what is in them.
    let mut children = Vec::new();
    let mut cgroups = Cgroups::new();
    let dir = cgroups.mkdir(root.join(format!("periscope-t-{}", std::process::id())));
    cgroups.mkdir(dir.join("sub"));
    let sleeper = Background::spawn(
        Command::new("ip").args(["netns", "exec", b.name(), "sleep", "30"]),
        "sleep in b",
    );
    let spid = sleeper.pid();
    children.push(sleeper);
    // `ip netns exec` execs sleep in the same process once it has entered the namespace.
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(format!("/proc/{spid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "sleep did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::write(dir.join("sub/cgroup.procs"), spid.to_string()).expect("move to cgroup");

    let (tx, rx) = unbounded();
    let watcher = watch(NamespaceScope::Cgroup(dir.clone()), tx).expect("watch");
    let mut rx = Events::new(rx);
    let nb = ns_named(&mut rx, &b);
    assert_eq!(
        nb.name.as_deref(),
        Some(b.name()),
        "named after its bind mount"
    );
    // A process outside the cgroup, in namespace c, does not bring c in.
    let c = Netns::new();
    children.push(Background::spawn(
        Command::new("ip").args(["netns", "exec", c.name(), "sleep", "30"]),
        "sleep in c",
    ));
    // A process that joins the cgroup from namespace a and then execs: seen through the proc
    // connector, without waiting for the periodic rescan.
    // (`ip netns exec` remounts /sys, so the process cannot move itself: the test does, and
    // then lets it exec.)
    let (joiner, mut go) = Background::spawn_with_stdin(
        Command::new("ip").args([
            "netns",
            "exec",
            a.name(),
            "sh",
            "-c",
            "read go && exec sleep 30",
        ]),
        "sh in a",
    );
    let jpid = joiner.pid();
    children.push(joiner);
    // Once it runs sh it is in a (before, it was `ip` in the host namespace).
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(format!("/proc/{jpid}/comm")).unwrap_or_default() != "sh\n" {
        assert!(Instant::now() < deadline, "sh did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::fs::write(dir.join("sub/cgroup.procs"), jpid.to_string()).expect("move to cgroup");
    let t0 = Instant::now();
    std::io::Write::write_all(&mut go, b"go\n").expect("let it exec");
    let na = ns_named(&mut rx, &a);
    eprintln!(
        "cgroup scope: namespace of a process that joined the cgroup found after {:?}",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(600)); // past a periodic rescan

    // The processes leave: their namespaces leave the scope at the next rescan.
    children.clear();
    for id in [nb.id, na.id] {
        rx.expect(
            "NamespaceRemoved",
            |e| matches!(e, Discovery::NamespaceRemoved(i) if *i == id),
        );
    }
    drop(watcher);
    for e in rx.rest() {
        if let Discovery::NamespaceAdded(ns) = e {
            panic!(
                "only a and b are in the cgroup, got {ns:?} (c is {})",
                inode(&c)
            );
        }
    }
    assert!(watch(
        NamespaceScope::Cgroup(root.join("no-such-cgroup")),
        unbounded().0
    )
    .is_err());
}

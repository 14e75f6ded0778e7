//! `scan`, `list_devices`, `run_in` and `netns_cookie` on namespaces the test makes, with what each costs.

use super::*;

#[test]
fn scan_finds_named_namespaces_with_cookies_and_devices() {
    let _serial = serial_root!();
    let a = Netns::new();
    let b = Netns::new();
    ip(&[
        "-n",
        a.name(),
        "link",
        "add",
        "veth0",
        "type",
        "veth",
        "peer",
        "name",
        "veth1",
        "netns",
        b.name(),
    ]);

    let started = Instant::now();
    let all = scan().expect("scan");
    let scan_time = started.elapsed();
    let host = &all[0];
    assert!(host.path.ends_with("self/ns/net"), "host first: {host:?}");
    let find = |ns: &Netns| {
        all.iter()
            .find(|n| n.id.inode == inode(ns))
            .unwrap_or_else(|| panic!("scan misses {}: {all:?}", ns.name()))
            .clone()
    };
    let (na, nb) = (find(&a), find(&b));
    assert_eq!(na.name.as_deref(), Some(a.name()));
    assert_eq!(nb.name.as_deref(), Some(b.name()));
    let inodes: HashSet<u32> = all.iter().map(|n| n.id.inode).collect();
    assert_eq!(inodes.len(), all.len(), "deduplicated by inode");
    let cookies: HashSet<u64> = all.iter().map(|n| n.id.cookie).collect();
    assert_eq!(cookies.len(), all.len(), "distinct cookies: {all:?}");
    assert!(!cookies.contains(&0));
    eprintln!(
        "scan: {} namespaces in {scan_time:?} (with cookies)",
        all.len()
    );

    let ha = NetnsHandle::open(&na).expect("open a");
    assert_eq!(netns_cookie(&ha).expect("cookie"), na.id.cookie);
    let devices = run_in(&ha, list_devices).expect("run_in").expect("list");
    let lo = devices.iter().find(|d| d.name == "lo").expect("lo");
    assert!(lo.loopback && lo.kind.is_empty(), "{lo:?}");
    let veth = devices.iter().find(|d| d.name == "veth0").expect("veth0");
    assert_eq!(veth.kind, "veth");
    assert!(!veth.up && !veth.loopback);
    assert_eq!(veth.ifindex, ifindex(Some(a.name()), "veth0"));
    assert_eq!(devices.len(), 2, "{devices:?}");

    // A handle for a path whose namespace changed is refused.
    let mut wrong = na.clone();
    wrong.id.inode = nb.id.inode;
    assert!(NetnsHandle::open(&wrong).is_err());

    // Cost of entering a namespace from a fresh thread.
    let n = 200;
    let started = Instant::now();
    for _ in 0..n {
        run_in(&ha, || ()).expect("run_in");
    }
    eprintln!(
        "run_in: {:?} per call (thread + setns)",
        started.elapsed() / n
    );
    let started = Instant::now();
    for _ in 0..n {
        netns_cookie(&ha).expect("cookie");
    }
    eprintln!("netns_cookie: {:?} per call", started.elapsed() / n);
    let started = Instant::now();
    for _ in 0..n {
        run_in(&ha, list_devices).expect("run_in").expect("list");
    }
    eprintln!("run_in(list_devices): {:?} per call", started.elapsed() / n);
}

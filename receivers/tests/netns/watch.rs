//! The watcher: namespaces and devices added, moved and removed, nothing leaked; a listed scope.

use super::*;

#[test]
fn watch_reports_namespaces_and_devices_and_leaks_nothing() {
    let _serial = serial_root!();
    let pid = std::process::id();
    let a = Netns::new();
    let fds_before = open_fds();
    {
        let (tx, rx) = unbounded();
        let watcher = watch(NamespaceScope::All, tx).expect("watch");
        let mut rx = Events::new(rx);
        let na = ns_named(&mut rx, &a);
        assert_eq!(na.name.as_deref(), Some(a.name()));
        device_added(&mut rx, na.id, "lo");
        let host = ns_added_host(&mut rx);

        // A new namespace.
        let c = Netns::new();
        let nc = ns_named(&mut rx, &c);
        assert_eq!(nc.name.as_deref(), Some(c.name()));
        assert_ne!(nc.id.cookie, na.id.cookie);
        device_added(&mut rx, nc.id, "lo");

        // A veth in the host, then one end moved into the new namespace.
        let (v, w) = (
            format!("ptv{}", pid % 100000),
            format!("ptw{}", pid % 100000),
        );
        let _link = HostLink(v.clone());
        ip(&["link", "add", &v, "type", "veth", "peer", "name", &w]);
        let (vi, _) = device_added(&mut rx, host, &v);
        assert_eq!(vi, ifindex(None, &v));
        device_added(&mut rx, host, &w);
        ip(&["link", "set", &v, "netns", c.name()]);
        device_removed(&mut rx, host, vi);
        let (ci, _) = device_added(&mut rx, nc.id, &v);
        assert_eq!(ci, ifindex(Some(c.name()), &v));

        // Deleting it removes it in C, and its peer in the host.
        let wi = ifindex(None, &w);
        ip(&["-n", c.name(), "link", "del", &v]);
        device_removed(&mut rx, nc.id, ci);
        device_removed(&mut rx, host, wi);

        // Deleting the namespace.
        let c_inode = inode(&c);
        drop(c);
        rx.expect(
            "NamespaceRemoved",
            |e| matches!(e, Discovery::NamespaceRemoved(id) if *id == nc.id),
        );
        // The watcher let go of it (else it could not die).
        assert!(
            !holds_netns(c_inode),
            "nsfs fd of a removed namespace still open"
        );
        drop(watcher);
    }
    drop(a);
    assert_eq!(open_fds(), fds_before, "fds leaked");
}

/// The host namespace as the watcher reports it.
fn ns_added_host(rx: &mut Events) -> NetnsId {
    let host = periscope_receivers::shared::netns::host_namespace().expect("host");
    let got = ns_added(rx, host.id.inode);
    assert_eq!(
        got.id, host.id,
        "same cookie from watcher and host_namespace()"
    );
    got.id
}

#[test]
fn listed_scope_takes_only_what_is_listed() {
    let _serial = serial_root!();
    let a = Netns::new();
    let b = Netns::new();
    let host = periscope_receivers::shared::netns::host_namespace().expect("host");
    let (tx, rx) = unbounded();
    let later = Netns::unique_name();
    let watcher = watch(
        NamespaceScope::Listed(vec![a.name().to_string(), "host".into(), later.clone()]),
        tx,
    )
    .expect("watch");
    let mut rx = Events::new(rx);
    // A listed namespace that appears later is picked up; an unlisted one is not.
    let c = Netns::create(&later);
    ns_named(&mut rx, &c);
    std::thread::sleep(Duration::from_millis(600)); // past a periodic rescan
    drop(watcher);
    let added: HashSet<u32> = rx
        .rest()
        .into_iter()
        .chain([Discovery::NamespaceAdded(Namespace {
            id: NetnsId {
                inode: inode(&c),
                cookie: 0,
            },
            name: None,
            path: PathBuf::new(),
            cgroup: None,
            cgroup_late: false,
            fd: None,
        })])
        .filter_map(|e| match e {
            Discovery::NamespaceAdded(ns) => Some(ns.id.inode),
            _ => None,
        })
        .collect();
    let want: HashSet<u32> = [inode(&a), host.id.inode, inode(&c)].into();
    assert_eq!(added, want, "b ({}) must not be there", inode(&b));
}

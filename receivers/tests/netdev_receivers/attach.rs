//! How fast new namespaces are loaded and attached, and the watcher-driven receiver attaching listed namespaces as they appear.

use super::*;

/// Load and attach latency for new namespaces, through the attachment manager itself.
#[test]
fn new_namespaces_are_loaded_and_attached_quickly() {
    use periscope_receivers::netdev::{
        AttachOptions, Attacher, DeviceOutcome, Hook, InterfaceFilter, RecordOptions,
    };
    let Some(_serial) = SERIAL.lock_if(bpf_capable(
        "new_namespaces_are_loaded_and_attached_quickly",
    )) else {
        return;
    };
    const N: usize = 8;
    for (what, hooks) in [
        ("xdp", vec![Hook::Xdp]),
        ("tcx", vec![Hook::TcxIngress, Hook::TcxEgress]),
    ] {
        let mut attacher = Attacher::new(
            AttachOptions {
                hooks,
                tcx_fallback: what == "xdp",
                records: RecordOptions {
                    flows: None,
                    dns_ports: [0; 4],
                    flags: periscope_receivers::shared::ebpf::records::PERISCOPE_CFG_RECORDS,
                    sample_rate: 0,
                    bursts: None,
                },
                ring_bytes: 1 << 20,
                pin_root: None,
                interfaces: InterfaceFilter::all(),
            },
            DeviceTable::default(),
        )
        .expect("an attacher");
        let mut loads = Vec::new();
        let mut attaches = Vec::new();
        let mut spaces = Vec::new();
        for _ in 0..N {
            let ns = netns();
            ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
            let n = namespace(&ns);
            let dev = device(&ns, "v0");
            let (load, _) = attacher
                .add_namespace(&n)
                .unwrap_or_else(|e| panic!("load: {e:#}"));
            let t = Instant::now();
            let outcome = attacher
                .add_device(n.id, &dev)
                .unwrap_or_else(|e| panic!("attach: {e:#}"));
            attaches.push(t.elapsed());
            assert!(
                matches!(outcome, DeviceOutcome::Attached { .. }),
                "{outcome:?}"
            );
            loads.push(load);
            spaces.push((ns, n.id));
        }
        for (_, id) in &spaces {
            attacher.remove_namespace(*id);
        }
        assert_eq!(attacher.stats().namespaces, 0);
        eprintln!(
            "{what}: new namespace, object + programs loaded p50 {:?} p99 {:?}; first device \
             attached p50 {:?} p99 {:?}; total p99 {:?}",
            percentile(&mut loads, 0.5),
            percentile(&mut loads, 0.99),
            percentile(&mut attaches, 0.5),
            percentile(&mut attaches, 0.99),
            percentile(&mut loads, 0.99) + percentile(&mut attaches, 0.99),
        );
        attacher.shutdown();
    }
}

/// The receivers as configured, finding namespaces and devices with their own watcher: the
/// listed namespaces are attached, including one created after the receiver started, and
/// counted exactly.
#[test]
fn the_watcher_driven_receiver_attaches_listed_namespaces_as_they_appear() {
    let Some(_serial) = SERIAL.lock_if(bpf_capable(
        "the_watcher_driven_receiver_attaches_listed_namespaces_as_they_appear",
    )) else {
        return;
    };
    let topo = Topology::new();
    let late_name = Netns::unique_name();
    let listed = vec![
        topo.pod1.name().to_string(),
        topo.pod2.name().to_string(),
        late_name.clone(),
    ];
    let tcx = Running::start_with(
        |ctx| {
            TcxConfig {
                namespaces: periscope_receivers::netdev::NamespacesConfig::Listed(listed),
                counters_interval: periscope_pipeline::config::ConfigDuration::from_millis(200),
                ..TcxConfig::default()
            }
            .build_receiver(ctx)
        },
        "tcx/watched",
        false,
    );
    let (n1, n2) = (namespace(&topo.pod1), namespace(&topo.pod2));
    let (e1, e2) = (device(&topo.pod1, "eth0"), device(&topo.pod2, "eth0"));
    tcx.wait_for(n1.id, e1.ifindex);
    tcx.wait_for(n2.id, e2.ifindex);
    assert_eq!(udp(&topo, 120, 80), 120);

    // A namespace and a veth created now are found and attached.
    let t = Instant::now();
    run_ok(
        Command::new("ip").args(["netns", "add", &late_name]),
        Duration::from_secs(10),
    );
    let late = Netns::adopt(&late_name);
    late.ip(&["link", "add", "lv0", "type", "veth", "peer", "name", "lv1"]);
    let created = t.elapsed();
    let n = namespace(&late);
    let lv0 = device(&late, "lv0");
    tcx.wait_for(n.id, lv0.ifindex);
    let latency = t.elapsed();
    let events = tcx.stop();
    let c = last_counters(&events);
    assert_eq!(
        counted(&c, &topo.pod2, "eth0", Direction::Ingress, Transport::Udp),
        (120, 120 * (14 + 20 + 8 + 80))
    );
    assert_eq!(
        counted(&c, &topo.pod1, "eth0", Direction::Egress, Transport::Udp),
        (120, 120 * (14 + 20 + 8 + 80))
    );
    eprintln!(
        "watcher-driven tcx: new namespace + veth attached {latency:?} after `ip netns add` \
         (the two ip commands took {created:?})"
    );
    drop(late);
}

/// A namespace reported through a process that has exited since (a container runtime's setup
/// process, found by the watcher a moment before it exits): the receiver must open it through
/// the fd the watcher holds, not the dead path; and refuse a fd of another namespace (cookie).
#[test]
fn a_namespace_found_through_a_process_that_exited_is_attached_through_the_watchers_fd() {
    use periscope_receivers::shared::netns::{NetnsFd, NetnsHandle};
    use std::os::fd::OwnedFd;
    let test =
        "a_namespace_found_through_a_process_that_exited_is_attached_through_the_watchers_fd";
    let Some(_serial) = SERIAL.lock_if(bpf_capable(test)) else {
        return;
    };
    let ns = netns();
    // The process it was found through, gone now.
    let mut setup = Command::new("ip")
        .args(["netns", "exec", ns.name(), "true"])
        .spawn()
        .expect("spawn ip netns exec");
    let dead = PathBuf::from(format!("/proc/{}/ns/net", setup.id()));
    assert!(setup.wait().expect("wait").success());
    assert!(!dead.exists(), "{} still there", dead.display());
    let fd = || -> NetnsFd {
        let f = std::fs::File::open(ns.path()).expect("open the namespace");
        NetnsFd::new(OwnedFd::from(f))
    };
    let found = Namespace {
        path: dead,
        fd: None,
        ..namespace(&ns)
    };
    // Another namespace's fd under this one's id: refused.
    let other = netns();
    let wrong = Namespace {
        fd: Some(NetnsFd::new(OwnedFd::from(
            std::fs::File::open(other.path()).expect("open"),
        ))),
        ..found.clone()
    };
    let e = NetnsHandle::open(&wrong).expect_err("another namespace's fd");
    assert!(e.to_string().contains("expected"), "{e}");

    let tcx = Running::tcx(test);
    let lo = device(&ns, "lo");
    let send = |n: &Namespace| {
        tcx.discovery
            .send(Discovery::NamespaceAdded(n.clone()))
            .expect("receiver gone");
        tcx.discovery
            .send(Discovery::DeviceAdded {
                netns: n.id,
                device: lo.clone(),
            })
            .expect("receiver gone");
    };
    // By the dead path alone: nothing to open (as before the watcher shared its fd).
    send(&found);
    std::thread::sleep(Duration::from_millis(500));
    let at = DeviceRef {
        netns: found.id,
        ifindex: lo.ifindex,
    };
    assert!(
        tcx.devices.get(&at).is_none(),
        "attached through a path that is gone"
    );
    send(&Namespace {
        fd: Some(fd()),
        ..found.clone()
    });
    tcx.wait_for(found.id, lo.ifindex);
    // Counting there: 3 pings on lo, each request and reply out and in once.
    ns.ip(&["link", "set", "lo", "up"]);
    run_ok(
        Command::new("ip").args([
            "netns",
            "exec",
            ns.name(),
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "127.0.0.1",
        ]),
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_millis(500));
    let last = last_counters(&tcx.stop());
    let icmp = |dir| {
        last.get(&(at, dir, Transport::Icmp))
            .map_or(0, |c| c.packets)
    };
    assert_eq!(
        (icmp(Direction::Egress), icmp(Direction::Ingress)),
        (6, 6),
        "ICMP packets on lo (egress, ingress)"
    );
}

//! `tcx` on pod traffic: exact counts, namespaces and devices attached after the start, the host namespace observed apart, and nothing left after SIGTERM.

use super::*;

#[test]
fn tcx_counts_pod_traffic_exactly_attaches_new_namespaces_and_leaves_nothing() {
    let Some(_serial) = SERIAL.lock_if(ready(
        "tcx_counts_pod_traffic_exactly_attaches_new_namespaces_and_leaves_nothing",
    )) else {
        return;
    };
    let dir = TestDir::new("netdev-tcx");
    let pods = Pods::new();
    // A namespace that does not exist yet when the agent starts.
    let late_name = Netns::unique_name();
    let (a, b, c) = (pods.a.name(), pods.b.name(), late_name.as_str());
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
    let mut agent = start_agent(&config, "periscope run (tcx)");
    let (ia, ib, ih) = (inode(&pods.a), inode(&pods.b), host_inode());
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
    let late = Netns::create(c);
    late.disable_ipv6();
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
    let (ours, ended) = programs_then_stop(agent, baseline);
    let stderr = String::from_utf8_lossy(&ended.stderr);
    if let Some(line) = stderr.lines().find(|l| l.contains("attach latency")) {
        eprintln!("tcx: agent log: {}", line.trim());
    }

    let ic = inode(&late);
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

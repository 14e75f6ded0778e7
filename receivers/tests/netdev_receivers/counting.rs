//! Pod-to-pod traffic counted exactly at every hook on its path; a flood through a tiny ring buffer keeps totals exact and counts what it loses.

use super::*;

#[test]
fn pod_to_pod_traffic_is_counted_exactly_per_device_direction_and_transport() {
    let Some(_serial) = SERIAL.lock_if(bpf_capable(
        "pod_to_pod_traffic_is_counted_exactly_per_device_direction_and_transport",
    )) else {
        return;
    };
    const DATAGRAMS: usize = 300;
    const SIZE: usize = 300;
    const EXCHANGES: usize = 40;
    let topo = Topology::new();
    let before = periscope_programs();

    let xdp = Running::xdp("xdp");
    let tcx = Running::tcx("tcx");
    let mut ns_latency = Vec::new();
    for ns in topo.all() {
        ns_latency.push(("xdp", ns.name().to_string(), xdp.add(ns)));
        ns_latency.push(("tcx", ns.name().to_string(), tcx.add(ns)));
    }
    for (r, ns, d) in &ns_latency {
        eprintln!("{r}: namespace {ns} loaded and all its devices attached in {d:?}");
    }

    // New devices in a namespace that is already loaded: attach latency per device.
    let mut xdp_lat = Vec::new();
    let mut tcx_lat = Vec::new();
    let node = namespace(&topo.node);
    for i in 0..10 {
        let (a, b) = (format!("xa{i}"), format!("xb{i}"));
        topo.node
            .ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        for (name, running, lat) in [(&a, &xdp, &mut xdp_lat), (&b, &tcx, &mut tcx_lat)] {
            let dev = device(&topo.node, name);
            let t = Instant::now();
            running
                .discovery
                .send(Discovery::DeviceAdded {
                    netns: node.id,
                    device: dev.clone(),
                })
                .unwrap();
            running.wait_for(node.id, dev.ifindex);
            lat.push(t.elapsed());
        }
    }
    // ... and removed again: forgotten without errors.
    for i in 0..10 {
        let a = format!("xa{i}");
        let dev = device(&topo.node, &a);
        topo.node.ip(&["link", "del", &a]);
        for running in [&xdp, &tcx] {
            running
                .discovery
                .send(Discovery::DeviceRemoved {
                    netns: node.id,
                    ifindex: dev.ifindex,
                })
                .unwrap();
        }
    }
    eprintln!(
        "attach latency, new device in a loaded namespace (10 each): XDP p50 {:?} p99 {:?}; \
         TCX (ingress+egress) p50 {:?} p99 {:?}",
        percentile(&mut xdp_lat, 0.5),
        percentile(&mut xdp_lat, 0.99),
        percentile(&mut tcx_lat, 0.5),
        percentile(&mut tcx_lat, 0.99)
    );

    let cap1 = Capture::start(&topo.pod1, "eth0");
    let cap2 = Capture::start(&topo.pod2, "eth0");
    let received = udp(&topo, DATAGRAMS, SIZE);
    assert_eq!(received, DATAGRAMS, "datagrams received in pod2");
    let echoed = tcp(&topo, EXCHANGES, 100);
    assert_eq!(echoed, EXCHANGES, "TCP exchanges");
    // The last packets (FIN/ACK) settle, and dumpcap writes its last block.
    std::thread::sleep(Duration::from_millis(1500));
    let p1 = cap1.finish(&["udp && ip.src==10.201.0.1", "tcp && ip.src==10.201.0.1"]);
    let p2 = cap2.finish(&[
        "udp && ip.dst==10.201.0.2",
        "tcp && ip.dst==10.201.0.2",
        "tcp && ip.src==10.201.0.2",
    ]);
    let xdp_counters = xdp.counters().clone();
    // The device table names the devices (and keeps them after the stop, for the last flush).
    let pod2_eth0 = DeviceRef {
        netns: namespace(&topo.pod2).id,
        ifindex: device(&topo.pod2, "eth0").ifindex,
    };
    assert_eq!(
        xdp.devices_name(pod2_eth0),
        Some(("eth0".to_string(), Some(topo.pod2.name().to_string())))
    );
    let xdp_events = xdp.stop();
    let tcx_events = tcx.stop();
    let xc = last_counters(&xdp_events);
    let tc = last_counters(&tcx_events);

    let udp_bytes = (DATAGRAMS * (14 + 20 + 8 + SIZE)) as u64;
    let gen = (DATAGRAMS as u64, udp_bytes);
    use Direction::{Egress, Ingress};
    use Transport::{Tcp, Udp};
    let (pod1, pod2, nodens) = (&topo.pod1, &topo.pod2, &topo.node);
    // UDP: generator = tshark.
    assert_eq!(p1[0], gen, "tshark pod1 eth0 UDP out vs generator");
    assert_eq!(p2[0], gen, "tshark pod2 eth0 UDP in vs generator");
    // UDP: each hook on the path counts what the generator sent; TCP: what tshark saw on the
    // same device.
    let expected = [
        (
            &tc,
            pod1,
            "eth0",
            Egress,
            Udp,
            gen,
            "TCX egress pod1 eth0 UDP",
        ),
        (&xc, nodens, "vp1", Ingress, Udp, gen, "XDP node vp1 UDP"),
        (
            &tc,
            nodens,
            "vp1",
            Ingress,
            Udp,
            gen,
            "TCX ingress node vp1 UDP",
        ),
        (
            &tc,
            nodens,
            "vp2",
            Egress,
            Udp,
            gen,
            "TCX egress node vp2 UDP",
        ),
        (&xc, pod2, "eth0", Ingress, Udp, gen, "XDP pod2 eth0 UDP"),
        (
            &tc,
            pod2,
            "eth0",
            Ingress,
            Udp,
            gen,
            "TCX ingress pod2 eth0 UDP",
        ),
        (
            &tc,
            pod1,
            "eth0",
            Egress,
            Tcp,
            p1[1],
            "TCX egress pod1 eth0 TCP vs tshark",
        ),
        (
            &xc,
            pod2,
            "eth0",
            Ingress,
            Tcp,
            p2[1],
            "XDP pod2 eth0 TCP vs tshark",
        ),
        (
            &tc,
            pod2,
            "eth0",
            Ingress,
            Tcp,
            p2[1],
            "TCX ingress pod2 eth0 TCP vs tshark",
        ),
        (
            &tc,
            pod2,
            "eth0",
            Egress,
            Tcp,
            p2[2],
            "TCX egress pod2 eth0 TCP vs tshark",
        ),
    ];
    for (counters, ns, dev, dir, transport, want, what) in expected {
        assert_eq!(counted(counters, ns, dev, dir, transport), want, "{what}");
    }
    assert!(
        p2[1].0 >= (EXCHANGES as u64) + 3,
        "TCP packets in: {:?}",
        p2[1]
    );
    // Nothing seen in pod2 was sent by pod2 at XDP (ingress only).
    assert_eq!(counted(&xc, pod2, "eth0", Egress, Udp), (0, 0));

    // Every packet had a record (events: all, ring buffer large enough), under the right
    // device, and the records agree with the counters.
    let recs: Vec<_> = packets(&xdp_events)
        .into_iter()
        .filter(|p| p.device == pod2_eth0 && p.transport == Udp && p.dst_port == 7000)
        .collect();
    assert_eq!(recs.len(), DATAGRAMS, "XDP records of UDP in pod2");
    assert!(recs
        .iter()
        .all(|p| p.length as usize == 14 + 20 + 8 + SIZE && p.direction == Ingress));
    assert_eq!(xdp_counters.values().dropped, 0, "no records lost");

    // Without pins, a clean stop leaves no periscope program or link behind.
    std::thread::sleep(Duration::from_millis(200));
    let ours: BTreeSet<u64> = periscope_programs().difference(&before).copied().collect();
    assert!(
        ours.is_empty(),
        "programs left after a clean stop: {ours:?}"
    );
    let left: Vec<_> = links()
        .into_iter()
        .filter(|(_, prog)| !before.contains(prog) && periscope_programs().contains(prog))
        .collect();
    assert!(left.is_empty(), "links left: {left:?}");
    eprintln!(
        "UDP {DATAGRAMS} datagrams = {gen:?} (packets, bytes) at generator, tshark, XDP and TCX; \
         TCP pod1 egress {:?}, pod2 ingress {:?}, pod2 egress {:?} = tshark",
        p1[1], p2[1], p2[2]
    );
}

#[test]
fn a_flood_through_a_tiny_ring_buffer_keeps_totals_exact_and_reports_losses() {
    let Some(_serial) = SERIAL.lock_if(bpf_capable(
        "a_flood_through_a_tiny_ring_buffer_keeps_totals_exact_and_reports_losses",
    )) else {
        return;
    };
    const DATAGRAMS: usize = 3000;
    let topo = Topology::new();
    let tcx = Running::start(
        |ctx| {
            TcxConfig {
                ring_buffer_size: 4096,
                poll_interval: periscope_pipeline::config::ConfigDuration::from_secs(5),
                counters_interval: periscope_pipeline::config::ConfigDuration::from_secs(5),
                events: EventsMode::All,
                interfaces: periscope_receivers::netdev::InterfacesConfig {
                    include: vec!["eth*".into()],
                    exclude: vec![],
                },
                ..TcxConfig::default()
            }
            .build_receiver(ctx)
        },
        "tcx/flood",
    );
    tcx.add_only(&topo.pod2, &["eth0"]);
    let lo = DeviceRef {
        netns: namespace(&topo.pod2).id,
        ifindex: device(&topo.pod2, "lo").ifindex,
    };
    assert_eq!(tcx.devices.get(&lo), None, "lo is not included");
    assert_eq!(udp(&topo, DATAGRAMS, 64), DATAGRAMS);
    let counters = tcx.counters().clone();
    let events = tcx.stop();
    let c = last_counters(&events);
    let key = (
        DeviceRef {
            netns: namespace(&topo.pod2).id,
            ifindex: device(&topo.pod2, "eth0").ifindex,
        },
        Direction::Ingress,
        Transport::Udp,
    );
    let dc = c.get(&key).expect("counters for pod2 eth0 UDP ingress");
    assert_eq!(
        (dc.packets, dc.bytes),
        (DATAGRAMS as u64, (DATAGRAMS * (14 + 20 + 8 + 64)) as u64),
        "exact totals"
    );
    let recs = packets(&events)
        .iter()
        .filter(|p| {
            p.device == key.0 && p.transport == Transport::Udp && p.direction == Direction::Ingress
        })
        .count() as u64;
    assert!(
        dc.records_lost > 0,
        "a 4 KiB ring cannot hold {DATAGRAMS} records"
    );
    assert_eq!(
        recs + dc.records_lost,
        DATAGRAMS as u64,
        "records delivered + lost"
    );
    assert_eq!(
        dc.records_delivered, recs,
        "the receiver's per-device count of delivered records"
    );
    let dropped = counters.values().dropped;
    assert!(
        dropped >= dc.records_lost,
        "receiver dropped {dropped} < lost {}",
        dc.records_lost
    );
    eprintln!(
        "flood of {DATAGRAMS}: {recs} records delivered, {} lost and counted; totals exact",
        dc.records_lost
    );
}

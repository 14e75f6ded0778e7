//! pcapng: several sections and interfaces, resolutions, direction flags; the same packets read as from classic pcap.

use super::*;

#[test]
fn pcapng_interfaces_resolutions_flags_and_sections() {
    let dir = TestDir::new("pcapng");
    let path = dir.join("multi.pcapng");
    write_pcapng(&path);
    let r = replay_ok(&path);
    let e = &r.events;
    assert_eq!(e.len(), 6, "{e:#?}");

    assert_eq!(e[0].device, dev(1));
    assert_eq!(e[0].timestamp_ns, T0 + 1000);
    assert_eq!((e[0].dst_port, e[0].tcp_flags), (80, 0x02));
    assert_eq!(e[0].direction, Direction::Ingress, "flags: inbound");

    assert_eq!(e[1].device, dev(2));
    assert_eq!(
        e[1].timestamp_ns,
        T0 + 100_000_000_000 + 7,
        "ns ticks + if_tsoffset"
    );
    assert_eq!(e[1].direction, Direction::Egress, "cooked header: outgoing");
    assert_eq!((e[1].transport, e[1].src_port), (Transport::Udp, 5000));

    assert_eq!(e[2].device, dev(1));
    assert_eq!(e[2].timestamp_ns, T0 + 2000);
    assert_eq!(e[2].direction, Direction::Egress, "flags: outbound");
    assert_eq!(e[2].network, NetworkType::Ipv6);

    assert_eq!(e[3].device, dev(1), "simple packets are interface 0's");
    assert_eq!(e[3].timestamp_ns, T0 + 2000);
    assert_eq!((e[3].network, e[3].length), (NetworkType::Other, 60));

    assert_eq!(
        e[4].device,
        dev(3),
        "a new section's interfaces get new ifindexes"
    );
    assert_eq!(e[4].timestamp_ns, T0 + 500_000_000, "2^-10 s ticks");
    assert_eq!((e[4].network, e[4].dst_port), (NetworkType::Ipv4, 6000));

    assert_eq!(e[5].device, dev(3));
    assert_eq!(e[5].timestamp_ns, T0 + 1_000_000_000);
    assert_eq!(e[5].length, 1500);
    assert_eq!(e[5].direction, Direction::Egress);

    assert_eq!(r.devices.interface_name(&dev(1)), "eth0");
    assert_eq!(
        r.devices.interface_name(&dev(2)),
        "multi-1",
        "unnamed: after the file"
    );
    assert_eq!(r.devices.interface_name(&dev(3)), "tun0");
}

#[test]
fn pcapng_matches_the_classic_reading() {
    let dir = TestDir::new("same");
    let path = dir.join("eth.pcapng");
    let mut w =
        PcapNgWriter::with_endianness(File::create(&path).expect("create"), Endianness::Big)
            .expect("shb");
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 64,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .expect("idb");
    for p in ethernet_mix(T0) {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(p.ts_ns),
            original_len: p.orig_len,
            data: Cow::Owned(p.data),
            options: vec![],
        })
        .expect("epb");
    }
    drop(w);
    check_ethernet_mix(&replay_ok(&path).events, T0, 1);
}

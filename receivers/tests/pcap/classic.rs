//! Classic pcap: both byte orders and timestamp resolutions, Linux cooked and raw-IP link types, full batches.

use super::*;

#[test]
fn classic_pcap_every_byte_order_and_resolution() {
    let dir = TestDir::new("classic");
    for (endianness, res, name) in [
        (Endianness::Little, TsResolution::MicroSecond, "le-usec"),
        (Endianness::Big, TsResolution::MicroSecond, "be-usec"),
        (Endianness::Little, TsResolution::NanoSecond, "le-nsec"),
        (Endianness::Big, TsResolution::NanoSecond, "be-nsec"),
    ] {
        let path = dir.join(format!("{name}.pcap"));
        write_pcap(
            &path,
            endianness,
            res,
            DataLink::ETHERNET,
            &ethernet_mix(T0),
        );
        let r = replay_ok(&path);
        check_ethernet_mix(&r.events, T0, 1);
        assert_eq!(
            r.devices.interface_name(&dev(1)),
            name,
            "named after the file"
        );
        assert_eq!(r.counters.values().sent, 4);
    }
}

#[test]
fn nanosecond_timestamps_are_kept() {
    let dir = TestDir::new("nsec");
    let path = dir.join("capture.pcap");
    let t = T0 + 123_456_789;
    write_pcap(
        &path,
        Endianness::Little,
        TsResolution::NanoSecond,
        DataLink::ETHERNET,
        &[pkt(t, tcp_syn())],
    );
    assert_eq!(replay_ok(&path).events[0].timestamp_ns, t);
}

#[test]
fn classic_pcap_linux_cooked_and_raw_ip() {
    let dir = TestDir::new("cooked");
    let sll = dir.join("any.pcap");
    write_pcap(
        &sll,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::LINUX_SLL,
        &[pkt(T0, sll_udp(4)), pkt(T0 + 1000, sll_udp(0))],
    );
    let r = replay_ok(&sll);
    assert_eq!(r.events.len(), 2);
    assert_eq!(r.events[0].direction, Direction::Egress);
    assert_eq!(r.events[1].direction, Direction::Ingress);
    for e in &r.events {
        assert_eq!(
            (e.network, e.transport),
            (NetworkType::Ipv4, Transport::Udp)
        );
        assert_eq!((e.src_port, e.dst_port), (5000, 6000));
        assert_eq!(e.dst_addr, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(e.length, 16 + 33);
    }

    let sll2 = dir.join("any2.pcap");
    write_pcap(
        &sll2,
        Endianness::Big,
        TsResolution::NanoSecond,
        DataLink::LINUX_SLL2,
        &[pkt(T0, sll2_udp(4)), pkt(T0 + 1, sll2_udp(0))],
    );
    let r = replay_ok(&sll2);
    let dirs: Vec<_> = r.events.iter().map(|e| e.direction).collect();
    assert_eq!(dirs, [Direction::Egress, Direction::Ingress]);
    assert_eq!(
        r.events[0].src_addr,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    );

    let raw = dir.join("tun.pcap");
    write_pcap(
        &raw,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::RAW,
        &[pkt(T0, raw_udp())],
    );
    let r = replay_ok(&raw);
    assert_eq!(
        (r.events[0].network, r.events[0].dst_port),
        (NetworkType::Ipv4, 6000)
    );
}

#[test]
fn many_packets_come_in_full_batches() {
    let dir = TestDir::new("many");
    let path = dir.join("many.pcap");
    let packets: Vec<_> = (0..10_000u64)
        .map(|i| pkt(T0 + i * 1000, tcp_syn()))
        .collect();
    write_ethernet_pcap(&path, &packets);
    let r = replay_ok(&path);
    assert_eq!(r.events.len(), 10_000);
    assert_eq!(r.batches, 10);
    assert!(r
        .events
        .windows(2)
        .all(|w| w[1].timestamp_ns == w[0].timestamp_ns + 1000));
    assert_eq!(r.counters.values().sent, 10_000);
}

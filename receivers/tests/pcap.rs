//! The `pcap` receiver replaying files written with pcap-file's writers (or patched by hand
//! to be broken): exact counts, lengths, timestamps, addresses, ports, flags, devices, and
//! error messages that name the record and byte.

mod common;

use std::borrow::Cow;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsBlock;
use pcap_file::pcapng::blocks::packet::{PacketBlock, PacketOption};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness, TsResolution};

use periscope_pipeline::component::{ComponentConfig, ReceiverConfig};
use periscope_pipeline::edge::StopSignal;
use periscope_pipeline::model::{DeviceRef, Direction, NetworkType, PacketEvent, Transport};
use periscope_receivers::pcap::{PcapConfig, Speed};

use common::{context, run, Run, TempDir};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

/// Ethernet, IPv4, TCP SYN 10.0.0.1:40000 → 10.0.0.2:80; 54 bytes.
fn tcp_syn() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 1, 64240)
        .syn();
    let mut f = Vec::new();
    b.write(&mut f, &[]).expect("frame");
    f
}

/// Ethernet, VLAN 42, IPv4, UDP 10.0.0.2:53 → 10.0.0.1:40001 with 100 payload bytes; 146 bytes.
fn vlan_udp() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_B, MAC_A)
        .single_vlan(42.try_into().expect("vlan"))
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .udp(53, 40001);
    let mut f = Vec::new();
    b.write(&mut f, &[7; 100]).expect("frame");
    f
}

/// Ethernet, IPv6, TCP FIN|ACK [2001:db8::1]:443 → [2001:db8::2]:50000 with 10 bytes; 84 bytes.
fn tcp6_fin() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(v6(1).octets(), v6(2).octets(), 64)
        .tcp(443, 50000, 9, 500)
        .fin()
        .ack(1);
    let mut f = Vec::new();
    b.write(&mut f, &[1; 10]).expect("frame");
    f
}

/// An ARP request, padded to the Ethernet minimum of 60 bytes.
fn arp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f.resize(60, 0);
    f
}

/// IPv4 UDP 192.0.2.1:5000 → 192.0.2.2:6000 without a link header (raw IP).
fn raw_udp() -> Vec<u8> {
    let b = PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64).udp(5000, 6000);
    let mut f = Vec::new();
    b.write(&mut f, b"hello").expect("frame");
    f
}

/// A Linux cooked v2 header (packet type `pkttype`) around raw IPv4 UDP.
fn sll2_udp(pkttype: u8) -> Vec<u8> {
    let mut f = vec![0x08, 0x00, 0, 0, 0, 0, 0, 9, 0, 1, pkttype, 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0xc, 0, 0]);
    f.extend_from_slice(&raw_udp());
    f
}

/// A Linux cooked v1 header (packet type `pkttype`) around raw IPv4 UDP.
fn sll_udp(pkttype: u16) -> Vec<u8> {
    let mut f = pkttype.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 1, 0, 6, 2, 0, 0, 0, 0, 0xc, 0, 0, 0x08, 0x00]);
    f.extend_from_slice(&raw_udp());
    f
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn v6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
}

/// One packet to write: capture time (ns since the epoch), original length, captured bytes.
struct Pkt {
    ts_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
}

fn pkt(ts_ns: u64, data: Vec<u8>) -> Pkt {
    Pkt {
        ts_ns,
        orig_len: data.len() as u32,
        data,
    }
}

/// Writes a classic pcap file; returns the byte offset of each record.
fn write_pcap(
    path: &Path,
    endianness: Endianness,
    ts_resolution: TsResolution,
    datalink: DataLink,
    packets: &[Pkt],
) -> Vec<u64> {
    let header = PcapHeader {
        endianness,
        ts_resolution,
        datalink,
        snaplen: 65535,
        ..PcapHeader::default()
    };
    let mut w =
        PcapWriter::with_header(File::create(path).expect("create"), header).expect("header");
    let mut offsets = Vec::new();
    let mut at = 24u64;
    for p in packets {
        offsets.push(at);
        let packet = PcapPacket::new(Duration::from_nanos(p.ts_ns), p.orig_len, &p.data);
        at += w.write_packet(&packet).expect("packet") as u64;
    }
    offsets
}

const T0: u64 = 1_700_000_000_000_000_000;

fn pcap_config(path: &Path) -> PcapConfig {
    PcapConfig {
        path: path.to_path_buf(),
        speed: Speed::Max,
        dns_ports: Vec::new(),
    }
}

fn replay(path: &Path) -> Run {
    run(&pcap_config(path), StopSignal::default()).expect("build")
}

fn replay_ok(path: &Path) -> Run {
    let r = replay(path);
    if let Err(e) = &r.result {
        panic!("replay of {} failed: {e:#}", path.display());
    }
    r
}

fn replay_err(path: &Path) -> (Run, String) {
    let r = replay(path);
    let e = match &r.result {
        Ok(()) => panic!("replay of {} succeeded; wanted an error", path.display()),
        Err(e) => format!("{e:#}"),
    };
    (r, e)
}

fn dev(ifindex: u32) -> DeviceRef {
    DeviceRef {
        ifindex,
        ..DeviceRef::default()
    }
}

/// The four Ethernet test packets; the UDP one cut to 64 captured bytes.
fn ethernet_mix(t0: u64) -> Vec<Pkt> {
    let mut cut = pkt(t0 + 500_000_000, vlan_udp());
    cut.data.truncate(64);
    vec![
        pkt(t0 + 123_456_000, tcp_syn()),
        cut,
        pkt(t0 + 1_000_001_000, tcp6_fin()),
        pkt(t0 + 2_000_000_000, arp()),
    ]
}

fn check_ethernet_mix(events: &[PacketEvent], t0: u64, ifindex: u32) {
    assert_eq!(events.len(), 4, "{events:#?}");
    let [syn, udp, fin, arp] = [events[0], events[1], events[2], events[3]];

    assert_eq!(syn.timestamp_ns, t0 + 123_456_000);
    assert_eq!(syn.device, dev(ifindex));
    assert_eq!(
        (syn.network, syn.transport),
        (NetworkType::Ipv4, Transport::Tcp)
    );
    assert_eq!((syn.src_addr, syn.dst_addr), (v4(1), v4(2)));
    assert_eq!(
        (syn.src_port, syn.dst_port, syn.tcp_flags),
        (40000, 80, 0x02)
    );
    assert_eq!(syn.length, 54);
    assert_eq!(syn.direction, Direction::Ingress);

    // Captured 64 of 146 bytes: the length is the original one; the VLAN tag is looked
    // through.
    assert_eq!(udp.timestamp_ns, t0 + 500_000_000);
    assert_eq!(udp.length, 146);
    assert_eq!(
        (udp.network, udp.transport),
        (NetworkType::Ipv4, Transport::Udp)
    );
    assert_eq!((udp.src_addr, udp.dst_addr), (v4(2), v4(1)));
    assert_eq!((udp.src_port, udp.dst_port, udp.tcp_flags), (53, 40001, 0));

    assert_eq!(fin.timestamp_ns, t0 + 1_000_001_000);
    assert_eq!(
        (fin.network, fin.transport),
        (NetworkType::Ipv6, Transport::Tcp)
    );
    assert_eq!(
        (fin.src_addr, fin.dst_addr),
        (IpAddr::V6(v6(1)), IpAddr::V6(v6(2)))
    );
    assert_eq!(
        (fin.src_port, fin.dst_port, fin.tcp_flags),
        (443, 50000, 0x11)
    );
    assert_eq!(fin.length, 84);

    assert_eq!(arp.network, NetworkType::Other);
    assert_eq!(arp.transport, Transport::Other);
    assert_eq!(arp.length, 60);
    assert_eq!(arp.timestamp_ns, t0 + 2_000_000_000);
}

#[test]
fn classic_pcap_every_byte_order_and_resolution() {
    let dir = TempDir::new("classic");
    for (endianness, res, name) in [
        (Endianness::Little, TsResolution::MicroSecond, "le-usec"),
        (Endianness::Big, TsResolution::MicroSecond, "be-usec"),
        (Endianness::Little, TsResolution::NanoSecond, "le-nsec"),
        (Endianness::Big, TsResolution::NanoSecond, "be-nsec"),
    ] {
        let path = dir.path(&format!("{name}.pcap"));
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
    let dir = TempDir::new("nsec");
    let path = dir.path("capture.pcap");
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
    let dir = TempDir::new("cooked");
    let sll = dir.path("any.pcap");
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

    let sll2 = dir.path("any2.pcap");
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

    let raw = dir.path("tun.pcap");
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
    let dir = TempDir::new("many");
    let path = dir.path("many.pcap");
    let packets: Vec<_> = (0..10_000u64)
        .map(|i| pkt(T0 + i * 1000, tcp_syn()))
        .collect();
    write_pcap(
        &path,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        &packets,
    );
    let r = replay_ok(&path);
    assert_eq!(r.events.len(), 10_000);
    assert_eq!(r.batches, 10);
    assert!(r
        .events
        .windows(2)
        .all(|w| w[1].timestamp_ns == w[0].timestamp_ns + 1000));
    assert_eq!(r.counters.values().sent, 10_000);
}

/// A pcapng file of two sections: little-endian with an Ethernet and a Linux cooked v2
/// interface, then big-endian with a raw-IP interface in 2^-10 s ticks.
fn write_pcapng(path: &Path) {
    let file = File::create(path).expect("create");
    let shb = SectionHeaderBlock {
        endianness: Endianness::Little,
        ..SectionHeaderBlock::default()
    };
    let mut w = PcapNgWriter::with_section_header(file, shb).expect("shb");
    let idb = |linktype, options| InterfaceDescriptionBlock {
        linktype,
        snaplen: 0,
        options,
    };
    // pcap-file writes an EPB's timestamp as the raw tick count of its `Duration` in ns,
    // whatever the interface's resolution: give it ticks.
    let epb = |interface_id, ticks: u64, data: Vec<u8>, flags: Option<u32>| EnhancedPacketBlock {
        interface_id,
        timestamp: Duration::from_nanos(ticks),
        original_len: data.len() as u32,
        data: Cow::Owned(data),
        options: flags.map(EnhancedPacketOption::Flags).into_iter().collect(),
    };
    w.write_pcapng_block(idb(
        DataLink::ETHERNET,
        vec![InterfaceDescriptionOption::IfName("eth0".into())],
    ))
    .expect("idb");
    w.write_pcapng_block(idb(
        DataLink::LINUX_SLL2,
        vec![
            InterfaceDescriptionOption::IfTsResol(9),
            InterfaceDescriptionOption::IfTsOffset(100),
        ],
    ))
    .expect("idb");
    // Microsecond ticks on eth0.
    w.write_pcapng_block(epb(0, T0 / 1000 + 1, tcp_syn(), Some(1)))
        .expect("epb");
    // Nanosecond ticks plus 100 s offset on the cooked interface; its header says outgoing.
    w.write_pcapng_block(epb(1, T0 + 7, sll2_udp(4), None))
        .expect("epb");
    w.write_pcapng_block(epb(0, T0 / 1000 + 2, tcp6_fin(), Some(2)))
        .expect("epb");
    // Statistics are skipped.
    w.write_pcapng_block(InterfaceStatisticsBlock {
        interface_id: 0,
        timestamp: 0,
        options: vec![],
    })
    .expect("isb");
    // No timestamp in a simple packet block: it gets the previous packet's.
    let a = arp();
    w.write_pcapng_block(SimplePacketBlock {
        original_len: a.len() as u32,
        data: Cow::Owned(a),
    })
    .expect("spb");

    w.write_pcapng_block(SectionHeaderBlock {
        endianness: Endianness::Big,
        ..SectionHeaderBlock::default()
    })
    .expect("shb 2");
    w.write_pcapng_block(idb(
        DataLink::RAW,
        vec![
            InterfaceDescriptionOption::IfName("tun0".into()),
            InterfaceDescriptionOption::IfTsResol(0x80 | 10),
        ],
    ))
    .expect("idb");
    w.write_pcapng_block(epb(0, 1024 * 1_700_000_000 + 512, raw_udp(), None))
        .expect("epb");
    // The obsolete packet block (pcap-file writes its timestamp right only big-endian).
    let r = raw_udp();
    w.write_pcapng_block(PacketBlock {
        interface_id: 0,
        drop_count: 0,
        timestamp: 1024 * 1_700_000_001,
        captured_len: r.len() as u32,
        original_len: 1500,
        data: Cow::Owned(r),
        options: vec![PacketOption::Flags(2)],
    })
    .expect("pb");
}

#[test]
fn pcapng_interfaces_resolutions_flags_and_sections() {
    let dir = TempDir::new("pcapng");
    let path = dir.path("multi.pcapng");
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
    let dir = TempDir::new("same");
    let path = dir.path("eth.pcapng");
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

// ---- speed -------------------------------------------------------------------------

#[test]
fn realtime_keeps_the_gaps() {
    let dir = TempDir::new("realtime");
    let path = dir.path("slow.pcap");
    let packets: Vec<_> = (0..3u64)
        .map(|i| pkt(T0 + i * 100_000_000, tcp_syn()))
        .collect();
    write_pcap(
        &path,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        &packets,
    );

    let fast = replay_ok(&path);
    assert_eq!(fast.events.len(), 3);
    assert!(
        fast.elapsed < Duration::from_millis(150),
        "max speed took {:?}",
        fast.elapsed
    );

    let config = PcapConfig {
        path: path.clone(),
        speed: Speed::Realtime,
        dns_ports: Vec::new(),
    };
    let slow = run(&config, StopSignal::default()).expect("build");
    slow.result.expect("realtime replay");
    assert_eq!(slow.events.len(), 3);
    assert!(
        slow.elapsed >= Duration::from_millis(180),
        "realtime took {:?}",
        slow.elapsed
    );
    assert!(
        slow.elapsed < Duration::from_secs(2),
        "realtime took {:?}",
        slow.elapsed
    );
    // Each packet went out when it was due, not at the end.
    assert!(slow.batches >= 3, "{} batches", slow.batches);
}

#[test]
fn realtime_stops_promptly() {
    let dir = TempDir::new("stop");
    let path = dir.path("gap.pcap");
    let packets = [pkt(T0, tcp_syn()), pkt(T0 + 3_600_000_000_000, tcp_syn())];
    write_pcap(
        &path,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        &packets,
    );
    let stop = StopSignal::default();
    let raiser = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        raiser.raise();
    });
    let config = PcapConfig {
        path,
        speed: Speed::Realtime,
        dns_ports: Vec::new(),
    };
    let r = run(&config, stop).expect("build");
    r.result.expect("a stopped replay is not an error");
    assert_eq!(r.events.len(), 1);
    assert!(r.elapsed < Duration::from_secs(1), "took {:?}", r.elapsed);
}

// ---- config ------------------------------------------------------------------------

#[test]
fn config_parses_validates_and_is_finite() {
    use periscope_pipeline::config::{de::from_node, yaml::parse};
    let c: PcapConfig =
        from_node(&parse("path: a.pcap\nspeed: realtime").expect("yaml"), &[]).expect("config");
    assert_eq!(
        (c.path.to_str(), c.speed),
        (Some("a.pcap"), Speed::Realtime)
    );
    let c: PcapConfig = from_node(&parse("path: a.pcap").expect("yaml"), &[]).expect("config");
    assert_eq!(c.speed, Speed::Max);
    assert!(c.validate().is_ok());
    assert!(c.is_finite());
    let e = from_node::<PcapConfig>(&parse("path: a.pcap\nsped: max").expect("yaml"), &[])
        .expect_err("unknown option");
    assert!(e.message.contains("sped"), "{}", e.message);
    let empty = PcapConfig {
        path: "".into(),
        speed: Speed::Max,
        dns_ports: Vec::new(),
    };
    let problems = empty.validate().expect_err("empty path");
    assert_eq!(problems[0].path, "path");
}

// ---- errors ------------------------------------------------------------------------

fn build_error(path: &Path) -> String {
    match pcap_config(path).build(&context("pcap")) {
        Ok(_) => panic!("{} opened; wanted an error", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn unopenable_and_foreign_files_fail_to_build() {
    assert_eq!(
        build_error(Path::new("/nonexistent/x/y.pcap")),
        "cannot open /nonexistent/x/y.pcap: No such file or directory"
    );
    let dir = TempDir::new("foreign");
    let text = dir.path("notes.txt");
    std::fs::write(&text, b"hello, this is not a capture").expect("write");
    assert_eq!(
        build_error(&text),
        format!(
            "`{}` is not a pcap or pcapng file (starts with 0x68656c6c)",
            text.display()
        )
    );
    let empty = dir.path("empty.pcap");
    std::fs::write(&empty, b"").expect("write");
    assert!(build_error(&empty).ends_with("is not a pcap or pcapng file (it is empty)"));
    assert!(build_error(&dir.0).ends_with("it is a directory"));
}

#[test]
fn broken_file_headers_fail_the_run() {
    let dir = TempDir::new("headers");
    let short = dir.path("short.pcap");
    std::fs::write(&short, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0]).expect("write");
    let (r, e) = replay_err(&short);
    assert_eq!(
        e,
        format!(
            "{}: truncated: the file ends 10 bytes into a 24-byte pcap file header",
            short.display()
        )
    );
    assert!(r.events.is_empty());

    let mut bytes = 0xa1b2_c3d4_u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0x37; 40]);
    let version = dir.path("version.pcap");
    std::fs::write(&version, &bytes).expect("write");
    assert_eq!(
        replay_err(&version).1,
        format!(
            "{}: the pcap file header says version 14135.14135; only 2.x exists",
            version.display()
        )
    );

    let ng_short = dir.path("short.pcapng");
    std::fs::write(&ng_short, [0x0a, 0x0d, 0x0d, 0x0a, 28, 0, 0, 0, 0x4d, 0x3c]).expect("write");
    assert_eq!(
        replay_err(&ng_short).1,
        format!(
            "{}: record 1 at byte 0: truncated: the file ends 10 bytes into a 12-byte section header",
            ng_short.display()
        )
    );
    let ng_magic_only = dir.path("magic.pcapng");
    std::fs::write(&ng_magic_only, [0x0a, 0x0d, 0x0d, 0x0a]).expect("write");
    assert_eq!(
        replay_err(&ng_magic_only).1,
        format!(
            "{}: record 1 at byte 0: truncated: the file ends 4 bytes into a 8-byte block header",
            ng_magic_only.display()
        )
    );
    let mut bytes = 0x0a0d_0d0a_u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0x55; 60]);
    let ng_bom = dir.path("bom.pcapng");
    std::fs::write(&ng_bom, &bytes).expect("write");
    assert_eq!(
        replay_err(&ng_bom).1,
        format!(
            "{}: record 1 at byte 0: section header with byte-order magic 0x55555555 (expected 0x1a2b3c4d either way round)",
            ng_bom.display()
        )
    );
    // Header-only files are empty captures, not errors.
    let header_only = dir.path("header-only.pcap");
    write_pcap(
        &header_only,
        Endianness::Big,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        &[],
    );
    assert!(replay_ok(&header_only).events.is_empty());
}

/// Writes the four-packet Ethernet capture; returns its bytes and record offsets.
fn ethernet_file(path: &Path) -> (Vec<u8>, Vec<u64>) {
    let offsets = write_pcap(
        path,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        &ethernet_mix(T0),
    );
    (std::fs::read(path).expect("read back"), offsets)
}

#[test]
fn a_record_cut_short_is_reported_after_the_packets_before_it() {
    let dir = TempDir::new("cut");
    let path = dir.path("capture.pcap");
    let (bytes, offsets) = ethernet_file(&path);
    // Record 3 is the 84-byte IPv6 frame; keep 30 of its bytes.
    std::fs::write(&path, &bytes[..offsets[2] as usize + 16 + 30]).expect("write");
    let (r, e) = replay_err(&path);
    assert_eq!(
        e,
        format!(
            "{}: record 3 at byte {}: truncated: the record header says 84 bytes but only 30 remain",
            path.display(),
            offsets[2]
        )
    );
    assert_eq!(
        r.events.len(),
        2,
        "the packets before the bad record are delivered"
    );

    // Cut inside a record header.
    std::fs::write(&path, &bytes[..offsets[1] as usize + 7]).expect("write");
    let (r, e) = replay_err(&path);
    assert_eq!(
        e,
        format!(
            "{}: record 2 at byte {}: truncated: the file ends 7 bytes into a 16-byte record header",
            path.display(),
            offsets[1]
        )
    );
    assert_eq!(r.events.len(), 1);
}

#[test]
fn an_absurd_record_length_is_refused_not_allocated() {
    let dir = TempDir::new("absurd");
    let path = dir.path("capture.pcap");
    let (mut bytes, offsets) = ethernet_file(&path);
    let at = offsets[1] as usize + 8;
    bytes[at..at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    std::fs::write(&path, &bytes).expect("write");
    let (r, e) = replay_err(&path);
    assert_eq!(
        e,
        format!(
            "{}: record 2 at byte {}: the record header says 4294967280 bytes, more than the 262144 a record may have (corrupt file?)",
            path.display(),
            offsets[1]
        )
    );
    assert_eq!(r.events.len(), 1);
}

#[test]
fn garbage_after_the_last_record_is_an_error_not_a_panic() {
    let dir = TempDir::new("garbage");
    let path = dir.path("capture.pcap");
    let (mut bytes, offsets) = ethernet_file(&path);
    let end = bytes.len() as u64;
    bytes.extend_from_slice(b"\x01\x02\x03this is definitely not a pcap record......");
    std::fs::write(&path, &bytes).expect("write");
    let (r, e) = replay_err(&path);
    assert!(
        e.starts_with(&format!("{}: record 5 at byte {end}: ", path.display())),
        "{e}"
    );
    assert_eq!(r.events.len(), 4);
    assert_eq!(offsets.len(), 4);
}

/// Offsets of the blocks of a small little-endian pcapng file: SHB, IDB, 3 EPBs.
fn small_pcapng(path: &Path) -> (Vec<u8>, Vec<u64>) {
    let mut w =
        PcapNgWriter::with_endianness(File::create(path).expect("create"), Endianness::Little)
            .expect("shb");
    let mut offsets = vec![0u64];
    let mut at = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    // The writer has flushed the SHB straight to the file: it is unbuffered.
    offsets.push(at);
    at += w
        .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .expect("idb") as u64;
    for (i, f) in [tcp_syn(), vlan_udp(), tcp6_fin()].into_iter().enumerate() {
        offsets.push(at);
        at += w
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: Duration::from_micros(i as u64),
                original_len: f.len() as u32,
                data: Cow::Owned(f),
                options: vec![],
            })
            .expect("epb") as u64;
    }
    drop(w);
    let bytes = std::fs::read(path).expect("read back");
    assert_eq!(bytes.len() as u64, at);
    (bytes, offsets)
}

#[test]
fn pcapng_structural_errors_name_the_block() {
    let dir = TempDir::new("ngerr");
    let path = dir.path("capture.pcapng");
    let (orig, offsets) = small_pcapng(&path);
    assert_eq!(replay_ok(&path).events.len(), 3);
    let shown = path.display().to_string();
    let len_at = |i: usize| offsets[i] as usize + 4;
    let block_len = |b: &[u8], i: usize| {
        let at = len_at(i);
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    };
    // (what, how the file is broken, the error wanted, events delivered before it)
    type Case<'a> = (&'a str, Box<dyn Fn(&mut Vec<u8>) + 'a>, String, usize);
    let cases: Vec<Case> = vec![
        (
            "absurd length",
            Box::new(|b: &mut Vec<u8>| {
                let at = len_at(3);
                b[at..at + 4].copy_from_slice(&0xffff_fffcu32.to_le_bytes());
            }),
            format!(
                "{shown}: record 4 at byte {}: the block header says 4294967292 bytes, more than the 327680 a record may have (corrupt file?)",
                offsets[3]
            ),
            1,
        ),
        (
            "length not a multiple of 4",
            Box::new(|b: &mut Vec<u8>| {
                let at = len_at(4);
                let n = block_len(b, 4) + 1;
                b[at..at + 4].copy_from_slice(&n.to_le_bytes());
            }),
            format!(
                "{shown}: record 5 at byte {}: block length {} is not a multiple of 4",
                offsets[4],
                block_len(&orig, 4) + 1
            ),
            2,
        ),
        (
            "closing length differs",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[3] as usize + block_len(b, 3) as usize - 4;
                b[at..at + 4].copy_from_slice(&8u32.to_le_bytes());
            }),
            format!(
                "{shown}: record 4 at byte {}: the block's closing length 8 differs from its opening length {}",
                offsets[3],
                block_len(&orig, 3)
            ),
            1,
        ),
        (
            "cut mid-block",
            Box::new(|b: &mut Vec<u8>| b.truncate(offsets[4] as usize + 40)),
            format!(
                "{shown}: record 5 at byte {}: truncated: the block header says {} bytes but only 40 remain",
                offsets[4],
                block_len(&orig, 4)
            ),
            2,
        ),
        (
            "unknown interface",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[2] as usize + 8;
                b[at..at + 4].copy_from_slice(&5u32.to_le_bytes());
            }),
            format!(
                "{shown}: record 3 at byte {}: the packet is from interface 5 but the section describes 1 interface(s) before it",
                offsets[2]
            ),
            0,
        ),
        (
            "captured length beyond the block",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[2] as usize + 20;
                b[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
            }),
            format!(
                "{shown}: record 3 at byte {}: the packet block says it holds 1000 captured bytes but has room for 56",
                offsets[2]
            ),
            0,
        ),
        (
            "skipped block longer than the file",
            Box::new(|b: &mut Vec<u8>| {
                let at = offsets[4] as usize;
                b[at..at + 4].copy_from_slice(&0x0000_0bad_u32.to_le_bytes());
                let len = b.len() as u32;
                b[at + 4..at + 8].copy_from_slice(&(len * 4).to_le_bytes());
            }),
            format!(
                "{shown}: record 5 at byte {}: truncated: the block header says {} bytes but only {} remain",
                offsets[4],
                orig.len() * 4,
                orig.len() - offsets[4] as usize
            ),
            2,
        ),
    ];
    for (what, patch, want, events) in cases {
        let mut bytes = orig.clone();
        patch(&mut bytes);
        std::fs::write(&path, &bytes).expect("write");
        let (r, e) = replay_err(&path);
        assert_eq!(e, want, "{what}");
        assert_eq!(r.events.len(), events, "{what}: events before the error");
    }
}

#[test]
fn random_corruption_never_panics() {
    let dir = TempDir::new("fuzz");
    let classic = dir.path("c.pcap");
    let (c_bytes, _) = ethernet_file(&classic);
    let ng = dir.path("n.pcapng");
    write_pcapng(&ng);
    let n_bytes = std::fs::read(&ng).expect("read");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (name, orig) in [("c.pcap", &c_bytes), ("n.pcapng", &n_bytes)] {
        let path = dir.path(&format!("fuzzed-{name}"));
        for _ in 0..300 {
            let mut b = orig.clone();
            for _ in 0..(next() % 4 + 1) {
                // Keep the magic so that the records get read.
                let at = 4 + (next() as usize) % (b.len() - 4);
                b[at] = next() as u8;
            }
            if next() % 3 == 0 {
                let keep = 4 + (next() as usize) % (b.len() - 4);
                b.truncate(keep);
            }
            std::fs::write(&path, &b).expect("write");
            // Build errors and run errors are fine; panics and hangs are not.
            if let Ok(r) = run(&pcap_config(&path), StopSignal::default()) {
                assert!(r.events.len() <= 10);
                if let Err(e) = r.result {
                    let e = format!("{e:#}");
                    assert!(
                        e.contains(": record ") || e.contains("pcap file header"),
                        "{e}"
                    );
                }
            }
        }
    }
}

// ---- ground truth ------------------------------------------------------------------

/// What tshark reads from the same files, where tshark is installed.
#[test]
fn tshark_agrees() {
    if std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "tshark is missing in CI");
        eprintln!("skipped: tshark is not installed");
        return;
    }
    let dir = TempDir::new("tshark");
    let classic = dir.path("eth.pcap");
    ethernet_file(&classic);
    let ng = dir.path("multi.pcapng");
    write_pcapng(&ng);
    for path in [classic, ng] {
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(["-n", "-T", "fields", "-E", "separator=|"])
            .args(["-e", "frame.len", "-e", "frame.time_epoch"])
            .args([
                "-e", "ip.src", "-e", "ipv6.src", "-e", "ip.dst", "-e", "ipv6.dst",
            ])
            .args([
                "-e",
                "tcp.srcport",
                "-e",
                "udp.srcport",
                "-e",
                "tcp.dstport",
                "-e",
                "udp.dstport",
            ])
            .args(["-e", "tcp.flags"])
            .output()
            .expect("run tshark");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let ours = replay_ok(&path).events;
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), ours.len(), "{}:\n{text}", path.display());
        for (line, ev) in lines.iter().zip(&ours) {
            let f: Vec<&str> = line.split('|').collect();
            let addr = |a: &str, b: &str| {
                if a.is_empty() {
                    b.to_string()
                } else {
                    a.to_string()
                }
            };
            let shown = |ip: IpAddr| match ev.network {
                NetworkType::Other => String::new(),
                _ => ip.to_string(),
            };
            let port = |p: u16| match ev.transport {
                Transport::Tcp | Transport::Udp => p.to_string(),
                _ => String::new(),
            };
            assert_eq!(f[0], ev.length.to_string(), "frame.len: {line}");
            // tshark shows no time for a simple packet block (it has none); we give it the
            // previous packet's.
            if !f[1].is_empty() {
                let time: f64 = f[1].parse().expect("time");
                let ours = ev.timestamp_ns as f64 / 1e9;
                assert!((time - ours).abs() < 1e-6, "time: {line} vs {ev:?}");
            }
            assert_eq!(addr(f[2], f[3]), shown(ev.src_addr), "src: {line}");
            assert_eq!(addr(f[4], f[5]), shown(ev.dst_addr), "dst: {line}");
            assert_eq!(addr(f[6], f[7]), port(ev.src_port), "sport: {line}");
            assert_eq!(addr(f[8], f[9]), port(ev.dst_port), "dport: {line}");
            if ev.transport == Transport::Tcp {
                assert_eq!(f[10], format!("0x{:04x}", ev.tcp_flags), "flags: {line}");
            }
        }
    }
}

/// Replay speed of a classic and a pcapng file through a bare channel: `cargo test --release
/// -p periscope-receivers --test pcap -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, run in release"]
fn replay_throughput() {
    use periscope_pipeline::edge::EventOutput;
    use periscope_pipeline::model::Payload;
    const N: u64 = 1_000_000;
    let dir = TempDir::new("throughput");
    let classic = dir.path("big.pcap");
    let frames = [tcp_syn(), vlan_udp(), tcp6_fin(), arp()];
    let packets: Vec<_> = (0..N)
        .map(|i| pkt(T0 + i * 1000, frames[i as usize % 4].clone()))
        .collect();
    write_pcap(
        &classic,
        Endianness::Little,
        TsResolution::NanoSecond,
        DataLink::ETHERNET,
        &packets,
    );
    let ng = dir.path("big.pcapng");
    let mut w = PcapNgWriter::new(std::io::BufWriter::new(File::create(&ng).expect("create")))
        .expect("shb");
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .expect("idb");
    for p in &packets {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_nanos(p.ts_ns / 1000),
            original_len: p.orig_len,
            data: Cow::Borrowed(&p.data),
            options: vec![EnhancedPacketOption::Flags(1)],
        })
        .expect("epb");
    }
    drop(w);
    for path in [classic, ng] {
        let receiver = pcap_config(&path).build(&context("pcap")).expect("build");
        let (mut output, rx, _) = EventOutput::for_test(64);
        let started = std::time::Instant::now();
        let thread = std::thread::spawn(move || receiver.run(&mut output, &StopSignal::default()));
        let mut n = 0usize;
        for p in rx.iter() {
            if let Payload::Events(b) = p {
                n += b.len();
            }
        }
        thread.join().expect("join").expect("run");
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: {n} packets in {secs:.3} s: {:.2} M packets/s",
            path.display(),
            n as f64 / secs / 1e6
        );
        assert_eq!(n as u64, N);
    }
}

//! The `pcap` receiver replaying files written with pcap-file's writers (or patched by hand
//! to be broken): exact counts, lengths, timestamps, addresses, ports, flags, devices, and
//! error messages that name the record and byte.

mod classic;
mod errors;
mod ground_truth;
mod pcapng;
mod speed;

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

use periscope_testkit::receiver::{count_events, run, Run};
use periscope_testkit::{context, TestDir};

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

/// [`write_pcap`] in the most common form: little-endian, microseconds, Ethernet.
fn write_ethernet_pcap(path: &Path, packets: &[Pkt]) -> Vec<u64> {
    write_pcap(
        path,
        Endianness::Little,
        TsResolution::MicroSecond,
        DataLink::ETHERNET,
        packets,
    )
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

/// Writes the four-packet Ethernet capture; returns its bytes and record offsets.
fn ethernet_file(path: &Path) -> (Vec<u8>, Vec<u64>) {
    let offsets = write_ethernet_pcap(path, &ethernet_mix(T0));
    (std::fs::read(path).expect("read back"), offsets)
}

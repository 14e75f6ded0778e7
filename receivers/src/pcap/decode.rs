//! Turns a captured frame (link-layer header onwards) into a [`PacketEvent`].
//!
//! Decoding is zero-copy (etherparse's lax slicing) and never fails: a truncated or malformed
//! frame yields an event with whatever could be read (at least the timestamp, device and
//! length), so every captured frame is counted.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket};
use periscope_pipeline::model::{DeviceRef, Direction, NetworkType, PacketEvent, Transport};

/// Link-layer header types (numbers from the tcpdump `LINKTYPE_*` registry) that
/// [`decode_frame`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// `LINKTYPE_NULL` (0): BSD loopback, a 4-byte address family in the capturing host's
    /// byte order.
    Null,
    /// `LINKTYPE_ETHERNET` (1): Ethernet II, with any 802.1Q/802.1ad VLAN tags.
    Ethernet,
    /// `LINKTYPE_RAW` (101), `LINKTYPE_IPV4` (228), `LINKTYPE_IPV6` (229): the frame starts
    /// with the IP header.
    RawIp,
    /// `LINKTYPE_LOOP` (108): like `Null`, in network byte order.
    Loop,
    /// `LINKTYPE_LINUX_SLL` (113): Linux "cooked" capture v1 (`tcpdump -i any`).
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): Linux "cooked" capture v2.
    LinuxSll2,
    /// Any other link type: such frames become events with timestamp, device and length only.
    Other(u32),
}

impl LinkType {
    /// Maps a `LINKTYPE_*` number (a pcap header's or pcapng interface's link type).
    pub fn from_linktype(linktype: u32) -> Self {
        match linktype {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            101 | 228 | 229 => LinkType::RawIp,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            n => LinkType::Other(n),
        }
    }

    /// True when [`decode_frame`] looks inside frames of this type.
    pub fn is_decoded(self) -> bool {
        !matches!(self, LinkType::Other(_))
    }
}

/// What a capture records about a frame besides its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// When the frame was captured, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The capture interface.
    pub device: DeviceRef,
    /// Length of the frame on the wire (pcap `orig_len`); may exceed the captured bytes when
    /// the capture was cut at a snap length. Becomes the event's `length`.
    pub orig_len: u32,
    /// Direction recorded by the capture (pcapng packet flags), if any. A Linux cooked
    /// header's packet type takes precedence; unknown means ingress.
    pub direction: Option<Direction>,
}

/// Linux `PACKET_OUTGOING`: the packet type the kernel gives to packets the host sent.
const PACKET_OUTGOING: u16 = 4;

/// Whether an IPv6 extension chain (`first` = the fixed header's next header, `exts` = the
/// extension headers' bytes) holds a fragment header with a non-zero offset: a non-first
/// fragment. Bounds-checked; walks at most 8 headers.
fn ipv6_later_fragment(first: u8, exts: &[u8]) -> bool {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const AUTH: u8 = 51;
    const DEST_OPTS: u8 = 60;
    let (mut next, mut rest) = (first, exts);
    for _ in 0..8 {
        let len = match next {
            FRAGMENT => {
                let Some(h) = rest.get(..8) else { return false };
                let offset = u16::from_be_bytes([h[2], h[3]]) >> 3;
                if offset != 0 {
                    return true;
                }
                8
            }
            HOP_BY_HOP | ROUTING | DEST_OPTS => match rest.get(1) {
                Some(l) => (usize::from(*l) + 1) * 8,
                None => return false,
            },
            AUTH => match rest.get(1) {
                Some(l) => (usize::from(*l) + 2) * 4,
                None => return false,
            },
            _ => return false,
        };
        let Some(&n) = rest.first() else { return false };
        next = n;
        rest = rest.get(len..).unwrap_or(&[]);
    }
    false
}

/// Decodes one captured frame. Never panics and never allocates; decodes as much of a
/// truncated or malformed frame as is there.
pub fn decode_frame(link: LinkType, data: &[u8], meta: FrameMeta) -> PacketEvent {
    let mut ev = PacketEvent {
        timestamp_ns: meta.timestamp_ns,
        device: meta.device,
        direction: meta.direction.unwrap_or_default(),
        length: meta.orig_len,
        ..PacketEvent::default()
    };
    match link {
        LinkType::Ethernet => {
            // An error here means fewer than 14 bytes: nothing more to learn.
            if let Ok(p) = LaxSlicedPacket::from_ethernet(data) {
                fill_from_slices(&mut ev, &p);
            }
        }
        LinkType::LinuxSll => {
            // packet type (2), ARPHRD type (2), address length (2), address (8), protocol (2)
            if let Some(t) = be16(data, 0) {
                ev.direction = sll_direction(t);
            }
            if let (Some(proto), Some(rest)) = (be16(data, 14), data.get(16..)) {
                fill_from_ether_type(&mut ev, proto, rest);
            }
        }
        LinkType::LinuxSll2 => {
            // protocol (2), reserved (2), ifindex (4), ARPHRD type (2), packet type (1),
            // address length (1), address (8)
            if let Some(&t) = data.get(10) {
                ev.direction = sll_direction(u16::from(t));
            }
            if let (Some(proto), Some(rest)) = (be16(data, 0), data.get(20..)) {
                fill_from_ether_type(&mut ev, proto, rest);
            }
        }
        LinkType::RawIp => fill_from_ip(&mut ev, data),
        LinkType::Null | LinkType::Loop => {
            if let (Some(family), Some(rest)) = (data.get(..4), data.get(4..)) {
                let family: [u8; 4] = [family[0], family[1], family[2], family[3]];
                let family = if link == LinkType::Loop {
                    u32::from_be_bytes(family)
                } else {
                    // Written in the capturing host's byte order, which the file does not
                    // record: the family is small, so whichever reading is small is right.
                    let le = u32::from_le_bytes(family);
                    if le <= 0xffff {
                        le
                    } else {
                        u32::from_be_bytes(family)
                    }
                };
                // AF_INET is 2 everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD/OpenBSD),
                // 28 (FreeBSD), 30 (macOS).
                if matches!(family, 2 | 10 | 24 | 28 | 30) {
                    fill_from_ip(&mut ev, rest);
                }
            }
        }
        LinkType::Other(_) => {}
    }
    ev
}

/// The TCP or UDP payload of a captured frame (as far as it was captured), for the few
/// packets whose payload is read (DNS). `None` when the frame has no TCP/UDP header.
pub fn l4_payload(link: LinkType, data: &[u8]) -> Option<&[u8]> {
    let p = match link {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(data).ok()?,
        LinkType::LinuxSll => {
            LaxSlicedPacket::from_ether_type(EtherType(be16(data, 14)?), data.get(16..)?)
        }
        LinkType::LinuxSll2 => {
            LaxSlicedPacket::from_ether_type(EtherType(be16(data, 0)?), data.get(20..)?)
        }
        LinkType::RawIp => LaxSlicedPacket::from_ip(data).ok()?,
        LinkType::Null | LinkType::Loop => LaxSlicedPacket::from_ip(data.get(4..)?).ok()?,
        LinkType::Other(_) => return None,
    };
    match p.transport? {
        etherparse::TransportSlice::Udp(u) => Some(u.payload()),
        etherparse::TransportSlice::Tcp(t) => Some(t.payload()),
        _ => None,
    }
}

fn sll_direction(packet_type: u16) -> Direction {
    if packet_type == PACKET_OUTGOING {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

fn be16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn fill_from_ether_type(ev: &mut PacketEvent, ether_type: u16, payload: &[u8]) {
    let p = LaxSlicedPacket::from_ether_type(EtherType(ether_type), payload);
    fill_from_slices(ev, &p);
    if p.net.is_none() && p.link_exts.is_empty() {
        // The IP header did not parse (truncated): the protocol field still says what it was.
        ev.network = network_from_ether_type(EtherType(ether_type));
    }
}

fn fill_from_ip(ev: &mut PacketEvent, data: &[u8]) {
    match LaxSlicedPacket::from_ip(data) {
        Ok(p) => fill_from_slices(ev, &p),
        Err(_) => {
            // An IP header too short or broken to slice: the version nibble still tells the
            // network type.
            ev.network = match data.first().map(|b| b >> 4) {
                Some(4) => NetworkType::Ipv4,
                Some(6) => NetworkType::Ipv6,
                _ => NetworkType::Other,
            };
        }
    }
}

fn network_from_ether_type(t: EtherType) -> NetworkType {
    match t {
        EtherType::IPV4 => NetworkType::Ipv4,
        EtherType::IPV6 => NetworkType::Ipv6,
        _ => NetworkType::Other,
    }
}

fn fill_from_slices(ev: &mut PacketEvent, p: &LaxSlicedPacket<'_>) {
    let (payload, later_fragment) = match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            ev.network = NetworkType::Ipv4;
            ev.src_addr = IpAddr::V4(h.source_addr());
            ev.dst_addr = IpAddr::V4(h.destination_addr());
            let payload = ip.payload();
            (
                payload,
                payload.fragmented && h.fragments_offset().value() != 0,
            )
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            ev.network = NetworkType::Ipv6;
            ev.src_addr = IpAddr::V6(h.source_addr());
            ev.dst_addr = IpAddr::V6(h.destination_addr());
            let payload = ip.payload();
            // Walked by hand: etherparse 0.21's extension iterator reads out of bounds on
            // some laxly parsed (cut-off) chains (found by `cargo fuzz`, fuzz/packet).
            let later = payload.fragmented
                && ipv6_later_fragment(ip.header().next_header().0, ip.extensions().slice());
            (payload, later)
        }
        Some(LaxNetSlice::Arp(_)) => return,
        None => {
            // Tagged or cooked frames whose IP header is truncated: name the network type
            // from the innermost ether type.
            if let Some(e) = p.ether_payload() {
                ev.network = network_from_ether_type(e.ether_type);
            }
            return;
        }
    };
    // The protocol after any IPv4 options / IPv6 extension headers.
    ev.transport = Transport::from_ip_protocol(payload.ip_number.0);
    // Ports are read straight from the IP payload rather than from a parsed transport
    // header, so that a header cut short by the snap length still yields its ports. Only the
    // first fragment of a fragmented packet carries the transport header.
    if later_fragment {
        return;
    }
    let l4 = payload.payload;
    match ev.transport {
        Transport::Tcp | Transport::Udp => {
            if let (Some(s), Some(d)) = (be16(l4, 0), be16(l4, 2)) {
                ev.src_port = s;
                ev.dst_port = d;
            }
            if ev.transport == Transport::Tcp {
                ev.tcp_flags = l4.get(13).copied().unwrap_or(0);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {

    /// A raw IPv6 packet with a cut-off extension chain on which etherparse 0.21's extension
    /// iterator read out of bounds (found by `cargo fuzz`, fuzz/packet).
    const FUZZ_IPV6_EXTENSIONS: &[u8] = &[
        0x6c, 0x6c, 0x6c, 0x2c, 0x4a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x6c, 0x6c, 0x6c,
        0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x6c, 0x75, 0x6c, 0x6c,
        0x6c, 0x38, 0x00, 0x00, 0x00, 0x2f, 0x00, 0x00, 0x00, 0x2c, 0x2c, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x3c, 0x00,
        0x00, 0x00, 0x29, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x95, 0x7a, 0xb0,
        0xb0, 0xb0, 0xb0, 0xb0, 0x00, 0x47, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn a_cut_off_ipv6_extension_chain_is_decoded_safely() {
        let ev = decode_frame(
            LinkType::RawIp,
            FUZZ_IPV6_EXTENSIONS,
            FrameMeta {
                orig_len: FUZZ_IPV6_EXTENSIONS.len() as u32,
                ..FrameMeta::default()
            },
        );
        assert_eq!(ev.length, FUZZ_IPV6_EXTENSIONS.len() as u32);
    }

    #[test]
    fn ipv6_fragment_offsets_are_found_along_the_chain() {
        // hop-by-hop (8 bytes) → fragment with offset 185 (×8 bytes) → UDP
        let mut exts = vec![44, 0, 0, 0, 0, 0, 0, 0];
        exts.extend_from_slice(&[17, 0, 0x05, 0xc8, 0, 0, 0, 1]);
        assert!(ipv6_later_fragment(0, &exts));
        // The first fragment (offset 0) is not a later one.
        exts[10] = 0;
        exts[11] = 0x01;
        assert!(!ipv6_later_fragment(0, &exts));
        // Cut off anywhere: no panic, no fragment.
        for n in 0..exts.len() {
            let _ = ipv6_later_fragment(0, &exts[..n]);
        }
        assert!(!ipv6_later_fragment(6, &[]));
    }

    use std::net::{Ipv4Addr, Ipv6Addr};

    use etherparse::{IpNumber, Ipv6Header, Ipv6RawExtHeader, PacketBuilder, UdpHeader};

    use super::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn meta(orig_len: u32) -> FrameMeta {
        FrameMeta {
            timestamp_ns: 1_700_000_000_123_456_789,
            device: DeviceRef {
                ifindex: 3,
                ..DeviceRef::default()
            },
            orig_len,
            direction: None,
        }
    }

    /// Serialises a packet from etherparse's builder (`$b` is any finished builder step).
    macro_rules! build {
        ($b:expr, $payload:expr) => {{
            let b = $b;
            let payload: &[u8] = $payload;
            let mut out = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut out, payload).expect("build packet");
            out
        }};
    }

    fn eth_ipv4_tcp() -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4([10, 1, 2, 3], [10, 4, 5, 6], 64)
            .tcp(40000, 443, 1000, 65535)
            .syn()
            .ack(77);
        build!(b, &[0u8; 100])
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let frame = eth_ipv4_tcp();
        assert_eq!(frame.len(), 14 + 20 + 20 + 100);
        let ev = decode_frame(LinkType::Ethernet, &frame, meta(1514));
        assert_eq!(ev.timestamp_ns, 1_700_000_000_123_456_789);
        assert_eq!(ev.device.ifindex, 3);
        assert_eq!(ev.network, NetworkType::Ipv4);
        assert_eq!(ev.transport, Transport::Tcp);
        assert_eq!(ev.src_addr, IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(ev.dst_addr, IpAddr::V4(Ipv4Addr::new(10, 4, 5, 6)));
        assert_eq!((ev.src_port, ev.dst_port), (40000, 443));
        assert_eq!(ev.tcp_flags, 0x12, "SYN|ACK");
        // The original length, not the captured one.
        assert_eq!(ev.length, 1514);
        assert_eq!(ev.direction, Direction::Ingress);
    }

    #[test]
    fn vlan_single_and_double() {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .single_vlan(100.try_into().expect("vlan id"))
            .ipv4([192, 168, 0, 1], [192, 168, 0, 2], 64)
            .udp(5353, 53);
        let frame = build!(b, b"query");
        let ev = decode_frame(LinkType::Ethernet, &frame, meta(frame.len() as u32));
        assert_eq!(ev.network, NetworkType::Ipv4);
        assert_eq!(ev.transport, Transport::Udp);
        assert_eq!((ev.src_port, ev.dst_port), (5353, 53));
        assert_eq!(ev.dst_addr, IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2)));

        let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .double_vlan(
                10.try_into().expect("vlan id"),
                20.try_into().expect("vlan id"),
            )
            .ipv6([1; 16], [2; 16], 64)
            .tcp(1, 2, 0, 100)
            .fin();
        let frame = build!(b, &[]);
        let ev = decode_frame(LinkType::Ethernet, &frame, meta(frame.len() as u32));
        assert_eq!(ev.network, NetworkType::Ipv6);
        assert_eq!(ev.transport, Transport::Tcp);
        assert_eq!((ev.src_port, ev.dst_port, ev.tcp_flags), (1, 2, 0x01));
        assert_eq!(ev.src_addr, IpAddr::V6(Ipv6Addr::from([1; 16])));
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        // Ethernet, IPv6 with a hop-by-hop options header, then UDP.
        let udp = UdpHeader::without_ipv4_checksum(1111, 2222, 4).expect("udp");
        let hop = Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[0; 6]).expect("ext");
        let ip = Ipv6Header {
            payload_length: (hop.header_len() + 8 + 4) as u16,
            next_header: IpNumber::IPV6_HEADER_HOP_BY_HOP,
            hop_limit: 1,
            source: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            destination: [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16],
            ..Default::default()
        };
        let mut frame = Vec::new();
        frame.extend_from_slice(&MAC_B);
        frame.extend_from_slice(&MAC_A);
        frame.extend_from_slice(&0x86ddu16.to_be_bytes());
        ip.write(&mut frame).expect("ipv6");
        hop.write(&mut frame).expect("hop");
        udp.write(&mut frame).expect("udp");
        frame.extend_from_slice(b"abcd");
        let ev = decode_frame(LinkType::Ethernet, &frame, meta(frame.len() as u32));
        assert_eq!(ev.network, NetworkType::Ipv6);
        assert_eq!(ev.transport, Transport::Udp);
        assert_eq!((ev.src_port, ev.dst_port), (1111, 2222));
        assert_eq!(ev.dst_addr, IpAddr::V6("ff02::16".parse().expect("addr")));
    }

    fn sll(packet_type: u16, protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&packet_type.to_be_bytes());
        f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
        f.extend_from_slice(&6u16.to_be_bytes());
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        f.extend_from_slice(&protocol.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn sll2(packet_type: u8, protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&protocol.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&7u32.to_be_bytes()); // ifindex
        f.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
        f.push(packet_type);
        f.push(6);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn ipv4_udp() -> Vec<u8> {
        let b = PacketBuilder::ipv4([127, 0, 0, 1], [127, 0, 0, 2], 64).udp(9999, 53);
        build!(b, b"x")
    }

    #[test]
    fn linux_cooked_v1_and_v2_set_direction() {
        let ip = ipv4_udp();
        let out = decode_frame(LinkType::LinuxSll, &sll(4, 0x0800, &ip), meta(45));
        assert_eq!(out.direction, Direction::Egress);
        assert_eq!(out.network, NetworkType::Ipv4);
        assert_eq!((out.src_port, out.dst_port), (9999, 53));
        let inc = decode_frame(LinkType::LinuxSll, &sll(0, 0x0800, &ip), meta(45));
        assert_eq!(inc.direction, Direction::Ingress);

        let out = decode_frame(LinkType::LinuxSll2, &sll2(4, 0x0800, &ip), meta(49));
        assert_eq!(out.direction, Direction::Egress);
        assert_eq!(out.transport, Transport::Udp);
        assert_eq!(out.dst_addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let inc = decode_frame(LinkType::LinuxSll2, &sll2(3, 0x0800, &ip), meta(49));
        assert_eq!(inc.direction, Direction::Ingress);
        // The cooked header's packet type wins over the capture's flag.
        let m = FrameMeta {
            direction: Some(Direction::Egress),
            ..meta(49)
        };
        assert_eq!(
            decode_frame(LinkType::LinuxSll2, &sll2(0, 0x0800, &ip), m).direction,
            Direction::Ingress
        );
    }

    #[test]
    fn raw_ip_icmp_and_icmpv6() {
        let mut icmp = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut icmp, b"ping")
            .expect("icmp");
        let ev = decode_frame(LinkType::RawIp, &icmp, meta(icmp.len() as u32));
        assert_eq!(
            (ev.network, ev.transport),
            (NetworkType::Ipv4, Transport::Icmp)
        );
        assert_eq!((ev.src_port, ev.dst_port), (0, 0));

        let mut icmp6 = Vec::new();
        PacketBuilder::ipv6([0xfe; 16], [0xfd; 16], 64)
            .icmpv6_echo_request(1, 1)
            .write(&mut icmp6, b"ping")
            .expect("icmpv6");
        let ev = decode_frame(LinkType::RawIp, &icmp6, meta(icmp6.len() as u32));
        assert_eq!(
            (ev.network, ev.transport),
            (NetworkType::Ipv6, Transport::Icmpv6)
        );
    }

    #[test]
    fn arp_is_an_event_of_network_type_other() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&MAC_A);
        frame.extend_from_slice(&0x0806u16.to_be_bytes());
        frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&MAC_A);
        frame.extend_from_slice(&[10, 0, 0, 1]);
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&[10, 0, 0, 2]);
        frame.resize(60, 0);
        let ev = decode_frame(LinkType::Ethernet, &frame, meta(60));
        assert_eq!(ev.network, NetworkType::Other);
        assert_eq!(ev.transport, Transport::Other);
        assert_eq!(ev.length, 60);
        assert_eq!(ev.src_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }

    #[test]
    fn loopback_null_and_loop() {
        let ip = ipv4_udp();
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        let ev = decode_frame(LinkType::Null, &null, meta(null.len() as u32));
        assert_eq!((ev.network, ev.dst_port), (NetworkType::Ipv4, 53));
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(&ip);
        let ev = decode_frame(LinkType::Loop, &lo, meta(lo.len() as u32));
        assert_eq!((ev.network, ev.src_port), (NetworkType::Ipv4, 9999));
    }

    #[test]
    fn truncated_frames_keep_what_is_there() {
        // Cut at the snap length inside the TCP header: ports are still there, flags not.
        let frame = eth_ipv4_tcp();
        let ev = decode_frame(LinkType::Ethernet, &frame[..14 + 20 + 8], meta(154));
        assert_eq!(ev.transport, Transport::Tcp);
        assert_eq!((ev.src_port, ev.dst_port, ev.tcp_flags), (40000, 443, 0));
        assert_eq!(ev.length, 154);
        // Cut inside the IPv4 header: still IPv4.
        let ev = decode_frame(LinkType::Ethernet, &frame[..14 + 10], meta(154));
        assert_eq!(ev.network, NetworkType::Ipv4);
        assert_eq!(ev.transport, Transport::Other);
        // Every prefix, every link type: no panic, and the length is always the original.
        for link in [
            LinkType::Ethernet,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::RawIp,
            LinkType::Null,
            LinkType::Loop,
            LinkType::Other(147),
        ] {
            for n in 0..=frame.len() {
                assert_eq!(decode_frame(link, &frame[..n], meta(9000)).length, 9000);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator: no extra dependency needed.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut buf = [0u8; 200];
        for round in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Make IP-looking starts common so the deeper layers get exercised.
            buf[0] = [0x45, 0x60, buf[0], 0x46][round % 4];
            buf[12] = 0x08;
            buf[13] = [0x00, 0xdd, 0x06, 0x00][round % 4];
            let n = (x as usize) % buf.len();
            for link in [
                LinkType::Ethernet,
                LinkType::LinuxSll,
                LinkType::LinuxSll2,
                LinkType::RawIp,
                LinkType::Null,
            ] {
                let ev = decode_frame(link, &buf[..n], meta(n as u32));
                assert_eq!(ev.length, n as u32);
            }
        }
    }

    #[test]
    fn ipv4_fragments_carry_ports_only_in_the_first() {
        let mut frame = eth_ipv4_tcp();
        // Set more-fragments: the first fragment still has the TCP header.
        frame[14 + 6] = 0x20;
        frame[14 + 10] = 0;
        frame[14 + 11] = 0; // checksum is not verified by the lax slicer anyway
        let ev = decode_frame(LinkType::Ethernet, &frame, meta(154));
        assert_eq!((ev.transport, ev.dst_port), (Transport::Tcp, 443));
        // Offset 185 * 8: a later fragment, whose first bytes are payload, not ports.
        frame[14 + 6] = 0x00;
        frame[14 + 7] = 185;
        let ev = decode_frame(LinkType::Ethernet, &frame, meta(154));
        assert_eq!(
            (ev.transport, ev.src_port, ev.dst_port),
            (Transport::Tcp, 0, 0)
        );
    }

    #[test]
    fn link_type_numbers() {
        assert_eq!(LinkType::from_linktype(1), LinkType::Ethernet);
        assert_eq!(LinkType::from_linktype(113), LinkType::LinuxSll);
        assert_eq!(LinkType::from_linktype(276), LinkType::LinuxSll2);
        for n in [101, 228, 229] {
            assert_eq!(LinkType::from_linktype(n), LinkType::RawIp);
        }
        assert_eq!(LinkType::from_linktype(127), LinkType::Other(127));
        assert!(!LinkType::Other(127).is_decoded());
    }
}

//! The packet object's ring-buffer records (`periscope_packet`, `periscope_burst`,
//! `periscope_dns`) → events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use periscope_pipeline::model::{
    BurstEvent, BurstPhase, DeviceRef, Direction, Locality, NetnsId, NetworkType, PacketEvent,
    Transport,
};

use crate::shared::ebpf::records::{
    BurstRecord, DnsRecord, PacketRecord, PERISCOPE_BURST_END, PERISCOPE_BURST_VERSION,
    PERISCOPE_DIR_EGRESS, PERISCOPE_DIR_INGRESS, PERISCOPE_DNS_PAYLOAD, PERISCOPE_DNS_VERSION,
    PERISCOPE_PACKET_VERSION, PERISCOPE_RECORD_BURST, PERISCOPE_RECORD_DNS,
    PERISCOPE_RECORD_PACKET,
};
use crate::shared::ebpf::{BootClock, Record};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// Why a `periscope_packet` record could not be decoded. Each is a bug or a version mismatch
/// between the embedded object and this crate, never a property of the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the record's size.
    #[error("record of {len} bytes, a packet record has {need}")]
    TooShort { len: usize, need: usize },
    /// The first byte is not a kind this decoder handles.
    #[error("record kind {0}, expected {PERISCOPE_RECORD_PACKET} (packet)")]
    UnknownKind(u8),
    /// A packet record of a layout version this crate does not know.
    #[error("packet record version {0}, this build reads version {PERISCOPE_PACKET_VERSION}")]
    UnsupportedVersion(u8),
    /// A direction byte that is neither ingress nor egress.
    #[error("packet record direction {0}")]
    BadDirection(u8),
}

/// Why a `periscope_burst` record could not be decoded. Each is a bug or a version mismatch
/// between the embedded object and this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BurstRecordError {
    /// Fewer bytes than the record's size.
    #[error("record of {len} bytes, a burst record has {need}")]
    TooShort { len: usize, need: usize },
    /// The first byte is not the burst kind.
    #[error("record kind {0}, expected {PERISCOPE_RECORD_BURST} (burst)")]
    UnknownKind(u8),
    /// A burst record of a layout version this crate does not know.
    #[error("burst record version {0}, this build reads version {PERISCOPE_BURST_VERSION}")]
    UnsupportedVersion(u8),
    /// A direction byte that is neither ingress nor egress.
    #[error("burst record direction {0}")]
    BadDirection(u8),
}

/// Why a `periscope_dns` record gave no DNS event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsRecordError {
    /// Fewer bytes than the record's size, or a payload length past its array.
    #[error("DNS record of {0} bytes, or its payload length, is too short or too long")]
    BadSize(usize),
    /// A DNS record of a layout version this crate does not know.
    #[error("DNS record version {0}, this build reads version {PERISCOPE_DNS_VERSION}")]
    UnsupportedVersion(u8),
    /// The payload on port 53 is not a DNS message we can read (a property of the traffic).
    #[error("{0}")]
    Payload(#[from] crate::shared::dns::DnsError),
}

/// True when a ring-buffer record is a `periscope_dns` record.
pub fn is_dns_record(bytes: &[u8]) -> bool {
    bytes.first() == Some(&PERISCOPE_RECORD_DNS)
}

/// Decodes a `periscope_dns` record: its packet identity and DNS message, interning the
/// question name in `names`. `Ok(None)` when the payload holds no message (a bare TCP segment).
pub fn decode_dns(
    bytes: &[u8],
    clock: &BootClock,
    names: &periscope_pipeline::DnsTable,
) -> Result<Option<periscope_pipeline::model::DnsEvent>, DnsRecordError> {
    let rec = DnsRecord::from_bytes(bytes).ok_or(DnsRecordError::BadSize(bytes.len()))?;
    if rec.version != PERISCOPE_DNS_VERSION {
        return Err(DnsRecordError::UnsupportedVersion(rec.version));
    }
    let len = usize::from(rec.payload_len);
    if len > usize::from(PERISCOPE_DNS_PAYLOAD) {
        return Err(DnsRecordError::BadSize(len));
    }
    let (network, src_addr, dst_addr) = match rec.ethertype {
        ETH_P_IPV6 => (
            NetworkType::Ipv6,
            IpAddr::V6(Ipv6Addr::from(rec.saddr)),
            IpAddr::V6(Ipv6Addr::from(rec.daddr)),
        ),
        _ => (NetworkType::Ipv4, ipv4(&rec.saddr), ipv4(&rec.daddr)),
    };
    let packet = PacketEvent {
        timestamp_ns: clock.to_unix_ns(rec.ts_boot_ns),
        device: device(rec.netns_inode, rec.netns_cookie, rec.ifindex),
        direction: if rec.direction == PERISCOPE_DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        network,
        transport: Transport::from_ip_protocol(rec.l4_proto),
        src_addr,
        dst_addr,
        src_port: rec.sport,
        dst_port: rec.dport,
        ..PacketEvent::default()
    };
    Ok(crate::shared::dns::parse(
        &packet,
        &rec.payload[..len],
        names,
    )?)
}

/// Decodes one ring-buffer record (the bytes of a `struct periscope_packet`) into an event.
/// Never allocates; bytes past the record are ignored.
pub fn decode_packet(bytes: &[u8], clock: &BootClock) -> Result<PacketEvent, DecodeError> {
    let need = size_of::<PacketRecord>();
    let Some(rec) = PacketRecord::from_bytes(bytes) else {
        return Err(match bytes.first() {
            Some(&kind) if kind != PERISCOPE_RECORD_PACKET => DecodeError::UnknownKind(kind),
            _ => DecodeError::TooShort {
                len: bytes.len(),
                need,
            },
        });
    };
    if rec.kind != PERISCOPE_RECORD_PACKET {
        return Err(DecodeError::UnknownKind(rec.kind));
    }
    if rec.version != PERISCOPE_PACKET_VERSION {
        return Err(DecodeError::UnsupportedVersion(rec.version));
    }
    let direction = direction(rec.direction).ok_or(DecodeError::BadDirection(rec.direction))?;
    let (network, src_addr, dst_addr) = match rec.ethertype {
        ETH_P_IP => (NetworkType::Ipv4, ipv4(&rec.saddr), ipv4(&rec.daddr)),
        ETH_P_IPV6 => (
            NetworkType::Ipv6,
            IpAddr::V6(Ipv6Addr::from(rec.saddr)),
            IpAddr::V6(Ipv6Addr::from(rec.daddr)),
        ),
        _ => (
            NetworkType::Other,
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ),
    };
    let (transport, src_port, dst_port) =
        transport_and_ports(network, rec.l4_proto, rec.sport, rec.dport);
    Ok(PacketEvent {
        timestamp_ns: clock.to_unix_ns(rec.ts_boot_ns),
        device: device(rec.netns_inode, rec.netns_cookie, rec.ifindex),
        direction,
        network,
        transport,
        src_addr,
        dst_addr,
        src_port,
        dst_port,
        length: rec.len,
        tcp_flags: if transport == Transport::Tcp {
            rec.tcp_flags
        } else {
            0
        },
        locality: Locality::from_kernel(rec.locality),
    })
}

/// Decodes one burst record (the bytes of a `struct periscope_burst`) into a burst event (one
/// CPU's report; see [`BurstEvent`]).
pub fn decode_burst(bytes: &[u8], clock: &BootClock) -> Result<BurstEvent, BurstRecordError> {
    let Some(rec) = BurstRecord::from_bytes(bytes) else {
        return Err(BurstRecordError::TooShort {
            len: bytes.len(),
            need: size_of::<BurstRecord>(),
        });
    };
    if rec.kind != PERISCOPE_RECORD_BURST {
        return Err(BurstRecordError::UnknownKind(rec.kind));
    }
    if rec.version != PERISCOPE_BURST_VERSION {
        return Err(BurstRecordError::UnsupportedVersion(rec.version));
    }
    let direction =
        direction(rec.direction).ok_or(BurstRecordError::BadDirection(rec.direction))?;
    let per_s = |per_window: u64| {
        if rec.window_ns == 0 {
            0
        } else {
            (u128::from(per_window) * 1_000_000_000 / u128::from(rec.window_ns)) as u64
        }
    };
    Ok(BurstEvent {
        phase: if rec.event == PERISCOPE_BURST_END {
            BurstPhase::End
        } else {
            BurstPhase::Start
        },
        device: device(rec.netns_inode, rec.netns_cookie, rec.ifindex),
        direction,
        cpu: rec.cpu,
        start_ns: clock.to_unix_ns(rec.start_ts_boot_ns),
        end_ns: clock.to_unix_ns(rec.end_ts_boot_ns.max(rec.start_ts_boot_ns)),
        packets: rec.packets,
        bytes: rec.bytes,
        peak_pps: per_s(u64::from(rec.peak_window_packets)),
        peak_bytes_per_s: per_s(rec.peak_window_bytes),
    })
}

/// The device a record names: its namespace's inode and cookie, and its ifindex there.
pub(super) fn device(netns_inode: u32, netns_cookie: u64, ifindex: u32) -> DeviceRef {
    DeviceRef {
        netns: NetnsId {
            inode: netns_inode,
            cookie: netns_cookie,
        },
        ifindex,
    }
}

/// A record's direction byte (`enum periscope_direction`).
pub(super) fn direction(byte: u8) -> Option<Direction> {
    match byte {
        PERISCOPE_DIR_INGRESS => Some(Direction::Ingress),
        PERISCOPE_DIR_EGRESS => Some(Direction::Egress),
        _ => None,
    }
}

fn ipv4(addr: &[u8; 16]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
}

/// The transport of an IP protocol (`Other` off IP) and its ports: those of TCP and UDP only
/// (the kernel's records and flow keys reuse the port fields for ICMP type and code).
pub(super) fn transport_and_ports(
    network: NetworkType,
    l4_proto: u8,
    sport: u16,
    dport: u16,
) -> (Transport, u16, u16) {
    let transport = match network {
        NetworkType::Other => Transport::Other,
        _ => Transport::from_ip_protocol(l4_proto),
    };
    match transport {
        Transport::Tcp | Transport::Udp => (transport, sport, dport),
        _ => (transport, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::ebpf::records::*;

    fn tcp4() -> PacketRecord {
        let mut r = PacketRecord {
            kind: PERISCOPE_RECORD_PACKET,
            version: PERISCOPE_PACKET_VERSION,
            hook: PERISCOPE_HOOK_TC,
            direction: PERISCOPE_DIR_EGRESS,
            ifindex: 7,
            ts_boot_ns: 5_000,
            netns_cookie: 0x1122_3344_5566_7788,
            netns_inode: 4026531840,
            len: 74,
            ethertype: ETH_P_IP,
            sport: 40000,
            dport: 443,
            l4_proto: 6,
            tcp_flags: 0x02,
            ..PacketRecord::default()
        };
        r.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        r
    }

    #[test]
    fn decodes_a_tcp_syn_over_ipv4() {
        let clock = BootClock::from_offset_ns(1_700_000_000_000_000_000);
        let ev = decode_packet(tcp4().as_bytes(), &clock).unwrap();
        assert_eq!(
            ev,
            PacketEvent {
                timestamp_ns: 1_700_000_000_000_005_000,
                device: DeviceRef {
                    netns: NetnsId {
                        inode: 4026531840,
                        cookie: 0x1122_3344_5566_7788
                    },
                    ifindex: 7
                },
                direction: Direction::Egress,
                network: NetworkType::Ipv4,
                transport: Transport::Tcp,
                src_addr: "10.0.0.1".parse().unwrap(),
                dst_addr: "10.0.0.2".parse().unwrap(),
                src_port: 40000,
                dst_port: 443,
                length: 74,
                tcp_flags: 0x02,
                locality: Locality::Unknown,
            }
        );
    }

    #[test]
    fn decodes_udp_over_ipv6_with_trailing_bytes_and_any_alignment() {
        let mut r = tcp4();
        r.direction = PERISCOPE_DIR_INGRESS;
        r.ethertype = ETH_P_IPV6;
        r.l4_proto = 17;
        r.tcp_flags = 0;
        r.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        r.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        // Ring-buffer bytes at an odd offset, followed by padding.
        let mut buf = vec![0u8; 1];
        buf.extend_from_slice(r.as_bytes());
        buf.extend_from_slice(&[0xaa; 8]);
        let ev = decode_packet(&buf[1..], &BootClock::from_offset_ns(0)).unwrap();
        assert_eq!(ev.direction, Direction::Ingress);
        assert_eq!(
            (ev.network, ev.transport),
            (NetworkType::Ipv6, Transport::Udp)
        );
        assert_eq!(ev.src_addr, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(ev.dst_addr, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!((ev.src_port, ev.dst_port, ev.tcp_flags), (40000, 443, 0));
        assert_eq!(ev.timestamp_ns, 5_000);
    }

    #[test]
    fn icmp_type_and_code_do_not_become_ports() {
        let mut r = tcp4();
        r.l4_proto = 1;
        r.sport = 8;
        r.dport = 0;
        r.tcp_flags = 0;
        let ev = decode_packet(r.as_bytes(), &BootClock::from_offset_ns(0)).unwrap();
        assert_eq!(ev.transport, Transport::Icmp);
        assert_eq!((ev.src_port, ev.dst_port), (0, 0));
    }

    #[test]
    fn non_ip_frames_have_no_addresses_or_transport() {
        let mut r = tcp4();
        r.ethertype = 0x0806; // ARP
        r.l4_proto = 0;
        let ev = decode_packet(r.as_bytes(), &BootClock::from_offset_ns(0)).unwrap();
        assert_eq!(
            (ev.network, ev.transport),
            (NetworkType::Other, Transport::Other)
        );
        assert_eq!(ev.src_addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!((ev.src_port, ev.dst_port, ev.tcp_flags), (0, 0, 0));
        assert_eq!(ev.length, 74);
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        let clock = BootClock::from_offset_ns(0);
        let r = tcp4();
        assert_eq!(
            decode_packet(&r.as_bytes()[..79], &clock),
            Err(DecodeError::TooShort { len: 79, need: 80 })
        );
        assert_eq!(
            decode_packet(&[], &clock),
            Err(DecodeError::TooShort { len: 0, need: 80 })
        );
        assert_eq!(
            decode_packet(&[9; 4], &clock),
            Err(DecodeError::UnknownKind(9))
        );
        let mut v = r;
        v.version = 2;
        assert_eq!(
            decode_packet(v.as_bytes(), &clock),
            Err(DecodeError::UnsupportedVersion(2))
        );
        let mut d = r;
        d.direction = 3;
        assert_eq!(
            decode_packet(d.as_bytes(), &clock),
            Err(DecodeError::BadDirection(3))
        );
    }

    #[test]
    fn decodes_a_burst_end() {
        let r = BurstRecord {
            kind: PERISCOPE_RECORD_BURST,
            version: PERISCOPE_BURST_VERSION,
            event: PERISCOPE_BURST_END,
            direction: PERISCOPE_DIR_EGRESS,
            hook: PERISCOPE_HOOK_TC,
            ifindex: 3,
            cpu: 1,
            netns_inode: 42,
            start_ts_boot_ns: 1_000_000,
            end_ts_boot_ns: 3_000_000,
            packets: 500,
            bytes: 50_000,
            peak_window_packets: 60,
            window_ns: 1_000_000,
            peak_window_bytes: 6_000,
            ..BurstRecord::default()
        };
        let bytes = r.as_bytes();
        let ev = decode_burst(bytes, &BootClock::from_offset_ns(10)).unwrap();
        assert_eq!(ev.phase, BurstPhase::End);
        assert_eq!(ev.direction, Direction::Egress);
        assert_eq!((ev.start_ns, ev.end_ns), (1_000_010, 3_000_010));
        assert_eq!((ev.packets, ev.bytes, ev.cpu), (500, 50_000, 1));
        assert_eq!((ev.peak_pps, ev.peak_bytes_per_s), (60_000, 6_000_000));
        assert_eq!(ev.device.netns.inode, 42);
        assert!(decode_burst(&bytes[..10], &BootClock::from_offset_ns(0)).is_err());
    }
}

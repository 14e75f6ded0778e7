//! Writes well-formed capture files (classic pcap and pcapng) from frames the test builds, so
//! that tests without root can still feed periscope real-looking captures, and cut them where
//! they like (every record's offset is returned).

use std::net::Ipv4Addr;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The frame as captured (Ethernet header first).
    pub data: Vec<u8>,
    /// Its length on the wire (≥ `data.len()`; more when a snap length cut it).
    pub orig_len: u32,
    /// pcapng `epb_flags` (bits 0–1: 1 inbound, 2 outbound); classic pcap has no place for it.
    pub epb_flags: Option<u32>,
}

impl Record {
    /// A frame captured whole.
    pub fn new(ts_ns: u64, data: Vec<u8>) -> Record {
        let orig_len = u32::try_from(data.len()).expect("frame shorter than 4 GiB");
        Record {
            ts_ns,
            data,
            orig_len,
            epb_flags: None,
        }
    }

    /// The same frame, marked inbound (received) in pcapng.
    pub fn inbound(mut self) -> Record {
        self.epb_flags = Some(EPB_INBOUND);
        self
    }

    /// The same frame, marked outbound (transmitted) in pcapng.
    pub fn outbound(mut self) -> Record {
        self.epb_flags = Some(EPB_OUTBOUND);
        self
    }
}

/// `epb_flags` direction bits: inbound.
pub const EPB_INBOUND: u32 = 1;
/// `epb_flags` direction bits: outbound.
pub const EPB_OUTBOUND: u32 = 2;

/// A written capture file and where each record starts in it.
#[derive(Debug, Clone)]
pub struct CaptureBytes {
    pub bytes: Vec<u8>,
    /// Offset of each packet record (classic) or Enhanced Packet Block (pcapng).
    pub record_offsets: Vec<usize>,
}

const MAC_A: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x0b];

/// The Internet checksum (RFC 1071) of `data`: IPv4 headers, ICMP, and with a pseudo-header
/// UDP and TCP.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + l4.len());
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = u16::try_from(20 + l4.len()).expect("IPv4 packet fits 64 KiB");
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = protocol;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

fn pseudo_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> u16 {
    let mut p = Vec::with_capacity(12 + l4.len());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.push(0);
    p.push(protocol);
    p.extend_from_slice(&u16::try_from(l4.len()).expect("fits").to_be_bytes());
    p.extend_from_slice(l4);
    checksum(&p)
}

/// An Ethernet/IPv4/UDP frame with `payload_len` bytes of payload.
pub fn udp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload_len: usize,
) -> Vec<u8> {
    let len = u16::try_from(8 + payload_len).expect("UDP datagram fits 64 KiB");
    let mut udp = Vec::with_capacity(usize::from(len));
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend((0..payload_len).map(|i| (i % 251) as u8));
    let c = pseudo_checksum(src, dst, 17, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    ethernet_ipv4(src, dst, 17, &udp)
}

/// An Ethernet/IPv4/TCP frame (ACK|PSH when there is payload, else ACK).
pub fn tcp_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    payload_len: usize,
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + payload_len);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(if payload_len > 0 { 0x18 } else { 0x10 });
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend((0..payload_len).map(|i| (i % 253) as u8));
    let c = pseudo_checksum(src, dst, 6, &tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ethernet_ipv4(src, dst, 6, &tcp)
}

/// An Ethernet/IPv4/ICMP echo request (`reply == false`) or reply.
pub fn icmp_echo_frame(src: Ipv4Addr, dst: Ipv4Addr, reply: bool, seq: u16) -> Vec<u8> {
    let mut icmp = vec![if reply { 0 } else { 8 }, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend(0..56u8);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet_ipv4(src, dst, 1, &icmp)
}

/// A classic pcap file (little-endian; `nanos` picks the nanosecond-resolution magic),
/// link type Ethernet.
pub fn classic_pcap(records: &[Record], nanos: bool, snaplen: u32) -> CaptureBytes {
    let mut b = Vec::new();
    b.extend_from_slice(&(if nanos { 0xa1b2_3c4d_u32 } else { 0xa1b2_c3d4 }).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&snaplen.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    let mut record_offsets = Vec::with_capacity(records.len());
    for r in records {
        record_offsets.push(b.len());
        let secs = u32::try_from(r.ts_ns / 1_000_000_000).expect("timestamp before 2106");
        let frac = r.ts_ns % 1_000_000_000;
        let frac = if nanos { frac } else { frac / 1000 };
        b.extend_from_slice(&secs.to_le_bytes());
        b.extend_from_slice(&(frac as u32).to_le_bytes());
        b.extend_from_slice(&u32::try_from(r.data.len()).expect("fits").to_le_bytes());
        b.extend_from_slice(&r.orig_len.to_le_bytes());
        b.extend_from_slice(&r.data);
    }
    CaptureBytes {
        bytes: b,
        record_offsets,
    }
}

fn pcapng_block(b: &mut Vec<u8>, block_type: u32, body: &[u8]) {
    let padded = body.len().div_ceil(4) * 4;
    let total = u32::try_from(12 + padded).expect("block fits");
    b.extend_from_slice(&block_type.to_le_bytes());
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(b.len() + padded - body.len(), 0);
    b.extend_from_slice(&total.to_le_bytes());
}

fn pcapng_option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&u16::try_from(value.len()).expect("fits").to_le_bytes());
    body.extend_from_slice(value);
    body.resize(body.len().div_ceil(4) * 4, 0);
}

/// A pcapng file (little-endian): a section header, one Ethernet interface named `ifname`
/// with nanosecond timestamps, and one Enhanced Packet Block per record (with `epb_flags`
/// when the record has them).
pub fn pcapng(records: &[Record], ifname: &str) -> CaptureBytes {
    let mut b = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4d_u32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    pcapng_block(&mut b, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&262_144u32.to_le_bytes());
    pcapng_option(&mut idb, 2, ifname.as_bytes()); // if_name
    pcapng_option(&mut idb, 9, &[9]); // if_tsresol: 10^-9
    pcapng_option(&mut idb, 0, &[]); // opt_endofopt
    pcapng_block(&mut b, 1, &idb);
    let mut record_offsets = Vec::with_capacity(records.len());
    for r in records {
        record_offsets.push(b.len());
        let mut epb = Vec::with_capacity(20 + r.data.len());
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((r.ts_ns >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(r.ts_ns as u32).to_le_bytes());
        epb.extend_from_slice(&u32::try_from(r.data.len()).expect("fits").to_le_bytes());
        epb.extend_from_slice(&r.orig_len.to_le_bytes());
        epb.extend_from_slice(&r.data);
        epb.resize(epb.len().div_ceil(4) * 4, 0);
        if let Some(flags) = r.epb_flags {
            pcapng_option(&mut epb, 2, &flags.to_le_bytes()); // epb_flags
            pcapng_option(&mut epb, 0, &[]);
        }
        pcapng_block(&mut b, 6, &epb);
    }
    CaptureBytes {
        bytes: b,
        record_offsets,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), for corrupt files that are the same on
/// every run.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// A small, varied conversation between 10.99.0.1 and 10.99.0.2: ICMP echoes, UDP datagrams
/// and a TCP exchange, 10 ms apart, starting at `start_ns`.
pub fn sample_records(start_ns: u64) -> Vec<Record> {
    let a = Ipv4Addr::new(10, 99, 0, 1);
    let b = Ipv4Addr::new(10, 99, 0, 2);
    let mut frames = Vec::new();
    for seq in 0..3 {
        frames.push(icmp_echo_frame(a, b, false, seq));
        frames.push(icmp_echo_frame(b, a, true, seq));
    }
    for i in 0..4 {
        frames.push(udp_frame(a, 40000, b, 9000, 10 + 100 * i));
        frames.push(udp_frame(b, 9000, a, 40000, 10 + 100 * i));
    }
    for i in 0..4u32 {
        frames.push(tcp_frame(a, 40001, b, 9001, 1 + 1000 * i, 1000));
        frames.push(tcp_frame(b, 9001, a, 40001, 1, 0));
    }
    frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| Record::new(start_ns + i as u64 * 10_000_000, f))
        .collect()
}

/// An Ethernet/IPv4/UDP frame carrying `payload` (e.g. a DNS message).
pub fn udp_frame_with_payload(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("UDP datagram fits 64 KiB");
    let mut udp = Vec::with_capacity(usize::from(len));
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let c = pseudo_checksum(src, dst, 17, &udp);
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    ethernet_ipv4(src, dst, 17, &udp)
}

/// An Ethernet/IPv4/TCP frame (ACK|PSH) carrying `payload`, with sequence and
/// acknowledgement numbers.
pub fn tcp_frame_with_payload(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(0x18);
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let c = pseudo_checksum(src, dst, 6, &tcp);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ethernet_ipv4(src, dst, 6, &tcp)
}

/// A DNS message: a query (`answers` empty, `rcode` 0, `response` false) or a response for
/// `name` type `qtype` (1 A, 28 AAAA) with A records `answers` (TTL `ttl`), by compression
/// pointer to the question.
pub fn dns_message(
    id: u16,
    response: bool,
    rcode: u8,
    name: &str,
    qtype: u16,
    answers: &[Ipv4Addr],
    ttl: u32,
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.push(if response { 0x81 } else { 0x01 });
    m.push(if response { 0x80 | (rcode & 0x0F) } else { 0 });
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&u16::try_from(answers.len()).expect("few").to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(u8::try_from(label.len()).expect("label fits"));
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    for a in answers {
        m.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&4u16.to_be_bytes());
        m.extend_from_slice(&a.octets());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let f = udp_frame(
            Ipv4Addr::new(10, 0, 0, 1),
            1,
            Ipv4Addr::new(10, 0, 0, 2),
            2,
            5,
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(
            checksum(&f[14..34]),
            0,
            "a header with its checksum sums to zero"
        );
    }

    #[test]
    fn record_offsets_point_at_records() {
        let records = sample_records(1_700_000_000_000_000_000);
        let c = classic_pcap(&records, false, 65535);
        assert_eq!(c.record_offsets[0], 24);
        let second = c.record_offsets[1];
        let incl = u32::from_le_bytes(c.bytes[second + 8..second + 12].try_into().unwrap());
        assert_eq!(incl as usize, records[1].data.len());
        let n = pcapng(&records, "eth0");
        let epb = n.record_offsets[0];
        assert_eq!(
            u32::from_le_bytes(n.bytes[epb..epb + 4].try_into().unwrap()),
            6
        );
        assert_eq!(n.bytes.len() % 4, 0);
    }
}

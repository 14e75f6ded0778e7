//! DNS messages in packet payloads → [`DnsEvent`]s, with a real parser (`simple-dns`).
//!
//! Used by the `pcap` receiver (payloads of captured frames) and by the `xdp`/`tcx` receivers
//! (the payload copies of `periscope_dns` records). Never panics on any input; hostile
//! payloads (section counts larger than the message can hold, compression loops, truncation)
//! are errors, and parsing allocates at most in proportion to the payload.

use std::net::IpAddr;

use simple_dns::rdata::RData;
use simple_dns::Packet;

use periscope_pipeline::model::{DnsEvent, PacketEvent, Transport};
use periscope_pipeline::DnsTable;

/// The port DNS is recognised on (both directions).
pub const DNS_PORT: u16 = 53;

/// Why a payload on a DNS port is not a DNS message we can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Shorter than the 12-byte header (or than a TCP length prefix says).
    #[error("DNS message of {0} bytes is shorter than its header")]
    TooShort(usize),
    /// The header's section counts need more bytes than the message has.
    #[error("DNS section counts need more bytes than the {0}-byte message has")]
    Counts(usize),
    /// The parser rejected the message (bad name, compression loop, cut-off record, ...).
    #[error("malformed DNS message")]
    Malformed,
}

/// True when a TCP/UDP packet is from or to the DNS port.
pub fn is_dns(ev: &PacketEvent) -> bool {
    is_dns_on(ev, &[])
}

/// True when a TCP/UDP packet is from or to port 53 or one of `extra_ports`.
pub fn is_dns_on(ev: &PacketEvent, extra_ports: &[u16]) -> bool {
    matches!(ev.transport, Transport::Tcp | Transport::Udp)
        && (ev.src_port == DNS_PORT
            || ev.dst_port == DNS_PORT
            || extra_ports
                .iter()
                .any(|p| *p != 0 && (ev.src_port == *p || ev.dst_port == *p)))
}

/// Smallest wire size of a question (root name, type, class) and of a resource record.
const MIN_QUESTION: usize = 5;
const MIN_RECORD: usize = 11;
const HEADER: usize = 12;

/// Parses the L4 payload of `packet` (a DNS port packet; TCP payloads start with the 2-byte
/// message length) into a [`DnsEvent`] carrying the packet's identity, interning the question
/// name in `names`. `Ok(None)` for TCP segments without payload (handshake, ACKs).
pub fn parse(
    packet: &PacketEvent,
    payload: &[u8],
    names: &DnsTable,
) -> Result<Option<DnsEvent>, DnsError> {
    let msg = match packet.transport {
        Transport::Tcp => {
            if payload.is_empty() {
                return Ok(None);
            }
            let Some(len) = payload
                .get(..2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            else {
                return Err(DnsError::TooShort(payload.len()));
            };
            // A message cut off by a capture's snap length (or the kernel's copy bound) is
            // parsed as far as it goes.
            &payload[2..payload.len().min(2 + len)]
        }
        _ => payload,
    };
    if msg.len() < HEADER {
        return Err(DnsError::TooShort(msg.len()));
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    // Hostile counts would make the parser reserve room for 65535 records per section.
    if HEADER + qd * MIN_QUESTION + (an + ns + ar) * MIN_RECORD > msg.len() {
        return Err(DnsError::Counts(msg.len()));
    }
    // Only the question and answer sections are read: authority and additional records
    // (EDNS OPT among them) are cut off where a snap length or copy bound ends the message.
    let mut copy = msg.to_vec();
    copy[8..12].fill(0);
    let parsed = match Packet::parse(&copy) {
        Ok(p) => p,
        Err(_) => {
            // The answers may be what was cut off: the question alone still tells the lookup.
            copy[6..8].fill(0);
            Packet::parse(&copy).map_err(|_| DnsError::Malformed)?
        }
    };
    let mut ev = DnsEvent {
        timestamp_ns: packet.timestamp_ns,
        device: packet.device,
        direction: packet.direction,
        transport: packet.transport,
        src_addr: packet.src_addr,
        dst_addr: packet.dst_addr,
        src_port: packet.src_port,
        dst_port: packet.dst_port,
        id: u16::from_be_bytes([msg[0], msg[1]]),
        is_response: msg[2] & 0x80 != 0,
        rcode: msg[3] & 0x0F,
        ..DnsEvent::default()
    };
    if let Some(q) = parsed.questions.first() {
        ev.qtype = u16::from(q.qtype);
        let mut name = q.qname.to_string();
        name.make_ascii_lowercase();
        while name.ends_with('.') {
            name.pop();
        }
        ev.name = names.intern(&name);
    }
    let mut ttl = u32::MAX;
    for rr in &parsed.answers {
        let addr = match &rr.rdata {
            RData::A(a) => IpAddr::from(a.address.to_be_bytes()),
            RData::AAAA(a) => IpAddr::from(a.address.to_be_bytes()),
            _ => continue,
        };
        if !ev.push_answer(addr) {
            break;
        }
        ttl = ttl.min(rr.ttl);
    }
    ev.answer_ttl = if ev.answer_count > 0 { ttl } else { 0 };
    Ok(Some(ev))
}

#[cfg(test)]
mod tests {

    #[test]
    fn configured_ports_are_dns_too() {
        let mut ev = PacketEvent {
            transport: Transport::Udp,
            src_port: 40000,
            dst_port: 5353,
            ..PacketEvent::default()
        };
        assert!(!is_dns(&ev));
        assert!(is_dns_on(&ev, &[5353]));
        assert!(!is_dns_on(&ev, &[0, 8053]));
        ev.dst_port = 53;
        assert!(is_dns(&ev));
        ev.transport = Transport::Icmp;
        assert!(!is_dns_on(&ev, &[53]));
    }

    use super::*;
    use std::net::Ipv4Addr;

    /// A query for `www.example.com` A, id 0x1234 (as `dig` sends it, without EDNS).
    pub fn query() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["www", "example", "com"] {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    /// Its answer: a CNAME-free A record 10.0.0.5 with TTL 300, by compression pointer, and
    /// an EDNS OPT record in the additional section.
    pub fn response() -> Vec<u8> {
        let mut m = query();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1; // ancount
        m[11] = 1; // arcount
        m.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0x01, 0x2C, 0, 4, 10, 0, 0, 5]);
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        m
    }

    fn udp() -> PacketEvent {
        PacketEvent {
            transport: Transport::Udp,
            src_port: 40000,
            dst_port: 53,
            ..PacketEvent::default()
        }
    }

    #[test]
    fn queries_and_responses() {
        let names = DnsTable::default();
        let q = parse(&udp(), &query(), &names).unwrap().unwrap();
        assert_eq!(
            (q.id, q.is_response, q.qtype, q.rcode),
            (0x1234, false, 1, 0)
        );
        assert_eq!(names.name(q.name).as_deref(), Some("www.example.com"));
        let r = parse(&udp(), &response(), &names).unwrap().unwrap();
        assert!(r.is_response);
        assert_eq!(r.name, q.name, "one handle per name");
        assert_eq!(r.answer(0), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))));
        assert_eq!(r.answer(1), None);
        assert_eq!(r.answer_ttl, 300);
    }

    #[test]
    fn tcp_messages_have_a_length_prefix() {
        let names = DnsTable::default();
        let tcp = PacketEvent {
            transport: Transport::Tcp,
            ..udp()
        };
        let mut seg = (response().len() as u16).to_be_bytes().to_vec();
        seg.extend(response());
        let r = parse(&tcp, &seg, &names).unwrap().unwrap();
        assert_eq!((r.id, r.answer_count), (0x1234, 1));
        assert_eq!(parse(&tcp, &[], &names), Ok(None), "a bare ACK");
    }

    #[test]
    fn nxdomain_and_many_answers() {
        let names = DnsTable::default();
        let mut nx = query();
        nx[2] = 0x81;
        nx[3] = 0x83;
        assert_eq!(parse(&udp(), &nx, &names).unwrap().unwrap().rcode, 3);
        let mut many = query();
        many[2] = 0x81;
        many[7] = 6;
        for i in 0..6u8 {
            many.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60 + i, 0, 4, 10, 0, 1, i]);
        }
        let r = parse(&udp(), &many, &names).unwrap().unwrap();
        assert_eq!(r.answer_count, 4);
        assert_eq!(r.answer_ttl, 60);
        assert_eq!(r.answer(3), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 3))));
    }

    #[test]
    fn aaaa_answers_after_a_cname() {
        let names = DnsTable::default();
        let mut m = query();
        m[2] = 0x81;
        m[7] = 2; // ancount
        let qlen = m.len();
        m[qlen - 3] = 28; // QTYPE AAAA

        // www.example.com CNAME web.example.com (a label and a pointer to "example.com").
        m.extend_from_slice(&[0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 30, 0, 6]);
        m.extend_from_slice(&[3, b'w', b'e', b'b', 0xC0, 0x10]);
        let target = qlen + 12;
        let v6 = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5);
        m.extend_from_slice(&[0xC0, target as u8, 0, 28, 0, 1, 0, 0, 0, 20, 0, 16]);
        m.extend_from_slice(&v6.octets());
        let r = parse(&udp(), &m, &names).unwrap().unwrap();
        assert_eq!(r.qtype, 28);
        assert_eq!(r.answer_count, 1, "the CNAME is not an address");
        assert_eq!(r.answer(0), Some(IpAddr::V6(v6)));
        assert_eq!(r.answer_ttl, 20);
        assert_eq!(names.name(r.name).as_deref(), Some("www.example.com"));
    }

    #[test]
    fn a_cut_off_answer_keeps_the_question() {
        let names = DnsTable::default();
        let r = response();
        let cut = &r[..r.len() - 20];
        let e = parse(&udp(), cut, &names).unwrap().unwrap();
        assert_eq!((e.id, e.qtype, e.answer_count), (0x1234, 1, 0));
    }

    /// Truncated, malformed and hostile payloads: errors, never panics.
    #[test]
    fn bad_payloads_are_errors() {
        let names = DnsTable::new(16, 16);
        let mut corpus: Vec<Vec<u8>> = vec![
            vec![],
            vec![0; 5],
            vec![0xff; 12],
            // 65535 questions claimed in a 12-byte message.
            vec![0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ];
        // A compression loop: the name points at itself.
        let mut lp = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1];
        corpus.push(lp.clone());
        // A label running past the end.
        lp.truncate(12);
        lp.extend_from_slice(&[63, b'a', b'b']);
        corpus.push(lp);
        // Every prefix of a good response, and byte flips of it.
        let r = response();
        for n in 0..r.len() {
            corpus.push(r[..n].to_vec());
            let mut f = r.clone();
            f[n] ^= 0xA5;
            corpus.push(f);
        }
        // Pseudo-random noise.
        let mut x: u32 = 0x9e37_79b9;
        for len in 0..300 {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.push(x as u8);
            }
            corpus.push(v);
        }
        let tcp = PacketEvent {
            transport: Transport::Tcp,
            ..udp()
        };
        let mut errors = 0;
        for p in &corpus {
            for pkt in [udp(), tcp] {
                if parse(&pkt, p, &names).is_err() {
                    errors += 1;
                }
            }
        }
        assert!(
            errors > corpus.len() / 2,
            "{errors} of {}",
            corpus.len() * 2
        );
        assert!(names.stats().0 <= 16, "the name table stays bounded");
    }
}

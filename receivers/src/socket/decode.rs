//! Socket, drop and cgroup records → events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use periscope_pipeline::model::{
    CgroupCounters, DeviceRef, Direction, DropEvent, NetnsId, NetworkType, ProcessRef, QueueEvent,
    QueueEventKind, SocketEvent, SocketEventKind, SocketHook, SocketRole, Transport,
};

use crate::shared::ebpf::records::*;
use crate::shared::ebpf::Record as _;
use crate::shared::ebpf::{
    BootClock, CgroupCountersRecord, CgroupKey, DropRecord, QueueRecord, SocketRecord,
};

use super::reasons::DropReasons;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("unknown record kind {kind} version {version}")]
    Unknown { kind: u8, version: u8 },
    #[error("socket record with unknown event {0}")]
    Event(u8),
    #[error("queue record with unknown event {0}")]
    QueueEvent(u8),
}

/// A decoded ring-buffer record of a socket object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Socket(SocketEvent),
    Drop(DropEvent),
    Queue(QueueEvent),
}

/// An address as the kernel stores it; IPv4-mapped IPv6 addresses become IPv4 so that the
/// two ends of a dual-stack connection match.
fn addr(family: u8, bytes: &[u8; 16]) -> IpAddr {
    match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        AF_INET6 => IpAddr::V6(Ipv6Addr::from(*bytes)).to_canonical(),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Decodes one record of `sockops.bpf.o`, `sk_msg.bpf.o`, `tcp_udp.bpf.o` or `qdisc.bpf.o`.
pub fn decode_record(
    bytes: &[u8],
    clock: &BootClock,
    reasons: &DropReasons,
) -> Result<Record, RecordError> {
    let (kind, version) = match bytes {
        [k, v, ..] => (*k, *v),
        _ => return Err(RecordError::Short(bytes.len())),
    };
    match (kind, version) {
        (PERISCOPE_RECORD_SOCKET, PERISCOPE_SOCKET_VERSION) => {
            let r = SocketRecord::from_bytes(bytes).ok_or(RecordError::Short(bytes.len()))?;
            Ok(Record::Socket(socket_event(&r, clock)?))
        }
        (PERISCOPE_RECORD_DROP, PERISCOPE_DROP_VERSION) => {
            let r = DropRecord::from_bytes(bytes).ok_or(RecordError::Short(bytes.len()))?;
            Ok(Record::Drop(drop_event(&r, clock, reasons)))
        }
        (PERISCOPE_RECORD_QUEUE, PERISCOPE_QUEUE_VERSION) => {
            let r = QueueRecord::from_bytes(bytes).ok_or(RecordError::Short(bytes.len()))?;
            Ok(Record::Queue(queue_event(&r, clock, reasons)?))
        }
        _ => Err(RecordError::Unknown { kind, version }),
    }
}

fn socket_event(r: &SocketRecord, clock: &BootClock) -> Result<SocketEvent, RecordError> {
    let kind = match r.event {
        PERISCOPE_SOCK_CONNECT => SocketEventKind::Connect,
        PERISCOPE_SOCK_ESTABLISHED => SocketEventKind::Established,
        PERISCOPE_SOCK_RTT => SocketEventKind::Rtt,
        PERISCOPE_SOCK_RETRANSMIT => SocketEventKind::Retransmit,
        PERISCOPE_SOCK_STATE => SocketEventKind::StateChange,
        PERISCOPE_SOCK_CLOSE => SocketEventKind::Close,
        PERISCOPE_SOCK_SEND => SocketEventKind::Send,
        PERISCOPE_SOCK_RECV => SocketEventKind::Receive,
        other => return Err(RecordError::Event(other)),
    };
    let hook = match r.hook {
        PERISCOPE_SOCK_HOOK_SK_MSG => SocketHook::SkMsg,
        PERISCOPE_SOCK_HOOK_SK_SKB => SocketHook::SkSkb,
        PERISCOPE_SOCK_HOOK_TRACEPOINT => SocketHook::Tracepoint,
        PERISCOPE_SOCK_HOOK_FENTRY => SocketHook::Fentry,
        _ => SocketHook::Sockops,
    };
    let role = match r.role {
        PERISCOPE_ROLE_CLIENT => SocketRole::Client,
        PERISCOPE_ROLE_SERVER => SocketRole::Server,
        _ => SocketRole::Unknown,
    };
    Ok(SocketEvent {
        timestamp_ns: clock.to_unix_ns(r.ts_boot_ns),
        cookie: r.cookie,
        netns: NetnsId {
            inode: r.netns_inode,
            cookie: r.netns_cookie,
        },
        cgroup_id: r.cgroup_id,
        process: ProcessRef {
            pid: r.tgid,
            tid: r.pid,
            comm: r.comm,
        },
        local_addr: addr(r.family, &r.laddr),
        remote_addr: addr(r.family, &r.raddr),
        local_port: r.lport,
        remote_port: r.rport,
        kind,
        hook,
        transport: Transport::from_ip_protocol(r.protocol),
        role,
        state: r.state,
        old_state: r.old_state,
        srtt_us: r.srtt_us,
        rttvar_us: r.rttvar_us,
        total_retrans: r.total_retrans,
        size: r.size,
        bytes_sent: r.bytes_sent,
        bytes_acked: r.bytes_acked,
        bytes_received: r.bytes_received,
        duration_ns: r.duration_ns,
    })
}

fn drop_event(r: &DropRecord, clock: &BootClock, reasons: &DropReasons) -> DropEvent {
    DropEvent {
        timestamp_ns: clock.to_unix_ns(r.ts_boot_ns),
        netns: NetnsId {
            inode: r.netns_inode,
            cookie: 0,
        },
        ifindex: r.ifindex,
        reason: reasons.name(r.reason),
        network: match r.family {
            AF_INET => NetworkType::Ipv4,
            AF_INET6 => NetworkType::Ipv6,
            _ => NetworkType::Other,
        },
        transport: Transport::from_ip_protocol(r.protocol),
        src_addr: addr(r.family, &r.saddr),
        dst_addr: addr(r.family, &r.daddr),
        src_port: r.sport,
        dst_port: r.dport,
        length: r.len,
    }
}

fn queue_event(
    r: &QueueRecord,
    clock: &BootClock,
    reasons: &DropReasons,
) -> Result<QueueEvent, RecordError> {
    let (kind, reason) = match r.event {
        PERISCOPE_QUEUE_DEQUEUE => (QueueEventKind::Dequeue, ""),
        PERISCOPE_QUEUE_DROP => (QueueEventKind::Drop, reasons.name(r.reason)),
        other => return Err(RecordError::QueueEvent(other)),
    };
    Ok(QueueEvent {
        kind,
        timestamp_ns: clock.to_unix_ns(r.ts_boot_ns),
        device: DeviceRef {
            netns: NetnsId {
                inode: r.netns_inode,
                cookie: r.netns_cookie,
            },
            ifindex: r.ifindex,
        },
        ifname: r.ifname,
        delay_ns: r.delay_ns,
        backlog_bytes: r.backlog_bytes,
        backlog_packets: r.backlog_packets,
        length: r.len,
        reason,
    })
}

/// One entry of the cgroup_skb counters (summed over CPUs) → an event.
pub fn cgroup_counters(
    key: &CgroupKey,
    value: &CgroupCountersRecord,
    timestamp_ns: u64,
) -> CgroupCounters {
    CgroupCounters {
        timestamp_ns,
        cgroup_id: key.cgroup_id,
        direction: if key.direction == PERISCOPE_DIR_EGRESS {
            Direction::Egress
        } else {
            Direction::Ingress
        },
        network: match key.family {
            AF_INET => NetworkType::Ipv4,
            AF_INET6 => NetworkType::Ipv6,
            _ => NetworkType::Other,
        },
        transport: Transport::from_ip_protocol(key.l4_proto),
        packets: value.packets,
        bytes: value.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> BootClock {
        BootClock::from_offset_ns(1_000)
    }

    #[test]
    fn a_close_record_becomes_a_close_event() {
        let mut r = SocketRecord {
            kind: PERISCOPE_RECORD_SOCKET,
            version: PERISCOPE_SOCKET_VERSION,
            event: PERISCOPE_SOCK_CLOSE,
            hook: PERISCOPE_SOCK_HOOK_TRACEPOINT,
            family: AF_INET,
            protocol: 6,
            role: PERISCOPE_ROLE_CLIENT,
            state: 7,
            old_state: 1,
            tgid: 42,
            pid: 43,
            lport: 5000,
            rport: 80,
            bytes_acked: 10,
            ..SocketRecord::default()
        };
        r.laddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.raddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        r.comm[..4].copy_from_slice(b"curl");
        let bytes = r.as_bytes();
        let Record::Socket(e) = decode_record(bytes, &clock(), &DropReasons::default()).unwrap()
        else {
            panic!("not a socket event")
        };
        assert_eq!(e.kind, SocketEventKind::Close);
        assert_eq!(e.role, SocketRole::Client);
        assert_eq!(e.process.pid, 42);
        assert_eq!(e.process.comm_str(), "curl");
        assert_eq!(e.local_addr, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(e.remote_port, 80);
        assert_eq!(e.transport, Transport::Tcp);
    }

    #[test]
    fn a_dequeue_record_becomes_a_queue_event() {
        let mut r = QueueRecord {
            kind: PERISCOPE_RECORD_QUEUE,
            version: PERISCOPE_QUEUE_VERSION,
            event: PERISCOPE_QUEUE_DEQUEUE,
            ifindex: 7,
            netns_inode: 4026532285,
            netns_cookie: 4096,
            ts_boot_ns: 5_000,
            delay_ns: 3_000,
            backlog_bytes: 2084,
            backlog_packets: 2,
            len: 1042,
            ..QueueRecord::default()
        };
        r.ifname[..4].copy_from_slice(b"eth0");
        let Record::Queue(q) =
            decode_record(r.as_bytes(), &clock(), &DropReasons::default()).unwrap()
        else {
            panic!("not a queue event")
        };
        assert_eq!(q.kind, QueueEventKind::Dequeue);
        assert_eq!(q.timestamp_ns, 6_000);
        assert_eq!(q.enqueued_ns(), 3_000);
        assert_eq!(q.device.ifindex, 7);
        assert_eq!(q.device.netns.cookie, 4096);
        assert_eq!(q.ifname(), "eth0");
        assert_eq!(
            (q.backlog_bytes, q.backlog_packets, q.length),
            (2084, 2, 1042)
        );
        r.event = PERISCOPE_QUEUE_DROP;
        r.reason = 64;
        let reasons = DropReasons::parse(r#"__print_symbolic(REC->reason, { 64, "QDISC_DROP" })"#);
        let Ok(Record::Queue(q)) = decode_record(r.as_bytes(), &clock(), &reasons) else {
            panic!("not a queue event")
        };
        assert_eq!((q.kind, q.reason), (QueueEventKind::Drop, "QDISC_DROP"));
        r.event = 42;
        assert_eq!(
            decode_record(r.as_bytes(), &clock(), &reasons),
            Err(RecordError::QueueEvent(42))
        );
    }

    #[test]
    fn mapped_ipv6_addresses_become_ipv4() {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr(AF_INET6, &b), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let reasons = DropReasons::default();
        assert!(decode_record(&[], &clock(), &reasons).is_err());
        assert!(decode_record(&[2, 1, 3], &clock(), &reasons).is_err());
        assert!(decode_record(&[9, 9, 0, 0], &clock(), &reasons).is_err());
        let mut r = SocketRecord {
            kind: PERISCOPE_RECORD_SOCKET,
            version: PERISCOPE_SOCKET_VERSION,
            event: 99,
            ..SocketRecord::default()
        };
        r.family = 77;
        assert_eq!(
            decode_record(r.as_bytes(), &clock(), &reasons),
            Err(RecordError::Event(99))
        );
    }
}

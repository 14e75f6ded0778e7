//! Events: what receivers produce and processors consume.
//!
//! Events are plain `Copy` values so that decoding, batching and enriching them never
//! allocates; names (interfaces, namespaces, processes) are resolved by processors per
//! series, not per event.

use std::net::{IpAddr, Ipv4Addr};

/// Which way a packet crossed the hook that saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Received by the device (XDP, TCX ingress, or a capture's inbound packets).
    #[default]
    Ingress,
    /// Sent by the device (TCX egress, or a capture's outbound packets).
    Egress,
}

impl Direction {
    /// The value of the `network.io.direction` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "receive",
            Direction::Egress => "transmit",
        }
    }
}

/// The direction relative to the workload whose namespace a device serves, as the
/// `periscope.workload.direction` attribute names it: a node-side veth's `receive` is its
/// pod's `egress`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadDirection {
    /// Into the workload.
    #[default]
    Ingress,
    /// Out of the workload.
    Egress,
}

impl WorkloadDirection {
    /// The value of the `periscope.workload.direction` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadDirection::Ingress => "ingress",
            WorkloadDirection::Egress => "egress",
        }
    }

    /// The direction for the workload of a device that crossed it in `device` direction:
    /// `serves_peer` for the node-side end of a veth (its workload is across the pair).
    pub fn of(device: Direction, serves_peer: bool) -> Self {
        match (device, serves_peer) {
            (Direction::Ingress, false) | (Direction::Egress, true) => WorkloadDirection::Ingress,
            (Direction::Egress, false) | (Direction::Ingress, true) => WorkloadDirection::Egress,
        }
    }
}

/// Whether a packet is to or from the observing namespace's own stack or forwarded through
/// it, as the `periscope.traffic.locality` attribute names it (kernel receivers classify each
/// packet by the namespace's addresses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Locality {
    /// Not classified: not an IP packet, or a source that cannot tell (captures).
    #[default]
    Unknown,
    /// Received for an address of the device's namespace (or multicast/broadcast), or sent
    /// from one.
    Local,
    /// Routed or bridged through the namespace.
    Forwarded,
}

impl Locality {
    /// The value of the `periscope.traffic.locality` attribute; `None` for `Unknown` from a
    /// source that does not classify.
    pub fn as_str(self) -> &'static str {
        match self {
            Locality::Unknown => "unknown",
            Locality::Local => "local",
            Locality::Forwarded => "forwarded",
        }
    }

    /// From the kernel's `enum periscope_locality` byte.
    pub fn from_kernel(v: u8) -> Self {
        match v {
            1 => Locality::Local,
            2 => Locality::Forwarded,
            _ => Locality::Unknown,
        }
    }
}

/// The L4 protocol of a packet, as the `network.transport` attribute names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// No L4 header that we decode, or not an IP packet.
    #[default]
    Other,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Transport {
    /// The value of the `network.transport` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
            Transport::Icmpv6 => "icmpv6",
            Transport::Other => "other",
        }
    }

    /// Maps an IP protocol number (IPv4 `protocol`, IPv6 `next header`).
    pub fn from_ip_protocol(proto: u8) -> Self {
        match proto {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            1 => Transport::Icmp,
            58 => Transport::Icmpv6,
            _ => Transport::Other,
        }
    }
}

/// The L3 protocol of a packet, as the `network.type` attribute names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkType {
    /// Not an IP packet (ARP, LLDP, ...).
    #[default]
    Other,
    Ipv4,
    Ipv6,
}

impl NetworkType {
    /// The value of the `network.type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Ipv4 => "ipv4",
            NetworkType::Ipv6 => "ipv6",
            NetworkType::Other => "other",
        }
    }
}

/// Identifies a network namespace. The inode alone is reused after a namespace dies, so the
/// kernel's namespace cookie (unique for the boot) travels with it where it is known (0 if not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    /// Inode number of the namespace's nsfs file (`/proc/PID/ns/net`).
    pub inode: u32,
    /// `SO_NETNS_COOKIE` of the namespace, 0 when unknown (offline captures).
    pub cookie: u64,
}

/// Where a packet was seen: a device in a namespace. Offline receivers give each capture
/// interface a synthetic ifindex and register its name in the [`crate::InterfaceTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceRef {
    pub netns: NetnsId,
    pub ifindex: u32,
}

/// One packet seen at a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketEvent {
    /// When the packet was seen, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The device (and its namespace) that the packet crossed.
    pub device: DeviceRef,
    pub direction: Direction,
    pub network: NetworkType,
    pub transport: Transport,
    /// Source address; unspecified for non-IP packets.
    pub src_addr: IpAddr,
    /// Destination address; unspecified for non-IP packets.
    pub dst_addr: IpAddr,
    /// Source port (TCP/UDP) or 0.
    pub src_port: u16,
    /// Destination port (TCP/UDP) or 0.
    pub dst_port: u16,
    /// L2 frame length as seen at the hook (what `tshark` calls `frame.len`).
    pub length: u32,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40 CWR=0x80).
    pub tcp_flags: u8,
    /// Local or forwarded, as the kernel classified it (`Unknown` for captures).
    pub locality: Locality,
}

impl Default for PacketEvent {
    fn default() -> Self {
        PacketEvent {
            timestamp_ns: 0,
            device: DeviceRef::default(),
            direction: Direction::Ingress,
            network: NetworkType::Other,
            transport: Transport::Other,
            src_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            length: 0,
            tcp_flags: 0,
            locality: Locality::Unknown,
        }
    }
}

/// Exact totals a kernel hook counted for one device, direction and transport, cumulative
/// since the hook was attached (pinned hooks keep counting across agent restarts). Receivers
/// send them periodically; they stay exact when packet records are sampled or lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// When the counters were read, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub device: DeviceRef,
    pub direction: Direction,
    pub transport: Transport,
    /// Local or forwarded (part of the kernel's counter key).
    pub locality: Locality,
    /// Packets the hook saw.
    pub packets: u64,
    /// Bytes (L2 frame length) the hook saw.
    pub bytes: u64,
    /// Packet records the hook could not deliver (ring buffer full).
    pub records_lost: u64,
    /// Packet records the receiver read from the ring buffer, since this receiver started
    /// (with `packets` and `records_lost` this tells sampled from lost).
    pub records_delivered: u64,
    /// These are the device's final totals: it went away (deleted, moved out, its namespace
    /// gone), its counters were read before its programs were released, and its series get
    /// this last point and then retire.
    pub last: bool,
    /// The kernel counts this device's packets per 5-tuple too ([`FlowCounters`]): its
    /// per-flow series come from there, not from packet records.
    pub flows: bool,
    /// With `flows`: packets whose flow found no room in the kernel's flow table (counted
    /// here and in `packets`, in no [`FlowCounters`]).
    pub flows_overflow_packets: u64,
    /// With `flows`: the bytes of those packets.
    pub flows_overflow_bytes: u64,
}

/// Exact cumulative totals of one flow (5-tuple) of one device and direction, counted in the
/// kernel's flow table (`xdp`/`tcx` receivers with `flows` on) and sent every
/// `counters_interval` when they changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowCounters {
    /// When the counters were read, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub device: DeviceRef,
    pub direction: Direction,
    pub network: NetworkType,
    pub transport: Transport,
    /// As in [`PacketEvent`]: unspecified for non-IP packets.
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    /// TCP/UDP ports, else 0 (as in [`PacketEvent`]).
    pub src_port: u16,
    pub dst_port: u16,
    /// Packets since the flow was first seen (cumulative).
    pub packets: u64,
    /// Bytes (L2 frame length) since the flow was first seen (cumulative).
    pub bytes: u64,
    /// The flow's first and latest packet, in nanoseconds since the Unix epoch.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Every TCP flags byte of the flow, OR-ed (0 if not TCP).
    pub tcp_flags: u8,
    /// The flow's final totals: it was idle past the receiver's idle timeout (its entry was
    /// evicted) or its device went away. Its series ends with this point; packets after it
    /// start a new flow.
    pub last: bool,
    /// Local or forwarded, classified by the receiver from the namespace's addresses.
    pub locality: Locality,
}

impl Default for FlowCounters {
    fn default() -> Self {
        FlowCounters {
            timestamp_ns: 0,
            device: DeviceRef::default(),
            direction: Direction::Ingress,
            network: NetworkType::Other,
            transport: Transport::Other,
            src_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            packets: 0,
            bytes: 0,
            first_seen_ns: 0,
            last_seen_ns: 0,
            tcp_flags: 0,
            last: false,
            locality: Locality::Unknown,
        }
    }
}

/// What happened to a socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketEventKind {
    /// connect() sent a SYN (the process is the caller).
    #[default]
    Connect,
    /// The TCP handshake completed; `duration_ns` is the connect latency on the client.
    Established,
    /// A smoothed-RTT sample (`srtt_us`, `rttvar_us`).
    Rtt,
    /// A segment was retransmitted.
    Retransmit,
    /// Another TCP state change (`old_state` → `state`).
    StateChange,
    /// The socket closed; bytes, retransmits and RTT are final, `duration_ns` is its life.
    Close,
    /// Data sent: `size` bytes (one send call or one sk_msg message).
    Send,
    /// Data received: `size` bytes.
    Receive,
}

impl SocketEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketEventKind::Connect => "connect",
            SocketEventKind::Established => "established",
            SocketEventKind::Rtt => "rtt",
            SocketEventKind::Retransmit => "retransmit",
            SocketEventKind::StateChange => "state_change",
            SocketEventKind::Close => "close",
            SocketEventKind::Send => "send",
            SocketEventKind::Receive => "receive",
        }
    }
}

/// Which kernel mechanism saw a socket event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketHook {
    #[default]
    Sockops,
    SkMsg,
    SkSkb,
    /// A (BTF) tracepoint.
    Tracepoint,
    /// fentry/fexit.
    Fentry,
}

impl SocketHook {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketHook::Sockops => "sockops",
            SocketHook::SkMsg => "sk_msg",
            SocketHook::SkSkb => "sk_skb",
            SocketHook::Tracepoint => "tracepoint",
            SocketHook::Fentry => "fentry",
        }
    }
}

/// Which side of a connection a socket is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketRole {
    #[default]
    Unknown,
    /// Active open (connect).
    Client,
    /// Passive open (accepted).
    Server,
}

impl SocketRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SocketRole::Unknown => "unknown",
            SocketRole::Client => "client",
            SocketRole::Server => "server",
        }
    }
}

/// The task behind an event, where the hook ran in process context (zeros otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessRef {
    /// Process id (the kernel's tgid); 0 when unknown.
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// Command name (`/proc/PID/comm`), NUL-padded.
    pub comm: [u8; 16],
}

impl ProcessRef {
    /// The command name, up to its first NUL (lossy for non-UTF-8).
    pub fn comm_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.comm[..end])
    }

    pub fn is_known(&self) -> bool {
        self.pid != 0
    }
}

/// The name of a TCP state (`TCP_ESTABLISHED` = 1 ... as the kernel numbers them), lowercase.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "established",
        2 => "syn_sent",
        3 => "syn_recv",
        4 => "fin_wait1",
        5 => "fin_wait2",
        6 => "time_wait",
        7 => "close",
        8 => "close_wait",
        9 => "last_ack",
        10 => "listen",
        11 => "closing",
        12 => "new_syn_recv",
        _ => "unknown",
    }
}

/// One socket event from sockops, sk_msg/sk_skb or the TCP/UDP hooks. Addresses are the
/// socket's own view: local, then remote. Records of one socket share its `cookie`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketEvent {
    /// When it happened, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The kernel's socket cookie: unique per socket for the boot.
    pub cookie: u64,
    /// The socket's network namespace (cookie 0 where the hook could not read it).
    pub netns: NetnsId,
    /// cgroup v2 id of the socket's cgroup (the creating task's).
    pub cgroup_id: u64,
    pub process: ProcessRef,
    pub local_addr: IpAddr,
    pub remote_addr: IpAddr,
    pub local_port: u16,
    pub remote_port: u16,
    pub kind: SocketEventKind,
    pub hook: SocketHook,
    pub transport: Transport,
    pub role: SocketRole,
    /// TCP state after the event (see [`tcp_state_name`]); 0 for UDP.
    pub state: u8,
    /// TCP state before a state change or close.
    pub old_state: u8,
    /// Smoothed RTT in microseconds (0 if not measured).
    pub srtt_us: u32,
    /// RTT variance in microseconds.
    pub rttvar_us: u32,
    /// Segments retransmitted over the socket's life so far.
    pub total_retrans: u32,
    /// Send/Receive: bytes; Retransmit: segments.
    pub size: u32,
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    /// Established (client): connect latency; Close: the socket's life; else 0.
    pub duration_ns: u64,
}

/// A socket by its namespace, transport and own view of its 4-tuple: (namespace, transport,
/// local address, local port, remote address, remote port).
pub type SocketTuple = (NetnsId, Transport, IpAddr, u16, IpAddr, u16);

impl SocketEvent {
    /// The socket's [`SocketTuple`].
    pub fn tuple(&self) -> SocketTuple {
        (
            self.netns,
            self.transport,
            self.local_addr,
            self.local_port,
            self.remote_addr,
            self.remote_port,
        )
    }
}

impl Default for SocketEvent {
    fn default() -> Self {
        SocketEvent {
            timestamp_ns: 0,
            cookie: 0,
            netns: NetnsId::default(),
            cgroup_id: 0,
            process: ProcessRef::default(),
            local_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            remote_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            local_port: 0,
            remote_port: 0,
            kind: SocketEventKind::default(),
            hook: SocketHook::default(),
            transport: Transport::Other,
            role: SocketRole::Unknown,
            state: 0,
            old_state: 0,
            srtt_us: 0,
            rttvar_us: 0,
            total_retrans: 0,
            size: 0,
            bytes_sent: 0,
            bytes_acked: 0,
            bytes_received: 0,
            duration_ns: 0,
        }
    }
}

/// A packet the kernel dropped, with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    pub timestamp_ns: u64,
    /// Namespace of the device (else of the socket); cookie 0 (the hook reads the inode only).
    pub netns: NetnsId,
    /// The device, 0 if none.
    pub ifindex: u32,
    /// The kernel's reason (`enum skb_drop_reason` without its `SKB_DROP_REASON_` prefix,
    /// e.g. `NO_SOCKET`), or its number when the kernel's BTF does not name it.
    pub reason: &'static str,
    pub network: NetworkType,
    pub transport: Transport,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// skb->len where it was dropped.
    pub length: u32,
}

/// Exact totals the cgroup_skb hooks counted for one cgroup, direction and protocol,
/// cumulative since attach: IP-level packets and bytes (no L2 header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    pub timestamp_ns: u64,
    /// cgroup v2 id (the inode number of the cgroup's directory).
    pub cgroup_id: u64,
    pub direction: Direction,
    pub network: NetworkType,
    pub transport: Transport,
    pub packets: u64,
    pub bytes: u64,
}

/// How many answer addresses a [`DnsEvent`] carries.
pub const DNS_MAX_ANSWERS: usize = 4;

/// One DNS message (query or response) seen in a packet's payload (UDP, or TCP with its
/// 2-byte length prefix). The question name is a handle into the shared
/// [`crate::DnsTable`]; the answers are the first [`DNS_MAX_ANSWERS`] A/AAAA records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    /// When the packet was seen, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The device (and its namespace) that the packet crossed.
    pub device: DeviceRef,
    pub direction: Direction,
    /// `Udp` or `Tcp`.
    pub transport: Transport,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The message id.
    pub id: u16,
    /// QR bit: a response.
    pub is_response: bool,
    /// Response code (4 bits of the header; 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// QTYPE of the first question (1 A, 28 AAAA, ...), 0 without a question.
    pub qtype: u16,
    /// The first question's name in the [`crate::DnsTable`] (0: no question).
    pub name: u32,
    /// How many of `answers` are filled.
    pub answer_count: u8,
    /// Bit i set: `answers[i]` is IPv6, else IPv4 in its first 4 bytes.
    pub answers_v6: u8,
    /// A/AAAA addresses of the answer section, in order (network byte order).
    pub answers: [[u8; 16]; DNS_MAX_ANSWERS],
    /// The smallest TTL of those records, seconds (an RRset has one TTL, RFC 2181 5.2).
    pub answer_ttl: u32,
}

impl DnsEvent {
    /// The `i`-th answer address.
    pub fn answer(&self, i: usize) -> Option<IpAddr> {
        if i >= usize::from(self.answer_count).min(DNS_MAX_ANSWERS) {
            return None;
        }
        let a = self.answers[i];
        Some(if self.answers_v6 & (1 << i) != 0 {
            IpAddr::V6(std::net::Ipv6Addr::from(a))
        } else {
            IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
        })
    }

    /// Appends an answer address; false when [`DNS_MAX_ANSWERS`] are already there.
    pub fn push_answer(&mut self, addr: IpAddr) -> bool {
        let i = usize::from(self.answer_count);
        if i >= DNS_MAX_ANSWERS {
            return false;
        }
        match addr {
            IpAddr::V4(v4) => self.answers[i][..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => {
                self.answers[i] = v6.octets();
                self.answers_v6 |= 1 << i;
            }
        }
        self.answer_count += 1;
        true
    }
}

impl Default for DnsEvent {
    fn default() -> Self {
        DnsEvent {
            timestamp_ns: 0,
            device: DeviceRef::default(),
            direction: Direction::Ingress,
            transport: Transport::Udp,
            src_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            dst_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            src_port: 0,
            dst_port: 0,
            id: 0,
            is_response: false,
            rcode: 0,
            qtype: 0,
            name: 0,
            answer_count: 0,
            answers_v6: 0,
            answers: [[0; 16]; DNS_MAX_ANSWERS],
            answer_ttl: 0,
        }
    }
}

/// Whether a burst report opens or closes a burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BurstPhase {
    /// The rate over the detector's window crossed the threshold: `start_ns` is the estimated
    /// start, `end_ns` the detection time, counts what the burst held then.
    #[default]
    Start,
    /// The rate fell back: the whole burst.
    End,
}

/// A microburst on one device and direction, from the kernel's inline detector (`bursts` on
/// the `xdp`/`tcx` receivers). The detector runs per CPU: each report is one CPU's view, and
/// the `burst` processor merges the reports of one burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstEvent {
    pub phase: BurstPhase,
    pub device: DeviceRef,
    pub direction: Direction,
    /// The CPU whose detector reported it; [`BurstEvent::MERGED`] once merged.
    pub cpu: u32,
    /// Start of the burst, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// End of the burst (its last dense bucket's last packet), nanoseconds since the epoch.
    pub end_ns: u64,
    /// Packets in the burst.
    pub packets: u64,
    /// Bytes (L2 frame length) in the burst.
    pub bytes: u64,
    /// Highest rate over one detector window, packets per second.
    pub peak_pps: u64,
    /// Highest rate over one detector window, bytes per second.
    pub peak_bytes_per_s: u64,
}

impl BurstEvent {
    /// The `cpu` of a report merged from several CPUs' reports.
    pub const MERGED: u32 = u32::MAX;

    /// How long the burst lasted, in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// What a queue record reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QueueEventKind {
    /// A packet left the device's root qdisc toward the driver, after `delay_ns`.
    #[default]
    Dequeue,
    /// The device's queueing discipline dropped a packet (`reason`).
    Drop,
}

/// One packet on a device's transmit queue (root qdisc), from the `qdisc` receiver: how long it
/// waited between enqueue and dequeue, with the backlog its enqueue made; or a drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueEvent {
    pub kind: QueueEventKind,
    /// Dequeue (or drop) time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub device: DeviceRef,
    /// The device's name when the packet left (NUL-padded), captured by the kernel.
    pub ifname: [u8; 16],
    /// Enqueue → dequeue, nanoseconds (0 for drops).
    pub delay_ns: u64,
    /// The queue's bytes and packets right after this packet's enqueue (drops: at the drop).
    pub backlog_bytes: u32,
    pub backlog_packets: u32,
    /// The frame's length as the qdisc counts it (skb->len).
    pub length: u32,
    /// Drops: the kernel's reason (`QDISC_DROP`, ...); empty for dequeues.
    pub reason: &'static str,
}

impl QueueEvent {
    /// When the packet entered the queue, nanoseconds since the Unix epoch.
    pub fn enqueued_ns(&self) -> u64 {
        self.timestamp_ns.saturating_sub(self.delay_ns)
    }

    /// The device name (up to its first NUL).
    pub fn ifname(&self) -> &str {
        let end = self.ifname.iter().position(|&b| b == 0).unwrap_or(16);
        std::str::from_utf8(&self.ifname[..end]).unwrap_or("?")
    }
}

/// Every kind of event a receiver can produce. New kinds become new variants; processors
/// pass on variants they do not handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Packet(PacketEvent),
    DeviceCounters(DeviceCounters),
    Socket(SocketEvent),
    Drop(DropEvent),
    CgroupCounters(CgroupCounters),
    Dns(DnsEvent),
    Burst(BurstEvent),
    FlowCounters(FlowCounters),
    Queue(QueueEvent),
}

impl Event {
    /// When the event happened, in nanoseconds since the Unix epoch.
    pub fn timestamp_ns(&self) -> u64 {
        match self {
            Event::Packet(p) => p.timestamp_ns,
            Event::DeviceCounters(c) => c.timestamp_ns,
            Event::Socket(s) => s.timestamp_ns,
            Event::Drop(d) => d.timestamp_ns,
            Event::CgroupCounters(c) => c.timestamp_ns,
            Event::Dns(d) => d.timestamp_ns,
            Event::Burst(b) => b.end_ns,
            Event::FlowCounters(f) => f.timestamp_ns,
            Event::Queue(q) => q.timestamp_ns,
        }
    }
}

/// A batch of events: the unit that crosses a channel. Receivers fill a batch up to its
/// capacity and send it whole, so channel costs are paid per batch, not per event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventBatch {
    pub events: Vec<Event>,
}

impl EventBatch {
    /// The batch size receivers use unless configured otherwise.
    pub const DEFAULT_CAPACITY: usize = 1024;

    pub fn with_capacity(capacity: usize) -> Self {
        EventBatch {
            events: Vec::with_capacity(capacity),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    /// True once the batch has reached the capacity it was made with.
    pub fn is_full(&self) -> bool {
        self.events.len() >= self.events.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_stay_small_enough_to_copy() {
        // Events are copied into batches by value; the socket event is the largest.
        assert!(
            std::mem::size_of::<Event>() <= 168,
            "{}",
            std::mem::size_of::<Event>()
        );
    }
}

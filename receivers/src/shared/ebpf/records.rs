//! The Rust mirror of `ebpf/periscope.h`: every record the kernel and user space exchange.
//!
//! Each struct here is `#[repr(C)]` with the header's fields in the header's order, and each
//! constant carries the C enumerator's name. The tests in [`super::layout`] compare them with
//! what clang-19 computed for the header (sizes, offsets, field sizes, enumerator values), so
//! the two sides cannot drift apart unnoticed. Read the header for the meaning of each field.

/// `enum periscope_record_kind`: a packet record ([`PacketRecord`]).
pub const PERISCOPE_RECORD_PACKET: u8 = 1;
/// `enum periscope_record_kind`: a socket record ([`SocketRecord`]).
pub const PERISCOPE_RECORD_SOCKET: u8 = 2;
/// `enum periscope_record_kind`: a drop record ([`DropRecord`]).
pub const PERISCOPE_RECORD_DROP: u8 = 3;
/// `enum periscope_packet_version`: the [`PacketRecord`] layout this crate reads.
pub const PERISCOPE_PACKET_VERSION: u8 = 1;
/// `enum periscope_hook`: seen by the XDP program.
pub const PERISCOPE_HOOK_XDP: u8 = 1;
/// `enum periscope_hook`: seen by a TC (TCX or clsact) program.
pub const PERISCOPE_HOOK_TC: u8 = 2;
/// `enum periscope_direction`: received by the device.
pub const PERISCOPE_DIR_INGRESS: u8 = 0;
/// `enum periscope_direction`: sent by the device.
pub const PERISCOPE_DIR_EGRESS: u8 = 1;
/// `enum periscope_packet_flags`: the frame had a VLAN tag; `vlan_id` is the outermost.
pub const PERISCOPE_PKT_VLAN: u8 = 1;
/// `enum periscope_packet_flags`: parsing stopped early; later fields are zero.
pub const PERISCOPE_PKT_TRUNCATED: u8 = 2;
/// `enum periscope_packet_flags`: a non-first IP fragment (no ports).
pub const PERISCOPE_PKT_FRAGMENT: u8 = 4;
/// `enum periscope_config_flags`: write a [`PacketRecord`] per packet (or 1 in
/// [`Config::sample_rate`]).
pub const PERISCOPE_CFG_RECORDS: u32 = 1;
/// `enum periscope_config_flags`: write a record for every TCP/UDP packet from or to port 53,
/// whatever the sampling.
pub const PERISCOPE_CFG_DNS: u32 = 2;
/// `enum periscope_config_flags`: detect bursts (parameters in [`BurstConfig`]).
pub const PERISCOPE_CFG_BURSTS: u32 = 16;

/// `struct periscope_packet`: one packet seen by an XDP or TC program (ring buffer
/// `periscope_events`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketRecord {
    pub kind: u8,
    pub version: u8,
    pub hook: u8,
    pub direction: u8,
    pub ifindex: u32,
    /// `CLOCK_BOOTTIME` nanoseconds; see [`super::BootClock`].
    pub ts_boot_ns: u64,
    pub netns_cookie: u64,
    pub netns_inode: u32,
    /// L2 frame length.
    pub len: u32,
    pub ethertype: u16,
    /// TCP/UDP source port; ICMP type.
    pub sport: u16,
    /// TCP/UDP destination port; ICMP code.
    pub dport: u16,
    pub l4_proto: u8,
    pub tcp_flags: u8,
    pub flags: u8,
    pub _pad0: u8,
    pub vlan_id: u16,
    pub _pad1: u32,
    /// Network byte order; IPv4 in the first 4 bytes.
    pub saddr: [u8; 16],
    /// Network byte order; IPv4 in the first 4 bytes.
    pub daddr: [u8; 16],
}

impl PacketRecord {
    /// Copies a record out of raw ring-buffer bytes (any alignment); `None` if too short.
    /// Bytes past the record are ignored (the ring buffer rounds sizes up to 8).
    pub fn from_bytes(bytes: &[u8]) -> Option<PacketRecord> {
        let bytes = bytes.get(..size_of::<PacketRecord>())?;
        // SAFETY: `bytes` holds size_of::<PacketRecord>() bytes, read_unaligned copes with any
        // alignment, and every bit pattern is a valid PacketRecord (integers and byte arrays).
        Some(unsafe { bytes.as_ptr().cast::<PacketRecord>().read_unaligned() })
    }

    /// The record's bytes, as the kernel writes them.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C) with no implicit padding (checked by the layout tests), so every
        // byte of the value is initialized.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const PacketRecord).cast::<u8>(),
                size_of::<PacketRecord>(),
            )
        }
    }
}

/// `struct periscope_dev_key`: key of the per-CPU hash `periscope_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DevKey {
    pub netns_cookie: u64,
    pub netns_inode: u32,
    pub ifindex: u32,
    pub direction: u8,
    pub hook: u8,
    /// IP protocol (IPv6: next header after extension headers); 0 if not IP.
    pub l4_proto: u8,
    pub _pad: [u8; 5],
}

/// `struct periscope_dev_counters`: value of `periscope_counters`, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevCounters {
    pub packets: u64,
    pub bytes: u64,
    pub records_lost: u64,
}

impl DevCounters {
    /// Adds another CPU's (or device's) counters to these.
    pub fn add(&mut self, other: &DevCounters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.records_lost += other.records_lost;
    }
}

/// `struct periscope_stats`: value of the one-entry per-CPU array `periscope_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub records_lost: u64,
    pub counters_map_full: u64,
}

impl Stats {
    /// Adds another CPU's stats to these.
    pub fn add(&mut self, other: &Stats) {
        self.records_lost += other.records_lost;
        self.counters_map_full += other.counters_map_full;
    }
}

/// `struct periscope_config`: the `.rodata` global `periscope_config`, set before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub netns_cookie: u64,
    pub netns_inode: u32,
    /// `PERISCOPE_CFG_*` bits.
    pub flags: u32,
    /// With [`PERISCOPE_CFG_RECORDS`]: a record for 1 in this many packets; 0 and 1 mean every.
    pub sample_rate: u32,
    /// With [`PERISCOPE_CFG_DNS`]: ports that are DNS besides 53 (0: unused).
    pub dns_ports: [u16; 4],
    pub _pad: u32,
}

impl Default for Config {
    /// Namespace unknown (0), records on: what the object holds before the loader sets it.
    fn default() -> Self {
        Config {
            netns_cookie: 0,
            netns_inode: 0,
            flags: PERISCOPE_CFG_RECORDS,
            sample_rate: 0,
            dns_ports: [0; 4],
            _pad: 0,
        }
    }
}

/// `enum periscope_socket_version`: the [`SocketRecord`] layout this crate reads.
pub const PERISCOPE_SOCKET_VERSION: u8 = 1;
/// `enum periscope_socket_event`: connect() sent a SYN.
pub const PERISCOPE_SOCK_CONNECT: u8 = 1;
/// `enum periscope_socket_event`: the handshake completed.
pub const PERISCOPE_SOCK_ESTABLISHED: u8 = 2;
/// `enum periscope_socket_event`: a smoothed-RTT sample.
pub const PERISCOPE_SOCK_RTT: u8 = 3;
/// `enum periscope_socket_event`: a retransmission.
pub const PERISCOPE_SOCK_RETRANSMIT: u8 = 4;
/// `enum periscope_socket_event`: another TCP state change.
pub const PERISCOPE_SOCK_STATE: u8 = 5;
/// `enum periscope_socket_event`: the socket reached TCP_CLOSE.
pub const PERISCOPE_SOCK_CLOSE: u8 = 6;
/// `enum periscope_socket_event`: data sent.
pub const PERISCOPE_SOCK_SEND: u8 = 7;
/// `enum periscope_socket_event`: data received.
pub const PERISCOPE_SOCK_RECV: u8 = 8;
/// `enum periscope_socket_hook`: a sockops program.
pub const PERISCOPE_SOCK_HOOK_SOCKOPS: u8 = 1;
/// `enum periscope_socket_hook`: an sk_msg program.
pub const PERISCOPE_SOCK_HOOK_SK_MSG: u8 = 2;
/// `enum periscope_socket_hook`: an sk_skb stream verdict program.
pub const PERISCOPE_SOCK_HOOK_SK_SKB: u8 = 3;
/// `enum periscope_socket_hook`: a (BTF) tracepoint.
pub const PERISCOPE_SOCK_HOOK_TRACEPOINT: u8 = 4;
/// `enum periscope_socket_hook`: fentry/fexit.
pub const PERISCOPE_SOCK_HOOK_FENTRY: u8 = 5;
/// `enum periscope_socket_role`: not known.
pub const PERISCOPE_ROLE_UNKNOWN: u8 = 0;
/// `enum periscope_socket_role`: active open.
pub const PERISCOPE_ROLE_CLIENT: u8 = 1;
/// `enum periscope_socket_role`: passive open.
pub const PERISCOPE_ROLE_SERVER: u8 = 2;
/// `enum periscope_drop_version`: the [`DropRecord`] layout this crate reads.
pub const PERISCOPE_DROP_VERSION: u8 = 1;
/// `enum periscope_socket_config_flags`: a SEND/RECV record per UDP call.
pub const PERISCOPE_SOCK_CFG_SEND_RECV_UDP: u32 = 1;
/// `enum periscope_socket_config_flags`: a SEND/RECV record per TCP call.
pub const PERISCOPE_SOCK_CFG_SEND_RECV_TCP: u32 = 2;
/// `enum periscope_socket_config_flags`: drop records.
pub const PERISCOPE_SOCK_CFG_DROPS: u32 = 4;

/// `struct periscope_socket`: one socket event (sockops, sk_msg/sk_skb, tcp_udp).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketRecord {
    pub kind: u8,
    pub version: u8,
    pub event: u8,
    pub hook: u8,
    pub family: u8,
    pub protocol: u8,
    pub role: u8,
    pub state: u8,
    pub old_state: u8,
    pub _pad0: [u8; 3],
    pub pid: u32,
    pub tgid: u32,
    pub netns_inode: u32,
    pub ts_boot_ns: u64,
    pub cookie: u64,
    pub netns_cookie: u64,
    pub cgroup_id: u64,
    pub lport: u16,
    pub rport: u16,
    pub _pad1: u32,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub srtt_us: u32,
    pub rttvar_us: u32,
    pub total_retrans: u32,
    pub size: u32,
    pub bytes_sent: u64,
    pub bytes_acked: u64,
    pub bytes_received: u64,
    pub duration_ns: u64,
    pub comm: [u8; 16],
}

/// `struct periscope_drop`: a packet the kernel dropped, with its reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropRecord {
    pub kind: u8,
    pub version: u8,
    pub family: u8,
    pub protocol: u8,
    pub reason: u32,
    pub ts_boot_ns: u64,
    pub netns_inode: u32,
    pub ifindex: u32,
    pub sport: u16,
    pub dport: u16,
    pub len: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// `struct periscope_cgroup_key`: key of the cgroup_skb per-CPU hash.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupKey {
    pub cgroup_id: u64,
    pub direction: u8,
    pub family: u8,
    pub l4_proto: u8,
    pub _pad: [u8; 5],
}

/// `struct periscope_cgroup_counters`: value of the cgroup_skb hash, one per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupCountersRecord {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct periscope_socket_stats`: the one-entry per-CPU array of the socket objects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    pub records_lost: u64,
    pub sockmap_full: u64,
    pub table_full: u64,
}

impl SocketStats {
    /// Adds another CPU's stats to these.
    pub fn add(&mut self, other: &SocketStats) {
        self.records_lost += other.records_lost;
        self.sockmap_full += other.sockmap_full;
        self.table_full += other.table_full;
    }
}

/// `struct periscope_socket_config`: the `.rodata` global of the socket objects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketConfig {
    pub rtt_interval_ns: u64,
    /// `PERISCOPE_SOCK_CFG_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// `enum periscope_record_kind`: a DNS payload record ([`DnsRecord`]).
pub const PERISCOPE_RECORD_DNS: u8 = 4;
/// `enum periscope_dns_version`: the [`DnsRecord`] layout this crate reads.
pub const PERISCOPE_DNS_VERSION: u8 = 1;
/// `enum periscope_dns_limits`: most payload bytes a [`DnsRecord`] carries.
pub const PERISCOPE_DNS_PAYLOAD: usize = 512;

/// `struct periscope_dns`: a TCP/UDP packet from or to port 53 with the start of its L4
/// payload (ring buffer `periscope_events`, with `PERISCOPE_CFG_DNS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    pub kind: u8,
    pub version: u8,
    pub hook: u8,
    pub direction: u8,
    pub ifindex: u32,
    pub ts_boot_ns: u64,
    pub netns_cookie: u64,
    pub netns_inode: u32,
    pub ethertype: u16,
    pub l4_proto: u8,
    pub _pad0: u8,
    pub sport: u16,
    pub dport: u16,
    /// Bytes of `payload` filled.
    pub payload_len: u16,
    pub _pad1: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub payload: [u8; PERISCOPE_DNS_PAYLOAD],
}

/// Copies a record of type `T` out of raw ring-buffer bytes (any alignment); `None` if too
/// short.
pub fn read_record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..size_of::<T>())?;
    // SAFETY: `bytes` holds size_of::<T>() bytes, read_unaligned copes with any alignment,
    // and T: Pod means every bit pattern is a valid T.
    Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

// SAFETY: all of these are repr(C), Copy, made only of integers and byte arrays, and have no
// implicit padding (checked by the layout tests), so any bit pattern is valid and every byte
// is initialized.
unsafe impl aya::Pod for PacketRecord {}
unsafe impl aya::Pod for DevKey {}
unsafe impl aya::Pod for DevCounters {}
unsafe impl aya::Pod for Stats {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for SocketRecord {}
unsafe impl aya::Pod for DropRecord {}
unsafe impl aya::Pod for CgroupKey {}
unsafe impl aya::Pod for CgroupCountersRecord {}
unsafe impl aya::Pod for SocketStats {}
unsafe impl aya::Pod for SocketConfig {}
unsafe impl aya::Pod for DnsRecord {}

/// `enum periscope_burst_kind`: a burst record ([`BurstRecord`]).
pub const PERISCOPE_RECORD_BURST: u8 = 5;
/// `enum periscope_burst_version`: the [`BurstRecord`] layout this crate reads.
pub const PERISCOPE_BURST_VERSION: u8 = 1;
/// `enum periscope_burst_event`: the window crossed the threshold.
pub const PERISCOPE_BURST_START: u8 = 1;
/// `enum periscope_burst_event`: the rate fell back; the whole burst.
pub const PERISCOPE_BURST_END: u8 = 2;
/// `enum periscope_burst_mode`: fixed thresholds.
pub const PERISCOPE_BURST_FIXED: u32 = 0;
/// `enum periscope_burst_mode`: k × a moving baseline (the fixed thresholds are the floor).
pub const PERISCOPE_BURST_ADAPTIVE: u32 = 1;

/// `struct periscope_burst`: one burst on one device, direction and hook, as one CPU saw it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstRecord {
    pub kind: u8,
    pub version: u8,
    pub event: u8,
    pub direction: u8,
    pub hook: u8,
    pub _pad0: [u8; 3],
    pub ifindex: u32,
    pub cpu: u32,
    pub netns_cookie: u64,
    pub netns_inode: u32,
    pub _pad1: u32,
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub start_ts_boot_ns: u64,
    /// `CLOCK_BOOTTIME` nanoseconds.
    pub end_ts_boot_ns: u64,
    pub packets: u64,
    pub bytes: u64,
    pub peak_window_packets: u32,
    pub window_ns: u32,
    pub peak_window_bytes: u64,
}

/// `struct periscope_burst_config`: the `.rodata` global `periscope_burst_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstConfig {
    pub bucket_ns: u64,
    pub buckets: u32,
    /// `PERISCOPE_BURST_FIXED` or `PERISCOPE_BURST_ADAPTIVE`.
    pub mode: u32,
    /// Bytes per window; 0: not used.
    pub thr_bytes: u64,
    /// Packets per window; 0: not used.
    pub thr_packets: u32,
    pub k_x256: u32,
    pub low_permille: u32,
    pub ewma_shift: u32,
    pub _pad: u64,
}

/// `struct periscope_burst_stats`: the one-entry per-CPU array `periscope_burst_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstStats {
    pub records_lost: u64,
    pub state_full: u64,
}

// SAFETY: as above (repr(C), integers only, no implicit padding: checked by the layout tests).
unsafe impl aya::Pod for BurstRecord {}
unsafe impl aya::Pod for BurstConfig {}
unsafe impl aya::Pod for BurstStats {}

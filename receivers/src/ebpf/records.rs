//! The Rust mirror of `ebpf/periscope.h`: every record the kernel and user space exchange.
//!
//! Each struct here is `#[repr(C)]` with the header's fields in the header's order, and each
//! constant carries the C enumerator's name. The tests in [`super::layout`] compare them with
//! what clang-19 computed for the header (sizes, offsets, field sizes, enumerator values), so
//! the two sides cannot drift apart unnoticed. Read the header for the meaning of each field.

/// `enum periscope_record_kind`: a packet record ([`PacketRecord`]).
pub const PERISCOPE_RECORD_PACKET: u8 = 1;
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
            _pad: 0,
        }
    }
}

// SAFETY: all of these are repr(C), Copy, made only of integers and byte arrays, and have no
// implicit padding (checked by the layout tests), so any bit pattern is valid and every byte
// is initialized.
unsafe impl aya::Pod for PacketRecord {}
unsafe impl aya::Pod for DevKey {}
unsafe impl aya::Pod for DevCounters {}
unsafe impl aya::Pod for Stats {}
unsafe impl aya::Pod for Config {}

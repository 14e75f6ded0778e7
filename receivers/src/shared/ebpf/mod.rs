//! The kernel side of the eBPF receivers: the embedded programs, the Rust mirror of the
//! records they share with user space, and decoding of those records into events.
//!
//! The programs are C (`ebpf/*.bpf.c`, CO-RE), compiled by clang-19 from `build.rs` and
//! embedded here; `ebpf/periscope.h` defines every kernel↔user record and [`records`]
//! mirrors it, checked field by field against what clang laid out (see [`layout`]).
//!
//! Minimum kernel: 5.8 for ring buffers and `bpf_ktime_get_boot_ns`; XDP links need 5.9,
//! TCX links 6.6 (older kernels get a netlink/clsact attachment, which cannot be pinned).

mod clock;
pub mod layout;
pub mod records;

pub use clock::BootClock;
pub use records::{
    BurstConfig, BurstRecord, BurstStats, CgroupCountersRecord, CgroupKey, Config, DevCounters,
    DevKey, DnsRecord, DropRecord, PacketRecord, SocketConfig, SocketRecord, SocketStats, Stats,
};

use aya::{Btf, Ebpf, EbpfLoader};

/// Names of the programs, maps and globals of the packet object (`ebpf/packet.bpf.c`).
pub mod names {
    /// XDP program (`SEC("xdp")`): ingress, before the stack allocates an skb.
    pub const XDP: &str = "periscope_xdp";
    /// TC program (`SEC("classifier")`) for the ingress side of a TCX/clsact hook.
    pub const TC_INGRESS: &str = "periscope_tc_ingress";
    /// TC program (`SEC("classifier")`) for the egress side of a TCX/clsact hook.
    pub const TC_EGRESS: &str = "periscope_tc_egress";
    /// Ring buffer of [`PacketRecord`](super::PacketRecord)s.
    pub const EVENTS: &str = "periscope_events";
    /// Per-CPU hash [`DevKey`](super::DevKey) → [`DevCounters`](super::DevCounters).
    pub const COUNTERS: &str = "periscope_counters";
    /// Per-CPU array with one [`Stats`](super::Stats) at index 0.
    pub const STATS: &str = "periscope_stats";
    /// The `.rodata` global holding a [`Config`](super::Config).
    pub const CONFIG: &str = "periscope_config";
    /// The `.rodata` global of the socket objects, a [`SocketConfig`](super::SocketConfig).
    pub const SOCKET_CONFIG: &str = "periscope_socket_config";
    /// Per-CPU array with one [`SocketStats`](super::SocketStats) (socket objects).
    pub const SOCKET_STATS: &str = "periscope_socket_stats";
    /// Per-CPU hash [`CgroupKey`](super::CgroupKey) →
    /// [`CgroupCountersRecord`](super::CgroupCountersRecord).
    pub const CGROUP_COUNTERS: &str = "periscope_cgroup_counters";
    /// Per-CPU array: packets the cgroup_skb programs could not count (hash full).
    pub const CGROUP_FULL: &str = "periscope_cgroup_full";
    /// The `.rodata` global holding a [`BurstConfig`](super::BurstConfig).
    pub const BURST_CONFIG: &str = "periscope_burst_config";
    /// Per-CPU array with one [`BurstStats`](super::BurstStats) at index 0.
    pub const BURST_STATS: &str = "periscope_burst_stats";
    /// The sk_msg object's sockhash.
    pub const SOCKHASH: &str = "periscope_sockhash";
}

/// Why an embedded program could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The crate was built with `PERISCOPE_EBPF_STUB=1`, which embeds no object.
    #[error(
        "this periscope was built with PERISCOPE_EBPF_STUB=1 and has no eBPF programs; \
         rebuild it without that variable (needs clang-19, libbpf-dev and bpftool)"
    )]
    StubBuild,
    /// aya could not parse or load the object (map creation, BTF relocation, ...).
    #[error("loading the eBPF object {object}: {source}")]
    Load {
        object: &'static str,
        #[source]
        source: aya::EbpfError,
    },
}

/// The packet object (`packet.bpf.o`): XDP and TC programs, counters, ring buffer. The bytes
/// are 8-byte aligned, as aya requires.
#[cfg(not(periscope_ebpf_stub))]
pub fn packet_object() -> Result<&'static [u8], Error> {
    Ok(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/packet.bpf.o"
    )))
}

/// The packet object; this is a stub build, which has none.
#[cfg(periscope_ebpf_stub)]
pub fn packet_object() -> Result<&'static [u8], Error> {
    Err(Error::StubBuild)
}

/// The baseline object of `bench-netdev` (`bench_bare.bpf.o`): an XDP program
/// (`bench_bare_xdp`) that only bumps a per-CPU packet/byte counter (`bench_bare_counters`)
/// and passes the packet. Not used by the agent.
#[cfg(not(periscope_ebpf_stub))]
pub fn bench_bare_object() -> Result<&'static [u8], Error> {
    Ok(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/bench_bare.bpf.o"
    )))
}

/// The baseline object of `bench-netdev`; this is a stub build, which has none.
#[cfg(periscope_ebpf_stub)]
pub fn bench_bare_object() -> Result<&'static [u8], Error> {
    Err(Error::StubBuild)
}

/// The socket and cgroup objects, each `ebpf/<name>.bpf.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketObject {
    /// `sockops.bpf.o`: the TCP lifecycle (program `periscope_sockops`).
    Sockops,
    /// `sk_msg.bpf.o`: `periscope_sockmap_add` (sockops), `periscope_sk_msg`,
    /// `periscope_sk_skb` and the sockhash `periscope_sockhash`.
    SkMsg,
    /// `tcp_udp.bpf.o`: tracepoint and fentry/fexit programs for TCP and UDP.
    TcpUdp,
    /// `cgroup_skb.bpf.o`: `periscope_cgroup_ingress`/`_egress` and their counters.
    CgroupSkb,
}

impl SocketObject {
    /// The object's file name, for messages.
    pub fn file_name(self) -> &'static str {
        match self {
            SocketObject::Sockops => "sockops.bpf.o",
            SocketObject::SkMsg => "sk_msg.bpf.o",
            SocketObject::TcpUdp => "tcp_udp.bpf.o",
            SocketObject::CgroupSkb => "cgroup_skb.bpf.o",
        }
    }

    /// The embedded object.
    #[cfg(not(periscope_ebpf_stub))]
    pub fn bytes(self) -> Result<&'static [u8], Error> {
        Ok(match self {
            SocketObject::Sockops => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sockops.bpf.o"))
            }
            SocketObject::SkMsg => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sk_msg.bpf.o"))
            }
            SocketObject::TcpUdp => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp_udp.bpf.o"))
            }
            SocketObject::CgroupSkb => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cgroup_skb.bpf.o"))
            }
        })
    }

    /// The embedded object; this is a stub build, which has none.
    #[cfg(periscope_ebpf_stub)]
    pub fn bytes(self) -> Result<&'static [u8], Error> {
        Err(Error::StubBuild)
    }

    /// Loads the object's maps (and sets its `periscope_socket_config`, where it has one);
    /// programs are loaded one by one by the receiver. `ring_bytes` overrides the ring
    /// buffer's size (a power of two, a multiple of the page size).
    pub fn load(self, config: &SocketConfig, ring_bytes: Option<u32>) -> Result<Ebpf, Error> {
        let object = self.bytes()?;
        let mut loader = EbpfLoader::new();
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries(names::EVENTS, bytes);
        }
        if self != SocketObject::CgroupSkb {
            loader.override_global(names::SOCKET_CONFIG, config, true);
        }
        loader.load(object).map_err(|source| Error::Load {
            object: self.file_name(),
            source,
        })
    }
}

/// Loads the packet object for one network namespace: creates its maps, sets the [`Config`]
/// global and the namespace's id (`config.netns_cookie`/`netns_inode`, written to the
/// `.data` global `periscope_netns` that the programs read), but loads no program into the
/// kernel yet (`Xdp::load`, `SchedClassifier::load` do, so that a receiver loads only what
/// it attaches).
///
/// `btf` is the BTF to relocate against; `None` uses `/sys/kernel/btf/vmlinux`. Note that
/// aya 0.14's `EbpfLoader::new()` parses `/sys/kernel/btf/vmlinux` itself whether or not a
/// BTF is given (20–35 ms in a release build here), so passing a shared one does not save
/// that parse; reusing one `EbpfLoader` across loads would, but `override_global` borrows the
/// config for the loader's whole lifetime.
pub fn load_packet(config: &Config, btf: Option<&Btf>) -> Result<Ebpf, Error> {
    load_packet_sized(config, btf, None)
}

/// [`load_packet`] with the ring buffer's size in bytes (a power of two, a multiple of the
/// page size); `None` keeps the object's 1 MiB.
pub fn load_packet_sized(
    config: &Config,
    btf: Option<&Btf>,
    ring_bytes: Option<u32>,
) -> Result<Ebpf, Error> {
    let object = packet_object()?;
    let mut loader = EbpfLoader::new();
    if let Some(btf) = btf {
        loader.btf(Some(btf));
    }
    if let Some(bytes) = ring_bytes {
        loader.map_max_entries(names::EVENTS, bytes);
    }
    let mut bpf = loader
        .override_global(names::CONFIG, config, true)
        .load(object)
        .map_err(|source| Error::Load {
            object: "packet.bpf.o",
            source,
        })?;
    // The programs take the namespace's id from the writable `.data` global, not from the
    // config (the agent loads instances before it knows their namespace).
    let id = periscope_pipeline::model::NetnsId {
        inode: config.netns_inode,
        cookie: config.netns_cookie,
    };
    crate::netdev::set_netns(&mut bpf, id).map_err(|e| Error::Load {
        object: "packet.bpf.o",
        source: e.into(),
    })?;
    Ok(bpf)
}

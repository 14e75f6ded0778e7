//! The kernel side of the eBPF receivers: the embedded objects, the records they share with
//! user space, and the clock their timestamps use.
//!
//! The programs are C (`ebpf/*.bpf.c`, CO-RE), each compiled by clang-19 from `build.rs` into
//! `<name>.bpf.o`; a receiver embeds the object it loads with `embedded_object!`.
//! `ebpf/periscope.h` defines every kernel↔user record, and [`bindings`] is generated from it
//! by bindgen ([`records`] names them for Rust).
//!
//! Minimum kernel: 5.8 for ring buffers and `bpf_ktime_get_boot_ns`; XDP links need 5.9,
//! TCX links 6.6 (older kernels get a netlink/clsact attachment, which cannot be pinned).

#[rustfmt::skip]
#[allow(non_camel_case_types, non_upper_case_globals, clippy::all)]
pub mod bindings;
mod clock;
pub mod records;

pub use clock::{BootClock, MonoClock};
pub use records::{
    BurstConfig, BurstRecord, BurstStats, CgroupCountersRecord, CgroupKey, Config, DevCounters,
    DevKey, DnsRecord, DropRecord, FlowKey, FlowSlot, FlowValue, NetnsSlot, PacketRecord,
    QueueConfig, QueueRecord, Record, SocketConfig, SocketRecord, SocketStats, Stats,
};

use aya::{Ebpf, EbpfLoader};

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
    /// Per-CPU arrays of [`FlowSlot`](super::FlowSlot)s, written in even and odd
    /// generations (with `PERISCOPE_CFG_FLOWS`).
    pub const FLOWS: [&str; 2] = ["periscope_flows_0", "periscope_flows_1"];
    /// Array with the flow table's current generation (one `u32`).
    pub const FLOW_GENERATION: &str = "periscope_flow_generation";
    /// Per-CPU array with one [`Stats`](super::Stats) at index 0.
    pub const STATS: &str = "periscope_stats";
    /// Hash of the namespaces' addresses (`struct periscope_local_key` → `__u8`), for the
    /// local/forwarded test (`PERISCOPE_CFG_LOCALITY`).
    pub const LOCAL_ADDRS: &str = "periscope_local_addrs";
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
    /// Per-CPU LRU hash of the burst detector's state per device, direction and hook.
    pub const BURST_STATE: &str = "periscope_burst_state";
    /// Per-CPU array holding one zeroed burst state to insert from.
    pub const BURST_ZERO: &str = "periscope_burst_zero";
    /// The `.rodata` global of the qdisc object, a [`QueueConfig`](super::QueueConfig).
    pub const QUEUE_CONFIG: &str = "periscope_queue_config";
    /// The qdisc object's LRU hash of queued packets (skb pointer → enqueue time, backlog).
    pub const QUEUED: &str = "periscope_queued";
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

/// An object compiled from `ebpf/<name>.bpf.c` and embedded in the binary
/// (`embedded_object!`).
#[derive(Clone, Copy, Debug)]
pub struct Object {
    file_name: &'static str,
    /// `None` in a stub build (`PERISCOPE_EBPF_STUB=1`).
    bytes: Option<&'static [u8]>,
}

impl Object {
    /// What `embedded_object!` expands to.
    #[doc(hidden)]
    pub const fn new(file_name: &'static str, bytes: Option<&'static [u8]>) -> Object {
        Object { file_name, bytes }
    }

    /// `<name>.bpf.o`, for messages.
    pub fn file_name(&self) -> &'static str {
        self.file_name
    }

    /// The object's bytes (8-byte aligned, as aya requires); an error in a stub build.
    pub fn bytes(&self) -> Result<&'static [u8], Error> {
        self.bytes.ok_or(Error::StubBuild)
    }

    /// Loads the object's maps and globals with `loader` (programs are loaded one by one
    /// afterwards, so that a receiver loads only what it attaches).
    pub fn load(&self, loader: &mut EbpfLoader<'_>) -> Result<Ebpf, Error> {
        loader.load(self.bytes()?).map_err(|source| Error::Load {
            object: self.file_name,
            source,
        })
    }
}

/// The [`Object`] compiled from `ebpf/<name>.bpf.c`: `embedded_object!("sockops")`. In a
/// stub build it holds no bytes, and loading it fails with [`Error::StubBuild`].
macro_rules! embedded_object {
    ($name:literal) => {{
        #[cfg(not(periscope_ebpf_stub))]
        let bytes: Option<&'static [u8]> = Some(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/",
            $name,
            ".bpf.o"
        )));
        #[cfg(periscope_ebpf_stub)]
        let bytes: Option<&'static [u8]> = None;
        $crate::shared::ebpf::Object::new(concat!($name, ".bpf.o"), bytes)
    }};
}
pub(crate) use embedded_object;

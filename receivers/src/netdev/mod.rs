//! Attaching the packet programs to network devices in every namespace, and reading them.
//!
//! [`Attacher`] holds one loaded packet object per network namespace (the namespace's cookie
//! and inode are a writable `.data` global set after the load, since XDP/TC programs cannot
//! read the device's namespace without kfuncs; instances are loaded ahead of time on a
//! background thread, so a new namespace takes a ready one), creates bpf_links on the
//! devices it is offered (entering the namespace on a short-lived thread), optionally pins
//! programs, maps and links under `/sys/fs/bpf/periscope/<receiver>/<inode>-<cookie>/` and
//! adopts such pins on restart, drains the ring buffers and reads the exact per-CPU counters.
//! [`NetdevReceiver`] drives it from namespace/device discovery; the `xdp` and `tcx`
//! receivers are two configurations of it.

mod attach;
mod bursts;
mod decode;
mod instance;
mod options;
mod receiver;

pub use attach::{chain, AttachOptions, AttachStats, Attacher, DeviceOutcome, Hook, PRELOADED};
pub use bursts::{BurstMode, BurstsConfig, MAX_BURST_BUCKETS};
pub use decode::{
    decode_burst, decode_dns, decode_packet, is_dns_record, DecodeError, DnsRecordError,
};
pub use instance::{load_packet, load_packet_sized, packet_object, PACKET};
pub(crate) use options::{
    default_counters_interval, default_poll_interval, default_ring_buffer_size, default_sample_rate,
};
pub use options::{
    validate_dns_ports, AllNamespaces, CgroupNamespaces, EventsMode, InterfaceFilter,
    InterfacesConfig, NamespacesConfig, RecordOptions, Shared, MAX_DNS_PORTS, MAX_RING_BYTES,
    MIN_RING_BYTES,
};
pub use receiver::{DiscoverySource, NetdevReceiver, ReceiverOptions, PIN_ROOT};

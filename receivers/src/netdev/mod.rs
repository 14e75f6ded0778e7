//! Attaching the packet programs to network devices in every namespace, and reading them.
//!
//! [`NetdevReceiver`] (`receiver.rs`) drives an [`Attacher`] (`attach.rs`) from namespace
//! and device discovery; the `xdp` and `tcx` receivers are two configurations of it. The
//! attacher keeps per network namespace:
//!
//! - an instance of the packet object (`instance.rs`): loaded ahead of time on a background
//!   thread and told its namespace after the load (XDP/TC programs cannot read the device's
//!   namespace without kfuncs), so a new namespace takes a ready one;
//! - optionally its pins under `/sys/fs/bpf/periscope/<receiver>/<inode>-<cookie>/`, adopted
//!   again on restart (`pins.rs`);
//! - the bpf_links of each device, made inside the namespace (`link.rs`), held in the
//!   per-namespace and per-device state (`state.rs`);
//! - and a thread letting go of the links of what went away (`defunct.rs`);
//!
//! and per receiver the maps every instance shares (`shared_maps.rs`: one ring buffer, one
//! counters table, one flow table, keyed by namespace), read by one reader (`read.rs`, records
//! decoded by `decode.rs`; the flow table harvested by `flows.rs` with the bpf(2) batch
//! commands of `table_syscalls.rs`), for every namespace, one namespace or one device, so that
//! last counters can be read when either goes away (`detach.rs`: the order of a departure).

mod attach;
mod bursts;
mod decode;
mod defunct;
mod detach;
mod flows;
mod instance;
mod link;
mod locality;
mod options;
mod outcome;
mod pins;
mod read;
mod receiver;
mod shared_maps;
mod state;
mod table_syscalls;
mod telemetry;

pub use attach::{AttachOptions, AttachStats, Attacher, DeviceOutcome};
pub use bursts::{BurstMode, BurstsConfig, MAX_BURST_BUCKETS};
pub use decode::{
    decode_burst, decode_dns, decode_packet, is_dns_record, BurstRecordError, DecodeError,
    DnsRecordError,
};
pub use flows::FlowOptions;
pub use instance::{chain, load_packet, load_packet_sized, packet_object, Hook, PACKET, PRELOADED};
pub(crate) use options::{
    default_counters_interval, default_poll_interval, default_ring_buffer_size, default_sample_rate,
};
pub use options::{
    validate_dns_ports, AllNamespaces, CgroupNamespaces, EventsMode, FlowsConfig, InterfaceFilter,
    InterfacesConfig, NamespacesConfig, RecordOptions, Shared, MAX_DNS_PORTS, MAX_RING_BYTES,
    MIN_RING_BYTES,
};
pub use outcome::{failure_reason, AttachError, FailureReason};
pub use receiver::{capability_needs, DiscoverySource, NetdevReceiver, ReceiverOptions, PIN_ROOT};

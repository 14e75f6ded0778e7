//! Instances of the packet object (`ebpf/packet.bpf.c`): one per network namespace, told
//! which namespace it serves after the load.

use aya::maps::{Array, MapData};
use aya::{Btf, Ebpf, EbpfLoader};

use periscope_pipeline::model::NetnsId;

use crate::shared::ebpf::{embedded_object, names, Config, Error, NetnsSlot, Object};

/// The packet object: XDP and TC programs, counters, ring buffer.
pub const PACKET: Object = embedded_object!("packet");

/// The `.data` map of the packet object: it holds only `periscope_netns`.
const DATA_MAP: &str = ".data";

/// The packet object's bytes.
pub fn packet_object() -> Result<&'static [u8], Error> {
    PACKET.bytes()
}

/// Tells a loaded packet object which namespace it serves (before any of its programs is
/// attached: counters and records carry this id).
pub(crate) fn set_netns(bpf: &mut Ebpf, id: NetnsId) -> Result<(), aya::maps::MapError> {
    let map = bpf
        .map_mut(DATA_MAP)
        .ok_or_else(|| aya::maps::MapError::InvalidName {
            name: DATA_MAP.to_string(),
        })?;
    // aya checks the map's value size against the slot's.
    let mut slot: Array<&mut MapData, NetnsSlot> = Array::try_from(map)?;
    slot.set(
        0,
        NetnsSlot {
            cookie: id.cookie,
            inode: id.inode,
            _pad: 0,
        },
        0,
    )
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
    let mut loader = EbpfLoader::new();
    if let Some(btf) = btf {
        loader.btf(Some(btf));
    }
    if let Some(bytes) = ring_bytes {
        loader.map_max_entries(names::EVENTS, bytes);
    }
    loader.override_global(names::CONFIG, config, true);
    let mut bpf = PACKET.load(&mut loader)?;
    // The programs take the namespace's id from the writable `.data` global, not from the
    // config (the agent loads instances before it knows their namespace).
    let id = NetnsId {
        inode: config.netns_inode,
        cookie: config.netns_cookie,
    };
    set_netns(&mut bpf, id).map_err(|e| Error::Load {
        object: PACKET.file_name(),
        source: e.into(),
    })?;
    Ok(bpf)
}

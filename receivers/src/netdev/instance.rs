//! Instances of the packet object (`ebpf/packet.bpf.c`): one per network namespace, told
//! which namespace it serves after the load (the writable `.data` global `periscope_netns`),
//! so that instances can be loaded and verified ahead of time ([`Preloaded`]) and handed to
//! namespaces as they appear; and the programs of an instance, fresh or adopted from pins.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use aya::maps::{Array, MapData};
use aya::programs::{SchedClassifier, Xdp};
use aya::{Btf, Ebpf, EbpfLoader};

use periscope_pipeline::model::NetnsId;

use super::options::{RecordOptions, MIN_RING_BYTES};
use super::shared_maps::{configure_shared, SHARED};
use crate::shared::ebpf::records::{
    PERISCOPE_CFG_BURSTS, PERISCOPE_CFG_DNS, PERISCOPE_CFG_FLOWS, PERISCOPE_CFG_RECORDS,
};
use crate::shared::ebpf::{embedded_object, names, BurstConfig, Config, Error, NetnsSlot, Object};

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
    if config.flags & PERISCOPE_CFG_FLOWS == 0 {
        // An array costs its whole size when loaded.
        for name in names::FLOWS {
            loader.map_max_entries(name, 1);
        }
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

/// How many loaded, verified instances a receiver keeps ready for namespaces to come.
pub const PRELOADED: usize = 2;

/// A loader of the packet object with the receiver's flags and ring size, taking the shared
/// maps from their pins in `maps_dir` (the namespace is set per instance with [`set_netns`]).
pub(super) fn new_loader(
    records: &RecordOptions,
    ring_bytes: u32,
    maps_dir: &Path,
) -> EbpfLoader<'static> {
    // Borrowed for the loader's lifetime: one 24-byte Config per loader, leaked.
    let config: &'static Config = Box::leak(Box::new(Config {
        netns_cookie: 0,
        netns_inode: 0,
        flags: records.flags,
        sample_rate: records.sample_rate,
        dns_ports: records.dns_ports,
        flow_slot_mask: records.flows.map_or(0, |f| f.slots - 1),
    }));
    let mut l = EbpfLoader::new();
    // No kernel BTF kept (~18 MiB parsed, for the agent's lifetime): the packet programs read
    // only their UAPI context (`xdp_md`, `__sk_buff`) and wire-format headers, whose offsets
    // CO-RE relocations would leave as compiled.
    l.btf(None);
    l.map_max_entries(names::EVENTS, ring_size(records, ring_bytes));
    // An array costs its whole size when loaded: one slot when flows are off.
    for name in names::FLOWS {
        l.map_max_entries(name, records.flows.map_or(1, |f| f.slots));
    }
    l.override_global(names::CONFIG, config, true);
    if let Some(b) = records.bursts {
        let b: &'static BurstConfig = Box::leak(Box::new(b));
        l.override_global(names::BURST_CONFIG, b, true);
    }
    configure_shared(&mut l, maps_dir);
    l
}

/// The ring buffer's size: `configured`, or one page when the programs write no record at
/// all (counters only, no DNS, no bursts): its pages are mapped into the agent (RSS) whole.
fn ring_size(records: &RecordOptions, configured: u32) -> u32 {
    let writes = PERISCOPE_CFG_RECORDS | PERISCOPE_CFG_DNS | PERISCOPE_CFG_BURSTS;
    if records.flags & writes == 0 {
        MIN_RING_BYTES
    } else {
        configured
    }
}

/// Loads the object (maps, BTF relocations) and the programs of `hooks` (the verifier), then
/// lets go of its handles on the shared maps (the programs hold them; the reader has its own).
/// A program not loaded here cannot be loaded later.
pub(super) fn load_instance(
    loader: &mut EbpfLoader<'static>,
    hooks: &[Hook],
) -> anyhow::Result<Ebpf> {
    let mut bpf = PACKET.load(loader)?;
    for hook in hooks {
        let name = hook.program();
        let prog = bpf
            .program_mut(name)
            .ok_or_else(|| anyhow::anyhow!("the packet object has no program {name}"))?;
        match hook {
            Hook::Xdp => {
                let p: &mut Xdp = prog.try_into()?;
                p.load()
                    .map_err(|e| anyhow::anyhow!("loading {name}: {}", chain(&e)))?;
            }
            Hook::TcxIngress | Hook::TcxEgress => {
                let p: &mut SchedClassifier = prog.try_into()?;
                if p.fd().is_err() {
                    p.load()
                        .map_err(|e| anyhow::anyhow!("loading {name}: {}", chain(&e)))?;
                }
            }
        }
    }
    for name in SHARED {
        drop(bpf.take_map(name));
    }
    Ok(bpf)
}

/// Instances loaded ahead on a background thread, so that a new namespace does not wait for
/// a load (object, BTF relocations, verifier: 15–60 ms, most of its attach latency). The
/// thread keeps [`Preloaded::rx`]'s slots and one more in hand filled, and stops when the
/// receiving end is dropped (then joined).
pub(super) struct Preloaded {
    rx: Option<crossbeam_channel::Receiver<anyhow::Result<Ebpf>>>,
    thread: Option<JoinHandle<()>>,
}

impl Preloaded {
    pub(super) fn start(
        count: usize,
        records: RecordOptions,
        ring_bytes: u32,
        hooks: Vec<Hook>,
        maps_dir: PathBuf,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(count.saturating_sub(1));
        let thread = std::thread::Builder::new()
            .name("periscope-preload".into())
            .spawn(move || {
                let mut loader = new_loader(&records, ring_bytes, &maps_dir);
                loop {
                    let r = load_instance(&mut loader, &hooks);
                    let failed = r.is_err();
                    // Err: the attacher is gone (an unsent instance is dropped, unloaded).
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            });
        match thread {
            Ok(t) => Preloaded {
                rx: Some(rx),
                thread: Some(t),
            },
            Err(e) => {
                tracing::warn!("cannot start the preloading thread ({e}); loading on demand");
                Preloaded {
                    rx: None,
                    thread: None,
                }
            }
        }
    }

    /// A ready instance, if one is.
    pub(super) fn take(&mut self) -> Option<Ebpf> {
        match self.rx.as_ref()?.try_recv() {
            Ok(Ok(bpf)) => Some(bpf),
            Ok(Err(e)) => {
                tracing::warn!("loading ahead failed ({e:#}); loading on demand from now on");
                self.rx = None;
                None
            }
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => {
                self.rx = None;
                None
            }
        }
    }
}

impl Drop for Preloaded {
    fn drop(&mut self) {
        // Instances still queued are unloaded with the channel; the thread stops at its next
        // send.
        self.rx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One attachment point of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// XDP (ingress).
    Xdp,
    /// TCX ingress.
    TcxIngress,
    /// TCX egress.
    TcxEgress,
}

impl Hook {
    /// The name used in pins and logs.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcxIngress => "tcx-ingress",
            Hook::TcxEgress => "tcx-egress",
        }
    }

    pub(super) fn program(self) -> &'static str {
        match self {
            Hook::Xdp => names::XDP,
            Hook::TcxIngress => names::TC_INGRESS,
            Hook::TcxEgress => names::TC_EGRESS,
        }
    }
}

/// The programs of one namespace: a fresh object, or programs adopted from pins.
pub(super) enum Programs {
    Fresh(Box<Ebpf>),
    Pinned(Box<PinnedPrograms>),
}

/// Programs opened from the pins of an earlier run.
pub(super) struct PinnedPrograms {
    pub(super) xdp: Option<Xdp>,
    pub(super) tc_ingress: Option<SchedClassifier>,
    pub(super) tc_egress: Option<SchedClassifier>,
}

/// Pins (with pins) the TCX ingress program devices fall back to; loaded with the instance
/// (see [`load_instance`]: the instance keeps no handle on the shared maps to load it later).
pub(super) fn ensure_fallback_loaded(
    programs: &mut Programs,
    dir: Option<&Path>,
) -> anyhow::Result<()> {
    match programs {
        Programs::Fresh(bpf) => {
            let p: &mut SchedClassifier = bpf
                .program_mut(names::TC_INGRESS)
                .ok_or_else(|| anyhow::anyhow!("no program {}", names::TC_INGRESS))?
                .try_into()?;
            if p.fd().is_err() {
                anyhow::bail!("{} was not loaded with the instance", names::TC_INGRESS);
            }
            if let Some(d) = dir {
                let path = d.join(format!("prog-{}", Hook::TcxIngress.name()));
                if !path.exists() {
                    p.pin(&path).map_err(|e| {
                        anyhow::anyhow!("pinning {}: {}", path.display(), chain(&e))
                    })?;
                }
            }
            Ok(())
        }
        Programs::Pinned(p) => {
            if p.tc_ingress.is_some() {
                Ok(())
            } else {
                anyhow::bail!("the pins of the earlier run have no TCX ingress program")
            }
        }
    }
}

/// A loaded program of one of the hooks.
pub(super) enum ProgRef<'a> {
    Xdp(&'a mut Xdp),
    Tc(&'a mut SchedClassifier),
}

/// Mutable references to every loaded program at once (so that hooks attach in parallel).
pub(super) fn program_refs(programs: &mut Programs) -> anyhow::Result<HashMap<Hook, ProgRef<'_>>> {
    let mut out = HashMap::new();
    match programs {
        Programs::Fresh(bpf) => {
            for (name, prog) in bpf.programs_mut() {
                let hook = match name {
                    names::XDP => Hook::Xdp,
                    names::TC_INGRESS => Hook::TcxIngress,
                    names::TC_EGRESS => Hook::TcxEgress,
                    _ => continue,
                };
                let r = match hook {
                    Hook::Xdp => ProgRef::Xdp(prog.try_into()?),
                    _ => ProgRef::Tc(prog.try_into()?),
                };
                out.insert(hook, r);
            }
        }
        Programs::Pinned(p) => {
            if let Some(x) = p.xdp.as_mut() {
                out.insert(Hook::Xdp, ProgRef::Xdp(x));
            }
            if let Some(t) = p.tc_ingress.as_mut() {
                out.insert(Hook::TcxIngress, ProgRef::Tc(t));
            }
            if let Some(t) = p.tc_egress.as_mut() {
                out.insert(Hook::TcxEgress, ProgRef::Tc(t));
            }
        }
    }
    Ok(out)
}

/// The error and its causes on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

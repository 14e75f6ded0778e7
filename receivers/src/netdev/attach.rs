//! The attachment manager: one loaded packet object per network namespace (its id is the
//! writable `.data` global `periscope_netns`, so instances can be loaded and verified ahead of
//! time and handed to namespaces as they appear), bpf_links on the devices in it, optional
//! pins, and the reading of its ring buffer and counters.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::links::{FdLink, Link, LinkOrder, PinnedLink};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader, Pod};
use aya_obj::programs::XdpAttachType;

use periscope_pipeline::devices::{DeviceInfo, DeviceTable};
use periscope_pipeline::model::{
    DeviceCounters, DeviceRef, Direction, NetnsId, PacketEvent, Transport,
};

use super::decode::{decode_burst, decode_dns, decode_packet, is_dns_record};
use crate::shared::ebpf::records::{
    PERISCOPE_DIR_EGRESS, PERISCOPE_DIR_INGRESS, PERISCOPE_RECORD_BURST,
};
use crate::shared::ebpf::{names, BootClock, Config, DevCounters, DevKey, Stats};
use crate::shared::netns::{Device, Namespace};
use periscope_pipeline::model::BurstEvent;

use super::instance::{set_netns, PACKET};
use super::options::{InterfaceFilter, RecordOptions};

/// How many loaded, verified instances a receiver keeps ready for namespaces to come.
pub const PRELOADED: usize = 2;

/// A loader of the packet object with the receiver's flags and ring size (the namespace is
/// set per instance with [`set_netns`]).
fn new_loader(records: &RecordOptions, ring_bytes: u32) -> EbpfLoader<'static> {
    // Borrowed for the loader's lifetime: one 24-byte Config per loader, leaked.
    let config: &'static Config = Box::leak(Box::new(Config {
        netns_cookie: 0,
        netns_inode: 0,
        flags: records.flags,
        sample_rate: records.sample_rate,
        dns_ports: records.dns_ports,
        _pad: 0,
    }));
    let mut l = EbpfLoader::new();
    l.map_max_entries(names::EVENTS, ring_bytes);
    l.override_global(names::CONFIG, config, true);
    if let Some(b) = records.bursts {
        let b: &'static crate::shared::ebpf::BurstConfig = Box::leak(Box::new(b));
        l.override_global(names::BURST_CONFIG, b, true);
    }
    l
}

/// Loads the object (maps, BTF relocations) and the programs of `hooks` (the verifier).
fn load_instance(loader: &mut EbpfLoader<'static>, hooks: &[Hook]) -> anyhow::Result<Ebpf> {
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
                p.load()
                    .map_err(|e| anyhow::anyhow!("loading {name}: {}", chain(&e)))?;
            }
        }
    }
    Ok(bpf)
}

/// Instances loaded ahead on a background thread, so that a new namespace does not wait for
/// a load (object, BTF relocations, verifier: 15–60 ms, most of its attach latency). The
/// thread keeps [`Preloaded::rx`]'s slots and one more in hand filled, and stops when the
/// receiving end is dropped (then joined).
struct Preloaded {
    rx: Option<crossbeam_channel::Receiver<anyhow::Result<Ebpf>>>,
    thread: Option<JoinHandle<()>>,
}

impl Preloaded {
    fn start(count: usize, records: RecordOptions, ring_bytes: u32, hooks: Vec<Hook>) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(count.saturating_sub(1));
        let thread = std::thread::Builder::new()
            .name("periscope-preload".into())
            .spawn(move || {
                let mut loader = new_loader(&records, ring_bytes);
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
    fn take(&mut self) -> Option<Ebpf> {
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

    fn program(self) -> &'static str {
        match self {
            Hook::Xdp => names::XDP,
            Hook::TcxIngress => names::TC_INGRESS,
            Hook::TcxEgress => names::TC_EGRESS,
        }
    }
}

/// What a receiver attaches.
#[derive(Clone, Debug)]
pub struct AttachOptions {
    /// The hooks every matching device gets.
    pub hooks: Vec<Hook>,
    /// With [`Hook::Xdp`]: when a device already has another XDP program, observe it through
    /// TCX ingress instead.
    pub tcx_fallback: bool,
    /// Program flags and sampling.
    pub records: RecordOptions,
    /// Ring buffer bytes per namespace.
    pub ring_bytes: u32,
    /// Where to pin (`/sys/fs/bpf/periscope/<receiver>`), or `None` not to pin.
    pub pin_root: Option<PathBuf>,
    /// Which devices.
    pub interfaces: InterfaceFilter,
}

/// Totals of what the manager did (the receiver's status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachStats {
    /// Namespaces with a loaded (or adopted) object.
    pub namespaces: usize,
    /// Links created by this process.
    pub attached: u64,
    /// Pinned links found from an earlier run and taken over.
    pub adopted: u64,
    /// Devices observed through TCX ingress because another XDP program holds the device.
    pub xdp_fallbacks: u64,
    /// Attach failures (logged).
    pub failed: u64,
    /// Records that could not be decoded (a bug or a version mismatch; logged once).
    pub decode_errors: u64,
}

/// What happened to a device that was offered.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceOutcome {
    /// Filtered out by `interfaces`.
    Skipped,
    /// Already attached (a rename or state change): names updated.
    Known,
    /// Attached (and how long it took), possibly partly from adopted pins.
    Attached {
        latency: Duration,
        adopted: usize,
        /// The XDP slot was taken: observed through TCX ingress.
        fallback: bool,
    },
}

enum HeldLink {
    Owned(#[allow(dead_code)] FdLink),
    Pinned(PinnedLink),
}

struct DevState {
    links: Vec<(Hook, HeldLink)>,
}

/// The programs of one namespace: a fresh object, or programs adopted from pins.
enum Programs {
    Fresh(Box<Ebpf>),
    Pinned(Box<PinnedPrograms>),
}

/// Programs opened from the pins of an earlier run.
struct PinnedPrograms {
    xdp: Option<Xdp>,
    tc_ingress: Option<SchedClassifier>,
    tc_egress: Option<SchedClassifier>,
}

struct NsState {
    ns: Namespace,
    /// The nsfs file: entering the namespace to attach. Dropped with the state.
    handle: File,
    programs: Programs,
    ring: RingBuf<MapData>,
    counters: PerCpuHashMap<MapData, DevKey, DevCounters>,
    stats: PerCpuArray<MapData, Stats>,
    /// Pin directory of this namespace.
    dir: Option<PathBuf>,
    devices: HashMap<u32, DevState>,
    /// Pinned links of an earlier run not yet claimed by a device, by pin file name.
    adopted: HashMap<String, PinnedLink>,
    /// When the namespace was added (unclaimed adopted links are released after a while).
    added_at: Instant,
    /// Stats (losses) read last time.
    lost_seen: u64,
    /// Records read from the ring buffer, per (ifindex, direction, transport).
    delivered: HashMap<(u32, Direction, Transport), u64>,
}

/// The attachment manager. Not thread-safe: one receiver thread drives it.
pub struct Attacher {
    opts: AttachOptions,
    devices: DeviceTable,
    namespaces: HashMap<NetnsId, NsState>,
    clock: BootClock,
    clock_at: Instant,
    /// One loader for every namespace loaded on demand: `EbpfLoader::new()` parses the
    /// kernel's BTF (~30 ms), so reusing it makes a namespace's load that much cheaper. The
    /// configuration global is the same for every namespace (the namespace's id is set after
    /// the load, see [`set_netns`]).
    loader: EbpfLoader<'static>,
    /// Instances loaded ahead ([`Attacher::preload`]).
    preloaded: Option<Preloaded>,
    /// Threads releasing the links and programs of removed namespaces (TCX detaches wait
    /// for RCU grace periods: ~10–30 ms per link), so that the receiver goes on attaching
    /// meanwhile.
    releasing: Vec<(NetnsId, JoinHandle<()>)>,
    stats: AttachStats,
    /// Where question names of DNS records are interned.
    dns: periscope_pipeline::DnsTable,
    /// DNS records whose payload did not parse (counted as receiver errors by the caller).
    dns_errors: u64,
    /// Burst reports read by [`Attacher::drain`], for [`Attacher::take_bursts`].
    bursts: Vec<BurstEvent>,
    /// Burst losses (records, state) reported so far by [`Attacher::take_burst_losses`].
    burst_losses_seen: (u64, u64),
}

fn io_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        cur = err.source();
    }
    None
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

/// The ifindex a pinned XDP or TCX link is attached to (0 once its device is gone).
fn pinned_link_ifindex(path: &Path) -> io::Result<u32> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: [u32; 11],
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
        _pad: [u32; 12],
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL in pin path"))?;
    let get = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: [0; 11],
    };
    // SAFETY: a BPF_OBJ_GET attr with a valid C string; the kernel reads size_of bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &get as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel returned, owned only here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8 whose xdp and tcx
    // members start with `__u32 ifindex`.
    let mut info = [0u64; 16];
    let attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
        _pad: [0; 12],
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[2] as u32)
}

fn pin_dir_name(id: NetnsId) -> String {
    format!("{}-{}", id.inode, id.cookie)
}

fn parse_pin_dir_name(name: &str) -> Option<NetnsId> {
    let (inode, cookie) = name.split_once('-')?;
    Some(NetnsId {
        inode: inode.parse().ok()?,
        cookie: cookie.parse().ok()?,
    })
}

fn link_pin_name(hook: Hook, ifindex: u32) -> String {
    format!("link-{}-{ifindex}", hook.name())
}

fn sum<T: Pod + Copy + Default>(per_cpu: &[T], add: impl Fn(&mut T, &T)) -> T {
    let mut total = T::default();
    per_cpu.iter().for_each(|v| add(&mut total, v));
    total
}

impl Attacher {
    /// A manager that registers the devices it attaches in `devices`.
    pub fn new(opts: AttachOptions, devices: DeviceTable) -> Attacher {
        let opts_ring = opts.ring_bytes;
        Attacher {
            devices,
            namespaces: HashMap::new(),
            clock: BootClock::now(),
            clock_at: Instant::now(),
            loader: new_loader(&opts.records, opts_ring),
            preloaded: None,
            releasing: Vec::new(),
            opts,
            stats: AttachStats::default(),
            dns: periscope_pipeline::DnsTable::default(),
            dns_errors: 0,
            bursts: Vec::new(),
            burst_losses_seen: (0, 0),
        }
    }

    /// Interns the question names of DNS records in `dns` (the pipeline's shared table).
    pub fn with_dns(mut self, dns: periscope_pipeline::DnsTable) -> Attacher {
        self.dns = dns;
        self
    }

    /// DNS records (`always_emit_dns`) whose payload was not a readable DNS message.
    pub fn dns_errors(&self) -> u64 {
        self.dns_errors
    }

    /// Like [`Attacher::drain`], and DNS records (with `always_emit_dns`) become
    /// [`periscope_pipeline::model::Event::Dns`] events.
    pub fn drain_events(&mut self, f: &mut dyn FnMut(periscope_pipeline::model::Event)) -> usize {
        use periscope_pipeline::model::Event;
        let mut dns = Vec::new();
        let n = self.drain_with(&mut |ev| f(Event::Packet(ev)), &mut dns);
        for d in dns {
            f(Event::Dns(d));
        }
        n
    }

    /// Keeps `count` instances loaded and verified ahead on a background thread: a new
    /// namespace then takes one instead of waiting for a load. Their programs are loaded in
    /// the kernel but attached nowhere; they are unloaded when the attacher is dropped.
    pub fn preload(&mut self, count: usize) {
        self.preloaded = (count > 0).then(|| {
            Preloaded::start(
                count,
                self.opts.records.clone(),
                self.opts.ring_bytes,
                self.programs_needed(),
            )
        });
    }

    /// Joins the threads releasing removed namespaces ([`Attacher::remove_namespace`]) that
    /// are done, and waits for those of which `wait_for` is true.
    fn join_releasing(&mut self, wait_for: impl Fn(&NetnsId) -> bool) {
        let mut keep = Vec::new();
        for (ns, t) in self.releasing.drain(..) {
            if wait_for(&ns) || t.is_finished() {
                if t.join().is_err() {
                    tracing::error!("a thread releasing links panicked");
                }
            } else {
                keep.push((ns, t));
            }
        }
        self.releasing = keep;
    }

    /// What it did so far.
    pub fn stats(&self) -> AttachStats {
        AttachStats {
            namespaces: self.namespaces.len(),
            ..self.stats.clone()
        }
    }

    /// The programs loaded with a namespace (the TCX ingress program an XDP receiver falls
    /// back to is loaded when a device needs it).
    fn programs_needed(&self) -> Vec<Hook> {
        self.opts.hooks.clone()
    }

    /// Whether devices may fall back to TCX ingress.
    fn has_fallback(&self) -> bool {
        let h = &self.opts.hooks;
        self.opts.tcx_fallback && h.contains(&Hook::Xdp) && !h.contains(&Hook::TcxIngress)
    }

    /// Loads the object for a namespace (or adopts its pins); returns the time it took and
    /// whether pins were adopted.
    pub fn add_namespace(&mut self, ns: &Namespace) -> anyhow::Result<(Duration, bool)> {
        if self.namespaces.contains_key(&ns.id) {
            return Ok((Duration::ZERO, false));
        }
        let t = Instant::now();
        // Back in scope while its links are still being released: let that finish first (an
        // XDP slot is single).
        self.join_releasing(|id| *id == ns.id);
        let handle = File::open(&ns.path)
            .map_err(|e| anyhow::anyhow!("opening namespace {}: {e}", ns.path.display()))?;
        let inode = handle.metadata()?.ino();
        if inode != u64::from(ns.id.inode) {
            anyhow::bail!(
                "{} is no longer namespace {} (now {inode})",
                ns.path.display(),
                ns.id.inode
            );
        }
        let dir = self
            .opts
            .pin_root
            .as_ref()
            .map(|root| root.join(pin_dir_name(ns.id)));
        let mut adopted_any = false;
        let state = match dir.as_deref().filter(|d| d.is_dir()) {
            Some(d) => match self.adopt(ns, &handle, d) {
                Ok(s) => {
                    adopted_any = true;
                    s
                }
                Err(e) => {
                    tracing::warn!(
                        dir = %d.display(),
                        "pins of an earlier run are incomplete ({e:#}); removing them and \
                         attaching afresh"
                    );
                    remove_pins(d);
                    self.load(ns, handle, dir.clone())?
                }
            },
            None => self.load(ns, handle, dir.clone())?,
        };
        self.namespaces.insert(ns.id, state);
        Ok((t.elapsed(), adopted_any))
    }

    fn load(
        &mut self,
        ns: &Namespace,
        handle: File,
        dir: Option<PathBuf>,
    ) -> anyhow::Result<NsState> {
        let mut bpf = match self.preloaded.as_mut().and_then(Preloaded::take) {
            Some(bpf) => bpf,
            None => {
                let hooks = self.programs_needed();
                load_instance(&mut self.loader, &hooks)?
            }
        };
        set_netns(&mut bpf, ns.id).map_err(|e| {
            anyhow::anyhow!("setting the namespace id of its programs: {}", chain(&e))
        })?;
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow::anyhow!("creating pin directory {}: {e}", d.display()))?;
            for hook in self.programs_needed() {
                let name = hook.program();
                let path = d.join(format!("prog-{}", hook.name()));
                let prog = bpf
                    .program_mut(name)
                    .ok_or_else(|| anyhow::anyhow!("no program {name}"))?;
                let r = match hook {
                    Hook::Xdp => <&mut Xdp>::try_from(prog)?.pin(&path),
                    _ => <&mut SchedClassifier>::try_from(prog)?.pin(&path),
                };
                r.map_err(|e| anyhow::anyhow!("pinning {}: {}", path.display(), chain(&e)))?;
            }
            for map in [names::EVENTS, names::COUNTERS, names::STATS] {
                let path = d.join(format!("map-{map}"));
                bpf.map(map)
                    .ok_or_else(|| anyhow::anyhow!("no map {map}"))?
                    .pin(&path)
                    .map_err(|e| anyhow::anyhow!("pinning {}: {}", path.display(), chain(&e)))?;
            }
        }
        let mut take = |name: &str| -> anyhow::Result<Map> {
            bpf.take_map(name)
                .ok_or_else(|| anyhow::anyhow!("the packet object has no map {name}"))
        };
        let ring = RingBuf::try_from(take(names::EVENTS)?)?;
        let counters = PerCpuHashMap::try_from(take(names::COUNTERS)?)?;
        let stats = PerCpuArray::try_from(take(names::STATS)?)?;
        Ok(NsState {
            ns: ns.clone(),
            handle,
            programs: Programs::Fresh(Box::new(bpf)),
            ring,
            counters,
            stats,
            dir,
            devices: HashMap::new(),
            adopted: HashMap::new(),
            added_at: Instant::now(),
            lost_seen: 0,
            delivered: HashMap::new(),
        })
    }

    /// Takes over the pins an earlier run left in `dir`.
    fn adopt(&self, ns: &Namespace, _handle: &File, dir: &Path) -> anyhow::Result<NsState> {
        let map = |name: &str| -> anyhow::Result<Map> {
            let path = dir.join(format!("map-{name}"));
            let data = MapData::from_pin(&path)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), chain(&e)))?;
            Ok(Map::from_map_data(data)?)
        };
        let ring = RingBuf::try_from(map(names::EVENTS)?)?;
        let counters = PerCpuHashMap::try_from(map(names::COUNTERS)?)?;
        let stats = PerCpuArray::try_from(map(names::STATS)?)?;
        let (mut xdp, mut tc_ingress, mut tc_egress) = (None, None, None);
        for hook in self.programs_needed() {
            let path = dir.join(format!("prog-{}", hook.name()));
            let err = |e: aya::programs::ProgramError| {
                anyhow::anyhow!("{}: {}", path.display(), chain(&e))
            };
            match hook {
                Hook::Xdp => {
                    xdp = Some(Xdp::from_pin(&path, XdpAttachType::Interface).map_err(err)?)
                }
                Hook::TcxIngress => {
                    tc_ingress = Some(SchedClassifier::from_pin(&path).map_err(err)?)
                }
                Hook::TcxEgress => tc_egress = Some(SchedClassifier::from_pin(&path).map_err(err)?),
            }
        }
        if self.has_fallback() {
            // Pinned only if an earlier run needed it.
            let path = dir.join(format!("prog-{}", Hook::TcxIngress.name()));
            if path.exists() {
                tc_ingress = Some(
                    SchedClassifier::from_pin(&path)
                        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), chain(&e)))?,
                );
            }
        }
        let mut adopted = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(ifindex) = name.rsplit('-').next().and_then(|i| i.parse::<u32>().ok()) {
                if !name.starts_with("link-") {
                    continue;
                }
                // A link whose device went away while no agent ran is defunct (ifindex 0),
                // even if a new device got the same ifindex since.
                match pinned_link_ifindex(&entry.path()) {
                    Ok(i) if i == ifindex => {}
                    other => {
                        tracing::info!(
                            pin = %entry.path().display(),
                            "pinned link no longer on device {ifindex} ({other:?}); removing it"
                        );
                        let _ = std::fs::remove_file(entry.path());
                        continue;
                    }
                }
                match PinnedLink::from_pin(entry.path()) {
                    Ok(l) => {
                        adopted.insert(name, l);
                    }
                    Err(e) => {
                        tracing::warn!(pin = %entry.path().display(), "cannot open pinned link ({}); removing it", chain(&e));
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        let handle = File::open(&ns.path)?;
        Ok(NsState {
            ns: ns.clone(),
            handle,
            programs: Programs::Pinned(Box::new(PinnedPrograms {
                xdp,
                tc_ingress,
                tc_egress,
            })),
            ring,
            counters,
            stats,
            dir: Some(dir.to_path_buf()),
            devices: HashMap::new(),
            adopted,
            added_at: Instant::now(),
            lost_seen: 0,
            delivered: HashMap::new(),
        })
    }

    /// Attaches to a device of a known namespace, if the interface filter takes it.
    pub fn add_device(&mut self, netns: NetnsId, dev: &Device) -> anyhow::Result<DeviceOutcome> {
        if !self.opts.interfaces.matches(&dev.name) {
            return Ok(DeviceOutcome::Skipped);
        }
        let hooks = self.opts.hooks.clone();
        let has_fallback = self.has_fallback();
        let Some(state) = self.namespaces.get_mut(&netns) else {
            // The namespace could not be loaded (it was already reported, once) or is gone
            // already: its devices are skipped without a warning each.
            tracing::debug!(
                "device {} ({}) of namespace {} that is not loaded: skipped",
                dev.name,
                dev.ifindex,
                netns.inode
            );
            return Ok(DeviceOutcome::Skipped);
        };
        let device_ref = DeviceRef {
            netns,
            ifindex: dev.ifindex,
        };
        let info = DeviceInfo {
            name: dev.name.clone(),
            netns_name: state.ns.name.clone(),
        };
        if state.devices.contains_key(&dev.ifindex) {
            self.devices.insert(device_ref, info);
            return Ok(DeviceOutcome::Known);
        }
        let t = Instant::now();
        let mut links = Vec::new();
        let mut to_attach = Vec::new();
        for hook in &hooks {
            let pin = link_pin_name(*hook, dev.ifindex);
            match state.adopted.remove(&pin) {
                Some(l) => links.push((*hook, HeldLink::Pinned(l))),
                None => to_attach.push(*hook),
            }
        }
        // A device of an earlier run may have been observed through the fallback.
        let fb_pin = link_pin_name(Hook::TcxIngress, dev.ifindex);
        if has_fallback {
            if let Some(l) = state.adopted.remove(&fb_pin) {
                links.push((Hook::TcxIngress, HeldLink::Pinned(l)));
                to_attach.retain(|h| *h != Hook::Xdp);
            }
        }
        let adopted = links.len();
        let mut fallback = false;
        let mut errors = Vec::new();
        if !to_attach.is_empty() {
            let ifindex = dev.ifindex;
            let name = dev.name.as_str();
            let NsState {
                handle,
                programs,
                dir,
                ..
            } = state;
            let handle: &File = handle;
            let mut attached = {
                let mut refs = program_refs(programs)?;
                let jobs: Vec<(Hook, ProgRef<'_>)> = to_attach
                    .iter()
                    .filter_map(|h| refs.remove(h).map(|r| (*h, r)))
                    .collect();
                // One thread per hook: the kernel waits for an RCU grace period when it
                // creates a device's TCX entry; the waits of ingress and egress overlap.
                attach_parallel(handle, jobs, ifindex, name)
            };
            let busy = attached.iter().position(|(hook, r, _, _)| {
                *hook == Hook::Xdp
                    && r.as_ref().err().is_some_and(|e| {
                        matches!(io_errno(e.as_ref()), Some(libc::EBUSY) | Some(libc::EEXIST))
                    })
            });
            if let (true, Some(i)) = (has_fallback, busy) {
                let why = attached[i].1.as_ref().err().map(|e| e.to_string());
                match ensure_fallback_loaded(programs, dir.as_deref()) {
                    Ok(()) => {
                        drop(attached.remove(i));
                        let tc = program_refs(programs)?.remove(&Hook::TcxIngress);
                        if let Some(tc) = tc {
                            let mut fb = attach_parallel(
                                handle,
                                vec![(Hook::TcxIngress, tc)],
                                ifindex,
                                name,
                            );
                            for f in &mut fb {
                                f.2 = true;
                                f.3.clone_from(&why);
                            }
                            attached.extend(fb);
                        }
                    }
                    Err(e) => errors.push(format!("TCX ingress fallback: {e:#}")),
                }
            }
            for (hook, r, was_fallback, why) in attached {
                match r {
                    Ok(link) => {
                        if was_fallback {
                            fallback = true;
                            self.stats.xdp_fallbacks += 1;
                            tracing::warn!(
                                netns = state_name(&state.ns),
                                device = %dev.name,
                                "device already has another XDP program ({}); observing it \
                                 through TCX ingress instead",
                                why.unwrap_or_default()
                            );
                        }
                        let held = match &state.dir {
                            Some(d) => {
                                let path = d.join(link_pin_name(hook, dev.ifindex));
                                let _ = std::fs::remove_file(&path);
                                match link.pin(&path) {
                                    Ok(p) => HeldLink::Pinned(p),
                                    Err(e) => {
                                        errors.push(format!(
                                            "pinning {}: {}",
                                            path.display(),
                                            chain(&e)
                                        ));
                                        continue;
                                    }
                                }
                            }
                            None => HeldLink::Owned(link),
                        };
                        self.stats.attached += 1;
                        links.push((hook, held));
                    }
                    Err(e) => errors.push(format!("{}: {e:#}", hook.name())),
                }
            }
        }
        self.stats.adopted += adopted as u64;
        let latency = t.elapsed();
        if !links.is_empty() {
            state.devices.insert(dev.ifindex, DevState { links });
            // Registered once attached: names resolve for every record of the device.
            self.devices.insert(device_ref, info);
        }
        if !errors.is_empty() {
            self.stats.failed += errors.len() as u64;
            anyhow::bail!(
                "attaching to {} (ifindex {}) in {}: {}",
                dev.name,
                dev.ifindex,
                state_name(&state.ns),
                errors.join("; ")
            );
        }
        Ok(DeviceOutcome::Attached {
            latency,
            adopted,
            fallback,
        })
    }

    /// Forgets a device: its links are detached (and unpinned).
    /// Call after a last [`Attacher::read_counters`]: its counters are deleted from the
    /// kernel's map too (an ifindex may be reused by a later device).
    pub fn remove_device(&mut self, netns: NetnsId, ifindex: u32) {
        if let Some(state) = self.namespaces.get_mut(&netns) {
            if let Some(dev) = state.devices.remove(&ifindex) {
                release(dev);
            }
            let keys: Vec<DevKey> = state
                .counters
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.ifindex == ifindex)
                .collect();
            for k in keys {
                let _ = state.counters.remove(&k);
            }
        }
        self.devices.remove(&DeviceRef { netns, ifindex });
    }

    /// Forgets a namespace: returns its last counters, then detaches, unpins and closes
    /// everything of it.
    ///
    /// The links are released on a thread of their own (a TCX detach waits for RCU grace
    /// periods, ~10–30 ms per link): the receiver goes on meanwhile instead of delaying the
    /// attachment of new namespaces and devices by that much. [`Attacher::shutdown`] waits
    /// for every such thread.
    pub fn remove_namespace(&mut self, netns: NetnsId) -> Vec<DeviceCounters> {
        let mut last = Vec::new();
        if let Some(mut state) = self.namespaces.remove(&netns) {
            last = read_ns_counters(&mut state, now_unix_ns());
            for ifindex in state.devices.keys() {
                self.devices.remove(&DeviceRef {
                    netns,
                    ifindex: *ifindex,
                });
            }
            let dir = state.dir.clone();
            let spawned = std::thread::Builder::new()
                .name("periscope-release".into())
                .spawn(move || release_namespace(state));
            match spawned {
                Ok(t) => self.releasing.push((netns, t)),
                Err(e) => {
                    // The closure was dropped, and the state in it: its links are closed.
                    // Pinned ones stay attached until their pins are gone.
                    tracing::warn!("cannot start a releasing thread ({e}); released in place");
                    if let Some(d) = &dir {
                        remove_pins(d);
                    }
                }
            }
            self.join_releasing(|_| false);
        }
        last
    }

    /// Removes the pin directories of namespaces this manager does not hold (namespaces that
    /// vanished while no agent ran, or left the scope).
    pub fn sweep_pins(&self) -> usize {
        let Some(root) = &self.opts.pin_root else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let keep =
                parse_pin_dir_name(&name).is_some_and(|id| self.namespaces.contains_key(&id));
            if !keep {
                tracing::info!(dir = %e.path().display(), "removing pins of a namespace that is gone");
                remove_pins(&e.path());
                removed += 1;
            }
        }
        removed
    }

    /// Releases (unpins) adopted links that no device claimed within `after` of their
    /// namespace being added: their devices are gone. Returns how many.
    pub fn release_unclaimed(&mut self, after: Duration) -> usize {
        let mut n = 0;
        for state in self.namespaces.values_mut() {
            if state.adopted.is_empty() || state.added_at.elapsed() < after {
                continue;
            }
            for (name, link) in state.adopted.drain() {
                tracing::info!(
                    netns = state_name(&state.ns),
                    pin = name,
                    "releasing a pinned link no device claimed"
                );
                if let Err(e) = link.unpin() {
                    tracing::debug!("unpinning {name}: {e}");
                }
                n += 1;
            }
        }
        n
    }

    /// Reads every ring buffer; calls `f` per decoded record. Returns how many were read.
    pub fn drain(&mut self, f: &mut dyn FnMut(PacketEvent)) -> usize {
        self.drain_with(f, &mut Vec::new())
    }

    fn drain_with(
        &mut self,
        f: &mut dyn FnMut(PacketEvent),
        dns: &mut Vec<periscope_pipeline::model::DnsEvent>,
    ) -> usize {
        if self.clock_at.elapsed() > Duration::from_secs(5) {
            self.clock = BootClock::now();
            self.clock_at = Instant::now();
        }
        let mut n = 0;
        for state in self.namespaces.values_mut() {
            while let Some(item) = state.ring.next() {
                if item.first() == Some(&PERISCOPE_RECORD_BURST) {
                    match decode_burst(&item, &self.clock) {
                        Ok(b) => self.bursts.push(b),
                        Err(e) => {
                            if self.stats.decode_errors == 0 {
                                tracing::error!("undecodable burst record: {e}");
                            }
                            self.stats.decode_errors += 1;
                        }
                    }
                    continue;
                }
                if is_dns_record(&item) {
                    match decode_dns(&item, &self.clock, &self.dns) {
                        Ok(Some(d)) => dns.push(d),
                        Ok(None) => {}
                        Err(e) => {
                            if self.dns_errors == 0 {
                                tracing::warn!("DNS record: {e} (first of its kind; all are counted as errors)");
                            }
                            self.dns_errors += 1;
                        }
                    }
                    continue;
                }
                match decode_packet(&item, &self.clock) {
                    Ok(ev) => {
                        n += 1;
                        *state
                            .delivered
                            .entry((ev.device.ifindex, ev.direction, ev.transport))
                            .or_default() += 1;
                        f(ev);
                    }
                    Err(e) => {
                        if self.stats.decode_errors == 0 {
                            tracing::error!("undecodable packet record: {e}");
                        }
                        self.stats.decode_errors += 1;
                    }
                }
            }
        }
        n
    }

    /// The burst reports (one CPU's view each) read by [`Attacher::drain`] since the last call.
    pub fn take_bursts(&mut self) -> Vec<BurstEvent> {
        std::mem::take(&mut self.bursts)
    }

    /// Burst records lost to full ring buffers and packets the burst detector could not
    /// check (its state table full), since the last call, over the namespaces this process
    /// loaded (adopted pinned instances are not read).
    pub fn take_burst_losses(&mut self) -> (u64, u64) {
        let mut total = (0, 0);
        for state in self.namespaces.values() {
            let Programs::Fresh(bpf) = &state.programs else {
                continue;
            };
            let Some(map) = bpf.map(names::BURST_STATS) else {
                continue;
            };
            let Ok(arr) = PerCpuArray::<&MapData, crate::shared::ebpf::BurstStats>::try_from(map)
            else {
                continue;
            };
            if let Ok(per_cpu) = arr.get(&0, 0) {
                for s in per_cpu.iter() {
                    total.0 += s.records_lost;
                    total.1 += s.state_full;
                }
            }
        }
        let new = (
            total.0.saturating_sub(self.burst_losses_seen.0),
            total.1.saturating_sub(self.burst_losses_seen.1),
        );
        self.burst_losses_seen = total;
        new
    }

    /// Exact totals per device, direction and transport, and the records lost since the last
    /// call (over every namespace).
    pub fn read_counters(&mut self) -> (Vec<DeviceCounters>, u64) {
        let now = now_unix_ns();
        let mut out = Vec::new();
        let mut new_losses = 0;
        for state in self.namespaces.values_mut() {
            out.extend(read_ns_counters(state, now));
            if let Ok(per_cpu) = state.stats.get(&0, 0) {
                let total = sum(&per_cpu, |a, b| a.add(b)).records_lost;
                new_losses += total.saturating_sub(state.lost_seen);
                state.lost_seen = total;
            }
        }
        (out, new_losses)
    }

    /// Stops: without pins every link is detached and every program unloaded; with pins the
    /// links stay attached and counting.
    pub fn shutdown(mut self) {
        // Device names stay in the table: downstream stages flush after receivers stop.
        self.namespaces.clear();
        // Namespaces removed earlier, and instances loaded ahead: gone when this returns.
        self.join_releasing(|_| true);
        self.preloaded = None;
    }
}

/// Detaches (and unpins) every link of a removed namespace, removes its pins, and drops its
/// programs and maps.
fn release_namespace(mut state: NsState) {
    for (_, dev) in state.devices.drain() {
        release(dev);
    }
    if let Some(d) = &state.dir {
        remove_pins(d);
    }
}

fn state_name(ns: &Namespace) -> String {
    ns.name
        .clone()
        .unwrap_or_else(|| ns.path.display().to_string())
}

fn release(dev: DevState) {
    for (_, link) in dev.links {
        match link {
            HeldLink::Owned(l) => drop(l),
            HeldLink::Pinned(p) => {
                // Removing the pin drops the kernel's reference; closing ours detaches.
                if let Err(e) = p.unpin() {
                    tracing::debug!("unpinning a link: {e}");
                }
            }
        }
    }
}

fn remove_pins(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "removing pins: {e}");
        }
    }
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn read_ns_counters(state: &mut NsState, now: u64) -> Vec<DeviceCounters> {
    let mut agg: HashMap<(u32, Direction, Transport), DeviceCounters> = HashMap::new();
    for kv in state.counters.iter() {
        let Ok((key, per_cpu)) = kv else { continue };
        let c = sum(&per_cpu, |a, b| a.add(b));
        let direction = match key.direction {
            PERISCOPE_DIR_INGRESS => Direction::Ingress,
            PERISCOPE_DIR_EGRESS => Direction::Egress,
            _ => continue,
        };
        let transport = Transport::from_ip_protocol(key.l4_proto);
        let e = agg
            .entry((key.ifindex, direction, transport))
            .or_insert_with(|| DeviceCounters {
                timestamp_ns: now,
                device: DeviceRef {
                    netns: NetnsId {
                        inode: key.netns_inode,
                        cookie: key.netns_cookie,
                    },
                    ifindex: key.ifindex,
                },
                direction,
                transport,
                ..DeviceCounters::default()
            });
        e.packets += c.packets;
        e.bytes += c.bytes;
        e.records_lost += c.records_lost;
    }
    for ((ifindex, direction, transport), c) in agg.iter_mut() {
        c.records_delivered = state
            .delivered
            .get(&(*ifindex, *direction, *transport))
            .copied()
            .unwrap_or(0);
    }
    let mut v: Vec<_> = agg.into_values().collect();
    v.sort_by_key(|c| (c.device.ifindex, c.direction, c.transport));
    v
}

/// Loads (and pins, with pins) the TCX ingress program devices fall back to.
fn ensure_fallback_loaded(programs: &mut Programs, dir: Option<&Path>) -> anyhow::Result<()> {
    match programs {
        Programs::Fresh(bpf) => {
            let p: &mut SchedClassifier = bpf
                .program_mut(names::TC_INGRESS)
                .ok_or_else(|| anyhow::anyhow!("no program {}", names::TC_INGRESS))?
                .try_into()?;
            if p.fd().is_err() {
                p.load()
                    .map_err(|e| anyhow::anyhow!("loading {}: {}", names::TC_INGRESS, chain(&e)))?;
                if let Some(d) = dir {
                    let path = d.join(format!("prog-{}", Hook::TcxIngress.name()));
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
enum ProgRef<'a> {
    Xdp(&'a mut Xdp),
    Tc(&'a mut SchedClassifier),
}

/// Mutable references to every loaded program at once (so that hooks attach in parallel).
fn program_refs(programs: &mut Programs) -> anyhow::Result<HashMap<Hook, ProgRef<'_>>> {
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

type AttachResult = Result<FdLink, Box<dyn std::error::Error + Send + Sync>>;

/// Attaches each job on its own thread inside the namespace of `ns`; returns (hook, result,
/// fallback = false, why = None) per job.
fn attach_parallel(
    ns: &File,
    jobs: Vec<(Hook, ProgRef<'_>)>,
    ifindex: u32,
    name: &str,
) -> Vec<(Hook, AttachResult, bool, Option<String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(hook, prog)| {
                let h = s.spawn(move || -> AttachResult {
                    enter(ns)?;
                    attach_one(prog, hook, ifindex, name)
                });
                (hook, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(hook, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err("the attach thread panicked".into()));
                (hook, r, false, None)
            })
            .collect()
    })
}

/// Moves the calling thread into the namespace of `ns` (an nsfs file).
fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: a valid nsfs fd; setns changes only the calling thread, a short-lived one.
    let rc = unsafe { libc::setns(ns.as_fd().as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns: {e}")));
    }
    Ok(())
}

/// Attaches one hook (the calling thread is in the device's namespace).
fn attach_one(prog: ProgRef<'_>, hook: Hook, ifindex: u32, name: &str) -> AttachResult {
    match prog {
        ProgRef::Xdp(prog) => {
            let id = prog.attach_to_if_index(ifindex, XdpMode::default())?;
            let link = prog.take_link(id)?;
            // aya falls back to a netlink attachment when link creation fails with EINVAL:
            // that cannot be pinned nor resist `ip link set dev X xdp off`. Undo it.
            if format!("{link:?}").contains("NlLink") {
                let _ = link.detach();
                return Err(
                    "the kernel refused an XDP bpf_link (aya fell back to netlink, \
                            which periscope does not use); detached again"
                        .into(),
                );
            }
            Ok(FdLink::try_from(link)?)
        }
        ProgRef::Tc(prog) => {
            let attach_type = if hook == Hook::TcxIngress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            // First in the chain: no other program's verdict can hide packets from us.
            let id = prog.attach_with_options(
                name,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )?;
            let link = prog.take_link(id)?;
            Ok(FdLink::try_from(link)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_names_round_trip() {
        let id = NetnsId {
            inode: 4026532000,
            cookie: 77,
        };
        assert_eq!(parse_pin_dir_name(&pin_dir_name(id)), Some(id));
        assert_eq!(parse_pin_dir_name("junk"), None);
        assert_eq!(link_pin_name(Hook::TcxEgress, 3), "link-tcx-egress-3");
    }
}

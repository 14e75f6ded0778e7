//! The attachment manager ([`Attacher`]): per network namespace an instance of the packet
//! object ([`super::instance`]), optionally pinned or adopted from pins ([`super::pins`]), and
//! bpf_links on the devices in it; per receiver the maps every instance shares
//! ([`super::shared_maps`]) and the reading of them ([`super::read`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aya::{Ebpf, EbpfLoader};

use periscope_pipeline::devices::{
    DeviceInfo, DevicePeer, DeviceTable, NamespaceInfo, NamespaceTable,
};
use periscope_pipeline::model::{
    BurstEvent, DeviceCounters, DeviceRef, FlowCounters, NetnsId, PacketEvent,
};
use periscope_pipeline::telemetry::instruments::Counter;

use super::defunct::Defunct;
use super::instance::{
    chain, ensure_fallback_loaded, load_instance, new_loader, program_refs, set_netns, Hook,
    Preloaded, ProgRef, Programs,
};
use super::link::{attach_parallel, io_errno};
use super::locality::LocalAddrs;
use super::options::{InterfaceFilter, RecordOptions};
use super::outcome::{device_name, errno_says_gone, AttachError, FailureReason};
use super::pins::{self, link_pin_name, parse_pin_dir_name, pin_dir_name, remove_pins};
use super::read::{Decoded, Reader, Scope};
use super::shared_maps::{SharedMaps, PINNED_MAPS_DIR};
use super::state::{DevState, HeldLink, NsState};
use crate::shared::ebpf::records::PERISCOPE_CFG_LOCALITY;
use crate::shared::ebpf::BootClock;
use crate::shared::netns::{Device, Namespace, NetnsHandle};

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
    /// Ring buffer bytes (one ring buffer for every namespace).
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
    /// Devices that went away while being attached (not failures).
    pub gone: u64,
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
    /// The device went away (deleted, moved to another namespace) while it was attached:
    /// whatever was attached is released with its removal, which follows.
    Gone,
}

/// The attachment manager. Not thread-safe: one receiver thread drives it.
pub struct Attacher {
    pub(super) opts: AttachOptions,
    pub(super) devices: DeviceTable,
    /// Names of the namespaces, captured at discovery (and when a bind mount names one later).
    pub(super) namespace_names: NamespaceTable,
    pub(super) namespaces: HashMap<NetnsId, NsState>,
    pub(super) clock: BootClock,
    clock_at: Instant,
    /// One loader for every namespace loaded on demand: `EbpfLoader::new()` parses the
    /// kernel's BTF (~30 ms), so reusing it makes a namespace's load that much cheaper. The
    /// configuration global is the same for every namespace (the namespace's id is set after
    /// the load, see [`set_netns`]).
    loader: EbpfLoader<'static>,
    /// Where the maps every instance shares are pinned.
    maps: SharedMaps,
    /// The reader of the shared maps.
    pub(super) reader: Reader,
    /// The instance loaded to make the shared maps, for the first namespace.
    spare: Option<Ebpf>,
    /// Instances loaded ahead ([`Attacher::preload`]).
    preloaded: Option<Preloaded>,
    /// The thread releasing the links of removed devices and namespaces (TCX detaches wait
    /// for RCU grace periods), so that the receiver goes on attaching meanwhile.
    pub(super) defunct: Defunct,
    /// Links released so far (self-telemetry).
    links_released: Counter,
    stats: AttachStats,
    /// Where question names of DNS records are interned.
    dns: periscope_pipeline::DnsTable,
    /// Burst reports and errors found while draining.
    decoded: Decoded,
    /// Last points of the flows of devices and namespaces that went away, for
    /// [`Attacher::take_last_flows`].
    pub(super) last_flows: Vec<FlowCounters>,
    /// The namespaces' addresses, for the programs' local/forwarded test and the flows'.
    local: LocalAddrs,
}

impl Attacher {
    /// A manager that registers the devices it attaches in `devices`. Loads a first instance
    /// to make the shared maps (unless an earlier run pinned them), before anything else may
    /// load one (two first loads would both try to pin them). Fails when they have nowhere to
    /// be pinned (no bpffs, and it cannot be mounted) or the object does not load.
    pub fn new(opts: AttachOptions, devices: DeviceTable) -> anyhow::Result<Attacher> {
        let links_released = Counter::default();
        let maps = SharedMaps::new(opts.pin_root.as_deref())?;
        let mut loader = new_loader(&opts.records, opts.ring_bytes, maps.dir());
        let spare = if maps.exist() {
            None
        } else {
            Some(load_instance(&mut loader, &load_hooks(&opts))?)
        };
        let mut reader = Reader::new(&maps)?;
        if let Some(flows) = opts.records.flows {
            reader = reader.with_flows(&maps, flows)?;
        }
        Ok(Attacher {
            devices,
            namespace_names: NamespaceTable::default(),
            namespaces: HashMap::new(),
            clock: BootClock::now(),
            clock_at: Instant::now(),
            loader,
            maps,
            reader,
            spare,
            preloaded: None,
            defunct: Defunct::start(links_released.clone()),
            links_released,
            opts,
            stats: AttachStats::default(),
            dns: periscope_pipeline::DnsTable::default(),
            decoded: Decoded::default(),
            last_flows: Vec::new(),
            local: LocalAddrs::default(),
        })
    }

    /// Sets the addresses of a namespace's devices (the watcher reports them when they
    /// change); an empty list forgets the namespace.
    pub fn set_addresses(&mut self, netns: NetnsId, addrs: &[std::net::IpAddr]) {
        let kernel = self.opts.records.flags & PERISCOPE_CFG_LOCALITY != 0;
        self.local.set(&self.maps, kernel, netns, addrs);
    }

    /// Classifies flows read from the kernel's flow table as the programs classify packets.
    fn classify_flows(&self, flows: &mut [FlowCounters]) {
        if self.opts.records.flags & PERISCOPE_CFG_LOCALITY == 0 {
            return; // `locality: false`: unknown, as the device counters
        }
        for f in flows {
            f.locality = self
                .local
                .classify(f.device.netns, f.direction, f.src_addr, f.dst_addr);
        }
    }

    /// Interns the question names of DNS records in `dns` (the pipeline's shared table).
    pub fn with_dns(mut self, dns: periscope_pipeline::DnsTable) -> Attacher {
        self.dns = dns;
        self
    }

    /// Registers the namespaces it is given (their names and owners' cgroups) in `table`.
    pub fn with_namespaces(mut self, table: NamespaceTable) -> Attacher {
        self.namespace_names = table;
        self
    }

    /// DNS records (`always_emit_dns`) whose payload was not a readable DNS message.
    pub fn dns_errors(&self) -> u64 {
        self.decoded.dns_errors
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
                load_hooks(&self.opts),
                self.maps.dir().to_path_buf(),
            )
        });
    }

    /// Links released so far (of devices and namespaces that went away, and at stop).
    pub fn links_released(&self) -> u64 {
        self.links_released.get()
    }

    /// Counts released links in `counter` (the receiver's self-telemetry) from now on.
    pub fn with_links_released(mut self, counter: Counter) -> Attacher {
        counter.add(self.links_released.get());
        // The releasing thread is idle this early: restarted with the new counter.
        self.defunct = Defunct::start(counter.clone());
        self.links_released = counter;
        self
    }

    /// Devices with links now, over every namespace.
    pub fn devices_attached(&self) -> usize {
        self.namespaces.values().map(|s| s.devices.len()).sum()
    }

    /// What it did so far.
    pub fn stats(&self) -> AttachStats {
        AttachStats {
            namespaces: self.namespaces.len(),
            decode_errors: self.decoded.decode_errors,
            ..self.stats.clone()
        }
    }

    /// Whether devices may fall back to TCX ingress.
    fn has_fallback(&self) -> bool {
        has_fallback(&self.opts)
    }

    /// Loads the object for a namespace (or adopts its pins); returns the time it took and
    /// whether pins were adopted.
    pub fn add_namespace(&mut self, ns: &Namespace) -> anyhow::Result<(Duration, bool)> {
        self.namespace_names.insert(
            ns.id,
            NamespaceInfo {
                name: ns.name.clone(),
                cgroup: ns.cgroup.clone(),
                cgroup_late: ns.cgroup_late,
            },
        );
        if let Some(state) = self.namespaces.get_mut(&ns.id) {
            // Sent again: a name became known (a bind mount made after the namespace). Its
            // devices take it too.
            if state.ns.name != ns.name && ns.name.is_some() {
                state.ns.name.clone_from(&ns.name);
                for ifindex in state.devices.keys() {
                    let device = DeviceRef {
                        netns: ns.id,
                        ifindex: *ifindex,
                    };
                    if let Some(mut info) = self.devices.get(&device) {
                        info.netns_name.clone_from(&ns.name);
                        self.devices.insert(device, info);
                    }
                }
            }
            return Ok((Duration::ZERO, false));
        }
        let t = Instant::now();
        // Back in scope while its links are still being released: let that finish first (an
        // XDP slot is single).
        self.defunct.wait_namespace(ns.id);
        // Fails when the path now holds another namespace.
        let handle = NetnsHandle::open(ns)
            .map_err(|e| anyhow::anyhow!("opening namespace {}: {e}", ns.path.display()))?;
        let dir = self
            .opts
            .pin_root
            .as_ref()
            .map(|root| root.join(pin_dir_name(ns.id)));
        let adopted = match dir.as_deref().filter(|d| d.is_dir()) {
            Some(d) => {
                match pins::adopt(d, &self.opts.hooks, self.has_fallback(), self.maps.exist()) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!(
                            dir = %d.display(),
                            "pins of an earlier run are incomplete ({e:#}); removing them and \
                             attaching afresh"
                        );
                        remove_pins(d);
                        None
                    }
                }
            }
            None => None,
        };
        let adopted_any = adopted.is_some();
        let (programs, links) = match adopted {
            Some(a) => (a.programs, a.links),
            None => {
                let bpf = self.load(ns.id, dir.as_deref())?;
                (Programs::Fresh(Box::new(bpf)), HashMap::new())
            }
        };
        let state = NsState {
            ns: ns.clone(),
            handle,
            programs,
            dir,
            devices: HashMap::new(),
            adopted: links,
            added_at: Instant::now(),
        };
        self.namespaces.insert(ns.id, state);
        Ok((t.elapsed(), adopted_any))
    }

    /// A fresh instance for namespace `id` (a preloaded one if ready), pinned in `dir` if
    /// given.
    fn load(&mut self, id: NetnsId, dir: Option<&std::path::Path>) -> anyhow::Result<Ebpf> {
        let ready = self
            .spare
            .take()
            .or_else(|| self.preloaded.as_mut().and_then(Preloaded::take));
        let mut bpf = match ready {
            Some(bpf) => bpf,
            None => load_instance(&mut self.loader, &load_hooks(&self.opts))?,
        };
        set_netns(&mut bpf, id).map_err(|e| {
            anyhow::anyhow!("setting the namespace id of its programs: {}", chain(&e))
        })?;
        if let Some(d) = dir {
            pins::pin_instance(&mut bpf, d, &self.opts.hooks)?;
        }
        Ok(bpf)
    }

    /// Attaches to a device of a known namespace, if the interface filter takes it.
    pub fn add_device(&mut self, netns: NetnsId, dev: &Device) -> anyhow::Result<DeviceOutcome> {
        let attached = self
            .namespaces
            .get(&netns)
            .is_some_and(|s| s.devices.contains_key(&dev.ifindex));
        // A device already attached keeps its links when renamed, and its new name is taken.
        if !attached && !self.opts.interfaces.matches(&dev.name) {
            return Ok(DeviceOutcome::Skipped);
        }
        // Gone and back under the same ifindex while its old links are being let go of: wait,
        // and delete the old device's counters before the new one counts.
        if !attached {
            self.wait_released(netns, dev.ifindex);
            self.settle();
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
        let peer = dev.peer.map(|(netns, ifindex)| {
            let peer_ref = DeviceRef { netns, ifindex };
            DevicePeer {
                device: peer_ref,
                name: self.devices.get(&peer_ref).map(|i| i.name),
                netns_name: self.namespace_names.get(&netns).and_then(|n| n.name),
            }
        });
        let info = DeviceInfo {
            name: dev.name.clone(),
            netns_name: state.ns.name.clone(),
            peer,
            serves_peer: dev.serves_peer,
            loopback: dev.loopback,
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
            let handle: &NetnsHandle = handle;
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
                    Err(e) => errors.push((None, format!("TCX ingress fallback: {e:#}"))),
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
                                        errors.push((
                                            None,
                                            format!("pinning {}: {}", path.display(), chain(&e)),
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
                    Err(e) => {
                        errors.push((io_errno(e.as_ref()), format!("{}: {e:#}", hook.name())))
                    }
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
            let message = format!(
                "attaching to {} (ifindex {}) in {}: {}",
                dev.name,
                dev.ifindex,
                state_name(&state.ns),
                errors
                    .iter()
                    .map(|(_, m)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            // Deleted or moved away while we attached: its removal follows (and, for a move,
            // its appearance in the other namespace). Not a failure.
            let now_named = device_name(&state.handle, dev.ifindex);
            if errors.iter().all(|(e, _)| errno_says_gone(*e)) || now_named.is_none() {
                self.stats.gone += 1;
                tracing::debug!("{message} (the device went away meanwhile)");
                return Ok(DeviceOutcome::Gone);
            }
            // Renamed meanwhile (CNI plugins rename a device right after making or moving
            // it; TC hooks attach by name): what did attach is let go of, and the device is
            // attached whole when its rename is reported, which follows. Not a failure.
            if now_named.is_some_and(|n| n != dev.name) {
                if let Some(partial) = state.devices.remove(&dev.ifindex) {
                    self.defunct.device(netns, dev.ifindex, partial);
                }
                self.stats.gone += 1;
                tracing::debug!("{message} (the device was renamed meanwhile)");
                return Ok(DeviceOutcome::Gone);
            }
            self.stats.failed += errors.len() as u64;
            let reason = errors
                .iter()
                .map(|(e, _)| FailureReason::of_errno(*e))
                .find(|r| *r != FailureReason::Other)
                .unwrap_or(FailureReason::Other);
            return Err(AttachError { reason, message }.into());
        }
        Ok(DeviceOutcome::Attached {
            latency,
            adopted,
            fallback,
        })
    }

    /// Removes the pin directories of namespaces this manager does not hold (namespaces that
    /// vanished while no agent ran, or left the scope).
    pub fn sweep_pins(&mut self) -> usize {
        let Some(root) = &self.opts.pin_root else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == PINNED_MAPS_DIR {
                continue;
            }
            let keep =
                parse_pin_dir_name(&name).is_some_and(|id| self.namespaces.contains_key(&id));
            if !keep {
                tracing::info!(dir = %e.path().display(), "removing pins of a namespace that is gone");
                remove_pins(&e.path());
                removed += 1;
            }
        }
        // Counters an earlier run left of namespaces that are gone.
        let held = &self.namespaces;
        self.reader.forget(|n, _| !held.contains_key(&n));
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
        self.reader
            .drain(&self.clock, &self.dns, &mut self.decoded, f, dns)
    }

    /// The burst reports (one CPU's view each) read by [`Attacher::drain`] since the last call.
    pub fn take_bursts(&mut self) -> Vec<BurstEvent> {
        std::mem::take(&mut self.decoded.bursts)
    }

    /// Burst records lost to the full ring buffer and packets the burst detector could not
    /// check (its state table full), since the last call.
    pub fn take_burst_losses(&mut self) -> (u64, u64) {
        self.reader.new_burst_losses()
    }

    /// Exact totals per device, direction and transport, and the records lost since the last
    /// call (over every namespace).
    pub fn read_counters(&mut self) -> (Vec<DeviceCounters>, u64) {
        // Devices whose release is done get their counters deleted first; those still being
        // released sent their final counters already (a later point of them would count
        // again, and under a reused ifindex as the next device's).
        self.settle();
        let reader = &mut self.reader;
        // Namespaces that went away sent their final counters already (their keys go once
        // their links are released).
        let held = &self.namespaces;
        let keep = |n: NetnsId| held.contains_key(&n);
        let mut out = reader.counters(now_unix_ns(), Scope::Namespaces(&keep));
        out.retain(|c| !self.defunct.is_releasing(c.device.netns, c.device.ifindex));
        (out, reader.new_losses())
    }

    /// Stops: without pins every link is detached and every program unloaded; with pins the
    /// links stay attached and counting.
    pub fn shutdown(mut self) {
        // Device names stay in the table: downstream stages flush after receivers stop.
        for (_, state) in self.namespaces.drain() {
            self.defunct.namespace(state, false);
        }
        // Every release asked for, and instances loaded ahead: gone when this returns.
        drop(self.defunct);
        self.preloaded = None;
    }
}

impl Attacher {
    /// The flows (kernel flow tables) whose totals changed since the last call, and the last
    /// points of those that ended (idle), over every namespace; not of departing devices
    /// (their last points went out with their removal, [`Attacher::take_last_flows`]).
    pub fn read_flows(&mut self) -> Vec<FlowCounters> {
        self.settle();
        let now = now_unix_ns();
        let mut out = Vec::new();
        self.reader.flows(now, &mut out);
        // Namespaces and devices that went away sent their last points already.
        let (held, defunct) = (&self.namespaces, &self.defunct);
        out.retain(|f| {
            held.contains_key(&f.device.netns)
                && !defunct.is_releasing(f.device.netns, f.device.ifindex)
        });
        self.classify_flows(&mut out);
        out
    }

    /// The last points of the flows of devices and namespaces removed since the last call.
    pub fn take_last_flows(&mut self) -> Vec<FlowCounters> {
        let mut last = std::mem::take(&mut self.last_flows);
        self.classify_flows(&mut last);
        last
    }
}

/// Whether devices may fall back to TCX ingress.
fn has_fallback(opts: &AttachOptions) -> bool {
    let h = &opts.hooks;
    opts.tcx_fallback && h.contains(&Hook::Xdp) && !h.contains(&Hook::TcxIngress)
}

/// The programs an instance loads: those of the hooks, and the fallback's.
fn load_hooks(opts: &AttachOptions) -> Vec<Hook> {
    let mut hooks = opts.hooks.clone();
    if has_fallback(opts) {
        hooks.push(Hook::TcxIngress);
    }
    hooks
}

fn state_name(ns: &Namespace) -> String {
    ns.name
        .clone()
        .unwrap_or_else(|| ns.path.display().to_string())
}

pub(super) fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

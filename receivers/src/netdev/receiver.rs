//! The run loop shared by the `xdp` and `tcx` receivers: discovery events in, attachments
//! made and released, ring buffers polled on a timer, counters sent periodically.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver as Rx, RecvTimeoutError};

use periscope_pipeline::component::Receiver;
use periscope_pipeline::devices::{DeviceTable, NamespaceTable};
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::{DeviceCounters, Event};

use crate::shared::ebpf::records::{
    PERISCOPE_CFG_BURSTS, PERISCOPE_CFG_DNS, PERISCOPE_CFG_RECORDS,
};
use crate::shared::kernel;
use crate::shared::netns::{Discovery, NamespaceScope};

use super::attach::{AttachOptions, Attacher, DeviceOutcome};
use super::outcome::{failure_reason, FailureReason};
use super::telemetry::AttachTelemetry;

/// Where pins go: `<PIN_ROOT>/<receiver id>/<netns inode>-<netns cookie>/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/periscope";

/// How often an idle receiver looks at the stop signal (a flag): its only wake-up between two
/// reads of the counters when the programs write no records.
const STOP_CHECK: Duration = Duration::from_millis(200);

/// Where namespaces and devices come from.
pub enum DiscoverySource {
    /// The namespace watcher ([`crate::shared::netns::watch`]) with this scope.
    Watch(NamespaceScope),
    /// Events from elsewhere (tests, or a watcher shared by several receivers).
    Channel(Rx<Discovery>),
}

/// Timers and identity of a receiver.
#[derive(Clone, Debug)]
pub struct ReceiverOptions {
    /// The component id, for logs.
    pub id: String,
    /// How often the ring buffers are read.
    pub poll_interval: Duration,
    /// How often [`DeviceCounters`] are sent.
    pub counters_interval: Duration,
    /// After this long, pins of namespaces that were not (re)discovered are removed.
    pub sweep_after: Duration,
}

/// A built `xdp` or `tcx` receiver.
pub struct NetdevReceiver {
    opts: ReceiverOptions,
    attach: AttachOptions,
    devices: DeviceTable,
    namespaces: NamespaceTable,
    source: DiscoverySource,
    dns: periscope_pipeline::DnsTable,
}

impl NetdevReceiver {
    /// Interns the question names of DNS records in `dns` (the pipeline's shared table).
    pub fn with_dns(mut self, dns: periscope_pipeline::DnsTable) -> Self {
        self.dns = dns;
        self
    }

    /// A receiver that attaches per `attach` to what `source` reports.
    pub fn new(
        opts: ReceiverOptions,
        attach: AttachOptions,
        devices: DeviceTable,
        source: DiscoverySource,
    ) -> NetdevReceiver {
        NetdevReceiver {
            opts,
            attach,
            devices,
            namespaces: NamespaceTable::default(),
            source,
            dns: periscope_pipeline::DnsTable::default(),
        }
    }

    /// Registers the namespaces it observes (names, owners' cgroups) in `namespaces` (the
    /// pipeline's shared table), retired when they go away.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Takes namespaces and devices from `rx` instead of the watcher.
    pub fn with_discovery(mut self, rx: Rx<Discovery>) -> Self {
        self.source = DiscoverySource::Channel(rx);
        self
    }

    /// The checks `build` makes: the capabilities it `needs` ([`capability_needs`]), bpffs
    /// for pins, the pin directory.
    pub fn preflight(
        id: &str,
        pin_root: Option<&PathBuf>,
        needs: &[kernel::Need],
    ) -> anyhow::Result<()> {
        kernel::check(needs).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(root) = pin_root {
            kernel::ensure_bpffs().map_err(|e| anyhow::anyhow!("receiver `{id}`: {e}"))?;
            std::fs::create_dir_all(root).map_err(|e| {
                anyhow::anyhow!("receiver `{id}`: creating {}: {e}", root.display())
            })?;
        }
        Ok(())
    }
}

/// What attaching in `scope` needs: loading and attaching everywhere; entering namespaces
/// unless the only one is the agent's own; other processes' `/proc/PID/ns/net` where
/// namespaces are found through processes.
pub fn capability_needs(scope: &NamespaceScope) -> Vec<kernel::Need> {
    let mut needs = kernel::LOAD_AND_ATTACH.to_vec();
    let own = |e: &String| e == "host" || e == crate::shared::netns::HOST_PATH;
    let (enter, processes) = match scope {
        NamespaceScope::All | NamespaceScope::Cgroup(_) => (true, true),
        NamespaceScope::Listed(list) => (
            !list.iter().all(own),
            list.iter().any(|e| !own(e) && e.starts_with("/proc/")),
        ),
    };
    if enter {
        needs.push(kernel::NEED_ENTER_NAMESPACES);
    }
    if processes {
        needs.push(kernel::NEED_OTHER_PROCESSES);
    }
    needs
}

impl Receiver for NetdevReceiver {
    fn run(self: Box<Self>, output: &mut EventOutput, stop: &StopSignal) -> anyhow::Result<()> {
        let NetdevReceiver {
            opts,
            attach,
            devices,
            namespaces,
            source,
            dns,
        } = *self;
        let pinned = attach.pin_root.is_some();
        // Counters only (no packet, DNS or burst records): nothing to poll between two reads
        // of the counters.
        let writes = PERISCOPE_CFG_RECORDS | PERISCOPE_CFG_DNS | PERISCOPE_CFG_BURSTS;
        let poll_interval = if attach.records.flags & writes == 0 {
            opts.counters_interval
        } else {
            opts.poll_interval
        };
        let telemetry = AttachTelemetry::register(output.counters().instruments());
        let mut attacher = Attacher::new(attach, devices)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", opts.id))?
            .with_dns(dns)
            .with_namespaces(namespaces)
            .with_links_released(telemetry.released.clone());
        // New namespaces take an instance loaded ahead instead of waiting for a load.
        attacher.preload(super::PRELOADED);
        let (_watcher, rx) = match source {
            DiscoverySource::Channel(rx) => (None, rx),
            DiscoverySource::Watch(scope) => {
                let (tx, rx) = crossbeam_channel::unbounded();
                let w = crate::shared::netns::watch(scope, tx).map_err(|e| {
                    anyhow::anyhow!("{}: watching network namespaces: {e}", opts.id)
                })?;
                (Some(w), rx)
            }
        };
        let started = Instant::now();
        let mut swept = !pinned;
        let mut next_poll = Instant::now() + poll_interval;
        let mut next_counters = Instant::now() + opts.counters_interval;
        let mut batch = output.new_batch();
        let mut disconnected = false;
        let mut latencies: Vec<Duration> = Vec::new();
        loop {
            let now = Instant::now();
            let wait = next_poll.min(next_counters).saturating_duration_since(now);
            let got = if disconnected {
                stop.sleep(wait);
                None
            } else {
                match rx.recv_timeout(wait.min(STOP_CHECK)) {
                    Ok(d) => Some(d),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => {
                        disconnected = true;
                        None
                    }
                }
            };
            if let Some(d) = got {
                let mut ctx = Handling {
                    opts: &opts,
                    telemetry: &telemetry,
                    latencies: &mut latencies,
                    received: Instant::now(),
                };
                ctx.handle(&mut attacher, d, output, &mut batch);
                while let Ok(d) = rx.try_recv() {
                    ctx.received = Instant::now();
                    ctx.handle(&mut attacher, d, output, &mut batch);
                }
                telemetry.attached.set(attacher.devices_attached() as i64);
            }
            attacher.settle();
            let stopping = stop.is_raised();
            let now = Instant::now();
            if now >= next_poll || stopping {
                poll(&mut attacher, output, &mut batch);
                next_poll = now + poll_interval;
            }
            if now >= next_counters || stopping {
                // Records first, so counters never run behind the records sent before them.
                poll(&mut attacher, output, &mut batch);
                send_counters(&opts, &mut attacher, output, &mut batch);
                next_counters = now + opts.counters_interval;
                // What loads, and every collect of the processors and exporters (series rows,
                // each exporter's copy of a batch), freed: glibc keeps freed memory in its
                // heap until trimmed (bench-scale, 110 pods: 59 → 48 MiB RSS). One trim per
                // counters interval took 0.1–2.5 ms there.
                crate::shared::memory::release_free_memory();
            }
            if !swept && started.elapsed() >= opts.sweep_after {
                attacher.sweep_pins();
                swept = true;
            }
            if pinned {
                attacher.release_unclaimed(opts.sweep_after);
            }
            if stopping {
                break;
            }
        }
        output.send(batch);
        let stats = attacher.stats();
        if !latencies.is_empty() {
            latencies.sort();
            let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
            tracing::info!(
                receiver = %opts.id,
                "attach latency over {} devices: p50 {:?}, p99 {:?}",
                latencies.len(),
                p(0.5),
                p(0.99)
            );
        }
        tracing::info!(
            receiver = %opts.id,
            namespaces = stats.namespaces,
            attached = stats.attached,
            adopted = stats.adopted,
            xdp_fallbacks = stats.xdp_fallbacks,
            failed = stats.failed,
            "stopping ({})",
            if pinned {
                "pinned links stay attached and counting"
            } else {
                "detaching everything"
            }
        );
        attacher.shutdown();
        Ok(())
    }
}

/// What handling one discovery event needs besides the attacher and the output.
struct Handling<'a> {
    opts: &'a ReceiverOptions,
    telemetry: &'a AttachTelemetry,
    /// Attach latencies for the summary logged at stop (bounded: the first ones only).
    latencies: &'a mut Vec<Duration>,
    /// When the event was taken from the discovery channel.
    received: Instant,
}

/// Latencies kept for the summary at stop (the histogram has them all).
const LATENCIES_KEPT: usize = 100_000;

impl Handling<'_> {
    fn handle(
        &mut self,
        attacher: &mut Attacher,
        d: Discovery,
        output: &mut EventOutput,
        batch: &mut periscope_pipeline::model::EventBatch,
    ) {
        let opts = self.opts;
        match d {
            Discovery::NamespaceAdded(ns) => match attacher.add_namespace(&ns) {
                Ok((took, adopted)) => tracing::debug!(
                    receiver = %opts.id,
                    netns = %ns.path.display(),
                    "namespace {} in {took:?}",
                    if adopted { "adopted from pins" } else { "loaded" }
                ),
                Err(e) if !namespace_still_there(&ns) => tracing::debug!(
                    receiver = %opts.id,
                    netns = %ns.path.display(),
                    "namespace went away before it could be observed: {e:#}"
                ),
                Err(e) => {
                    output.counters().add_errors(1);
                    self.telemetry.failed(FailureReason::Namespace);
                    tracing::warn!(receiver = %opts.id, netns = %ns.path.display(), "cannot observe this namespace: {e:#}");
                }
            },
            Discovery::DeviceAdded { netns, device } => {
                match attacher.add_device(netns, &device) {
                    Ok(DeviceOutcome::Attached { latency, .. }) => {
                        self.telemetry.attached_after(self.received.elapsed());
                        if self.latencies.len() < LATENCIES_KEPT {
                            self.latencies.push(latency);
                        }
                    }
                    Ok(DeviceOutcome::Gone) => {} // logged at debug by the attacher
                    Ok(_) => {}
                    Err(e) => {
                        output.counters().add_errors(1);
                        self.telemetry.failed(failure_reason(&e));
                        tracing::warn!(receiver = %opts.id, "{e:#}");
                    }
                }
            }
            Discovery::Addresses { netns, addresses } => {
                attacher.set_addresses(netns, &addresses);
            }
            d => handle_removal(attacher, d, output, batch),
        }
    }
}

/// Whether a namespace that could not be opened is still the one at its path (else it went
/// away: not an error).
fn namespace_still_there(ns: &crate::shared::netns::Namespace) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(&ns.path).is_ok_and(|m| m.ino() == u64::from(ns.id.inode))
}

fn handle_removal(
    attacher: &mut Attacher,
    d: Discovery,
    output: &mut EventOutput,
    batch: &mut periscope_pipeline::model::EventBatch,
) {
    match d {
        Discovery::NamespaceAdded(_)
        | Discovery::DeviceAdded { .. }
        | Discovery::Addresses { .. } => {}
        Discovery::DeviceRemoved { netns, ifindex } => {
            // Its records first, then its final counters (see detach.rs).
            poll(attacher, output, batch);
            let last = attacher.remove_device(netns, ifindex);
            // Flows first: the device's last counters retire all its series.
            push_flows(output, batch, attacher.take_last_flows());
            push_counters(output, batch, last);
        }
        Discovery::NamespaceRemoved(netns) => {
            poll(attacher, output, batch);
            let last = attacher.remove_namespace(netns);
            attacher.set_addresses(netns, &[]);
            // Flows first: the device's last counters retire all its series.
            push_flows(output, batch, attacher.take_last_flows());
            push_counters(output, batch, last);
        }
    }
}

fn poll(
    attacher: &mut Attacher,
    output: &mut EventOutput,
    batch: &mut periscope_pipeline::model::EventBatch,
) {
    let dns_errors = attacher.dns_errors();
    attacher.drain_events(&mut |ev| {
        batch.push(ev);
        if batch.is_full() {
            let fresh = output.new_batch();
            output.send(std::mem::replace(batch, fresh));
        }
    });
    output
        .counters()
        .add_errors(attacher.dns_errors() - dns_errors);
    for b in attacher.take_bursts() {
        batch.push(Event::Burst(b));
        if batch.is_full() {
            output.send(std::mem::replace(batch, output.new_batch()));
        }
    }
    if !batch.is_empty() {
        output.send(std::mem::replace(batch, output.new_batch()));
    }
}

fn send_counters(
    opts: &ReceiverOptions,
    attacher: &mut Attacher,
    output: &mut EventOutput,
    batch: &mut periscope_pipeline::model::EventBatch,
) {
    let (counters, lost) = attacher.read_counters();
    if lost > 0 {
        output.counters().add_dropped(lost);
        tracing::warn!(
            receiver = %opts.id,
            "{lost} packet records lost to full ring buffers (packets still counted exactly; \
             raise ring_buffer_size, lower poll_interval, or sample)"
        );
    }
    push_counters(output, batch, counters);
    push_flows(output, batch, attacher.read_flows());
    let (bursts_lost, unchecked) = attacher.take_burst_losses();
    if bursts_lost > 0 {
        output.counters().add_dropped(bursts_lost);
        tracing::warn!(
            receiver = %opts.id,
            "{bursts_lost} burst records lost to full ring buffers (raise ring_buffer_size or \
             lower poll_interval)"
        );
    }
    if unchecked > 0 {
        tracing::warn!(
            receiver = %opts.id,
            "{unchecked} packets not checked for bursts: the detector's state table (1024 \
             devices × directions × hooks) is full"
        );
    }
}

fn push_counters(
    output: &mut EventOutput,
    batch: &mut periscope_pipeline::model::EventBatch,
    counters: Vec<DeviceCounters>,
) {
    for c in counters {
        batch.push(Event::DeviceCounters(c));
        if batch.is_full() {
            output.send(std::mem::replace(batch, output.new_batch()));
        }
    }
    if !batch.is_empty() {
        output.send(std::mem::replace(batch, output.new_batch()));
    }
}

fn push_flows(
    output: &mut EventOutput,
    batch: &mut periscope_pipeline::model::EventBatch,
    flows: Vec<periscope_pipeline::model::FlowCounters>,
) {
    for f in flows {
        batch.push(Event::FlowCounters(f));
        if batch.is_full() {
            output.send(std::mem::replace(batch, output.new_batch()));
        }
    }
    if !batch.is_empty() {
        output.send(std::mem::replace(batch, output.new_batch()));
    }
}

#[cfg(test)]
mod capability_tests {
    use super::*;

    fn caps(scope: NamespaceScope) -> Vec<&'static str> {
        capability_needs(&scope)
            .iter()
            .map(|n| n.capability.name)
            .collect()
    }

    #[test]
    fn needs_follow_the_namespaces_measured() {
        let hooks = ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"];
        let listed = |l: &[&str]| NamespaceScope::Listed(l.iter().map(|s| s.to_string()).collect());
        assert_eq!(caps(listed(&["host"])), hooks);
        assert_eq!(caps(listed(&["host", "/proc/self/ns/net"])), hooks);
        let enter = [&hooks[..], &["CAP_SYS_ADMIN"]].concat();
        assert_eq!(caps(listed(&["host", "pod-a"])), enter);
        assert_eq!(caps(listed(&["/run/netns/pod-b"])), enter);
        let all = [&enter[..], &["CAP_SYS_PTRACE"]].concat();
        assert_eq!(caps(listed(&["/proc/42/ns/net"])), all);
        assert_eq!(caps(NamespaceScope::All), all);
        assert_eq!(caps(NamespaceScope::Cgroup("/sys/fs/cgroup/x".into())), all);
    }
}

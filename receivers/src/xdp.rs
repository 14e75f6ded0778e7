//! The `xdp` receiver: an XDP program (ingress, before the stack allocates an skb) on every
//! matching net_device of every matching network namespace, attached as namespaces and devices
//! appear, through bpf_links (optionally pinned).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Hook as KernelHook, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::config::ConfigDuration;

use crate::netdev::{
    default_counters_interval, default_poll_interval, default_ring_buffer_size,
    default_sample_rate, AttachOptions, BurstsConfig, DiscoverySource, EventsMode, FlowsConfig,
    Hook, InterfacesConfig, NamespacesConfig, NetdevReceiver, ReceiverOptions, Shared, PIN_ROOT,
};

/// Observes packets received by every net_device in every network namespace with an XDP
/// program: exact per-device, per-transport packet and byte counters in the kernel
/// (sent as device counters every `counters_interval`), and a packet record per packet (or
/// sampled, or none) read from a ring buffer. Devices whose XDP slot another program holds are
/// observed through TCX ingress instead (logged). Needs CAP_BPF, CAP_PERFMON and
/// CAP_NET_ADMIN; CAP_SYS_ADMIN too to enter namespaces other than the agent's own, and
/// CAP_SYS_PTRACE where namespaces are found through processes (`all`, `{cgroup: …}`):
/// measured, docs/deploy.md.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XdpConfig {
    /// Which network namespaces: `all` (default), a list of `/run/netns` names or nsfs paths
    /// (`host` for the host namespace), or `{cgroup: PATH}` for the namespaces of the processes
    /// in a cgroup v2 subtree.
    #[serde(default)]
    pub namespaces: NamespacesConfig,
    /// Which devices, by name: `{include: [globs], exclude: [globs]}`; every device by default.
    #[serde(default)]
    pub interfaces: InterfacesConfig,
    /// Packet records: `all` (one per packet, default), `sample` (1 in `sample_rate`) or `none`
    /// (counters only). Counters are exact in every mode.
    #[serde(default)]
    pub events: EventsMode,
    /// With `events: sample`: a record for 1 in this many packets (default 100).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// Write a record for every TCP/UDP packet from or to port 53 whatever `events` says, and
    /// for those with payload a DNS record (up to 512 bytes of it) that becomes a DNS event
    /// for the `dns` processor.
    #[serde(default)]
    pub always_emit_dns: bool,
    /// With `always_emit_dns`: ports that carry DNS besides 53 (at most 4, e.g. `[5353]`).
    #[serde(default)]
    pub dns_ports: Vec<u16>,
    /// Classify every packet as `local` (to or from its namespace's own addresses) or
    /// `forwarded` (routed or bridged through it), in the kernel: the exact counters and the
    /// records carry `periscope.traffic.locality`. Costs one hash lookup per IP packet (see
    /// docs/metrics.md, "Where traffic is").
    #[serde(default = "periscope_pipeline::config::default_true")]
    pub locality: bool,
    /// Pin links, programs and maps under /sys/fs/bpf/periscope/<id>/ so that they keep
    /// counting after the agent exits, cannot be detached from inside the namespace, and are
    /// adopted (not attached twice) by the next run. Without it, stopping detaches everything.
    #[serde(default)]
    pub pin: bool,
    /// Ring buffer size per namespace in bytes: a power of two from 4096 (default 1048576; a
    /// record takes 88 bytes).
    #[serde(default = "default_ring_buffer_size")]
    pub ring_buffer_size: u32,
    /// How often the ring buffers are read (records are written without wake-ups); default
    /// 10ms.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: ConfigDuration,
    /// How often the exact kernel counters are sent downstream (and once more at stop);
    /// default 10s.
    #[serde(default = "default_counters_interval")]
    pub counters_interval: ConfigDuration,
    /// Microburst detection in the kernel: `{enabled, bucket: 100us, window: 1ms,
    /// threshold_pps: 20000, threshold_bps, mode: fixed|adaptive, k: 4, baseline: 1s,
    /// end_ratio: 0.5}`; off by default. Bursts go downstream as burst events (for the `burst`
    /// processor).
    #[serde(default)]
    pub bursts: BurstsConfig,
    /// Per-flow (5-tuple) counters in the kernel: `{enabled, table_size: 16384, idle_timeout:
    /// 60s}`; off by default. Flows go downstream as flow counters every `counters_interval`
    /// (for the `flow` processor's `flow_attributes`), with no record per packet.
    #[serde(default)]
    pub flows: FlowsConfig,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            namespaces: NamespacesConfig::default(),
            interfaces: InterfacesConfig::default(),
            events: EventsMode::default(),
            sample_rate: default_sample_rate(),
            always_emit_dns: false,
            dns_ports: Vec::new(),
            locality: true,
            pin: false,
            ring_buffer_size: default_ring_buffer_size(),
            poll_interval: default_poll_interval(),
            counters_interval: default_counters_interval(),
            bursts: BurstsConfig::default(),
            flows: FlowsConfig::default(),
        }
    }
}

impl XdpConfig {
    /// The capabilities it needs for its `namespaces` (measured: `scripts/measure-caps`,
    /// docs/deploy.md).
    pub fn capabilities(&self) -> Vec<crate::shared::kernel::Need> {
        crate::netdev::capability_needs(&self.namespaces.scope())
    }

    fn shared(&self) -> Shared<'_> {
        Shared {
            namespaces: &self.namespaces,
            interfaces: &self.interfaces,
            events: self.events,
            sample_rate: self.sample_rate,
            always_emit_dns: self.always_emit_dns,
            dns_ports: &self.dns_ports,
            locality: self.locality,
            ring_buffer_size: self.ring_buffer_size,
            poll_interval: self.poll_interval,
            counters_interval: self.counters_interval,
            bursts: &self.bursts,
            flows: &self.flows,
        }
    }

    /// Builds the concrete receiver (tests feed it discovery events with
    /// [`NetdevReceiver::with_discovery`]).
    pub fn build_receiver(&self, ctx: &BuildContext) -> anyhow::Result<NetdevReceiver> {
        let id = ctx.id.to_string();
        let pin_root = self.pin.then(|| pin_root(&id));
        NetdevReceiver::preflight(&id, pin_root.as_ref(), &self.capabilities())?;
        let shared = self.shared();
        Ok(NetdevReceiver::new(
            ReceiverOptions {
                id,
                poll_interval: self.poll_interval.0,
                counters_interval: self.counters_interval.0,
                sweep_after: Duration::from_secs(5),
            },
            AttachOptions {
                hooks: vec![Hook::Xdp],
                tcx_fallback: true,
                records: shared.records(),
                ring_bytes: self.ring_buffer_size,
                pin_root,
                interfaces: self.interfaces.filter()?,
            },
            ctx.devices.clone(),
            DiscoverySource::Watch(self.namespaces.scope()),
        )
        .with_dns(ctx.dns.clone())
        .with_namespaces(ctx.namespaces.clone()))
    }
}

/// `/sys/fs/bpf/periscope/<id>` with `/` in the id made `_`.
pub(crate) fn pin_root(id: &str) -> PathBuf {
    PathBuf::from(PIN_ROOT).join(id.replace('/', "_"))
}

impl ComponentConfig for XdpConfig {
    const TYPE: &'static str = "xdp";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut errors = Vec::new();
        self.shared().validate(&mut errors);
        Invalid::all(errors)
    }
}

impl ReceiverConfig for XdpConfig {
    // Falls back to TCX ingress where a device's XDP slot is taken.
    fn required_hooks(&self) -> &'static [KernelHook] {
        &[
            KernelHook::KernelBtf,
            KernelHook::RingBuffer,
            KernelHook::Xdp,
            KernelHook::TcClassifier,
            KernelHook::Tcx,
        ]
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(self.build_receiver(ctx)?))
    }
}

//! The `sockops` receiver: the TCP lifecycle of every socket in a cgroup subtree (the cgroup v2
//! root by default: every socket of every namespace) — connect, established, RTT samples,
//! retransmits, state changes, close — with the client's process.

use std::path::PathBuf;

use aya::programs::{CgroupAttachMode, SockOps};
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Hook, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};

use crate::shared::ebpf::{embedded_object, Object, SocketConfig};
use crate::shared::kernel;
use crate::socket::{
    default_cgroup, default_poll_interval, default_ring_buffer_size, describe, load_object,
    open_cgroup, preflight, validate, DropReasons, SocketReceiver, SocketReceiverOptions,
};

/// `ebpf/sockops.bpf.c`.
const OBJECT: Object = embedded_object!("sockops");

/// Observes every TCP connection of a cgroup subtree with a sockops program: a socket event
/// at connect (with the calling process), at establishment on either side (with the connect
/// latency on the client), for RTT samples (at most one per socket per `rtt_interval`), for
/// each retransmission and state change, and at close (bytes sent/acked/received, total
/// retransmits, smoothed RTT). Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (measured, docs/deploy.md).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SockopsConfig {
    /// The cgroup v2 directory to attach to; its whole subtree is observed. `root` (default)
    /// is the host's cgroup v2 root, wherever it is mounted: every socket on the host, in
    /// every network namespace.
    #[serde(default = "default_cgroup")]
    pub cgroup: PathBuf,
    /// At most one RTT record per socket per interval (default 1s; 0s: none, the RTT still
    /// comes with established and close).
    #[serde(default = "default_rtt_interval")]
    pub rtt_interval: ConfigDuration,
    /// Ring buffer size in bytes: a power of two from 4096 (default 4194304; a record takes
    /// 168 bytes).
    #[serde(default = "default_ring_buffer_size")]
    pub ring_buffer_size: u32,
    /// While records come, how often the ring buffer is read (in batches); an idle ring
    /// wakes the reader on its first record instead (default 50ms).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: PositiveDuration,
}

fn default_rtt_interval() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}

impl Default for SockopsConfig {
    fn default() -> Self {
        SockopsConfig {
            cgroup: default_cgroup(),
            rtt_interval: default_rtt_interval(),
            ring_buffer_size: default_ring_buffer_size(),
            poll_interval: default_poll_interval(),
        }
    }
}

impl ComponentConfig for SockopsConfig {
    const TYPE: &'static str = "sockops";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        validate(Some(&self.cgroup), Some(self.ring_buffer_size))
    }
}

impl SockopsConfig {
    /// The capabilities it needs (measured: `scripts/measure-caps`, docs/deploy.md).
    pub fn capabilities(&self) -> Vec<kernel::Need> {
        kernel::LOAD_AND_ATTACH.to_vec()
    }

    /// Loads and attaches the program; the receiver that reads it.
    pub fn build_receiver(&self, id: &str) -> anyhow::Result<SocketReceiver> {
        preflight(&self.capabilities())?;
        let (cgroup, cgroup_path) = open_cgroup(&self.cgroup)?;
        let config = SocketConfig {
            rtt_interval_ns: u64::try_from(self.rtt_interval.0.as_nanos()).unwrap_or(u64::MAX),
            flags: 0,
            _pad: 0,
        };
        let mut ebpf = load_object(OBJECT, Some(&config), Some(self.ring_buffer_size))?;
        let prog: &mut SockOps = ebpf
            .program_mut("periscope_sockops")
            .ok_or_else(|| anyhow::anyhow!("sockops.bpf.o has no periscope_sockops"))?
            .try_into()?;
        prog.load()
            .map_err(|e| anyhow::anyhow!("loading the sockops program: {}", describe(&e)))?;
        prog.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| {
                anyhow::anyhow!(
                    "attaching sockops to {}: {}",
                    cgroup_path.display(),
                    describe(&e)
                )
            })?;
        tracing::info!(receiver = %id, cgroup = %cgroup_path.display(), "sockops attached");
        SocketReceiver::new(
            SocketReceiverOptions {
                id: id.to_string(),
                poll_interval: self.poll_interval.get(),
                counters_interval: std::time::Duration::from_secs(10),
                interfaces: None,
            },
            ebpf,
            Some(cgroup),
            DropReasons::default(),
        )
    }
}

impl ReceiverConfig for SockopsConfig {
    fn required_hooks(&self) -> &'static [Hook] {
        &[Hook::KernelBtf, Hook::RingBuffer, Hook::SockOps]
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(self.build_receiver(&ctx.id.to_string())?))
    }
}

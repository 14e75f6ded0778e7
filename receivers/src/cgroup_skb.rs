//! The `cgroup_skb` receiver: IP packets and bytes per cgroup, direction and protocol,
//! counted in the kernel at the cgroup_skb ingress and egress hooks.

use std::path::PathBuf;

use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Hook, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::config::PositiveDuration;

use crate::shared::ebpf::{embedded_object, Object};
use crate::shared::kernel;
use crate::socket::{
    default_cgroup, describe, load_object, open_cgroup, preflight, validate, DropReasons,
    SocketReceiver, SocketReceiverOptions,
};

/// `ebpf/cgroup_skb.bpf.c`.
const OBJECT: Object = embedded_object!("cgroup_skb");

/// Counts IP packets and bytes (the IP packet's length, no L2 header) per cgroup, direction
/// and IP protocol at the cgroup_skb ingress and egress hooks of a cgroup subtree: a
/// per-container count that holds whatever namespace or device the traffic uses. Sends the
/// exact cumulative counters every `counters_interval`; never filters. Needs CAP_BPF and CAP_NET_ADMIN (docs/deploy.md).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CgroupSkbConfig {
    /// The cgroup v2 directory to attach to; its whole subtree is counted, each cgroup on its
    /// own. `root` (default) is the host's cgroup v2 root, wherever it is mounted.
    #[serde(default = "default_cgroup")]
    pub cgroup: PathBuf,
    /// How often the counters are sent downstream (and once more at stop); default 10s.
    #[serde(default = "default_counters_interval")]
    pub counters_interval: PositiveDuration,
}

fn default_counters_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}

impl Default for CgroupSkbConfig {
    fn default() -> Self {
        CgroupSkbConfig {
            cgroup: default_cgroup(),
            counters_interval: default_counters_interval(),
        }
    }
}

impl ComponentConfig for CgroupSkbConfig {
    const TYPE: &'static str = "cgroup_skb";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        validate(Some(&self.cgroup), None)
    }
}

impl CgroupSkbConfig {
    /// The capabilities it needs (measured: `scripts/measure-caps`, docs/deploy.md).
    pub fn capabilities(&self) -> Vec<kernel::Need> {
        vec![kernel::NEED_BPF, kernel::NEED_NET_ADMIN]
    }

    /// Loads and attaches both programs; the receiver that reads their counters.
    pub fn build_receiver(&self, id: &str) -> anyhow::Result<SocketReceiver> {
        preflight(&self.capabilities())?;
        let (cgroup, cgroup_path) = open_cgroup(&self.cgroup)?;
        let mut ebpf = load_object(OBJECT, None, None)?;
        for (name, kind) in [
            ("periscope_cgroup_ingress", CgroupSkbAttachType::Ingress),
            ("periscope_cgroup_egress", CgroupSkbAttachType::Egress),
        ] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow::anyhow!("cgroup_skb.bpf.o has no {name}"))?
                .try_into()?;
            prog.load()
                .map_err(|e| anyhow::anyhow!("loading {name}: {}", describe(&e)))?;
            prog.attach(&cgroup, kind, CgroupAttachMode::Single)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "attaching {name} to {}: {}",
                        cgroup_path.display(),
                        describe(&e)
                    )
                })?;
        }
        tracing::info!(receiver = %id, cgroup = %cgroup_path.display(), "cgroup_skb attached (ingress, egress)");
        SocketReceiver::new(
            SocketReceiverOptions {
                id: id.to_string(),
                poll_interval: std::time::Duration::from_millis(100),
                counters_interval: self.counters_interval.get(),
                interfaces: None,
            },
            ebpf,
            Some(cgroup),
            DropReasons::default(),
        )
    }
}

impl ReceiverConfig for CgroupSkbConfig {
    fn required_hooks(&self) -> &'static [Hook] {
        &[Hook::CgroupSkb]
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(self.build_receiver(&ctx.id.to_string())?))
    }
}

//! The `sk_msg` receiver: application messages of established TCP sockets, sent (sk_msg) and
//! received (sk_skb stream verdict), through a sockhash that a sockops program fills.

use std::num::NonZeroU32;
use std::path::PathBuf;

use aya::maps::SockHash;
use aya::programs::{CgroupAttachMode, SkMsg, SkSkb, SockOps};
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Hook, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::config::PositiveDuration;

use crate::shared::ebpf::{embedded_object, names, Object, SocketConfig};
use crate::shared::kernel;
use crate::socket::{
    default_cgroup, default_poll_interval, default_ring_buffer_size, describe, open_cgroup,
    preflight, validate, DropReasons, SocketReceiver, SocketReceiverOptions,
};

/// `ebpf/sk_msg.bpf.c`.
const OBJECT: Object = embedded_object!("sk_msg");

/// Records each message an application sends on an established TCP socket (size, time,
/// sending process) with an sk_msg program, and each chunk it receives with an sk_skb stream
/// verdict program; both pass the data unchanged. Opt-in: every observed socket moves onto
/// the kernel's sockmap (psock) path, which costs on every send and receive of that socket
/// (see docs/configuration.md). Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (docs/deploy.md).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SkMsgConfig {
    /// The cgroup v2 directory whose sockets are observed; `root` (default) is the host's
    /// cgroup v2 root.
    #[serde(default = "default_cgroup")]
    pub cgroup: PathBuf,
    /// Also record received data (sk_skb stream verdict); default true.
    #[serde(default = "periscope_pipeline::config::default_true")]
    pub receive: bool,
    /// Most sockets observed at once (sockhash entries; default 65536). Sockets past it are
    /// not observed and are counted as dropped.
    #[serde(default = "default_max_sockets")]
    pub max_sockets: NonZeroU32,
    /// Ring buffer size in bytes: a power of two from 4096 (default 4194304).
    #[serde(default = "default_ring_buffer_size")]
    pub ring_buffer_size: u32,
    /// While records come, how often the ring buffer is read (in batches); an idle ring
    /// wakes the reader on its first record instead (default 50ms).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: PositiveDuration,
}

fn default_max_sockets() -> NonZeroU32 {
    const { NonZeroU32::new(65536).unwrap() }
}

impl Default for SkMsgConfig {
    fn default() -> Self {
        SkMsgConfig {
            cgroup: default_cgroup(),
            receive: true,
            max_sockets: default_max_sockets(),
            ring_buffer_size: default_ring_buffer_size(),
            poll_interval: default_poll_interval(),
        }
    }
}

impl ComponentConfig for SkMsgConfig {
    const TYPE: &'static str = "sk_msg";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        validate(Some(&self.cgroup), Some(self.ring_buffer_size))
    }
}

impl SkMsgConfig {
    /// The capabilities it needs (measured: `scripts/measure-caps`, docs/deploy.md).
    pub fn capabilities(&self) -> Vec<kernel::Need> {
        kernel::LOAD_AND_ATTACH.to_vec()
    }

    /// Loads and attaches the programs; the receiver that reads them.
    pub fn build_receiver(&self, id: &str) -> anyhow::Result<SocketReceiver> {
        preflight(&self.capabilities())?;
        let (cgroup, cgroup_path) = open_cgroup(&self.cgroup)?;
        let socket_config = SocketConfig::default();
        let mut ebpf = {
            let mut loader = aya::EbpfLoader::new();
            loader
                .map_max_entries(names::EVENTS, self.ring_buffer_size)
                .map_max_entries(names::SOCKHASH, self.max_sockets.get())
                .override_global(names::SOCKET_CONFIG, &socket_config, true);
            OBJECT.load(&mut loader)?
        };
        let hash: SockHash<_, u64> = SockHash::try_from(
            ebpf.map(names::SOCKHASH)
                .ok_or_else(|| anyhow::anyhow!("sk_msg.bpf.o has no {}", names::SOCKHASH))?,
        )?;
        let hash_fd = hash.fd().try_clone()?;
        let err =
            |what: &str, e: &dyn std::error::Error| anyhow::anyhow!("{what}: {}", describe(e));
        {
            let prog: &mut SkMsg = ebpf
                .program_mut("periscope_sk_msg")
                .ok_or_else(|| anyhow::anyhow!("sk_msg.bpf.o has no periscope_sk_msg"))?
                .try_into()?;
            prog.load()
                .map_err(|e| err("loading the sk_msg program", &e))?;
            prog.attach(&hash_fd)
                .map_err(|e| err("attaching sk_msg to the sockhash", &e))?;
        }
        if self.receive {
            let prog: &mut SkSkb = ebpf
                .program_mut("periscope_sk_skb")
                .ok_or_else(|| anyhow::anyhow!("sk_msg.bpf.o has no periscope_sk_skb"))?
                .try_into()?;
            prog.load()
                .map_err(|e| err("loading the sk_skb program", &e))?;
            prog.attach(&hash_fd)
                .map_err(|e| err("attaching sk_skb to the sockhash", &e))?;
        }
        {
            // Last: sockets enter the sockhash only once both programs are on it.
            let prog: &mut SockOps = ebpf
                .program_mut("periscope_sockmap_add")
                .ok_or_else(|| anyhow::anyhow!("sk_msg.bpf.o has no periscope_sockmap_add"))?
                .try_into()?;
            prog.load()
                .map_err(|e| err("loading the sockops program", &e))?;
            prog.attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|e| {
                    err(
                        &format!("attaching sockops to {}", cgroup_path.display()),
                        &e,
                    )
                })?;
        }
        tracing::info!(
            receiver = %id,
            cgroup = %cgroup_path.display(),
            receive = self.receive,
            "sk_msg attached (new TCP connections in the cgroup move onto the sockmap path)"
        );
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

impl ReceiverConfig for SkMsgConfig {
    fn required_hooks(&self) -> &'static [Hook] {
        &[
            Hook::KernelBtf,
            Hook::RingBuffer,
            Hook::SockOps,
            Hook::SkMsg,
            Hook::SkSkb,
        ]
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(self.build_receiver(&ctx.id.to_string())?))
    }
}

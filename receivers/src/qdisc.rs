//! The `qdisc` receiver: how long each packet waits in its device's transmit queue (the root
//! qdisc: enqueue → dequeue toward the driver), with the queue's backlog, and the packets
//! queueing disciplines drop — from the `qdisc:qdisc_enqueue`, `qdisc:qdisc_dequeue` and
//! `skb:kfree_skb` BTF tracepoints (`ebpf/qdisc.bpf.c`).
//!
//! Tracepoints are global: one attachment sees every device of every namespace, and each
//! record carries the device's namespace (inode and cookie, read from `dev->nd_net`) and
//! name. `interfaces` filters by name in user space. Devices without a queue (`noqueue`, the
//! default of veth, bridge and loopback devices) never enqueue: they cost nothing and have no
//! samples.

use std::num::NonZeroU32;

use aya::programs::BtfTracePoint;
use aya::{Btf, EbpfLoader};
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Hook as KernelHook, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::config::PositiveDuration;

use crate::netdev::InterfacesConfig;
use crate::shared::ebpf::records::PERISCOPE_QUEUE_CFG_DROPS;
use crate::shared::ebpf::{embedded_object, names, Object, QueueConfig};
use crate::shared::kernel;
use crate::socket::{
    default_ring_buffer_size, describe, preflight, validate, DropReasons, SocketReceiver,
    SocketReceiverOptions,
};

/// `ebpf/qdisc.bpf.c`.
const OBJECT: Object = embedded_object!("qdisc");

/// Drop reasons of queueing disciplines (`enum skb_drop_reason` names, by prefix).
const QDISC_REASON_PREFIXES: [&str; 4] = ["QDISC_", "FQ_", "CAKE_", "DUALPI2_"];

/// Measures how long packets wait in each device's transmit queue (its root qdisc, from
/// enqueue to dequeue toward the driver) on every device of every network namespace, with
/// the queue's backlog at each enqueue and the packets queueing disciplines drop (by the
/// kernel's drop reason). For the `queue` processor (`periscope.network.queue.*`) and the
/// `burst` processor (a burst span's maximum queue delay). Needs CAP_BPF and CAP_PERFMON.
/// Devices without a queue (`noqueue`: veth, bridges, loopback by default) have no samples.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QdiscConfig {
    /// Devices to report, by name (`include`/`exclude` globs, as for `tcx`); filtered in user
    /// space: the tracepoints see every device. Default: every device.
    #[serde(default)]
    pub interfaces: InterfacesConfig,
    /// Report packets dropped by queueing disciplines (drop reasons `QDISC_*`, `FQ_*`,
    /// `CAKE_*`, `DUALPI2_*`); default true.
    #[serde(default = "periscope_pipeline::config::default_true")]
    pub drops: bool,
    /// Most packets tracked in queues at once, over every device (an LRU hash of 40-byte
    /// entries keyed by packet; when full, the oldest entry is forgotten and that packet
    /// gives no sample, counted as dropped); default 16384.
    #[serde(default = "default_max_queued")]
    pub max_queued: NonZeroU32,
    /// Ring buffer size in bytes: a power of two from 4096 (default 4194304, ~50,000 records
    /// of 80 bytes).
    #[serde(default = "default_ring_buffer_size")]
    pub ring_buffer_size: u32,
    /// While records come, how often the ring buffer is read (default 50ms).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: PositiveDuration,
}

fn default_max_queued() -> NonZeroU32 {
    NonZeroU32::new(16384).expect("non-zero")
}

fn default_poll_interval() -> PositiveDuration {
    PositiveDuration::from_millis(50)
}

impl Default for QdiscConfig {
    fn default() -> Self {
        QdiscConfig {
            interfaces: InterfacesConfig::default(),
            drops: true,
            max_queued: default_max_queued(),
            ring_buffer_size: default_ring_buffer_size(),
            poll_interval: default_poll_interval(),
        }
    }
}

impl ComponentConfig for QdiscConfig {
    const TYPE: &'static str = "qdisc";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut errors = validate(None, Some(self.ring_buffer_size))
            .err()
            .unwrap_or_default();
        self.interfaces.check(&mut errors);
        Invalid::all(errors)
    }
}

/// The programs of `qdisc.bpf.o` and their tracepoints.
const ENQUEUE: (&str, &str) = ("periscope_qdisc_enqueue", "qdisc_enqueue");
const DEQUEUE: (&str, &str) = ("periscope_qdisc_dequeue", "qdisc_dequeue");
const DROPS: (&str, &str) = ("periscope_queue_drop", "kfree_skb");

impl QdiscConfig {
    /// The capabilities it needs (measured: `scripts/measure-caps`, docs/deploy.md): CAP_BPF
    /// (maps) and CAP_PERFMON (tp_btf programs), as `tcp_udp`; not CAP_NET_ADMIN (no
    /// networking program) nor CAP_SYS_ADMIN (global tracepoints: a device of any namespace
    /// is seen without entering it). As a uid other than 0, the drop reasons also need
    /// tracefs to be readable (CAP_DAC_READ_SEARCH); without it drops are off, with a warning.
    pub fn capabilities(&self) -> Vec<kernel::Need> {
        vec![kernel::NEED_BPF, kernel::NEED_PERFMON]
    }

    /// The drop reasons to report (bits of `drop_reasons`), from the kernel's table.
    fn queue_config(&self, reasons: &DropReasons) -> QueueConfig {
        let mut config = QueueConfig::default();
        if !self.drops {
            return config;
        }
        config.flags = PERISCOPE_QUEUE_CFG_DROPS;
        for (number, name) in reasons.iter() {
            if number < 256 && QDISC_REASON_PREFIXES.iter().any(|p| name.starts_with(p)) {
                config.drop_reasons[(number / 64) as usize] |= 1 << (number % 64);
            }
        }
        config
    }

    /// Loads and attaches the programs.
    pub fn build_receiver(&self, id: &str) -> anyhow::Result<SocketReceiver> {
        preflight(&self.capabilities())?;
        let interfaces = self.interfaces.filter()?;
        let btf = Btf::from_sys_fs().map_err(|e| {
            anyhow::anyhow!(
                "reading the kernel's BTF (/sys/kernel/btf/vmlinux): {e}; \
                 qdisc needs a kernel built with CONFIG_DEBUG_INFO_BTF"
            )
        })?;
        let reasons = if self.drops {
            match kernel::ensure_tracefs() {
                Ok(_) => DropReasons::load(std::path::Path::new(kernel::TRACEFS_PATH)),
                Err(e) => {
                    tracing::warn!(receiver = %id, "tracefs: {e}; queue drops are not reported");
                    DropReasons::default()
                }
            }
        } else {
            DropReasons::default()
        };
        let config = self.queue_config(&reasons);
        if self.drops && config.drop_reasons == [0; 4] {
            // Unreadable rather than empty, most often: tracefs is root's, mode 0700, and a
            // uid other than 0 reads it only with CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE
            // (measured: scripts/measure-caps, docs/deploy.md).
            let format =
                std::path::Path::new(kernel::TRACEFS_PATH).join("events/skb/kfree_skb/format");
            match std::fs::read_to_string(&format) {
                Err(e) => tracing::warn!(
                    receiver = %id,
                    "{}: {e} (as a uid other than 0, reading tracefs needs CAP_DAC_READ_SEARCH or CAP_DAC_OVERRIDE); \
                     queue drops are not reported",
                    format.display()
                ),
                Ok(_) => tracing::warn!(
                    receiver = %id,
                    "the kernel names no qdisc drop reason ({}); queue drops are not reported",
                    format.display()
                ),
            }
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(names::EVENTS, self.ring_buffer_size);
        loader.map_max_entries(names::QUEUED, self.max_queued.get());
        loader.override_global(names::QUEUE_CONFIG, &config, true);
        let mut ebpf = OBJECT.load(&mut loader)?;
        let mut hooks = vec![ENQUEUE, DEQUEUE];
        if config.flags & PERISCOPE_QUEUE_CFG_DROPS != 0 {
            hooks.push(DROPS);
        }
        for (program, target) in &hooks {
            let p: &mut BtfTracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow::anyhow!("qdisc.bpf.o has no {program}"))?
                .try_into()?;
            p.load(target, &btf)
                .map_err(|e| anyhow::anyhow!("loading tp_btf/{target}: {}", describe(&e)))?;
            p.attach()
                .map_err(|e| anyhow::anyhow!("attaching tp_btf/{target}: {}", describe(&e)))?;
        }
        tracing::info!(
            receiver = %id,
            "qdisc: tracepoints {}",
            hooks.iter().map(|h| h.1).collect::<Vec<_>>().join(", ")
        );
        let options = SocketReceiverOptions {
            id: id.to_string(),
            poll_interval: self.poll_interval.get(),
            counters_interval: std::time::Duration::from_secs(10),
            interfaces: Some(interfaces),
        };
        SocketReceiver::new(options, ebpf, None, reasons)
    }
}

impl ReceiverConfig for QdiscConfig {
    fn required_hooks(&self) -> &'static [KernelHook] {
        &[
            KernelHook::KernelBtf,
            KernelHook::RingBuffer,
            KernelHook::TpBtf,
        ]
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(self.build_receiver(&ctx.id.to_string())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_the_queueing_disciplines_drop_reasons() {
        let reasons = DropReasons::parse(
            r#"__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 62, "TC_EGRESS" }, { 64, "QDISC_DROP" }, { 65, "QDISC_OVERLIMIT" }, { 70, "FQ_FLOW_LIMIT" }, { 125, "DUALPI2_STEP_DROP" }, { 300, "QDISC_FAR" })"#,
        );
        let c = QdiscConfig::default().queue_config(&reasons);
        assert_eq!(c.flags, PERISCOPE_QUEUE_CFG_DROPS);
        assert_eq!(c.drop_reasons[0], 0, "2 and 62 are not a qdisc's");
        // 64, 65, 70 and 125 (= 64 + 61); 300 is past what the program looks at.
        assert_eq!(c.drop_reasons[1], 1 | 1 << 1 | 1 << 6 | 1 << 61);
        assert_eq!((c.drop_reasons[2], c.drop_reasons[3]), (0, 0));
        let off = QdiscConfig {
            drops: false,
            ..QdiscConfig::default()
        }
        .queue_config(&reasons);
        assert_eq!((off.flags, off.drop_reasons), (0, [0; 4]));
    }

    #[test]
    fn a_bad_glob_and_ring_size_are_both_reported() {
        let c = QdiscConfig {
            ring_buffer_size: 1000,
            interfaces: InterfacesConfig {
                include: vec!["eth[".into()],
                exclude: vec![],
            },
            ..QdiscConfig::default()
        };
        let errors = c.validate().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["ring_buffer_size", "interfaces.include.0"]);
    }
}

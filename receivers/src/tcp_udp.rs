//! The `tcp_udp` receiver: TCP and UDP as the socket layer sees them — lifecycle, retransmits,
//! send/receive calls and drops with the kernel's reason — from fentry/fexit where the kernel
//! allows them, else from BTF tracepoints.

use aya::programs::{BtfTracePoint, FEntry, FExit, ProgramError};
use aya::{Btf, Ebpf};
use serde::Deserialize;

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Hook as KernelHook, Invalid, Receiver, ReceiverConfig,
};
use periscope_pipeline::config::PositiveDuration;

use crate::shared::ebpf::records::{
    PERISCOPE_SOCK_CFG_DROPS, PERISCOPE_SOCK_CFG_SEND_RECV_TCP, PERISCOPE_SOCK_CFG_SEND_RECV_UDP,
};
use crate::shared::ebpf::{embedded_object, Object, SocketConfig};
use crate::shared::kernel;
use crate::socket::{
    default_poll_interval, default_ring_buffer_size, describe, load_object, preflight, validate,
    DropReasons, SocketReceiver, SocketReceiverOptions,
};

/// `ebpf/tcp_udp.bpf.c`.
const OBJECT: Object = embedded_object!("tcp_udp");

/// How the TCP/UDP functions are hooked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TcpUdpMode {
    /// fentry/fexit where the kernel accepts them, tracepoints otherwise (logged at start).
    #[default]
    Auto,
    /// fentry/fexit only; fails to start where the kernel refuses them.
    Fentry,
    /// Tracepoints only (`tp_btf`).
    Tracepoint,
}

/// Which send/receive calls get a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SendReceive {
    /// None: lifecycle, retransmits and drops only.
    None,
    /// Every UDP send and receive call (datagram counts per socket).
    #[default]
    Udp,
    /// Every TCP send and receive call.
    Tcp,
    /// Both.
    All,
}

/// Observes TCP and UDP sockets of every namespace through kernel functions and tracepoints:
/// TCP connect/established/close with the connecting process and final byte counts, every
/// retransmission, send and receive calls (per `send_receive`), and dropped packets with the
/// kernel's drop reason. `mode: auto` uses fentry/fexit where the kernel accepts them and
/// falls back to tracepoints where it refuses them (e.g. under lockdown); the choice is
/// logged and `periscope doctor` shows it. Needs CAP_BPF and CAP_PERFMON (docs/deploy.md).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcpUdpConfig {
    /// `auto` (default), `fentry` or `tracepoint`.
    #[serde(default)]
    pub mode: TcpUdpMode,
    /// Send/receive records: `none`, `udp` (default), `tcp` or `all`.
    #[serde(default)]
    pub send_receive: SendReceive,
    /// Report dropped IP packets with the kernel's reason (`skb:kfree_skb`); default true.
    #[serde(default = "periscope_pipeline::config::default_true")]
    pub drops: bool,
    /// Ring buffer size in bytes: a power of two from 4096 (default 4194304).
    #[serde(default = "default_ring_buffer_size")]
    pub ring_buffer_size: u32,
    /// While records come, how often the ring buffer is read (in batches); an idle ring
    /// wakes the reader on its first record instead (default 50ms).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: PositiveDuration,
}

impl Default for TcpUdpConfig {
    fn default() -> Self {
        TcpUdpConfig {
            mode: TcpUdpMode::Auto,
            send_receive: SendReceive::Udp,
            drops: true,
            ring_buffer_size: default_ring_buffer_size(),
            poll_interval: default_poll_interval(),
        }
    }
}

impl ComponentConfig for TcpUdpConfig {
    const TYPE: &'static str = "tcp_udp";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        validate(None, Some(self.ring_buffer_size))
    }
}

/// A program of `tcp_udp.bpf.o` and what it hooks.
struct Hook {
    program: &'static str,
    target: &'static str,
}

/// Always tracepoints: the TCP state machine and drops (fentry offers nothing better there).
const ALWAYS: &[Hook] = &[Hook {
    program: "periscope_set_state",
    target: "inet_sock_set_state",
}];
const DROPS: Hook = Hook {
    program: "periscope_kfree_skb",
    target: "kfree_skb",
};
/// Retransmits and send/receive, fentry/fexit flavour.
const FENTRY_RETRANSMIT: Hook = Hook {
    program: "periscope_fentry_retransmit",
    target: "tcp_retransmit_skb",
};
const FEXIT_SEND_RECV: &[Hook] = &[
    Hook {
        program: "periscope_fexit_tcp_send",
        target: "tcp_sendmsg",
    },
    Hook {
        program: "periscope_fexit_tcp_recv",
        target: "tcp_recvmsg",
    },
    Hook {
        program: "periscope_fexit_udp_send",
        target: "udp_sendmsg",
    },
    Hook {
        program: "periscope_fexit_udp_recv",
        target: "udp_recvmsg",
    },
];
/// The same, tracepoint flavour.
const TP_RETRANSMIT: Hook = Hook {
    program: "periscope_tp_retransmit",
    target: "tcp_retransmit_skb",
};
const TP_SEND_RECV: &[Hook] = &[
    Hook {
        program: "periscope_tp_send",
        target: "sock_send_length",
    },
    Hook {
        program: "periscope_tp_recv",
        target: "sock_recv_length",
    },
];

/// Which mechanism a build ended up with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Fentry,
    Tracepoint,
}

impl TcpUdpConfig {
    /// The capabilities it needs (measured: `scripts/measure-caps`, docs/deploy.md).
    pub fn capabilities(&self) -> Vec<kernel::Need> {
        vec![kernel::NEED_BPF, kernel::NEED_PERFMON]
    }

    fn socket_config(&self) -> SocketConfig {
        let mut flags = 0;
        if matches!(self.send_receive, SendReceive::Udp | SendReceive::All) {
            flags |= PERISCOPE_SOCK_CFG_SEND_RECV_UDP;
        }
        if matches!(self.send_receive, SendReceive::Tcp | SendReceive::All) {
            flags |= PERISCOPE_SOCK_CFG_SEND_RECV_TCP;
        }
        if self.drops {
            flags |= PERISCOPE_SOCK_CFG_DROPS;
        }
        SocketConfig {
            rtt_interval_ns: 0,
            flags,
            _pad: 0,
        }
    }

    /// Loads and attaches the programs; the receiver and the mechanism chosen.
    pub fn build_receiver(&self, id: &str) -> anyhow::Result<(SocketReceiver, Mechanism)> {
        preflight(&self.capabilities())?;
        let btf = Btf::from_sys_fs().map_err(|e| {
            anyhow::anyhow!(
                "reading the kernel's BTF (/sys/kernel/btf/vmlinux): {e}; \
                 tcp_udp needs a kernel built with CONFIG_DEBUG_INFO_BTF"
            )
        })?;
        let reasons = if self.drops {
            match kernel::ensure_tracefs() {
                Ok(_) => DropReasons::load(std::path::Path::new(kernel::TRACEFS_PATH)),
                Err(e) => {
                    tracing::warn!(receiver = %id, "tracefs: {e}; drop reasons are reported as `unknown`");
                    DropReasons::default()
                }
            }
        } else {
            DropReasons::default()
        };
        let config = self.socket_config();
        let with_send_recv = self.send_receive != SendReceive::None;
        let mechanism = match self.mode {
            TcpUdpMode::Tracepoint => Mechanism::Tracepoint,
            TcpUdpMode::Fentry | TcpUdpMode::Auto => {
                let mut ebpf = load_object(OBJECT, Some(&config), Some(self.ring_buffer_size))?;
                match attach_fentry(&mut ebpf, &btf, with_send_recv) {
                    Ok(()) => {
                        attach_tracepoints(&mut ebpf, &btf, self.drops, None)?;
                        tracing::info!(receiver = %id, "tcp_udp: fentry/fexit on tcp_retransmit_skb{}; tracepoints for the TCP state machine{}",
                            if with_send_recv { ", tcp/udp_{send,recv}msg" } else { "" },
                            if self.drops { " and drops" } else { "" });
                        let r = SocketReceiver::new(options(id, self), ebpf, None, reasons)?;
                        return Ok((r, Mechanism::Fentry));
                    }
                    Err((program, e)) if self.mode == TcpUdpMode::Fentry => {
                        anyhow::bail!(
                            "mode: fentry, but the kernel refused fentry/fexit \
                             ({program}: {}); this happens under kernel lockdown or without BPF \
                             trampolines — use `mode: auto` or `mode: tracepoint`",
                            describe(&e)
                        );
                    }
                    Err((program, e)) => {
                        tracing::info!(
                            receiver = %id,
                            "tcp_udp: the kernel refused fentry/fexit ({program}: {}); falling back to tracepoints",
                            describe(&e)
                        );
                        Mechanism::Tracepoint
                    }
                }
            }
        };
        // A fresh object: programs that failed to load cannot be retried in place.
        let mut ebpf = load_object(OBJECT, Some(&config), Some(self.ring_buffer_size))?;
        let mut extra: Vec<&Hook> = vec![&TP_RETRANSMIT];
        if with_send_recv {
            extra.extend(TP_SEND_RECV.iter());
        }
        attach_tracepoints(&mut ebpf, &btf, self.drops, Some(&extra))?;
        tracing::info!(
            receiver = %id,
            "tcp_udp: tracepoints inet_sock_set_state, tcp_retransmit_skb{}{}",
            if with_send_recv { ", sock_send_length, sock_recv_length" } else { "" },
            if self.drops { ", kfree_skb" } else { "" }
        );
        let r = SocketReceiver::new(options(id, self), ebpf, None, reasons)?;
        Ok((r, mechanism))
    }
}

fn options(id: &str, c: &TcpUdpConfig) -> SocketReceiverOptions {
    SocketReceiverOptions {
        id: id.to_string(),
        poll_interval: c.poll_interval.get(),
        counters_interval: std::time::Duration::from_secs(10),
        interfaces: None,
    }
}

fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &Btf,
    with_send_recv: bool,
) -> Result<(), (&'static str, ProgramError)> {
    let missing = |name: &'static str| (name, ProgramError::UnexpectedProgramType);
    {
        let h = &FENTRY_RETRANSMIT;
        let p: &mut FEntry = ebpf
            .program_mut(h.program)
            .ok_or_else(|| missing(h.program))?
            .try_into()
            .map_err(|e| (h.program, e))?;
        p.load(h.target, btf).map_err(|e| (h.program, e))?;
        p.attach().map_err(|e| (h.program, e))?;
    }
    if with_send_recv {
        for h in FEXIT_SEND_RECV {
            let p: &mut FExit = ebpf
                .program_mut(h.program)
                .ok_or_else(|| missing(h.program))?
                .try_into()
                .map_err(|e| (h.program, e))?;
            p.load(h.target, btf).map_err(|e| (h.program, e))?;
            p.attach().map_err(|e| (h.program, e))?;
        }
    }
    Ok(())
}

fn attach_tracepoints(
    ebpf: &mut Ebpf,
    btf: &Btf,
    drops: bool,
    extra: Option<&[&Hook]>,
) -> anyhow::Result<()> {
    let mut hooks: Vec<&Hook> = ALWAYS.iter().collect();
    if drops {
        hooks.push(&DROPS);
    }
    if let Some(extra) = extra {
        hooks.extend(extra.iter().copied());
    }
    for h in hooks {
        let p: &mut BtfTracePoint = ebpf
            .program_mut(h.program)
            .ok_or_else(|| anyhow::anyhow!("tcp_udp.bpf.o has no {}", h.program))?
            .try_into()?;
        p.load(h.target, btf)
            .map_err(|e| anyhow::anyhow!("loading tp_btf/{}: {}", h.target, describe(&e)))?;
        p.attach()
            .map_err(|e| anyhow::anyhow!("attaching tp_btf/{}: {}", h.target, describe(&e)))?;
    }
    Ok(())
}

impl ReceiverConfig for TcpUdpConfig {
    // fentry/fexit where accepted (see `hook_choice`), tp_btf always.
    fn required_hooks(&self) -> &'static [KernelHook] {
        &[
            KernelHook::KernelBtf,
            KernelHook::RingBuffer,
            KernelHook::TpBtf,
        ]
    }

    fn hook_choice(&self, probe: &dyn Fn(KernelHook) -> Result<(), String>) -> Option<String> {
        Some(match probe(KernelHook::Fentry) {
            Ok(()) => {
                "mode auto uses fentry/fexit (tcp_retransmit_skb, tcp/udp send/recvmsg)".to_string()
            }
            Err(why) => format!(
                "mode auto falls back to tracepoints (fentry refused: {why}); mode fentry would fail"
            ),
        })
    }

    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Receiver>> {
        Ok(Box::new(self.build_receiver(&ctx.id.to_string())?.0))
    }
}

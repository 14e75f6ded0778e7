//! The modes a round runs (what is attached during the flood) and attaching each.

use anyhow::{bail, Context, Result};
use aya::programs::{Xdp, XdpMode};
use aya::EbpfLoader;
use periscope_pipeline::devices::DeviceTable;
use periscope_receivers::netdev::{
    AttachOptions, Attacher, DeviceOutcome, FlowOptions, Hook, InterfaceFilter, RecordOptions,
};
use periscope_receivers::shared::ebpf::records::PERISCOPE_CFG_RECORDS;
use periscope_receivers::shared::netns::{list_addresses, list_devices, run_in};

use crate::topology::{namespace, Topology};
use crate::RING_BYTES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    None,
    BareXdp,
    XdpCounters,
    XdpRecords,
    TcxCounters,
    TcxRecords,
    /// `tcx-counters` with `bursts` on (default parameters: the flood is one long burst).
    TcxBursts,
    /// `xdp-counters` with `bursts` on.
    XdpBursts,
    /// `tcx-counters` with the kernel flow table on (`flows: {enabled: true}`).
    TcxFlows,
    /// `xdp-counters` with the kernel flow table on.
    XdpFlows,
    /// `tcx-counters` with every packet classified local or forwarded (a hash lookup of the
    /// namespace's addresses, `PERISCOPE_CFG_LOCALITY`: what the receivers always do).
    TcxLocality,
}

pub(crate) const MODES: [Mode; 11] = [
    Mode::None,
    Mode::BareXdp,
    Mode::XdpCounters,
    Mode::XdpRecords,
    Mode::TcxCounters,
    Mode::TcxRecords,
    Mode::TcxBursts,
    Mode::XdpBursts,
    Mode::TcxFlows,
    Mode::XdpFlows,
    Mode::TcxLocality,
];

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::BareXdp => "bare-xdp",
            Mode::XdpCounters => "xdp-counters",
            Mode::XdpRecords => "xdp-records",
            Mode::TcxCounters => "tcx-counters",
            Mode::TcxRecords => "tcx-records",
            Mode::TcxBursts => "tcx-bursts",
            Mode::XdpBursts => "xdp-bursts",
            Mode::TcxFlows => "tcx-flows",
            Mode::XdpFlows => "xdp-flows",
            Mode::TcxLocality => "tcx-locality",
        }
    }

    pub(crate) fn records(self) -> bool {
        matches!(self, Mode::XdpRecords | Mode::TcxRecords)
    }

    pub(crate) fn bursts(self) -> bool {
        matches!(self, Mode::TcxBursts | Mode::XdpBursts)
    }

    pub(crate) fn flows(self) -> bool {
        matches!(self, Mode::TcxFlows | Mode::XdpFlows)
    }

    pub(crate) fn xdp(self) -> bool {
        matches!(
            self,
            Mode::XdpCounters | Mode::XdpRecords | Mode::BareXdp | Mode::XdpBursts | Mode::XdpFlows
        )
    }
}

/// What is attached during one round of one mode.
pub(crate) enum Attached {
    Nothing,
    /// Held: dropping it detaches the program.
    Bare(#[allow(dead_code)] Box<aya::Ebpf>),
    Periscope(Box<Attacher>),
}

pub(crate) struct Setup<'a> {
    pub(crate) topo: &'a Topology,
    pub(crate) rx_only: bool,
}

impl Setup<'_> {
    pub(crate) fn attach(&self, mode: Mode) -> Result<Attached> {
        match mode {
            Mode::None => Ok(Attached::Nothing),
            Mode::BareXdp => {
                let mut ebpf = EbpfLoader::new()
                    .load(bench_bare_object()?)
                    .context("loading bench_bare.bpf.o")?;
                let prog: &mut Xdp = ebpf
                    .program_mut("bench_bare_xdp")
                    .context("no bench_bare_xdp")?
                    .try_into()?;
                prog.load()?;
                let (_, handle) = namespace(&self.topo.rx)?;
                run_in(&handle, || prog.attach("veth-rx", XdpMode::default()))?
                    .context("attaching bench_bare_xdp to veth-rx")?;
                Ok(Attached::Bare(Box::new(ebpf)))
            }
            _ => {
                let hooks = match mode {
                    Mode::XdpCounters | Mode::XdpRecords | Mode::XdpBursts | Mode::XdpFlows => {
                        vec![Hook::Xdp]
                    }
                    _ => vec![Hook::TcxIngress, Hook::TcxEgress],
                };
                let mut attacher = Attacher::new(
                    AttachOptions {
                        hooks,
                        tcx_fallback: false,
                        records: RecordOptions {
                            flows: mode.flows().then_some(FlowOptions {
                                table_size: 16384,
                                idle_timeout: std::time::Duration::from_secs(60),
                            }),
                            dns_ports: [0; 4],
                            flags: if mode.records() {
                                PERISCOPE_CFG_RECORDS
                            } else if mode.bursts() {
                                periscope_receivers::shared::ebpf::records::PERISCOPE_CFG_BURSTS
                            } else if mode.flows() {
                                periscope_receivers::shared::ebpf::records::PERISCOPE_CFG_FLOWS
                            } else if mode == Mode::TcxLocality {
                                periscope_receivers::shared::ebpf::records::PERISCOPE_CFG_LOCALITY
                            } else {
                                0
                            },
                            sample_rate: 0,
                            bursts: if mode.bursts() {
                                periscope_receivers::netdev::BurstsConfig {
                                    enabled: true,
                                    ..Default::default()
                                }
                                .resolve()
                            } else {
                                None
                            },
                        },
                        ring_bytes: RING_BYTES,
                        pin_root: None,
                        interfaces: InterfaceFilter::all(),
                    },
                    DeviceTable::default(),
                )?;
                let spaces: Vec<&String> = if self.rx_only {
                    vec![&self.topo.rx]
                } else {
                    vec![&self.topo.tx, &self.topo.rx]
                };
                for name in spaces {
                    let (ns, handle) = namespace(name)?;
                    attacher
                        .add_namespace(&ns)
                        .map_err(|e| anyhow::anyhow!("loading for {name}: {e:#}"))?;
                    // The namespace's addresses, as the watcher reports them: the flood's
                    // packets are local at both ends (lookups that hit).
                    let addrs: Vec<std::net::IpAddr> = run_in(&handle, list_addresses)??
                        .into_iter()
                        .map(|a| a.addr)
                        .collect();
                    attacher.set_addresses(ns.id, &addrs);
                    for dev in run_in(&handle, list_devices)?? {
                        if dev.loopback {
                            continue;
                        }
                        let outcome = attacher
                            .add_device(ns.id, &dev)
                            .map_err(|e| anyhow::anyhow!("attaching {}: {e:#}", dev.name))?;
                        if !matches!(outcome, DeviceOutcome::Attached { .. }) {
                            bail!("{} in {name}: {outcome:?}", dev.name);
                        }
                    }
                }
                Ok(Attached::Periscope(Box::new(attacher)))
            }
        }
    }
}

/// `bench_bare.bpf.o` (`ebpf/bench_bare.bpf.c`): an XDP program (`bench_bare_xdp`) that only
/// bumps a per-CPU packet/byte counter (`bench_bare_counters`) and passes the packet.
#[cfg(not(periscope_ebpf_stub))]
pub(crate) fn bench_bare_object() -> Result<&'static [u8]> {
    Ok(aya::include_bytes_aligned!(concat!(
        env!("PERISCOPE_EBPF_OUT_DIR"),
        "/bench_bare.bpf.o"
    )))
}

/// A stub build has no eBPF objects.
#[cfg(periscope_ebpf_stub)]
pub(crate) fn bench_bare_object() -> Result<&'static [u8]> {
    anyhow::bail!("built with PERISCOPE_EBPF_STUB=1: there is no bench_bare.bpf.o")
}

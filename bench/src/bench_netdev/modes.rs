//! The modes a round runs (what is attached during the flood) and attaching each.

use anyhow::{bail, Context, Result};
use aya::programs::links::LinkOrder;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::EbpfLoader;
use periscope_pipeline::component::Receiver as _;
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_receivers::netdev::{
    AttachOptions, Attacher, DeviceOutcome, FlowOptions, Hook, InterfaceFilter, RecordOptions,
};
use periscope_receivers::qdisc::QdiscConfig;
use periscope_receivers::shared::ebpf::records::PERISCOPE_CFG_RECORDS;
use periscope_receivers::shared::netns::{list_addresses, list_devices, run_in};

use crate::topology::{namespace, Topology};
use crate::RING_BYTES;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    None,
    BareXdp,
    /// `ebpf/bench_bare.bpf.c`'s TC program on the flood's two hooks (TCX egress of `veth-tx`,
    /// ingress of `veth-rx`): what TCX and a program run cost, below any periscope mode.
    BareTcx,
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
    /// The `qdisc` receiver (queue delay: tp_btf on qdisc enqueue/dequeue and kfree_skb, a
    /// record per dequeued packet, its reader on a thread of its own). Costs nothing on a
    /// device without a queue: run with `--qdisc KIND` to give `veth-tx` one.
    Qdisc,
    /// `tcx-counters` with every packet classified local or forwarded (a hash lookup of the
    /// namespace's addresses, `PERISCOPE_CFG_LOCALITY`: what the receivers always do).
    TcxLocality,
}

pub(crate) const MODES: [Mode; 13] = [
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
    Mode::Qdisc,
    Mode::TcxLocality,
    Mode::BareTcx,
];

/// Where `bare-tcx` is in [`MODES`] (last: the report's indices of the others stay).
pub(crate) const BARE_TCX: usize = 12;

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::BareXdp => "bare-xdp",
            Mode::BareTcx => "bare-tcx",
            Mode::XdpCounters => "xdp-counters",
            Mode::XdpRecords => "xdp-records",
            Mode::TcxCounters => "tcx-counters",
            Mode::TcxRecords => "tcx-records",
            Mode::TcxBursts => "tcx-bursts",
            Mode::XdpBursts => "xdp-bursts",
            Mode::TcxFlows => "tcx-flows",
            Mode::XdpFlows => "xdp-flows",
            Mode::Qdisc => "qdisc",
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

    /// Whether the mode writes records (a reader drains them).
    pub(crate) fn writes_records(self) -> bool {
        self.records() || self == Mode::Qdisc
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
    /// The `qdisc` receiver, running on its thread until [`QdiscRun::finish`].
    Qdisc(Box<QdiscRun>),
}

/// The `qdisc` receiver running during a flood, with a consumer that counts its events.
pub(crate) struct QdiscRun {
    stop: StopSignal,
    thread: std::thread::JoinHandle<Result<()>>,
    consumer: std::thread::JoinHandle<u64>,
    counters: std::sync::Arc<periscope_pipeline::telemetry::ComponentCounters>,
    reader_cpu: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl QdiscRun {
    fn start() -> Result<QdiscRun> {
        let config = QdiscConfig {
            poll_interval: periscope_pipeline::config::PositiveDuration::from_millis(
                crate::POLL.as_millis() as u64,
            ),
            ring_buffer_size: RING_BYTES,
            ..QdiscConfig::default()
        };
        let receiver = config.build_receiver("qdisc")?;
        let (mut output, rx, counters) = EventOutput::for_test(1024);
        let stop = StopSignal::default();
        let s = stop.clone();
        let reader_cpu = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let cpu = reader_cpu.clone();
        let thread = std::thread::Builder::new()
            .name("bench-qdisc".into())
            .spawn(move || {
                let r = Box::new(receiver).run(&mut output, &s);
                cpu.store(
                    periscope_bench::thread_cpu_ns(),
                    std::sync::atomic::Ordering::SeqCst,
                );
                r
            })?;
        let consumer = std::thread::Builder::new()
            .name("bench-qdisc-consumer".into())
            .spawn(move || {
                let mut n = 0u64;
                while let Ok(p) = rx.recv() {
                    n += p.item_count() as u64;
                }
                n
            })?;
        Ok(QdiscRun {
            stop,
            thread,
            consumer,
            counters,
            reader_cpu,
        })
    }

    /// Stops the receiver: (records, records lost, the reader thread's CPU ns).
    pub(crate) fn finish(self) -> Result<(u64, u64, u64)> {
        self.stop.raise();
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the qdisc receiver panicked"))??;
        let n = self
            .consumer
            .join()
            .map_err(|_| anyhow::anyhow!("the consumer panicked"))?;
        let lost = self.counters.values().dropped;
        Ok((
            n,
            lost,
            self.reader_cpu.load(std::sync::atomic::Ordering::SeqCst),
        ))
    }
}

pub(crate) struct Setup<'a> {
    pub(crate) topo: &'a Topology,
    pub(crate) rx_only: bool,
}

impl Setup<'_> {
    pub(crate) fn attach(&self, mode: Mode) -> Result<Attached> {
        match mode {
            Mode::None => Ok(Attached::Nothing),
            Mode::Qdisc => Ok(Attached::Qdisc(Box::new(QdiscRun::start()?))),
            Mode::BareXdp => {
                let mut ebpf = bench_bare()?;
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
            Mode::BareTcx => {
                let mut ebpf = bench_bare()?;
                let prog: &mut SchedClassifier = ebpf
                    .program_mut("bench_bare_tc")
                    .context("no bench_bare_tc")?
                    .try_into()?;
                prog.load()?;
                for (ns, dev, at) in [
                    (&self.topo.tx, "veth-tx", TcAttachType::Egress),
                    (&self.topo.rx, "veth-rx", TcAttachType::Ingress),
                ] {
                    let (_, handle) = namespace(ns)?;
                    run_in(&handle, || {
                        prog.attach_with_options(
                            dev,
                            at,
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                    })?
                    .with_context(|| format!("attaching bench_bare_tc to {dev}"))?;
                }
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
                                slots: 8192,
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

/// `bench_bare.bpf.o`, loaded (its programs are not yet).
fn bench_bare() -> Result<aya::Ebpf> {
    EbpfLoader::new()
        .load(bench_bare_object()?)
        .context("loading bench_bare.bpf.o")
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

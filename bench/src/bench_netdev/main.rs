//! bench-netdev: the CPU cost per packet of periscope's XDP and TCX programs on a veth, as a
//! ratio to no program attached, measured in the same run; and how many records one reader
//! thread drains per CPU second.
//!
//! Two namespaces (`periscope-bench-<pid>-tx`, `-rx`) joined by a veth pair (10.231.0.1/24 ↔
//! 10.231.0.2/24; no traffic leaves them); a `sendmmsg` UDP flooder (64-byte payloads, a fixed
//! count per round) in `tx`, pinned to one CPU, and a `recvmmsg` sink in `rx`. Each round runs
//! every mode once, in an order rotated per round (so drift and the other tenants of the
//! machine hit every mode alike), attaching and detaching the programs around the flood:
//!
//! - `none`: nothing attached;
//! - `bare-tcx`: the same file's TC program on the flood's two TCX hooks (egress of the
//!   sender's veth, ingress of the receiver's): what TCX and a program run cost, the floor
//!   of every `tcx-*` mode (their `×bare` column);
//! - `bare-xdp`: `ebpf/bench_bare.bpf.c`, an XDP program that only bumps a per-CPU counter
//!   (what any XDP program costs on a veth);
//! - `xdp-counters`, `xdp-records`: the `xdp` receiver's attachment (every device of both
//!   namespaces, through [`Attacher`]), `events: none` and `events: all`;
//! - `tcx-counters`, `tcx-records`: the `tcx` receiver's (ingress and egress on every device
//!   of both namespaces: a packet runs the egress program on the sender's veth and the
//!   ingress program on the receiver's);
//! - `tcx-bursts`, `xdp-bursts`: counters plus the burst detector;
//! - `tcx-flows`, `xdp-flows`: counters plus the kernel flow table (`flows: {enabled: true}`,
//!   16384 entries; the flood is one 5-tuple, so every packet updates an existing entry);
//! - `qdisc`: the `qdisc` receiver (queue delay: BTF tracepoints on qdisc enqueue and dequeue,
//!   an LRU entry and a record per queued packet; its reader on a thread of its own). A veth
//!   has no queue by default, so this costs nothing unless `--qdisc KIND` gives `veth-tx` a
//!   root qdisc (for every mode of the run, `none` included: the ratio is the program's cost
//!   over the same queue).
//!
//! `--only MODE,MODE` (or `--modes`) runs only those modes (and the baselines `none`,
//! `bare-xdp` and `bare-tcx`).
//!
//! CPU per packet = (sender thread + sink thread + every `ksoftirqd`) CPU time / packets sent,
//! each from the scheduler's exact runtime (`CLOCK_THREAD_CPUTIME_ID`,
//! `/proc/<pid>/schedstat`). This kernel has no `CONFIG_IRQ_TIME_ACCOUNTING`, so the softirq
//! work a packet causes (veth xmit → netif_rx/NAPI → the programs → IP/UDP delivery) is
//! charged to the task it interrupts: on a veth that is the sender itself (the softirq runs
//! when the sender's `local_bh_enable` follows the xmit), or ksoftirqd when it takes over.
//! Unlike `/proc/stat` totals this excludes whatever else the machine is running; the
//! all-CPU `/proc/stat` non-idle time is printed beside it as a cross-check. The records
//! reader (this process's main thread, a 10 ms timed poll as the agent does, decoding every
//! record into a batch sent on an `EventOutput` whose consumer thread only counts) is reported
//! separately: records drained per reader CPU second.
//!
//! Prints a table and the ratios (medians over the rounds) and appends them to
//! `bench-results/netdev.txt`. Needs root.
//!
//! Reproduce: `cargo run --release -p periscope-bench --bin bench-netdev -- [--rounds 8]
//! [--packets 2000000] [--rx-only]`
//!
//! `--attach-latency N [--xdp] [--pause-ms MS]` measures instead how long after a namespace
//! or device appears the receiver (as the agent runs it, with its own namespace watcher) has
//! attached it, N samples per case, with a breakdown (discovery, load, attach); see
//! [`attach_latency()`].

mod attach_latency;
mod cpu;
mod flood;
mod modes;
mod report;
mod topology;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use attach_latency::attach_latency;
use flood::{flood, Sample};
use modes::{Attached, Setup, MODES};
use topology::Topology;

const TX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const RX_ADDR: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
const PORT: u16 = 5001;
const PAYLOAD: usize = 64;
const BATCH: usize = 64;
/// The sender's CPU (the softirq work of a veth xmit runs there too); the sink gets the other.
const SENDER_CPU: usize = 1;
const SINK_CPU: usize = 0;
const RING_BYTES: u32 = 64 << 20;
const POLL: Duration = Duration::from_millis(10);
/// Other work on the machine during a round, as a fraction of ours, above which the round is
/// run again (at most `RETRIES` times).
const MAX_OTHERS: f64 = 0.15;
const RETRIES: usize = 3;

/// Set by SIGINT/SIGTERM: the flood stops, the namespaces are deleted, the process exits 130.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that only stores an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

struct Args {
    rounds: usize,
    packets: u64,
    rx_only: bool,
    /// `--attach-latency N`: measure attach latency (N samples) instead of CPU cost.
    attach_latency: Option<usize>,
    /// With `--attach-latency`: the xdp receiver instead of tcx.
    xdp: bool,
    /// With `--attach-latency`: a pause after each sample's namespaces are deleted.
    pause: Duration,
    /// `--qdisc KIND`: the root qdisc of `veth-tx` during the run (`tc qdisc replace`).
    pub(crate) qdisc: Option<String>,
    /// `--only a,b`: the modes to run (with `none`); empty: all.
    pub(crate) only: Vec<String>,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 8,
        packets: 2_000_000,
        rx_only: false,
        attach_latency: None,
        xdp: false,
        pause: Duration::ZERO,
        qdisc: None,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--packets" => a.packets = it.next().context("--packets N")?.parse()?,
            "--rx-only" => a.rx_only = true,
            "--attach-latency" => {
                a.attach_latency = Some(it.next().context("--attach-latency N")?.parse()?)
            }
            "--xdp" => a.xdp = true,
            "--qdisc" => {
                a.qdisc = Some(
                    it.next()
                        .context("--qdisc 'KIND [PARAMETERS]' (e.g. pfifo_fast)")?,
                )
            }
            "--only" | "--modes" => {
                a.only = it
                    .next()
                    .context("--only MODE,MODE")?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                for m in &a.only {
                    if !MODES.iter().any(|x| x.name() == m) {
                        bail!(
                            "--only: unknown mode {m}; modes: {}",
                            MODES.map(|x| x.name()).join(", ")
                        );
                    }
                }
            }
            "--pause-ms" => {
                a.pause = Duration::from_millis(it.next().context("--pause-ms MS")?.parse()?)
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench-netdev [--rounds N (8)] [--packets N per round (2000000)] \
                     [--rx-only: attach only in the receiving namespace] | --attach-latency N \
                     [--xdp] [--pause-ms MS (0) between samples]: attach latency of new \
                     namespaces and devices (tcx, or xdp); [--qdisc KIND: root qdisc of the \
                     sending veth, e.g. fq_codel] [--only (or --modes) MODE,MODE: only these modes and the baselines]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if a.rounds == 0 || a.packets == 0 {
        bail!("--rounds and --packets must be above zero");
    }
    Ok(a)
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) if INTERRUPTED.load(Ordering::SeqCst) => {
            eprintln!("bench-netdev: {e:#}; namespaces removed");
            std::process::exit(130);
        }
        Err(e) => {
            eprintln!("bench-netdev: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    periscope_bench::require_root("network namespaces, eBPF programs")?;
    install_signal_handlers();
    if let Some(n) = args.attach_latency {
        if n == 0 {
            bail!("--attach-latency needs at least one sample");
        }
        return attach_latency(n, args.xdp, args.pause);
    }
    let topo = Topology::new()?;
    if let Some(kind) = &args.qdisc {
        let out = std::process::Command::new("tc")
            .args(["-n", &topo.tx, "qdisc", "replace", "dev", "veth-tx", "root"])
            .args(kind.split_whitespace())
            .output()
            .context("running tc")?;
        if !out.status.success() {
            bail!(
                "tc qdisc replace dev veth-tx root {kind}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let runs = |m: modes::Mode| {
        args.only.is_empty()
            || matches!(
                m,
                modes::Mode::None | modes::Mode::BareXdp | modes::Mode::BareTcx
            )
            || args.only.iter().any(|o| o == m.name())
    };
    let setup = Setup {
        topo: &topo,
        rx_only: args.rx_only,
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); MODES.len()];
    eprintln!(
        "bench-netdev: {} rounds × {} modes × {} packets of {PAYLOAD} bytes, {} -> {}",
        args.rounds,
        MODES.len(),
        args.packets,
        topo.tx,
        topo.rx
    );
    let mut retried = 0;
    // Warm-up: one unmeasured round of the plain path (ARP, socket caches, CPU frequency).
    let mut nothing = Attached::Nothing;
    flood(&topo, args.packets / 4, &mut nothing)?;
    for round in 0..args.rounds {
        for k in 0..MODES.len() {
            interrupted()?;
            let i = (k + round) % MODES.len();
            let mode = MODES[i];
            if !runs(mode) {
                continue;
            }
            // A round during which the rest of the machine was busy (all-CPU non-idle time
            // more than MAX_OTHERS above ours) is run again, up to RETRIES times: the other
            // tenants' work disturbs ours (caches, the hypervisor's steal time).
            let mut tries = 0;
            let s = loop {
                let mut attached = setup.attach(mode)?;
                let s = flood(&topo, args.packets, &mut attached);
                let mut qdisc = None;
                match attached {
                    Attached::Periscope(a) => a.shutdown(),
                    Attached::Qdisc(q) => qdisc = Some(q.finish()?),
                    _ => {}
                }
                let mut s = s?;
                if let Some((records, lost, reader_ns)) = qdisc {
                    (s.records, s.lost, s.reader_ns) = (records, lost, reader_ns);
                }
                interrupted()?;
                let others = s.others();
                eprintln!(
                    "round {round} {:<13} {:>7.1} ns/pkt (proc/stat {:>7.1}, others {:>4.0}%) sent \
                     {} recv {} counted {} records {} lost {} flows overflow {} reader {:.0} ms \
                     wall {:.2} s{}",
                    mode.name(),
                    s.cpu_ns as f64 / s.sent as f64,
                    s.stat_ns as f64 / s.sent as f64,
                    others * 100.0,
                    s.sent,
                    s.received,
                    s.counted_rx,
                    s.records,
                    s.lost,
                    s.flows_overflow,
                    s.reader_ns as f64 / 1e6,
                    s.wall.as_secs_f64(),
                    if others > MAX_OTHERS && tries < RETRIES {
                        " (busy machine: again)"
                    } else {
                        ""
                    }
                );
                if others <= MAX_OTHERS || tries >= RETRIES {
                    break s;
                }
                tries += 1;
                retried += 1;
                std::thread::sleep(Duration::from_secs(1));
            };
            samples[i].push(s);
        }
    }
    let report = report::render(&args, &samples, retried);
    print!("{report}");
    drop(topo);

    std::fs::create_dir_all("bench-results")?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("bench-results/netdev.txt")?;
    f.write_all(report.as_bytes())?;
    writeln!(f)?;
    Ok(())
}

//! bench-sockets: what the socket receivers cost the traffic they observe, measured in one run.
//!
//! Two network namespaces joined by a veth pair (10.232.0.1 ↔ 10.232.0.2). Two workloads, each
//! run by threads of this process that enter the namespaces:
//!
//! - `rr`: TCP request/response, 64-byte messages, many round trips on one connection (the
//!   per-message cost: sk_msg/sk_skb and per-call tracepoints sit on this path);
//! - `connect`: TCP connections opened, acknowledged with one byte and reset, one after
//!   another (the per-connection cost: sockops and the state-change tracepoint sit on this
//!   path).
//!
//! Modes: no program attached; `sockops`; `tcp_udp` (default: lifecycle, retransmits, drops,
//! UDP calls); `tcp_udp` with `send_receive: all` (a record per TCP send/recv call); `sk_msg`
//! (attached to a cgroup this process moves itself into, so its sockets go through the sockmap
//! path). Rounds interleave the modes; the report gives, per workload and mode, the median CPU
//! time of the workload threads per operation (what the data path pays, in the kernel mostly),
//! the median wall time per operation, their ratios to no program, and the agent's own CPU per
//! operation (the receiver thread draining and decoding records).
//!
//! Reproduce: `cargo run --release -p periscope-bench --bin bench-sockets -- --rounds 7`
//! (root; `--rr N`, `--connects N` set the operations per sample).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use periscope_bench::{enter_netns, ip, joined, require_root, set_socket_option, thread_cpu_ns};
use periscope_pipeline::component::Receiver;
use periscope_pipeline::config::PositiveDuration;
use periscope_pipeline::edge::{EventOutput, StopSignal};
use periscope_pipeline::model::Payload;
use periscope_receivers::sk_msg::SkMsgConfig;
use periscope_receivers::socket::find_cgroup2;
use periscope_receivers::sockops::SockopsConfig;
use periscope_receivers::tcp_udp::{SendReceive, TcpUdpConfig};

const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 2);
const RR_PORT: u16 = 5101;
const CONNECT_PORT: u16 = 5102;
const MESSAGE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    None,
    Sockops,
    TcpUdp,
    TcpUdpAll,
    SkMsg,
}

const MODES: [Mode; 5] = [
    Mode::None,
    Mode::Sockops,
    Mode::TcpUdp,
    Mode::TcpUdpAll,
    Mode::SkMsg,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::None => "no program",
            Mode::Sockops => "sockops",
            Mode::TcpUdp => "tcp_udp",
            Mode::TcpUdpAll => "tcp_udp send_receive: all",
            Mode::SkMsg => "sk_msg (+ sk_skb)",
        }
    }
}

/// Two namespaces and a veth pair, removed on drop.
struct Topology {
    a: String,
    b: String,
}

impl Topology {
    fn new() -> Result<Topology> {
        let pid = std::process::id();
        let t = Topology {
            a: format!("periscope-bsock-{pid}-a"),
            b: format!("periscope-bsock-{pid}-b"),
        };
        for ns in [&t.a, &t.b] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link", "add", "bs0", "netns", &t.a, "type", "veth", "peer", "name", "bs1", "netns",
            &t.b,
        ])?;
        ip(&["-n", &t.a, "addr", "add", "10.232.0.1/24", "dev", "bs0"])?;
        ip(&["-n", &t.b, "addr", "add", "10.232.0.2/24", "dev", "bs1"])?;
        ip(&["-n", &t.a, "link", "set", "bs0", "up"])?;
        ip(&["-n", &t.b, "link", "set", "bs1", "up"])?;
        Ok(t)
    }

    fn path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A cgroup v2 directory this process moves into for the run, and out of at the end.
struct BenchCgroup {
    path: PathBuf,
    original: PathBuf,
}

impl BenchCgroup {
    fn enter() -> Result<BenchCgroup> {
        let root = find_cgroup2().context("no cgroup v2 mount")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            .unwrap_or_else(|| "/".into());
        let original = root.join(own.trim_start_matches('/'));
        let path = root.join(format!("periscope-bench-sockets-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        std::fs::write(path.join("cgroup.procs"), std::process::id().to_string())
            .context("moving into the bench cgroup")?;
        Ok(BenchCgroup { path, original })
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.original.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A receiver running on a thread, its records counted and dropped, its CPU time measured.
struct Agent {
    stop: StopSignal,
    thread: std::thread::JoinHandle<u64>,
    drain: std::thread::JoinHandle<u64>,
    records: Arc<AtomicU64>,
}

impl Agent {
    fn start(receiver: Box<dyn Receiver>) -> Agent {
        let (mut output, rx, _) = EventOutput::for_test(1024);
        let stop = StopSignal::default();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let t0 = thread_cpu_ns();
            if let Err(e) = receiver.run(&mut output, &s) {
                eprintln!("bench-sockets: receiver: {e:#}");
            }
            thread_cpu_ns() - t0
        });
        let records = Arc::new(AtomicU64::new(0));
        let r = records.clone();
        let drain = std::thread::spawn(move || {
            let t0 = thread_cpu_ns();
            for p in rx.iter() {
                if let Payload::Events(b) = p {
                    r.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            }
            thread_cpu_ns() - t0
        });
        Agent {
            stop,
            thread,
            drain,
            records,
        }
    }

    /// Stops it; its CPU time (receiver + consumer) and the records it delivered.
    fn stop(self) -> (u64, u64) {
        self.stop.raise();
        let cpu = self.thread.join().unwrap_or(0) + self.drain.join().unwrap_or(0);
        (cpu, self.records.load(Ordering::Relaxed))
    }
}

fn attach(mode: Mode, cgroup: &Path) -> Result<Option<Agent>> {
    let poll = PositiveDuration::from_millis(20);
    let receiver: Box<dyn Receiver> = match mode {
        Mode::None => return Ok(None),
        Mode::Sockops => Box::new(
            SockopsConfig {
                poll_interval: poll,
                ..SockopsConfig::default()
            }
            .build_receiver("sockops")?,
        ),
        Mode::TcpUdp => Box::new(
            TcpUdpConfig {
                poll_interval: poll,
                ..TcpUdpConfig::default()
            }
            .build_receiver("tcp_udp")?
            .0,
        ),
        Mode::TcpUdpAll => Box::new(
            TcpUdpConfig {
                poll_interval: poll,
                send_receive: SendReceive::All,
                ring_buffer_size: 64 << 20,
                ..TcpUdpConfig::default()
            }
            .build_receiver("tcp_udp")?
            .0,
        ),
        Mode::SkMsg => Box::new(
            SkMsgConfig {
                cgroup: cgroup.to_path_buf(),
                poll_interval: poll,
                ring_buffer_size: 64 << 20,
                ..SkMsgConfig::default()
            }
            .build_receiver("sk_msg")?,
        ),
    };
    Ok(Some(Agent::start(receiver)))
}

/// One measurement: operations, CPU of the workload threads, wall time, agent CPU, records.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    ops: u64,
    cpu_ns: u64,
    wall_ns: u64,
    agent_ns: u64,
    records: u64,
}

/// `n` request/response round trips of MESSAGE bytes on one connection.
fn rr(topo: &Topology, n: u64) -> Result<(u64, u64)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| -> Result<(u64, u64)> {
        let server = s.spawn(|| -> Result<u64> {
            enter_netns(&Topology::path(&topo.b))?;
            let l = TcpListener::bind(SocketAddrV4::new(B_ADDR, RR_PORT))?;
            accept_timeout(&l, Duration::from_secs(10));
            ready_tx.send(()).ok();
            let (mut c, _) = l.accept().context("rr accept")?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            c.set_nodelay(true)?;
            let t0 = thread_cpu_ns();
            let mut buf = [0u8; MESSAGE];
            for _ in 0..n {
                c.read_exact(&mut buf)?;
                c.write_all(&buf)?;
            }
            Ok(thread_cpu_ns() - t0)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("rr server")?;
        let client = s.spawn(|| -> Result<(u64, u64)> {
            enter_netns(&Topology::path(&topo.a))?;
            let mut c =
                TcpStream::connect(SocketAddrV4::new(B_ADDR, RR_PORT)).context("rr connect")?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            c.set_nodelay(true)?;
            let (t0, w0) = (thread_cpu_ns(), Instant::now());
            let mut buf = [7u8; MESSAGE];
            for _ in 0..n {
                c.write_all(&buf)?;
                c.read_exact(&mut buf)?;
            }
            Ok((thread_cpu_ns() - t0, w0.elapsed().as_nanos() as u64))
        });
        let (client_cpu, wall) = joined(client.join(), "rr client")??;
        let server_cpu = joined(server.join(), "rr server")??;
        Ok((client_cpu + server_cpu, wall))
    })
}

/// `n` connections opened and closed one after another.
fn connects(topo: &Topology, n: u64) -> Result<(u64, u64)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| -> Result<(u64, u64)> {
        let server = s.spawn(|| -> Result<u64> {
            enter_netns(&Topology::path(&topo.b))?;
            let l = TcpListener::bind(SocketAddrV4::new(B_ADDR, CONNECT_PORT))?;
            accept_timeout(&l, Duration::from_secs(10));
            ready_tx.send(()).ok();
            let t0 = thread_cpu_ns();
            for _ in 0..n {
                let (mut c, _) = l.accept().context("connect accept")?;
                // One byte tells the client it was accepted (so connections go one at a time
                // and never overflow the accept queue: a dropped SYN costs a 1 s retransmit);
                // then wait for its reset (a server closing first would keep TIME_WAIT sockets
                // whose 4-tuples a later client port may hit).
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                c.write_all(&[1])?;
                let _ = c.read(&mut [0u8; 1]);
                drop(c);
            }
            Ok(thread_cpu_ns() - t0)
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("connect server")?;
        let client = s.spawn(|| -> Result<(u64, u64)> {
            enter_netns(&Topology::path(&topo.a))?;
            let (t0, w0) = (thread_cpu_ns(), Instant::now());
            for _ in 0..n {
                let mut c = TcpStream::connect(SocketAddrV4::new(B_ADDR, CONNECT_PORT))
                    .context("connect")?;
                c.set_read_timeout(Some(Duration::from_secs(10)))?;
                c.read_exact(&mut [0u8; 1])
                    .context("connect: accepted byte")?;
                no_linger(&c);
                drop(c);
            }
            Ok((thread_cpu_ns() - t0, w0.elapsed().as_nanos() as u64))
        });
        let (client_cpu, wall) = joined(client.join(), "connect client")??;
        let server_cpu = joined(server.join(), "connect server")??;
        Ok((client_cpu + server_cpu, wall))
    })
}

/// SO_RCVTIMEO on a listener: `accept` gives up after `d` instead of waiting forever for a
/// client that failed.
fn accept_timeout(l: &TcpListener, d: Duration) {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: a valid socket and a timeval of the right size.
    unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// SO_LINGER 0: close with a RST, leaving no TIME_WAIT socket behind.
fn no_linger(c: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    set_socket_option(c, libc::SO_LINGER, &linger);
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Args {
    rounds: usize,
    rr: u64,
    connects: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        rounds: 5,
        rr: 50_000,
        connects: 2_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--rounds" => a.rounds = value("--rounds")? as usize,
            "--rr" => a.rr = value("--rr")?,
            "--connects" => a.connects = value("--connects")?,
            "-h" | "--help" => {
                println!("bench-sockets [--rounds N] [--rr ROUND_TRIPS] [--connects CONNECTIONS]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if a.rounds == 0 || a.rr == 0 || a.connects == 0 {
        bail!("--rounds, --rr and --connects must be at least 1");
    }
    Ok(a)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-sockets: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    require_root("network namespaces, cgroups, eBPF programs")?;
    let topo = Topology::new()?;
    let cgroup = BenchCgroup::enter()?;
    let workloads: [(&str, u64); 2] = [("rr", args.rr), ("connect", args.connects)];
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); MODES.len()]; 2];
    eprintln!(
        "bench-sockets: {} rounds × {} modes; rr: {} round trips of {MESSAGE} B; connect: {} connections; 10.232.0.1 -> 10.232.0.2 over veth",
        args.rounds,
        MODES.len(),
        args.rr,
        args.connects
    );
    // Warm up (ARP, caches, page faults) before anything is measured.
    rr(&topo, args.rr / 10 + 1)?;
    connects(&topo, args.connects / 10 + 1)?;
    for round in 0..args.rounds {
        for (m, mode) in MODES.iter().enumerate() {
            for (w, (name, n)) in workloads.iter().enumerate() {
                let agent = attach(*mode, &cgroup.path)
                    .with_context(|| format!("attaching {}", mode.name()))?;
                let (cpu, wall) = if *name == "rr" {
                    rr(&topo, *n)?
                } else {
                    connects(&topo, *n)?
                };
                // Let the receiver drain what the workload wrote.
                std::thread::sleep(Duration::from_millis(60));
                let (agent_ns, records) = agent.map_or((0, 0), Agent::stop);
                samples[w][m].push(Sample {
                    ops: *n,
                    cpu_ns: cpu,
                    wall_ns: wall,
                    agent_ns,
                    records,
                });
            }
        }
        eprintln!("  round {}/{} done", round + 1, args.rounds);
    }
    for (w, (name, _)) in workloads.iter().enumerate() {
        let per_op = |v: &[Sample], f: fn(&Sample) -> u64| -> f64 {
            median(v.iter().map(|s| f(s) as f64 / s.ops as f64).collect())
        };
        let base_cpu = per_op(&samples[w][0], |s| s.cpu_ns);
        let base_wall = per_op(&samples[w][0], |s| s.wall_ns);
        println!(
            "\n{name}: per {} (median of {} rounds)",
            if *name == "rr" {
                "round trip"
            } else {
                "connection"
            },
            args.rounds
        );
        println!(
            "  {:<27} {:>10} {:>7} {:>10} {:>7} {:>12} {:>10}",
            "mode", "cpu ns", "ratio", "wall ns", "ratio", "agent cpu ns", "records/op"
        );
        for (m, mode) in MODES.iter().enumerate() {
            let v = &samples[w][m];
            let cpu = per_op(v, |s| s.cpu_ns);
            let wall = per_op(v, |s| s.wall_ns);
            let agent = per_op(v, |s| s.agent_ns);
            let records = per_op(v, |s| s.records);
            println!(
                "  {:<27} {:>10.0} {:>6.3}x {:>10.0} {:>6.3}x {:>12.0} {:>10.2}",
                mode.name(),
                cpu,
                cpu / base_cpu,
                wall,
                wall / base_wall,
                agent,
                records
            );
        }
    }
    println!(
        "\ncpu: CPU time of the workload's client and server threads (syscalls and the softirq \
         work they run inline); agent cpu: the receiver thread and its consumer. Reproduce: \
         cargo run --release -p periscope-bench --bin bench-sockets -- --rounds {}",
        args.rounds
    );
    drop(cgroup);
    drop(topo);
    Ok(())
}

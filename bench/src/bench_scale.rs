//! `bench-scale [--pods N]`: what the agent costs as a node fills with pods (issue 13).
//!
//! Runs the release agent on `configs/default.yaml` (its Prometheus port moved to a free one),
//! makes a node namespace with a bridge, waits for the agent to settle and reads its RSS; then
//! creates N pod namespaces (default 110) the way the CNI bridge plugin's host-veth pattern does
//! (`testkit::pods`, a veth each, node ends on the bridge), each sending an ICMP echo every 5 ms
//! from the moment its `eth0` is up and three UDP datagrams 300 ms later, and keeps them. Then:
//! RSS after (and per extra namespace), the agent's CPU over `--idle` seconds with no traffic,
//! attach latency p50/p99 (echoes sent before the device was counted × 5 ms), and that each
//! pod's datagrams were counted exactly on its `eth0` (from the agent's `/metrics`).
//!
//! Needs root, a release build of the agent beside this binary (`cargo build --release -p
//! periscope -p periscope-bench`), `ip`, `nsenter`, `unshare`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use periscope_testkit::http::http_get;
use periscope_testkit::otlp::sink::free_port;
use periscope_testkit::periscope::stop_agent;
use periscope_testkit::pods::{Node, Pattern, Pod, PodRecord, Traffic};
use periscope_testkit::process::Background;

const PROBE_EVERY: Duration = Duration::from_millis(5);
const UDP_PER_POD: u64 = 3;

struct Args {
    pods: u64,
    idle: u64,
    agent: PathBuf,
    config: PathBuf,
}

fn args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("the binary's folder")?;
    let mut a = Args {
        pods: 110,
        idle: 30,
        agent: bin_dir.join("periscope"),
        config: bin_dir.join("../../configs/default.yaml"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().with_context(|| format!("{arg} {what}"));
        match arg.as_str() {
            "--pods" => a.pods = value("N")?.parse()?,
            "--idle" => a.idle = value("SECONDS")?.parse()?,
            "--agent" => a.agent = value("PATH")?.into(),
            "--config" => a.config = value("PATH")?.into(),
            "-h" | "--help" => {
                println!(
                    "bench-scale [--pods N (110)] [--idle SECONDS (30)] [--agent PATH (beside \
                     this binary)] [--config PATH (configs/default.yaml)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if !a.agent.is_file() {
        bail!(
            "{} is missing: cargo build --release -p periscope -p periscope-bench",
            a.agent.display()
        );
    }
    if a.pods == 0 || a.pods > 60_000 {
        bail!("--pods {}: give 1 to 60000", a.pods);
    }
    Ok(a)
}

/// `VmRSS`, `RssAnon`, `RssFile`, `RssShmem` of a process, in KiB.
fn rss(pid: u32) -> HashMap<String, u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmRSS:") || l.starts_with("Rss"))
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

fn rss_line(pid: u32) -> (f64, String) {
    let r = rss(pid);
    let mib = |k: &str| r.get(k).copied().unwrap_or(0) as f64 / 1024.0;
    (
        mib("VmRSS"),
        format!(
            "{:.1} MiB (anon {:.1}, file {:.1}, shmem {:.1})",
            mib("VmRSS"),
            mib("RssAnon"),
            mib("RssFile"),
            mib("RssShmem")
        ),
    )
}

/// The agent's CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_time(pid: u32) -> Duration {
    stat_cpu(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// CPU time per thread (name, tid) of a process.
fn thread_cpu(pid: u32) -> HashMap<(String, u32), Duration> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let name = std::fs::read_to_string(t.path().join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.insert((name, tid), stat_cpu(&t.path().join("stat")));
    }
    out
}

/// utime + stime of a `/proc/.../stat` file.
fn stat_cpu(path: &std::path::Path) -> Duration {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / hz)
}

/// `periscope_network_packets` values from a Prometheus text page, by (cookie, interface,
/// direction, transport).
fn packets(page: &str) -> HashMap<(String, String, String, String), u64> {
    let mut out = HashMap::new();
    for line in page.lines() {
        if !line.starts_with("periscope_network_packets") {
            continue;
        }
        let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) else {
            continue;
        };
        let labels = &line[open + 1..close];
        let value: u64 = line[close + 1..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64);
        let label = |k: &str| {
            labels
                .split("\",")
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let key = (
            label("periscope_netns_cookie"),
            label("network_interface_name"),
            label("network_io_direction"),
            label("network_transport"),
        );
        *out.entry(key).or_default() += value;
    }
    out
}

fn pct(v: &mut [u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    periscope_testkit::stats::percentile(v, q)
}

fn main() -> Result<()> {
    let a = args()?;
    periscope_bench::require_root("namespaces and eBPF")?;
    let config = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))?;
    let port = free_port();
    if !config.contains("127.0.0.1:9464") {
        bail!(
            "{} has no `listen: 127.0.0.1:9464` to move to a free port",
            a.config.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("periscope-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("agent.yaml");
    // Beside an agent already running on the default config: its own port and observe socket.
    let socket = dir.join("observe.sock");
    std::fs::write(
        &cfg,
        config
            .replace("127.0.0.1:9464", &format!("127.0.0.1:{port}"))
            .replace("/run/periscope/observe.sock", &socket.display().to_string()),
    )?;

    let node = Node::new(950);
    let mut agent = Background::spawn(
        std::process::Command::new(&a.agent)
            .env("NO_COLOR", "1")
            .args(["run", "-c"])
            .arg(&cfg),
        "periscope (bench-scale)",
    );
    let pid = agent.pid();
    agent.wait_until(Duration::from_secs(60), "serving /metrics", |_| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    // Attached everywhere, first counters read: settled.
    std::thread::sleep(Duration::from_secs(8));
    let (before, before_text) = rss_line(pid);
    println!(
        "bench-scale: agent {} on {} (pid {pid}), {} pods on node {}",
        a.agent.display(),
        a.config.display(),
        a.pods,
        node.name()
    );
    println!("RSS before any pod:      {before_text}");
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();

    let traffic = Traffic {
        udp: UDP_PER_POD,
        tcp: false,
        quiet: Duration::from_millis(300),
        probe_every: Some(PROBE_EVERY),
        linger: Duration::from_millis(20),
    };
    let made = Instant::now();
    let mut pods: Vec<Pod> = Vec::with_capacity(a.pods as usize);
    for n in 0..a.pods {
        let mut pod = Pod::create(&node, n, Pattern::HostVeth);
        pod.traffic(&traffic);
        pods.push(pod);
        if agent.has_exited() {
            bail!("the agent exited:\n{}", agent.stderr());
        }
        if (n + 1) % 25 == 0 {
            println!(
                "  {} pods made ({:.0} s), agent RSS {:.1} MiB",
                n + 1,
                made.elapsed().as_secs_f64(),
                rss_line(pid).0
            );
        }
    }
    let busy_cpu = cpu_time(pid).saturating_sub(cpu0);
    let busy_wall = t0.elapsed();
    // Counters are read every counters_interval and exported every flow interval: wait for
    // both (the idle window), then read RSS and CPU over it.
    std::thread::sleep(Duration::from_secs(3));
    let cpu1 = cpu_time(pid);
    let threads1 = thread_cpu(pid);
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(a.idle));
    let idle_cpu = cpu_time(pid).saturating_sub(cpu1);
    let mut by_thread: Vec<(Duration, String)> = thread_cpu(pid)
        .into_iter()
        .map(|((name, tid), t)| {
            let before = threads1
                .get(&(name.clone(), tid))
                .copied()
                .unwrap_or_default();
            (t.saturating_sub(before), name)
        })
        .filter(|(d, _)| !d.is_zero())
        .collect();
    by_thread.sort_by(|a, b| b.cmp(a));
    let idle_pct = 100.0 * idle_cpu.as_secs_f64() / t1.elapsed().as_secs_f64();
    let (after, after_text) = rss_line(pid);
    let per_ns_kib = (after - before) * 1024.0 / a.pods as f64;

    let (status, page) = http_get(port, "/metrics", None);
    if status != 200 {
        bail!("GET /metrics on 127.0.0.1:{port}: HTTP {status}");
    }
    let counted = packets(&page);
    let records: Vec<&PodRecord> = pods.iter().map(Pod::record).collect();
    let mut latency_ms = Vec::new();
    let mut exact = 0;
    let mut missing = Vec::new();
    for p in &records {
        let get = |transport: &str| {
            counted
                .get(&(
                    p.cookie.to_string(),
                    "eth0".to_string(),
                    "transmit".to_string(),
                    transport.to_string(),
                ))
                .copied()
        };
        match get("icmp") {
            Some(echoes) => latency_ms
                .push(p.probes_sent.saturating_sub(echoes) * PROBE_EVERY.as_millis() as u64),
            None => missing.push(p.name.clone()),
        }
        if get("udp") == Some(p.udp_sent) && p.udp_sent == UDP_PER_POD {
            exact += 1;
        }
    }
    println!("RSS with {} pods:        {after_text}", a.pods);
    println!(
        "per extra namespace:     {per_ns_kib:.0} KiB ({:+.1} MiB over {} namespaces)",
        after - before,
        a.pods
    );
    println!(
        "CPU while pods were made: {:.1}% of a core ({:.1} s over {:.0} s)",
        100.0 * busy_cpu.as_secs_f64() / busy_wall.as_secs_f64(),
        busy_cpu.as_secs_f64(),
        busy_wall.as_secs_f64()
    );
    println!(
        "idle CPU with {} pods:   {idle_pct:.2}% of a core over {} s ({:.2} s)",
        a.pods,
        a.idle,
        idle_cpu.as_secs_f64()
    );
    if !by_thread.is_empty() {
        println!(
            "  by thread: {}",
            by_thread
                .iter()
                .take(6)
                .map(|(d, n)| format!("{n} {:.2} s", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "attach latency (eth0 up → counted, 5 ms probes): p50 {} ms, p99 {} ms, max {} ms",
        pct(&mut latency_ms, 0.5),
        pct(&mut latency_ms, 0.99),
        latency_ms.iter().max().copied().unwrap_or(0)
    );
    println!(
        "counted: {exact}/{} pods' {UDP_PER_POD} datagrams exact on eth0; {} pods with no series",
        records.len(),
        missing.len()
    );
    if !missing.is_empty() {
        println!(
            "  e.g. {}",
            missing
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    drop(pods);
    let out = stop_agent(agent, Duration::from_secs(60));
    drop(node);
    let log = String::from_utf8_lossy(&out.stderr);
    std::fs::write(dir.join("agent.log"), log.as_bytes())?;
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    println!("agent log: {warnings} warnings ({})", dir.display());
    println!(
        "reproduce: cargo build --release -p periscope -p periscope-bench && \
         sudo target/release/bench-scale --pods {}",
        a.pods
    );
    if exact as u64 != a.pods {
        bail!(
            "{} of {} pods not counted exactly",
            a.pods - exact as u64,
            a.pods
        );
    }
    Ok(())
}

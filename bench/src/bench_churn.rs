//! `bench-churn --minutes N`: the churn soak (issue 12). Runs the release agent (`tcx` +
//! `sockops` + `tcp_udp` → `connections`, `flow`, `identity` → OTLP/JSON files) while pods of
//! the six patterns of `testkit::pods` are created and deleted continuously, each with an ICMP
//! echo to the node every 5 ms from the moment its devices are up (to time the attachment),
//! then 20 UDP datagrams and one TCP connection 300 ms in, then deleted.
//!
//! Every minute it prints the pods checked so far (those gone ≥ 3 s, so their final points
//! are written): exact/total (counts on `eth0` and the node-side device, names, spans: see
//! `testkit::pods::check`), attach latency p50/p99 per pattern (device up → first counted
//! echo: the echoes not counted on `eth0` transmit × 5 ms, so 0 when the device was attached
//! before `eth0` came up, with creation → up beside it; pods with no series under their
//! cookie at all are counted apart),
//! and the agent's RSS and open fds. At the end, after SIGTERM: the agent's programs, links
//! and maps left in the kernel and entries under /sys/fs/bpf/periscope (all must be zero;
//! other agents running on the machine at the same time are counted too — it says so).
//!
//! Needs root, a release build of the agent beside this binary (`cargo build --release -p
//! periscope -p periscope-bench`), `ip`, `nsenter`, `unshare`, `bpftool`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use periscope_testkit::bpf::{bpftool_json, links, periscope_programs};
use periscope_testkit::otlp::{read_metrics, read_spans, Series};
use periscope_testkit::periscope::stop_agent;
use periscope_testkit::pods::check::{
    by_pattern, check, if_n_names, lenient_sums, reused_inodes, PodCheck,
};
use periscope_testkit::pods::{churn_agent_config, Node, Pattern, Pod, PodRecord, Traffic};
use periscope_testkit::process::Background;

const PROBE_EVERY: Duration = Duration::from_millis(5);
/// Pods gone this long ago have their final points written.
const SETTLE: Duration = Duration::from_secs(3);

struct Args {
    minutes: f64,
    agent: PathBuf,
}

fn args() -> Result<Args> {
    let mut minutes = 10.0;
    let mut agent = std::env::current_exe()?
        .parent()
        .context("the binary's folder")?
        .join("periscope");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minutes" => minutes = it.next().context("--minutes N")?.parse()?,
            "--agent" => agent = it.next().context("--agent PATH")?.into(),
            "-h" | "--help" => {
                println!("bench-churn [--minutes N (10)] [--agent PATH (beside this binary)]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (try --help)"),
        }
    }
    if !agent.is_file() {
        bail!(
            "{} is missing: cargo build --release -p periscope -p periscope-bench",
            agent.display()
        );
    }
    Ok(Args { minutes, agent })
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Echoes counted on the pod's `eth0` transmit (by cookie), if any series was.
fn echoes_counted(packets: &[Series], p: &PodRecord) -> Option<i64> {
    let cookie = p.cookie.to_string();
    let mine: Vec<&Series> = packets
        .iter()
        .filter(|s| {
            s.attr("periscope.netns.cookie") == Some(cookie.as_str())
                && s.attr("network.interface.name") == Some("eth0")
                && s.attr("network.io.direction") == Some("transmit")
        })
        .collect();
    (!mine.is_empty()).then(|| {
        mine.iter()
            .filter(|s| s.attr("network.transport") == Some("icmp"))
            .map(|s| s.value)
            .sum()
    })
}

fn pct(v: &mut [u64], q: f64) -> String {
    if v.is_empty() {
        return "-".into();
    }
    format!("{}", periscope_testkit::stats::percentile(v, q))
}

fn report(
    minute: &str,
    pods: &[PodRecord],
    metrics: &Path,
    traces: &Path,
    pid: u32,
    node: (u64, u64),
) {
    let (packets, went_down) = lenient_sums(&read_metrics(metrics), "periscope.network.packets");
    let spans: Vec<_> = read_spans(traces)
        .into_iter()
        .filter(|s| s.name == "tcp.connection")
        .collect();
    let checks: Vec<PodCheck> = check(pods, node.0, node.1, &packets, &spans);
    let exact = checks.iter().filter(|c| c.exact()).count();
    println!(
        "-- {minute}: {exact}/{} pods exact; agent RSS {:.1} MiB, {} fds; {} if<N> series; {} series went down; {} inodes reused",
        checks.len(),
        rss_mib(pid),
        fds(pid),
        if_n_names(&packets).len(),
        went_down.len(),
        reused_inodes(pods).len()
    );
    let failed = pods.iter().filter(|p| p.tcp_port.is_none()).count();
    if failed > 0 {
        println!("   generator: {failed} TCP connects failed (SYN unanswered; their spans must still be there, in state syn_sent)");
    }
    let up: BTreeMap<Pattern, Vec<u64>> = pods.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(p.pattern)
            .or_insert_with(Vec::new)
            .push(p.up_after.as_millis() as u64);
        m
    });
    let exact_by = by_pattern(&checks);
    let mut latency: BTreeMap<Pattern, (Vec<u64>, usize)> = BTreeMap::new();
    for p in pods {
        let e = latency.entry(p.pattern).or_default();
        match echoes_counted(&packets, p) {
            Some(n) => e.0.push(
                (p.probes_sent.saturating_sub(n.max(0) as u64)) * PROBE_EVERY.as_millis() as u64,
            ),
            None => e.1 += 1,
        }
    }
    for (pattern, (mut ms, never)) in latency {
        let (x, t) = exact_by.get(&pattern).copied().unwrap_or_default();
        println!(
            "   {:<10} exact {x:>4}/{t:<4} attach after eth0 up p50 {:>4} ms  p99 {:>4} ms  (creation → up p50 {:>4} ms)  no series under its cookie {never}",
            pattern.name(),
            pct(&mut ms, 0.5),
            pct(&mut ms, 0.99),
            pct(&mut up.get(&pattern).cloned().unwrap_or_default(), 0.5)
        );
    }
    for c in checks.iter().filter(|c| !c.exact()).take(3) {
        println!(
            "   e.g. {} {}: eth0 tx {:?}, node rx {:?}, spans {}/{}, {} wrong names",
            c.pod.name,
            c.pod.pattern.name(),
            c.eth0_tx,
            c.node_rx,
            c.spans_right,
            c.spans,
            c.wrong.len()
        );
    }
}

fn max_map_id() -> u64 {
    bpftool_json(&["map", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_u64())
        .max()
        .unwrap_or(0)
}

fn periscope_maps_after(id: u64) -> usize {
    bpftool_json(&["map", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["id"].as_u64().is_some_and(|i| i > id)
                && m["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("periscope"))
        })
        .count()
}

fn pins() -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p).map_or(0, |d| {
            d.flatten()
                .map(|e| {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
    }
    walk(Path::new("/sys/fs/bpf/periscope"))
}

fn main() -> Result<()> {
    let args = args()?;
    let dir = std::env::temp_dir().join(format!("periscope-bench-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (metrics, traces) = (dir.join("metrics.jsonl"), dir.join("traces.jsonl"));
    let cfg = dir.join("agent.yaml");
    std::fs::write(&cfg, churn_agent_config(&metrics, &traces, "warn"))?;
    let programs_before: BTreeSet<u64> = periscope_programs();
    let prog_base = programs_before.iter().max().copied().unwrap_or(0);
    let map_base = max_map_id();

    let node = Node::new(900);
    let node_id = (node.cookie(), node.inode());
    let mut agent = Background::spawn(
        std::process::Command::new(&args.agent)
            .env("NO_COLOR", "1")
            .args(["run", "-c"])
            .arg(&cfg),
        "periscope (bench-churn)",
    );
    let pid = agent.pid();
    agent.wait_until(Duration::from_secs(60), "its receivers attached", |_| {
        metrics.exists()
    });
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "bench-churn: agent {} (pid {pid}), {} min, pods of {} patterns in turn, node {}",
        args.agent.display(),
        args.minutes,
        Pattern::ALL.len(),
        node.name()
    );
    let t = Traffic {
        probe_every: Some(PROBE_EVERY),
        ..Traffic::default()
    };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.minutes * 60.0);
    let mut done: Vec<(Instant, PodRecord)> = Vec::new();
    let mut n = 0u64;
    let mut minute = 1;
    while Instant::now() < end {
        let rec = Pod::run(&node, n, Pattern::ALL[(n % 6) as usize], &t);
        done.push((Instant::now(), rec));
        n += 1;
        if start.elapsed() >= Duration::from_secs(60 * minute as u64) {
            let settled: Vec<PodRecord> = done
                .iter()
                .filter(|(at, _)| at.elapsed() >= SETTLE)
                .map(|(_, r)| r.clone())
                .collect();
            report(
                &format!("minute {minute}"),
                &settled,
                &metrics,
                &traces,
                pid,
                node_id,
            );
            minute += 1;
        }
        if agent.has_exited() {
            bail!("the agent exited:\n{}", agent.stderr());
        }
    }
    std::thread::sleep(SETTLE);
    let all: Vec<PodRecord> = done.into_iter().map(|(_, r)| r).collect();
    report("end", &all, &metrics, &traces, pid, node_id);
    let out = stop_agent(agent, Duration::from_secs(30));
    drop(node);
    std::thread::sleep(Duration::from_secs(1));
    let ours: BTreeSet<u64> = periscope_programs()
        .into_iter()
        .filter(|id| *id > prog_base)
        .collect();
    let left_links = links().iter().filter(|(_, p)| ours.contains(p)).count();
    let left_maps = periscope_maps_after(map_base);
    let others = programs_before.len();
    println!(
        "left after SIGTERM: {} programs, {left_links} links, {left_maps} maps, {} pins \
         (programs of other agents loaded before the run: {others}; any started during it \
         count here too)",
        ours.len(),
        pins()
    );
    let log = String::from_utf8_lossy(&out.stderr);
    let warnings = log.lines().filter(|l| l.contains("WARN")).count();
    println!("agent log: {warnings} warnings ({})", dir.display());
    std::fs::write(dir.join("agent.log"), log.as_bytes())?;
    println!(
        "reproduce: cargo build --release -p periscope -p periscope-bench && \
         sudo target/release/bench-churn --minutes {}",
        args.minutes
    );
    Ok(())
}

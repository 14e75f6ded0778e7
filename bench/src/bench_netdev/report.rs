//! The report: per-mode costs (medians over rounds), ratios to the baselines paired round by
//! round, and the targets they are held to.

use std::fmt::Write as _;
use std::process::Command;

use crate::flood::Sample;
use crate::modes::{BARE_TCX, MODES};
use crate::{Args, BATCH, MAX_OTHERS, PAYLOAD, POLL, RING_BYTES};

/// The report of a run: `samples[i]` are mode `MODES[i]`'s rounds; `retried` rounds were rerun.
pub(crate) fn render(args: &Args, samples: &[Vec<Sample>], retried: usize) -> String {
    let per_pkt = |i: usize, f: &dyn Fn(&Sample) -> u64| {
        median(
            samples[i]
                .iter()
                .map(|s| f(s) as f64 / s.sent as f64)
                .collect(),
        )
    };
    let cost: Vec<f64> = (0..MODES.len())
        .map(|i| per_pkt(i, &|s| s.cpu_ns))
        .collect();
    let stat: Vec<f64> = (0..MODES.len())
        .map(|i| per_pkt(i, &|s| s.stat_ns))
        .collect();
    let reader: Vec<f64> = (0..MODES.len())
        .map(|i| per_pkt(i, &|s| s.reader_ns))
        .collect();
    // Ratios pair each round's mode with the same round's baseline (the rounds drift by
    // ±10% on this VM; a mode and its baseline run seconds apart), median over rounds, with
    // the interquartile range of those per-round ratios.
    let pairs = |i: usize, base: usize| -> Vec<f64> {
        samples[i]
            .iter()
            .zip(&samples[base])
            .map(|(s, b)| (s.cpu_ns as f64 / s.sent as f64) / (b.cpu_ns as f64 / b.sent as f64))
            .collect()
    };
    let paired = |i: usize, base: usize| median(pairs(i, base));
    let iqr = |i: usize, base: usize| {
        let mut v = pairs(i, base);
        if v.is_empty() {
            return "-".to_string();
        }
        v.sort_by(f64::total_cmp);
        let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
        format!("{:.2}–{:.2}", q(0.25), q(0.75))
    };
    let mut report = String::new();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        report,
        "bench-netdev  {} UTC  kernel {}  {ncpu} CPUs  {} rounds × {} packets ({PAYLOAD}-byte UDP \
         payload, sendmmsg ×{BATCH}) over veth; programs attached in {}; ring {} MiB, {} ms poll",
        utc_now(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        args.rounds,
        args.packets,
        if args.rx_only {
            "the receiving namespace only"
        } else {
            "both namespaces (every device, as the agent does)"
        },
        RING_BYTES >> 20,
        POLL.as_millis()
    );
    let _ = writeln!(
        report,
        "CPU/pkt = sender + sink threads + ksoftirqd (scheduler runtime; softirq is charged to \
         the task it interrupts, no IRQ_TIME_ACCOUNTING); medians over rounds; ×none and ×bare \
         are medians of per-round ratios (IQR of ×none beside it)"
    );
    let _ = writeln!(
        report,
        "{:<14}{:>10}{:>9}{:>12}{:>9}{:>13}{:>12}{:>14}{:>8}",
        "mode",
        "ns/pkt",
        "×none",
        "(IQR)",
        "×bare",
        "proc/stat",
        "reader/pkt",
        "records/s/cpu",
        "lost"
    );
    for (i, mode) in MODES.iter().enumerate() {
        if samples[i].is_empty() {
            continue;
        }
        let recs: u64 = samples[i].iter().map(|s| s.records).sum();
        let rns: u64 = samples[i].iter().map(|s| s.reader_ns).sum();
        let lost: u64 = samples[i].iter().map(|s| s.lost).sum();
        let rate = if mode.writes_records() && rns > 0 {
            format!("{:.2} M", recs as f64 / (rns as f64 / 1e9) / 1e6)
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            report,
            "{:<14}{:>10.1}{:>9.3}{:>12}{:>9}{:>13.1}{:>12}{:>14}{:>8}",
            mode.name(),
            cost[i],
            paired(i, 0),
            iqr(i, 0),
            if mode.xdp() {
                format!("{:.3}", paired(i, 1))
            } else if mode.name().starts_with("tcx") && !samples[BARE_TCX].is_empty() {
                format!("{:.3}", paired(i, BARE_TCX))
            } else {
                "-".into()
            },
            stat[i],
            if mode.writes_records() {
                format!("{:.1}", reader[i])
            } else {
                "-".into()
            },
            rate,
            if mode.writes_records() {
                lost.to_string()
            } else {
                "-".into()
            },
        );
    }
    let others = median(samples.iter().flatten().map(Sample::others).collect());
    let busy = samples
        .iter()
        .flatten()
        .filter(|s| s.others() > MAX_OTHERS)
        .count();
    let _ = writeln!(
        report,
        "other load on the machine: median {:.0}% of ours; {retried} round(s) rerun, {busy} of {} \
         kept above {:.0}%{}",
        others * 100.0,
        samples.iter().map(Vec::len).sum::<usize>(),
        MAX_OTHERS * 100.0,
        if busy > 0 {
            " (those inflate the costs: prefer a quiet machine)"
        } else {
            ""
        }
    );
    let target = |ok: bool| if ok { "ok" } else { "MISSED" };
    let ratio = |i: usize| paired(i, 0);
    // The targets need every mode (not a run with `--only`).
    if args.only.is_empty() {
        let recs: u64 = [3, 5]
            .iter()
            .flat_map(|&i| samples[i].iter().map(|s| s.records))
            .sum();
        let rns: u64 = [3, 5]
            .iter()
            .flat_map(|&i| samples[i].iter().map(|s| s.reader_ns))
            .sum();
        let drained = recs as f64 / (rns as f64 / 1e9);
        let _ = writeln!(
            report,
            "targets: TCX counters {:.3}× ≤ 1.05 {}; TCX every packet {:.3}× ≤ 1.15 {}; XDP counters \
             {:.3}× bare ≤ 1.10 {}; XDP every packet {:.3}× bare ≤ 1.10 {}; drained {:.2} M \
             records/s per reader core ≥ 2 {}",
            ratio(4),
            target(ratio(4) <= 1.05),
            ratio(5),
            target(ratio(5) <= 1.15),
            paired(2, 1),
            target(paired(2, 1) <= 1.10),
            paired(3, 1),
            target(paired(3, 1) <= 1.10),
            drained / 1e6,
            target(drained >= 2e6),
        );
        let _ = writeln!(
            report,
            "bursts (detector on, no records): TCX {:.3}× tcx-counters, XDP {:.3}× xdp-counters",
            paired(6, 4),
            paired(7, 2),
        );
    }
    if !samples[10].is_empty() {
        let _ =
            writeln!(
            report,
            "queue delay (`qdisc` receiver, veth-tx root qdisc: {}): {:.3}× none (IQR {}); {:.2} \
             records/pkt; target ≤ 1.05 {}",
            args.qdisc.as_deref().unwrap_or("noqueue: nothing to measure"),
            ratio(10),
            iqr(10, 0),
            samples[10].iter().map(|s| s.records).sum::<u64>() as f64
                / samples[10].iter().map(|s| s.sent).sum::<u64>().max(1) as f64,
            target(ratio(10) <= 1.05),
        );
    }
    if !samples[11].is_empty() {
        let _ = writeln!(
            report,
            "locality (each packet classified local/forwarded, as the receivers run): TCX {:.3}× \
             none (IQR {}) ≤ 1.05 {}, {:.3}× tcx-counters",
            ratio(11),
            iqr(11, 0),
            target(ratio(11) <= 1.05),
            paired(11, 4),
        );
    }
    let mut cmd = "cargo run --release -p periscope-bench --bin bench-netdev --".to_string();
    let _ = write!(cmd, " --rounds {} --packets {}", args.rounds, args.packets);
    if args.rx_only {
        cmd.push_str(" --rx-only");
    }
    if let Some(q) = &args.qdisc {
        let _ = write!(cmd, " --qdisc '{q}'");
    }
    if !args.only.is_empty() {
        let _ = write!(cmd, " --only {}", args.only.join(","));
    }
    let _ = writeln!(report, "reproduce: {cmd}");
    report
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

//! Queueing delay end to end: the real `periscope` binary (`tcx` egress with `bursts` on and
//! the `qdisc` receiver → `burst` and `queue` processors → file exporters) against a `tbf`
//! whose rate the test sets.
//!
//! Two "pod" namespaces joined by a veth pair (`qda0` 10.63.2.1 ↔ `qdb0` 10.63.2.2). Once the
//! agent reports a warm-up burst (the veth has no queue yet), `qda0` gets a `tbf` of 4 Mbit/s
//! and a generator pinned to one CPU sends N datagrams of 1000 bytes back to back (a burst the
//! detector sees at TCX egress, before the queue), then one every 10 ms for half a second (the
//! detector reports a burst's end at the device's next packet).
//!
//! Checked: the `network.burst` span of `qda0`/transmit carries `periscope.queue.max_delay_us`
//! ≈ N × frame × 8 / rate (within 10%: the last frame of the burst waits that long in the
//! tbf) and the most backlog; the `periscope.network.queue.delay` histogram of `qda0` counts
//! exactly the packets `tc -s qdisc show` says the tbf sent, under the pod's namespace cookie.
//!
//! Needs root, `ip` and `tc`; skips with a reason otherwise, except under CI.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use periscope_testkit::netns::{enter_netns, pods};
use periscope_testkit::otlp::{histograms, read_metrics, read_spans, Span};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::run_ok;
use periscope_testkit::{require_root_and_tools, test_name, yaml_path, Serial, TestDir};

static SERIAL: Serial = Serial::new();

const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 63, 2, 2);
const PORT: u16 = 9300;
const RATE_BPS: u64 = 4_000_000;
const PAYLOAD: usize = 1000;
/// Ethernet + IPv4 + UDP.
const FRAME: u64 = PAYLOAD as u64 + 42;

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// From namespace `a`, on CPU 0: `burst` datagrams back to back, then `tail` more 10 ms apart.
fn generate(a: &str, burst: usize, tail: usize) {
    let a = a.to_string();
    std::thread::spawn(move || {
        enter_netns(&a);
        pin_to_cpu(0);
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let size: libc::c_int = 8 << 20;
        // SAFETY: SO_SNDBUFFORCE reads one c_int.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let to = SocketAddrV4::new(B_ADDR, PORT);
        let data = vec![0x5au8; PAYLOAD];
        for _ in 0..burst {
            sock.send_to(&data, to).expect("send");
        }
        for _ in 0..tail {
            std::thread::sleep(Duration::from_millis(10));
            sock.send_to(&data[..100], to).expect("send");
        }
    })
    .join()
    .expect("generator");
}

fn burst_spans(traces: &std::path::Path) -> Vec<Span> {
    read_spans(traces)
        .into_iter()
        .filter(|s| {
            s.name == "network.burst"
                && s.str("network.interface.name") == Some("qda0")
                && s.str("network.io.direction") == Some("transmit")
        })
        .collect()
}

fn tc_sent_packets(ns: &str) -> u64 {
    let out = run_ok(
        Command::new("tc").args(["-n", ns, "-s", "qdisc", "show", "dev", "qda0"]),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "Sent")
        .unwrap_or_else(|| panic!("tc: {text}"));
    words[i + 3]
        .parse()
        .unwrap_or_else(|_| panic!("tc: {text}"))
}

#[test]
fn a_bursts_span_carries_its_queue_delay() {
    let test = test_name!();
    let Some(_serial) = SERIAL.lock_if(require_root_and_tools(test, &["ip", "tc"])) else {
        return;
    };
    let dir = TestDir::new(test);
    let (a, b) = pods("qda0", "10.63.2.1/24", "qdb0", "10.63.2.2/24");
    let sink = b.run(|| UdpSocket::bind(SocketAddrV4::new(B_ADDR, PORT)).expect("bind sink"));
    let metrics = dir.join("metrics.jsonl");
    let traces = dir.join("traces.jsonl");
    let yaml = format!(
        "receivers:\n  tcx:\n    namespaces: [{}]\n    interfaces: {{include: [qda0]}}\n    \
         direction: [egress]\n    events: none\n    poll_interval: 5ms\n    \
         bursts: {{enabled: true}}\n  \
         qdisc: {{interfaces: {{include: [qda0]}}, poll_interval: 10ms}}\n\
         processors:\n  burst: {{interval: 500ms, merge_delay: 50ms}}\n  \
         queue: {{interval: 500ms}}\n\
         exporters:\n  file/metrics: {{path: {}, flush_interval: 100ms}}\n  \
         file/traces: {{path: {}, flush_interval: 100ms}}\n\
         service:\n  pipelines:\n    \
         metrics: {{receivers: [tcx, qdisc], processors: [burst, queue], exporters: [file/metrics]}}\n    \
         traces: {{receivers: [tcx, qdisc], processors: [burst, queue], exporters: [file/traces]}}\n  \
         telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
        a.name(),
        yaml_path(&metrics),
        yaml_path(&traces)
    );
    let config = dir.write("queue.yaml", yaml);
    let mut agent = start_agent(&config, "periscope run (queue)");
    // Ready when a warm-up burst (no queue yet) shows up as a span.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        generate(a.name(), 200, 3);
        std::thread::sleep(Duration::from_millis(300));
        if !burst_spans(&traces).is_empty() {
            break;
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "no burst span from the warm-up bursts\n--- stderr ---\n{}",
            agent.stderr()
        );
    }
    let warm = burst_spans(&traces).len();
    assert!(
        burst_spans(&traces)
            .iter()
            .all(|s| s.int("periscope.queue.max_delay_us").is_none()),
        "a noqueue device has no queue attributes"
    );
    run_ok(
        Command::new("tc").args([
            "-n",
            a.name(),
            "qdisc",
            "replace",
            "dev",
            "qda0",
            "root",
            "tbf",
            "rate",
            &format!("{RATE_BPS}bit"),
            "burst",
            "1600",
            "limit",
            "1000000",
        ]),
        Duration::from_secs(10),
    );
    const N: usize = 60;
    let tail = 50;
    generate(a.name(), N, tail);
    // Until the queue drained and the agent wrote its points.
    std::thread::sleep(Duration::from_millis(1500));
    let sent = tc_sent_packets(a.name());
    let out = stop_agent(agent, Duration::from_secs(15));
    drop(sink);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let spans = burst_spans(&traces);
    let queued: Vec<&Span> = spans[warm..]
        .iter()
        .filter(|s| s.int("periscope.queue.max_delay_us").is_some())
        .collect();
    assert_eq!(
        queued.len(),
        1,
        "one burst with a queue: {spans:#?}\n--- stderr ---\n{stderr}"
    );
    let s = queued[0];
    let max_delay = s.int("periscope.queue.max_delay_us").unwrap() as f64 * 1e-6;
    let rule = (N as u64 * FRAME) as f64 * 8.0 / RATE_BPS as f64;
    println!(
        "burst of {} packets: max queue delay {max_delay:.6}s, N×8/rate {rule:.6}s ({:+.1}%), \
         backlog {:?} B / {:?} p, drops {:?}",
        s.int("periscope.burst.packets").unwrap_or(0),
        (max_delay / rule - 1.0) * 100.0,
        s.int("periscope.queue.max_backlog_bytes"),
        s.int("periscope.queue.max_backlog_packets"),
        s.int("periscope.queue.drops"),
    );
    assert!(
        (max_delay - rule).abs() / rule <= 0.10,
        "max queue delay {max_delay}s, the rate says {rule}s"
    );
    let backlog = s.int("periscope.queue.max_backlog_packets").unwrap();
    assert!(
        backlog as usize >= N - 3 && backlog as usize <= N,
        "most backlog {backlog} packets of a {N}-packet burst"
    );
    assert_eq!(s.int("periscope.queue.drops"), Some(0));

    // Every packet the tbf sent is a sample, on the pod's namespace.
    let h = histograms(&read_metrics(&metrics), "periscope.network.queue.delay");
    let cookie = a.cookie().to_string();
    let ours: Vec<_> = h
        .iter()
        .filter(|(attrs, _)| {
            attrs.get("network.interface.name").map(String::as_str) == Some("qda0")
        })
        .collect();
    assert_eq!(ours.len(), 1, "{h:#?}");
    let (attrs, hist) = ours[0];
    assert_eq!(attrs.get("periscope.netns.cookie"), Some(&cookie));
    println!(
        "queue.delay on qda0: {} samples (tc sent {sent}), mean {:.6}s",
        hist.count,
        hist.sum / hist.count.max(1) as f64
    );
    let unmatched: u64 = stderr
        .lines()
        .filter_map(|l| {
            let i = l.find(" dequeued packets gave no queue-delay sample")?;
            l[..i].rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    // Every packet the tbf sent is a sample, or was counted (and logged) as a dequeue whose
    // enqueue the program did not see (the LRU table can evict early under contention) — or,
    // at most 2%, was dequeued without the kernel's `qdisc:qdisc_dequeue` tracepoint firing at
    // all: seen on 6.18 with `perf record -e qdisc:qdisc_dequeue` beside this test (108
    // dequeues traced of tc's 110 in a fifth of the runs, the missing two in the middle of
    // the burst: nothing the agent can count from the tracepoint).
    let untraced = sent.saturating_sub(hist.count + unmatched);
    if untraced > 0 {
        println!("{untraced} of tc's {sent} dequeues gave neither a sample nor a count");
    }
    assert!(
        hist.count <= sent && untraced * 50 <= sent,
        "{} samples, {unmatched} counted unmatched, tc sent {sent}\n--- stderr ---\n{stderr}",
        hist.count
    );
    assert!(
        hist.count * 50 >= sent * 49,
        "{} samples of {sent}: more than 2% unmatched",
        hist.count
    );
    // The generator's datagrams (and at most an ARP probe or two).
    assert!(
        sent >= (N + tail) as u64 && sent <= (N + tail) as u64 + 2,
        "tc sent {sent}"
    );
}

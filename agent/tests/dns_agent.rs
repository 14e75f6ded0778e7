//! The real `periscope` binary with the `dns` processor, end to end: `periscope run` (tcx with
//! `always_emit_dns: true` → dns → flow → identity → file; and tcx → dns → file for spans).
//!
//! Two "pod" namespaces joined by a veth pair: the client pod (`dc0` 10.216.0.1) and the
//! server pod (`ds0` 10.216.0.2, also .3 and .4). Debian's `dnsmasq` runs in the server pod on
//! 10.216.0.2:53 (foreground, no upstream, no hosts file: `--address` answers only), `dig` runs
//! in the client pod; the agent observes only the client pod (tcx ingress and egress on
//! `dc0`), and `dumpcap` captures `dc0` at the same time. Then, for the client pod:
//!
//! - `LOOKUPS` lookups of distinct names are counted exactly (one `dns.lookup.duration` sample
//!   each, `dns.response_code=noerror`), and each one's duration (its `dns.lookup` span,
//!   matched by message id) agrees with tshark's `dns.time` for the same packets within
//!   `TOLERANCE`: both are timestamps at `dc0`, periscope's at the TCX hook, dumpcap's at the
//!   packet tap, microseconds apart;
//! - a name dnsmasq answers with NXDOMAIN shows up with `dns.response_code=nxdomain`;
//! - a query to 10.216.0.3:53 (an address of the server pod where nothing listens: the
//!   kernel answers with ICMP port unreachable) is a lookup with `error.type=timeout`;
//! - a TCP connection to the address `web.periscope.test` resolved to (10.216.0.4) makes a
//!   flow series (tcx, `flow_attributes: true`) and a `tcp.connection` span (sockops →
//!   connections) with `dns.question.name=web.periscope.test` and
//!   `periscope.dns.server.address=10.216.0.2`, added by `identity`.
//!
//! Needs root, `ip`, `python3`, `dnsmasq`, `dig`, `dumpcap` and `tshark`; skips otherwise,
//! except under CI. Namespaces and processes are removed on drop (also when an assertion
//! fails), so the test can run again at once.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use periscope_testkit::capture::dns_responses;
use periscope_testkit::capture::Dumpcap;
use periscope_testkit::netns::pods;
use periscope_testkit::otlp::{complete_lines, parse_requests, sum_series};
use periscope_testkit::otlp::{histograms, read_metrics, read_spans, Span};
use periscope_testkit::periscope::start_agent;
use periscope_testkit::process::{output_with_timeout, poll, run_ok, Background};
use periscope_testkit::python::tcp_server;
use periscope_testkit::{require_root_and_tools, test_name, yaml_path, Netns, TestDir};

const TOOLS: &[&str] = &["ip", "python3", "dnsmasq", "dig", "dumpcap", "tshark"];
const SERVER: &str = "10.216.0.2";
const SILENT: &str = "10.216.0.3";
const WEB: &str = "10.216.0.4";
const WEB_PORT: u16 = 9320;
const LOOKUPS: usize = 25;
/// |periscope − tshark| per lookup.
const TOLERANCE: f64 = 200e-6;

/// `dig` in `ns`: one try, `timeout_s` to wait; returns its stdout.
fn dig(ns: &Netns, server: &str, name: &str, timeout_s: u32) -> String {
    let out = output_with_timeout(
        ns.exec("dig")
            .arg(format!("@{server}"))
            .args([
                name,
                "A",
                "+tries=1",
                &format!("+time={timeout_s}"),
                "+noedns",
                "+nocookie",
            ])
            .stdin(Stdio::null()),
        Duration::from_secs(u64::from(timeout_s) + 10),
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What the server does with each connection (see `tcp_server`).
const WEB_SERVER_PER_CONNECTION: &str = r#"
c.recv(1024)
c.sendall(b"ok")
c.close()
"#;

const WEB_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(b"hello")
assert c.recv(16) == b"ok"
c.close()
"#;

#[test]
fn dnsmasq_lookups_are_counted_timed_like_tshark_and_name_flows() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    let dir = TestDir::new("dns_agent");
    let (client, server) = pods("dc0", "10.216.0.1/24", "ds0", "10.216.0.2/24");
    server.ip(&["addr", "add", "10.216.0.3/24", "dev", "ds0"]);
    server.ip(&["addr", "add", "10.216.0.4/24", "dev", "ds0"]);
    let client_ino = client.inode().to_string();

    let mut dnsmasq = Background::spawn(
        server.exec("dnsmasq").args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            &format!("--listen-address={SERVER}"),
            "--except-interface=lo",
            "--local-ttl=300",
            "--address=/periscope.test/10.216.0.2",
            &format!("--address=/web.periscope.test/{WEB}"),
            "--address=/gone.test/",
        ]),
        "dnsmasq",
    );
    // Answers at once (before the agent starts, nothing is measured yet).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dig(&client, SERVER, "probe.periscope.test", 1).contains("10.216.0.2") {
        assert!(
            !dnsmasq.has_exited() && Instant::now() < deadline,
            "dnsmasq does not answer: {}",
            dnsmasq.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let metrics = dir.join("metrics.jsonl");
    let traces = dir.join("traces.jsonl");
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  tcx: {{namespaces: [{}], direction: [ingress, egress], events: all, always_emit_dns: true, \
             poll_interval: 20ms, counters_interval: 200ms}}\n  sockops: {{poll_interval: 20ms}}\n\
             processors:\n  dns: {{interval: 200ms, timeout: 1s}}\n  flow: {{interval: 200ms, flow_attributes: true}}\n  \
             connections: {{interval: 200ms, socket_attributes: true}}\n  \
             identity: {{process: {{enabled: false}}, container: {{enabled: false}}, netns: {{enabled: false}}}}\n\
             exporters:\n  file/metrics: {{path: {}, flush_interval: 100ms}}\n  file/traces: {{path: {}, flush_interval: 100ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [tcx, sockops], processors: [dns, connections, flow, identity], exporters: [file/metrics]}}\n    \
             traces: {{receivers: [tcx, sockops], processors: [dns, connections, identity], exporters: [file/traces]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            client.name(),
            yaml_path(&metrics),
            yaml_path(&traces),
        ),
    );
    let mut agent = start_agent(&config, "periscope");
    // Ready when a lookup made now comes out the other end.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = |h: &BTreeMap<_, _>| {
        h.keys().any(|a: &BTreeMap<String, String>| {
            a.get("dns.question.name").map(String::as_str) == Some("ready.periscope.test")
        })
    };
    agent.wait_until(Duration::from_secs(60), "sockops attached", |p| {
        p.stderr().contains("sockops attached")
    });
    loop {
        dig(&client, SERVER, "ready.periscope.test", 1);
        std::thread::sleep(Duration::from_millis(300));
        if ready(&histograms(&read_metrics(&metrics), "dns.lookup.duration")) {
            break;
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "the agent reported no lookup:\n{}",
            agent.stderr()
        );
    }

    let pcap = dir.join("dns.pcapng");
    let mut capture = Dumpcap::start(&client, "dc0", &pcap, &["-f", "port 53"]);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..LOOKUPS {
        let name = format!("host{i}.periscope.test");
        let answer = dig(&client, SERVER, &name, 2);
        assert!(answer.contains("10.216.0.2"), "{name}: {answer}");
    }
    let nx = dig(&client, SERVER, "nothing.gone.test", 2);
    assert!(nx.contains("NXDOMAIN"), "{nx}");
    let web = dig(&client, SERVER, "web.periscope.test", 2);
    assert!(web.contains(WEB), "{web}");
    // Nothing listens there: the kernel refuses, dig gives up, no DNS answer ever comes.
    dig(&client, SILENT, "silent.periscope.test", 1);
    capture.wait_until_settled(
        2 * (LOOKUPS as u64 + 2) + 1,
        Duration::from_millis(1000),
        Duration::from_secs(30),
    );
    capture.stop();

    let web_py = dir.write("web.py", tcp_server(16, WEB_SERVER_PER_CONNECTION));
    let web_server = Background::serve(
        server
            .exec("python3")
            .arg(&web_py)
            .arg(WEB)
            .arg(WEB_PORT.to_string()),
        "web server",
    );
    let client_py = dir.write("client.py", WEB_CLIENT);
    run_ok(
        client
            .exec("python3")
            .arg(&client_py)
            .arg(WEB)
            .arg(WEB_PORT.to_string())
            .stdin(Stdio::null()),
        Duration::from_secs(20),
    );

    // Everything exported: the timeout (1 s after the silent query) and the flow.
    let mine = |a: &BTreeMap<String, String>| a.get("periscope.netns.inode") == Some(&client_ino);
    let (h, flow, ..) = poll(
        Duration::from_secs(30),
        || {
            let h = histograms(&read_metrics(&metrics), "dns.lookup.duration");
            let flows = sum_series(
                &parse_requests(&complete_lines(&metrics), &metrics.display().to_string()),
                "periscope.network.packets",
            );
            let flow = flows.into_iter().find(|s| {
                s.attr("destination.address") == Some(WEB)
                    && s.attr("destination.port") == Some(&WEB_PORT.to_string())
            });
            let timed_out = h
                .keys()
                .any(|a| mine(a) && a.get("error.type").map(String::as_str) == Some("timeout"));
            let connection = read_spans(&traces).iter().any(|s| {
                s.name == "tcp.connection" && s.text("network.peer.address").as_deref() == Some(WEB)
            });
            (h, flow, timed_out, connection)
        },
        |(_, flow, timed_out, connection)| *timed_out && flow.is_some() && *connection,
    );
    agent.signal(libc::SIGTERM);
    let agent_out = agent.wait(Duration::from_secs(20));
    let log = String::from_utf8_lossy(&agent_out.stderr).to_string();

    // ---- counted exactly ----
    let count = |f: &dyn Fn(&BTreeMap<String, String>) -> bool| -> u64 {
        h.iter()
            .filter(|(a, _)| mine(a) && f(a))
            .map(|(_, l)| l.count)
            .sum()
    };
    let name_is = |a: &BTreeMap<String, String>, n: &str| {
        a.get("dns.question.name").map(String::as_str) == Some(n)
    };
    for i in 0..LOOKUPS {
        let n = format!("host{i}.periscope.test");
        assert_eq!(
            count(&|a| name_is(a, &n)
                && a.get("dns.response_code").map(String::as_str) == Some("noerror")),
            1,
            "{n}: {h:#?}\n{log}"
        );
    }
    let hosts = count(&|a| {
        a.get("dns.question.name")
            .is_some_and(|n| n.starts_with("host") && n.ends_with(".periscope.test"))
    });
    assert_eq!(hosts, LOOKUPS as u64, "{h:#?}");
    assert_eq!(
        count(&|a| name_is(a, "nothing.gone.test")
            && a.get("dns.response_code").map(String::as_str) == Some("nxdomain")),
        1,
        "{h:#?}"
    );
    assert_eq!(
        count(&|a| name_is(a, "silent.periscope.test")
            && a.get("error.type").map(String::as_str) == Some("timeout")),
        1,
        "{h:#?}\n{log}"
    );

    // ---- durations agree with tshark ----
    let sp_all = read_spans(&traces);
    let sp: Vec<Span> = sp_all
        .iter()
        .filter(|s| {
            s.name == "dns.lookup" && s.text("periscope.netns.inode").as_ref() == Some(&client_ino)
        })
        .cloned()
        .collect();
    let tshark = dns_responses(&pcap, &[]);
    let mut diffs = Vec::new();
    for t in &tshark {
        let Some(theirs) = t.time else { continue };
        let matching: Vec<&Span> = sp
            .iter()
            .filter(|s| {
                s.text("periscope.dns.id").as_ref() == Some(&t.id.to_string())
                    && s.text("dns.question.name").as_ref() == Some(&t.name)
            })
            .collect();
        assert_eq!(matching.len(), 1, "response {t:?}: spans {matching:#?}");
        let ours = matching[0].duration();
        diffs.push((t.name.clone(), ours, theirs, (ours - theirs).abs()));
    }
    assert_eq!(diffs.len(), LOOKUPS + 2, "tshark's responses: {tshark:#?}");
    let worst = diffs.iter().map(|d| d.3).fold(0.0, f64::max);
    let mean_ours = diffs.iter().map(|d| d.1).sum::<f64>() / diffs.len() as f64;
    let mean_theirs = diffs.iter().map(|d| d.2).sum::<f64>() / diffs.len() as f64;
    eprintln!(
        "dns: {} lookups in pod {client_ino}; mean duration periscope {:.1} µs, tshark {:.1} µs; worst |difference| {:.1} µs (tolerance {:.0} µs)",
        diffs.len(),
        mean_ours * 1e6,
        mean_theirs * 1e6,
        worst * 1e6,
        TOLERANCE * 1e6
    );
    for d in &diffs {
        assert!(
            d.3 <= TOLERANCE,
            "{}: periscope {} s, tshark {} s",
            d.0,
            d.1,
            d.2
        );
    }
    let silent = sp
        .iter()
        .find(|s| s.text("dns.question.name").as_deref() == Some("silent.periscope.test"))
        .unwrap_or_else(|| panic!("no span for the unanswered lookup: {sp:#?}"));
    assert_eq!(silent.text("error.type").as_deref(), Some("timeout"));

    // ---- the connection to the resolved address is named ----
    let flow = flow.unwrap_or_else(|| panic!("no flow to {WEB}:{WEB_PORT}\n{log}"));
    assert_eq!(
        flow.attr("dns.question.name"),
        Some("web.periscope.test"),
        "{flow:#?}"
    );
    assert_eq!(
        flow.attr("periscope.dns.server.address"),
        Some(SERVER),
        "{flow:#?}"
    );
    eprintln!(
        "dns: flow {} → {WEB}:{WEB_PORT} ({} packets) carries dns.question.name=web.periscope.test",
        flow.attr("source.address").unwrap_or("?"),
        flow.value
    );
    let conn = sp_all
        .iter()
        .find(|s| {
            s.name == "tcp.connection"
                && s.text("network.peer.address").as_deref() == Some(WEB)
                && s.text("periscope.netns.inode").as_ref() == Some(&client_ino)
        })
        .unwrap_or_else(|| panic!("no tcp.connection span to {WEB}\n{log}"));
    assert_eq!(
        conn.text("dns.question.name").as_deref(),
        Some("web.periscope.test"),
        "{conn:#?}"
    );
    assert_eq!(
        conn.text("periscope.dns.server.address").as_deref(),
        Some(SERVER)
    );
    eprintln!(
        "dns: tcp.connection span {}:{} → {WEB}:{WEB_PORT} carries dns.question.name=web.periscope.test",
        conn.text("network.local.address").unwrap_or_else(|| "?".into()),
        conn.text("network.local.port").unwrap_or_else(|| "?".into()),
    );
    web_server.signal(libc::SIGKILL);
    dnsmasq.signal(libc::SIGKILL);
}

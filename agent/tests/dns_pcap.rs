//! DNS from a capture file: `periscope run` (pcap → dns → flow → identity → file) over a
//! pcapng this test writes, compared with what the test put in it and with tshark's
//! `dns.time` for the same packets.
//!
//! The capture holds lookups over UDP and TCP (with the 2-byte length prefix) with known
//! query → response gaps, an NXDOMAIN, a query never answered, a garbage payload on port 53,
//! a later lookup (3 s on, past the 1 s timeout), and TCP segments to a resolved and to an
//! unresolved address. Checked: one lookup per question with exactly the written duration
//! (capture timestamps are nanoseconds) and within 1 µs of tshark's `dns.time`; the NXDOMAIN
//! and the timeout with their `dns.response_code` / `error.type`; a `dns.lookup` span per
//! lookup; the garbage payload is an error (logged), not a crash; and the flow to the
//! resolved address carries `dns.question.name` and `periscope.dns.server.address`, the other
//! flow neither.
//!
//! Needs tshark; skips without it, except under CI. No root.

use std::net::Ipv4Addr;
use std::time::Duration;

use periscope_testkit::capture::dns_responses;
use periscope_testkit::otlp::{histograms, read_metrics, read_spans};
use periscope_testkit::otlp::{read_requests, sum_series};
use periscope_testkit::pcapgen::{
    dns_message, pcapng, tcp_frame_with_payload, udp_frame_with_payload, Record,
};
use periscope_testkit::periscope::{describe_output, run_periscope_config};
use periscope_testkit::{require_tools, test_name, yaml_path, TestDir};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 220, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 220, 0, 53);
const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

/// (id, name, answers, rcode, delay ns, tcp)
type Lookup = (u16, &'static str, &'static [Ipv4Addr], u8, u64, bool);

const WEB: Ipv4Addr = Ipv4Addr::new(10, 220, 1, 10);
const LOOKUPS: &[Lookup] = &[
    (0x1001, "web.example.test", &[WEB], 0, 1_250_000, false),
    (
        0x1002,
        "db.example.test",
        &[Ipv4Addr::new(10, 220, 1, 20), Ipv4Addr::new(10, 220, 1, 21)],
        0,
        3_500_000,
        false,
    ),
    (0x1003, "missing.example.test", &[], 3, 800_000, false),
    (
        0x1004,
        "tcp.example.test",
        &[Ipv4Addr::new(10, 220, 1, 30)],
        0,
        2_200_000,
        true,
    ),
];

fn frames() -> Vec<Record> {
    let mut r = Vec::new();
    let mut t = T0;
    for (i, &(id, name, answers, rcode, delay, tcp)) in LOOKUPS.iter().enumerate() {
        let port = 50_000 + i as u16;
        let q = dns_message(id, false, 0, name, 1, &[], 0);
        let a = dns_message(id, true, rcode, name, 1, answers, 300);
        if tcp {
            let framed = |m: &[u8]| {
                let mut v = (m.len() as u16).to_be_bytes().to_vec();
                v.extend_from_slice(m);
                v
            };
            r.push(Record::new(
                t,
                tcp_frame_with_payload(CLIENT, port, SERVER, 53, 1000, 2000, &framed(&q)),
            ));
            r.push(Record::new(
                t + delay,
                tcp_frame_with_payload(
                    SERVER,
                    53,
                    CLIENT,
                    port,
                    2000,
                    1000 + 2 + q.len() as u32,
                    &framed(&a),
                ),
            ));
        } else {
            r.push(Record::new(
                t,
                udp_frame_with_payload(CLIENT, port, SERVER, 53, &q),
            ));
            r.push(Record::new(
                t + delay,
                udp_frame_with_payload(SERVER, 53, CLIENT, port, &a),
            ));
        }
        t += 10 * MS;
    }
    // Never answered.
    let q = dns_message(0x1005, false, 0, "silent.example.test", 1, &[], 0);
    r.push(Record::new(
        t,
        udp_frame_with_payload(CLIENT, 50_100, SERVER, 53, &q),
    ));
    // Not DNS at all, on port 53.
    r.push(Record::new(
        t + MS,
        udp_frame_with_payload(CLIENT, 50_101, SERVER, 53, &[0xff; 20]),
    ));
    // 3 s later: another lookup (event time passes the silent query's timeout), then traffic.
    let t = T0 + 3_000 * MS;
    let late = [Ipv4Addr::new(10, 220, 1, 40)];
    let q = dns_message(0x1006, false, 0, "late.example.test", 1, &[], 0);
    let a = dns_message(0x1006, true, 0, "late.example.test", 1, &late, 60);
    r.push(Record::new(
        t,
        udp_frame_with_payload(CLIENT, 50_102, SERVER, 53, &q),
    ));
    r.push(Record::new(
        t + 5 * MS,
        udp_frame_with_payload(SERVER, 53, CLIENT, 50_102, &a),
    ));
    for (i, dst) in [WEB, Ipv4Addr::new(10, 220, 9, 9)].into_iter().enumerate() {
        r.push(Record::new(
            t + (100 + i as u64) * MS,
            tcp_frame_with_payload(CLIENT, 40_000, dst, 443, 1, 1, b"hello"),
        ));
    }
    r
}

#[test]
fn pcap_dns_lookups_match_the_capture_and_tshark() {
    let test = test_name!();
    if !require_tools(test, &["tshark"]) {
        return;
    }
    let dir = TestDir::new("dns_pcap");
    let pcap = dir.write("dns.pcapng", pcapng(&frames(), "dns0").bytes);
    let metrics = dir.join("metrics.jsonl");
    let traces = dir.join("traces.jsonl");
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  pcap: {{path: {}}}\n\
             processors:\n  dns: {{interval: 1h, timeout: 1s}}\n  flow: {{interval: 1h, flow_attributes: true}}\n  \
             identity: {{process: {{enabled: false}}, container: {{enabled: false}}, netns: {{enabled: false}}}}\n\
             exporters:\n  file/metrics: {{path: {}, flush_interval: 100ms}}\n  file/traces: {{path: {}, flush_interval: 100ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [pcap], processors: [dns, flow, identity], exporters: [file/metrics]}}\n    \
             traces: {{receivers: [pcap], processors: [dns], exporters: [file/traces]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: false}}}}\n",
            yaml_path(&pcap),
            yaml_path(&metrics),
            yaml_path(&traces),
        ),
    );
    let out = run_periscope_config("run", &config, Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe_output(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DNS section counts") || stderr.contains("malformed DNS"),
        "the garbage payload is reported: {stderr}"
    );

    // ---- the histogram: one lookup per question, durations as written ----
    let h = histograms(&read_metrics(&metrics), "dns.lookup.duration");
    let by_name = |name: &str| {
        h.iter()
            .filter(|(a, _)| a.get("dns.question.name").map(String::as_str) == Some(name))
            .map(|(a, l)| (a.clone(), l.clone()))
            .collect::<Vec<_>>()
    };
    let tshark = dns_responses(&pcap, &[]);
    eprintln!("tshark: {tshark:?}");
    let mut worst: f64 = 0.0;
    for &(id, name, _, rcode, delay, _) in
        LOOKUPS
            .iter()
            .chain([&(0x1006, "late.example.test", &[][..], 0, 5 * MS, false)])
    {
        let s = by_name(name);
        assert_eq!(s.len(), 1, "{name}: {h:#?}");
        let (attrs, l) = &s[0];
        assert_eq!(l.count, 1, "{name}");
        let ours = l.sum;
        assert!((ours - delay as f64 * 1e-9).abs() < 1e-9, "{name}: {ours}");
        let code = if rcode == 3 { "nxdomain" } else { "noerror" };
        assert_eq!(
            attrs.get("dns.response_code").map(String::as_str),
            Some(code),
            "{name}"
        );
        assert_eq!(
            attrs.get("dns.question.type").map(String::as_str),
            Some("A")
        );
        let t = tshark
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("tshark has no response {id:#x}: {tshark:?}"));
        assert_eq!((t.name.as_str(), t.rcode), (name, rcode));
        let theirs = t.time.unwrap_or_else(|| panic!("{name}: no dns.time"));
        worst = worst.max((ours - theirs).abs());
        assert!(
            (ours - theirs).abs() < 1e-6,
            "{name}: periscope {ours}, tshark {theirs}"
        );
    }
    eprintln!(
        "dns.lookup.duration vs tshark dns.time: worst difference {worst:e} s over 5 lookups"
    );
    let timeouts: Vec<_> = h
        .iter()
        .filter(|(a, _)| a.get("error.type").map(String::as_str) == Some("timeout"))
        .collect();
    assert_eq!(timeouts.len(), 1, "{h:#?}");
    assert_eq!(
        timeouts[0].0.get("dns.question.name").map(String::as_str),
        Some("silent.example.test")
    );
    assert_eq!(timeouts[0].1.count, 1);
    assert!((timeouts[0].1.sum - 1.0).abs() < 1e-9);
    assert_eq!(h.values().map(|l| l.count).sum::<u64>(), 6, "{h:#?}");

    // ---- a span per lookup ----
    let sp: Vec<_> = read_spans(&traces)
        .into_iter()
        .filter(|s| s.name == "dns.lookup")
        .collect();
    assert_eq!(sp.len(), 6, "{sp:#?}");
    assert!(sp.iter().all(|s| s.kind == 3), "SPAN_KIND_CLIENT");
    let silent = sp
        .iter()
        .find(|s| s.text("dns.question.name").as_deref() == Some("silent.example.test"))
        .expect("timeout span");
    assert_eq!(silent.text("error.type").as_deref(), Some("timeout"));
    assert_eq!(silent.status, 2);
    let web = sp
        .iter()
        .find(|s| s.text("dns.question.name").as_deref() == Some("web.example.test"))
        .expect("web span");
    assert!((web.duration() - 1.25e-3).abs() < 1e-9);
    assert_eq!(
        web.text("periscope.dns.server.address").as_deref(),
        Some("10.220.0.53")
    );

    // ---- flows to resolved addresses are named ----
    let flows = sum_series(&read_requests(&metrics), "periscope.network.packets");
    let to = |dst: &str| {
        flows
            .iter()
            .find(|s| {
                s.attr("destination.address") == Some(dst)
                    && s.attr("destination.port") == Some("443")
            })
            .unwrap_or_else(|| panic!("no flow to {dst}: {flows:#?}"))
    };
    let named = to("10.220.1.10");
    assert_eq!(named.attr("dns.question.name"), Some("web.example.test"));
    assert_eq!(
        named.attr("periscope.dns.server.address"),
        Some("10.220.0.53")
    );
    let unnamed = to("10.220.9.9");
    assert_eq!(unnamed.attr("dns.question.name"), None);
    // The DNS packets themselves are still counted as flows.
    assert!(flows
        .iter()
        .any(|s| s.attr("destination.port") == Some("53")));
}

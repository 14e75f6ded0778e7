//! Replays real captures through `periscope run` (pcap → flow → file) and compares what it
//! counts with what `tshark` counts in the same file.
//!
//! Each test builds two network namespaces joined by a veth pair (10.200.0.0/24), captures on
//! one end with `dumpcap` while a Python generator exchanges ICMP echoes, UDP datagrams and a
//! TCP stream, and checks the capture against the generator's own counts before using it.
//! Those tests need root and tshark (`DEBIAN_FRONTEND=noninteractive apt-get install -y
//! tshark`) and skip without them, except under CI. The direction-flag test writes its own
//! pcapng and always runs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use serde_json::Value;

use periscope_testkit::capture::{Dumpcap, DumpcapStats, GroundTruth, Totals};
use periscope_testkit::netns::pods;
use periscope_testkit::otlp::{
    metric_names, read_requests, sum_by, sum_by_keys, sum_series, total, values_of, Series,
};
use periscope_testkit::pcapgen::{pcapng, sample_records, Record, EPB_OUTBOUND};
use periscope_testkit::periscope::{describe_output, run_periscope_config};
use periscope_testkit::process::{run_ok, Background};
use periscope_testkit::{require_root_and_tools, test_name, yaml_path, TestDir};

const TOOLS: &[&str] = &["ip", "dumpcap", "tshark", "editcap", "python3"];
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// The interface the capture is taken on; it names the device in pcapng files, and in classic
/// pcap files the file is named after it so that its stem names the device too.
const IFACE: &str = "peri-b";
const ADDR_A: &str = "10.200.0.1";
const ADDR_B: &str = "10.200.0.2";
const UDP_PORT: &str = "9000";
const TCP_PORT: &str = "9001";

/// Serves (in namespace B) or generates (in namespace A) the traffic, and prints its own counts
/// as JSON. Every socket has a timeout, so nothing waits forever.
const TRAFFIC_PY: &str = r#"
import json, os, socket, struct, sys, time

def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF

def ping(dst, count, interval):
    """ICMP echo requests on a raw socket; returns how many were answered."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.settimeout(2.0)
    ident = os.getpid() & 0xFFFF
    replies = 0
    for seq in range(count):
        payload = bytes(range(56))
        header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        packet = struct.pack("!BBHHH", 8, 0, checksum(header + payload), ident, seq) + payload
        sock.sendto(packet, (dst, 0))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(2048)
            except socket.timeout:
                break
            ihl = (data[0] & 0x0F) * 4
            kind, _code, _sum, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if kind == 0 and rid == ident and rseq == seq:
                replies += 1
                break
        if seq + 1 < count:
            time.sleep(interval)
    sock.close()
    return replies

def serve(addr, udp_port, tcp_port, udp_expected):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, udp_port))
    u.settimeout(15.0)
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, tcp_port))
    t.listen(1)
    t.settimeout(15.0)
    print("ready", flush=True)
    echoed = 0
    while echoed < udp_expected:
        data, peer = u.recvfrom(65535)
        u.sendto(data, peer)
        echoed += 1
    conn, _ = t.accept()
    conn.settimeout(15.0)
    received = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        received += len(chunk)
    conn.sendall(str(received).encode())
    conn.close()
    print(json.dumps({"udp_echoed": echoed, "tcp_received": received}), flush=True)

def client(dst, udp_port, tcp_port, udp_count, tcp_bytes, pings, ping_interval):
    replies = ping(dst, pings, ping_interval)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2.0)
    sent = echoes = 0
    for i in range(udp_count):
        data = bytes([i % 256]) * (20 + 97 * i)
        u.sendto(data, (dst, udp_port))
        sent += 1
        echo, _ = u.recvfrom(65535)
        if echo == data:
            echoes += 1
    c = socket.create_connection((dst, tcp_port), timeout=10.0)
    c.sendall(bytes(i % 251 for i in range(tcp_bytes)))
    c.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        chunk = c.recv(100)
        if not chunk:
            break
        reply += chunk
    c.close()
    print(json.dumps({"pings": pings, "ping_replies": replies, "udp_sent": sent,
                      "udp_echoes": echoes, "tcp_sent": tcp_bytes,
                      "tcp_acknowledged": int(reply or b"0")}), flush=True)

if sys.argv[1] == "serve":
    serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
else:
    client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
           int(sys.argv[7]), float(sys.argv[8]))
"#;

/// How much traffic to make.
struct Traffic {
    pings: u64,
    ping_interval: f64,
    udp_datagrams: u64,
    tcp_bytes: u64,
}

/// A capture of the generated traffic, already checked against the generator's counts.
struct Captured {
    pcapng: PathBuf,
    truth: GroundTruth,
    dumpcap: DumpcapStats,
}

fn json_line(stdout: &str, what: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{what} printed no counts:\n{stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: bad counts `{line}`: {e}"))
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count `{key}` in {v}"))
}

/// Builds the namespaces, captures the traffic into `<dir>/peri-b.pcapng`, tears the
/// namespaces down, and checks the capture against what the generator says it did.
fn capture_traffic(dir: &TestDir, traffic: &Traffic) -> Captured {
    let pcapng = dir.join(format!("{IFACE}.pcapng"));
    let (client, server, dumpcap) = {
        // IPv6 off: it would add router solicitations and MLD reports nobody asked for.
        let (a, b) = pods(
            "peri-a",
            &format!("{ADDR_A}/24"),
            IFACE,
            &format!("{ADDR_B}/24"),
        );
        let script = dir.write("traffic.py", TRAFFIC_PY);
        let mut capture = Dumpcap::start(&b, IFACE, &pcapng, &[]);
        let server = Background::serve(
            b.exec("python3").arg(&script).args([
                "serve",
                ADDR_B,
                UDP_PORT,
                TCP_PORT,
                &traffic.udp_datagrams.to_string(),
            ]),
            "traffic server",
        );
        let client = run_ok(
            a.exec("python3").arg(&script).args([
                "client",
                ADDR_B,
                UDP_PORT,
                TCP_PORT,
                &traffic.udp_datagrams.to_string(),
                &traffic.tcp_bytes.to_string(),
                &traffic.pings.to_string(),
                &traffic.ping_interval.to_string(),
            ]),
            Duration::from_secs(20),
        );
        let server = server.wait_ok(Duration::from_secs(10));
        // Let dumpcap write everything before it stops: echoes, datagrams and their echoes,
        // and at least a TCP handshake, data and teardown; then nothing for a while.
        let minimum = 2 * traffic.pings + 2 * traffic.udp_datagrams + 6;
        capture.wait_until_settled(
            minimum,
            Duration::from_millis(1500),
            Duration::from_secs(15),
        );
        let stats = capture.stop();
        (
            json_line(&String::from_utf8_lossy(&client.stdout), "traffic client"),
            json_line(&server, "traffic server"),
            stats,
        )
        // The namespaces go here, with their veths.
    };

    // The generator did what it was asked...
    assert_eq!(count(&client, "ping_replies"), traffic.pings, "{client}");
    assert_eq!(
        count(&client, "udp_echoes"),
        traffic.udp_datagrams,
        "{client}"
    );
    assert_eq!(
        count(&server, "udp_echoed"),
        traffic.udp_datagrams,
        "{server}"
    );
    assert_eq!(
        count(&server, "tcp_received"),
        traffic.tcp_bytes,
        "{server}"
    );
    assert_eq!(
        count(&client, "tcp_acknowledged"),
        traffic.tcp_bytes,
        "{client}"
    );

    // ...and the capture holds all of it.
    let truth = GroundTruth::read(&pcapng);
    assert_eq!(dumpcap.dropped, 0, "dumpcap dropped packets: {dumpcap:?}");
    assert_eq!(
        dumpcap.captured,
        truth.frames.len() as u64,
        "dumpcap and tshark disagree on the capture"
    );
    let by_transport = truth.by_transport();
    let packets = |t: &str| by_transport.get(t).map_or(0, |c| c.packets);
    assert_eq!(
        packets("icmp"),
        2 * traffic.pings,
        "echo requests and replies"
    );
    assert_eq!(
        packets("udp"),
        2 * traffic.udp_datagrams,
        "datagrams and echoes"
    );
    assert!(
        packets("tcp") >= 6,
        "a TCP connection with data: {by_transport:?}"
    );
    Captured {
        pcapng,
        truth,
        dumpcap,
    }
}

/// What one replay wrote, and how long it took by the test's clock.
struct Replay {
    requests: Vec<ExportMetricsServiceRequest>,
    packets: Vec<Series>,
    bytes: Vec<Series>,
    elapsed: Duration,
}

/// Runs `periscope run` with pcap → flow → file on `capture` and decodes the output.
fn replay(
    dir: &TestDir,
    name: &str,
    capture: &Path,
    speed: &str,
    flow: &str,
    self_metrics: bool,
) -> Replay {
    let output = dir.join(format!("{name}.jsonl"));
    let yaml = format!(
        "receivers:\n  pcap: {{path: {}, speed: {speed}}}\n\
         processors:\n  flow: {{{flow}}}\n\
         exporters:\n  file: {{path: {}}}\n\
         service:\n  pipelines:\n    metrics: {{receivers: [pcap], processors: [flow], exporters: [file]}}\n  \
         telemetry: {{metrics: {{enabled: {self_metrics}}}}}\n",
        yaml_path(capture),
        yaml_path(&output)
    );
    let config = dir.write(&format!("{name}.yaml"), yaml);
    let started = Instant::now();
    let out = run_periscope_config("run", &config, RUN_TIMEOUT);
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{name}: replay of {} failed\n{}",
        capture.display(),
        describe_output(&out)
    );
    let requests = read_requests(&output);
    assert!(
        !requests.is_empty(),
        "{name}: {} is empty",
        output.display()
    );
    Replay {
        packets: sum_series(&requests, "periscope.network.packets"),
        bytes: sum_series(&requests, "periscope.network.bytes"),
        requests,
        elapsed,
    }
}

/// `tshark`'s per-transport counts as `transport → packets` and `transport → bytes`.
fn split(by: &BTreeMap<String, Totals>) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let as_i64 = |v: u64| i64::try_from(v).expect("count fits i64");
    (
        by.iter()
            .map(|(k, t)| (k.clone(), as_i64(t.packets)))
            .collect(),
        by.iter()
            .map(|(k, t)| (k.clone(), as_i64(t.bytes)))
            .collect(),
    )
}

/// Packets and bytes equal tshark's exactly, in total and per transport; every series is on
/// the capture's interface, in no namespace (inode 0), with a valid direction.
fn assert_matches(name: &str, r: &Replay, truth: &GroundTruth, iface: &str) {
    let t = truth.total();
    assert_eq!(
        (total(&r.packets), total(&r.bytes)),
        (t.packets as i64, t.bytes as i64),
        "{name}: (packets, bytes) should be what tshark counts in {}",
        truth.file.display()
    );
    let (packets, bytes) = split(&truth.by_transport());
    assert_eq!(
        sum_by(&r.packets, "network.transport"),
        packets,
        "{name}: packets per transport"
    );
    assert_eq!(
        sum_by(&r.bytes, "network.transport"),
        bytes,
        "{name}: bytes per transport"
    );
    for (metric, series) in [("packets", &r.packets), ("bytes", &r.bytes)] {
        assert_eq!(
            values_of(series, "network.interface.name"),
            [iface.to_string()].into(),
            "{name}: {metric}: network.interface.name"
        );
        assert_eq!(
            values_of(series, "periscope.netns.inode"),
            ["0".to_string()].into(),
            "{name}: {metric}: a capture file has no namespace"
        );
        let directions = values_of(series, "network.io.direction");
        assert!(
            directions.iter().all(|d| d == "receive" || d == "transmit"),
            "{name}: {metric}: network.io.direction {directions:?}"
        );
    }
    // Both metrics describe the same series.
    let keys = |s: &[Series]| -> Vec<_> { s.iter().map(|s| s.attributes.clone()).collect() };
    assert_eq!(
        keys(&r.packets),
        keys(&r.bytes),
        "{name}: packets and bytes series differ"
    );
}

#[test]
fn pcapng_and_classic_pcap_replays_match_tshark() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    let dir = TestDir::new("pcap_replay");
    let captured = capture_traffic(
        &dir,
        &Traffic {
            pings: 4,
            ping_interval: 0.05,
            udp_datagrams: 8,
            tcp_bytes: 300_000,
        },
    );
    let truth = &captured.truth;
    eprintln!(
        "capture: {} packets, {} bytes; per transport {:?}; dumpcap {:?}",
        truth.total().packets,
        truth.total().bytes,
        truth.by_transport(),
        captured.dumpcap
    );

    // pcapng, as dumpcap wrote it: the interface name comes from the file.
    let r = replay(
        &dir,
        "pcapng",
        &captured.pcapng,
        "max",
        "interval: 60s, flow_attributes: false",
        false,
    );
    assert_matches("pcapng", &r, truth, IFACE);
    assert_eq!(
        metric_names(&r.requests),
        ["periscope.network.bytes", "periscope.network.packets"]
            .map(String::from)
            .into(),
        "pcapng: with self-telemetry off, only the flow metrics"
    );

    // Classic pcap with microsecond timestamps, cut to 96 bytes per packet: bytes must still
    // be the length on the wire (tshark's frame.len), not what the file stores.
    let classic = dir.join(format!("{IFACE}.pcap"));
    run_ok(
        Command::new("editcap")
            .args(["-F", "pcap", "-s", "96"])
            .arg(&captured.pcapng)
            .arg(&classic),
        Duration::from_secs(20),
    );
    let classic_truth = GroundTruth::read(&classic);
    assert_eq!(
        classic_truth.total(),
        truth.total(),
        "editcap keeps frame lengths"
    );
    assert!(
        classic_truth.captured_bytes() < classic_truth.total().bytes,
        "the snap length should have cut packets"
    );
    let r = replay(
        &dir,
        "pcap",
        &classic,
        "max",
        "interval: 60s, flow_attributes: false",
        false,
    );
    assert_matches("pcap", &r, &classic_truth, IFACE);

    // Classic pcap with nanosecond timestamps, one series per 5-tuple, and the agent's own
    // counters on: per-flow counts must match tshark's, and the receiver must say it sent
    // every packet.
    std::fs::create_dir(dir.join("nsec")).expect("mkdir");
    let nsec = dir.join("nsec").join(format!("{IFACE}.pcap"));
    run_ok(
        Command::new("editcap")
            .args(["-F", "nsecpcap"])
            .arg(&captured.pcapng)
            .arg(&nsec),
        Duration::from_secs(20),
    );
    let nsec_truth = GroundTruth::read(&nsec);
    let r = replay(
        &dir,
        "nsecpcap-flows",
        &nsec,
        "max",
        "interval: 60s, flow_attributes: true",
        true,
    );
    assert_matches("nsecpcap", &r, &nsec_truth, IFACE);
    let flow_keys = [
        "network.transport",
        "source.address",
        "source.port",
        "destination.address",
        "destination.port",
    ];
    for (metric, series, pick) in [
        (
            "packets",
            &r.packets,
            (|t: &Totals| t.packets) as fn(&Totals) -> u64,
        ),
        ("bytes", &r.bytes, |t: &Totals| t.bytes),
    ] {
        let mut ours = sum_by_keys(series, &flow_keys);
        // ARP has no addresses tshark would show; it is checked in the totals above.
        ours.retain(|k, _| k[0] != "other");
        let theirs: BTreeMap<Vec<String>, i64> = nsec_truth
            .by_flow()
            .into_iter()
            .map(|(k, t)| (k.to_vec(), pick(&t) as i64))
            .collect();
        assert_eq!(ours, theirs, "nsecpcap: {metric} per 5-tuple");
    }
    let packets = i64::try_from(nsec_truth.total().packets).expect("fits");
    let component = |metric: &str, kind: &str, id: &str| -> i64 {
        let series = sum_series(&r.requests, metric);
        let found: Vec<&Series> = series
            .iter()
            .filter(|s| {
                s.attr("periscope.component.kind") == Some(kind)
                    && s.attr("periscope.component.id") == Some(id)
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one {metric} series for {kind} {id}: {series:?}"
        );
        found[0].value
    };
    assert_eq!(
        component("periscope.component.sent", "receiver", "pcap"),
        packets,
        "the receiver's own count of events sent"
    );
    assert_eq!(
        component("periscope.component.received", "processor", "flow"),
        packets,
        "the flow processor's own count of events received"
    );
    assert_eq!(
        component("periscope.component.errors", "receiver", "pcap"),
        0,
        "receiver errors"
    );
    let dropped = sum_series(&r.requests, "periscope.component.dropped");
    assert_eq!(
        total(&dropped),
        0,
        "nothing may be dropped in a replay: {dropped:?}"
    );
}

#[test]
fn realtime_replay_keeps_the_capture_pacing() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    let dir = TestDir::new("pcap_realtime");
    // Six echoes 300 ms apart: the capture spans about 1.5 s.
    let captured = capture_traffic(
        &dir,
        &Traffic {
            pings: 6,
            ping_interval: 0.3,
            udp_datagrams: 4,
            tcp_bytes: 50_000,
        },
    );
    let truth = &captured.truth;
    let span = truth.duration();
    assert!(
        span >= Duration::from_secs(1),
        "the capture should span at least 1 s, spans {span:?}"
    );

    // Flushed every 200 ms while it replays, so the file holds several cumulative points per
    // series: the last must still equal tshark's counts.
    let realtime = replay(
        &dir,
        "realtime",
        &captured.pcapng,
        "realtime",
        "interval: 200ms",
        false,
    );
    assert_matches("realtime", &realtime, truth, IFACE);
    assert!(
        realtime.packets.iter().any(|s| s.points > 1),
        "a flow interval of 200 ms over a {span:?} replay should emit some series more than once"
    );
    let fast = replay(&dir, "max", &captured.pcapng, "max", "interval: 60s", false);
    assert_matches("max", &fast, truth, IFACE);
    eprintln!(
        "capture spans {span:?}; realtime replay took {:?}, max speed {:?}",
        realtime.elapsed, fast.elapsed
    );
    assert!(
        realtime.elapsed >= span.mul_f64(0.9),
        "a realtime replay of a {span:?} capture took only {:?}",
        realtime.elapsed
    );
    assert!(
        realtime.elapsed <= span + Duration::from_secs(5),
        "a realtime replay of a {span:?} capture took {:?}",
        realtime.elapsed
    );
    assert!(
        fast.elapsed < span.mul_f64(0.5),
        "a max-speed replay should not keep the capture's pace: {:?} for a {span:?} capture",
        fast.elapsed
    );
}

#[test]
fn pcapng_direction_flags_become_network_io_direction() {
    // No root needed: the capture is written by the test, which knows each packet's flag.
    let dir = TestDir::new("pcap_direction");
    let ours = Ipv4Addr::new(10, 99, 0, 1);
    let records: Vec<Record> = sample_records(1_700_000_000_000_000_000)
        .into_iter()
        .map(|r| {
            let src = Ipv4Addr::new(r.data[26], r.data[27], r.data[28], r.data[29]);
            if src == ours {
                r.outbound()
            } else {
                r.inbound()
            }
        })
        .collect();
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in &records {
        let direction = if r.epb_flags == Some(EPB_OUTBOUND) {
            "transmit"
        } else {
            "receive"
        };
        let e = expected.entry(direction.to_string()).or_default();
        e.0 += 1;
        e.1 += i64::from(r.orig_len);
    }
    assert_eq!(expected.len(), 2, "both directions present: {expected:?}");
    let capture = dir.write("flags.pcapng", pcapng(&records, "eth7").bytes);
    let r = replay(&dir, "flags", &capture, "max", "interval: 60s", false);
    let packets = sum_by(&r.packets, "network.io.direction");
    let bytes = sum_by(&r.bytes, "network.io.direction");
    let got: BTreeMap<String, (i64, i64)> = packets
        .iter()
        .map(|(d, p)| (d.clone(), (*p, bytes.get(d).copied().unwrap_or(0))))
        .collect();
    assert_eq!(got, expected, "(packets, bytes) per network.io.direction");
    assert_eq!(
        values_of(&r.packets, "network.interface.name"),
        ["eth7".to_string()].into(),
        "the pcapng if_name names the device"
    );
}

//! The service graph, flows joined with their sockets, and the Grafana dashboards, end to end:
//! `periscope run` with `tcx` (flows, bursts, DNS records), `sockops` and `tcp_udp`
//! (`send_receive: tcp`, drops) → `servicegraph`, `dns`, `latency`, `burst`, `connections`,
//! `flow` (`flow_attributes`), `identity` → Prometheus exporter and OTLP/JSON files, while a
//! real Prometheus (Debian's package) scrapes the agent.
//!
//! Three "workloads", each a network namespace on a bridge in a fourth ("node") namespace:
//! `sg-front-<pid>` (10.62.0.1), `sg-api-<pid>` (10.62.0.2) and `sg-db-<pid>` (10.62.0.3).
//! Python servers answer after a delay the test chose (api 30 ms, db 10 ms) and log each
//! connection's life (accept → close) on their own clock; Python clients make a known number
//! of connections, time each one (connect → close, and request → first byte of the answer) and
//! count their failures:
//!
//! - front → api:8080, `FRONT_API` connections; api → db:5432, `API_DB` connections; api →
//!   db:5433 (nothing listens: refused), `REFUSED` connects; front → 10.62.0.99:80 (a
//!   neighbour entry to a MAC nobody has: the SYN is retransmitted, then the client gives up),
//!   `TIMEOUTS` connects: a virtual node (not observed here).
//! - Expected, per edge: requests and failures equal to the clients' counts, the workload
//!   names of the namespaces, `connection_type` empty except for the virtual node; response
//!   time p50, server-side and client-side connection life p50 within `P50_TOLERANCE` of the
//!   generators' own medians; bytes to the server equal to what the clients sent, bytes back
//!   what the servers sent (+1 per connection at most: a FIN received); front's retransmits
//!   equal to the `RetransSegs` its namespace's kernel counted.
//! - Flows and spans: every client span front → api carries `periscope.flow.*`; those equal
//!   the flow series of its 5-tuple on front's `eth0` exactly, and are its payload plus the
//!   documented headers (Ethernet 14 + IPv4 20 + TCP 32 with timestamps per packet, 8 more for
//!   the SYN's options); the flow's `periscope.network.flow.rtt` equals the span's
//!   `periscope.tcp.srtt_us`.
//! - Dashboards: every panel query of every `deploy/grafana/*.json` dashboard returns non-zero
//!   data from Prometheus during the traffic (`$__rate_interval` = 1m). The traffic is spread
//!   over several scrapes (a series Prometheus first sees with its final value has no rate), and
//!   made for every panel: DNS lookups with NXDOMAINs, UDP bursts, refused connects and UDP to
//!   a closed port (drops), SYN retransmits, and a second `tcx` receiver on the node's devices
//!   with a one-page ring buffer that the bursts overflow (records lost). `ZERO_OK` lists
//!   panels allowed to be all zero, with the reason (none now).
//!
//! Needs root, `ip`, `python3`, `dnsmasq`, `dig`, `prometheus`; skips otherwise, except under CI.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use periscope_testkit::http::{http_get, urlencode};
use periscope_testkit::netns::in_netns;
use periscope_testkit::otlp::sink::{free_port, wait_for_port};
use periscope_testkit::otlp::{points, read_metrics, read_spans, sum_series, PointData};
use periscope_testkit::periscope::{start_agent, stop_agent};
use periscope_testkit::process::{output_with_timeout, run_ok, Background};
use periscope_testkit::python::tcp_server;
use periscope_testkit::stats::median;
use periscope_testkit::{require_root_and_tools, test_name, yaml_path, Netns, TestDir};

const TOOLS: &[&str] = &["ip", "python3", "dnsmasq", "dig", "prometheus"];
const FRONT: &str = "10.62.0.1";
const API: &str = "10.62.0.2";
const DB: &str = "10.62.0.3";
const NOBODY: &str = "10.62.0.99";
const FRONT_API: usize = 20;
const API_DB: usize = 15;
const REFUSED: usize = 5;
const TIMEOUTS: usize = 2;
const LOOKUPS: usize = 8;
const BURSTS: usize = 5;
const API_DELAY: f64 = 0.030;
const DB_DELAY: f64 = 0.010;
const FRONT_REQ: usize = 100;
const FRONT_RESP: usize = 1000;
const API_REQ: usize = 200;
const API_RESP: usize = 3000;
/// How far periscope's p50 (interpolated in 1 ms buckets) may be from the generators'.
const P50_TOLERANCE: f64 = 0.003;

/// Panels whose series exist but whose values this traffic leaves at 0, and why.
const ZERO_OK: &[(&str, &str)] = &[];

/// Per connection: read the request, sleep, answer, close, log the connection's life.
const SERVER_PER_CONNECTION: &str = r#"
t0 = time.monotonic()
want, got = int(sys.argv[5]), 0
while got < want:
    d = c.recv(65536)
    if not d:
        break
    got += len(d)
time.sleep(float(sys.argv[3]))
c.sendall(b"r" * int(sys.argv[4]))
c.close()
with open(sys.argv[6], "a") as f:
    f.write("%f\n" % (time.monotonic() - t0))
"#;

/// `client.py DST PORT N REQ RESP TIMEOUT`: N connections, one exchange each; prints one JSON
/// line: connections made, failures, and per connection its life, connect time and response
/// time.
const CLIENT: &str = r#"
import json, socket, sys, time
dst, port, n, req, resp, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
pause = float(sys.argv[7]) if len(sys.argv) > 7 else 0.005
out = {"ok": 0, "failed": 0, "life": [], "response": [], "sent": 0, "received": 0}
for i in range(n):
    s = socket.socket()
    s.settimeout(timeout)
    t0 = time.monotonic()
    try:
        s.connect((dst, port))
    except (ConnectionRefusedError, socket.timeout, OSError):
        out["failed"] += 1
        s.close()
        continue
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t1 = time.monotonic()
    s.sendall(b"q" * req)
    out["sent"] += req
    got = 0
    first = None
    while got < resp:
        d = s.recv(65536)
        if not d:
            break
        if first is None:
            first = time.monotonic()
        got += len(d)
    out["received"] += got
    s.close()
    out["life"].append(time.monotonic() - t0)
    out["response"].append(first - t1)
    out["ok"] += 1
    time.sleep(pause)
print(json.dumps(out), flush=True)
"#;

/// A client's own counts.
#[derive(Debug)]
struct Generated {
    ok: usize,
    failed: usize,
    life: Vec<f64>,
    response: Vec<f64>,
    sent: u64,
    received: u64,
}

fn run_client(ns: &Netns, script: &Path, args: &[String]) -> Generated {
    let out = run_ok(
        ns.exec("python3").arg(script).args(args),
        Duration::from_secs(120),
    );
    parse_client(&String::from_utf8_lossy(&out.stdout))
}

fn parse_client(text: &str) -> Generated {
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("client output `{text}`: {e}"));
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    Generated {
        ok: v["ok"].as_u64().unwrap_or(0) as usize,
        failed: v["failed"].as_u64().unwrap_or(0) as usize,
        life: list("life"),
        response: list("response"),
        sent: v["sent"].as_u64().unwrap_or(0),
        received: v["received"].as_u64().unwrap_or(0),
    }
}

/// Removes `sg-*` namespaces left by test processes that are gone.
fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix("sg-")
            .and_then(|r| r.rsplit('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = output_with_timeout(
                Command::new("ip").args(["netns", "del", &name]),
                Duration::from_secs(10),
            );
        }
    }
}

/// `TcpExt`/`Tcp` `RetransSegs` of a namespace.
fn retrans_segs(ns: &Netns) -> u64 {
    let out = run_ok(
        ns.exec("cat").arg("/proc/net/snmp"),
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let (head, values) = (tcp[0], tcp[1]);
    let i = head
        .split_whitespace()
        .position(|h| h == "RetransSegs")
        .expect("RetransSegs");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// The p50 of an explicit-bucket histogram, interpolated in its bucket.
fn p50(bounds: &[f64], counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let rank = total.div_ceil(2).max(1);
    let mut acc = 0;
    for (i, c) in counts.iter().enumerate() {
        if acc + c >= rank {
            let lo = if i == 0 { 0.0 } else { bounds[i - 1] };
            let hi = bounds.get(i).copied().unwrap_or(lo);
            return lo + (hi - lo) * (rank - acc) as f64 / *c as f64;
        }
        acc += c;
    }
    f64::NAN
}

/// Instant query → (status, the result's values).
/// HTTP requests made to Prometheus (each its own connection: `Connection: close`).
static PROM_QUERIES: AtomicUsize = AtomicUsize::new(0);

fn prom_query(port: u16, q: &str) -> Result<Vec<f64>, String> {
    PROM_QUERIES.fetch_add(1, Ordering::Relaxed);
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", urlencode(q)), None);
    if status != 200 {
        return Err(format!("HTTP {status}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(body);
    }
    Ok(v["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["value"][1].as_str().and_then(|x| x.parse::<f64>().ok()))
                .collect()
        })
        .unwrap_or_default())
}

/// Every (dashboard, panel title, query) of the dashboards in `deploy/grafana`.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "dashboards in {}: {files:?}",
        dir.display()
    );
    for f in files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("dashboard")).expect("json");
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        for p in d["panels"].as_array().expect("panels") {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: panel `{title}` has no query");
            for t in targets {
                let expr = t["expr"].as_str().expect("expr").to_string();
                out.push((name.clone(), title.clone(), expr));
            }
        }
    }
    out
}

#[test]
fn service_graph_flows_and_dashboards_agree_with_the_generators() {
    let test = test_name!();
    if !require_root_and_tools(test, TOOLS) {
        return;
    }
    remove_stale();
    let pid = std::process::id();
    let dir = TestDir::new("servicegraph_agent");

    // The node: a bridge; three workloads on it.
    let node = Netns::create(&format!("sg-node-{pid}"));
    node.disable_ipv6();
    node.ip(&["link", "add", "sgbr0", "type", "bridge"]);
    node.ip(&["link", "set", "sgbr0", "up"]);
    let mut pods = Vec::new();
    for (role, addr, node_if) in [
        ("front", FRONT, "sgvf0"),
        ("api", API, "sgva0"),
        ("db", DB, "sgvd0"),
    ] {
        let ns = Netns::create(&format!("sg-{role}-{pid}"));
        ns.disable_ipv6();
        node.ip(&[
            "link",
            "add",
            node_if,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        node.ip(&["link", "set", node_if, "master", "sgbr0", "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        pods.push(ns);
    }
    let (front, api, db) = (&pods[0], &pods[1], &pods[2]);
    let name = |ns: &Netns| ns.name().to_string();
    // Nobody has this MAC: SYNs to NOBODY go out and are never answered.
    front.ip(&[
        "neigh",
        "replace",
        NOBODY,
        "lladdr",
        "02:00:00:62:00:99",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);

    // Servers: api and db, and dnsmasq in db.
    let server_py = dir.write("server.py", tcp_server(64, SERVER_PER_CONNECTION));
    let api_log = dir.join("api-server.log");
    let db_log = dir.join("db-server.log");
    let serve =
        |ns: &Netns, addr: &str, port: u16, delay: f64, resp: usize, req: usize, log: &Path| {
            Background::serve(
                ns.exec("python3").arg(&server_py).args([
                    addr.to_string(),
                    port.to_string(),
                    delay.to_string(),
                    resp.to_string(),
                    req.to_string(),
                    log.display().to_string(),
                ]),
                "server",
            )
        };
    let _api_server = serve(api, API, 8080, API_DELAY, FRONT_RESP, FRONT_REQ, &api_log);
    let warm_log = dir.join("warm.log");
    let _warm_server = serve(api, API, 8081, 0.0, 10, 10, &warm_log);
    let _db_server = serve(db, DB, 5432, DB_DELAY, API_RESP, API_REQ, &db_log);
    let _dnsmasq = Background::spawn(
        db.exec("dnsmasq").args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            &format!("--listen-address={DB}"),
            "--except-interface=lo",
            "--local=/sg.test/",
            &format!("--address=/db.sg.test/{DB}"),
        ]),
        "dnsmasq",
    );

    // The agent, and Prometheus scraping it every second.
    let prom_port = free_port();
    let metrics = dir.join("metrics.jsonl");
    let traces = dir.join("traces.jsonl");
    let bounds: Vec<String> = (1..=100)
        .map(|ms| format!("{}", ms as f64 / 1000.0))
        .chain(["0.2", "0.5", "1", "2", "5"].map(String::from))
        .collect();
    let namespaces = format!("[{}, {}, {}]", name(front), name(api), name(db));
    // The node's devices: a record per packet into a one-page ring buffer read every 500 ms, so
    // that the bursts overflow it (the "records lost" panel).
    let config = dir.write(
        "agent.yaml",
        format!(
            "receivers:\n  tcx: {{namespaces: {namespaces}, events: none, always_emit_dns: true, poll_interval: 20ms, \
             counters_interval: 500ms, flows: {{enabled: true}}, bursts: {{enabled: true, bucket: 100us, window: 1ms, threshold_pps: 20000}}}}\n  \
             tcx/node: {{namespaces: [{}], events: all, ring_buffer_size: 4096, poll_interval: 500ms, counters_interval: 500ms}}\n  \
             sockops: {{poll_interval: 20ms}}\n  tcp_udp: {{send_receive: tcp, drops: true, poll_interval: 20ms}}\n\
             processors:\n  servicegraph: {{interval: 1s, boundaries: [{}]}}\n  dns: {{interval: 1s, timeout: 1s}}\n  \
             latency: {{interval: 1s}}\n  burst: {{interval: 1s}}\n  connections: {{interval: 1s, flow_join_delay: 2s}}\n  \
             flow: {{interval: 1s, flow_attributes: true}}\n  identity: {{}}\n\
             exporters:\n  prometheus: {{listen: 127.0.0.1:{prom_port}}}\n  file/metrics: {{path: {}, flush_interval: 200ms}}\n  \
             file/traces: {{path: {}, flush_interval: 200ms}}\n\
             service:\n  pipelines:\n    metrics: {{receivers: [tcx, sockops, tcp_udp], processors: [servicegraph, dns, latency, burst, connections, flow, identity], exporters: [prometheus, file/metrics]}}\n    \
             metrics/node: {{receivers: [tcx/node], processors: [flow, identity], exporters: [prometheus]}}\n    \
             traces: {{receivers: [sockops, tcp_udp], processors: [connections, identity], exporters: [file/traces]}}\n  \
             telemetry: {{logs: {{level: info}}, metrics: {{enabled: true, interval: 1s}}}}\n",
            name(&node),
            bounds.join(", "),
            yaml_path(&metrics),
            yaml_path(&traces),
        ),
    );
    let mut agent = start_agent(&config, "periscope");
    assert!(
        wait_for_port(prom_port, Duration::from_secs(60)),
        "the agent's Prometheus endpoint did not open:\n{}",
        agent.stderr()
    );
    let prom_dir = TestDir::new("servicegraph_prometheus");
    let prom_config = prom_dir.write(
        "prometheus.yml",
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
             scrape_configs:\n  - job_name: periscope\n    static_configs:\n      - targets: ['127.0.0.1:{prom_port}']\n"
        ),
    );
    let web = free_port();
    let _prometheus = Background::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}")),
        "prometheus",
    );
    assert!(
        wait_for_port(web, Duration::from_secs(30)),
        "prometheus did not listen"
    );

    // Ready when a warm-up connection (front → api:8081, not checked) is in the graph.
    let client_py = dir.write("client.py", CLIENT);
    let warm = || {
        run_client(
            front,
            &client_py,
            &[
                API.into(),
                "8081".into(),
                "1".into(),
                "10".into(),
                "10".into(),
                "2".into(),
            ],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        warm();
        std::thread::sleep(Duration::from_millis(1500));
        let seen = sum_series(
            &read_metrics(&metrics),
            "traces_service_graph_request_total",
        )
        .iter()
        .any(|s| s.attr("server.port") == Some("8081") && s.value > 0);
        if seen {
            break;
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "no warm-up edge in the service graph:\n{}",
            agent.stderr()
        );
    }

    // Prometheus has scraped the agent a few times (it starts scraping a while after it
    // listens): every series of the traffic below is seen rising.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !prom_query(web, "count_over_time(up{job=\"periscope\"}[1m]) >= 3")
        .is_ok_and(|v| !v.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus does not scrape the agent"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The traffic.
    let retrans_before = retrans_segs(front);
    // Runs meanwhile: each connect waits 1.5 s (one SYN retransmitted after 1 s).
    let timeouts = Background::spawn(
        front.exec("python3").arg(&client_py).args([
            NOBODY.to_string(),
            "80".into(),
            TIMEOUTS.to_string(),
            "10".into(),
            "10".into(),
            "1.5".into(),
        ]),
        "client to nobody",
    );
    // Spread over a few seconds, so that Prometheus scrapes every series rising (a series
    // that appears with its final value has no rate).
    let args = |dst: &str, port: u16, n: usize, req: usize, resp: usize, pause: f64| {
        vec![
            dst.to_string(),
            port.to_string(),
            n.to_string(),
            req.to_string(),
            resp.to_string(),
            "2".to_string(),
            pause.to_string(),
        ]
    };
    let (fa, ad, refused) = std::thread::scope(|scope| {
        let fa = scope.spawn(|| {
            run_client(
                front,
                &client_py,
                &args(API, 8080, FRONT_API, FRONT_REQ, FRONT_RESP, 0.15),
            )
        });
        let ad = scope.spawn(|| {
            run_client(
                api,
                &client_py,
                &args(DB, 5432, API_DB, API_REQ, API_RESP, 0.2),
            )
        });
        let refused =
            scope.spawn(|| run_client(api, &client_py, &args(DB, 5433, REFUSED, 1, 1, 0.6)));
        // DNS lookups, an NXDOMAIN every third.
        scope.spawn(|| {
            for i in 0..LOOKUPS {
                let (name, want) = if i % 3 == 2 {
                    ("nope.sg.test", "NXDOMAIN")
                } else {
                    ("db.sg.test", DB)
                };
                let a = output_with_timeout(
                    front
                        .exec("dig")
                        .args(["+time=1", "+tries=1", &format!("@{DB}"), name]),
                    Duration::from_secs(10),
                );
                assert!(
                    String::from_utf8_lossy(&a.stdout).contains(want),
                    "lookup {i} of {name}"
                );
                std::thread::sleep(Duration::from_millis(400));
            }
        });
        // UDP bursts front → db (nothing listens there: the kernel drops them, NO_SOCKET).
        scope.spawn(|| {
            in_netns(front.name(), || {
                let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).expect("udp");
                let to = SocketAddrV4::new(DB.parse().unwrap(), 9999);
                for _ in 0..BURSTS {
                    for _ in 0..3000 {
                        let _ = s.send_to(&[0u8; 64], to);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    // A packet after the burst: a burst's end is reported at the next packet.
                    let _ = s.send_to(&[0u8; 64], to);
                    std::thread::sleep(Duration::from_millis(700));
                }
            })
        });
        (
            fa.join().expect("front → api"),
            ad.join().expect("api → db"),
            refused.join().expect("refused"),
        )
    });
    let to = parse_client(&timeouts.wait_ok(Duration::from_secs(30)));
    assert_eq!((fa.ok, fa.failed), (FRONT_API, 0), "front → api: {fa:?}");
    assert_eq!((ad.ok, ad.failed), (API_DB, 0), "api → db: {ad:?}");
    assert_eq!((refused.ok, refused.failed), (0, REFUSED));
    assert_eq!((to.ok, to.failed), (0, TIMEOUTS));
    let retrans = retrans_segs(front) - retrans_before;
    println!("front's kernel retransmitted {retrans} segments");
    assert!(retrans >= TIMEOUTS as u64, "no SYN retransmitted");

    // Every dashboard panel's query returns data while the traffic is within its rate window.
    std::thread::sleep(Duration::from_secs(5));
    let mut broken = Vec::new();
    let queries = dashboard_queries();
    for (dash, title, expr) in &queries {
        let q = expr.replace("$__rate_interval", "1m");
        let zero_ok = ZERO_OK.iter().find(|(t, _)| t == title);
        match prom_query(web, &q) {
            Ok(v) if v.iter().any(|x| x.is_finite() && *x > 0.0) => {
                println!("{dash} / {title}: {} series", v.len())
            }
            Ok(v) if zero_ok.is_some() && v.iter().any(|x| x.is_finite()) => println!(
                "{dash} / {title}: {} series, all 0 ({})",
                v.len(),
                zero_ok.map_or("", |z| z.1)
            ),
            Ok(v) => broken.push(format!("{dash} / {title}: no data ({v:?}) for {q}")),
            Err(e) => broken.push(format!("{dash} / {title}: {e} for {q}")),
        }
    }
    assert!(
        broken.is_empty(),
        "panels without data:\n{}",
        broken.join("\n")
    );
    println!("{} panel queries returned data", queries.len());

    // Let spans wait out flow_join_delay, then stop the agent (a last flush).
    std::thread::sleep(Duration::from_secs(3));
    stop_agent(agent, Duration::from_secs(30));
    let requests = read_metrics(&metrics);

    // The service graph.
    let (f, a, d) = (name(front), name(api), name(db));
    let edge = |s: &periscope_testkit::otlp::Series| {
        (
            s.attr("client").unwrap_or("").to_string(),
            s.attr("server").unwrap_or("").to_string(),
            s.attr("server.port").unwrap_or("").to_string(),
            s.attr("connection_type").unwrap_or("").to_string(),
        )
    };
    let ours = |c: &str| [&f, &a, &d].iter().any(|n| *n == c);
    let by_edge = |metric: &str| -> BTreeMap<(String, String, String, String), i64> {
        sum_series(&requests, metric)
            .iter()
            .filter(|s| {
                ours(s.attr("client").unwrap_or("")) && s.attr("server.port") != Some("8081")
            })
            .map(|s| (edge(s), s.value))
            .collect()
    };
    let e = |c: &str, s: &str, p: u16, t: &str| {
        (c.to_string(), s.to_string(), p.to_string(), t.to_string())
    };
    // Plain host processes are named after their executables: this test querying Prometheus
    // over 127.0.0.1, one connection per query.
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .expect("the test's executable");
    let host: Vec<_> = sum_series(&requests, "traces_service_graph_request_total")
        .into_iter()
        .filter(|s| s.attr("server.port") == Some(web.to_string().as_str()))
        .map(|s| (edge(&s), s.value))
        .collect();
    println!("edges to Prometheus: {host:?}");
    let queries = PROM_QUERIES.load(Ordering::Relaxed) as i64;
    assert!(
        host.iter()
            .any(|(e, n)| e.0 == me && e.1 == "prometheus" && e.3.is_empty() && *n >= queries),
        "no edge {me} → prometheus:{web} with at least {queries} requests: {host:?}"
    );

    let requests_by_edge = by_edge("traces_service_graph_request_total");
    println!("requests per edge: {requests_by_edge:#?}");
    assert_eq!(
        requests_by_edge,
        BTreeMap::from([
            (e(&f, &a, 8080, ""), FRONT_API as i64),
            (e(&a, &d, 5432, ""), API_DB as i64),
            (e(&a, &d, 5433, ""), REFUSED as i64),
            (e(&f, NOBODY, 80, "virtual_node"), TIMEOUTS as i64),
        ])
    );
    assert_eq!(
        by_edge("traces_service_graph_request_failed_total"),
        BTreeMap::from([
            (e(&f, &a, 8080, ""), 0),
            (e(&a, &d, 5432, ""), 0),
            (e(&a, &d, 5433, ""), REFUSED as i64),
            (e(&f, NOBODY, 80, "virtual_node"), TIMEOUTS as i64),
        ])
    );
    let retrans_graph: i64 = by_edge("periscope.servicegraph.retransmits")
        .iter()
        .filter(|(k, _)| k.0 == f)
        .map(|(_, v)| v)
        .sum();
    assert_eq!(retrans_graph as u64, retrans, "front's retransmits");
    let bytes: BTreeMap<(String, String, String), i64> =
        sum_series(&requests, "periscope.servicegraph.bytes")
            .iter()
            .filter(|s| ours(s.attr("client").unwrap_or("")))
            .map(|s| {
                (
                    (
                        s.attr("client").unwrap_or("").to_string(),
                        s.attr("server.port").unwrap_or("").to_string(),
                        s.attr("network.io.direction").unwrap_or("").to_string(),
                    ),
                    s.value,
                )
            })
            .collect();
    let b = |c: &str, p: &str, dir: &str| {
        bytes
            .get(&(c.to_string(), p.to_string(), dir.to_string()))
            .copied()
            .unwrap_or(-1)
    };
    assert_eq!(b(&f, "8080", "transmit") as u64, fa.sent);
    assert_eq!(b(&a, "5432", "transmit") as u64, ad.sent);
    for (got, want, n) in [
        (
            b(&f, "8080", "receive") as u64,
            fa.received,
            FRONT_API as u64,
        ),
        (b(&a, "5432", "receive") as u64, ad.received, API_DB as u64),
    ] {
        assert!(
            got >= want && got <= want + n,
            "bytes back {got}, servers sent {want}"
        );
    }

    // Latencies against the generators' clocks.
    let hist = |metric: &str, client: &str, port: &str| -> (Vec<f64>, Vec<u64>, u64) {
        let mut found: Option<(u64, Vec<f64>, Vec<u64>, u64)> = None;
        for p in points(&requests) {
            if p.metric.name != metric
                || p.attributes.get("client").map(String::as_str) != Some(client)
                || p.attributes.get("server.port").map(String::as_str) != Some(port)
            {
                continue;
            }
            if let PointData::Histogram(h, _) = p.data {
                if found.as_ref().is_none_or(|(t, ..)| *t <= h.time_unix_nano) {
                    found = Some((
                        h.time_unix_nano,
                        h.explicit_bounds.clone(),
                        h.bucket_counts.clone(),
                        h.count,
                    ));
                }
            }
        }
        let (_, b, c, n) = found.unwrap_or_else(|| panic!("no {metric} for {client}:{port}"));
        (b, c, n)
    };
    let server_log = |p: &Path| -> Vec<f64> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let mut checks = Vec::new();
    for (what, metric, client, port, mut truth, n) in [
        (
            "front → api response",
            "periscope.servicegraph.response.duration",
            &f,
            "8080",
            fa.response.clone(),
            FRONT_API,
        ),
        (
            "api → db response",
            "periscope.servicegraph.response.duration",
            &a,
            "5432",
            ad.response.clone(),
            API_DB,
        ),
        (
            "front → api client life",
            "traces_service_graph_request_client_seconds",
            &f,
            "8080",
            fa.life.clone(),
            FRONT_API,
        ),
        (
            "api → db client life",
            "traces_service_graph_request_client_seconds",
            &a,
            "5432",
            ad.life.clone(),
            API_DB,
        ),
        (
            "front → api server life",
            "traces_service_graph_request_server_seconds",
            &f,
            "8080",
            server_log(&api_log),
            FRONT_API,
        ),
        (
            "api → db server life",
            "traces_service_graph_request_server_seconds",
            &a,
            "5432",
            server_log(&db_log),
            API_DB,
        ),
    ] {
        let (bounds, counts, count) = hist(metric, client, port);
        assert_eq!(count as usize, n, "{what}: samples");
        assert_eq!(truth.len(), n, "{what}: the generator's samples");
        let got = p50(&bounds, &counts);
        let want = median(&mut truth);
        println!(
            "{what}: periscope p50 {:.2} ms, generator median {:.2} ms",
            got * 1e3,
            want * 1e3
        );
        checks.push((what, got, want));
    }
    let (_, _, connects) = hist("periscope.servicegraph.connect.duration", &f, "8080");
    assert_eq!(connects as usize, FRONT_API);
    for (what, got, want) in checks {
        assert!(
            (got - want).abs() <= P50_TOLERANCE,
            "{what}: p50 {got} vs the generator's {want}"
        );
    }

    // Flows and spans: front's client spans to api:8080 against the flows on front's eth0.
    let spans: Vec<_> = read_spans(&traces)
        .into_iter()
        .filter(|s| {
            s.name == "tcp.connection"
                && s.kind == 3
                && s.text("network.local.address").as_deref() == Some(FRONT)
                && s.int("network.peer.port") == Some(8080)
        })
        .collect();
    assert_eq!(spans.len(), FRONT_API, "front's client spans");
    let front_ino = front.inode().to_string();
    let flow =
        |metric: &str, dir: &str, src: (&str, &str), dst: (&str, &str)| -> Option<(f64, i64)> {
            let mut found: Option<(u64, f64, i64)> = None;
            for p in points(&requests) {
                let at = |k: &str| p.attributes.get(k).map(String::as_str);
                if p.metric.name != metric
                    || at("periscope.netns.inode") != Some(front_ino.as_str())
                    || at("network.interface.name") != Some("eth0")
                    || at("network.io.direction") != Some(dir)
                    || at("source.address") != Some(src.0)
                    || at("source.port") != Some(src.1)
                    || at("destination.address") != Some(dst.0)
                    || at("destination.port") != Some(dst.1)
                {
                    continue;
                }
                let (t, v) = match p.data {
                    PointData::Sum { point, .. } | PointData::Gauge(point) => {
                        (point.time_unix_nano, point)
                    }
                    _ => continue,
                };
                use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
                let (d, i) = match v.value {
                    Some(Value::AsDouble(d)) => (d, d as i64),
                    Some(Value::AsInt(i)) => (i as f64, i),
                    None => continue,
                };
                if found.is_none_or(|(ft, ..)| ft <= t) {
                    found = Some((t, d, i));
                }
            }
            found.map(|(_, d, i)| (d, i))
        };
    println!("port   span pkts/bytes sent   flow pkts/bytes sent   payload  rtt span/flow (µs)");
    for s in &spans {
        let port = s.int("network.local.port").expect("port").to_string();
        let get = |k: &str| {
            s.int(k)
                .unwrap_or_else(|| panic!("span without {k}: {:?}", s.texts()))
        };
        let (sp, sb) = (
            get("periscope.flow.packets_sent"),
            get("periscope.flow.bytes_sent"),
        );
        let (rp, rb) = (
            get("periscope.flow.packets_received"),
            get("periscope.flow.bytes_received"),
        );
        let out = (FRONT, port.as_str());
        let back = (API, "8080");
        let fp = flow("periscope.network.packets", "transmit", out, back).map(|v| v.1);
        let fb = flow("periscope.network.bytes", "transmit", out, back).map(|v| v.1);
        let fpr = flow("periscope.network.packets", "receive", back, out).map(|v| v.1);
        let fbr = flow("periscope.network.bytes", "receive", back, out).map(|v| v.1);
        let rtt = flow("periscope.network.flow.rtt", "transmit", out, back).map(|v| v.0);
        let srtt = get("periscope.tcp.srtt_us");
        let payload = get("periscope.tcp.bytes_sent");
        println!(
            "{port}  {sp}/{sb}  {:?}/{:?}  {payload}  {srtt}/{:?}",
            fp,
            fb,
            rtt.map(|r| (r * 1e6).round())
        );
        assert_eq!((Some(sp), Some(sb)), (fp, fb), "{port}: sent, span vs flow");
        assert_eq!(
            (Some(rp), Some(rb)),
            (fpr, fbr),
            "{port}: received, span vs flow"
        );
        // Ethernet 14 + IPv4 20 + TCP 32 (timestamps) per packet, the SYN 8 more.
        assert_eq!(
            sb - sp * 66 - 8,
            payload,
            "{port}: flow bytes minus headers"
        );
        let rtt_us = rtt.map(|r| (r * 1e6).round() as i64);
        assert_eq!(rtt_us, Some(srtt), "{port}: the flow's RTT vs the span's");
    }
    drop(pods);
    drop(node);
}

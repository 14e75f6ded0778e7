//! The `observe` exporter: its ring (history, `replay`, `since_ns`), the records it makes from
//! telemetry, and the loss accounting of a client that does not read.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use periscope_exporters::observe::ObserveConfig;
use periscope_pipeline::component::{ComponentConfig, Exporter, ExporterConfig};
use periscope_pipeline::model::*;
use periscope_testkit::component::undocumented;
use periscope_testkit::context;
use periscope_testkit::dir::TestDir;

/// One cumulative packets+bytes point per device, `n` devices, at second `secs`.
fn flows(n: usize, secs: u64, total: i64) -> Telemetry {
    let points = |mult: i64| {
        (0..n)
            .map(|i| NumberPoint {
                attributes: vec![
                    KeyValue::new("network.interface.name", format!("veth{i}")),
                    KeyValue::new("periscope.netns.name", "ns-a"),
                ],
                start_time_ns: 0,
                time_ns: secs * 1_000_000_000,
                value: Number::Int(total * mult),
            })
            .collect()
    };
    let sum = |name: &'static str, points| Metric {
        name: name.into(),
        description: "".into(),
        unit: "".into(),
        data: MetricData::Sum {
            points,
            temporality: Temporality::Cumulative,
            monotonic: true,
        },
    };
    Telemetry::Metrics(MetricsBatch {
        metrics: vec![
            sum("periscope.network.packets", points(1)),
            sum("periscope.network.bytes", points(100)),
        ],
        ..MetricsBatch::default()
    })
}

fn exporter(dir: &TestDir, ring: usize, queue: usize) -> (Box<dyn Exporter>, std::path::PathBuf) {
    let socket = dir.join("run/observe.sock");
    let config = ObserveConfig {
        socket: socket.clone(),
        ring_size: ring,
        client_queue: queue,
        ..ObserveConfig::default()
    };
    let e = config.build(&context("observe")).expect("build");
    (e, socket)
}

fn request(socket: &Path, req: Value) -> BufReader<UnixStream> {
    let mut s = UnixStream::connect(socket).expect("connect");
    // A test that waits for a line that never comes fails instead of hanging.
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    writeln!(s, "{req}").expect("request");
    BufReader::new(s)
}

fn read_all(socket: &Path, req: Value) -> Vec<Value> {
    request(socket, req)
        .lines()
        .map(|l| serde_json::from_str(&l.expect("line")).expect("json"))
        .collect()
}

#[test]
fn ring_keeps_the_newest_and_replays_by_count_and_time() {
    let dir = TestDir::new("observe_ring");
    let (mut e, socket) = exporter(&dir, 5, 16);
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    // Second 1..=4, 2 devices each: 8 records; 100 packets per device per second.
    for s in 1..=4 {
        e.export(flows(2, s, 100 * s as i64)).expect("export");
    }
    let all = read_all(&socket, json!({}));
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.iter().all(|r| r["type"] == "flow"
        && r["packets"] == 100
        && r["bytes"] == 10_000
        && r["interval_ns"] == 1_000_000_000u64
        && r["netns"] == "ns-a"));
    let times: Vec<u64> = all
        .iter()
        .map(|r| r["time_ns"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(times, [2, 3, 3, 4, 4].map(|s| s * 1_000_000_000));
    assert_eq!(read_all(&socket, json!({"replay": 2})).len(), 2);
    assert_eq!(read_all(&socket, json!({"replay": 0})).len(), 0);
    assert_eq!(
        read_all(&socket, json!({"since_ns": 3_000_000_000u64})).len(),
        4
    );
    let bad = read_all(&socket, json!("nonsense"));
    assert_eq!(bad[0]["type"], "error");
    drop(e);
    assert!(!socket.exists(), "the socket is removed at stop");
}

#[test]
fn a_client_that_does_not_read_loses_records_and_is_told_how_many() {
    let dir = TestDir::new("observe_loss");
    let (mut e, socket) = exporter(&dir, 16, 8);
    let mut slow = request(&socket, json!({"follow": true}));
    let mut line = String::new();
    slow.read_line(&mut line).expect("live marker");
    assert!(line.contains("\"live\""), "{line}");
    // Every export returns at once, whatever the client does.
    let batches = 200u64;
    let per_batch = 50;
    let start = Instant::now();
    for s in 1..=batches {
        e.export(flows(per_batch, s, s as i64)).expect("export");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let published = batches * per_batch as u64;
    // A fast client connected now sees the live records too.
    let mut fast = request(&socket, json!({"follow": true, "replay": 0}));
    let mut got = String::new();
    // Registered once the `live` marker is sent.
    fast.read_line(&mut got).expect("live");
    assert!(got.contains("\"live\""), "{got}");
    e.export(flows(1, batches + 1, 1_000_000)).expect("export");
    got.clear();
    fast.read_line(&mut got).expect("record");
    assert!(got.contains("\"flow\""), "{got}");
    // The slow client now reads: records plus lost counts add up to what was published.
    slow.get_ref()
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let (mut records, mut lost) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    while records + lost < published + 1 && Instant::now() < deadline {
        line.clear();
        if slow.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let r: Value = serde_json::from_str(&line).expect("json");
        match r["type"].as_str() {
            Some("flow") => records += 1,
            Some("lost") => lost += r["lost"].as_u64().unwrap_or(0),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(lost > 0, "records {records}");
    assert_eq!(
        records + lost,
        published + 1,
        "records {records} lost {lost}"
    );
}

#[test]
fn a_second_agent_on_the_same_socket_is_refused() {
    let dir = TestDir::new("observe_twice");
    let (_e, _socket) = exporter(&dir, 4, 4);
    let err = ObserveConfig {
        socket: dir.join("run/observe.sock"),
        ..ObserveConfig::default()
    }
    .build(&context("observe/2"))
    .err()
    .expect("refused");
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
}

#[test]
fn schema_documents_every_option_and_validates() {
    let schema = schemars::schema_for!(ObserveConfig);
    assert_eq!(undocumented(&schema), Vec::<String>::new());
    let bad = ObserveConfig {
        mode: "rw".into(),
        ring_size: 0,
        ..ObserveConfig::default()
    };
    let errors = bad.validate().expect_err("invalid");
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["mode", "ring_size"]);
}

//! A real Prometheus (Debian's `prometheus` package: `apt-get install -y prometheus`) scrapes
//! the `prometheus` exporter; `promtool check metrics` passes on the exposition; the values
//! Prometheus stored equal what the `otlp` exporter delivered over OTLP for the same batches.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};

use periscope_exporters::otlp::{OtlpConfig, Protocol};
use periscope_exporters::prometheus::PrometheusConfig;
use periscope_pipeline::component::{ComponentConfig, Exporter};
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::model::{
    KeyValue, Metric, MetricData, MetricsBatch, Number, NumberPoint, Telemetry, Temporality,
};

use periscope_testkit::http::{http_get, urlencode};
use periscope_testkit::otlp::sink::{free_port, str_attr, wait_for_port, Sink};
use periscope_testkit::process::Background;
use periscope_testkit::{context, require_tools, telemetry, TestDir};

/// A delta counter: Prometheus must show the running total.
fn delta_bytes(v: i64, t: u64) -> MetricsBatch {
    let mut b = telemetry::metrics();
    b.metrics = vec![Metric {
        name: "periscope.network.bytes".into(),
        description: "Bytes seen.".into(),
        unit: "By".into(),
        data: MetricData::Sum {
            points: vec![NumberPoint {
                attributes: vec![KeyValue::new("network.interface.name", "eth0")],
                start_time_ns: t - 1_000_000_000,
                time_ns: t,
                value: Number::Int(v),
            }],
            temporality: Temporality::Delta,
            monotonic: true,
        },
    }];
    b
}

/// Instant query → the value of the single series, once there is one.
fn query(port: u16, q: &str, within: Duration) -> f64 {
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        let (status, body) = http_get(port, &format!("/api/v1/query?query={}", urlencode(q)), None);
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json");
            let result = &v["data"]["result"];
            if let Some(arr) = result.as_array() {
                assert!(arr.len() <= 1, "{q}: more than one series: {body}");
                if let Some(s) = arr.first() {
                    return s["value"][1].as_str().unwrap().parse().unwrap();
                }
            }
        }
        last = body;
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{q}: no result from Prometheus within {within:?}: {last}");
}

#[test]
fn prometheus_scrapes_what_otlp_delivers() {
    if !require_tools(
        "prometheus_scrapes_what_otlp_delivers",
        &["prometheus", "promtool"],
    ) {
        return;
    }
    let ctx = context("prometheus");
    let prom = PrometheusConfig {
        listen: "127.0.0.1:0".into(),
        ..PrometheusConfig::default()
    };
    prom.validate().expect("valid");
    let mut prom = prom.build_exporter(&ctx).expect("builds");
    let port = prom.local_addr().port();

    let sink = Sink::start(free_port());
    let mut otlp_cfg = OtlpConfig {
        endpoint: format!("http://127.0.0.1:{}", sink.port),
        protocol: Protocol::Grpc,
        ..OtlpConfig::default()
    };
    otlp_cfg.batch.timeout = ConfigDuration::from_millis(0);
    let mut otlp = otlp_cfg.build_exporter(&context("otlp")).expect("builds");

    let batches = [
        telemetry::metrics(),
        delta_bytes(100, telemetry::TIME),
        delta_bytes(250, telemetry::TIME + 1_000_000_000),
    ];
    for b in batches {
        prom.export(Telemetry::Metrics(b.clone())).unwrap();
        otlp.export(Telemetry::Metrics(b)).unwrap();
    }
    otlp.flush().unwrap();
    assert!(sink.wait_for(Duration::from_secs(10), |r| r.all_metrics().len() == 6));

    // The exposition passes promtool's checks.
    let (status, text) = http_get(port, "/metrics", None);
    assert_eq!(status, 200);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    std::io::Write::write_all(check.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(check.stdin.take());
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenMetrics on request.
    let (status, om) = http_get(
        port,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE periscope_network_packets counter\n"),
        "{om}"
    );
    assert!(om.contains("# UNIT network_rtt_seconds seconds\n"), "{om}");

    // A real Prometheus scrapes it every second.
    let dir = TestDir::new("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\n\
             scrape_configs:\n  - job_name: periscope\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let _prometheus = Background::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{web}")),
        "prometheus",
    );
    assert!(
        wait_for_port(web, Duration::from_secs(20)),
        "prometheus did not listen"
    );
    let within = Duration::from_secs(30);
    assert_eq!(query(web, "up{job=\"periscope\"}", within), 1.0);

    // The OTLP values, as the sink decoded them.
    let r = sink.received.lock().unwrap();
    let metric = |name: &str| -> Vec<Data> {
        r.all_metrics()
            .iter()
            .filter(|(_, m)| m.name == name)
            .filter_map(|(_, m)| m.data.clone())
            .collect()
    };
    let as_f64 = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        Some(number_data_point::Value::AsDouble(d)) => *d,
        None => f64::NAN,
    };

    let Data::Sum(packets) = &metric("periscope.network.packets")[0] else {
        panic!()
    };
    let tcp = packets
        .data_points
        .iter()
        .find(|p| str_attr(&p.attributes, "network.transport").as_deref() == Some("tcp"))
        .unwrap();
    let q = "periscope_network_packets_total{network_transport=\"tcp\",network_interface_name=\"eth0\",otel_scope_name=\"flow\"}";
    assert_eq!(query(web, q, within), as_f64(&tcp.value));

    let Data::Gauge(fill) = &metric("periscope.queue.fill")[0] else {
        panic!()
    };
    let q = "periscope_queue_fill_ratio{periscope_netns_inode=\"4026531840\"}";
    assert_eq!(query(web, q, within), as_f64(&fill.data_points[0].value));

    let Data::Histogram(rtt) = &metric("network.rtt")[0] else {
        panic!()
    };
    let p443 = rtt
        .data_points
        .iter()
        .find(|p| str_attr(&p.attributes, "destination.port").as_deref() == Some("443"))
        .unwrap();
    let sel = "{destination_port=\"443\"}";
    assert_eq!(
        query(web, &format!("network_rtt_seconds_count{sel}"), within),
        p443.count as f64
    );
    assert_eq!(
        query(web, &format!("network_rtt_seconds_sum{sel}"), within),
        p443.sum.unwrap()
    );
    let le_001 = (p443.bucket_counts[0] + p443.bucket_counts[1]) as f64;
    let q = "network_rtt_seconds_bucket{destination_port=\"443\",le=\"0.001\"}";
    assert_eq!(query(web, q, within), le_001);

    let Data::ExponentialHistogram(burst) = &metric("periscope.burst.size")[0] else {
        panic!()
    };
    let b = &burst.data_points[0];
    assert_eq!(
        query(web, "periscope_burst_size_bytes_count", within),
        b.count as f64
    );
    assert_eq!(
        query(web, "periscope_burst_size_bytes_sum", within),
        b.sum.unwrap()
    );
    // Everything up to the zero bucket: the negative buckets and the zeros.
    let neg: u64 = b.negative.as_ref().unwrap().bucket_counts.iter().sum();
    let q = "periscope_burst_size_bytes_bucket{le=\"0.0\"}";
    assert_eq!(query(web, q, within), (neg + b.zero_count) as f64);

    // Two deltas over OTLP; their running total in Prometheus.
    let deltas: f64 = metric("periscope.network.bytes")
        .iter()
        .map(|d| match d {
            Data::Sum(s) => s.data_points.iter().map(|p| as_f64(&p.value)).sum::<f64>(),
            _ => panic!("not a sum"),
        })
        .sum();
    assert_eq!(deltas, 350.0);
    assert_eq!(query(web, "periscope_network_bytes_total", within), deltas);

    // Resource attributes on target_info; service.name became job (exported_job once
    // Prometheus adds its own job label).
    let q = "target_info{host_name=\"node-1\",exported_job=\"periscope\"}";
    assert_eq!(query(web, q, within), 1.0);
    assert_eq!(ctx.counters.values().dropped, 0);
}

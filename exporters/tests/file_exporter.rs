//! The `file` exporter's output decodes with the official OTLP protobuf definitions
//! (`opentelemetry-proto`'s serde types) and has the OTLP/JSON shape the Collector writes.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as Number;
use serde_json::Value as Json;

use periscope_exporters::{otlp_proto, FileConfig};
use periscope_pipeline::component::{ComponentConfig, ExporterConfig};
use periscope_pipeline::config::{de::from_node, yaml::parse, ConfigDuration};
use periscope_pipeline::model::Telemetry;

use periscope_testkit::component::undocumented;
use periscope_testkit::telemetry::*;
use periscope_testkit::{context, TestDir};

fn config(path: PathBuf) -> FileConfig {
    FileConfig {
        path,
        append: false,
        flush_interval: ConfigDuration::from_secs(3600),
    }
}

fn export_all(config: &FileConfig, batches: Vec<Telemetry>) {
    assert_eq!(config.validate(), Ok(()));
    let mut exporter = config.build(&context("file")).expect("build");
    for b in batches {
        exporter.export(b).expect("export");
    }
    exporter.flush().expect("flush");
}

fn lines(path: &PathBuf) -> Vec<String> {
    let text = fs::read_to_string(path).expect("read output");
    assert!(text.ends_with('\n'), "every line ends with a newline");
    text.lines().map(str::to_string).collect()
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[test]
fn metrics_and_traces_lines_decode_with_opentelemetry_proto() {
    let dir = TestDir::new("decode");
    let path = dir.join("out.jsonl");
    export_all(
        &config(path.clone()),
        vec![
            Telemetry::Metrics(metrics()),
            Telemetry::Traces(traces()),
            Telemetry::Metrics(metrics()),
        ],
    );
    let lines = lines(&path);
    assert_eq!(lines.len(), 3, "one line per export call");

    // Metrics: decode, then check against the model, not only against our own conversion.
    let req: ExportMetricsServiceRequest =
        serde_json::from_str(&lines[0]).expect("metrics line decodes");
    assert_eq!(req, otlp_proto::metrics_request(metrics()));
    let rm = &req.resource_metrics[0];
    let res = rm.resource.as_ref().expect("resource");
    assert_eq!(
        attr(&res.attributes, "service.name"),
        Some(&Value::StringValue("periscope".into()))
    );
    let sm = &rm.scope_metrics[0];
    let scope = sm.scope.as_ref().expect("scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("flow", "0.1.0")
    );
    let names: Vec<_> = sm.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "periscope.network.packets",
            "periscope.queue.fill",
            "network.rtt",
            "periscope.burst.size"
        ]
    );

    let Some(Data::Sum(sum)) = &sm.metrics[0].data else {
        panic!("metric 0 is not a sum")
    };
    assert_eq!(sm.metrics[0].unit, "{packet}");
    assert_eq!(sm.metrics[0].description, "Packets seen.");
    assert_eq!(sum.aggregation_temporality, 2, "cumulative");
    assert!(sum.is_monotonic);
    assert_eq!(sum.data_points.len(), 2);
    assert_eq!(
        sum.data_points[0].value,
        Some(Number::AsInt(9_007_199_254_740_993))
    );
    assert_eq!(sum.data_points[1].value, Some(Number::AsInt(0)));
    assert_eq!(sum.data_points[0].start_time_unix_nano, START);
    assert_eq!(sum.data_points[0].time_unix_nano, TIME);
    assert_eq!(
        attr(&sum.data_points[1].attributes, "network.transport"),
        Some(&Value::StringValue("udp".into()))
    );

    let Some(Data::Gauge(gauge)) = &sm.metrics[1].data else {
        panic!("metric 1 is not a gauge")
    };
    assert_eq!(gauge.data_points[0].value, Some(Number::AsDouble(0.375)));
    assert_eq!(gauge.data_points[0].start_time_unix_nano, 0);
    assert_eq!(
        attr(&gauge.data_points[0].attributes, "periscope.netns.inode"),
        Some(&Value::IntValue(4_026_531_840))
    );

    let Some(Data::Histogram(h)) = &sm.metrics[2].data else {
        panic!("metric 2 is not a histogram")
    };
    assert_eq!(h.aggregation_temporality, 1, "delta");
    let p = &h.data_points[0];
    assert_eq!(p.count, 7);
    assert_eq!(
        (p.sum, p.min, p.max),
        (Some(0.0105), Some(0.0001), Some(0.005))
    );
    assert_eq!(p.explicit_bounds, [0.0005, 0.001, 0.0025]);
    assert_eq!(p.bucket_counts, [2, 1, 3, 1]);
    let empty = &h.data_points[1];
    assert_eq!(
        (empty.count, empty.sum, empty.min, empty.max),
        (0, None, None, None)
    );
    assert_eq!(empty.bucket_counts, [0, 0, 0, 0]);

    let Some(Data::ExponentialHistogram(e)) = &sm.metrics[3].data else {
        panic!("metric 3 is not an exponential histogram")
    };
    assert_eq!(e.aggregation_temporality, 2);
    let p = &e.data_points[0];
    assert_eq!((p.count, p.scale, p.zero_count), (9, 2, 1));
    assert_eq!(
        (p.sum, p.min, p.max),
        (Some(12_345.5), Some(-3.0), Some(4_096.0))
    );
    let pos = p.positive.as_ref().expect("positive buckets");
    assert_eq!(
        (pos.offset, pos.bucket_counts.as_slice()),
        (40, &[3, 0, 2][..])
    );
    let neg = p.negative.as_ref().expect("negative buckets");
    assert_eq!((neg.offset, neg.bucket_counts.as_slice()), (5, &[2, 1][..]));
    assert_eq!(
        attr(&p.attributes, "periscope.burst"),
        Some(&Value::BoolValue(true))
    );

    // Traces.
    let req: ExportTraceServiceRequest =
        serde_json::from_str(&lines[1]).expect("traces line decodes");
    assert_eq!(req, otlp_proto::traces_request(traces()));
    let ss = &req.resource_spans[0].scope_spans[0];
    assert_eq!(ss.scope.as_ref().map(|s| s.name.as_str()), Some("spans"));
    let (root, child) = (&ss.spans[0], &ss.spans[1]);
    assert_eq!(root.trace_id, TRACE_ID);
    assert_eq!(root.span_id, ROOT_ID);
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.name, "tcp.connection");
    assert_eq!(root.kind, 2, "server");
    assert_eq!(
        (root.start_time_unix_nano, root.end_time_unix_nano),
        (START, START + 1_500_000)
    );
    assert_eq!(root.status.as_ref().map(|s| s.code), Some(1), "ok");
    assert_eq!(root.events.len(), 1);
    assert_eq!(root.events[0].name, "tcp.retransmit");
    assert_eq!(root.events[0].time_unix_nano, START + 1_000);
    assert_eq!(
        attr(&root.events[0].attributes, "tcp.seq"),
        Some(&Value::IntValue(1_234_567))
    );
    assert_eq!(child.parent_span_id, ROOT_ID);
    assert_eq!(child.kind, 3, "client");
    let status = child.status.as_ref().expect("status");
    assert_eq!((status.code, status.message.as_str()), (2, "SERVFAIL"));

    let again: ExportMetricsServiceRequest =
        serde_json::from_str(&lines[2]).expect("third line decodes");
    assert_eq!(again, otlp_proto::metrics_request(metrics()));
}

#[test]
fn raw_json_has_the_otlp_json_shape() {
    let dir = TestDir::new("shape");
    let path = dir.join("out.jsonl");
    export_all(
        &config(path.clone()),
        vec![Telemetry::Metrics(metrics()), Telemetry::Traces(traces())],
    );
    let lines = lines(&path);
    let m: Json = serde_json::from_str(&lines[0]).expect("json");
    let t: Json = serde_json::from_str(&lines[1]).expect("json");

    assert_eq!(
        m["resourceMetrics"][0]["resource"]["attributes"][0],
        serde_json::json!({"key": "service.name", "value": {"stringValue": "periscope"}})
    );
    let metric = &m["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
    let point = &metric[0]["sum"]["dataPoints"][0];
    // 64-bit integers are decimal strings; enums are integers.
    assert_eq!(point["timeUnixNano"], "1700000010123456789");
    assert_eq!(point["startTimeUnixNano"], "1700000000000000000");
    assert_eq!(point["asInt"], "9007199254740993");
    assert_eq!(metric[0]["sum"]["aggregationTemporality"], 2);
    assert_eq!(metric[0]["sum"]["isMonotonic"], true);
    assert_eq!(metric[2]["histogram"]["dataPoints"][0]["count"], "7");
    assert_eq!(
        metric[2]["histogram"]["dataPoints"][0]["bucketCounts"],
        serde_json::json!(["2", "1", "3", "1"])
    );
    assert_eq!(
        metric[3]["exponentialHistogram"]["dataPoints"][0]["zeroCount"],
        "1"
    );
    // Defaults are left out, absent optionals are not `null`.
    let gauge_point = metric[1]["gauge"]["dataPoints"][0]
        .as_object()
        .expect("object");
    assert!(!gauge_point.contains_key("startTimeUnixNano"));
    assert!(!gauge_point.contains_key("flags"));
    assert!(!gauge_point.contains_key("exemplars"));
    let empty = metric[2]["histogram"]["dataPoints"][1]
        .as_object()
        .expect("object");
    for absent in ["sum", "min", "max", "count"] {
        assert!(!empty.contains_key(absent), "{absent} in {empty:?}");
    }
    assert!(!lines[0].contains("null"), "no nulls: {}", lines[0]);
    assert!(!lines[0].contains("schemaUrl"));

    let spans = &t["resourceSpans"][0]["scopeSpans"][0]["spans"];
    // Ids are lowercase hex strings, a root span has no parentSpanId.
    assert_eq!(spans[0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(spans[0]["spanId"], "00f067aa0ba902b7");
    assert!(spans[0].get("parentSpanId").is_none());
    assert_eq!(spans[1]["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(spans[0]["kind"], 2);
    assert_eq!(spans[0]["endTimeUnixNano"], "1700000000001500000");
    assert_eq!(spans[0]["status"], serde_json::json!({"code": 1}));
    assert_eq!(
        spans[1]["status"],
        serde_json::json!({"message": "SERVFAIL", "code": 2})
    );
    assert_eq!(
        spans[0]["attributes"][0],
        serde_json::json!({"key": "server.port", "value": {"intValue": "8080"}})
    );
}

#[test]
fn truncates_by_default_and_appends_when_asked() {
    let dir = TestDir::new("append");
    let path = dir.join("out.jsonl");
    fs::write(&path, "old line\n").expect("seed file");

    let mut c = config(path.clone());
    export_all(&c, vec![Telemetry::Traces(traces())]);
    let after_truncate = lines(&path);
    assert_eq!(after_truncate.len(), 1);
    assert!(after_truncate[0].starts_with("{\"resourceSpans\""));

    c.append = true;
    export_all(&c, vec![Telemetry::Metrics(metrics())]);
    let after_append = lines(&path);
    assert_eq!(after_append.len(), 2);
    assert_eq!(after_append[0], after_truncate[0]);
    assert!(after_append[1].starts_with("{\"resourceMetrics\""));
}

#[test]
fn zero_flush_interval_writes_each_batch_at_once() {
    let dir = TestDir::new("flush");
    let path = dir.join("out.jsonl");
    let mut c = config(path.clone());
    c.flush_interval = ConfigDuration::from_secs(0);
    let mut exporter = c.build(&context("file")).expect("build");
    exporter
        .export(Telemetry::Traces(traces()))
        .expect("export");
    assert_eq!(lines(&path).len(), 1, "visible before flush()");
    exporter
        .export(Telemetry::Traces(traces()))
        .expect("export");
    assert_eq!(lines(&path).len(), 2);
}

#[test]
fn buffered_lines_reach_the_file_within_the_flush_interval() {
    let dir = TestDir::new("interval");
    let path = dir.join("out.jsonl");
    let mut c = config(path.clone());
    c.flush_interval = ConfigDuration::from_millis(20);
    let mut exporter = c.build(&context("file")).expect("build");
    exporter
        .export(Telemetry::Traces(traces()))
        .expect("export");
    // No flush(): the exporter's timer writes the line out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read_to_string(&path).expect("read").is_empty() {
        assert!(Instant::now() < deadline, "line not written within 5s");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(lines(&path).len(), 1);
    drop(exporter);
}

#[test]
fn buffered_lines_are_written_by_flush() {
    let dir = TestDir::new("buffered");
    let path = dir.join("out.jsonl");
    let mut exporter = config(path.clone()).build(&context("file")).expect("build");
    exporter
        .export(Telemetry::Traces(traces()))
        .expect("export");
    exporter
        .export(Telemetry::Metrics(metrics()))
        .expect("export");
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        "",
        "still buffered"
    );
    exporter.flush().expect("flush");
    assert_eq!(lines(&path).len(), 2);
}

#[test]
fn build_fails_naming_the_path_and_the_os_error() {
    let dir = TestDir::new("missing");
    let path = dir.join("no-such-dir").join("out.jsonl");
    let err = match config(path.clone()).build(&context("file")) {
        Ok(_) => panic!("opening a file in a missing directory must fail"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(err.contains("does not exist"), "{err}");

    let err = match config(dir.path().to_path_buf()).build(&context("file")) {
        Ok(_) => panic!("a directory is not a file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("Is a directory"), "{err}");
}

#[test]
fn config_from_yaml() {
    let node = parse("path: /tmp/x.jsonl").expect("yaml");
    let c: FileConfig = from_node(&node, &[]).expect("config");
    assert_eq!(c.path, PathBuf::from("/tmp/x.jsonl"));
    assert!(!c.append);
    assert_eq!(c.flush_interval, ConfigDuration::from_secs(1));

    let node = parse("{path: a.jsonl, append: true, flush_interval: 0s}").expect("yaml");
    let c: FileConfig = from_node(&node, &[]).expect("config");
    assert!(c.append);
    assert_eq!(c.flush_interval, ConfigDuration::from_secs(0));

    let node = parse("append: true").expect("yaml");
    let e = from_node::<FileConfig>(&node, &[]).expect_err("path is required");
    assert!(e.message.contains("path"), "{}", e.message);

    let node = parse("{path: a, apend: true}").expect("yaml");
    let e = from_node::<FileConfig>(&node, &[]).expect_err("unknown option");
    assert!(e.message.contains("apend"), "{}", e.message);
}

#[test]
fn validate_rejects_empty_and_directory_paths() {
    for bad in ["", "out/"] {
        let problems = config(PathBuf::from(bad)).validate().expect_err(bad);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "path");
    }
    assert_eq!(config(PathBuf::from("out.jsonl")).validate(), Ok(()));
}

#[test]
fn schema_documents_every_option() {
    let schema = schemars::schema_for!(FileConfig);
    // `flush_interval` refers to the shared Duration schema; its description sits beside.
    assert_eq!(undocumented(&schema), Vec::<String>::new());
    let props = schema.as_value()["properties"]
        .as_object()
        .expect("properties");
    for key in ["path", "append", "flush_interval"] {
        assert!(props.contains_key(key), "{key}");
    }
}

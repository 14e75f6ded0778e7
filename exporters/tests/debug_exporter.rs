//! The `debug` exporter's three verbosity levels, written into a buffer.

use periscope_exporters::debug::{DebugConfig, DebugExporter, Output, Verbosity};
use periscope_pipeline::component::{Exporter, ExporterConfig};
use periscope_pipeline::config::{de::from_node, yaml::parse};
use periscope_pipeline::model::{Telemetry, TracesBatch};

use periscope_testkit::component::undocumented;
use periscope_testkit::context;
use periscope_testkit::telemetry::*;

fn print(verbosity: Verbosity, batches: Vec<Telemetry>) -> String {
    let mut exporter = DebugExporter::new("debug/test", verbosity, Vec::new());
    for b in batches {
        exporter.export(b).expect("export");
    }
    exporter.flush().expect("flush");
    String::from_utf8(exporter.into_inner()).expect("utf-8")
}

fn both() -> Vec<Telemetry> {
    vec![Telemetry::Metrics(metrics()), Telemetry::Traces(traces())]
}

/// A traffic batch: cumulative packets and bytes of two devices in two namespaces, and
/// connections opened, at `secs` seconds.
fn traffic(secs: u64, scale: i64) -> Telemetry {
    use periscope_pipeline::model::*;
    let point = |ns: &'static str, dev: &'static str, v: i64| NumberPoint {
        attributes: vec![
            KeyValue::new("periscope.netns.name", ns),
            KeyValue::new("network.interface.name", dev),
        ],
        start_time_ns: START,
        time_ns: START + secs * 1_000_000_000,
        value: Number::Int(v),
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
    let opened = NumberPoint {
        attributes: vec![KeyValue::new("periscope.tcp.event", "opened")],
        ..point("a", "x", 7 * scale)
    };
    Telemetry::Metrics(MetricsBatch {
        metrics: vec![
            sum(
                "periscope.network.packets",
                vec![
                    point("ns-a", "eth0", 100 * scale),
                    point("ns-b", "eth1", 300 * scale),
                ],
            ),
            sum(
                "periscope.network.bytes",
                vec![
                    point("ns-a", "eth0", 10_000 * scale),
                    point("ns-b", "eth1", 3_000 * scale),
                ],
            ),
            sum("periscope.tcp.connections", vec![opened]),
        ],
        ..MetricsBatch::default()
    })
}

#[test]
fn basic_summarizes_rates_per_interval() {
    // 10 s, then 10 s more with twice the totals: both intervals have the same rates.
    let text = print(Verbosity::Basic, vec![traffic(10, 1), traffic(20, 2)]);
    let interval = "\
debug/test: traffic 1.3 kB/s, 40.0 pkt/s in 2 namespaces; connections 7 opened, 0 closed
  busiest namespaces: ns-a 1.0 kB/s 10.0 pkt/s, ns-b 300.0 B/s 30.0 pkt/s
  busiest devices: eth0@ns-a 1.0 kB/s 10.0 pkt/s, eth1@ns-b 300.0 B/s 30.0 pkt/s
";
    assert_eq!(text, format!("{interval}{interval}"));
}

#[test]
fn basic_counts_what_it_cannot_summarize() {
    let text = print(Verbosity::Basic, both());
    // The shared batch's traffic is a point of 2^53 packets in one interval; the span a
    // connection; both are summarized. A batch of other series is counted.
    assert!(text.starts_with("debug/test: traffic "), "{text}");
    assert!(text.ends_with("debug/test: 1 connection span\n"), "{text}");
    let mut other = metrics();
    other.metrics.retain(|m| m.name == "periscope.queue.fill");
    let text = print(Verbosity::Basic, vec![Telemetry::Metrics(other)]);
    assert_eq!(text, "debug/test: Metrics: 1 metric, 1 data point\n");
    let one = print(
        Verbosity::Basic,
        vec![Telemetry::Traces(TracesBatch {
            spans: traces().spans[1..2].to_vec(),
            ..TracesBatch::default()
        })],
    );
    assert_eq!(one, "debug/test: Traces: 1 span\n");
}

#[test]
fn normal_prints_one_line_per_data_point_and_span() {
    let text = print(Verbosity::Normal, both());
    let want = "\
debug/test: Metrics: 4 metrics, 6 data points
ResourceMetrics #0 service.name=periscope host.name=node-1
ScopeMetrics #0 flow@0.1.0
periscope.network.packets{network.interface.name=eth0,network.transport=tcp} 9007199254740993
periscope.network.packets{network.interface.name=eth0,network.transport=udp} 0
periscope.queue.fill{periscope.netns.inode=4026531840} 0.375
network.rtt{destination.port=443} count=7 sum=0.0105 min=0.0001 max=0.005 le0.0005=2 le0.001=1 le0.0025=3 le+Inf=1
network.rtt{destination.port=53} count=0 le0.0005=0 le0.001=0 le0.0025=0 le+Inf=0
periscope.burst.size{periscope.burst=true} count=9 sum=12345.5 min=-3 max=4096 le-2.82842712474619=1 le-2.378414230005442=2 zero=1 le1217.7480857627859=3 le1448.1546878700494=0 le1722.1558584396066=2
debug/test: Traces: 2 spans
ResourceSpans #0 service.name=periscope host.name=node-1
ScopeSpans #0 spans@0.1.0
tcp.connection 4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 duration=1.5ms status=Ok server.port=8080 network.peer.address=10.0.0.2
dns.query 4bf92f3577b34da6a3ce929d0e0e4736 53995c3f42cd8ad8 duration=10ns status=Error(SERVFAIL) dns.question.name=example.com
";
    assert_eq!(text, want);
}

#[test]
fn detailed_prints_every_field() {
    let text = print(Verbosity::Detailed, both());
    // Resource, scope and descriptor.
    for line in [
        "debug/test: Metrics: 4 metrics, 6 data points",
        "ResourceMetrics #0",
        "Resource attributes:",
        "     -> service.name: Str(periscope)",
        "     -> host.name: Str(node-1)",
        "ScopeMetrics #0",
        "InstrumentationScope flow 0.1.0",
        "Metric #0",
        "Descriptor:",
        "     -> Name: periscope.network.packets",
        "     -> Description: Packets seen.",
        "     -> Unit: {packet}",
        "     -> DataType: Sum",
        "     -> IsMonotonic: true",
        "     -> AggregationTemporality: Cumulative",
        "NumberDataPoints #1",
        "Data point attributes:",
        "     -> network.transport: Str(udp)",
        "StartTimestamp: 2023-11-14 22:13:20 +0000 UTC",
        "Timestamp: 2023-11-14 22:13:30.123456789 +0000 UTC",
        "Value: 9007199254740993",
        "     -> DataType: Gauge",
        "     -> periscope.netns.inode: Int(4026531840)",
        "StartTimestamp: 1970-01-01 00:00:00 +0000 UTC",
        "Value: 0.375000",
        "     -> DataType: Histogram",
        "     -> AggregationTemporality: Delta",
        "HistogramDataPoints #0",
        "Count: 7",
        "Sum: 0.010500",
        "Min: 0.000100",
        "Max: 0.005000",
        "ExplicitBounds #2: 0.002500",
        "Buckets #3, Count: 1",
        "HistogramDataPoints #1",
        "Count: 0",
        "     -> DataType: ExponentialHistogram",
        "ExponentialHistogramDataPoints #0",
        "     -> periscope.burst: Bool(true)",
        "Scale: 2",
        // scale 2: base 2^(1/4); negative index 5..6, positive index 40..42 (2^10 = 1024).
        "Bucket [-3.363586, -2.828427), Count: 1",
        "Bucket [-2.828427, -2.378414), Count: 2",
        "Bucket [0, 0], Count: 1",
        "Bucket (1024.000000, 1217.748086], Count: 3",
        "Bucket (1217.748086, 1448.154688], Count: 0",
        "Bucket (1448.154688, 1722.155858], Count: 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }
    // The empty histogram point prints no sum/min/max lines.
    let empty = text
        .split("HistogramDataPoints #1\n")
        .nth(1)
        .and_then(|rest| rest.split("Metric #3").next())
        .expect("second histogram point");
    assert!(!empty.contains("Sum:"), "{empty}");

    // Spans, with events.
    let spans = text
        .split("debug/test: Traces: 2 spans\n")
        .nth(1)
        .expect("traces part");
    let want = "\
ResourceSpans #0
Resource attributes:
     -> service.name: Str(periscope)
     -> host.name: Str(node-1)
ScopeSpans #0
InstrumentationScope spans 0.1.0
Span #0
    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736
    Parent ID      : 
    ID             : 00f067aa0ba902b7
    Name           : tcp.connection
    Kind           : Server
    Start time     : 2023-11-14 22:13:20 +0000 UTC
    End time       : 2023-11-14 22:13:20.0015 +0000 UTC
    Duration       : 1.5ms
    Status code    : Ok
    Status message : 
Attributes:
     -> server.port: Int(8080)
     -> network.peer.address: Str(10.0.0.2)
Events:
SpanEvent #0
     -> Name: tcp.retransmit
     -> Timestamp: 2023-11-14 22:13:20.000001 +0000 UTC
     -> Attributes:
          -> tcp.seq: Int(1234567)
Span #1
    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736
    Parent ID      : 00f067aa0ba902b7
    ID             : 53995c3f42cd8ad8
    Name           : dns.query
    Kind           : Client
    Start time     : 2023-11-14 22:13:20.00000001 +0000 UTC
    End time       : 2023-11-14 22:13:20.00000002 +0000 UTC
    Duration       : 10ns
    Status code    : Error
    Status message : SERVFAIL
Attributes:
     -> dns.question.name: Str(example.com)
";
    assert_eq!(spans, want);
}

#[test]
fn config_defaults_and_values() {
    let c: DebugConfig = from_node(&parse("{}").expect("yaml"), &[]).expect("config");
    assert_eq!((c.verbosity, c.output), (Verbosity::Basic, Output::Stderr));
    let c: DebugConfig = from_node(
        &parse("{verbosity: detailed, output: stdout}").expect("yaml"),
        &[],
    )
    .expect("config");
    assert_eq!(
        (c.verbosity, c.output),
        (Verbosity::Detailed, Output::Stdout)
    );
    let e = from_node::<DebugConfig>(&parse("verbosity: loud").expect("yaml"), &[])
        .expect_err("unknown verbosity");
    assert!(e.message.contains("detailed"), "{}", e.message);
    let e = from_node::<DebugConfig>(&parse("colour: true").expect("yaml"), &[])
        .expect_err("unknown option");
    assert!(e.message.contains("colour"), "{}", e.message);
}

#[test]
fn builds_for_both_outputs() {
    for output in [Output::Stderr, Output::Stdout] {
        let config = DebugConfig {
            verbosity: Verbosity::Basic,
            output,
        };
        // Building and flushing only: exporting would print into the test run's output.
        let mut exporter = config.build(&context("debug")).expect("build");
        exporter.flush().expect("flush");
    }
}

#[test]
fn schema_documents_every_option() {
    let schema = schemars::schema_for!(DebugConfig);
    assert_eq!(undocumented(&schema), Vec::<String>::new());
    let props = schema.as_value()["properties"]
        .as_object()
        .expect("properties");
    assert_eq!(props.len(), 2);
}

//! The `otlp` exporter talks to a real third-party collector: rotel (`pip install
//! rotel==0.0.1a15`) receives OTLP/gRPC, OTLP/HTTP protobuf and OTLP/HTTP JSON from periscope
//! and forwards it over OTLP/gRPC to a sink this test runs, which decodes it with the official
//! protobuf definitions. The test checks names, types, units, attributes, values and the span
//! tree of the telemetry it made itself.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality,
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use periscope_exporters::otlp::{OtlpConfig, Protocol};
use periscope_pipeline::component::{ComponentConfig, Exporter};
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};
use periscope_pipeline::model::{KeyValue, Telemetry};

use periscope_testkit::otlp::rotel::{self, rotel_binary, start_rotel};
use periscope_testkit::otlp::sink::{attr_value, free_port, point_count, str_attr, Received, Sink};
use periscope_testkit::{context, skip, telemetry};

fn config(endpoint: String, protocol: Protocol) -> OtlpConfig {
    let mut c = OtlpConfig {
        endpoint,
        protocol,
        ..OtlpConfig::default()
    };
    c.batch.timeout = ConfigDuration::from_millis(50);
    c.timeout = PositiveDuration::from_secs(5);
    c.retry_on_failure.initial_interval = ConfigDuration::from_millis(200);
    c.retry_on_failure.max_interval = ConfigDuration::from_secs(1);
    c.validate().expect("valid config");
    c
}

fn through_rotel(protocol: Protocol, case: &'static str) {
    let Some(rotel) = rotel_binary() else {
        skip(case, &format!("rotel is missing ({})", rotel::INSTALL));
        return;
    };
    let sink = Sink::start(free_port());
    let (grpc, http) = (free_port(), free_port());
    let _rotel = start_rotel(&rotel, grpc, http, sink.port);
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://127.0.0.1:{grpc}"),
        _ => format!("http://127.0.0.1:{http}"),
    };
    let ctx = context("otlp/test");
    let mut exporter = config(endpoint, protocol)
        .build_exporter(&ctx)
        .expect("exporter builds");
    let mut metrics = telemetry::metrics();
    metrics
        .resource
        .attributes
        .push(KeyValue::new("test.case", case));
    let mut traces = telemetry::traces();
    traces
        .resource
        .attributes
        .push(KeyValue::new("test.case", case));
    exporter.export(Telemetry::Metrics(metrics)).unwrap();
    exporter.export(Telemetry::Traces(traces)).unwrap();
    exporter.flush().expect("flush");

    // rotel 0.0.1a15 decodes OTLP/JSON histogram points only when their 64-bit counts are
    // JSON numbers; the OTLP/JSON mapping (and the Collector, and periscope) writes them as
    // strings, so over http/json rotel forwards the histograms without their points. Checked
    // by posting both forms to rotel by hand; the histogram checks below skip http/json.
    let json = protocol == Protocol::HttpJson;
    let expected_points = if json { 3 } else { 6 };
    let arrived = sink.wait_for(Duration::from_secs(20), |r| {
        r.points_with_resource("test.case", case) >= expected_points && r.all_spans().len() >= 2
    });
    let r = sink.received.lock().unwrap();
    let summary: Vec<_> = r
        .all_metrics()
        .iter()
        .map(|(rm, m)| {
            let case = str_attr(&rm.resource.as_ref().unwrap().attributes, "test.case");
            (m.name.clone(), point_count(m), case)
        })
        .collect();
    assert!(
        arrived,
        "not everything arrived through rotel: {summary:?}, {} spans",
        r.all_spans().len()
    );
    let stats = exporter.stats();
    assert_eq!(
        stats.totals(),
        (8, 0, 8, 0, 0),
        "enqueued, full, delivered, failed, rejected"
    );
    assert_eq!(ctx.counters.values().dropped, 0);

    // Resource: what the pipeline stamped plus host.id from /etc/machine-id.
    let (rm, _) = r.all_metrics()[0];
    let res = &rm.resource.as_ref().unwrap().attributes;
    assert_eq!(str_attr(res, "service.name").as_deref(), Some("periscope"));
    assert_eq!(str_attr(res, "host.name").as_deref(), Some("node-1"));
    assert!(str_attr(res, "service.version").is_some());
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        assert_eq!(str_attr(res, "host.id").as_deref(), Some(id.trim()));
    }
    let scope = rm.scope_metrics[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("flow", "0.1.0")
    );

    let metric = |name: &str| {
        r.all_metrics()
            .into_iter()
            .find(|(_, m)| m.name == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{name} did not arrive"))
    };

    let packets = metric("periscope.network.packets");
    assert_eq!(packets.unit, "{packet}");
    assert_eq!(packets.description, "Packets seen.");
    let Some(Data::Sum(sum)) = &packets.data else {
        panic!("not a sum: {packets:?}")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let tcp = sum
        .data_points
        .iter()
        .find(|p| str_attr(&p.attributes, "network.transport").as_deref() == Some("tcp"))
        .expect("tcp point");
    if !json {
        // (rotel's JSON decoder also loses `asInt` written as a string, as OTLP/JSON says.)
        assert_eq!(
            tcp.value,
            Some(number_data_point::Value::AsInt(9_007_199_254_740_993))
        );
    }
    assert_eq!(
        str_attr(&tcp.attributes, "network.interface.name").as_deref(),
        Some("eth0")
    );
    assert_eq!(
        (tcp.start_time_unix_nano, tcp.time_unix_nano),
        (telemetry::START, telemetry::TIME)
    );

    let fill = metric("periscope.queue.fill");
    assert_eq!(fill.unit, "1");
    let Some(Data::Gauge(g)) = &fill.data else {
        panic!("not a gauge: {fill:?}")
    };
    assert_eq!(
        g.data_points[0].value,
        Some(number_data_point::Value::AsDouble(0.375))
    );
    assert_eq!(
        attr_value(&g.data_points[0].attributes, "periscope.netns.inode"),
        Some(Value::IntValue(4_026_531_840))
    );

    let rtt = metric("network.rtt");
    assert_eq!(rtt.unit, "s");
    if json {
        // Only the names arrive (see above).
        metric("periscope.burst.size");
        check_spans(&r);
        return;
    }
    let Some(Data::Histogram(h)) = &rtt.data else {
        panic!("not a histogram: {rtt:?}")
    };
    assert_eq!(
        h.aggregation_temporality,
        AggregationTemporality::Delta as i32
    );
    let p = h
        .data_points
        .iter()
        .find(|p| attr_value(&p.attributes, "destination.port") == Some(Value::IntValue(443)))
        .expect("443 point");
    assert_eq!(
        (p.count, p.sum, p.min, p.max),
        (7, Some(0.0105), Some(0.0001), Some(0.005))
    );
    assert_eq!(p.explicit_bounds, vec![0.0005, 0.001, 0.0025]);
    assert_eq!(p.bucket_counts, vec![2, 1, 3, 1]);

    let burst = metric("periscope.burst.size");
    let Some(Data::ExponentialHistogram(e)) = &burst.data else {
        panic!("not exp: {burst:?}")
    };
    let p = &e.data_points[0];
    assert_eq!(
        (p.count, p.scale, p.zero_count, p.sum),
        (9, 2, 1, Some(12_345.5))
    );
    let pos = p.positive.as_ref().unwrap();
    assert_eq!((pos.offset, pos.bucket_counts.clone()), (40, vec![3, 0, 2]));
    let neg = p.negative.as_ref().unwrap();
    assert_eq!((neg.offset, neg.bucket_counts.clone()), (5, vec![2, 1]));

    check_spans(&r);
}

fn check_spans(r: &Received) {
    // The span tree: a SERVER root with an event, and a CLIENT child that failed.
    let spans = r.all_spans();
    let root = spans
        .iter()
        .find(|(_, s)| s.span_id == telemetry::ROOT_ID)
        .expect("root")
        .1;
    let child = spans
        .iter()
        .find(|(_, s)| s.span_id == telemetry::CHILD_ID)
        .expect("child")
        .1;
    assert_eq!(root.trace_id, telemetry::TRACE_ID);
    assert_eq!(child.trace_id, telemetry::TRACE_ID);
    assert!(root.parent_span_id.is_empty(), "the root has no parent");
    assert_eq!(child.parent_span_id, telemetry::ROOT_ID);
    assert_eq!(
        (root.name.as_str(), root.kind),
        ("tcp.connection", SpanKind::Server as i32)
    );
    assert_eq!(
        (child.name.as_str(), child.kind),
        ("dns.query", SpanKind::Client as i32)
    );
    assert_eq!(
        root.end_time_unix_nano - root.start_time_unix_nano,
        1_500_000
    );
    assert_eq!(root.events.len(), 1);
    assert_eq!(root.events[0].name, "tcp.retransmit");
    assert_eq!(
        attr_value(&root.events[0].attributes, "tcp.seq"),
        Some(Value::IntValue(1_234_567))
    );
    assert_eq!(
        attr_value(&root.attributes, "server.port"),
        Some(Value::IntValue(8080))
    );
    let status = child.status.as_ref().unwrap();
    assert_eq!(
        (status.code, status.message.as_str()),
        (StatusCode::Error as i32, "SERVFAIL")
    );
    assert_eq!(
        str_attr(&child.attributes, "dns.question.name").as_deref(),
        Some("example.com")
    );
}

#[test]
fn grpc_through_rotel() {
    through_rotel(Protocol::Grpc, "grpc");
}

#[test]
fn http_protobuf_through_rotel() {
    through_rotel(Protocol::HttpProtobuf, "http/protobuf");
}

#[test]
fn http_json_through_rotel() {
    through_rotel(Protocol::HttpJson, "http/json");
}

//! The OTLP/JSON encoder against the protobuf JSON mapping: numbers, strings, every metric
//! and span field.

use super::*;
use crate::otlp_proto;
use periscope_pipeline::model::{
    ExponentialBuckets, ExponentialHistogramPoint, HistogramPoint, KeyValue, Metric, MetricData,
    MetricsBatch, Number, NumberPoint, Resource, Scope, Span, SpanEvent, SpanKind, SpanStatus,
    Temporality, TracesBatch,
};

fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn floats_like_go() {
    let cases = [
        (0.0, "0"),
        (1.0, "1"),
        (-2.5, "-2.5"),
        (0.1, "0.1"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-10, "1.5e-10"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (-1.5e300, "-1.5e+300"),
        (f64::NAN, "\"NaN\""),
        (f64::INFINITY, "\"Infinity\""),
        (f64::NEG_INFINITY, "\"-Infinity\""),
    ];
    for (v, want) in cases {
        assert_eq!(text(|o| float(o, v)), want, "{v}");
    }
}

#[test]
fn integers_strings_ids_bytes() {
    assert_eq!(text(|o| quoted_u64(o, 0)), "\"0\"");
    assert_eq!(
        text(|o| quoted_u64(o, u64::MAX)),
        "\"18446744073709551615\""
    );
    assert_eq!(
        text(|o| quoted_i64(o, i64::MIN)),
        "\"-9223372036854775808\""
    );
    assert_eq!(
        text(|o| string(o, "a\"b\\c\nd\u{1}\t\r")),
        r#""a\"b\\c\nd\u0001\t\r""#
    );
    assert_eq!(text(|o| string(o, "é\u{7f}/<")), "\"é\u{7f}/<\"");
    assert_eq!(text(|o| hex(o, &[0x00, 0xab, 0x0f])), "\"00ab0f\"");
    for (raw, want) in [
        (&b""[..], "\"\""),
        (b"f", "\"Zg==\""),
        (b"fo", "\"Zm8=\""),
        (b"foo", "\"Zm9v\""),
        (b"foob", "\"Zm9vYg==\""),
    ] {
        assert_eq!(text(|o| base64(o, raw)), want);
    }
}

#[test]
fn metrics_line_is_exactly_what_the_collector_writes() {
    let batch = MetricsBatch {
        resource: Resource {
            attributes: vec![KeyValue::new("service.name", "periscope")],
        },
        scope: Scope {
            name: "flow".into(),
            version: "0.1.0".into(),
        },
        metrics: vec![
            Metric {
                name: "periscope.network.packets".into(),
                description: "".into(),
                unit: "{packet}".into(),
                data: MetricData::Sum {
                    points: vec![NumberPoint {
                        attributes: vec![KeyValue::new("network.transport", "udp")],
                        start_time_ns: 1,
                        time_ns: 2,
                        value: Number::Int(0),
                    }],
                    temporality: Temporality::Cumulative,
                    monotonic: true,
                },
            },
            Metric {
                name: "g".into(),
                description: "".into(),
                unit: "".into(),
                data: MetricData::Gauge {
                    points: vec![NumberPoint {
                        attributes: vec![],
                        start_time_ns: 0,
                        time_ns: 2,
                        value: Number::Double(1.0),
                    }],
                },
            },
            Metric {
                name: "h".into(),
                description: "".into(),
                unit: "s".into(),
                data: MetricData::Histogram {
                    points: vec![HistogramPoint {
                        attributes: vec![],
                        start_time_ns: 1,
                        time_ns: 2,
                        count: 3,
                        sum: Some(0.5),
                        min: None,
                        max: Some(0.25),
                        explicit_bounds: vec![0.1],
                        bucket_counts: vec![1, 2],
                    }],
                    temporality: Temporality::Delta,
                },
            },
            Metric {
                name: "e".into(),
                description: "".into(),
                unit: "".into(),
                data: MetricData::ExponentialHistogram {
                    points: vec![ExponentialHistogramPoint {
                        attributes: vec![],
                        start_time_ns: 1,
                        time_ns: 2,
                        count: 4,
                        sum: None,
                        min: None,
                        max: None,
                        scale: -1,
                        zero_count: 1,
                        positive: ExponentialBuckets {
                            offset: 2,
                            bucket_counts: vec![3],
                        },
                        negative: ExponentialBuckets::default(),
                    }],
                    temporality: Temporality::Cumulative,
                },
            },
        ],
    };
    let line = text(|o| write_metrics_request(o, &otlp_proto::metrics_request(batch)));
    let want = concat!(
        r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"periscope"}}]},"#,
        r#""scopeMetrics":[{"scope":{"name":"flow","version":"0.1.0"},"metrics":["#,
        r#"{"name":"periscope.network.packets","unit":"{packet}","sum":{"dataPoints":[{"attributes":[{"key":"network.transport","value":{"stringValue":"udp"}}],"startTimeUnixNano":"1","timeUnixNano":"2","asInt":"0"}],"aggregationTemporality":2,"isMonotonic":true}},"#,
        r#"{"name":"g","gauge":{"dataPoints":[{"timeUnixNano":"2","asDouble":1}]}},"#,
        r#"{"name":"h","unit":"s","histogram":{"dataPoints":[{"startTimeUnixNano":"1","timeUnixNano":"2","count":"3","sum":0.5,"bucketCounts":["1","2"],"explicitBounds":[0.1],"max":0.25}],"aggregationTemporality":1}},"#,
        r#"{"name":"e","exponentialHistogram":{"dataPoints":[{"startTimeUnixNano":"1","timeUnixNano":"2","count":"4","scale":-1,"zeroCount":"1","positive":{"offset":2,"bucketCounts":["3"]},"negative":{}}],"aggregationTemporality":2}}"#,
        r#"]}]}]}"#
    );
    assert_eq!(line, want);
}

#[test]
fn traces_line_is_exactly_what_the_collector_writes() {
    let batch = TracesBatch {
        resource: Resource::default(),
        scope: Scope {
            name: "spans".into(),
            version: "".into(),
        },
        spans: vec![
            Span {
                trace_id: [0x11; 16],
                span_id: [0x22; 8],
                parent_span_id: [0; 8],
                name: "connect".into(),
                kind: SpanKind::Client,
                start_time_ns: 10,
                end_time_ns: 20,
                attributes: vec![KeyValue::new("server.port", 443u16)],
                events: vec![SpanEvent {
                    time_ns: 15,
                    name: "syn".into(),
                    attributes: vec![],
                }],
                status: SpanStatus::Unset,
            },
            Span {
                trace_id: [0x11; 16],
                span_id: [0x33; 8],
                parent_span_id: [0x22; 8],
                name: "x".into(),
                kind: SpanKind::Internal,
                start_time_ns: 11,
                end_time_ns: 12,
                attributes: vec![KeyValue::new("ok", false)],
                events: vec![],
                status: SpanStatus::Error("refused".into()),
            },
        ],
    };
    let line = text(|o| write_traces_request(o, &otlp_proto::traces_request(batch)));
    let want = concat!(
        r#"{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{"name":"spans"},"spans":["#,
        r#"{"traceId":"11111111111111111111111111111111","spanId":"2222222222222222","name":"connect","kind":3,"startTimeUnixNano":"10","endTimeUnixNano":"20","attributes":[{"key":"server.port","value":{"intValue":"443"}}],"events":[{"timeUnixNano":"15","name":"syn"}],"status":{}},"#,
        r#"{"traceId":"11111111111111111111111111111111","spanId":"3333333333333333","parentSpanId":"2222222222222222","name":"x","kind":1,"startTimeUnixNano":"11","endTimeUnixNano":"12","attributes":[{"key":"ok","value":{"boolValue":false}}],"status":{"message":"refused","code":2}}"#,
        r#"]}]}]}"#
    );
    assert_eq!(line, want);
}

#[test]
fn every_any_value_kind() {
    use common::any_value::Value;
    let v = |value| common::AnyValue { value: Some(value) };
    let arr = v(Value::ArrayValue(common::ArrayValue {
        values: vec![v(Value::IntValue(-1)), v(Value::DoubleValue(2.5))],
    }));
    let kvl = v(Value::KvlistValue(common::KeyValueList {
        values: vec![common::KeyValue {
            key: "k".into(),
            value: Some(v(Value::BytesValue(vec![1, 2, 3]))),
            key_strindex: 0,
        }],
    }));
    assert_eq!(
        text(|o| any_value(o, &arr)),
        r#"{"arrayValue":{"values":[{"intValue":"-1"},{"doubleValue":2.5}]}}"#
    );
    assert_eq!(
        text(|o| any_value(o, &kvl)),
        r#"{"kvlistValue":{"values":[{"key":"k","value":{"bytesValue":"AQID"}}]}}"#
    );
    assert_eq!(
        text(|o| any_value(o, &common::AnyValue { value: None })),
        "{}"
    );
}

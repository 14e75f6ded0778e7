//! Telemetry for exporter tests: one batch of every metric type and a few spans.

use periscope_pipeline::model::{
    ExponentialBuckets, ExponentialHistogramPoint, HistogramPoint, KeyValue, Metric, MetricData,
    MetricsBatch, Number, NumberPoint, Resource, Scope, Span, SpanEvent, SpanKind, SpanStatus,
    Temporality, TracesBatch,
};

/// Exports [`metrics()`] through `exporter` and flushes it (panics if either fails).
pub fn send_metrics(exporter: &mut dyn periscope_pipeline::component::Exporter) {
    exporter
        .export(periscope_pipeline::model::Telemetry::Metrics(metrics()))
        .unwrap();
    exporter.flush().unwrap();
}

/// Start time of every sample point and span.
pub const START: u64 = 1_700_000_000_000_000_000;
/// Time of every sample point.
pub const TIME: u64 = 1_700_000_010_123_456_789;

/// The resource of every sample batch: `service.name` and `host.name`.
pub fn resource() -> Resource {
    Resource {
        attributes: vec![
            KeyValue::new("service.name", "periscope"),
            KeyValue::new("host.name", String::from("node-1")),
        ],
    }
}

/// Four metrics (sum, gauge, histogram, exponential histogram), six data points.
pub fn metrics() -> MetricsBatch {
    MetricsBatch {
        resource: resource(),
        scope: Scope {
            name: "flow".into(),
            version: "0.1.0".into(),
        },
        metrics: vec![
            Metric {
                name: "periscope.network.packets".into(),
                description: "Packets seen.".into(),
                unit: "{packet}".into(),
                data: MetricData::Sum {
                    points: vec![
                        NumberPoint {
                            attributes: vec![
                                KeyValue::new("network.interface.name", "eth0"),
                                KeyValue::new("network.transport", "tcp"),
                            ],
                            start_time_ns: START,
                            time_ns: TIME,
                            value: Number::Int(9_007_199_254_740_993), // > 2^53
                        },
                        NumberPoint {
                            attributes: vec![
                                KeyValue::new("network.interface.name", "eth0"),
                                KeyValue::new("network.transport", "udp"),
                            ],
                            start_time_ns: START,
                            time_ns: TIME,
                            value: Number::Int(0),
                        },
                    ],
                    temporality: Temporality::Cumulative,
                    monotonic: true,
                },
            },
            Metric {
                name: "periscope.queue.fill".into(),
                description: "".into(),
                unit: "1".into(),
                data: MetricData::Gauge {
                    points: vec![NumberPoint {
                        attributes: vec![KeyValue::new("periscope.netns.inode", 4_026_531_840u32)],
                        start_time_ns: 0,
                        time_ns: TIME,
                        value: Number::Double(0.375),
                    }],
                },
            },
            Metric {
                name: "network.rtt".into(),
                description: "Round-trip time.".into(),
                unit: "s".into(),
                data: MetricData::Histogram {
                    points: vec![
                        HistogramPoint {
                            attributes: vec![KeyValue::new("destination.port", 443u16)],
                            start_time_ns: START,
                            time_ns: TIME,
                            count: 7,
                            sum: Some(0.0105),
                            min: Some(0.0001),
                            max: Some(0.005),
                            explicit_bounds: vec![0.0005, 0.001, 0.0025],
                            bucket_counts: vec![2, 1, 3, 1],
                        },
                        HistogramPoint {
                            attributes: vec![KeyValue::new("destination.port", 53u16)],
                            start_time_ns: START,
                            time_ns: TIME,
                            count: 0,
                            sum: None,
                            min: None,
                            max: None,
                            explicit_bounds: vec![0.0005, 0.001, 0.0025],
                            bucket_counts: vec![0, 0, 0, 0],
                        },
                    ],
                    temporality: Temporality::Delta,
                },
            },
            Metric {
                name: "periscope.burst.size".into(),
                description: "".into(),
                unit: "By".into(),
                data: MetricData::ExponentialHistogram {
                    points: vec![ExponentialHistogramPoint {
                        attributes: vec![KeyValue::new("periscope.burst", true)],
                        start_time_ns: START,
                        time_ns: TIME,
                        count: 9,
                        sum: Some(12_345.5),
                        min: Some(-3.0),
                        max: Some(4_096.0),
                        scale: 2,
                        zero_count: 1,
                        positive: ExponentialBuckets {
                            offset: 40,
                            bucket_counts: vec![3, 0, 2],
                        },
                        negative: ExponentialBuckets {
                            offset: 5,
                            bucket_counts: vec![2, 1],
                        },
                    }],
                    temporality: Temporality::Cumulative,
                },
            },
        ],
    }
}

/// The trace of the sample spans.
pub const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
/// The root span's id.
pub const ROOT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
/// The child span's id.
pub const CHILD_ID: [u8; 8] = [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8];

/// A root span with an event and a child span that failed.
pub fn traces() -> TracesBatch {
    TracesBatch {
        resource: resource(),
        scope: Scope {
            name: "spans".into(),
            version: "0.1.0".into(),
        },
        spans: vec![
            Span {
                trace_id: TRACE_ID,
                span_id: ROOT_ID,
                parent_span_id: [0; 8],
                name: "tcp.connection".into(),
                kind: SpanKind::Server,
                start_time_ns: START,
                end_time_ns: START + 1_500_000,
                attributes: vec![
                    KeyValue::new("server.port", 8080u16),
                    KeyValue::new("network.peer.address", "10.0.0.2"),
                ],
                events: vec![SpanEvent {
                    time_ns: START + 1_000,
                    name: "tcp.retransmit".into(),
                    attributes: vec![KeyValue::new("tcp.seq", 1_234_567i64)],
                }],
                status: SpanStatus::Ok,
            },
            Span {
                trace_id: TRACE_ID,
                span_id: CHILD_ID,
                parent_span_id: ROOT_ID,
                name: "dns.query".into(),
                kind: SpanKind::Client,
                start_time_ns: START + 10,
                end_time_ns: START + 20,
                attributes: vec![KeyValue::new("dns.question.name", "example.com")],
                events: vec![],
                status: SpanStatus::Error("SERVFAIL".into()),
            },
        ],
    }
}

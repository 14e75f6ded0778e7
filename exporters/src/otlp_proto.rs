//! periscope's telemetry model → OTLP protobuf messages (`opentelemetry-proto`).
//!
//! The mapping is one to one: a [`MetricsBatch`] becomes one `ResourceMetrics` with one
//! `ScopeMetrics`, a [`TracesBatch`] one `ResourceSpans` with one `ScopeSpans`. Every function
//! takes its input by value so that owned strings, attribute lists and bucket vectors move into
//! the message instead of being copied; only `&'static str` names are allocated as `String`s.
//!
//! The request builders ([`metrics_request`], [`traces_request`], [`request`]) are what an
//! exporter needs for one batch; the per-item functions ([`resource_metrics`], [`metric`],
//! [`span`], ...) let an exporter that merges batches build its own request.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;

use periscope_pipeline::model::{
    AnyValue, Attributes, ExponentialBuckets, ExponentialHistogramPoint, HistogramPoint, KeyValue,
    Metric, MetricData, MetricsBatch, Number, NumberPoint, Resource, Scope, Span, SpanEvent,
    SpanKind, SpanStatus, Telemetry, Temporality, TracesBatch,
};

/// One OTLP export request: what one [`Telemetry`] batch becomes.
#[derive(Clone, Debug, PartialEq)]
pub enum ExportRequest {
    Metrics(ExportMetricsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

/// The request for one batch of either signal.
pub fn request(telemetry: Telemetry) -> ExportRequest {
    match telemetry {
        Telemetry::Metrics(m) => ExportRequest::Metrics(metrics_request(m)),
        Telemetry::Traces(t) => ExportRequest::Traces(traces_request(t)),
    }
}

/// `ExportMetricsServiceRequest` holding one resource and scope.
pub fn metrics_request(batch: MetricsBatch) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![resource_metrics(batch)],
    }
}

/// `ExportTraceServiceRequest` holding one resource and scope.
pub fn traces_request(batch: TracesBatch) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(batch)],
    }
}

/// A batch's resource, scope and metrics.
pub fn resource_metrics(batch: MetricsBatch) -> metrics::ResourceMetrics {
    metrics::ResourceMetrics {
        resource: Some(self::resource(batch.resource)),
        scope_metrics: vec![metrics::ScopeMetrics {
            scope: Some(scope(batch.scope)),
            metrics: batch.metrics.into_iter().map(metric).collect(),
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// A batch's resource, scope and spans.
pub fn resource_spans(batch: TracesBatch) -> trace::ResourceSpans {
    trace::ResourceSpans {
        resource: Some(self::resource(batch.resource)),
        scope_spans: vec![trace::ScopeSpans {
            scope: Some(scope(batch.scope)),
            spans: batch.spans.into_iter().map(span).collect(),
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// The resource.
pub fn resource(r: Resource) -> resource::Resource {
    resource::Resource {
        attributes: attributes(r.attributes),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

/// The instrumentation scope (periscope's scopes carry no attributes).
pub fn scope(s: Scope) -> common::InstrumentationScope {
    common::InstrumentationScope {
        name: s.name.into_owned(),
        version: s.version.into_owned(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

/// An attribute list, order kept.
pub fn attributes(a: Attributes) -> Vec<common::KeyValue> {
    a.into_iter().map(key_value).collect()
}

/// One attribute.
pub fn key_value(kv: KeyValue) -> common::KeyValue {
    common::KeyValue {
        key: kv.key.into_owned(),
        value: Some(any_value(kv.value)),
        key_strindex: 0,
    }
}

/// An attribute value.
pub fn any_value(v: AnyValue) -> common::AnyValue {
    use common::any_value::Value;
    let value = match v {
        AnyValue::String(s) => Value::StringValue(s.into_owned()),
        AnyValue::Int(i) => Value::IntValue(i),
        AnyValue::Double(d) => Value::DoubleValue(d),
        AnyValue::Bool(b) => Value::BoolValue(b),
    };
    common::AnyValue { value: Some(value) }
}

/// OTLP's enum for a temporality.
pub fn temporality(t: Temporality) -> metrics::AggregationTemporality {
    match t {
        Temporality::Cumulative => metrics::AggregationTemporality::Cumulative,
        Temporality::Delta => metrics::AggregationTemporality::Delta,
    }
}

/// One metric with its points.
pub fn metric(m: Metric) -> metrics::Metric {
    use metrics::metric::Data;
    let data = match m.data {
        MetricData::Sum {
            points,
            temporality: t,
            monotonic,
        } => Data::Sum(metrics::Sum {
            data_points: points.into_iter().map(number_point).collect(),
            aggregation_temporality: temporality(t) as i32,
            is_monotonic: monotonic,
        }),
        MetricData::Gauge { points } => Data::Gauge(metrics::Gauge {
            data_points: points.into_iter().map(number_point).collect(),
        }),
        MetricData::Histogram {
            points,
            temporality: t,
        } => Data::Histogram(metrics::Histogram {
            data_points: points.into_iter().map(histogram_point).collect(),
            aggregation_temporality: temporality(t) as i32,
        }),
        MetricData::ExponentialHistogram {
            points,
            temporality: t,
        } => Data::ExponentialHistogram(metrics::ExponentialHistogram {
            data_points: points
                .into_iter()
                .map(exponential_histogram_point)
                .collect(),
            aggregation_temporality: temporality(t) as i32,
        }),
    };
    metrics::Metric {
        name: m.name.into_owned(),
        description: m.description.into_owned(),
        unit: m.unit.into_owned(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

/// One point of a sum or gauge.
pub fn number_point(p: NumberPoint) -> metrics::NumberDataPoint {
    use metrics::number_data_point::Value;
    metrics::NumberDataPoint {
        attributes: attributes(p.attributes),
        start_time_unix_nano: p.start_time_ns,
        time_unix_nano: p.time_ns,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(match p.value {
            Number::Int(i) => Value::AsInt(i),
            Number::Double(d) => Value::AsDouble(d),
        }),
    }
}

/// One point of an explicit-bucket histogram (bounds and counts move, not copied).
pub fn histogram_point(p: HistogramPoint) -> metrics::HistogramDataPoint {
    metrics::HistogramDataPoint {
        attributes: attributes(p.attributes),
        start_time_unix_nano: p.start_time_ns,
        time_unix_nano: p.time_ns,
        count: p.count,
        sum: p.sum,
        bucket_counts: p.bucket_counts,
        explicit_bounds: p.explicit_bounds,
        exemplars: Vec::new(),
        flags: 0,
        min: p.min,
        max: p.max,
    }
}

/// One point of a base-2 exponential histogram.
pub fn exponential_histogram_point(
    p: ExponentialHistogramPoint,
) -> metrics::ExponentialHistogramDataPoint {
    metrics::ExponentialHistogramDataPoint {
        attributes: attributes(p.attributes),
        start_time_unix_nano: p.start_time_ns,
        time_unix_nano: p.time_ns,
        count: p.count,
        sum: p.sum,
        scale: p.scale,
        zero_count: p.zero_count,
        positive: Some(buckets(p.positive)),
        negative: Some(buckets(p.negative)),
        flags: 0,
        exemplars: Vec::new(),
        min: p.min,
        max: p.max,
        // periscope counts only exact zeros in the zero bucket.
        zero_threshold: 0.0,
    }
}

fn buckets(b: ExponentialBuckets) -> metrics::exponential_histogram_data_point::Buckets {
    metrics::exponential_histogram_data_point::Buckets {
        offset: b.offset,
        bucket_counts: b.bucket_counts,
    }
}

/// OTLP's enum for a span kind.
pub fn span_kind(k: SpanKind) -> trace::span::SpanKind {
    use trace::span::SpanKind as K;
    match k {
        SpanKind::Internal => K::Internal,
        SpanKind::Server => K::Server,
        SpanKind::Client => K::Client,
        SpanKind::Producer => K::Producer,
        SpanKind::Consumer => K::Consumer,
    }
}

/// A span's status.
pub fn status(s: SpanStatus) -> trace::Status {
    use trace::status::StatusCode;
    let (code, message) = match s {
        SpanStatus::Unset => (StatusCode::Unset, String::new()),
        SpanStatus::Ok => (StatusCode::Ok, String::new()),
        SpanStatus::Error(m) => (StatusCode::Error, m),
    };
    trace::Status {
        message,
        code: code as i32,
    }
}

/// One span. An all-zero parent id becomes an empty one: OTLP's mark of a root span.
pub fn span(s: Span) -> trace::Span {
    let parent_span_id = if s.parent_span_id == [0; 8] {
        Vec::new()
    } else {
        s.parent_span_id.to_vec()
    };
    trace::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id,
        flags: 0,
        name: s.name.into_owned(),
        kind: span_kind(s.kind) as i32,
        start_time_unix_nano: s.start_time_ns,
        end_time_unix_nano: s.end_time_ns,
        attributes: attributes(s.attributes),
        dropped_attributes_count: 0,
        events: s.events.into_iter().map(span_event).collect(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(status(s.status)),
    }
}

/// One span event.
pub fn span_event(e: SpanEvent) -> trace::span::Event {
    trace::span::Event {
        time_unix_nano: e.time_ns,
        name: e.name.into_owned(),
        attributes: attributes(e.attributes),
        dropped_attributes_count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::any_value::Value;
    use metrics::metric::Data;

    fn kv(k: &'static str, v: impl Into<AnyValue>) -> KeyValue {
        KeyValue::new(k, v)
    }

    fn one(data: MetricData) -> metrics::Metric {
        let req = metrics_request(MetricsBatch {
            resource: Resource {
                attributes: vec![kv("service.name", "periscope")],
            },
            scope: Scope {
                name: "flow".into(),
                version: "0.1.0".into(),
            },
            metrics: vec![Metric {
                name: "m".into(),
                description: "d".into(),
                unit: "By".into(),
                data,
            }],
        });
        assert_eq!(req.resource_metrics.len(), 1);
        let rm = &req.resource_metrics[0];
        let res = rm.resource.as_ref().expect("resource");
        assert_eq!(res.attributes[0].key, "service.name");
        assert_eq!(
            res.attributes[0]
                .value
                .as_ref()
                .and_then(|v| v.value.clone()),
            Some(Value::StringValue("periscope".into()))
        );
        assert_eq!(rm.scope_metrics.len(), 1);
        let sm = &rm.scope_metrics[0];
        let scope = sm.scope.as_ref().expect("scope");
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("flow", "0.1.0")
        );
        assert_eq!(sm.metrics.len(), 1);
        let m = sm.metrics[0].clone();
        assert_eq!((m.name.as_str(), m.description.as_str()), ("m", "d"));
        assert_eq!(m.unit, "By");
        m
    }

    fn point(value: Number) -> NumberPoint {
        NumberPoint {
            attributes: vec![
                kv("network.transport", "tcp"),
                kv("destination.port", 443u16),
                kv("ratio", 0.5),
                kv("ok", true),
            ],
            start_time_ns: 1_000,
            time_ns: 2_000,
            value,
        }
    }

    #[test]
    fn sum_keeps_temporality_monotonic_and_values() {
        let m = one(MetricData::Sum {
            points: vec![point(Number::Int(-7)), point(Number::Double(2.5))],
            temporality: Temporality::Delta,
            monotonic: true,
        });
        let Some(Data::Sum(sum)) = m.data else {
            panic!("not a sum: {:?}", m.data)
        };
        assert_eq!(
            sum.aggregation_temporality,
            metrics::AggregationTemporality::Delta as i32
        );
        assert!(sum.is_monotonic);
        let p = &sum.data_points[0];
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (1_000, 2_000));
        assert_eq!(p.value, Some(metrics::number_data_point::Value::AsInt(-7)));
        assert_eq!(
            sum.data_points[1].value,
            Some(metrics::number_data_point::Value::AsDouble(2.5))
        );
        let values: Vec<_> = p
            .attributes
            .iter()
            .map(|a| {
                (
                    a.key.as_str(),
                    a.value.as_ref().and_then(|v| v.value.clone()),
                )
            })
            .collect();
        assert_eq!(
            values,
            vec![
                ("network.transport", Some(Value::StringValue("tcp".into()))),
                ("destination.port", Some(Value::IntValue(443))),
                ("ratio", Some(Value::DoubleValue(0.5))),
                ("ok", Some(Value::BoolValue(true))),
            ]
        );
    }

    #[test]
    fn cumulative_non_monotonic_sum() {
        let m = one(MetricData::Sum {
            points: vec![point(Number::Int(1))],
            temporality: Temporality::Cumulative,
            monotonic: false,
        });
        let Some(Data::Sum(sum)) = m.data else {
            panic!("not a sum")
        };
        assert_eq!(sum.aggregation_temporality, 2);
        assert!(!sum.is_monotonic);
    }

    #[test]
    fn gauge() {
        let m = one(MetricData::Gauge {
            points: vec![point(Number::Double(0.25))],
        });
        let Some(Data::Gauge(g)) = m.data else {
            panic!("not a gauge")
        };
        assert_eq!(g.data_points.len(), 1);
        assert_eq!(
            g.data_points[0].value,
            Some(metrics::number_data_point::Value::AsDouble(0.25))
        );
        assert_eq!(g.data_points[0].attributes.len(), 4);
    }

    #[test]
    fn histogram_moves_buckets_and_optional_stats() {
        let m = one(MetricData::Histogram {
            points: vec![
                HistogramPoint {
                    attributes: vec![kv("k", "v")],
                    start_time_ns: 10,
                    time_ns: 20,
                    count: 6,
                    sum: Some(12.5),
                    min: Some(0.5),
                    max: Some(7.0),
                    explicit_bounds: vec![1.0, 5.0],
                    bucket_counts: vec![1, 2, 3],
                },
                HistogramPoint {
                    attributes: vec![],
                    start_time_ns: 10,
                    time_ns: 20,
                    count: 0,
                    sum: None,
                    min: None,
                    max: None,
                    explicit_bounds: vec![],
                    bucket_counts: vec![0],
                },
            ],
            temporality: Temporality::Cumulative,
        });
        let Some(Data::Histogram(h)) = m.data else {
            panic!("not a histogram")
        };
        assert_eq!(h.aggregation_temporality, 2);
        let p = &h.data_points[0];
        assert_eq!(
            (p.start_time_unix_nano, p.time_unix_nano, p.count),
            (10, 20, 6)
        );
        assert_eq!((p.sum, p.min, p.max), (Some(12.5), Some(0.5), Some(7.0)));
        assert_eq!(p.explicit_bounds, vec![1.0, 5.0]);
        assert_eq!(p.bucket_counts, vec![1, 2, 3]);
        let empty = &h.data_points[1];
        assert_eq!((empty.sum, empty.min, empty.max), (None, None, None));
        assert_eq!(empty.bucket_counts, vec![0]);
    }

    #[test]
    fn exponential_histogram() {
        let m = one(MetricData::ExponentialHistogram {
            points: vec![ExponentialHistogramPoint {
                attributes: vec![kv("k", 1i64)],
                start_time_ns: 5,
                time_ns: 9,
                count: 10,
                sum: Some(3.5),
                min: Some(-2.0),
                max: Some(4.0),
                scale: 3,
                zero_count: 2,
                positive: ExponentialBuckets {
                    offset: -2,
                    bucket_counts: vec![1, 0, 4],
                },
                negative: ExponentialBuckets {
                    offset: 1,
                    bucket_counts: vec![3],
                },
            }],
            temporality: Temporality::Delta,
        });
        let Some(Data::ExponentialHistogram(h)) = m.data else {
            panic!("not an exponential histogram")
        };
        assert_eq!(h.aggregation_temporality, 1);
        let p = &h.data_points[0];
        assert_eq!((p.count, p.zero_count, p.scale), (10, 2, 3));
        assert_eq!((p.sum, p.min, p.max), (Some(3.5), Some(-2.0), Some(4.0)));
        assert_eq!(p.zero_threshold, 0.0);
        let pos = p.positive.as_ref().expect("positive");
        assert_eq!((pos.offset, pos.bucket_counts.clone()), (-2, vec![1, 0, 4]));
        let neg = p.negative.as_ref().expect("negative");
        assert_eq!((neg.offset, neg.bucket_counts.clone()), (1, vec![3]));
    }

    fn test_span(parent: [u8; 8], kind: SpanKind, status: SpanStatus) -> Span {
        Span {
            trace_id: [0xab; 16],
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent_span_id: parent,
            name: "connect".into(),
            kind,
            start_time_ns: 100,
            end_time_ns: 250,
            attributes: vec![kv("server.port", 80u16)],
            events: vec![SpanEvent {
                time_ns: 150,
                name: "retransmit".into(),
                attributes: vec![kv("tcp.seq", 42i64)],
            }],
            status,
        }
    }

    #[test]
    fn spans_ids_kind_status_events_parent() {
        let req = traces_request(TracesBatch {
            resource: Resource::default(),
            scope: Scope {
                name: "spans".into(),
                version: "".into(),
            },
            spans: vec![
                test_span([0; 8], SpanKind::Client, SpanStatus::Unset),
                test_span([9; 8], SpanKind::Server, SpanStatus::Error("reset".into())),
                test_span([9; 8], SpanKind::Internal, SpanStatus::Ok),
                test_span([9; 8], SpanKind::Producer, SpanStatus::Ok),
                test_span([9; 8], SpanKind::Consumer, SpanStatus::Ok),
            ],
        });
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        let root = &spans[0];
        assert_eq!(root.trace_id, vec![0xab; 16]);
        assert_eq!(root.span_id, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(root.parent_span_id.is_empty(), "root span has no parent id");
        assert_eq!(root.name, "connect");
        assert_eq!(root.kind, trace::span::SpanKind::Client as i32);
        assert_eq!(
            (root.start_time_unix_nano, root.end_time_unix_nano),
            (100, 250)
        );
        assert_eq!(root.status, Some(trace::Status::default()));
        assert_eq!(root.attributes[0].key, "server.port");
        let ev = &root.events[0];
        assert_eq!((ev.time_unix_nano, ev.name.as_str()), (150, "retransmit"));
        assert_eq!(ev.attributes[0].key, "tcp.seq");

        let child = &spans[1];
        assert_eq!(child.parent_span_id, vec![9; 8]);
        assert_eq!(child.kind, 2);
        assert_eq!(
            child.status,
            Some(trace::Status {
                message: "reset".into(),
                code: trace::status::StatusCode::Error as i32
            })
        );
        let kinds: Vec<i32> = spans.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, vec![3, 2, 1, 4, 5]);
        assert_eq!(spans[2].status.as_ref().map(|s| s.code), Some(1));
    }

    #[test]
    fn request_dispatches_on_signal() {
        let m = request(Telemetry::Metrics(MetricsBatch::default()));
        assert!(matches!(m, ExportRequest::Metrics(r) if r.resource_metrics.len() == 1));
        let t = request(Telemetry::Traces(TracesBatch::default()));
        assert!(matches!(t, ExportRequest::Traces(r) if r.resource_spans.len() == 1));
    }
}

//! Telemetry: what processors produce and exporters ship, shaped like the OpenTelemetry data
//! model (resource → scope → metrics/spans) so that exporters map it one to one onto OTLP.

use std::borrow::Cow;
use std::fmt;

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AnyValue {
    String(Cow<'static, str>),
    Int(i64),
    Double(f64),
    Bool(bool),
}

impl fmt::Display for AnyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyValue::String(s) => f.write_str(s),
            AnyValue::Int(i) => write!(f, "{i}"),
            AnyValue::Double(d) => write!(f, "{d}"),
            AnyValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `impl From<$t> for AnyValue`, each through `$conv` into variant `$variant`.
macro_rules! any_value_from {
    ($($t:ty => $variant:ident($conv:expr)),* $(,)?) => {
        $(impl From<$t> for AnyValue {
            fn from(v: $t) -> Self {
                AnyValue::$variant($conv(v))
            }
        })*
    };
}

any_value_from! {
    &'static str => String(Cow::Borrowed),
    String => String(Cow::Owned),
    i64 => Int(std::convert::identity),
    u32 => Int(i64::from),
    u16 => Int(i64::from),
    bool => Bool(std::convert::identity),
    f64 => Double(std::convert::identity),
}

/// One attribute: a key (an OpenTelemetry semantic-convention name or `periscope.*`) and value.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: Cow<'static, str>,
    pub value: AnyValue,
}

impl KeyValue {
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<AnyValue>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// An ordered attribute list (order is kept as built; exporters do not re-sort).
pub type Attributes = Vec<KeyValue>;

/// The entity that produced the telemetry (`service.name`, `host.name`, ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    pub attributes: Attributes,
}

/// The instrumentation scope: which periscope component made the telemetry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scope {
    pub name: Cow<'static, str>,
    pub version: Cow<'static, str>,
}

/// How a cumulative or delta series relates successive points.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Temporality {
    /// Each point covers everything since the series started.
    #[default]
    Cumulative,
    /// Each point covers only the time since the previous point.
    Delta,
}

/// A number, integer or floating point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(i64),
    Double(f64),
}

/// One point of a sum or gauge.
#[derive(Clone, Debug, PartialEq)]
pub struct NumberPoint {
    pub attributes: Attributes,
    pub start_time_ns: u64,
    pub time_ns: u64,
    pub value: Number,
}

/// One point of an explicit-bucket histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramPoint {
    pub attributes: Attributes,
    pub start_time_ns: u64,
    pub time_ns: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Upper bounds of the buckets; `bucket_counts` has one more entry (the overflow bucket).
    pub explicit_bounds: Vec<f64>,
    pub bucket_counts: Vec<u64>,
}

/// Buckets of one sign of an exponential histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExponentialBuckets {
    /// Index of the first bucket in `bucket_counts`.
    pub offset: i32,
    pub bucket_counts: Vec<u64>,
}

/// One point of a base-2 exponential histogram, as OpenTelemetry defines it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialHistogramPoint {
    pub attributes: Attributes,
    pub start_time_ns: u64,
    pub time_ns: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Bucket boundaries are powers of `2^(2^-scale)`.
    pub scale: i32,
    pub zero_count: u64,
    pub positive: ExponentialBuckets,
    pub negative: ExponentialBuckets,
}

/// The data of one metric.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricData {
    Sum {
        points: Vec<NumberPoint>,
        temporality: Temporality,
        monotonic: bool,
    },
    Gauge {
        points: Vec<NumberPoint>,
    },
    Histogram {
        points: Vec<HistogramPoint>,
        temporality: Temporality,
    },
    ExponentialHistogram {
        points: Vec<ExponentialHistogramPoint>,
        temporality: Temporality,
    },
}

impl MetricData {
    /// Number of data points.
    pub fn len(&self) -> usize {
        match self {
            MetricData::Sum { points, .. } | MetricData::Gauge { points } => points.len(),
            MetricData::Histogram { points, .. } => points.len(),
            MetricData::ExponentialHistogram { points, .. } => points.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `other`'s points to these, when both are of the same kind (and temporality);
    /// otherwise `other` is returned.
    pub fn append(&mut self, other: MetricData) -> Option<MetricData> {
        match (self, other) {
            (MetricData::Gauge { points: a }, MetricData::Gauge { points: b }) => a.extend(b),
            (
                MetricData::Sum {
                    points: a,
                    temporality: t,
                    monotonic: m,
                },
                MetricData::Sum {
                    points: b,
                    temporality: u,
                    monotonic: n,
                },
            ) if *t == u && *m == n => a.extend(b),
            (
                MetricData::Histogram {
                    points: a,
                    temporality: t,
                },
                MetricData::Histogram {
                    points: b,
                    temporality: u,
                },
            ) if *t == u => a.extend(b),
            (_, other) => return Some(other),
        }
        None
    }
}

/// A named metric with its points.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: Cow<'static, str>,
    pub description: Cow<'static, str>,
    /// UCUM unit (`By`, `s`, `{packet}`).
    pub unit: Cow<'static, str>,
    pub data: MetricData,
}

/// The kind of a span, as OpenTelemetry defines it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanKind {
    #[default]
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// A span's status.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum SpanStatus {
    #[default]
    Unset,
    Ok,
    Error(String),
}

/// Something that happened at one instant during a span.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    pub time_ns: u64,
    pub name: Cow<'static, str>,
    pub attributes: Attributes,
}

/// A span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zeros for a root span.
    pub parent_span_id: [u8; 8],
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start_time_ns: u64,
    pub end_time_ns: u64,
    pub attributes: Attributes,
    pub events: Vec<SpanEvent>,
    pub status: SpanStatus,
}

/// Metrics of one resource and scope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsBatch {
    pub resource: Resource,
    pub scope: Scope,
    pub metrics: Vec<Metric>,
}

/// Spans of one resource and scope.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TracesBatch {
    pub resource: Resource,
    pub scope: Scope,
    pub spans: Vec<Span>,
}

/// What exporters receive.
#[derive(Clone, Debug, PartialEq)]
pub enum Telemetry {
    Metrics(MetricsBatch),
    Traces(TracesBatch),
}

impl Telemetry {
    /// Items counted by the self-telemetry: data points for metrics, spans for traces.
    pub fn item_count(&self) -> usize {
        match self {
            Telemetry::Metrics(m) => m.metrics.iter().map(|m| m.data.len()).sum(),
            Telemetry::Traces(t) => t.spans.len(),
        }
    }

    /// The signal this telemetry belongs to.
    pub fn signal(&self) -> Signal {
        match self {
            Telemetry::Metrics(_) => Signal::Metrics,
            Telemetry::Traces(_) => Signal::Traces,
        }
    }
}

/// The kind of telemetry a pipeline carries (the first part of its id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Metrics,
    Traces,
}

impl Signal {
    pub const ALL: [Signal; 2] = [Signal::Metrics, Signal::Traces];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What crosses a channel: raw events on their way to processors, or finished telemetry on
/// its way to exporters.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    Events(crate::model::EventBatch),
    Telemetry(Telemetry),
    /// Telemetry several exporters get at once (a pipeline's end): one copy for all of them,
    /// not one each. Only exporters receive it.
    Shared(std::sync::Arc<Telemetry>),
}

impl Payload {
    /// Items for the self-telemetry counters: events, data points or spans.
    pub fn item_count(&self) -> usize {
        match self {
            Payload::Events(b) => b.len(),
            Payload::Telemetry(t) => t.item_count(),
            Payload::Shared(t) => t.item_count(),
        }
    }
}

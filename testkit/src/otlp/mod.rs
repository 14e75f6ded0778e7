//! OTLP as tests read it: the one reader of the `file` exporter's OTLP/JSON lines (data points
//! in [`metrics`], spans in [`spans`]), an OTLP/gRPC [`sink`] that keeps what it receives, and
//! [`rotel`], a third-party collector.

pub mod metrics;
pub mod rotel;
pub mod sink;
pub mod spans;

use std::collections::BTreeMap;
use std::path::Path;

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub use metrics::{
    histograms, metric_names, parse_requests, points, read_metrics, read_requests, sum_by,
    sum_by_keys, sum_series, total, values_of, Histogram, Point, PointData, Series,
};
pub use sink::{free_port, Received, Sink};
pub use spans::{read_spans, Span};

/// Attributes as `key → value`, values rendered as text (`42`, `true`, `eth0`).
pub type Attributes = BTreeMap<String, String>;

/// Renders an attribute value as text.
pub fn value_text(kv: &KeyValue) -> String {
    any_text(kv.value.as_ref().and_then(|v| v.value.as_ref()))
}

/// Renders a value as text (`""` for none).
pub fn any_text(v: Option<&any_value::Value>) -> String {
    match v {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Attributes rendered as text.
pub fn attributes(kvs: &[KeyValue]) -> Attributes {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_text(kv)))
        .collect()
}

/// A resource's attributes; none when there is no resource.
pub fn resource_attributes(r: Option<&Resource>) -> Attributes {
    r.map(|r| attributes(&r.attributes)).unwrap_or_default()
}

/// The complete lines of a file that may still be being written (up to its last newline);
/// empty when the file does not exist yet.
pub fn complete_lines(path: &Path) -> String {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
    text
}

/// Decodes every non-empty line of `text` as a `T` in the OTLP/JSON mapping; panics naming
/// the line (of `origin`) that does not decode.
pub(crate) fn parse_lines<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    what: &str,
) -> Vec<T> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                let shown: String = line.chars().take(300).collect();
                panic!("{origin}:{}: not an OTLP/JSON {what}: {e}\n{shown}", i + 1)
            })
        })
        .collect()
}

//! Spans from the `file` exporter's output: one OTLP/JSON `ExportTraceServiceRequest` per
//! line, decoded with the official protobuf definitions.

use std::collections::BTreeMap;
use std::path::Path;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::{any_text, complete_lines, parse_lines, resource_attributes, Attributes};

/// One exported span, flattened.
#[derive(Clone, Debug)]
pub struct Span {
    /// The resource's attributes.
    pub resource: Attributes,
    /// The instrumentation scope's name.
    pub scope: String,
    pub name: String,
    /// `SpanKind` (1 internal, 2 server, 3 client, ...).
    pub kind: i32,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The span's attributes with their types.
    pub attributes: BTreeMap<String, Value>,
    /// `status.code` (0 unset, 1 ok, 2 error).
    pub status: i32,
}

impl Span {
    /// End minus start, in seconds.
    pub fn duration(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 * 1e-9
    }

    /// Attribute `key` rendered as text, whatever its type.
    pub fn text(&self, key: &str) -> Option<String> {
        self.attributes.get(key).map(|v| any_text(Some(v)))
    }

    /// Attribute `key` if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// Attribute `key` if it is an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key)? {
            Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    /// Every attribute rendered as text.
    pub fn texts(&self) -> Attributes {
        self.attributes
            .iter()
            .map(|(k, v)| (k.clone(), any_text(Some(v))))
            .collect()
    }
}

/// Every span in an OTLP/JSON traces file an agent may still be writing: its complete lines so
/// far (none when it does not exist yet); panics on a complete line that does not decode.
pub fn read_spans(path: &Path) -> Vec<Span> {
    let requests: Vec<ExportTraceServiceRequest> = parse_lines(
        &complete_lines(path),
        &path.display().to_string(),
        "ExportTraceServiceRequest",
    );
    let mut out = Vec::new();
    for rs in requests.iter().flat_map(|r| &r.resource_spans) {
        let resource = resource_attributes(rs.resource.as_ref());
        for ss in &rs.scope_spans {
            let scope = ss
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for s in &ss.spans {
                out.push(Span {
                    resource: resource.clone(),
                    scope: scope.clone(),
                    name: s.name.clone(),
                    kind: s.kind,
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    attributes: s
                        .attributes
                        .iter()
                        .filter_map(|kv| Some((kv.key.clone(), kv.value.as_ref()?.value.clone()?)))
                        .collect(),
                    status: s.status.as_ref().map_or(0, |st| st.code),
                });
            }
        }
    }
    out
}

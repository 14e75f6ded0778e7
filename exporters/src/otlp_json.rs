//! OTLP messages → OTLP/JSON, byte for byte as the OpenTelemetry Collector writes it.
//!
//! This is the protobuf JSON mapping with the OTLP rules: lowerCamelCase field names, trace and
//! span ids as lowercase hex, 64-bit integers (`timeUnixNano`, `asInt`, `count`, bucket counts)
//! as decimal strings, enums as integers, and fields holding their default value left out.
//! Field order, float formatting (`1`, not `1.0`; `1e-7`, `1e+21`; `"NaN"`, `"Infinity"`) and
//! string escaping follow the Collector's pdata `JSONMarshaler`, which its `file` exporter uses.
//!
//! Why not `opentelemetry-proto`'s `with-serde` `Serialize`: it decodes this format fine (the
//! tests use it for that), but it encodes every default value (`"schemaUrl":""`, `"flags":0`,
//! `"exemplars":[]`, `"droppedAttributesCount":0`, `"parentSpanId":""` on root spans), writes
//! absent optional values as `null` (`"sum":null`, `"min":null`), which the Collector's reader
//! rejects, and lets serde_json turn NaN and ±Inf into `null`. This module writes the messages
//! directly into a byte buffer instead, with no intermediate value tree.
//!
//! One deliberate difference: an attribute's `key` is written even when empty (the Collector
//! leaves it out), because a `KeyValue` without `key` does not decode with `opentelemetry-proto`.

use std::io::Write as _;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::metrics::v1 as metrics;
use opentelemetry_proto::tonic::resource::v1 as resource;
use opentelemetry_proto::tonic::trace::v1 as trace;

use crate::otlp_proto::ExportRequest;

/// Appends `req` as one JSON object (no trailing newline) to `out`.
pub fn write_request(out: &mut Vec<u8>, req: &ExportRequest) {
    match req {
        ExportRequest::Metrics(m) => write_metrics_request(out, m),
        ExportRequest::Traces(t) => write_traces_request(out, t),
    }
}

/// Appends `req` as one JSON object (no trailing newline) to `out`.
pub fn write_metrics_request(out: &mut Vec<u8>, req: &ExportMetricsServiceRequest) {
    let mut o = Obj::new(out);
    o.list("resourceMetrics", &req.resource_metrics, resource_metrics);
    o.end();
}

/// Appends `req` as one JSON object (no trailing newline) to `out`.
pub fn write_traces_request(out: &mut Vec<u8>, req: &ExportTraceServiceRequest) {
    let mut o = Obj::new(out);
    o.list("resourceSpans", &req.resource_spans, resource_spans);
    o.end();
}

/// An object being written: adds the `,` between fields, like the Collector's `json.Stream`.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    any: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, any: false }
    }

    /// Writes `"name":` and returns the buffer for the value.
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if self.any {
            self.out.push(b',');
        }
        self.any = true;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn end(self) {
        self.out.push(b'}');
    }

    fn str(&mut self, name: &str, v: &str) {
        if !v.is_empty() {
            string(self.key(name), v);
        }
    }

    fn u64(&mut self, name: &str, v: u64) {
        if v != 0 {
            quoted_u64(self.key(name), v);
        }
    }

    fn u32(&mut self, name: &str, v: u32) {
        if v != 0 {
            uint(self.key(name), u64::from(v));
        }
    }

    fn i32(&mut self, name: &str, v: i32) {
        if v != 0 {
            int(self.key(name), i64::from(v));
        }
    }

    fn f64(&mut self, name: &str, v: f64) {
        if v != 0.0 {
            float(self.key(name), v);
        }
    }

    fn opt_f64(&mut self, name: &str, v: Option<f64>) {
        if let Some(v) = v {
            float(self.key(name), v);
        }
    }

    fn bool(&mut self, name: &str, v: bool) {
        if v {
            self.key(name).extend_from_slice(b"true");
        }
    }

    fn id(&mut self, name: &str, v: &[u8]) {
        if !v.is_empty() {
            hex(self.key(name), v);
        }
    }

    fn list<T>(&mut self, name: &str, items: &[T], each: fn(&mut Vec<u8>, &T)) {
        if !items.is_empty() {
            array(self.key(name), items, each);
        }
    }

    /// A message the Collector always writes, as `{}` when absent.
    fn msg<T>(&mut self, name: &str, v: Option<&T>, write: fn(&mut Vec<u8>, &T)) {
        let out = self.key(name);
        match v {
            Some(v) => write(out, v),
            None => out.extend_from_slice(b"{}"),
        }
    }
}

fn array<T>(out: &mut Vec<u8>, items: &[T], each: fn(&mut Vec<u8>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        each(out, item);
    }
    out.push(b']');
}

// ---- resource, scope, attributes ----

fn resource(out: &mut Vec<u8>, r: &resource::Resource) {
    let mut o = Obj::new(out);
    o.list("attributes", &r.attributes, key_value);
    o.u32("droppedAttributesCount", r.dropped_attributes_count);
    o.list("entityRefs", &r.entity_refs, entity_ref);
    o.end();
}

fn entity_ref(out: &mut Vec<u8>, e: &common::EntityRef) {
    let mut o = Obj::new(out);
    o.str("schemaUrl", &e.schema_url);
    o.str("type", &e.r#type);
    o.list("idKeys", &e.id_keys, |out, s| string(out, s));
    o.list("descriptionKeys", &e.description_keys, |out, s| {
        string(out, s)
    });
    o.end();
}

fn scope(out: &mut Vec<u8>, s: &common::InstrumentationScope) {
    let mut o = Obj::new(out);
    o.str("name", &s.name);
    o.str("version", &s.version);
    o.list("attributes", &s.attributes, key_value);
    o.u32("droppedAttributesCount", s.dropped_attributes_count);
    o.end();
}

fn key_value(out: &mut Vec<u8>, kv: &common::KeyValue) {
    let mut o = Obj::new(out);
    string(o.key("key"), &kv.key);
    o.msg("value", kv.value.as_ref(), any_value);
    o.i32("keyStrindex", kv.key_strindex);
    o.end();
}

fn any_value(out: &mut Vec<u8>, v: &common::AnyValue) {
    use common::any_value::Value;
    let mut o = Obj::new(out);
    match &v.value {
        Some(Value::StringValue(s)) => string(o.key("stringValue"), s),
        Some(Value::BoolValue(b)) => {
            o.key("boolValue")
                .extend_from_slice(if *b { b"true" } else { b"false" })
        }
        Some(Value::IntValue(i)) => quoted_i64(o.key("intValue"), *i),
        Some(Value::DoubleValue(d)) => float(o.key("doubleValue"), *d),
        Some(Value::ArrayValue(a)) => {
            let mut inner = Obj::new(o.key("arrayValue"));
            inner.list("values", &a.values, any_value);
            inner.end();
        }
        Some(Value::KvlistValue(l)) => {
            let mut inner = Obj::new(o.key("kvlistValue"));
            inner.list("values", &l.values, key_value);
            inner.end();
        }
        Some(Value::BytesValue(b)) => base64(o.key("bytesValue"), b),
        Some(Value::StringValueStrindex(i)) => int(o.key("stringValueStrindex"), i64::from(*i)),
        None => {}
    }
    o.end();
}

// ---- metrics ----

fn resource_metrics(out: &mut Vec<u8>, rm: &metrics::ResourceMetrics) {
    let mut o = Obj::new(out);
    o.msg("resource", rm.resource.as_ref(), resource);
    o.list("scopeMetrics", &rm.scope_metrics, scope_metrics);
    o.str("schemaUrl", &rm.schema_url);
    o.end();
}

fn scope_metrics(out: &mut Vec<u8>, sm: &metrics::ScopeMetrics) {
    let mut o = Obj::new(out);
    o.msg("scope", sm.scope.as_ref(), scope);
    o.list("metrics", &sm.metrics, metric);
    o.str("schemaUrl", &sm.schema_url);
    o.end();
}

fn metric(out: &mut Vec<u8>, m: &metrics::Metric) {
    use metrics::metric::Data;
    let mut o = Obj::new(out);
    o.str("name", &m.name);
    o.str("description", &m.description);
    o.str("unit", &m.unit);
    match &m.data {
        Some(Data::Gauge(g)) => {
            let mut d = Obj::new(o.key("gauge"));
            d.list("dataPoints", &g.data_points, number_point);
            d.end();
        }
        Some(Data::Sum(s)) => {
            let mut d = Obj::new(o.key("sum"));
            d.list("dataPoints", &s.data_points, number_point);
            d.i32("aggregationTemporality", s.aggregation_temporality);
            d.bool("isMonotonic", s.is_monotonic);
            d.end();
        }
        Some(Data::Histogram(h)) => {
            let mut d = Obj::new(o.key("histogram"));
            d.list("dataPoints", &h.data_points, histogram_point);
            d.i32("aggregationTemporality", h.aggregation_temporality);
            d.end();
        }
        Some(Data::ExponentialHistogram(h)) => {
            let mut d = Obj::new(o.key("exponentialHistogram"));
            d.list("dataPoints", &h.data_points, exponential_histogram_point);
            d.i32("aggregationTemporality", h.aggregation_temporality);
            d.end();
        }
        Some(Data::Summary(s)) => {
            let mut d = Obj::new(o.key("summary"));
            d.list("dataPoints", &s.data_points, summary_point);
            d.end();
        }
        None => {}
    }
    o.list("metadata", &m.metadata, key_value);
    o.end();
}

fn number_point(out: &mut Vec<u8>, p: &metrics::NumberDataPoint) {
    use metrics::number_data_point::Value;
    let mut o = Obj::new(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    // A oneof is written even when it holds zero.
    match p.value {
        Some(Value::AsDouble(d)) => float(o.key("asDouble"), d),
        Some(Value::AsInt(i)) => quoted_i64(o.key("asInt"), i),
        None => {}
    }
    o.list("exemplars", &p.exemplars, exemplar);
    o.u32("flags", p.flags);
    o.end();
}

fn histogram_point(out: &mut Vec<u8>, p: &metrics::HistogramDataPoint) {
    let mut o = Obj::new(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    o.u64("count", p.count);
    o.opt_f64("sum", p.sum);
    o.list("bucketCounts", &p.bucket_counts, |out, c| {
        quoted_u64(out, *c)
    });
    o.list("explicitBounds", &p.explicit_bounds, |out, b| {
        float(out, *b)
    });
    o.list("exemplars", &p.exemplars, exemplar);
    o.u32("flags", p.flags);
    o.opt_f64("min", p.min);
    o.opt_f64("max", p.max);
    o.end();
}

fn exponential_histogram_point(out: &mut Vec<u8>, p: &metrics::ExponentialHistogramDataPoint) {
    let mut o = Obj::new(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    o.u64("count", p.count);
    o.opt_f64("sum", p.sum);
    o.i32("scale", p.scale);
    o.u64("zeroCount", p.zero_count);
    o.msg("positive", p.positive.as_ref(), buckets);
    o.msg("negative", p.negative.as_ref(), buckets);
    o.u32("flags", p.flags);
    o.list("exemplars", &p.exemplars, exemplar);
    o.opt_f64("min", p.min);
    o.opt_f64("max", p.max);
    o.f64("zeroThreshold", p.zero_threshold);
    o.end();
}

fn buckets(out: &mut Vec<u8>, b: &metrics::exponential_histogram_data_point::Buckets) {
    let mut o = Obj::new(out);
    o.i32("offset", b.offset);
    o.list("bucketCounts", &b.bucket_counts, |out, c| {
        quoted_u64(out, *c)
    });
    o.end();
}

fn summary_point(out: &mut Vec<u8>, p: &metrics::SummaryDataPoint) {
    let mut o = Obj::new(out);
    o.list("attributes", &p.attributes, key_value);
    o.u64("startTimeUnixNano", p.start_time_unix_nano);
    o.u64("timeUnixNano", p.time_unix_nano);
    o.u64("count", p.count);
    o.f64("sum", p.sum);
    o.list("quantileValues", &p.quantile_values, |out, q| {
        let mut o = Obj::new(out);
        o.f64("quantile", q.quantile);
        o.f64("value", q.value);
        o.end();
    });
    o.u32("flags", p.flags);
    o.end();
}

fn exemplar(out: &mut Vec<u8>, e: &metrics::Exemplar) {
    use metrics::exemplar::Value;
    let mut o = Obj::new(out);
    o.list("filteredAttributes", &e.filtered_attributes, key_value);
    o.u64("timeUnixNano", e.time_unix_nano);
    match e.value {
        Some(Value::AsDouble(d)) => float(o.key("asDouble"), d),
        Some(Value::AsInt(i)) => quoted_i64(o.key("asInt"), i),
        None => {}
    }
    o.id("traceId", &e.trace_id);
    o.id("spanId", &e.span_id);
    o.end();
}

// ---- traces ----

fn resource_spans(out: &mut Vec<u8>, rs: &trace::ResourceSpans) {
    let mut o = Obj::new(out);
    o.msg("resource", rs.resource.as_ref(), resource);
    o.list("scopeSpans", &rs.scope_spans, scope_spans);
    o.str("schemaUrl", &rs.schema_url);
    o.end();
}

fn scope_spans(out: &mut Vec<u8>, ss: &trace::ScopeSpans) {
    let mut o = Obj::new(out);
    o.msg("scope", ss.scope.as_ref(), scope);
    o.list("spans", &ss.spans, span);
    o.str("schemaUrl", &ss.schema_url);
    o.end();
}

fn span(out: &mut Vec<u8>, s: &trace::Span) {
    let mut o = Obj::new(out);
    o.id("traceId", &s.trace_id);
    o.id("spanId", &s.span_id);
    o.str("traceState", &s.trace_state);
    o.id("parentSpanId", &s.parent_span_id);
    o.u32("flags", s.flags);
    o.str("name", &s.name);
    o.i32("kind", s.kind);
    o.u64("startTimeUnixNano", s.start_time_unix_nano);
    o.u64("endTimeUnixNano", s.end_time_unix_nano);
    o.list("attributes", &s.attributes, key_value);
    o.u32("droppedAttributesCount", s.dropped_attributes_count);
    o.list("events", &s.events, span_event);
    o.u32("droppedEventsCount", s.dropped_events_count);
    o.list("links", &s.links, span_link);
    o.u32("droppedLinksCount", s.dropped_links_count);
    o.msg("status", s.status.as_ref(), status);
    o.end();
}

fn span_event(out: &mut Vec<u8>, e: &trace::span::Event) {
    let mut o = Obj::new(out);
    o.u64("timeUnixNano", e.time_unix_nano);
    o.str("name", &e.name);
    o.list("attributes", &e.attributes, key_value);
    o.u32("droppedAttributesCount", e.dropped_attributes_count);
    o.end();
}

fn span_link(out: &mut Vec<u8>, l: &trace::span::Link) {
    let mut o = Obj::new(out);
    o.id("traceId", &l.trace_id);
    o.id("spanId", &l.span_id);
    o.str("traceState", &l.trace_state);
    o.list("attributes", &l.attributes, key_value);
    o.u32("droppedAttributesCount", l.dropped_attributes_count);
    o.u32("flags", l.flags);
    o.end();
}

fn status(out: &mut Vec<u8>, s: &trace::Status) {
    let mut o = Obj::new(out);
    o.str("message", &s.message);
    o.i32("code", s.code);
    o.end();
}

// ---- scalars ----

/// A JSON string, escaped like the Collector's jsoniter stream (no HTML escaping).
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn uint(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    uint(out, v.unsigned_abs());
}

/// 64-bit integers are strings in OTLP/JSON (JavaScript numbers lose precision above 2^53).
fn quoted_u64(out: &mut Vec<u8>, v: u64) {
    out.push(b'"');
    uint(out, v);
    out.push(b'"');
}

fn quoted_i64(out: &mut Vec<u8>, v: i64) {
    out.push(b'"');
    int(out, v);
    out.push(b'"');
}

/// A double as Go's jsoniter writes it: shortest round-trip digits, plain notation for
/// 1e-6 <= |v| < 1e21 and exponent notation (`1e-7`, `1.5e+21`) outside; NaN and ±Inf as the
/// strings the protobuf JSON mapping defines.
fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        let abs = v.abs();
        // Writing into a Vec cannot fail.
        if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
            let start = out.len();
            let _ = write!(out, "{v:e}");
            // Rust writes `1.5e21`; Go writes `1.5e+21`.
            if let Some(e) = out[start..].iter().position(|&b| b == b'e') {
                let at = start + e + 1;
                if out.get(at) != Some(&b'-') {
                    out.insert(at, b'+');
                }
            }
        } else {
            let _ = write!(out, "{v}");
        }
    }
}

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out.push(b'"');
}

/// Standard base64 with padding, as protobuf JSON writes `bytes`.
fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push(b'"');
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 0x3f) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests;

//! The `debug` exporter: prints what reaches it, like the OpenTelemetry Collector's `debug`
//! exporter (`basic` counts, `normal` one line per point or span, `detailed` everything in the
//! Collector's layout).

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::observe::Records;
use periscope_pipeline::component::{BuildContext, ComponentConfig, Exporter, ExporterConfig};
use periscope_pipeline::model::{
    AnyValue, Attributes, ExponentialHistogramPoint, HistogramPoint, Metric, MetricData,
    MetricsBatch, Number, NumberPoint, Resource, Scope, Span, SpanKind, SpanStatus, Telemetry,
    Temporality, TracesBatch,
};

/// Prints each batch on stderr or stdout, like the OpenTelemetry Collector's `debug` exporter:
/// a line of counts, one line per data point or span, or every field.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    /// How much to print per batch: `basic` (one line of counts), `normal` (also one line per
    /// data point or span) or `detailed` (also every field: resource, scope, timestamps,
    /// histogram buckets, span events).
    #[serde(default)]
    pub verbosity: Verbosity,
    /// Where to print: `stderr` (next to the logs) or `stdout` (to pipe it elsewhere).
    #[serde(default)]
    pub output: Output,
}

/// How much the `debug` exporter prints.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    /// A short summary per batch: traffic rates of the busiest namespaces and devices,
    /// connections opened and closed, drops by reason, the agent's own in/out/dropped counts;
    /// batches with none of those, a line of counts (metrics and data points, or spans).
    #[default]
    Basic,
    /// Also one line per data point (name, attributes, value) or span (name, ids, duration,
    /// attributes).
    Normal,
    /// Also every field of every resource, scope, metric, data point, span and span event.
    Detailed,
}

/// Where the `debug` exporter prints.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Standard error, where the logs go.
    #[default]
    Stderr,
    /// Standard output.
    Stdout,
}

impl ComponentConfig for DebugConfig {
    const TYPE: &'static str = "debug";
}

impl ExporterConfig for DebugConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Exporter>> {
        let name = ctx.id.to_string();
        Ok(match self.output {
            Output::Stderr => Box::new(DebugExporter::new(name, self.verbosity, io::stderr())),
            Output::Stdout => Box::new(DebugExporter::new(name, self.verbosity, io::stdout())),
        })
    }
}

/// The running `debug` exporter, writing to any `Write` (stderr, stdout, a buffer in tests).
pub struct DebugExporter<W> {
    name: String,
    verbosity: Verbosity,
    out: W,
    /// One batch's text, written with one `write_all` so that lines from other threads do not
    /// interleave with it.
    text: String,
    /// Last values of cumulative series, for the rates of the `basic` summary.
    records: Records,
}

impl<W: Write> DebugExporter<W> {
    /// `name` (the component id) starts every batch's first line.
    pub fn new(name: impl Into<String>, verbosity: Verbosity, out: W) -> Self {
        DebugExporter {
            name: name.into(),
            verbosity,
            out,
            text: String::new(),
            records: Records::default(),
        }
    }

    /// The writer, with everything printed so far.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Exporter for DebugExporter<W> {
    fn export(&mut self, telemetry: Telemetry) -> anyhow::Result<()> {
        self.export_shared(std::sync::Arc::new(telemetry))
    }

    /// Reads the batch only: no copy of a batch other exporters get too.
    fn export_shared(&mut self, telemetry: std::sync::Arc<Telemetry>) -> anyhow::Result<()> {
        self.text.clear();
        let summarized = self.verbosity == Verbosity::Basic
            && summary(&self.name, &mut self.records, &telemetry, &mut self.text);
        if !summarized {
            render(&self.name, self.verbosity, &telemetry, &mut self.text);
        }
        self.out
            .write_all(self.text.as_bytes())
            .context("cannot print the batch")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("cannot print")
    }
}

/// Appends the text the `debug` exporter prints for one batch to `out`.
pub fn render(name: &str, verbosity: Verbosity, telemetry: &Telemetry, out: &mut String) {
    // Writing into a String cannot fail.
    let _ = match telemetry {
        Telemetry::Metrics(m) => render_metrics(name, verbosity, m, out),
        Telemetry::Traces(t) => render_traces(name, verbosity, t, out),
    };
}

/// How many namespaces and devices the summary names.
const TOP: usize = 3;

/// `1.2 MB/s`-style rate (decimal units, as network tools print them).
fn rate(v: f64, unit: &str) -> String {
    let (v, prefix) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    format!("{v:.1} {prefix}{unit}/s")
}

/// The `basic` summary of a batch: what a person watching the console wants to know. False
/// (and nothing written) when the batch has nothing to summarize.
pub fn summary(name: &str, records: &mut Records, telemetry: &Telemetry, out: &mut String) -> bool {
    use serde_json::Value;
    let text = |r: &serde_json::Map<String, Value>, f: &str| match r.get(f) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let num =
        |r: &serde_json::Map<String, Value>, f: &str| r.get(f).and_then(Value::as_u64).unwrap_or(0);
    // The agent's own counters.
    if let Telemetry::Metrics(b) = telemetry {
        let total = |metric: &str| -> i64 {
            b.metrics
                .iter()
                .filter(|m| m.name == metric)
                .flat_map(|m| match &m.data {
                    MetricData::Sum { points, .. } => points
                        .iter()
                        .map(|p| match p.value {
                            Number::Int(i) => i,
                            Number::Double(d) => d as i64,
                        })
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
                .sum()
        };
        if b.metrics
            .iter()
            .any(|m| m.name == "periscope.component.received")
        {
            let (dropped, errors) = (
                total("periscope.component.dropped"),
                total("periscope.component.errors"),
            );
            let _ = writeln!(
                out,
                "{name}: agent: {dropped} {} dropped, {errors} {} since start (periscope.component.*)",
                plural(dropped as usize, "item", "items"),
                plural(errors as usize, "error", "errors"),
            );
            return true;
        }
    }
    let recs = records.records(telemetry);
    if recs.is_empty() {
        return false;
    }
    let mut namespaces: Vec<(String, u64, u64)> = Vec::new();
    let mut devices: Vec<(String, u64, u64)> = Vec::new();
    let add = |v: &mut Vec<(String, u64, u64)>, k: String, p: u64, b: u64| match v
        .iter_mut()
        .find(|e| e.0 == k)
    {
        Some(e) => {
            e.1 += p;
            e.2 += b;
        }
        None => v.push((k, p, b)),
    };
    let (mut interval, mut packets, mut bytes) = (0u64, 0u64, 0u64);
    let (mut opened, mut closed, mut conns) = (0u64, 0u64, 0u64);
    let mut drops: Vec<(String, u64, u64)> = Vec::new();
    let (mut dns, mut bursts) = (0u64, 0u64);
    for (_, r) in &recs {
        match text(r, "type").as_str() {
            "flow" => {
                interval = interval.max(num(r, "interval_ns"));
                let (p, b) = (num(r, "packets"), num(r, "bytes"));
                packets += p;
                bytes += b;
                let ns = match text(r, "netns") {
                    n if n.is_empty() => format!("netns:{}", text(r, "netns_inode")),
                    n => n,
                };
                let dev = text(r, "interface");
                if !dev.is_empty() {
                    add(&mut devices, format!("{dev}@{ns}"), p, b);
                }
                add(&mut namespaces, ns, p, b);
            }
            "connections" => match text(r, "event").as_str() {
                "opened" => opened += num(r, "count"),
                "closed" => closed += num(r, "count"),
                _ => {}
            },
            "connection" => conns += 1,
            "drop" => add(&mut drops, text(r, "reason"), num(r, "count"), 0),
            "dns" => dns += 1,
            "burst" => bursts += 1,
            _ => {}
        }
    }
    let secs = (interval as f64 / 1e9).max(1e-3);
    let mut parts = Vec::new();
    if packets > 0 {
        parts.push(format!(
            "traffic {}, {} in {} {}",
            rate(bytes as f64 / secs, "B"),
            rate(packets as f64 / secs, "pkt"),
            namespaces.len(),
            plural(namespaces.len(), "namespace", "namespaces")
        ));
    }
    if opened + closed > 0 {
        parts.push(format!("connections {opened} opened, {closed} closed"));
    }
    if conns > 0 {
        parts.push(format!(
            "{conns} connection {}",
            plural(conns as usize, "span", "spans")
        ));
    }
    if !drops.is_empty() {
        drops.sort_by_key(|d| std::cmp::Reverse(d.1));
        let d: Vec<String> = drops.iter().map(|(r, n, _)| format!("{r} {n}")).collect();
        parts.push(format!("drops {}", d.join(", ")));
    }
    if dns > 0 {
        parts.push(format!(
            "{dns} DNS {}",
            plural(dns as usize, "lookup", "lookups")
        ));
    }
    if bursts > 0 {
        parts.push(format!(
            "{bursts} {}",
            plural(bursts as usize, "burst", "bursts")
        ));
    }
    if parts.is_empty() {
        return false;
    }
    let _ = writeln!(out, "{name}: {}", parts.join("; "));
    for (label, mut v) in [("namespaces", namespaces), ("devices", devices)] {
        if v.len() < 2 && label == "devices" && v.iter().all(|d| d.2 == 0) {
            continue;
        }
        v.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let top: Vec<String> = v
            .iter()
            .take(TOP)
            .filter(|e| e.2 > 0)
            .map(|(k, p, b)| {
                format!(
                    "{k} {} {}",
                    rate(*b as f64 / secs, "B"),
                    rate(*p as f64 / secs, "pkt")
                )
            })
            .collect();
        if !top.is_empty() {
            let more = v.len().saturating_sub(TOP);
            let more = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            let _ = writeln!(out, "  busiest {label}: {}{more}", top.join(", "));
        }
    }
    true
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn render_metrics(name: &str, v: Verbosity, b: &MetricsBatch, out: &mut String) -> fmt::Result {
    let points: usize = b.metrics.iter().map(|m| m.data.len()).sum();
    writeln!(
        out,
        "{name}: Metrics: {} {}, {points} {}",
        b.metrics.len(),
        plural(b.metrics.len(), "metric", "metrics"),
        plural(points, "data point", "data points"),
    )?;
    let batch = (&b.resource, &b.scope, &b.metrics[..]);
    render_items(out, v, "Metrics", batch, normal_metric, detailed_metric)
}

fn render_traces(name: &str, v: Verbosity, b: &TracesBatch, out: &mut String) -> fmt::Result {
    let n = b.spans.len();
    writeln!(out, "{name}: Traces: {n} {}", plural(n, "span", "spans"))?;
    let batch = (&b.resource, &b.scope, &b.spans[..]);
    render_items(out, v, "Spans", batch, normal_span, detailed_span)
}

type Render<T> = fn(&mut String, &T) -> fmt::Result;

/// A batch's items (metrics or spans) after its first line: nothing (basic), the headers and a
/// line per item (normal), or the headers and `Metric #i` / `Span #i` sections (detailed).
fn render_items<T>(
    out: &mut String,
    v: Verbosity,
    kind: &str,
    (resource, scope, items): (&Resource, &Scope, &[T]),
    normal: Render<T>,
    detailed: Render<T>,
) -> fmt::Result {
    match v {
        Verbosity::Basic => Ok(()),
        Verbosity::Normal => {
            normal_headers(out, kind, resource, scope)?;
            items.iter().try_for_each(|m| normal(out, m))
        }
        Verbosity::Detailed => {
            detailed_headers(out, kind, resource, scope)?;
            let item = kind.trim_end_matches('s');
            for (i, m) in items.iter().enumerate() {
                writeln!(out, "{item} #{i}")?;
                detailed(out, m)?;
            }
            Ok(())
        }
    }
}

// ---- normal: the Collector's one-line-per-item layout ----

fn normal_headers(out: &mut String, kind: &str, r: &Resource, s: &Scope) -> fmt::Result {
    write!(out, "Resource{kind} #0")?;
    for a in &r.attributes {
        write!(out, " {}={}", a.key, a.value)?;
    }
    write!(out, "\nScope{kind} #0")?;
    if !s.name.is_empty() {
        write!(out, " {}", s.name)?;
    }
    if !s.version.is_empty() {
        write!(out, "@{}", s.version)?;
    }
    out.push('\n');
    Ok(())
}

/// `{k=v,k=v}`
fn braces(out: &mut String, attributes: &Attributes) -> fmt::Result {
    out.push('{');
    for (i, a) in attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{}={}", a.key, a.value)?;
    }
    out.push('}');
    Ok(())
}

fn stats(
    out: &mut String,
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
) -> fmt::Result {
    write!(out, " count={count}")?;
    for (label, v) in [("sum", sum), ("min", min), ("max", max)] {
        if let Some(v) = v {
            write!(out, " {label}={v}")?;
        }
    }
    Ok(())
}

fn normal_metric(out: &mut String, m: &Metric) -> fmt::Result {
    match &m.data {
        MetricData::Sum { points, .. } | MetricData::Gauge { points } => {
            for p in points {
                out.push_str(&m.name);
                braces(out, &p.attributes)?;
                match p.value {
                    Number::Int(i) => writeln!(out, " {i}")?,
                    Number::Double(d) => writeln!(out, " {d}")?,
                }
            }
        }
        MetricData::Histogram { points, .. } => {
            for p in points {
                out.push_str(&m.name);
                braces(out, &p.attributes)?;
                stats(out, p.count, p.sum, p.min, p.max)?;
                for (i, c) in p.bucket_counts.iter().enumerate() {
                    match p.explicit_bounds.get(i) {
                        Some(le) => write!(out, " le{le}={c}")?,
                        None => write!(out, " le+Inf={c}")?,
                    }
                }
                out.push('\n');
            }
        }
        MetricData::ExponentialHistogram { points, .. } => {
            for p in points {
                out.push_str(&m.name);
                braces(out, &p.attributes)?;
                stats(out, p.count, p.sum, p.min, p.max)?;
                let factor = exp_factor(p.scale);
                let neg = &p.negative;
                for (j, c) in neg.bucket_counts.iter().enumerate().rev() {
                    let index = f64::from(neg.offset) + j as f64;
                    write!(out, " le{}={c}", -(index * factor).exp())?;
                }
                if p.zero_count != 0 {
                    write!(out, " zero={}", p.zero_count)?;
                }
                let pos = &p.positive;
                for (j, c) in pos.bucket_counts.iter().enumerate() {
                    let index = f64::from(pos.offset) + j as f64;
                    write!(out, " le{}={c}", ((index + 1.0) * factor).exp())?;
                }
                out.push('\n');
            }
        }
    }
    Ok(())
}

fn duration(s: &Span) -> Duration {
    Duration::from_nanos(s.end_time_ns.saturating_sub(s.start_time_ns))
}

fn normal_span(out: &mut String, s: &Span) -> fmt::Result {
    write!(
        out,
        "{} {} {} duration={:?}",
        s.name,
        Hex(&s.trace_id),
        Hex(&s.span_id),
        duration(s)
    )?;
    match &s.status {
        SpanStatus::Unset => {}
        SpanStatus::Ok => out.push_str(" status=Ok"),
        SpanStatus::Error(m) if m.is_empty() => out.push_str(" status=Error"),
        SpanStatus::Error(m) => write!(out, " status=Error({m})")?,
    }
    for a in &s.attributes {
        write!(out, " {}={}", a.key, a.value)?;
    }
    out.push('\n');
    Ok(())
}

// ---- detailed: the Collector's `otlptext` layout ----

fn detailed_headers(out: &mut String, kind: &str, r: &Resource, s: &Scope) -> fmt::Result {
    writeln!(out, "Resource{kind} #0")?;
    attribute_block(out, "Resource attributes", "", &r.attributes)?;
    writeln!(out, "Scope{kind} #0")?;
    writeln!(out, "InstrumentationScope {} {}", s.name, s.version)
}

/// `header:` then one `-> key: Type(value)` line per attribute; nothing when there are none.
fn attribute_block(out: &mut String, header: &str, indent: &str, a: &Attributes) -> fmt::Result {
    if a.is_empty() {
        return Ok(());
    }
    writeln!(out, "{indent}{header}:")?;
    for kv in a {
        writeln!(out, "{indent}     -> {}: {}", kv.key, Typed(&kv.value))?;
    }
    Ok(())
}

fn temporality(t: Temporality) -> &'static str {
    match t {
        Temporality::Cumulative => "Cumulative",
        Temporality::Delta => "Delta",
    }
}

fn detailed_metric(out: &mut String, m: &Metric) -> fmt::Result {
    let data_type = match m.data {
        MetricData::Sum { .. } => "Sum",
        MetricData::Gauge { .. } => "Gauge",
        MetricData::Histogram { .. } => "Histogram",
        MetricData::ExponentialHistogram { .. } => "ExponentialHistogram",
    };
    writeln!(out, "Descriptor:")?;
    writeln!(out, "     -> Name: {}", m.name)?;
    writeln!(out, "     -> Description: {}", m.description)?;
    writeln!(out, "     -> Unit: {}", m.unit)?;
    writeln!(out, "     -> DataType: {data_type}")?;
    match &m.data {
        MetricData::Sum {
            points,
            temporality: t,
            monotonic,
        } => {
            writeln!(out, "     -> IsMonotonic: {monotonic}")?;
            writeln!(out, "     -> AggregationTemporality: {}", temporality(*t))?;
            number_points(out, points)
        }
        MetricData::Gauge { points } => number_points(out, points),
        MetricData::Histogram {
            points,
            temporality: t,
        } => {
            writeln!(out, "     -> AggregationTemporality: {}", temporality(*t))?;
            points
                .iter()
                .enumerate()
                .try_for_each(|(i, p)| histogram_point(out, i, p))
        }
        MetricData::ExponentialHistogram {
            points,
            temporality: t,
        } => {
            writeln!(out, "     -> AggregationTemporality: {}", temporality(*t))?;
            points
                .iter()
                .enumerate()
                .try_for_each(|(i, p)| exponential_point(out, i, p))
        }
    }
}

fn point_header(
    out: &mut String,
    kind: &str,
    i: usize,
    attributes: &Attributes,
    start_ns: u64,
    time_ns: u64,
) -> fmt::Result {
    writeln!(out, "{kind}DataPoints #{i}")?;
    attribute_block(out, "Data point attributes", "", attributes)?;
    writeln!(out, "StartTimestamp: {}", Timestamp(start_ns))?;
    writeln!(out, "Timestamp: {}", Timestamp(time_ns))
}

fn number_points(out: &mut String, points: &[NumberPoint]) -> fmt::Result {
    for (i, p) in points.iter().enumerate() {
        point_header(out, "Number", i, &p.attributes, p.start_time_ns, p.time_ns)?;
        match p.value {
            Number::Int(v) => writeln!(out, "Value: {v}")?,
            Number::Double(v) => writeln!(out, "Value: {}", Fixed(v))?,
        }
    }
    Ok(())
}

fn detailed_stats(
    out: &mut String,
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
) -> fmt::Result {
    writeln!(out, "Count: {count}")?;
    for (label, v) in [("Sum", sum), ("Min", min), ("Max", max)] {
        if let Some(v) = v {
            writeln!(out, "{label}: {}", Fixed(v))?;
        }
    }
    Ok(())
}

fn histogram_point(out: &mut String, i: usize, p: &HistogramPoint) -> fmt::Result {
    point_header(
        out,
        "Histogram",
        i,
        &p.attributes,
        p.start_time_ns,
        p.time_ns,
    )?;
    detailed_stats(out, p.count, p.sum, p.min, p.max)?;
    for (j, b) in p.explicit_bounds.iter().enumerate() {
        writeln!(out, "ExplicitBounds #{j}: {}", Fixed(*b))?;
    }
    for (j, c) in p.bucket_counts.iter().enumerate() {
        writeln!(out, "Buckets #{j}, Count: {c}")?;
    }
    Ok(())
}

/// log(base) of an exponential histogram: bucket `index` covers (base^index, base^(index+1)].
fn exp_factor(scale: i32) -> f64 {
    std::f64::consts::LN_2 * 2f64.powi(-scale)
}

fn exponential_point(out: &mut String, i: usize, p: &ExponentialHistogramPoint) -> fmt::Result {
    point_header(
        out,
        "ExponentialHistogram",
        i,
        &p.attributes,
        p.start_time_ns,
        p.time_ns,
    )?;
    detailed_stats(out, p.count, p.sum, p.min, p.max)?;
    writeln!(out, "Scale: {}", p.scale)?;
    let factor = exp_factor(p.scale);
    let neg = &p.negative;
    for (j, c) in neg.bucket_counts.iter().enumerate().rev() {
        let index = f64::from(neg.offset) + j as f64;
        let (lower, upper) = ((index * factor).exp(), ((index + 1.0) * factor).exp());
        writeln!(
            out,
            "Bucket [{}, {}), Count: {c}",
            Fixed(-upper),
            Fixed(-lower)
        )?;
    }
    if p.zero_count != 0 {
        writeln!(out, "Bucket [0, 0], Count: {}", p.zero_count)?;
    }
    let pos = &p.positive;
    for (j, c) in pos.bucket_counts.iter().enumerate() {
        let index = f64::from(pos.offset) + j as f64;
        let (lower, upper) = ((index * factor).exp(), ((index + 1.0) * factor).exp());
        writeln!(
            out,
            "Bucket ({}, {}], Count: {c}",
            Fixed(lower),
            Fixed(upper)
        )?;
    }
    Ok(())
}

fn detailed_span(out: &mut String, s: &Span) -> fmt::Result {
    let kind = match s.kind {
        SpanKind::Internal => "Internal",
        SpanKind::Server => "Server",
        SpanKind::Client => "Client",
        SpanKind::Producer => "Producer",
        SpanKind::Consumer => "Consumer",
    };
    let (code, message) = match &s.status {
        SpanStatus::Unset => ("Unset", ""),
        SpanStatus::Ok => ("Ok", ""),
        SpanStatus::Error(m) => ("Error", m.as_str()),
    };
    // A root span's parent id is empty, as in OTLP.
    let parent: &[u8] = if s.parent_span_id == [0; 8] {
        &[]
    } else {
        &s.parent_span_id
    };
    writeln!(out, "    Trace ID       : {}", Hex(&s.trace_id))?;
    writeln!(out, "    Parent ID      : {}", Hex(parent))?;
    writeln!(out, "    ID             : {}", Hex(&s.span_id))?;
    writeln!(out, "    Name           : {}", s.name)?;
    writeln!(out, "    Kind           : {kind}")?;
    writeln!(out, "    Start time     : {}", Timestamp(s.start_time_ns))?;
    writeln!(out, "    End time       : {}", Timestamp(s.end_time_ns))?;
    writeln!(out, "    Duration       : {:?}", duration(s))?;
    writeln!(out, "    Status code    : {code}")?;
    writeln!(out, "    Status message : {message}")?;
    attribute_block(out, "Attributes", "", &s.attributes)?;
    if !s.events.is_empty() {
        writeln!(out, "Events:")?;
        for (i, e) in s.events.iter().enumerate() {
            writeln!(out, "SpanEvent #{i}")?;
            writeln!(out, "     -> Name: {}", e.name)?;
            writeln!(out, "     -> Timestamp: {}", Timestamp(e.time_ns))?;
            attribute_block(out, "-> Attributes", "     ", &e.attributes)?;
        }
    }
    Ok(())
}

// ---- value formatting ----

/// An attribute value with its type, as the Collector prints it: `Str(tcp)`, `Int(443)`.
struct Typed<'a>(&'a AnyValue);

impl fmt::Display for Typed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            AnyValue::String(s) => write!(f, "Str({s})"),
            AnyValue::Int(i) => write!(f, "Int({i})"),
            AnyValue::Double(d) => write!(f, "Double({d})"),
            AnyValue::Bool(b) => write!(f, "Bool({b})"),
        }
    }
}

/// A double with six decimals, like Go's `%f` (which the Collector uses).
struct Fixed(f64);

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v.is_nan() {
            f.write_str("NaN")
        } else if v.is_infinite() {
            f.write_str(if v > 0.0 { "+Inf" } else { "-Inf" })
        } else {
            write!(f, "{v:.6}")
        }
    }
}

/// Lowercase hex of an id; empty for an empty id.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Nanoseconds since the epoch as Go prints a UTC time: `2020-02-11 20:26:12.000000321 +0000
/// UTC`, trailing zeros of the fraction dropped.
struct Timestamp(u64);

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let nanos = self.0 % 1_000_000_000;
        let (year, month, day) = civil_from_days(secs / 86_400);
        let rem = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )?;
        if nanos != 0 {
            let fraction = format!("{nanos:09}");
            write!(f, ".{}", fraction.trim_end_matches('0'))?;
        }
        f.write_str(" +0000 UTC")
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_like_go() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            Timestamp(1_581_452_772_000_000_321).to_string(),
            "2020-02-11 20:26:12.000000321 +0000 UTC"
        );
        assert_eq!(
            Timestamp(951_782_400_500_000_000).to_string(),
            "2000-02-29 00:00:00.5 +0000 UTC"
        );
        assert_eq!(
            Timestamp(4_102_444_799_000_000_000).to_string(),
            "2099-12-31 23:59:59 +0000 UTC"
        );
    }

    #[test]
    fn fixed_and_hex() {
        assert_eq!(Fixed(1.23).to_string(), "1.230000");
        assert_eq!(Fixed(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Hex(&[0, 0xab]).to_string(), "00ab");
        assert_eq!(Hex(&[]).to_string(), "");
    }
}

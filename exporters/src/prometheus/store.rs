//! The latest value of every series, and its rendering in the Prometheus text format 0.0.4 or
//! OpenMetrics 1.0.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use periscope_pipeline::model::{
    AnyValue, Attributes, ExponentialHistogramPoint, HistogramPoint, MetricData, MetricsBatch,
    Number, Resource, Scope, Temporality,
};

use super::names::{metric_name, sanitize_label_name, unit_suffix, NameKind};

/// A sorted label set.
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(i64),
    Double(f64),
    Histogram {
        /// Upper bounds, ascending; `counts` has one more entry (+Inf).
        bounds: Vec<f64>,
        /// Per bucket, not cumulative.
        counts: Vec<u64>,
        sum: Option<f64>,
        count: u64,
    },
}

#[derive(Debug)]
struct Series {
    value: Value,
    updated: Instant,
    /// The latest point's time (ns since the epoch).
    time_ns: u64,
    /// How often its points come (the time between its last two), for a cumulative series:
    /// a processor emits those at every interval until their source is gone.
    cadence: Option<Duration>,
}

/// A cumulative series that missed this many of its intervals is gone: its source (a deleted
/// pod's device, a closed namespace) had its final point and retired.
const MISSED_INTERVALS: f64 = 2.5;
/// The shortest cadence assumed, so that points that come in bursts do not expire early.
const MIN_CADENCE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Family {
    kind: NameKind,
    help: String,
    /// The unit word (`bytes`), when the name ends with it (OpenMetrics `# UNIT`).
    unit: Option<String>,
    /// By the series' labels as the exposition writes them (`a="1",b="2"`): one string per
    /// series, looked up without allocating (a vector of label strings per series cost ~2 KiB
    /// each and an allocation per label of every point).
    series: FxHashMap<Box<str>, Series>,
}

/// What a scrape sees.
#[derive(Debug)]
pub struct Store {
    families: BTreeMap<String, Family>,
    /// Label names of attribute keys, sanitized once per key.
    label_names: LabelNames,
    /// `target_info` label sets, keyed by the same labels.
    targets: BTreeMap<Labels, Instant>,
    series: usize,
    limit: usize,
    expire_after: Duration,
}

/// Why points were not stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// New series past the series limit.
    pub over_limit: u64,
    /// Points whose name is already used by a metric of another type.
    pub type_conflict: u64,
}

/// Renders a float the way Prometheus parses it (`+Inf`, `-Inf`, `NaN`, `1e-7`, `0.5`).
fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v:?}");
    }
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str, openmetrics: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if openmetrics => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Adds sanitised attributes to `labels`; keys that collide after sanitising get their values
/// joined with `;` in the order of the original keys.
fn add_attributes(labels: &mut BTreeMap<String, Vec<(String, String)>>, attrs: &Attributes) {
    for kv in attrs {
        labels
            .entry(sanitize_label_name(&kv.key))
            .or_default()
            .push((kv.key.to_string(), kv.value.to_string()));
    }
}

/// Label names by attribute key. A batch repeats a handful of keys on every point: sanitizing
/// each anew (a `String` per attribute of every point) was the largest part of the exporter's
/// CPU with ~900 series (`perf`, `bench-scale` idle).
#[derive(Debug, Default)]
struct LabelNames(std::collections::HashMap<String, Arc<str>>);

/// Keys kept at most (attribute keys are few; a flood of distinct ones is sanitized each time).
const LABEL_NAMES_KEPT: usize = 4096;

impl LabelNames {
    fn get(&mut self, key: &str) -> Arc<str> {
        if let Some(n) = self.0.get(key) {
            return n.clone();
        }
        let n: Arc<str> = sanitize_label_name(key).into();
        if self.0.len() < LABEL_NAMES_KEPT {
            self.0.insert(key.to_string(), n.clone());
        }
        n
    }
}

/// One part of a label: its name, the attribute key it came from (empty for resource and
/// scope labels) and its value.
type LabelPart<'a> = (Arc<str>, &'a str, PartValue<'a>);

#[derive(Clone, Copy)]
enum PartValue<'a> {
    Text(&'a str),
    Value(&'a AnyValue),
}

/// The labels every point of a batch has: `base` (job, instance) unless the scope's labels
/// replace them, and the scope's.
fn fixed_parts<'a>(
    base: &'a [(String, Vec<(String, String)>)],
    scope: &'a [(String, String)],
) -> Vec<LabelPart<'a>> {
    let mut parts = Vec::new();
    for (name, values) in base {
        if scope.iter().any(|(s, _)| s == name) {
            continue;
        }
        for (k, v) in values {
            parts.push((Arc::from(name.as_str()), k.as_str(), PartValue::Text(v)));
        }
    }
    for (name, v) in scope {
        parts.push((Arc::from(name.as_str()), "", PartValue::Text(v)));
    }
    parts
}

/// Writes a point's labels as the exposition has them (`a="1",b="2"`) into `out`, as
/// `add_attributes` and `finish` make them from the batch's `fixed` labels and `attrs`,
/// without allocating once `parts` and `out` have grown: sorted by name; values of keys that
/// sanitize to one name joined with `;` in key order.
fn write_point_labels<'a>(
    names: &mut LabelNames,
    fixed: &[LabelPart<'a>],
    attrs: &'a Attributes,
    parts: &mut Vec<LabelPart<'a>>,
    out: &mut String,
) {
    parts.clear();
    parts.extend(fixed.iter().cloned());
    for kv in attrs {
        parts.push((names.get(&kv.key), &kv.key, PartValue::Value(&kv.value)));
    }
    // Stable: equal keys keep their order, as `finish` keeps it.
    parts.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out.clear();
    let mut last: Option<&str> = None;
    for (name, _, v) in parts.iter() {
        if last == Some(&**name) {
            out.push(';');
        } else {
            if last.is_some() {
                out.push_str("\",");
            }
            out.push_str(name);
            out.push_str("=\"");
            last = Some(name);
        }
        match v {
            PartValue::Text(t) => escape_label_value(out, t),
            PartValue::Value(AnyValue::String(t)) => escape_label_value(out, t),
            PartValue::Value(other) => {
                let _ = write!(out, "{other}");
            }
        }
    }
    if last.is_some() {
        out.push('"');
    }
}

/// Labels as the exposition writes them (`a="1",b="2"`).
fn render_labels(labels: &Labels) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_label_value(&mut out, v);
        out.push('"');
    }
    out
}

fn finish(labels: BTreeMap<String, Vec<(String, String)>>) -> Labels {
    labels
        .into_iter()
        .map(|(k, mut vs)| {
            vs.sort_by(|a, b| a.0.cmp(&b.0));
            let v = vs.into_iter().map(|(_, v)| v).collect::<Vec<_>>().join(";");
            (k, v)
        })
        .collect()
}

fn attr(r: &Resource, key: &str) -> Option<String> {
    r.attributes
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.to_string())
}

/// `job` and `instance` from `service.namespace`/`service.name` and `service.instance.id`.
fn job_instance(r: &Resource) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    if let Some(name) = attr(r, "service.name") {
        let job = match attr(r, "service.namespace") {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        };
        out.push(("job".to_string(), vec![(String::new(), job)]));
    }
    if let Some(id) = attr(r, "service.instance.id") {
        out.push(("instance".to_string(), vec![(String::new(), id)]));
    }
    out
}

/// An exponential histogram as explicit buckets: negative buckets (le = -base^index), the
/// zero bucket (le = 0), positive buckets (le = base^(index+1)).
fn explicit_from_exponential(p: &ExponentialHistogramPoint) -> (Vec<f64>, Vec<u64>) {
    let base = 2f64.powf(2f64.powi(-p.scale));
    let mut bounds = Vec::new();
    let mut counts = Vec::new();
    let neg = &p.negative;
    for (i, c) in neg.bucket_counts.iter().enumerate().rev() {
        let index = neg.offset + i as i32;
        bounds.push(-base.powi(index));
        counts.push(*c);
    }
    bounds.push(0.0);
    counts.push(p.zero_count);
    let pos = &p.positive;
    for (i, c) in pos.bucket_counts.iter().enumerate() {
        let index = pos.offset + i as i32;
        bounds.push(base.powi(index + 1));
        counts.push(*c);
    }
    counts.push(0); // +Inf
    (bounds, counts)
}

impl Store {
    pub fn new(limit: usize, expire_after: Duration) -> Self {
        Store {
            families: BTreeMap::new(),
            label_names: LabelNames::default(),
            targets: BTreeMap::new(),
            series: 0,
            limit,
            expire_after,
        }
    }

    /// Number of series held (`target_info` not included).
    pub fn series(&self) -> usize {
        self.series
    }

    /// Stores the batch's points: latest value per series, deltas added up.
    pub fn ingest<'b>(&mut self, batch: &'b MetricsBatch) -> Refused {
        let now = Instant::now();
        let mut refused = Refused::default();
        let base = job_instance(&batch.resource);
        self.target_info(&batch.resource, &base, now);
        let scope_labels = scope_labels(&batch.scope);
        let fixed = fixed_parts(&base, &scope_labels);
        // Reused for every point.
        let mut parts: Vec<LabelPart<'_>> = Vec::new();
        let mut labels = String::new();
        for m in &batch.metrics {
            let (kind, temporality) = match &m.data {
                MetricData::Sum {
                    monotonic: true,
                    temporality,
                    ..
                } => (NameKind::Counter, *temporality),
                MetricData::Sum { temporality, .. } => (NameKind::Gauge, *temporality),
                MetricData::Gauge { .. } => (NameKind::Gauge, Temporality::Cumulative),
                MetricData::Histogram { temporality, .. }
                | MetricData::ExponentialHistogram { temporality, .. } => {
                    (NameKind::Histogram, *temporality)
                }
            };
            let name = metric_name(&m.name, &m.unit, kind);
            let unit = unit_suffix(&m.unit)
                .filter(|u| name.ends_with(&format!("_{u}")) || name == *u)
                .or_else(|| {
                    (kind == NameKind::Gauge && name.ends_with("_ratio")).then(|| "ratio".into())
                });
            let family = self.families.entry(name).or_insert_with(|| Family {
                kind,
                // promtool wants help text on every family: the OpenTelemetry name when the
                // metric has no description.
                help: if m.description.is_empty() {
                    m.name.to_string()
                } else {
                    m.description.to_string()
                },
                unit,
                series: FxHashMap::default(),
            });
            if family.kind != kind {
                refused.type_conflict += m.data.len() as u64;
                continue;
            }
            let delta = temporality == Temporality::Delta;
            // Cumulative sums and histograms come at every interval; gauges and deltas only
            // when there is something to say.
            let regular = !delta && !matches!(m.data, MetricData::Gauge { .. });
            let names = &mut self.label_names;
            let mut put =
                |attrs: &'b Attributes, time_ns: u64, value: Value, series: &mut usize| {
                    write_point_labels(names, &fixed, attrs, &mut parts, &mut labels);
                    match family.series.get_mut(labels.as_str()) {
                        Some(s) => {
                            s.value = if delta { add(&s.value, value) } else { value };
                            s.updated = now;
                            if regular && s.time_ns > 0 && time_ns > s.time_ns {
                                let gap = Duration::from_nanos(time_ns - s.time_ns);
                                s.cadence = Some(gap.max(MIN_CADENCE));
                            }
                            s.time_ns = time_ns;
                        }
                        None if *series >= self.limit => refused.over_limit += 1,
                        None => {
                            *series += 1;
                            family.series.insert(
                                labels.as_str().into(),
                                Series {
                                    value,
                                    updated: now,
                                    time_ns,
                                    cadence: None,
                                },
                            );
                        }
                    }
                };
            match &m.data {
                MetricData::Sum { points, .. } | MetricData::Gauge { points } => {
                    for p in points {
                        let v = match p.value {
                            Number::Int(i) => Value::Int(i),
                            Number::Double(d) => Value::Double(d),
                        };
                        put(&p.attributes, p.time_ns, v, &mut self.series);
                    }
                }
                MetricData::Histogram { points, .. } => {
                    for p in points {
                        put(&p.attributes, p.time_ns, histogram(p), &mut self.series);
                    }
                }
                MetricData::ExponentialHistogram { points, .. } => {
                    for p in points {
                        let (bounds, counts) = explicit_from_exponential(p);
                        let v = Value::Histogram {
                            bounds,
                            counts,
                            sum: p.sum,
                            count: p.count,
                        };
                        put(&p.attributes, p.time_ns, v, &mut self.series);
                    }
                }
            }
        }
        refused
    }

    fn target_info(
        &mut self,
        r: &Resource,
        base: &[(String, Vec<(String, String)>)],
        now: Instant,
    ) {
        let skip = ["service.name", "service.namespace", "service.instance.id"];
        let rest: Attributes = r
            .attributes
            .iter()
            .filter(|a| !skip.contains(&a.key.as_ref()))
            .cloned()
            .collect();
        let mut labels: BTreeMap<String, Vec<(String, String)>> = base.iter().cloned().collect();
        add_attributes(&mut labels, &rest);
        let labels = finish(labels);
        if labels.is_empty() {
            return;
        }
        // One entry per distinct resource; bounded by the series limit too.
        if !self.targets.contains_key(&labels) && self.targets.len() >= self.limit {
            return;
        }
        self.targets.insert(labels, now);
    }

    /// Drops series (and `target_info` entries) not updated for `expire_after`, and
    /// cumulative series that missed [`MISSED_INTERVALS`] of their intervals (their source is
    /// gone: a deleted pod's series do not stay until `expire_after`).
    pub fn expire(&mut self) {
        self.expire_at(Instant::now());
    }

    fn expire_at(&mut self, now: Instant) {
        let cutoff = if self.expire_after.is_zero() {
            None
        } else {
            now.checked_sub(self.expire_after)
        };
        let missed = |s: &Series| {
            s.cadence.is_some_and(|c| {
                now.saturating_duration_since(s.updated) > c.mul_f64(MISSED_INTERVALS)
            })
        };
        let mut removed = 0;
        self.families.retain(|_, f| {
            let before = f.series.len();
            f.series
                .retain(|_, s| cutoff.is_none_or(|c| s.updated >= c) && !missed(s));
            removed += before - f.series.len();
            !f.series.is_empty()
        });
        self.series -= removed;
        if let Some(cutoff) = cutoff {
            self.targets.retain(|_, t| *t >= cutoff);
        }
    }

    /// The exposition: Prometheus text format 0.0.4, or OpenMetrics 1.0 text.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(256 + self.series * 96);
        if !self.targets.is_empty() {
            if openmetrics {
                out.push_str("# TYPE target info\n# HELP target Target metadata\n");
            } else {
                out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
            }
            for labels in self.targets.keys() {
                sample(&mut out, "target_info", &render_labels(labels), None, |o| {
                    o.push('1')
                });
            }
        }
        for (name, f) in &self.families {
            if f.series.is_empty() {
                continue;
            }
            let (type_name, prom_type) = match (f.kind, openmetrics) {
                (NameKind::Counter, false) => (format!("{name}_total"), "counter"),
                (NameKind::Counter, true) => (name.clone(), "counter"),
                (NameKind::Gauge, _) => (name.clone(), "gauge"),
                (NameKind::Histogram, _) => (name.clone(), "histogram"),
            };
            if openmetrics {
                let _ = writeln!(out, "# TYPE {type_name} {prom_type}");
                if let Some(u) = &f.unit {
                    let _ = writeln!(out, "# UNIT {type_name} {u}");
                }
                if !f.help.is_empty() {
                    let _ = write!(out, "# HELP {type_name} ");
                    escape_help(&mut out, &f.help, true);
                    out.push('\n');
                }
            } else {
                if !f.help.is_empty() {
                    let _ = write!(out, "# HELP {type_name} ");
                    escape_help(&mut out, &f.help, false);
                    out.push('\n');
                }
                let _ = writeln!(out, "# TYPE {type_name} {prom_type}");
            }
            // Sorted for a stable exposition.
            let mut series: Vec<_> = f.series.iter().collect();
            series.sort_by(|a, b| a.0.cmp(b.0));
            for (labels, s) in series {
                match &s.value {
                    Value::Int(i) => {
                        let n = if f.kind == NameKind::Counter {
                            format!("{name}_total")
                        } else {
                            name.clone()
                        };
                        sample(&mut out, &n, labels, None, |o| {
                            let _ = write!(o, "{i}");
                        })
                    }
                    Value::Double(d) => {
                        let n = if f.kind == NameKind::Counter {
                            format!("{name}_total")
                        } else {
                            name.clone()
                        };
                        sample(&mut out, &n, labels, None, |o| float(o, *d))
                    }
                    Value::Histogram {
                        bounds,
                        counts,
                        sum,
                        count,
                    } => {
                        let bucket = format!("{name}_bucket");
                        let mut cumulative = 0u64;
                        for (i, b) in bounds.iter().enumerate() {
                            cumulative += counts.get(i).copied().unwrap_or(0);
                            let mut le = String::new();
                            float(&mut le, *b);
                            let c = cumulative;
                            sample(&mut out, &bucket, labels, Some(&le), |o| {
                                let _ = write!(o, "{c}");
                            });
                        }
                        sample(&mut out, &bucket, labels, Some("+Inf"), |o| {
                            let _ = write!(o, "{count}");
                        });
                        if let Some(sum) = sum {
                            sample(&mut out, &format!("{name}_sum"), labels, None, |o| {
                                float(o, *sum)
                            });
                        }
                        sample(&mut out, &format!("{name}_count"), labels, None, |o| {
                            let _ = write!(o, "{count}");
                        });
                    }
                }
            }
        }
        if openmetrics {
            out.push_str("# EOF\n");
        }
        out
    }
}

fn scope_labels(s: &Scope) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !s.name.is_empty() {
        out.push(("otel_scope_name".to_string(), s.name.to_string()));
    }
    if !s.version.is_empty() {
        out.push(("otel_scope_version".to_string(), s.version.to_string()));
    }
    out
}

fn histogram(p: &HistogramPoint) -> Value {
    Value::Histogram {
        bounds: p.explicit_bounds.clone(),
        counts: p.bucket_counts.clone(),
        sum: p.sum,
        count: p.count,
    }
}

/// A delta added to what is stored; a histogram whose bounds changed starts over.
fn add(old: &Value, new: Value) -> Value {
    match (old, new) {
        (Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_add(b)),
        (Value::Int(a), Value::Double(b)) => Value::Double(*a as f64 + b),
        (Value::Double(a), Value::Int(b)) => Value::Double(a + b as f64),
        (Value::Double(a), Value::Double(b)) => Value::Double(a + b),
        (
            Value::Histogram {
                bounds: ob,
                counts: oc,
                sum: os,
                count: on,
            },
            Value::Histogram {
                bounds,
                counts,
                sum,
                count,
            },
        ) if *ob == bounds && oc.len() == counts.len() => Value::Histogram {
            counts: oc.iter().zip(&counts).map(|(a, b)| a + b).collect(),
            bounds,
            sum: match (os, sum) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            },
            count: on + count,
        },
        (_, new) => new,
    }
}

/// One sample line; `labels` as [`write_point_labels`] writes them.
fn sample(
    out: &mut String,
    name: &str,
    labels: &str,
    le: Option<&str>,
    value: impl FnOnce(&mut String),
) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        out.push_str(labels);
        if let Some(le) = le {
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    value(out);
    out.push('\n');
}

#[cfg(test)]
mod tests;

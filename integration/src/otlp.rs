//! The `file` exporter's output: one OTLP/JSON `ExportMetricsServiceRequest` per line.
//!
//! A cumulative series may appear on several lines (every `interval`, and once more at
//! shutdown); its value is the point with the latest `timeUnixNano`. Delta points are summed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, AggregationTemporality};

/// Attributes as `key → value`, values rendered as text (`42`, `true`, `eth0`).
pub type Attributes = BTreeMap<String, String>;

/// Decodes every line of `path` (empty lines aside) as an `ExportMetricsServiceRequest` in the
/// OTLP/JSON mapping; panics naming the line that does not decode.
pub fn read_requests(path: &Path) -> Vec<ExportMetricsServiceRequest> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read exporter output {}: {e}", path.display()));
    parse_requests(&text, &path.display().to_string())
}

/// Decodes JSON lines (see [`read_requests`]); `origin` names them in messages.
pub fn parse_requests(text: &str, origin: &str) -> Vec<ExportMetricsServiceRequest> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                let shown: String = line.chars().take(300).collect();
                panic!(
                    "{origin}:{}: not an OTLP/JSON ExportMetricsServiceRequest: {e}\n{shown}",
                    i + 1
                )
            })
        })
        .collect()
}

/// Every metric name in the requests.
pub fn metric_names(requests: &[ExportMetricsServiceRequest]) -> BTreeSet<String> {
    requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| m.name.clone())
        .collect()
}

/// Renders an attribute value as text.
pub fn value_text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> Attributes {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_text(kv)))
        .collect()
}

/// One series of a sum: its identity and current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub resource: Attributes,
    pub scope: String,
    pub attributes: Attributes,
    /// The latest point's value (cumulative) or the sum of all points (delta).
    pub value: i64,
    /// How many points the file held for this series.
    pub points: usize,
    pub start_time_unix_nano: u64,
    pub time_unix_nano: u64,
}

impl Series {
    /// The value of attribute `key`, if the series has it.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type SeriesKey = (Attributes, String, Attributes);

struct RawPoint {
    start: u64,
    time: u64,
    value: i64,
    temporality: i32,
}

/// The series of the integer monotonic sum `name`: for cumulative series the point with the
/// latest `timeUnixNano` (later lines win ties), for delta series the sum of all points.
///
/// Panics if `name` is not a monotonic integer sum, if a point's temporality is unspecified,
/// if a series mixes temporalities, or if a cumulative series ever goes down without a new
/// start time.
pub fn sum_series(requests: &[ExportMetricsServiceRequest], name: &str) -> Vec<Series> {
    let mut raw: BTreeMap<SeriesKey, Vec<RawPoint>> = BTreeMap::new();
    for rm in requests.iter().flat_map(|r| &r.resource_metrics) {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for sm in &rm.scope_metrics {
            let scope = sm
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for m in sm.metrics.iter().filter(|m| m.name == name) {
                let Some(metric::Data::Sum(sum)) = &m.data else {
                    panic!("{name}: expected a Sum, got {:?}", m.data);
                };
                assert!(sum.is_monotonic, "{name}: the sum is not monotonic");
                let temporality = sum.aggregation_temporality;
                assert!(
                    temporality == AggregationTemporality::Cumulative as i32
                        || temporality == AggregationTemporality::Delta as i32,
                    "{name}: aggregation temporality {temporality} is neither cumulative nor delta"
                );
                for p in &sum.data_points {
                    let Some(number_data_point::Value::AsInt(value)) = p.value else {
                        panic!("{name}: expected integer points, got {:?}", p.value);
                    };
                    assert!(
                        p.start_time_unix_nano <= p.time_unix_nano,
                        "{name}: a point starts ({}) after its time ({})",
                        p.start_time_unix_nano,
                        p.time_unix_nano
                    );
                    raw.entry((resource.clone(), scope.clone(), attributes(&p.attributes)))
                        .or_default()
                        .push(RawPoint {
                            start: p.start_time_unix_nano,
                            time: p.time_unix_nano,
                            value,
                            temporality,
                        });
                }
            }
        }
    }
    raw.into_iter()
        .map(|((resource, scope, attributes), mut points)| {
            let temporality = points[0].temporality;
            assert!(
                points.iter().all(|p| p.temporality == temporality),
                "{name} {attributes:?}: the series mixes temporalities"
            );
            let n = points.len();
            let start = points.iter().map(|p| p.start).min().unwrap_or(0);
            if temporality == AggregationTemporality::Delta as i32 {
                return Series {
                    resource,
                    scope,
                    value: points.iter().map(|p| p.value).sum(),
                    points: n,
                    start_time_unix_nano: start,
                    time_unix_nano: points.iter().map(|p| p.time).max().unwrap_or(0),
                    attributes,
                };
            }
            // Stable: points with equal times keep their file order, so the later line wins.
            points.sort_by_key(|p| p.time);
            for w in points.windows(2) {
                assert!(
                    w[1].value >= w[0].value || w[1].start != w[0].start,
                    "{name} {attributes:?}: cumulative value went down from {} to {} without a new start time",
                    w[0].value,
                    w[1].value
                );
            }
            let last = points.last().expect("at least one point");
            Series {
                resource,
                scope,
                value: last.value,
                points: n,
                start_time_unix_nano: last.start,
                time_unix_nano: last.time,
                attributes,
            }
        })
        .collect()
}

/// The sum over all series.
pub fn total(series: &[Series]) -> i64 {
    series.iter().map(|s| s.value).sum()
}

/// Sums series by the value of attribute `key` (`""` for series without it).
pub fn sum_by(series: &[Series], key: &str) -> BTreeMap<String, i64> {
    sum_by_keys(series, &[key])
        .into_iter()
        .map(|(mut k, v)| (k.remove(0), v))
        .collect()
}

/// Sums series by the values of several attributes (`""` where a series lacks one).
pub fn sum_by_keys(series: &[Series], keys: &[&str]) -> BTreeMap<Vec<String>, i64> {
    let mut m = BTreeMap::new();
    for s in series {
        let k: Vec<String> = keys
            .iter()
            .map(|key| s.attr(key).unwrap_or_default().to_string())
            .collect();
        *m.entry(k).or_insert(0) += s.value;
    }
    m
}

/// The distinct values of attribute `key` (`""` for series without it).
pub fn values_of(series: &[Series], key: &str) -> BTreeSet<String> {
    series
        .iter()
        .map(|s| s.attr(key).unwrap_or_default().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(time: u64, packets: i64, temporality: i32, transport: &str) -> String {
        format!(
            r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"periscope"}}}}]}},"scopeMetrics":[{{"scope":{{"name":"periscope/flow"}},"metrics":[{{"name":"periscope.network.packets","unit":"{{packet}}","sum":{{"dataPoints":[{{"attributes":[{{"key":"network.transport","value":{{"stringValue":"{transport}"}}}},{{"key":"periscope.netns.inode","value":{{"intValue":"0"}}}}],"startTimeUnixNano":"100","timeUnixNano":"{time}","asInt":"{packets}"}}],"aggregationTemporality":{temporality},"isMonotonic":true}}}}]}}]}}]}}"#
        )
    }

    #[test]
    fn cumulative_series_take_the_latest_point() {
        // Out of order on purpose: the value is the latest by time, not the last line.
        let text = [
            line(300, 7, 2, "tcp"),
            line(200, 5, 2, "tcp"),
            line(200, 2, 2, "udp"),
        ]
        .join("\n");
        let requests = parse_requests(&text, "test");
        let series = sum_series(&requests, "periscope.network.packets");
        assert_eq!(series.len(), 2);
        assert_eq!(sum_by(&series, "network.transport")["tcp"], 7);
        assert_eq!(total(&series), 9);
        let tcp = series
            .iter()
            .find(|s| s.attr("network.transport") == Some("tcp"))
            .unwrap();
        assert_eq!((tcp.points, tcp.time_unix_nano), (2, 300));
        assert_eq!(tcp.attr("periscope.netns.inode"), Some("0"));
        assert_eq!(tcp.resource["service.name"], "periscope");
    }

    #[test]
    fn delta_series_are_summed() {
        let text = [line(200, 5, 1, "tcp"), line(300, 7, 1, "tcp")].join("\n");
        let series = sum_series(&parse_requests(&text, "test"), "periscope.network.packets");
        assert_eq!(total(&series), 12);
    }

    #[test]
    #[should_panic(expected = "went down")]
    fn a_cumulative_series_that_goes_down_is_an_error() {
        let text = [line(200, 5, 2, "tcp"), line(300, 4, 2, "tcp")].join("\n");
        sum_series(&parse_requests(&text, "test"), "periscope.network.packets");
    }
}

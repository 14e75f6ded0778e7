//! Data points from the `file` exporter's output: one OTLP/JSON `ExportMetricsServiceRequest`
//! per line. [`points`] flattens them; the rest builds on it.
//!
//! A cumulative series may appear on several lines (every `interval`, and once more at
//! shutdown); its value is the point with the latest `timeUnixNano`. Delta points are summed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint,
    HistogramDataPoint, Metric, NumberDataPoint, SummaryDataPoint,
};

use super::{attributes, complete_lines, parse_lines, resource_attributes, Attributes};

/// Decodes every line of `path` (empty lines aside) as an `ExportMetricsServiceRequest` in the
/// OTLP/JSON mapping; panics naming the line that does not decode.
pub fn read_requests(path: &Path) -> Vec<ExportMetricsServiceRequest> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read exporter output {}: {e}", path.display()));
    parse_requests(&text, &path.display().to_string())
}

/// Like [`read_requests`] for a file an agent may still be writing: its complete lines so far
/// (none when it does not exist yet).
pub fn read_metrics(path: &Path) -> Vec<ExportMetricsServiceRequest> {
    parse_requests(&complete_lines(path), &path.display().to_string())
}

/// Decodes JSON lines (see [`read_requests`]); `origin` names them in messages.
pub fn parse_requests(text: &str, origin: &str) -> Vec<ExportMetricsServiceRequest> {
    parse_lines(text, origin, "ExportMetricsServiceRequest")
}

/// Every metric name in the requests.
pub fn metric_names(requests: &[ExportMetricsServiceRequest]) -> BTreeSet<String> {
    points(requests)
        .iter()
        .map(|p| p.metric.name.clone())
        .collect()
}

/// What a data point holds, by the kind of its metric.
#[derive(Debug, Clone, Copy)]
pub enum PointData<'a> {
    /// A sum's point, with the sum's temporality and monotonicity.
    Sum {
        point: &'a NumberDataPoint,
        temporality: i32,
        monotonic: bool,
    },
    Gauge(&'a NumberDataPoint),
    /// An explicit-bucket histogram's point, with the histogram's temporality.
    Histogram(&'a HistogramDataPoint, i32),
    /// An exponential histogram's point, with the histogram's temporality.
    Exponential(&'a ExponentialHistogramDataPoint, i32),
    Summary(&'a SummaryDataPoint),
}

/// One data point with where it came from.
#[derive(Debug, Clone)]
pub struct Point<'a> {
    /// The resource's attributes.
    pub resource: Attributes,
    /// The instrumentation scope's name.
    pub scope: &'a str,
    pub metric: &'a Metric,
    /// The point's attributes.
    pub attributes: Attributes,
    pub data: PointData<'a>,
}

impl Point<'_> {
    /// `timeUnixNano`.
    pub fn time(&self) -> u64 {
        match self.data {
            PointData::Sum { point, .. } | PointData::Gauge(point) => point.time_unix_nano,
            PointData::Histogram(p, _) => p.time_unix_nano,
            PointData::Exponential(p, _) => p.time_unix_nano,
            PointData::Summary(p) => p.time_unix_nano,
        }
    }
}

/// Every data point of every metric in the requests, in file order.
pub fn points(requests: &[ExportMetricsServiceRequest]) -> Vec<Point<'_>> {
    let mut out = Vec::new();
    for rm in requests.iter().flat_map(|r| &r.resource_metrics) {
        let resource = resource_attributes(rm.resource.as_ref());
        for sm in &rm.scope_metrics {
            let scope = sm.scope.as_ref().map_or("", |s| s.name.as_str());
            for m in &sm.metrics {
                let point = |attrs, data| Point {
                    resource: resource.clone(),
                    scope,
                    metric: m,
                    attributes: attributes(attrs),
                    data,
                };
                match &m.data {
                    Some(metric::Data::Sum(sum)) => {
                        out.extend(sum.data_points.iter().map(|p| {
                            point(
                                &p.attributes,
                                PointData::Sum {
                                    point: p,
                                    temporality: sum.aggregation_temporality,
                                    monotonic: sum.is_monotonic,
                                },
                            )
                        }));
                    }
                    Some(metric::Data::Gauge(g)) => out.extend(
                        g.data_points
                            .iter()
                            .map(|p| point(&p.attributes, PointData::Gauge(p))),
                    ),
                    Some(metric::Data::Histogram(h)) => out.extend(h.data_points.iter().map(|p| {
                        point(
                            &p.attributes,
                            PointData::Histogram(p, h.aggregation_temporality),
                        )
                    })),
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        out.extend(h.data_points.iter().map(|p| {
                            point(
                                &p.attributes,
                                PointData::Exponential(p, h.aggregation_temporality),
                            )
                        }))
                    }
                    Some(metric::Data::Summary(s)) => out.extend(
                        s.data_points
                            .iter()
                            .map(|p| point(&p.attributes, PointData::Summary(p))),
                    ),
                    None => {}
                }
            }
        }
    }
    out
}

/// The latest point (by `timeUnixNano`; later lines win ties) of each (scope, metric name,
/// attributes) among `points`.
pub fn latest<'a>(
    points: impl IntoIterator<Item = Point<'a>>,
) -> BTreeMap<(String, String, Attributes), Point<'a>> {
    let mut m: BTreeMap<(String, String, Attributes), Point<'a>> = BTreeMap::new();
    for p in points {
        let key = (
            p.scope.to_string(),
            p.metric.name.clone(),
            p.attributes.clone(),
        );
        if m.get(&key).is_none_or(|o| o.time() <= p.time()) {
            m.insert(key, p);
        }
    }
    m
}

/// One series of an explicit-bucket histogram: its latest (cumulative) count and sum.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub count: u64,
    /// The sum of the samples (0 when the point has none).
    pub sum: f64,
}

/// The series of the explicit-bucket histogram `name` by attribute set: each one's latest
/// point.
pub fn histograms(
    requests: &[ExportMetricsServiceRequest],
    name: &str,
) -> BTreeMap<Attributes, Histogram> {
    let named = points(requests)
        .into_iter()
        .filter(|p| p.metric.name == name && matches!(p.data, PointData::Histogram(..)));
    latest(named)
        .into_iter()
        .filter_map(|((_, _, attrs), p)| match p.data {
            PointData::Histogram(h, _) => Some((
                attrs,
                Histogram {
                    count: h.count,
                    sum: h.sum.unwrap_or(0.0),
                },
            )),
            _ => None,
        })
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
    for p in points(requests)
        .into_iter()
        .filter(|p| p.metric.name == name)
    {
        let PointData::Sum {
            point,
            temporality,
            monotonic,
        } = p.data
        else {
            panic!("{name}: expected a Sum, got {:?}", p.metric.data);
        };
        assert!(monotonic, "{name}: the sum is not monotonic");
        assert!(
            temporality == AggregationTemporality::Cumulative as i32
                || temporality == AggregationTemporality::Delta as i32,
            "{name}: aggregation temporality {temporality} is neither cumulative nor delta"
        );
        let Some(number_data_point::Value::AsInt(value)) = point.value else {
            panic!("{name}: expected integer points, got {:?}", point.value);
        };
        assert!(
            point.start_time_unix_nano <= point.time_unix_nano,
            "{name}: a point starts ({}) after its time ({})",
            point.start_time_unix_nano,
            point.time_unix_nano
        );
        raw.entry((p.resource, p.scope.to_string(), p.attributes))
            .or_default()
            .push(RawPoint {
                start: point.start_time_unix_nano,
                time: point.time_unix_nano,
                value,
                temporality,
            });
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

//! An edge of the service graph (client workload → server workload on a port) and what it
//! counts; its metrics.

use std::borrow::Cow;
use std::sync::Arc;

use periscope_pipeline::model::{
    HistogramPoint, KeyValue, Metric, MetricData, NumberPoint, Temporality,
};
use periscope_pipeline::telemetry::names;

use crate::output;
use crate::series::{Series, SeriesTable};

/// One edge: who called whom on which port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct EdgeKey {
    pub(super) client: Arc<str>,
    pub(super) server: Arc<str>,
    pub(super) port: u16,
    /// One end was not observed on this host: it is named from its address (or what
    /// identity knows of it), `connection_type=virtual_node`.
    pub(super) virtual_node: bool,
}

/// An explicit-bucket histogram of seconds, recorded in nanoseconds.
#[derive(Clone, Debug, Default)]
pub(super) struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Hist {
    /// Adds a sample of `ns` nanoseconds; `bounds_ns` are the upper bounds (inclusive), as
    /// OpenTelemetry's explicit buckets have them.
    pub(super) fn record(&mut self, bounds_ns: &[u64], ns: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds_ns.len() + 1];
        }
        let i = bounds_ns.partition_point(|b| *b < ns);
        self.counts[i] += 1;
        if self.count == 0 || ns < self.min_ns {
            self.min_ns = ns;
        }
        self.max_ns = self.max_ns.max(ns);
        self.count += 1;
        self.sum_ns += u128::from(ns);
    }

    pub(super) fn count(&self) -> u64 {
        self.count
    }

    fn point(
        &self,
        attributes: Vec<KeyValue>,
        bounds: &[f64],
        start: u64,
        now: u64,
    ) -> HistogramPoint {
        let secs = |ns: u64| ns as f64 / 1e9;
        HistogramPoint {
            attributes,
            start_time_ns: start,
            time_ns: now,
            count: self.count,
            sum: Some(self.sum_ns as f64 / 1e9),
            min: (self.count > 0).then(|| secs(self.min_ns)),
            max: (self.count > 0).then(|| secs(self.max_ns)),
            explicit_bounds: bounds.to_vec(),
            bucket_counts: if self.counts.is_empty() {
                vec![0; bounds.len() + 1]
            } else {
                self.counts.clone()
            },
        }
    }
}

/// What an edge counts.
#[derive(Clone, Debug, Default)]
pub(super) struct EdgeStats {
    pub(super) requests: u64,
    pub(super) failed: u64,
    /// Bytes client → server (`transmit`) and server → client (`receive`).
    pub(super) bytes_to_server: u64,
    pub(super) bytes_to_client: u64,
    pub(super) retransmits: u64,
    pub(super) server: Hist,
    pub(super) client: Hist,
    pub(super) connect: Hist,
    pub(super) response: Hist,
}

fn attributes(series: Series<'_, EdgeKey>) -> Vec<KeyValue> {
    series.attributes(|k| {
        vec![
            KeyValue::new(names::ATTR_SERVICE_GRAPH_CLIENT, k.client.to_string()),
            KeyValue::new(names::ATTR_SERVICE_GRAPH_SERVER, k.server.to_string()),
            KeyValue::new(
                names::ATTR_SERVICE_GRAPH_CONNECTION_TYPE,
                if k.virtual_node { "virtual_node" } else { "" },
            ),
            KeyValue::new(names::ATTR_SERVER_PORT, i64::from(k.port)),
        ]
    })
}

/// The metrics of every edge in `table` (the overflow series folded into one point), at
/// `now`; the caller ends the collect.
pub(super) fn metrics(
    table: &SeriesTable<EdgeKey, EdgeStats>,
    bounds: &[f64],
    temporality: Temporality,
    now: u64,
) -> Vec<Metric> {
    let start = table.start_ns();
    let rows: Vec<(Vec<KeyValue>, &EdgeStats)> = table
        .iter()
        .map(|(s, v)| (attributes(s), v))
        .collect::<Vec<_>>();
    if rows.is_empty() {
        return Vec::new();
    }
    let sum = |name: &'static str,
               description: &'static str,
               unit: &'static str,
               value: &dyn Fn(&EdgeStats) -> Option<u64>| {
        let points: Vec<NumberPoint> = rows
            .iter()
            .filter_map(|(a, s)| {
                value(s).map(|v| NumberPoint {
                    attributes: a.clone(),
                    start_time_ns: start,
                    time_ns: now,
                    value: output::int(v),
                })
            })
            .collect();
        Metric {
            name: Cow::Borrowed(name),
            description: Cow::Borrowed(description),
            unit: Cow::Borrowed(unit),
            data: MetricData::Sum {
                points,
                temporality,
                monotonic: true,
            },
        }
    };
    let hist = |name: &'static str, description: &'static str, of: &dyn Fn(&EdgeStats) -> &Hist| {
        let points = rows
            .iter()
            .filter(|(_, s)| of(s).count() > 0 || temporality == Temporality::Cumulative)
            .map(|(a, s)| of(s).point(a.clone(), bounds, start, now))
            .collect();
        Metric {
            name: Cow::Borrowed(name),
            description: Cow::Borrowed(description),
            unit: Cow::Borrowed("s"),
            data: MetricData::Histogram {
                points,
                temporality,
            },
        }
    };
    let bytes = {
        let mut points = Vec::with_capacity(rows.len() * 2);
        for (a, s) in &rows {
            let point = |attributes: Vec<KeyValue>, v: u64| NumberPoint {
                attributes,
                start_time_ns: start,
                time_ns: now,
                value: output::int(v),
            };
            if a.iter().any(|kv| kv.key == names::ATTR_OVERFLOW) {
                // The overflow series carries no other attribute: one point, both ways.
                points.push(point(a.clone(), s.bytes_to_server + s.bytes_to_client));
                continue;
            }
            for (direction, v) in [
                ("transmit", s.bytes_to_server),
                ("receive", s.bytes_to_client),
            ] {
                let mut attributes = a.clone();
                attributes.push(KeyValue::new(names::ATTR_IO_DIRECTION, direction));
                points.push(point(attributes, v));
            }
        }
        Metric {
            name: Cow::Borrowed(names::SERVICE_GRAPH_BYTES),
            description: Cow::Borrowed(
                "Bytes between client and server (transmit: to the server, receive: to the client), as the kernel counted them on the socket.",
            ),
            unit: Cow::Borrowed("By"),
            data: MetricData::Sum {
                points,
                temporality,
                monotonic: true,
            },
        }
    };
    let mut out = vec![
        sum(
            names::SERVICE_GRAPH_REQUEST_TOTAL,
            "Requests from client to server: TCP connections (completed or failed).",
            "{request}",
            &|s| Some(s.requests),
        ),
        sum(
            names::SERVICE_GRAPH_REQUEST_FAILED_TOTAL,
            "Failed requests: connects that failed (refused, reset or timed out before established).",
            "{request}",
            &|s| Some(s.failed),
        ),
        hist(
            names::SERVICE_GRAPH_REQUEST_SERVER_SECONDS,
            "The connection's life as the server saw it (accept → close); the client's when the server is not observed.",
            &|s| &s.server,
        ),
        hist(
            names::SERVICE_GRAPH_REQUEST_CLIENT_SECONDS,
            "The connection's life as the client saw it (connect → close).",
            &|s| &s.client,
        ),
        hist(
            names::SERVICE_GRAPH_CONNECT_DURATION,
            "Connect latency (SYN sent → established, measured in the kernel on the client).",
            &|s| &s.connect,
        ),
        hist(
            names::SERVICE_GRAPH_RESPONSE_DURATION,
            "Response time on the client: a request sent → the first data of its answer received.",
            &|s| &s.response,
        ),
        bytes,
        sum(
            names::SERVICE_GRAPH_RETRANSMITS,
            "TCP segments retransmitted on the edge's connections.",
            "{segment}",
            &|s| Some(s.retransmits),
        ),
    ];
    out.retain(|m| !m.data.is_empty());
    out
}

//! Instruments a component adds to its self-telemetry beyond the four counters every component
//! has: gauges (devices attached now), counters with attributes (attach failures by reason),
//! explicit-bucket histograms (attach latency). They are exported with the
//! `periscope.component.*` counters, each point carrying the component's kind and id.
//!
//! Handles are cheap to clone and update with relaxed atomics, from any thread.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::{HistogramPoint, KeyValue, MetricData, Number, NumberPoint, Temporality};

/// A value that goes up and down (exported as a gauge).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn add(&self, d: i64) {
        self.0.fetch_add(d, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A monotonic count (exported as a cumulative sum).
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct HistogramState {
    bounds: Vec<f64>,
    /// One more than `bounds`: the last counts what is above every bound.
    counts: Vec<AtomicU64>,
    /// The sum, as f64 bits.
    sum: AtomicU64,
}

/// Explicit-bucket histogram (exported as a cumulative histogram).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramState>);

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        Histogram(Arc::new(HistogramState {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn record(&self, v: f64) {
        let s = &self.0;
        let i = s.bounds.partition_point(|b| *b < v);
        s.counts[i].fetch_add(1, Ordering::Relaxed);
        let mut old = s.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match s
                .sum
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(x) => old = x,
            }
        }
    }

    /// (count, sum, bucket counts).
    pub fn snapshot(&self) -> (u64, f64, Vec<u64>) {
        let counts: Vec<u64> = self
            .0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        (
            counts.iter().sum(),
            f64::from_bits(self.0.sum.load(Ordering::Relaxed)),
            counts,
        )
    }
}

#[derive(Clone, Debug)]
enum Handle {
    Gauge(Gauge),
    Counter(Counter),
    Histogram(Histogram),
}

/// What an instrument is: its metric and the attributes of its one series.
#[derive(Clone, Debug)]
pub struct InstrumentInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub unit: &'static str,
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, Debug)]
struct Instrument {
    info: InstrumentInfo,
    handle: Handle,
}

/// The extra instruments of one component.
#[derive(Debug, Default)]
pub struct Instruments {
    list: Mutex<Vec<Instrument>>,
}

impl Instruments {
    fn add(&self, info: InstrumentInfo, handle: Handle) {
        if let Ok(mut l) = self.list.lock() {
            l.push(Instrument { info, handle });
        }
    }

    /// A gauge: one series of metric `info.name` with `info.attributes`.
    pub fn gauge(&self, info: InstrumentInfo) -> Gauge {
        let g = Gauge::default();
        self.add(info, Handle::Gauge(g.clone()));
        g
    }

    /// A monotonic counter.
    pub fn counter(&self, info: InstrumentInfo) -> Counter {
        let c = Counter::default();
        self.add(info, Handle::Counter(c.clone()));
        c
    }

    /// A histogram with these upper bounds (strictly increasing).
    pub fn histogram(&self, info: InstrumentInfo, bounds: &[f64]) -> Histogram {
        let h = Histogram::new(bounds);
        self.add(info, Handle::Histogram(h.clone()));
        h
    }

    /// Each instrument's metric name, description, unit and current data point, with
    /// `component` attributes put before the instrument's own.
    pub(crate) fn points(
        &self,
        component: &[KeyValue],
        start_ns: u64,
        now_ns: u64,
    ) -> Vec<(InstrumentInfo, MetricData)> {
        let Ok(list) = self.list.lock() else {
            return Vec::new();
        };
        list.iter()
            .map(|i| {
                let mut attributes = component.to_vec();
                attributes.extend(i.info.attributes.iter().cloned());
                let number = |value| NumberPoint {
                    attributes: attributes.clone(),
                    start_time_ns: start_ns,
                    time_ns: now_ns,
                    value,
                };
                let data = match &i.handle {
                    Handle::Gauge(g) => MetricData::Gauge {
                        points: vec![number(Number::Int(g.get()))],
                    },
                    Handle::Counter(c) => MetricData::Sum {
                        points: vec![number(Number::Int(
                            i64::try_from(c.get()).unwrap_or(i64::MAX),
                        ))],
                        temporality: Temporality::Cumulative,
                        monotonic: true,
                    },
                    Handle::Histogram(h) => {
                        let (count, sum, bucket_counts) = h.snapshot();
                        MetricData::Histogram {
                            points: vec![HistogramPoint {
                                attributes: attributes.clone(),
                                start_time_ns: start_ns,
                                time_ns: now_ns,
                                count,
                                sum: Some(sum),
                                min: None,
                                max: None,
                                explicit_bounds: h.0.bounds.clone(),
                                bucket_counts,
                            }],
                            temporality: Temporality::Cumulative,
                        }
                    }
                };
                (i.info.clone(), data)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &'static str) -> InstrumentInfo {
        InstrumentInfo {
            name,
            description: "d",
            unit: "1",
            attributes: vec![KeyValue::new("reason", "gone")],
        }
    }

    #[test]
    fn each_kind_exports_its_value() {
        let i = Instruments::default();
        let g = i.gauge(info("g"));
        let c = i.counter(info("c"));
        let h = i.histogram(info("h"), &[0.01, 0.1]);
        g.add(3);
        g.add(-1);
        c.add(5);
        for v in [0.005, 0.05, 0.05, 1.0] {
            h.record(v);
        }
        let pts = i.points(&[KeyValue::new("periscope.component.id", "tcx")], 1, 2);
        assert_eq!(pts.len(), 3);
        match &pts[0].1 {
            MetricData::Gauge { points } => {
                assert_eq!(points[0].value, Number::Int(2));
                assert_eq!(points[0].attributes.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        match &pts[1].1 {
            MetricData::Sum { points, .. } => assert_eq!(points[0].value, Number::Int(5)),
            other => panic!("{other:?}"),
        }
        match &pts[2].1 {
            MetricData::Histogram { points, .. } => {
                assert_eq!(points[0].count, 4);
                assert_eq!(points[0].bucket_counts, vec![1, 2, 1]);
                assert!((points[0].sum.unwrap_or_default() - 1.105).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
    }
}

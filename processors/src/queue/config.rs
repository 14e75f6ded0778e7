//! The `queue` processor's options.

use std::num::NonZeroUsize;

use serde::Deserialize;

use periscope_pipeline::component::{ComponentConfig, Invalid};
use periscope_pipeline::config::{Boundaries, PositiveDuration};
use periscope_pipeline::model::Temporality;

use crate::latency::validate_histograms;
use crate::latency::HistogramKind;

/// Turns the `qdisc` receiver's queue records into per-device series (namespace, interface,
/// `network.io.direction=transmit`): `periscope.network.queue.delay` (how long each packet
/// waited in the device's transmit queue, seconds; explicit and/or exponential histograms as
/// the `latency` processor makes them), `periscope.network.queue.backlog` and
/// `periscope.network.queue.length` (the most bytes and packets in the queue at an enqueue
/// since the last point) and `periscope.network.queue.drops` (by drop reason), every
/// `interval`. Consumes queue events and passes the rest on: put `burst` (which reads them
/// for its spans) before it and `flow` after it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// How often the metrics are emitted (and once more at stop); default 10s.
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// `cumulative` (default) or `delta` for the delay histogram and the drops (the backlog
    /// gauges always cover the time since the last point).
    #[serde(default)]
    pub temporality: Temporality,
    /// Which histogram kinds to emit: `explicit` (buckets at `boundaries`) and/or
    /// `exponential` (OpenTelemetry base-2, `max_size`/`max_scale`). Default `[explicit]`.
    /// With both, the exponential histograms come in their own scope
    /// (`periscope/<id>/exponential`).
    #[serde(default = "default_histograms")]
    pub histograms: Vec<HistogramKind>,
    /// Upper bounds of the explicit buckets, in seconds, strictly increasing. Default: 10µs,
    /// 50µs, 100µs, 250µs, 500µs, 1ms, 2.5ms, 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms, 1s.
    #[serde(default = "default_boundaries")]
    pub boundaries: Boundaries,
    /// Most buckets of an exponential histogram; default 160.
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    /// Highest scale of an exponential histogram (-10 to 20); default 20.
    #[serde(default = "default_max_scale")]
    pub max_scale: i32,
    /// Precision of the hdrhistogram each series records into (1 to 5 decimal digits): the
    /// explicit buckets are exact to within 10^-N relative. Default 2 (20–37 KB per series).
    #[serde(default = "default_significant_figures")]
    pub significant_figures: u8,
    /// Most series per metric; further series go to one series marked
    /// `otel.metric.overflow=true`. Default 1000.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: NonZeroUsize,
}

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}
fn default_histograms() -> Vec<HistogramKind> {
    vec![HistogramKind::Explicit]
}
/// Default explicit bucket bounds, seconds.
pub const DEFAULT_BOUNDARIES: [f64; 15] = [
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
];
fn default_boundaries() -> Boundaries {
    Boundaries::new(DEFAULT_BOUNDARIES.to_vec()).expect("the default bounds increase")
}
fn default_max_size() -> u32 {
    160
}
fn default_max_scale() -> i32 {
    20
}
fn default_significant_figures() -> u8 {
    2
}
fn default_cardinality_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(1000).unwrap() }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            interval: default_interval(),
            temporality: Temporality::Cumulative,
            histograms: default_histograms(),
            boundaries: default_boundaries(),
            max_size: default_max_size(),
            max_scale: default_max_scale(),
            significant_figures: default_significant_figures(),
            cardinality_limit: default_cardinality_limit(),
        }
    }
}

impl ComponentConfig for QueueConfig {
    const TYPE: &'static str = "queue";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut p = Vec::new();
        validate_histograms(
            &self.histograms,
            self.max_size,
            self.max_scale,
            self.significant_figures,
            &mut p,
        );
        Invalid::all(p)
    }
}

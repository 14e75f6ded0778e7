//! The `burst` processor's options.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use periscope_pipeline::component::{ComponentConfig, Invalid};
use periscope_pipeline::config::{Boundaries, ConfigDuration, PositiveDuration};
use periscope_pipeline::model::Temporality;

/// Turns the kernel's burst reports into one burst per device, direction and time span:
/// `periscope.burst.count`, `periscope.burst.duration` (histogram, seconds),
/// `periscope.burst.packets` and `periscope.burst.peak_rate` (highest packets/s per device in
/// the interval) every `interval`, and a `network.burst` span per burst with its top flows
/// (needs packet records: `events: all` or `sample` on the receiver); with the `qdisc`
/// receiver in the pipeline, a transmit burst's span also carries the device's queue during it
/// (most delay, most backlog, drops). Passes every event on unchanged.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BurstConfig {
    /// How often the metrics are emitted (and once more at stop); default 10s.
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// `cumulative` (default) or `delta` for the count, packets and duration metrics.
    #[serde(default)]
    pub temporality: Temporality,
    /// How long after its last report a burst waits for other CPUs' reports of it before it
    /// is final (recorded, and its span sent); default 50ms.
    #[serde(default = "default_merge_delay")]
    pub merge_delay: ConfigDuration,
    /// Upper bounds of the duration histogram's buckets, in seconds, strictly increasing.
    /// Default: 100µs, 250µs, 500µs, 1ms, 2.5ms, 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms,
    /// 1s.
    #[serde(default = "default_boundaries")]
    pub boundaries: Boundaries,
    /// Send a `network.burst` span per burst (traces pipelines); default true.
    #[serde(default = "default_true")]
    pub spans: bool,
    /// How many flows (by packets) a burst's span lists; default 5.
    #[serde(default = "default_top_flows")]
    pub top_flows: usize,
    /// Most devices (device and direction) tracked at once; reports and packets of further
    /// devices are counted in `periscope.burst.untracked` (`reason=device`). Default 1024.
    #[serde(default = "default_max_devices")]
    pub max_devices: NonZeroUsize,
    /// Most flows counted per burst; packets of further flows are counted in
    /// `periscope.burst.untracked` (`reason=flow`). Default 1024.
    #[serde(default = "default_max_flows")]
    pub max_flows: NonZeroUsize,
    /// Most series per metric; further series go to one series marked
    /// `otel.metric.overflow=true`. Default 1000.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: NonZeroUsize,
}

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}
fn default_merge_delay() -> ConfigDuration {
    ConfigDuration::from_millis(50)
}
/// Default duration bucket bounds, seconds.
pub const DEFAULT_BOUNDARIES: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
fn default_boundaries() -> Boundaries {
    Boundaries::new(DEFAULT_BOUNDARIES.to_vec()).expect("the default bounds increase")
}
fn default_true() -> bool {
    true
}
fn default_top_flows() -> usize {
    5
}
fn default_max_devices() -> NonZeroUsize {
    const { NonZeroUsize::new(1024).unwrap() }
}
fn default_max_flows() -> NonZeroUsize {
    const { NonZeroUsize::new(1024).unwrap() }
}
fn default_cardinality_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(1000).unwrap() }
}

impl Default for BurstConfig {
    fn default() -> Self {
        BurstConfig {
            interval: default_interval(),
            temporality: Temporality::Cumulative,
            merge_delay: default_merge_delay(),
            boundaries: default_boundaries(),
            spans: true,
            top_flows: default_top_flows(),
            max_devices: default_max_devices(),
            max_flows: default_max_flows(),
            cardinality_limit: default_cardinality_limit(),
        }
    }
}

impl ComponentConfig for BurstConfig {
    const TYPE: &'static str = "burst";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        if self.merge_delay.0 > Duration::from_secs(10) {
            return Err(vec![Invalid::new(
                "merge_delay",
                format!("{}: must be at most 10s (e.g. 50ms)", self.merge_delay),
            )]);
        }
        Ok(())
    }
}

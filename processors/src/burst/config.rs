//! The `burst` processor's options.

use std::time::Duration;

use serde::Deserialize;

use periscope_pipeline::component::{ComponentConfig, Invalid};
use periscope_pipeline::config::ConfigDuration;
use periscope_pipeline::model::Temporality;

/// Turns the kernel's burst reports into one burst per device, direction and time span:
/// `periscope.burst.count`, `periscope.burst.duration` (histogram, seconds),
/// `periscope.burst.packets` and `periscope.burst.peak_rate` (highest packets/s per device in
/// the interval) every `interval`, and a `network.burst` span per burst with its top flows
/// (needs packet records: `events: all` or `sample` on the receiver). Passes every event on
/// unchanged.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BurstConfig {
    /// How often the metrics are emitted (and once more at stop); default 10s.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
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
    pub boundaries: Vec<f64>,
    /// Send a `network.burst` span per burst (traces pipelines); default true.
    #[serde(default = "default_true")]
    pub spans: bool,
    /// How many flows (by packets) a burst's span lists; default 5.
    #[serde(default = "default_top_flows")]
    pub top_flows: usize,
    /// Most devices (device and direction) tracked at once; reports and packets of further
    /// devices are counted in `periscope.burst.untracked` (`reason=device`). Default 1024.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// Most flows counted per burst; packets of further flows are counted in
    /// `periscope.burst.untracked` (`reason=flow`). Default 1024.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// Most series per metric; further series go to one series marked
    /// `otel.metric.overflow=true`. Default 1000.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: usize,
}

fn default_interval() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}
fn default_merge_delay() -> ConfigDuration {
    ConfigDuration::from_millis(50)
}
/// Default duration bucket bounds, seconds.
pub const DEFAULT_BOUNDARIES: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
fn default_boundaries() -> Vec<f64> {
    DEFAULT_BOUNDARIES.to_vec()
}
fn default_true() -> bool {
    true
}
fn default_top_flows() -> usize {
    5
}
fn default_max_devices() -> usize {
    1024
}
fn default_max_flows() -> usize {
    1024
}
fn default_cardinality_limit() -> usize {
    1000
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
        let mut p = Vec::new();
        if self.interval.0.is_zero() {
            p.push(Invalid::new(
                "interval",
                "must be longer than zero, e.g. 10s",
            ));
        }
        if self.merge_delay.0 > Duration::from_secs(10) {
            p.push(Invalid::new(
                "merge_delay",
                format!("{}: must be at most 10s (e.g. 50ms)", self.merge_delay),
            ));
        }
        for (i, b) in self.boundaries.iter().enumerate() {
            if !b.is_finite() || *b < 0.0 {
                p.push(Invalid::new(
                    format!("boundaries.{i}"),
                    format!("`{b}` is not a duration in seconds (finite, ≥ 0)"),
                ));
            } else if i > 0 && *b <= self.boundaries[i - 1] {
                p.push(Invalid::new(
                    format!("boundaries.{i}"),
                    format!(
                        "`{b}` does not increase (after `{}`): bounds must be strictly increasing",
                        self.boundaries[i - 1]
                    ),
                ));
            }
        }
        for (key, v) in [
            ("max_devices", self.max_devices),
            ("max_flows", self.max_flows),
            ("cardinality_limit", self.cardinality_limit),
        ] {
            if v == 0 {
                p.push(Invalid::new(key, "must be at least 1"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }
}

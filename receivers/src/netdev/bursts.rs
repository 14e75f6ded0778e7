//! The `bursts` option of the `xdp` and `tcx` receivers: inline microburst detection in the
//! packet programs (see `ebpf/packet.bpf.c`), and what it resolves to for the loader.

use std::time::Duration;

use serde::Deserialize;

use periscope_pipeline::component::Invalid;
use periscope_pipeline::config::ConfigDuration;

use crate::shared::ebpf::records::{PERISCOPE_BURST_ADAPTIVE, PERISCOPE_BURST_FIXED};
use crate::shared::ebpf::BurstConfig;

/// Most buckets in a window (the program's ring of buckets).
pub const MAX_BURST_BUCKETS: u32 = 32;

/// How a burst's threshold is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BurstMode {
    /// `threshold_pps`/`threshold_bps` as they are.
    #[default]
    Fixed,
    /// `k` × a slowly moving baseline of the device's rate (time constant `baseline`), with
    /// `threshold_pps`/`threshold_bps` as the floor.
    Adaptive,
}

/// Microburst detection in the kernel, per device and direction, on each CPU: a sliding window
/// of short buckets counting packets and bytes; when the window's rate reaches the threshold a
/// burst starts (reported at once), and when it falls below `end_ratio` × the threshold it ends
/// (reported with start, end, packets, bytes and peak rate). Off by default.
#[derive(Clone, Debug, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BurstsConfig {
    /// Detect bursts (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Width of one bucket of the window; default 100us (at least 1us).
    #[serde(default = "default_bucket")]
    pub bucket: ConfigDuration,
    /// Length of the sliding window: a multiple of `bucket`, 2 to 32 buckets; default 1ms.
    #[serde(default = "default_window")]
    pub window: ConfigDuration,
    /// A burst starts when the rate over the window reaches this many packets per second;
    /// default 20000; 0 leaves packets out (then `threshold_bps` must be set).
    #[serde(default = "default_threshold_pps")]
    pub threshold_pps: u64,
    /// A burst starts when the rate over the window reaches this many bits per second
    /// (L2 frame length); default 0 (not used).
    #[serde(default)]
    pub threshold_bps: u64,
    /// `fixed` (default): the thresholds as given; `adaptive`: `k` × a moving baseline of the
    /// window's rate, with the thresholds as the floor.
    #[serde(default)]
    pub mode: BurstMode,
    /// With `mode: adaptive`: how many times the baseline rate starts a burst; default 4.
    #[serde(default = "default_k")]
    pub k: f64,
    /// With `mode: adaptive`: the baseline's time constant (an exponentially weighted moving
    /// average, frozen during bursts); default 1s.
    #[serde(default = "default_baseline")]
    pub baseline: ConfigDuration,
    /// Hysteresis: a burst ends when the window's rate falls below this fraction of the
    /// threshold that started it (more than 0, at most 1); default 0.5.
    #[serde(default = "default_end_ratio")]
    pub end_ratio: f64,
}

fn default_bucket() -> ConfigDuration {
    ConfigDuration(Duration::from_micros(100))
}
fn default_window() -> ConfigDuration {
    ConfigDuration::from_millis(1)
}
fn default_threshold_pps() -> u64 {
    20_000
}
fn default_k() -> f64 {
    4.0
}
fn default_baseline() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}
fn default_end_ratio() -> f64 {
    0.5
}

impl Default for BurstsConfig {
    fn default() -> Self {
        BurstsConfig {
            enabled: false,
            bucket: default_bucket(),
            window: default_window(),
            threshold_pps: default_threshold_pps(),
            threshold_bps: 0,
            mode: BurstMode::Fixed,
            k: default_k(),
            baseline: default_baseline(),
            end_ratio: default_end_ratio(),
        }
    }
}

impl BurstsConfig {
    /// Pure checks; paths are under `bursts.`.
    pub fn validate(&self, errors: &mut Vec<Invalid>) {
        let bucket = self.bucket.0.as_nanos();
        let window = self.window.0.as_nanos();
        if bucket < 1_000 {
            errors.push(Invalid::new(
                "bursts.bucket",
                format!("{}: must be at least 1us (e.g. 100us)", self.bucket),
            ));
        } else if !window.is_multiple_of(bucket)
            || !(2..=u128::from(MAX_BURST_BUCKETS)).contains(&(window / bucket))
        {
            errors.push(Invalid::new(
                "bursts.window",
                format!(
                    "{} with bucket {}: must be 2 to {MAX_BURST_BUCKETS} buckets exactly \
                     (e.g. window 1ms with bucket 100us)",
                    self.window, self.bucket
                ),
            ));
        } else if window > u128::from(u32::MAX) {
            errors.push(Invalid::new(
                "bursts.window",
                format!("{}: must be at most 4s", self.window),
            ));
        }
        if self.threshold_pps == 0 && self.threshold_bps == 0 {
            errors.push(Invalid::new(
                "bursts.threshold_pps",
                "threshold_pps and threshold_bps are both 0: set one (e.g. threshold_pps: 20000)",
            ));
        } else if self.threshold_pps > 0 && self.packets_per_window() < 2 {
            errors.push(Invalid::new(
                "bursts.threshold_pps",
                format!(
                    "{} packets/s is under 2 packets per {} window: raise it or lengthen the \
                     window",
                    self.threshold_pps, self.window
                ),
            ));
        }
        if self.mode == BurstMode::Adaptive && (!self.k.is_finite() || self.k < 1.0) {
            errors.push(Invalid::new(
                "bursts.k",
                format!("{}: must be a number of at least 1 (e.g. 4)", self.k),
            ));
        }
        if self.mode == BurstMode::Adaptive && self.baseline.0 < self.window.0 {
            errors.push(Invalid::new(
                "bursts.baseline",
                format!(
                    "{}: must be at least the window ({}), e.g. 1s",
                    self.baseline, self.window
                ),
            ));
        }
        if !(self.end_ratio > 0.0 && self.end_ratio <= 1.0) {
            errors.push(Invalid::new(
                "bursts.end_ratio",
                format!(
                    "{}: must be more than 0 and at most 1 (e.g. 0.5)",
                    self.end_ratio
                ),
            ));
        }
    }

    fn packets_per_window(&self) -> u64 {
        (u128::from(self.threshold_pps) * self.window.0.as_nanos()).div_ceil(1_000_000_000) as u64
    }

    /// The program's `periscope_burst_config`, or `None` when detection is off.
    pub fn resolve(&self) -> Option<BurstConfig> {
        if !self.enabled {
            return None;
        }
        let bucket_ns = self.bucket.0.as_nanos().max(1) as u64;
        let buckets = (self.window.0.as_nanos() as u64 / bucket_ns) as u32;
        let bytes_per_s = self.threshold_bps / 8;
        let thr_bytes =
            (u128::from(bytes_per_s) * self.window.0.as_nanos()).div_ceil(1_000_000_000) as u64;
        let baseline_buckets = (self.baseline.0.as_nanos() as u64 / bucket_ns).max(1);
        Some(BurstConfig {
            bucket_ns,
            buckets,
            mode: match self.mode {
                BurstMode::Fixed => PERISCOPE_BURST_FIXED,
                BurstMode::Adaptive => PERISCOPE_BURST_ADAPTIVE,
            },
            thr_bytes,
            thr_packets: u32::try_from(self.packets_per_window()).unwrap_or(u32::MAX),
            k_x256: (self.k * 256.0).clamp(256.0, f64::from(u32::MAX)) as u32,
            low_permille: (self.end_ratio * 1000.0).clamp(1.0, 1000.0) as u32,
            ewma_shift: (63 - baseline_buckets.leading_zeros()).min(30),
            _pad: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_thresholds_per_window() {
        let c = BurstsConfig {
            enabled: true,
            threshold_bps: 80_000_000,
            ..BurstsConfig::default()
        };
        let mut errors = Vec::new();
        c.validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let r = c.resolve().unwrap();
        assert_eq!((r.bucket_ns, r.buckets), (100_000, 10));
        // 20000 packets/s over 1 ms; 10 MB/s over 1 ms.
        assert_eq!((r.thr_packets, r.thr_bytes), (20, 10_000));
        assert_eq!(
            (r.low_permille, r.k_x256, r.mode),
            (500, 1024, PERISCOPE_BURST_FIXED)
        );
        // 1 s of 100 µs buckets: 2^13 = 8192 ≤ 10000.
        assert_eq!(r.ewma_shift, 13);
        assert!(BurstsConfig::default().resolve().is_none());
    }

    #[test]
    fn rejects_bad_windows_and_thresholds() {
        let c = BurstsConfig {
            enabled: true,
            window: ConfigDuration(Duration::from_micros(250)),
            threshold_pps: 0,
            mode: BurstMode::Adaptive,
            k: 0.5,
            end_ratio: 0.0,
            ..BurstsConfig::default()
        };
        let mut errors = Vec::new();
        c.validate(&mut errors);
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bursts.window",
                "bursts.threshold_pps",
                "bursts.k",
                "bursts.end_ratio"
            ],
            "{errors:?}"
        );
        let low = BurstsConfig {
            threshold_pps: 1000,
            ..BurstsConfig::default()
        };
        let mut errors = Vec::new();
        low.validate(&mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}

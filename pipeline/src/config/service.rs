//! The `service` section: pipelines, queues between stages, and the agent's own telemetry.

use std::num::NonZeroUsize;

use serde::Deserialize;

use super::types::PositiveDuration;
use crate::edge::WhenFull;

/// One pipeline as written.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineSpec {
    /// Receiver ids feeding this pipeline.
    #[serde(default)]
    pub receivers: Vec<String>,
    /// Processor ids, applied in order. Each pipeline gets its own instances.
    #[serde(default)]
    pub processors: Vec<String>,
    /// Exporter ids receiving this pipeline's telemetry.
    #[serde(default)]
    pub exporters: Vec<String>,
    /// The queues in front of and behind the pipeline.
    #[serde(default)]
    pub edges: EdgesConfig,
}

/// The queues of a pipeline.
#[derive(Debug, Clone, Copy, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgesConfig {
    /// The queue from the receivers into the pipeline.
    #[serde(default)]
    pub input: EdgeConfig,
    /// The queue from the pipeline into each exporter.
    #[serde(default)]
    pub output: EdgeConfig,
}

/// One bounded queue between stages.
#[derive(Debug, Clone, Copy, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// How many batches the queue holds.
    #[serde(default = "default_capacity")]
    pub capacity: NonZeroUsize,
    /// What the sender does when the queue is full: `block` or `drop_newest`.
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_capacity() -> NonZeroUsize {
    const { NonZeroUsize::new(64).unwrap() }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            capacity: default_capacity(),
            when_full: WhenFull::Block,
        }
    }
}

/// `service.telemetry`: the agent's own logs and metrics.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub logs: LogsConfig,
    #[serde(default)]
    pub metrics: SelfMetricsConfig,
}

impl TelemetryConfig {
    /// Pure checks: (relative key path, message).
    pub(super) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
        let level = self.logs.level.trim();
        // A bare word must be a level; directive lists (`periscope=debug,info`) are checked when
        // the logger starts.
        if !level.contains('=') && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            out.push((
                "logs.level",
                format!(
                    "unknown log level `{level}`; {}",
                    super::error::suggestion(level, LEVELS, "levels")
                ),
            ));
        }
        out
    }
}

/// `service.telemetry.logs`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Log level or `tracing` filter (`info`, `debug`, `periscope=debug`). `RUST_LOG` wins.
    #[serde(default = "default_level")]
    pub level: String,
}

fn default_level() -> String {
    "info".into()
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            level: default_level(),
        }
    }
}

/// `service.telemetry.metrics`: the `periscope.component.*` counters.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfMetricsConfig {
    /// Emit the agent's own counters at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often they are emitted; a last snapshot is always sent at shutdown.
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// Exporters that receive them; default: every exporter of a metrics pipeline.
    #[serde(default)]
    pub exporters: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}

impl Default for SelfMetricsConfig {
    fn default() -> Self {
        SelfMetricsConfig {
            enabled: true,
            interval: default_interval(),
            exporters: None,
        }
    }
}

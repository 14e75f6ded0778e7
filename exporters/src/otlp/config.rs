//! The `otlp` exporter's options.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

use periscope_pipeline::component::{ComponentConfig, Invalid};
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};

/// Sends metrics and traces to an OpenTelemetry backend (a Collector, Jaeger, Prometheus with
/// OTLP, a vendor) over OTLP/gRPC or OTLP/HTTP (protobuf or JSON bodies). Batches wait in a
/// bounded sending queue, several are merged into one request, and failed requests are retried
/// with exponential backoff where the OTLP specification says a retry can help. Every item
/// that cannot be delivered is counted as dropped.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Where to send. gRPC: `http://host:4317` (`https://` for TLS). HTTP: the base URL,
    /// `http://host:4318`; `/v1/metrics` and `/v1/traces` are appended unless the URL already
    /// has a path other than `/`, in which case it is used as it is for both signals.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// `grpc`, `http/protobuf` or `http/json`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Extra headers on every request (gRPC metadata for `grpc`), e.g. an auth token:
    /// `{authorization: "Bearer ..."}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS settings; TLS is used when the endpoint starts with `https://`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// How long one request may take (connecting included) before it fails and is retried.
    /// Also how long the exporter waits at shutdown for its queue to drain (at least 1s).
    #[serde(default = "default_timeout")]
    pub timeout: PositiveDuration,
    /// The bounded queue between the pipeline and the sender.
    #[serde(default)]
    pub sending_queue: QueueConfig,
    /// How several batches are merged into one request.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Retries of failed requests.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

fn default_endpoint() -> String {
    "http://127.0.0.1:4317".into()
}

fn default_timeout() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: default_endpoint(),
            protocol: Protocol::default(),
            headers: BTreeMap::new(),
            tls: TlsConfig::default(),
            compression: Compression::default(),
            timeout: default_timeout(),
            sending_queue: QueueConfig::default(),
            batch: BatchConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

/// The OTLP transport.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
pub enum Protocol {
    /// OTLP/gRPC (port 4317 by convention).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP/HTTP with JSON bodies (port 4318 by convention).
    #[serde(rename = "http/json")]
    HttpJson,
}

/// Request body compression.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip, which every OTLP receiver must accept.
    #[default]
    Gzip,
    /// No compression.
    None,
}

/// TLS for `https://` endpoints (rustls).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The client certificate (PEM) for mutual TLS; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM); needs `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `true`: plaintext even for an `https://` endpoint (no TLS at all). Plain `http://`
    /// endpoints never use TLS.
    #[serde(default)]
    pub insecure: bool,
}

/// The sending queue.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// How many batches (as they come from the pipeline) may wait; a batch that finds the
    /// queue full is dropped and counted. Bounds the memory the exporter uses while the
    /// backend is slow or down.
    #[serde(default = "default_queue_size")]
    pub queue_size: NonZeroUsize,
}

fn default_queue_size() -> NonZeroUsize {
    const { NonZeroUsize::new(1000).unwrap() }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: default_queue_size(),
        }
    }
}

/// Batching: batches from the queue are merged into one request until it holds `max_size`
/// items or `timeout` has passed since the first.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Items (data points or spans) after which a request is sent without waiting longer.
    /// A single pipeline batch larger than this is sent as it is, not split.
    #[serde(default = "default_batch_size")]
    pub max_size: NonZeroUsize,
    /// How long to wait for more batches after the first one. `0s` sends each pipeline batch
    /// (and whatever is already queued) at once.
    #[serde(default = "default_batch_timeout")]
    pub timeout: ConfigDuration,
}

fn default_batch_size() -> NonZeroUsize {
    const { NonZeroUsize::new(8192).unwrap() }
}

fn default_batch_timeout() -> ConfigDuration {
    ConfigDuration::from_millis(200)
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_size: default_batch_size(),
            timeout: default_batch_timeout(),
        }
    }
}

/// Retries with exponential backoff (×1.5 per attempt, ±50% jitter), as the OpenTelemetry
/// Collector does. Retried: gRPC `UNAVAILABLE`, `CANCELLED`, `DEADLINE_EXCEEDED`, `ABORTED`,
/// `OUT_OF_RANGE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED` when the server sent `RetryInfo`;
/// HTTP 429, 502, 503 and 504 (honouring `Retry-After`), and failures to connect. Nothing
/// else is retried.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// `false`: a failed request is dropped (and counted) at once.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The wait before the first retry.
    #[serde(default = "default_initial_interval")]
    pub initial_interval: ConfigDuration,
    /// The longest wait between two retries (a server's `Retry-After`/`RetryInfo` may ask for
    /// more and is honoured).
    #[serde(default = "default_max_interval")]
    pub max_interval: ConfigDuration,
    /// After this long since the first attempt a request is given up on and its items are
    /// counted as dropped. `0s`: retry until it succeeds or the exporter shuts down.
    #[serde(default = "default_max_elapsed")]
    pub max_elapsed_time: ConfigDuration,
}

fn yes() -> bool {
    true
}
fn default_initial_interval() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}
fn default_max_interval() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}
fn default_max_elapsed() -> ConfigDuration {
    ConfigDuration::from_secs(300)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: default_initial_interval(),
            max_interval: default_max_interval(),
            max_elapsed_time: default_max_elapsed(),
        }
    }
}

impl ComponentConfig for OtlpConfig {
    const TYPE: &'static str = "otlp";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut errors = Vec::new();
        let scheme_ok =
            self.endpoint.starts_with("http://") || self.endpoint.starts_with("https://");
        let host_ok = self
            .endpoint
            .split_once("://")
            .map(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
            .unwrap_or(false);
        if !scheme_ok || !host_ok {
            errors.push(Invalid::new(
                "endpoint",
                format!(
                    "`{}` is not a URL with a host; expected e.g. http://127.0.0.1:4317 \
                     (grpc) or http://127.0.0.1:4318 (http/protobuf, http/json)",
                    self.endpoint
                ),
            ));
        }
        for (k, v) in &self.headers {
            let name_ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !name_ok {
                errors.push(Invalid::new(
                    format!("headers.{k}"),
                    "a header name may hold only letters, digits, `-`, `_` and `.`",
                ));
            }
            if v.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f) {
                errors.push(Invalid::new(
                    format!("headers.{k}"),
                    "a header value must not contain control characters",
                ));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            errors.push(Invalid::new(
                "tls",
                "`cert_file` and `key_file` go together: give both for a client certificate, \
                 or neither",
            ));
        }
        let r = &self.retry_on_failure;
        if r.enabled {
            if r.initial_interval.0.is_zero() {
                errors.push(Invalid::new(
                    "retry_on_failure.initial_interval",
                    "must be more than 0s, e.g. 5s",
                ));
            }
            if r.max_interval < r.initial_interval {
                errors.push(Invalid::new(
                    "retry_on_failure.max_interval",
                    format!(
                        "{} is less than initial_interval ({})",
                        r.max_interval, r.initial_interval
                    ),
                ));
            }
        }
        Invalid::all(errors)
    }
}

impl OtlpConfig {
    /// Whether requests go over TLS.
    pub fn uses_tls(&self) -> bool {
        self.endpoint.starts_with("https://") && !self.tls.insecure
    }
}

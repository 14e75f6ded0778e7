//! Exporters: where telemetry goes.
//!
//! - [`file`]: one OTLP/JSON request per line, as the OpenTelemetry Collector's file exporter
//!   writes it;
//! - [`debug`]: a human-readable summary on stderr or stdout, like the Collector's debug
//!   exporter;
//! - [`otlp`]: OTLP over gRPC, HTTP/protobuf or HTTP/JSON to any OpenTelemetry backend, with a
//!   bounded sending queue, batching and retries;
//! - [`prometheus`]: a `/metrics` endpoint for Prometheus to scrape.
//!
//! [`otlp_proto`] maps periscope's telemetry model onto the OTLP protobuf messages (used by
//! `file` and by `otlp` for every protocol) and [`otlp_json`] encodes those as OTLP/JSON (used
//! by `file` and by `otlp` over HTTP/JSON).

pub mod debug;
pub mod file;
pub mod otlp;
pub mod otlp_json;
pub mod otlp_proto;
pub mod prometheus;

pub use debug::DebugConfig;
pub use file::FileConfig;
pub use otlp::OtlpConfig;
pub use prometheus::PrometheusConfig;

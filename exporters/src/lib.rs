//! Exporters: where telemetry goes.
//!
//! - [`file`]: one OTLP/JSON request per line, as the OpenTelemetry Collector's file exporter
//!   writes it;
//! - [`debug`]: a human-readable summary on stderr or stdout, like the Collector's debug
//!   exporter;
//! - [`otlp`]: OTLP over gRPC, HTTP/protobuf or HTTP/JSON to any OpenTelemetry backend, with a
//!   bounded sending queue, batching and retries;
//! - [`prometheus`]: a `/metrics` endpoint for Prometheus to scrape;
//! - [`observe`]: recent flows, connections, DNS lookups, drops and bursts on a unix socket for
//!   `periscope observe` and `periscope top`.
//!
//! [`otlp_proto`] maps periscope's telemetry model onto the OTLP protobuf messages (used by
//! `file` and by `otlp` for every protocol) and [`otlp_json`] encodes those as OTLP/JSON (used
//! by `file` and by `otlp` over HTTP/JSON).

pub mod debug;
pub mod file;
pub mod observe;
pub mod otlp;
pub mod otlp_json;
pub mod otlp_proto;
pub mod prometheus;

pub use debug::DebugConfig;
pub use file::FileConfig;
pub use observe::ObserveConfig;
pub use otlp::OtlpConfig;
pub use prometheus::PrometheusConfig;

//! Exporters: where telemetry goes.

pub mod debug;
pub mod file;
pub mod otlp_json;

//! Processors: enrich events and turn them into telemetry.

pub mod flow;

//! Processors: enrich events and turn them into telemetry.

pub mod connections;
pub mod dns;
pub mod flow;
pub mod identity;
pub mod latency;

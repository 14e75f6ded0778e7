//! Processors: enrich events and turn them into telemetry.

pub mod burst;
pub mod connections;
pub mod device_names;
pub mod dns;
pub mod flow;
pub mod gone;
pub mod identity;
pub mod latency;
mod output;
pub mod queue;
pub mod series;
pub mod servicegraph;

#[cfg(test)]
mod testing;

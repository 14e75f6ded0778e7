//! The data that flows through periscope: events in, telemetry out.

mod event;
mod telemetry;

pub use event::*;
pub use telemetry::*;

//! periscope's core: the event and telemetry model, component traits and registry, the YAML
//! config and its validation, the edges between components, the topology that runs pipelines, and self-telemetry.

pub mod component;
pub mod config;
pub mod devices;
pub mod dns;
pub mod edge;
pub mod model;
pub mod retained;
mod socket_join;
pub mod sockets;
pub mod telemetry;
pub mod topology;
pub mod workload;

pub use devices::{DeviceInfo, DeviceTable, NamespaceInfo, NamespaceTable};
pub use dns::{DnsTable, Resolution};
pub use sockets::{DeviceTotals, SocketOwner, SocketStats, SocketTable};

//! Every metric and attribute name periscope emits, in one place. `docs/metrics.md` documents
//! each; a test there keeps the two in step.

/// Items a component received (events, data points or spans).
pub const COMPONENT_RECEIVED: &str = "periscope.component.received";
/// Items a component handed downstream.
pub const COMPONENT_SENT: &str = "periscope.component.sent";
/// Items a component or its outgoing edge had to drop.
pub const COMPONENT_DROPPED: &str = "periscope.component.dropped";
/// Errors a component ran into.
pub const COMPONENT_ERRORS: &str = "periscope.component.errors";

/// Packets seen (flow processor).
pub const NETWORK_PACKETS: &str = "periscope.network.packets";
/// Bytes seen, as L2 frame length at the hook (flow processor).
pub const NETWORK_BYTES: &str = "periscope.network.bytes";

/// `receiver`, `processor` or `exporter`.
pub const ATTR_COMPONENT_KIND: &str = "periscope.component.kind";
/// The component id (`pcap/uplink`).
pub const ATTR_COMPONENT_ID: &str = "periscope.component.id";
/// The pipeline id, for processors (one instance per pipeline).
pub const ATTR_PIPELINE_ID: &str = "periscope.pipeline.id";
/// Inode of the network namespace.
pub const ATTR_NETNS_INODE: &str = "periscope.netns.inode";
/// Interface name.
pub const ATTR_INTERFACE_NAME: &str = "network.interface.name";
/// `receive` or `transmit`.
pub const ATTR_IO_DIRECTION: &str = "network.io.direction";
/// `tcp`, `udp`, `icmp`, `icmpv6` or `other`.
pub const ATTR_TRANSPORT: &str = "network.transport";
/// `ipv4`, `ipv6` or `other`.
pub const ATTR_NETWORK_TYPE: &str = "network.type";
pub const ATTR_SOURCE_ADDRESS: &str = "source.address";
pub const ATTR_SOURCE_PORT: &str = "source.port";
pub const ATTR_DESTINATION_ADDRESS: &str = "destination.address";
pub const ATTR_DESTINATION_PORT: &str = "destination.port";
/// Marks the series that collects everything past a cardinality limit.
pub const ATTR_OVERFLOW: &str = "otel.metric.overflow";

/// Resource attributes.
pub const RESOURCE_SERVICE_NAME: &str = "service.name";
pub const RESOURCE_SERVICE_VERSION: &str = "service.version";
pub const RESOURCE_HOST_NAME: &str = "host.name";

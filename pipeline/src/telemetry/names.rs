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
/// Packet records a kernel receiver read from its ring buffer (flow processor).
pub const NETWORK_RECORDS_DELIVERED: &str = "periscope.network.records.delivered";
/// Packet records lost to a full ring buffer (flow processor).
pub const NETWORK_RECORDS_LOST: &str = "periscope.network.records.lost";

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
/// From `/etc/machine-id` (added by the otlp exporter).
pub const RESOURCE_HOST_ID: &str = "host.id";
/// From the `K8S_NODE_NAME` environment variable, when set (added by the otlp exporter).
pub const RESOURCE_K8S_NODE_NAME: &str = "k8s.node.name";

/// Every name above, for the test that keeps `docs/metrics.md` complete.
pub const ALL: &[&str] = &[
    COMPONENT_RECEIVED,
    COMPONENT_SENT,
    COMPONENT_DROPPED,
    COMPONENT_ERRORS,
    NETWORK_PACKETS,
    NETWORK_BYTES,
    NETWORK_RECORDS_DELIVERED,
    NETWORK_RECORDS_LOST,
    ATTR_COMPONENT_KIND,
    ATTR_COMPONENT_ID,
    ATTR_PIPELINE_ID,
    ATTR_NETNS_INODE,
    ATTR_INTERFACE_NAME,
    ATTR_IO_DIRECTION,
    ATTR_TRANSPORT,
    ATTR_SOURCE_ADDRESS,
    ATTR_SOURCE_PORT,
    ATTR_DESTINATION_ADDRESS,
    ATTR_DESTINATION_PORT,
    ATTR_OVERFLOW,
    RESOURCE_SERVICE_NAME,
    RESOURCE_SERVICE_VERSION,
    RESOURCE_HOST_NAME,
    RESOURCE_HOST_ID,
    RESOURCE_K8S_NODE_NAME,
];

#[cfg(test)]
mod tests {
    #[test]
    fn every_name_is_documented() {
        let docs = include_str!("../../../docs/metrics.md");
        let missing: Vec<&str> = super::ALL
            .iter()
            .copied()
            .filter(|n| !docs.contains(&format!("`{n}`")))
            .collect();
        assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
    }
}

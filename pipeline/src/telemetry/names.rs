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

/// Devices the `xdp`/`tcx` receiver has programs attached to now (gauge).
pub const NETDEV_DEVICES_ATTACHED: &str = "periscope.netdev.devices.attached";
/// Attachments that failed, by `reason` (a device that vanished meanwhile is not one).
pub const NETDEV_ATTACH_FAILURES: &str = "periscope.netdev.attach.failures";
/// Time from a device being reported to the receiver to its programs attached, seconds.
pub const NETDEV_ATTACH_DURATION: &str = "periscope.netdev.attach.duration";
/// Links let go of (devices and namespaces gone, and at stop).
pub const NETDEV_LINKS_RELEASED: &str = "periscope.netdev.links.released";
/// Why an attachment failed: `busy`, `permission`, `unsupported`, `namespace`, `other`.
pub const ATTR_NETDEV_FAILURE_REASON: &str = "reason";

/// Packets seen (flow processor).
pub const NETWORK_PACKETS: &str = "periscope.network.packets";
/// Bytes seen, as L2 frame length at the hook (flow processor).
pub const NETWORK_BYTES: &str = "periscope.network.bytes";
/// Packets into and out of a workload's namespace, counted once (flow processor).
pub const WORKLOAD_PACKETS: &str = "periscope.workload.packets";
/// Bytes into and out of a workload's namespace, counted once (flow processor).
pub const WORKLOAD_BYTES: &str = "periscope.workload.bytes";
/// Direction relative to the workload whose namespace the device serves: `ingress`, `egress`.
pub const ATTR_WORKLOAD_DIRECTION: &str = "periscope.workload.direction";
/// Whether the packet is to/from the observing namespace's own stack (`local`) or routed or
/// bridged through it (`forwarded`); `unknown` for frames that are not IP.
pub const ATTR_TRAFFIC_LOCALITY: &str = "periscope.traffic.locality";
/// Which namespace's workload a device serves: `own`, or `peer` (node-side end of a veth).
pub const ATTR_INTERFACE_SERVES: &str = "periscope.interface.serves";
/// The namespace of a veth's other end (inode, cookie, name) and that end's device name.
pub const ATTR_PEER_NETNS_INODE: &str = "periscope.peer.netns.inode";
pub const ATTR_PEER_NETNS_COOKIE: &str = "periscope.peer.netns.cookie";
pub const ATTR_PEER_NETNS_NAME: &str = "periscope.peer.netns.name";
pub const ATTR_PEER_INTERFACE_NAME: &str = "periscope.peer.interface.name";
/// The container and pod of a node-side device's peer namespace: ids captured with the
/// device's names, names added by `identity`.
pub const ATTR_PEER_CONTAINER_ID: &str = "periscope.peer.container.id";
pub const ATTR_PEER_CONTAINER_NAME: &str = "periscope.peer.container.name";
pub const ATTR_PEER_K8S_POD_UID: &str = "periscope.peer.k8s.pod.uid";
pub const ATTR_PEER_K8S_POD_NAME: &str = "periscope.peer.k8s.pod.name";
pub const ATTR_PEER_K8S_NAMESPACE_NAME: &str = "periscope.peer.k8s.namespace.name";
/// Packet records a kernel receiver read from its ring buffer (flow processor).
pub const NETWORK_RECORDS_DELIVERED: &str = "periscope.network.records.delivered";
/// Packet records lost to a full ring buffer (flow processor).
pub const NETWORK_RECORDS_LOST: &str = "periscope.network.records.lost";
/// IP packets of a cgroup's sockets at the cgroup_skb hooks (flow processor).
pub const CGROUP_PACKETS: &str = "periscope.cgroup.packets";
/// Bytes of a cgroup's IP packets at the cgroup_skb hooks (flow processor).
pub const CGROUP_BYTES: &str = "periscope.cgroup.bytes";
/// TCP connections opened and closed (connections processor).
pub const TCP_CONNECTIONS: &str = "periscope.tcp.connections";
/// TCP segments retransmitted (connections processor).
pub const TCP_RETRANSMITS: &str = "periscope.tcp.retransmits";
/// UDP datagrams sent and received (connections processor).
pub const UDP_DATAGRAMS: &str = "periscope.udp.datagrams";
/// Packets the kernel dropped, by reason (connections processor).
pub const DROPS: &str = "periscope.drops";
/// Microbursts detected (burst processor).
pub const BURST_COUNT: &str = "periscope.burst.count";
/// How long microbursts lasted, seconds (burst processor).
pub const BURST_DURATION: &str = "periscope.burst.duration";
/// Packets in microbursts (burst processor).
pub const BURST_PACKETS: &str = "periscope.burst.packets";
/// Highest packet rate in a burst per device since the last point (burst processor).
pub const BURST_PEAK_RATE: &str = "periscope.burst.peak_rate";
/// Burst reports, packets and flows not tracked because of a cap (burst processor).
pub const BURST_UNTRACKED: &str = "periscope.burst.untracked";
/// Burst spans: the span name (burst processor).
pub const SPAN_NETWORK_BURST: &str = "network.burst";
/// Burst spans: the name of a span event per top flow.
pub const SPAN_EVENT_BURST_FLOW: &str = "network.burst.flow";
/// Burst span attributes.
pub const ATTR_BURST_PACKETS: &str = "periscope.burst.packets";
pub const ATTR_BURST_BYTES: &str = "periscope.burst.bytes";
pub const ATTR_BURST_PEAK_PPS: &str = "periscope.burst.peak_pps";
pub const ATTR_BURST_PEAK_BPS: &str = "periscope.burst.peak_bps";
pub const ATTR_BURST_CPUS: &str = "periscope.burst.cpus";
/// Packets of one flow in a burst (attribute of a `network.burst.flow` span event).
pub const ATTR_BURST_FLOW_PACKETS: &str = "periscope.burst.flow.packets";
/// Why `periscope.burst.untracked` counted: `device` or `flow`.
pub const ATTR_BURST_UNTRACKED_REASON: &str = "periscope.burst.untracked.reason";
/// Time packets waited in a device's transmit queue (root qdisc), seconds (queue processor).
pub const QUEUE_DELAY: &str = "periscope.network.queue.delay";
/// Most bytes in a device's queue seen at an enqueue since the last point (queue processor).
pub const QUEUE_BACKLOG: &str = "periscope.network.queue.backlog";
/// Most packets in a device's queue seen at an enqueue since the last point (queue processor).
pub const QUEUE_LENGTH: &str = "periscope.network.queue.length";
/// Packets a device's queueing discipline dropped, by reason (queue processor).
pub const QUEUE_DROPS: &str = "periscope.network.queue.drops";
/// Burst span attributes from the device's queue during the burst (burst processor).
pub const ATTR_QUEUE_MAX_DELAY_US: &str = "periscope.queue.max_delay_us";
pub const ATTR_QUEUE_MAX_BACKLOG_BYTES: &str = "periscope.queue.max_backlog_bytes";
pub const ATTR_QUEUE_MAX_BACKLOG_PACKETS: &str = "periscope.queue.max_backlog_packets";
pub const ATTR_QUEUE_DROPS: &str = "periscope.queue.drops";
/// Smoothed TCP round-trip time, seconds (latency processor).
pub const TCP_RTT: &str = "periscope.tcp.rtt";
/// TCP connect latency, SYN → established on the client, seconds (latency processor).
pub const TCP_CONNECT_DURATION: &str = "periscope.tcp.connect.duration";
/// Request sent → first byte of the answer, seconds (latency processor).
pub const TCP_RESPONSE_DURATION: &str = "periscope.tcp.response.duration";
/// Socket events not recorded because `max_sockets` were tracked (latency processor).
pub const LATENCY_EVENTS_UNTRACKED: &str = "periscope.latency.events.untracked";
/// Connection spans: the span name (connections processor).
pub const SPAN_TCP_CONNECTION: &str = "tcp.connection";
// Service graph (servicegraph processor), shaped like the OpenTelemetry Collector's
// servicegraph connector so that Grafana's service graph and Jaeger's SPM draw it.
/// Requests (TCP connections) from a client workload to a server workload.
pub const SERVICE_GRAPH_REQUEST_TOTAL: &str = "traces_service_graph_request_total";
/// Of those, connects that failed.
pub const SERVICE_GRAPH_REQUEST_FAILED_TOTAL: &str = "traces_service_graph_request_failed_total";
/// The connection's life as the server saw it, seconds.
pub const SERVICE_GRAPH_REQUEST_SERVER_SECONDS: &str =
    "traces_service_graph_request_server_seconds";
/// The connection's life as the client saw it, seconds.
pub const SERVICE_GRAPH_REQUEST_CLIENT_SECONDS: &str =
    "traces_service_graph_request_client_seconds";
/// Connect latency (SYN → established on the client) per edge, seconds.
pub const SERVICE_GRAPH_CONNECT_DURATION: &str = "periscope.servicegraph.connect.duration";
/// Response time (request sent → answer received on the client) per edge, seconds.
pub const SERVICE_GRAPH_RESPONSE_DURATION: &str = "periscope.servicegraph.response.duration";
/// Bytes per edge, by direction from the client (`transmit`: requests, `receive`: responses).
pub const SERVICE_GRAPH_BYTES: &str = "periscope.servicegraph.bytes";
/// TCP segments retransmitted per edge.
pub const SERVICE_GRAPH_RETRANSMITS: &str = "periscope.servicegraph.retransmits";
/// The client workload of an edge.
pub const ATTR_SERVICE_GRAPH_CLIENT: &str = "client";
/// The server workload of an edge.
pub const ATTR_SERVICE_GRAPH_SERVER: &str = "server";
/// `virtual_node` when one end was not observed on this host (named from its address), else empty.
pub const ATTR_SERVICE_GRAPH_CONNECTION_TYPE: &str = "connection_type";
/// The server's port.
pub const ATTR_SERVER_PORT: &str = "server.port";
// Flows joined with sockets (flow and connections processors).
/// The smoothed RTT of the socket that owns a flow, seconds (gauge, flow processor).
pub const NETWORK_FLOW_RTT: &str = "periscope.network.flow.rtt";
/// Segments the socket that owns a flow retransmitted (flow processor).
pub const NETWORK_FLOW_RETRANSMITS: &str = "periscope.network.flow.retransmits";
/// Connection spans: packets and bytes the devices of the socket's namespace saw for it.
pub const ATTR_FLOW_PACKETS_SENT: &str = "periscope.flow.packets_sent";
pub const ATTR_FLOW_BYTES_SENT: &str = "periscope.flow.bytes_sent";
pub const ATTR_FLOW_PACKETS_RECEIVED: &str = "periscope.flow.packets_received";
pub const ATTR_FLOW_BYTES_RECEIVED: &str = "periscope.flow.bytes_received";

/// `receiver`, `processor` or `exporter`.
pub const ATTR_COMPONENT_KIND: &str = "periscope.component.kind";
/// The component id (`pcap/uplink`).
pub const ATTR_COMPONENT_ID: &str = "periscope.component.id";
/// The pipeline id, for processors (one instance per pipeline).
pub const ATTR_PIPELINE_ID: &str = "periscope.pipeline.id";
/// Inode of the network namespace (reused by a later namespace once this one is gone).
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
/// `ipv4`, `ipv6` or `other`.
pub const ATTR_NETWORK_TYPE: &str = "network.type";
/// cgroup v2 id (inode of the cgroup directory).
pub const ATTR_CGROUP_ID: &str = "periscope.cgroup.id";
/// `opened` or `closed`.
pub const ATTR_TCP_EVENT: &str = "periscope.tcp.event";
/// `client` (active open) or `server` (passive open), `unknown` if not seen.
pub const ATTR_CONNECTION_ROLE: &str = "periscope.connection.role";
/// TCP state: at open `established`; at close the state the socket left (`syn_sent` is a
/// failed connect, `established` a reset, `last_ack`/`fin_wait2`/... an orderly close).
pub const ATTR_CONNECTION_STATE: &str = "network.connection.state";
/// The kernel's drop reason (`enum skb_drop_reason` without `SKB_DROP_REASON_`).
pub const ATTR_DROP_REASON: &str = "periscope.drop.reason";
/// Span attributes of a connection.
pub const ATTR_LOCAL_ADDRESS: &str = "network.local.address";
pub const ATTR_LOCAL_PORT: &str = "network.local.port";
pub const ATTR_PEER_ADDRESS: &str = "network.peer.address";
pub const ATTR_PEER_PORT: &str = "network.peer.port";
pub const ATTR_PROCESS_PID: &str = "process.pid";
pub const ATTR_PROCESS_NAME: &str = "process.executable.name";
pub const ATTR_SOCKET_COOKIE: &str = "periscope.socket.cookie";
pub const ATTR_NETNS_COOKIE: &str = "periscope.netns.cookie";
pub const ATTR_BYTES_SENT: &str = "periscope.tcp.bytes_sent";
pub const ATTR_BYTES_ACKED: &str = "periscope.tcp.bytes_acked";
pub const ATTR_BYTES_RECEIVED: &str = "periscope.tcp.bytes_received";
pub const ATTR_TOTAL_RETRANS: &str = "periscope.tcp.retransmits";
pub const ATTR_SRTT: &str = "periscope.tcp.srtt_us";
pub const ATTR_RTTVAR: &str = "periscope.tcp.rttvar_us";
pub const ATTR_CONNECT_DURATION: &str = "periscope.tcp.connect_duration_us";
/// The hook that produced the data (`sockops`, `tracepoint`, `fentry`, ...).
pub const ATTR_HOOK: &str = "periscope.hook";
// DNS (dns processor; `dns.question.name` and the server also from identity).
/// DNS query → response, seconds (dns processor).
pub const DNS_LOOKUP_DURATION: &str = "dns.lookup.duration";
/// DNS queries not tracked because `max_pending` were awaiting a response (dns processor).
pub const DNS_QUERIES_UNTRACKED: &str = "periscope.dns.queries.untracked";
/// DNS lookup spans: the span name (dns processor).
pub const SPAN_DNS_LOOKUP: &str = "dns.lookup";
/// The question's name, lower case, without the trailing dot.
pub const ATTR_DNS_QUESTION_NAME: &str = "dns.question.name";
/// The question's type (`A`, `AAAA`, ... or its number).
pub const ATTR_DNS_QUESTION_TYPE: &str = "dns.question.type";
/// The response code (`noerror`, `nxdomain`, `servfail`, ... or its number).
pub const ATTR_DNS_RESPONSE_CODE: &str = "dns.response_code";
/// Why a lookup failed: `timeout`, or the response code when it is not `noerror`.
pub const ATTR_ERROR_TYPE: &str = "error.type";
/// The DNS server that answered (the lookup's server address).
pub const ATTR_DNS_SERVER_ADDRESS: &str = "periscope.dns.server.address";
/// The DNS message id of a lookup.
pub const ATTR_DNS_MESSAGE_ID: &str = "periscope.dns.id";
// Identity attributes (identity processor).
/// Full path of the process's executable (target of `/proc/PID/exe`).
pub const ATTR_PROCESS_EXECUTABLE_PATH: &str = "process.executable.path";
/// User name of the process's owner (else its uid).
pub const ATTR_PROCESS_OWNER: &str = "process.owner";
/// The process's arguments joined by spaces (opt-in).
pub const ATTR_PROCESS_COMMAND_LINE: &str = "process.command_line";
/// The cgroup v2 path relative to the cgroup mount.
pub const ATTR_CGROUP_PATH: &str = "periscope.cgroup.path";
/// Container id (64 hex digits).
pub const ATTR_CONTAINER_ID: &str = "container.id";
/// `docker`, `containerd`, `cri-o` or `podman`.
pub const ATTR_CONTAINER_RUNTIME: &str = "container.runtime";
/// Container name, from the runtime's state on disk.
pub const ATTR_CONTAINER_NAME: &str = "container.name";
/// Image name (without tag or digest), from the runtime's state on disk.
pub const ATTR_CONTAINER_IMAGE_NAME: &str = "container.image.name";
/// Kubernetes pod uid.
pub const ATTR_K8S_POD_UID: &str = "k8s.pod.uid";
/// Kubernetes QoS class: `guaranteed`, `burstable` or `besteffort`.
pub const ATTR_K8S_POD_QOS_CLASS: &str = "k8s.pod.qos_class";
/// Kubernetes pod name, namespace and node (from the API, `identity.kubernetes`).
pub const ATTR_K8S_POD_NAME: &str = "k8s.pod.name";
pub const ATTR_K8S_NAMESPACE_NAME: &str = "k8s.namespace.name";
pub const ATTR_K8S_NODE_NAME: &str = "k8s.node.name";
/// The pod's workload, from its owner reference.
pub const ATTR_K8S_REPLICASET_NAME: &str = "k8s.replicaset.name";
pub const ATTR_K8S_DEPLOYMENT_NAME: &str = "k8s.deployment.name";
pub const ATTR_K8S_STATEFULSET_NAME: &str = "k8s.statefulset.name";
pub const ATTR_K8S_DAEMONSET_NAME: &str = "k8s.daemonset.name";
pub const ATTR_K8S_JOB_NAME: &str = "k8s.job.name";
pub const ATTR_K8S_CRONJOB_NAME: &str = "k8s.cronjob.name";
/// Prefixes of opt-in pod labels and annotations (`k8s.pod.label.<key>`).
pub const ATTR_K8S_POD_LABEL: &str = "k8s.pod.label.";
pub const ATTR_K8S_POD_ANNOTATION: &str = "k8s.pod.annotation.";
/// The pod or Service at the other end (`network.peer.address`, else `destination.address`).
pub const ATTR_K8S_PEER_POD_NAME: &str = "k8s.peer.pod.name";
pub const ATTR_K8S_PEER_NAMESPACE_NAME: &str = "k8s.peer.namespace.name";
/// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`, `ReplicaSet`, ... or `Pod`.
pub const ATTR_K8S_PEER_OWNER_KIND: &str = "k8s.peer.owner.kind";
pub const ATTR_K8S_PEER_OWNER_NAME: &str = "k8s.peer.owner.name";
pub const ATTR_K8S_PEER_SERVICE_NAME: &str = "k8s.peer.service.name";
/// Name of the network namespace (`ip netns` / Docker bind mount, else its container).
pub const ATTR_NETNS_NAME: &str = "periscope.netns.name";
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
    NETDEV_DEVICES_ATTACHED,
    NETDEV_ATTACH_FAILURES,
    NETDEV_ATTACH_DURATION,
    NETDEV_LINKS_RELEASED,
    ATTR_NETDEV_FAILURE_REASON,
    NETWORK_PACKETS,
    NETWORK_BYTES,
    NETWORK_RECORDS_DELIVERED,
    NETWORK_RECORDS_LOST,
    WORKLOAD_PACKETS,
    WORKLOAD_BYTES,
    ATTR_WORKLOAD_DIRECTION,
    ATTR_TRAFFIC_LOCALITY,
    ATTR_INTERFACE_SERVES,
    ATTR_PEER_NETNS_INODE,
    ATTR_PEER_NETNS_COOKIE,
    ATTR_PEER_NETNS_NAME,
    ATTR_PEER_INTERFACE_NAME,
    ATTR_PEER_CONTAINER_ID,
    ATTR_PEER_CONTAINER_NAME,
    ATTR_PEER_K8S_POD_UID,
    ATTR_PEER_K8S_POD_NAME,
    ATTR_PEER_K8S_NAMESPACE_NAME,
    CGROUP_PACKETS,
    CGROUP_BYTES,
    TCP_CONNECTIONS,
    TCP_RETRANSMITS,
    UDP_DATAGRAMS,
    DROPS,
    BURST_COUNT,
    BURST_DURATION,
    BURST_PACKETS,
    BURST_PEAK_RATE,
    BURST_UNTRACKED,
    SPAN_NETWORK_BURST,
    SPAN_EVENT_BURST_FLOW,
    ATTR_BURST_PACKETS,
    ATTR_BURST_BYTES,
    ATTR_BURST_PEAK_PPS,
    ATTR_BURST_PEAK_BPS,
    ATTR_BURST_CPUS,
    ATTR_BURST_FLOW_PACKETS,
    ATTR_BURST_UNTRACKED_REASON,
    QUEUE_DELAY,
    QUEUE_BACKLOG,
    QUEUE_LENGTH,
    QUEUE_DROPS,
    ATTR_QUEUE_MAX_DELAY_US,
    ATTR_QUEUE_MAX_BACKLOG_BYTES,
    ATTR_QUEUE_MAX_BACKLOG_PACKETS,
    ATTR_QUEUE_DROPS,
    TCP_RTT,
    TCP_CONNECT_DURATION,
    TCP_RESPONSE_DURATION,
    LATENCY_EVENTS_UNTRACKED,
    SPAN_TCP_CONNECTION,
    SERVICE_GRAPH_REQUEST_TOTAL,
    SERVICE_GRAPH_REQUEST_FAILED_TOTAL,
    SERVICE_GRAPH_REQUEST_SERVER_SECONDS,
    SERVICE_GRAPH_REQUEST_CLIENT_SECONDS,
    SERVICE_GRAPH_CONNECT_DURATION,
    SERVICE_GRAPH_RESPONSE_DURATION,
    SERVICE_GRAPH_BYTES,
    SERVICE_GRAPH_RETRANSMITS,
    ATTR_SERVICE_GRAPH_CLIENT,
    ATTR_SERVICE_GRAPH_SERVER,
    ATTR_SERVICE_GRAPH_CONNECTION_TYPE,
    ATTR_SERVER_PORT,
    NETWORK_FLOW_RTT,
    NETWORK_FLOW_RETRANSMITS,
    ATTR_FLOW_PACKETS_SENT,
    ATTR_FLOW_BYTES_SENT,
    ATTR_FLOW_PACKETS_RECEIVED,
    ATTR_FLOW_BYTES_RECEIVED,
    ATTR_NETWORK_TYPE,
    ATTR_CGROUP_ID,
    ATTR_TCP_EVENT,
    ATTR_CONNECTION_ROLE,
    ATTR_CONNECTION_STATE,
    ATTR_DROP_REASON,
    ATTR_LOCAL_ADDRESS,
    ATTR_LOCAL_PORT,
    ATTR_PEER_ADDRESS,
    ATTR_PEER_PORT,
    ATTR_PROCESS_PID,
    ATTR_PROCESS_NAME,
    ATTR_SOCKET_COOKIE,
    ATTR_NETNS_COOKIE,
    ATTR_BYTES_SENT,
    ATTR_BYTES_ACKED,
    ATTR_BYTES_RECEIVED,
    ATTR_TOTAL_RETRANS,
    ATTR_SRTT,
    ATTR_RTTVAR,
    ATTR_CONNECT_DURATION,
    ATTR_HOOK,
    DNS_LOOKUP_DURATION,
    DNS_QUERIES_UNTRACKED,
    SPAN_DNS_LOOKUP,
    ATTR_DNS_QUESTION_NAME,
    ATTR_DNS_QUESTION_TYPE,
    ATTR_DNS_RESPONSE_CODE,
    ATTR_ERROR_TYPE,
    ATTR_DNS_SERVER_ADDRESS,
    ATTR_DNS_MESSAGE_ID,
    ATTR_PROCESS_EXECUTABLE_PATH,
    ATTR_PROCESS_OWNER,
    ATTR_PROCESS_COMMAND_LINE,
    ATTR_CGROUP_PATH,
    ATTR_CONTAINER_ID,
    ATTR_CONTAINER_RUNTIME,
    ATTR_CONTAINER_NAME,
    ATTR_CONTAINER_IMAGE_NAME,
    ATTR_K8S_POD_UID,
    ATTR_K8S_POD_QOS_CLASS,
    ATTR_NETNS_NAME,
    ATTR_K8S_POD_NAME,
    ATTR_K8S_NAMESPACE_NAME,
    ATTR_K8S_NODE_NAME,
    ATTR_K8S_REPLICASET_NAME,
    ATTR_K8S_DEPLOYMENT_NAME,
    ATTR_K8S_STATEFULSET_NAME,
    ATTR_K8S_DAEMONSET_NAME,
    ATTR_K8S_JOB_NAME,
    ATTR_K8S_CRONJOB_NAME,
    ATTR_K8S_POD_LABEL,
    ATTR_K8S_POD_ANNOTATION,
    ATTR_K8S_PEER_POD_NAME,
    ATTR_K8S_PEER_NAMESPACE_NAME,
    ATTR_K8S_PEER_OWNER_KIND,
    ATTR_K8S_PEER_OWNER_NAME,
    ATTR_K8S_PEER_SERVICE_NAME,
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

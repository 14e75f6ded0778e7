//! The one list of every component type periscope knows. Adding a component touches its own
//! file and one line here.

use periscope_pipeline::component::Registry;

/// Every receiver, processor and exporter type.
pub fn registry() -> Registry {
    Registry::new()
        // receivers
        .receiver::<periscope_receivers::pcap::PcapConfig>()
        .receiver::<periscope_receivers::synthetic::SyntheticConfig>()
        .receiver::<periscope_receivers::xdp::XdpConfig>()
        .receiver::<periscope_receivers::tcx::TcxConfig>()
        .receiver::<periscope_receivers::sockops::SockopsConfig>()
        .receiver::<periscope_receivers::sk_msg::SkMsgConfig>()
        .receiver::<periscope_receivers::tcp_udp::TcpUdpConfig>()
        .receiver::<periscope_receivers::cgroup_skb::CgroupSkbConfig>()
        .receiver::<periscope_receivers::qdisc::QdiscConfig>()
        // processors
        .processor::<periscope_processors::flow::FlowConfig>()
        .processor::<periscope_processors::connections::ConnectionsConfig>()
        .processor::<periscope_processors::identity::IdentityConfig>()
        .processor::<periscope_processors::latency::LatencyConfig>()
        .processor::<periscope_processors::dns::DnsConfig>()
        .processor::<periscope_processors::burst::BurstConfig>()
        .processor::<periscope_processors::servicegraph::ServiceGraphConfig>()
        .processor::<periscope_processors::queue::QueueConfig>()
        // exporters
        .exporter::<periscope_exporters::file::FileConfig>()
        .exporter::<periscope_exporters::debug::DebugConfig>()
        .exporter::<periscope_exporters::otlp::OtlpConfig>()
        .exporter::<periscope_exporters::prometheus::PrometheusConfig>()
        .exporter::<periscope_exporters::observe::ObserveConfig>()
}

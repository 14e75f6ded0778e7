//! The `connections` processor's options.

use std::num::NonZeroUsize;

use serde::Deserialize;

use periscope_pipeline::component::ComponentConfig;
use periscope_pipeline::config::{ConfigDuration, PositiveDuration};
use periscope_pipeline::model::Temporality;

/// Turns socket events (from `sockops`, `tcp_udp`, `sk_msg`) and drops into
/// `periscope.tcp.connections`, `periscope.tcp.retransmits`, `periscope.udp.datagrams` and
/// `periscope.drops`, emitted every `interval`, and — with `spans` — one span per TCP
/// connection (connect/accept → close) with its 5-tuple, namespace, process, bytes,
/// retransmits and RTT. Consumes socket events and drops and passes every other event on
/// (put it before `flow`, and after processors that also read socket events).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// How often the counters are emitted (and once more at stop); default 10s.
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// `cumulative` (default) or `delta`.
    #[serde(default)]
    pub temporality: Temporality,
    /// A span per TCP connection; default true.
    #[serde(default = "default_true")]
    pub spans: bool,
    /// A connection still open after this long is reported as a span ending now (attribute
    /// `periscope.connection.open=true`), and again, complete, at close; default 60s.
    #[serde(default = "default_report_open_after")]
    pub report_open_after: PositiveDuration,
    /// Add `network.local.address`/`.port` and `network.peer.address`/`.port` to the
    /// connection and UDP series: a series per socket, so mind `cardinality_limit`.
    #[serde(default)]
    pub socket_attributes: bool,
    /// Most series per metric; further series are counted in one `otel.metric.overflow=true`
    /// series.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: NonZeroUsize,
    /// Most connections tracked at once (for spans and de-duplication); connections past it
    /// are still counted but get no span (counted as dropped).
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroUsize,
    /// How long a closed connection's span waits before it is emitted, so that the packets
    /// and bytes the devices counted for it (`periscope.flow.*`: from `xdp`/`tcx` with
    /// `flows` on, through `flow` with `flow_attributes`) include its last packets: set it
    /// longer than those receivers' `counters_interval`. Default 0s: emitted at the next
    /// `interval` with what was counted by then.
    #[serde(default = "default_flow_join_delay")]
    pub flow_join_delay: ConfigDuration,
}

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}
fn default_true() -> bool {
    true
}
fn default_report_open_after() -> PositiveDuration {
    PositiveDuration::from_secs(60)
}
fn default_cardinality_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(2000).unwrap() }
}
fn default_flow_join_delay() -> ConfigDuration {
    ConfigDuration::from_secs(0)
}
fn default_max_connections() -> NonZeroUsize {
    const { NonZeroUsize::new(65536).unwrap() }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            interval: default_interval(),
            temporality: Temporality::Cumulative,
            spans: true,
            report_open_after: default_report_open_after(),
            socket_attributes: false,
            cardinality_limit: default_cardinality_limit(),
            max_connections: default_max_connections(),
            flow_join_delay: default_flow_join_delay(),
        }
    }
}

impl ComponentConfig for ConnectionsConfig {
    const TYPE: &'static str = "connections";
}

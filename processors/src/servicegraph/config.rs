//! The `servicegraph` processor's options.

use std::num::NonZeroUsize;

use serde::Deserialize;

use periscope_pipeline::component::{ComponentConfig, Invalid};
use periscope_pipeline::config::{Boundaries, PositiveDuration};
use periscope_pipeline::model::Temporality;

use crate::identity::IdentityConfig;

/// Builds a service graph from TCP connections: per (client workload, server workload, server
/// port), the requests (one per TCP connection), failed connects, bytes, retransmits, and
/// histograms of the connection's life as client and server saw it, of connect latency and of
/// response time, as the metrics of the OpenTelemetry Collector's servicegraph connector
/// (`traces_service_graph_request_total`, `traces_service_graph_request_failed_total`,
/// `traces_service_graph_request_server_seconds`, `traces_service_graph_request_client_seconds`
/// with `client`, `server`, `connection_type`) plus `periscope.servicegraph.*`. Workloads are
/// named from identity (Kubernetes workload or pod, else container name, else the network
/// namespace's name, else the process's executable). Reads socket events (`sockops`,
/// `tcp_udp`, `sk_msg`) and passes every event on: put it before `connections`, which
/// consumes them (`periscope validate` says so otherwise); it names workloads itself, so it
/// does not need `identity` before it.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceGraphConfig {
    /// How often the metrics are emitted (and once more at stop); default 10s.
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// `cumulative` (default) or `delta`.
    #[serde(default)]
    pub temporality: Temporality,
    /// Bucket bounds of the four histograms, in seconds; default the connector's: 2ms, 4ms,
    /// 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s, 1.4s, 2s, 5s, 10s, 15s.
    #[serde(default = "default_boundaries")]
    pub boundaries: Boundaries,
    /// Most edges (series per metric); what further edges count goes to one series marked
    /// `otel.metric.overflow=true`.
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: NonZeroUsize,
    /// Most sockets tracked at once; events of further sockets are not in the graph (counted
    /// as dropped by this processor, and logged).
    #[serde(default = "default_max_sockets")]
    pub max_sockets: NonZeroUsize,
    /// Most endpoints (address and port of a socket seen on this host, and the host
    /// addresses) remembered to name the other end of a connection; the least recently seen
    /// are forgotten first.
    #[serde(default = "default_max_endpoints")]
    pub max_endpoints: NonZeroUsize,
    /// How the workloads are looked up: the `identity` processor's options (process,
    /// container, netns, kubernetes, caches). Its `exclude` leaves a source out of the names.
    #[serde(default)]
    pub identity: IdentityConfig,
}

/// The servicegraph connector's default buckets, seconds.
const DEFAULT_BOUNDARIES: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}
fn default_boundaries() -> Boundaries {
    Boundaries::new(DEFAULT_BOUNDARIES.to_vec()).expect("the default bounds increase")
}
fn default_cardinality_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(1000).unwrap() }
}
fn default_max_sockets() -> NonZeroUsize {
    const { NonZeroUsize::new(65536).unwrap() }
}
fn default_max_endpoints() -> NonZeroUsize {
    const { NonZeroUsize::new(16384).unwrap() }
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        ServiceGraphConfig {
            interval: default_interval(),
            temporality: Temporality::Cumulative,
            boundaries: default_boundaries(),
            cardinality_limit: default_cardinality_limit(),
            max_sockets: default_max_sockets(),
            max_endpoints: default_max_endpoints(),
            identity: IdentityConfig::default(),
        }
    }
}

impl ComponentConfig for ServiceGraphConfig {
    const TYPE: &'static str = "servicegraph";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut problems = Vec::new();
        if self.boundaries.is_empty() {
            problems.push(Invalid::new(
                "boundaries",
                "give at least one bound (the service graph's latency panels need buckets)",
            ));
        }
        if let Err(nested) = self.identity.validate() {
            problems.extend(nested.into_iter().map(|p| {
                let path = if p.path.is_empty() {
                    "identity".to_string()
                } else {
                    format!("identity.{}", p.path)
                };
                Invalid::new(path, p.message)
            }));
        }
        Invalid::all(problems)
    }
}

//! The `latency` processor's options.

use std::num::NonZeroUsize;

use serde::Deserialize;

use periscope_pipeline::component::{ComponentConfig, Invalid};
use periscope_pipeline::config::{Boundaries, PositiveDuration};
use periscope_pipeline::model::Temporality;
use periscope_pipeline::telemetry::names;

use super::exponential;

/// Histograms of TCP latencies from socket events (`sockops`, `tcp_udp`, `sk_msg`):
/// `periscope.tcp.rtt` (smoothed RTT), `periscope.tcp.connect.duration` (SYN → established,
/// client side) and `periscope.tcp.response.duration` (request sent → first byte of the
/// answer; needs send/receive records: `sk_msg`, or `tcp_udp` with `send_receive: tcp`), in
/// seconds, emitted every `interval`. Passes every event on unchanged: put it before
/// `connections`, which consumes socket events.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// How often the histograms are emitted (and once more at stop); default 10s.
    #[serde(default = "default_interval")]
    pub interval: PositiveDuration,
    /// `cumulative` (default) or `delta` (each point covers one interval; series without
    /// samples in it are left out and forgotten).
    #[serde(default)]
    pub temporality: Temporality,
    /// The attributes that key a series, in this order. Allowed: `periscope.netns.inode`,
    /// `periscope.connection.role`, `network.type`, `network.local.address`,
    /// `network.local.port`, `network.peer.address`, `network.peer.port`, `process.pid`,
    /// `process.executable.name`, `periscope.cgroup.id`. Default: `[periscope.netns.inode,
    /// periscope.connection.role]`. Ports and addresses can make a series per socket: mind
    /// `cardinality_limit`.
    #[serde(default = "default_attributes")]
    pub attributes: Vec<String>,
    /// Which histogram kinds to emit: `explicit` (buckets at `boundaries`) and/or
    /// `exponential` (OpenTelemetry base-2, `max_size`/`max_scale`). Default `[explicit]`.
    /// With both, the exponential histograms come in their own scope
    /// (`periscope/<id>/exponential`) so that backends keying series by name and attributes
    /// keep them apart.
    #[serde(default = "default_histograms")]
    pub histograms: Vec<HistogramKind>,
    /// Upper bounds of the explicit buckets, in seconds, strictly increasing. Default: 50µs,
    /// 100µs, 250µs, 500µs, 1ms, 2.5ms, 5ms, 10ms, 25ms, 50ms, 75ms, 100ms, 250ms, 500ms,
    /// 750ms, 1s, 2.5s, 5s, 7.5s, 10s.
    #[serde(default = "default_boundaries")]
    pub boundaries: Boundaries,
    /// Most buckets of an exponential histogram (the OpenTelemetry SDK's `MaxSize`); default
    /// 160.
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    /// Highest scale of an exponential histogram (the SDK's `MaxScale`, -10 to 20); the scale
    /// used is the largest ≤ this at which all values fit in `max_size` buckets. Default 20.
    #[serde(default = "default_max_scale")]
    pub max_scale: i32,
    /// Precision of the hdrhistogram every series records into (decimal digits, 1 to 5):
    /// explicit buckets and quantiles are exact to within 10^-N relative. Default 2: a series
    /// then takes ~20 KB for latencies up to 20 ms, ~26 KB up to 2 s, 37 KB at most (samples
    /// above 1 hour are recorded as 1 hour); each further figure multiplies this by ~8.
    #[serde(default = "default_significant_figures")]
    pub significant_figures: u8,
    /// Which records give RTT samples: `established`, `rtt` (sockops' periodic records),
    /// `close`. Default all three.
    #[serde(default = "default_rtt_samples")]
    pub rtt_samples: Vec<RttSample>,
    /// Sockets whose response time is measured, by role: `client`, `server`, `unknown` (opened
    /// before the agent started, or no lifecycle receiver in the pipeline). Default
    /// `[client]`: on a server socket the same measurement is the client's think time.
    #[serde(default = "default_response_roles")]
    pub response_roles: Vec<Role>,
    /// Most series per metric; samples of further series go to one series marked
    /// `otel.metric.overflow=true`. Default 1000 (at most ~110 MB for the three metrics with
    /// `significant_figures: 2`).
    #[serde(default = "default_cardinality_limit")]
    pub cardinality_limit: NonZeroUsize,
    /// Most sockets tracked at once (for de-duplication and request/response pairing);
    /// events of further sockets are not recorded and are counted in
    /// `periscope.latency.events.untracked`. Default 65536.
    #[serde(default = "default_max_sockets")]
    pub max_sockets: NonZeroUsize,
    /// A socket not heard of for this long is forgotten (its close was lost, or it is idle);
    /// default 15m.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: PositiveDuration,
}

/// A kind of histogram to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HistogramKind {
    /// Explicit buckets at `boundaries`.
    Explicit,
    /// OpenTelemetry base-2 exponential buckets.
    Exponential,
}

/// A record kind that gives RTT samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RttSample {
    /// The handshake completed (the first RTT measurement).
    Established,
    /// sockops' periodic RTT records.
    Rtt,
    /// The socket closed (its final smoothed RTT).
    Close,
}

/// A socket's role, for `response_roles`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Active open (connect).
    Client,
    /// Passive open (accepted).
    Server,
    /// Not seen opening.
    Unknown,
}

fn default_interval() -> PositiveDuration {
    PositiveDuration::from_secs(10)
}
fn default_attributes() -> Vec<String> {
    vec![
        names::ATTR_NETNS_INODE.to_string(),
        names::ATTR_CONNECTION_ROLE.to_string(),
    ]
}
fn default_histograms() -> Vec<HistogramKind> {
    vec![HistogramKind::Explicit]
}
/// Default explicit bucket bounds, seconds.
pub const DEFAULT_BOUNDARIES: [f64; 20] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25,
    0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
fn default_boundaries() -> Boundaries {
    Boundaries::new(DEFAULT_BOUNDARIES.to_vec()).expect("the default bounds increase")
}
fn default_max_size() -> u32 {
    160
}
fn default_max_scale() -> i32 {
    20
}
fn default_significant_figures() -> u8 {
    2
}
fn default_rtt_samples() -> Vec<RttSample> {
    vec![RttSample::Established, RttSample::Rtt, RttSample::Close]
}
fn default_response_roles() -> Vec<Role> {
    vec![Role::Client]
}
fn default_cardinality_limit() -> NonZeroUsize {
    const { NonZeroUsize::new(1000).unwrap() }
}
fn default_max_sockets() -> NonZeroUsize {
    const { NonZeroUsize::new(65536).unwrap() }
}
fn default_idle_timeout() -> PositiveDuration {
    PositiveDuration::from_secs(15 * 60)
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            interval: default_interval(),
            temporality: Temporality::Cumulative,
            attributes: default_attributes(),
            histograms: default_histograms(),
            boundaries: default_boundaries(),
            max_size: default_max_size(),
            max_scale: default_max_scale(),
            significant_figures: default_significant_figures(),
            rtt_samples: default_rtt_samples(),
            response_roles: default_response_roles(),
            cardinality_limit: default_cardinality_limit(),
            max_sockets: default_max_sockets(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

/// An attribute a series can be keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attr {
    NetnsInode,
    Role,
    NetworkType,
    LocalAddress,
    LocalPort,
    PeerAddress,
    PeerPort,
    ProcessPid,
    ProcessName,
    CgroupId,
}

/// The attributes `attributes` may list, with their names.
const ALLOWED: [(&str, Attr); 10] = [
    (names::ATTR_NETNS_INODE, Attr::NetnsInode),
    (names::ATTR_CONNECTION_ROLE, Attr::Role),
    (names::ATTR_NETWORK_TYPE, Attr::NetworkType),
    (names::ATTR_LOCAL_ADDRESS, Attr::LocalAddress),
    (names::ATTR_LOCAL_PORT, Attr::LocalPort),
    (names::ATTR_PEER_ADDRESS, Attr::PeerAddress),
    (names::ATTR_PEER_PORT, Attr::PeerPort),
    (names::ATTR_PROCESS_PID, Attr::ProcessPid),
    (names::ATTR_PROCESS_NAME, Attr::ProcessName),
    (names::ATTR_CGROUP_ID, Attr::CgroupId),
];

/// The attribute named `name`, if `attributes` may list it.
pub(super) fn attr_of(name: &str) -> Option<Attr> {
    ALLOWED.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

impl ComponentConfig for LatencyConfig {
    const TYPE: &'static str = "latency";

    fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut p = Vec::new();
        let allowed: Vec<&str> = ALLOWED.iter().map(|(n, _)| *n).collect();
        for (i, a) in self.attributes.iter().enumerate() {
            if attr_of(a).is_none() {
                p.push(Invalid::new(
                    format!("attributes.{i}"),
                    format!("unknown attribute `{a}`; allowed: {}", allowed.join(", ")),
                ));
            } else if self.attributes[..i].contains(a) {
                p.push(Invalid::new(
                    format!("attributes.{i}"),
                    format!("`{a}` is listed twice"),
                ));
            }
        }
        validate_histograms(
            &self.histograms,
            self.max_size,
            self.max_scale,
            self.significant_figures,
            &mut p,
        );
        if p.is_empty() {
            Ok(())
        } else {
            Err(p)
        }
    }
}

/// The histogram options the `latency` and `queue` processors share: which kinds, the
/// exponential histogram's size and scale, and the explicit one's recorder precision.
pub(crate) fn validate_histograms(
    histograms: &[HistogramKind],
    max_size: u32,
    max_scale: i32,
    significant_figures: u8,
    p: &mut Vec<Invalid>,
) {
    if histograms.is_empty() {
        p.push(Invalid::new(
            "histograms",
            "must name at least one of `explicit`, `exponential`",
        ));
    }
    if max_size < 2 {
        p.push(Invalid::new("max_size", "must be at least 2"));
    }
    if !(exponential::MIN_SCALE..=exponential::MAX_SCALE).contains(&max_scale) {
        p.push(Invalid::new(
            "max_scale",
            format!(
                "must be from {} to {}",
                exponential::MIN_SCALE,
                exponential::MAX_SCALE
            ),
        ));
    }
    if !(1..=5).contains(&significant_figures) {
        p.push(Invalid::new("significant_figures", "must be from 1 to 5"));
    }
}

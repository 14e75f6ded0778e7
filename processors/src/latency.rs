//! The `latency` processor: socket events → histograms of `periscope.tcp.rtt`,
//! `periscope.tcp.connect.duration` and `periscope.tcp.response.duration`, in seconds, keyed by
//! a configurable attribute set, exported as explicit-bucket and/or base-2 exponential
//! histograms.
//!
//! What counts as a sample:
//! - **RTT**: the socket's smoothed RTT (`srtt_us`) on an `established` record, on each
//!   sockops `rtt` record (at most one per socket per the receiver's `rtt_interval`), and on
//!   the `close` record; at most one established and one close sample per socket (sockops and
//!   tcp_udp both report them, with the same value: the first to arrive is counted). Records
//!   with `srtt_us` 0 (not measured) are not samples. `rtt_samples` picks the records.
//! - **connect duration**: a client's `established` record with `duration_ns` > 0 (connect()
//!   → handshake complete, measured in the kernel); one per socket.
//! - **response duration**: per socket, the first `send` after the last `receive` (or the
//!   socket's first `send`) starts a request; the first `receive` after it ends it: the sample
//!   is receive time − send time. Send and receive records come either from the sk_msg/sk_skb
//!   hooks (message into the socket → data arriving at the socket) or from tcp_udp's
//!   send/receive calls (sendmsg returned → recvmsg returned); a socket uses the first family
//!   it is seen with, so two receivers never pair each other's records. Only sockets whose
//!   role is in `response_roles` count (default: clients, the side that sends requests).
//!
//! Each series records into an [`hdrhistogram`] (nanoseconds, `significant_figures`), from
//! which the explicit buckets and quantiles come, and — when exponential histograms are on —
//! into exact base-2 buckets ([`exponential`]). Count, sum, min and max are exact.

mod config;
pub mod exponential;
mod recorder;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use periscope_pipeline::component::{
    BuildContext, ComponentConfig, Emitter, Processor, ProcessorConfig,
};
use periscope_pipeline::model::{
    Event, ExponentialBuckets, ExponentialHistogramPoint, HistogramPoint, KeyValue, Metric,
    MetricData, NetnsId, NumberPoint, Payload, SocketEvent, SocketEventKind, SocketHook,
    SocketRole, Temporality, Transport,
};
use periscope_pipeline::telemetry::{names, now_ns};
use periscope_pipeline::NamespaceTable;

pub(crate) use config::validate_histograms;
pub use config::{HistogramKind, LatencyConfig, Role, RttSample, DEFAULT_BOUNDARIES};
pub use recorder::Recorder;

use config::{attr_of, Attr};

use crate::device_names::push_netns;
use crate::gone::{self, Grace};
use crate::output;
use crate::series::{SeriesTable, TableOptions};

impl ProcessorConfig for LatencyConfig {
    fn build(&self, ctx: &BuildContext) -> anyhow::Result<Box<dyn Processor>> {
        Ok(Box::new(
            Latency::new(self.clone(), ctx.id.to_string())?.with_namespaces(ctx.namespaces.clone()),
        ))
    }
}

/// The three histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyMetric {
    Rtt = 0,
    Connect = 1,
    Response = 2,
}

const METRICS: [(LatencyMetric, &str, &str); 3] = [
    (
        LatencyMetric::Rtt,
        names::TCP_RTT,
        "Smoothed TCP round-trip time (at establishment, periodically, at close).",
    ),
    (
        LatencyMetric::Connect,
        names::TCP_CONNECT_DURATION,
        "TCP connect latency: SYN sent → handshake complete, on the client.",
    ),
    (
        LatencyMetric::Response,
        names::TCP_RESPONSE_DURATION,
        "Request sent → first byte of the answer received, per socket.",
    ),
];

/// How long a closed socket's state is kept for records of other receivers still on their
/// way (a second receiver's close, the last receive).
const CLOSED_LINGER: Duration = Duration::from_secs(3);
/// Cookies of closed sockets remembered after their state is gone, so that a very late
/// record does not start a new socket.
const RECENTLY_CLOSED: usize = 16384;

/// What a series is keyed by: the configured attributes' values (the rest stay `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct SeriesKey {
    netns: Option<NetnsId>,
    role: Option<SocketRole>,
    ipv4: Option<bool>,
    local_addr: Option<IpAddr>,
    local_port: Option<u16>,
    peer_addr: Option<IpAddr>,
    peer_port: Option<u16>,
    pid: Option<u32>,
    comm: Option<[u8; 16]>,
    cgroup: Option<u64>,
}

/// Which kind of hook a socket's send/receive records come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IoSource {
    /// sk_msg (send) and sk_skb (receive): messages into and data arriving at the socket.
    Messages,
    /// tcp_udp's send/receive calls (tracepoints or fexit).
    Calls,
}

/// What is known of a tracked socket.
#[derive(Clone, Debug)]
struct Sock {
    netns: NetnsId,
    cgroup: u64,
    local_addr: IpAddr,
    local_port: u16,
    peer_addr: IpAddr,
    peer_port: u16,
    pid: u32,
    comm: [u8; 16],
    role: SocketRole,
    rtt_established: bool,
    rtt_closed: bool,
    connect_recorded: bool,
    closed: bool,
    io: Option<IoSource>,
    pending_send_ns: Option<u64>,
    seen: Instant,
}

impl Sock {
    fn new(e: &SocketEvent, now: Instant) -> Self {
        Sock {
            netns: e.netns,
            cgroup: e.cgroup_id,
            local_addr: e.local_addr,
            local_port: e.local_port,
            peer_addr: e.remote_addr,
            peer_port: e.remote_port,
            pid: e.process.pid,
            comm: e.process.comm,
            role: e.role,
            rtt_established: false,
            rtt_closed: false,
            connect_recorded: false,
            closed: false,
            io: None,
            pending_send_ns: None,
            seen: now,
        }
    }

    /// Fills in what earlier records did not know.
    fn learn(&mut self, e: &SocketEvent, now: Instant) {
        self.seen = now;
        // The tracepoint's connect fires before the local port is chosen.
        if self.local_port == 0 && e.local_port != 0 {
            self.local_addr = e.local_addr;
            self.local_port = e.local_port;
            self.peer_addr = e.remote_addr;
            self.peer_port = e.remote_port;
        }
        if self.pid == 0 && e.process.pid != 0 {
            self.pid = e.process.pid;
            self.comm = e.process.comm;
        }
        if self.role == SocketRole::Unknown && e.role != SocketRole::Unknown {
            self.role = e.role;
        }
        if self.cgroup == 0 {
            self.cgroup = e.cgroup_id;
        }
    }
}

/// The running processor.
pub struct Latency {
    interval: Duration,
    temporality: Temporality,
    attrs: Vec<Attr>,
    explicit: bool,
    exponential: Option<(usize, i32)>,
    bounds: Vec<f64>,
    significant_figures: u8,
    rtt_established: bool,
    rtt_periodic: bool,
    rtt_close: bool,
    response_roles: Vec<SocketRole>,
    max_sockets: usize,
    idle_timeout: Duration,
    scope_name: String,
    /// The three metrics' series, in [`LatencyMetric`] order.
    series: [SeriesTable<SeriesKey, Recorder>; 3],
    sockets: FxHashMap<u64, Sock>,
    closing: VecDeque<(Instant, u64)>,
    closed: FxHashSet<u64>,
    closed_order: VecDeque<u64>,
    /// Events of sockets not tracked (table full): total, and what was emitted last (delta).
    untracked: u64,
    untracked_emitted: u64,
    untracked_logged: u64,
    next_emit: Instant,
    /// Which namespaces are gone (filled by the receivers).
    namespaces: NamespaceTable,
    /// Namespaces found gone: their series end after one grace collect.
    grace: Grace<NetnsId>,
}

impl Latency {
    pub fn new(config: LatencyConfig, scope_name: String) -> anyhow::Result<Self> {
        config.ensure_valid()?;
        let role = |r: &Role| match r {
            Role::Client => SocketRole::Client,
            Role::Server => SocketRole::Server,
            Role::Unknown => SocketRole::Unknown,
        };
        let options = TableOptions::new(&scope_name, config.cardinality_limit, config.temporality);
        Ok(Latency {
            series: METRICS.map(|(_, name, _)| SeriesTable::new(&options, name)),
            next_emit: Instant::now() + config.interval.get(),
            interval: config.interval.get(),
            temporality: config.temporality,
            attrs: config
                .attributes
                .iter()
                .filter_map(|a| attr_of(a))
                .collect(),
            explicit: config.histograms.contains(&HistogramKind::Explicit),
            exponential: config
                .histograms
                .contains(&HistogramKind::Exponential)
                .then_some((config.max_size as usize, config.max_scale)),
            bounds: config.boundaries.to_vec(),
            significant_figures: config.significant_figures,
            rtt_established: config.rtt_samples.contains(&RttSample::Established),
            rtt_periodic: config.rtt_samples.contains(&RttSample::Rtt),
            rtt_close: config.rtt_samples.contains(&RttSample::Close),
            response_roles: config.response_roles.iter().map(role).collect(),
            max_sockets: config.max_sockets.get(),
            idle_timeout: config.idle_timeout.get(),
            scope_name,
            sockets: FxHashMap::default(),
            closing: VecDeque::new(),
            closed: FxHashSet::default(),
            closed_order: VecDeque::new(),
            untracked: 0,
            untracked_emitted: 0,
            untracked_logged: 0,
            namespaces: NamespaceTable::default(),
            grace: Grace::default(),
        })
    }

    /// Tells gone namespaces from `namespaces` (filled by the receivers): the series keyed
    /// by them end. Without it no namespace is ever gone.
    pub fn with_namespaces(mut self, namespaces: NamespaceTable) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Series held in the three tables: what churn must not grow.
    pub fn series_len(&self) -> usize {
        self.series.iter().map(SeriesTable::len).sum()
    }

    /// Retires the series of namespaces gone for a whole collect.
    fn retire_gone(&mut self) {
        let mut sources = FxHashSet::default();
        for t in &self.series {
            sources.extend(t.keys().filter_map(|k| k.netns));
        }
        let table = self.namespaces.clone();
        for n in self.grace.due(sources, |n| gone::netns_gone(&table, n)) {
            for t in &mut self.series {
                t.retire_if(|k| k.netns == Some(n));
            }
        }
    }

    fn key(&self, s: &Sock) -> SeriesKey {
        let mut k = SeriesKey::default();
        for a in &self.attrs {
            match a {
                Attr::NetnsInode => k.netns = Some(s.netns),
                Attr::Role => k.role = Some(s.role),
                Attr::NetworkType => k.ipv4 = Some(s.local_addr.is_ipv4()),
                Attr::LocalAddress => k.local_addr = Some(s.local_addr),
                Attr::LocalPort => k.local_port = Some(s.local_port),
                Attr::PeerAddress => k.peer_addr = Some(s.peer_addr),
                Attr::PeerPort => k.peer_port = Some(s.peer_port),
                Attr::ProcessPid => k.pid = Some(s.pid),
                Attr::ProcessName => k.comm = Some(s.comm),
                Attr::CgroupId => k.cgroup = Some(s.cgroup),
            }
        }
        k
    }

    fn record(&mut self, metric: LatencyMetric, key: SeriesKey, ns: u64) {
        let (sf, exp) = (self.significant_figures, self.exponential);
        self.series[metric as usize]
            .value(key, || Recorder::new(sf, exp))
            .record(ns);
    }

    fn on_socket(&mut self, e: &SocketEvent, now: Instant) {
        if e.transport != Transport::Tcp || self.closed.contains(&e.cookie) {
            return;
        }
        if !self.sockets.contains_key(&e.cookie) {
            if self.sockets.len() >= self.max_sockets {
                self.untracked += 1;
                return;
            }
            self.sockets.insert(e.cookie, Sock::new(e, now));
        }
        let Some(s) = self.sockets.get_mut(&e.cookie) else {
            return;
        };
        s.learn(e, now);
        let mut samples: [Option<(LatencyMetric, u64)>; 2] = [None, None];
        match e.kind {
            SocketEventKind::Established => {
                if e.role == SocketRole::Client && e.duration_ns > 0 && !s.connect_recorded {
                    s.connect_recorded = true;
                    samples[0] = Some((LatencyMetric::Connect, e.duration_ns));
                }
                if self.rtt_established && e.srtt_us > 0 && !s.rtt_established {
                    s.rtt_established = true;
                    samples[1] = Some((LatencyMetric::Rtt, u64::from(e.srtt_us) * 1000));
                }
            }
            SocketEventKind::Rtt if self.rtt_periodic && e.srtt_us > 0 => {
                samples[0] = Some((LatencyMetric::Rtt, u64::from(e.srtt_us) * 1000));
            }
            SocketEventKind::Close => {
                if self.rtt_close && e.srtt_us > 0 && !s.rtt_closed {
                    s.rtt_closed = true;
                    samples[0] = Some((LatencyMetric::Rtt, u64::from(e.srtt_us) * 1000));
                }
                if !s.closed {
                    s.closed = true;
                    self.closing.push_back((now, e.cookie));
                }
            }
            SocketEventKind::Send | SocketEventKind::Receive => {
                let source = match e.hook {
                    SocketHook::SkMsg | SocketHook::SkSkb => IoSource::Messages,
                    _ => IoSource::Calls,
                };
                if *s.io.get_or_insert(source) == source {
                    if e.kind == SocketEventKind::Send {
                        s.pending_send_ns.get_or_insert(e.timestamp_ns);
                    } else if let Some(sent) = s.pending_send_ns.take() {
                        if self.response_roles.contains(&s.role) {
                            samples[0] = Some((
                                LatencyMetric::Response,
                                e.timestamp_ns.saturating_sub(sent),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        if samples.iter().any(Option::is_some) {
            let key = self.key(&self.sockets[&e.cookie]);
            for (metric, ns) in samples.into_iter().flatten() {
                self.record(metric, key, ns);
            }
        }
    }

    /// Forgets closed sockets after their linger time, and idle ones.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, cookie)) = self.closing.front() {
            if now.duration_since(at) < CLOSED_LINGER {
                break;
            }
            self.closing.pop_front();
            self.sockets.remove(&cookie);
            if self.closed.insert(cookie) {
                self.closed_order.push_back(cookie);
            }
            while self.closed_order.len() > RECENTLY_CLOSED {
                if let Some(old) = self.closed_order.pop_front() {
                    self.closed.remove(&old);
                }
            }
        }
    }

    fn expire_idle(&mut self, now: Instant) {
        let idle = self.idle_timeout;
        self.sockets
            .retain(|_, s| s.closed || now.duration_since(s.seen) < idle);
    }

    fn attributes(&self, k: &SeriesKey) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(self.attrs.len());
        for attr in &self.attrs {
            match attr {
                Attr::NetnsInode => push_netns(&mut a, k.netns.unwrap_or_default()),
                Attr::Role => a.push(KeyValue::new(
                    names::ATTR_CONNECTION_ROLE,
                    k.role.unwrap_or_default().as_str(),
                )),
                Attr::NetworkType => a.push(KeyValue::new(
                    names::ATTR_NETWORK_TYPE,
                    if k.ipv4.unwrap_or(true) {
                        "ipv4"
                    } else {
                        "ipv6"
                    },
                )),
                Attr::LocalAddress => {
                    if let Some(ip) = k.local_addr {
                        a.push(KeyValue::new(names::ATTR_LOCAL_ADDRESS, ip.to_string()));
                    }
                }
                Attr::LocalPort => a.push(KeyValue::new(
                    names::ATTR_LOCAL_PORT,
                    k.local_port.unwrap_or(0),
                )),
                Attr::PeerAddress => {
                    if let Some(ip) = k.peer_addr {
                        a.push(KeyValue::new(names::ATTR_PEER_ADDRESS, ip.to_string()));
                    }
                }
                Attr::PeerPort => a.push(KeyValue::new(
                    names::ATTR_PEER_PORT,
                    k.peer_port.unwrap_or(0),
                )),
                // Unknown processes (a server's handshake runs in softirq) get no attribute.
                Attr::ProcessPid => {
                    if let Some(pid) = k.pid.filter(|p| *p != 0) {
                        a.push(KeyValue::new(names::ATTR_PROCESS_PID, pid));
                    }
                }
                Attr::ProcessName => {
                    if let Some(comm) = k.comm.filter(|c| c[0] != 0) {
                        let end = comm.iter().position(|&b| b == 0).unwrap_or(16);
                        a.push(KeyValue::new(
                            names::ATTR_PROCESS_NAME,
                            String::from_utf8_lossy(&comm[..end]).into_owned(),
                        ));
                    }
                }
                Attr::CgroupId => a.push(KeyValue::new(
                    names::ATTR_CGROUP_ID,
                    k.cgroup.unwrap_or(0) as i64,
                )),
            }
        }
        a
    }

    fn points(
        &self,
        r: &Recorder,
        attributes: Vec<KeyValue>,
        start: u64,
        now: u64,
    ) -> (Option<HistogramPoint>, Option<ExponentialHistogramPoint>) {
        let (min, max) = r.min_max();
        let explicit = self.explicit.then(|| HistogramPoint {
            attributes: attributes.clone(),
            start_time_ns: start,
            time_ns: now,
            count: r.count(),
            sum: Some(r.sum()),
            min,
            max,
            explicit_bounds: self.bounds.clone(),
            bucket_counts: r.explicit_counts(&self.bounds),
        });
        let exponential = r.exponential().map(|e| ExponentialHistogramPoint {
            attributes,
            start_time_ns: start,
            time_ns: now,
            count: r.count(),
            sum: Some(r.sum()),
            min,
            max,
            scale: e.scale(),
            zero_count: e.zero_count(),
            positive: ExponentialBuckets {
                offset: e.offset(),
                bucket_counts: e.counts().to_vec(),
            },
            negative: ExponentialBuckets::default(),
        });
        (explicit, exponential)
    }

    fn emit(&mut self, out: &mut Emitter) {
        let now = now_ns();
        self.retire_gone();
        // The three tables start their periods together.
        let start = self.series[0].start_ns();
        let delta = self.temporality == Temporality::Delta;
        let mut explicit_metrics = Vec::new();
        let mut exponential_metrics = Vec::new();
        for (metric, name, description) in METRICS {
            let mut hist = Vec::new();
            let mut expo = Vec::new();
            // A stable order makes the output easy to read and to diff.
            for (s, r) in self.series[metric as usize].sorted_by_key(|k| format!("{k:?}")) {
                let attributes = s.attributes(|k| self.attributes(k));
                let (h, e) = self.points(r, attributes, start, now);
                hist.extend(h);
                expo.extend(e);
            }
            let metric = |data| Metric {
                name: Cow::Borrowed(name),
                description: Cow::Borrowed(description),
                unit: Cow::Borrowed("s"),
                data,
            };
            if !hist.is_empty() {
                explicit_metrics.push(metric(MetricData::Histogram {
                    points: hist,
                    temporality: self.temporality,
                }));
            }
            if !expo.is_empty() {
                exponential_metrics.push(metric(MetricData::ExponentialHistogram {
                    points: expo,
                    temporality: self.temporality,
                }));
            }
        }
        for table in &mut self.series {
            table.finish_collect(now);
        }
        if self.untracked > self.untracked_emitted || (!delta && self.untracked > 0) {
            let value = if delta {
                self.untracked - self.untracked_emitted
            } else {
                self.untracked
            };
            self.untracked_emitted = self.untracked;
            explicit_metrics.push(Metric {
                name: Cow::Borrowed(names::LATENCY_EVENTS_UNTRACKED),
                description: Cow::Borrowed(
                    "Socket events not recorded: max_sockets sockets were already tracked.",
                ),
                unit: Cow::Borrowed("{event}"),
                data: MetricData::Sum {
                    points: vec![NumberPoint {
                        attributes: Vec::new(),
                        start_time_ns: start,
                        time_ns: now,
                        value: output::int(value),
                    }],
                    temporality: self.temporality,
                    monotonic: true,
                },
            });
        }
        if self.untracked > self.untracked_logged {
            tracing::warn!(processor = %self.scope_name, max_sockets = self.max_sockets, "latency: {} socket events not recorded: too many sockets tracked", self.untracked - self.untracked_logged);
            self.untracked_logged = self.untracked;
        }
        let both = self.explicit && self.exponential.is_some();
        if both {
            let scope = output::scope(&self.scope_name, "/exponential");
            output::send_metrics(out, scope, exponential_metrics);
        } else {
            explicit_metrics.append(&mut exponential_metrics);
        }
        output::send_metrics(out, output::scope(&self.scope_name, ""), explicit_metrics);
    }
}

impl Processor for Latency {
    fn process(&mut self, payload: Payload, out: &mut Emitter) {
        match payload {
            Payload::Events(batch) => {
                let now = Instant::now();
                for event in &batch.events {
                    if let Event::Socket(s) = event {
                        self.on_socket(s, now);
                    }
                }
                self.expire(now);
                out.events(batch);
            }
            other => out.payload(other),
        }
    }

    fn next_tick(&self) -> Option<Instant> {
        Some(self.next_emit)
    }

    fn tick(&mut self, now: Instant, out: &mut Emitter) {
        self.expire(now);
        self.expire_idle(now);
        self.emit(out);
        self.next_emit = now + self.interval;
    }

    fn flush(&mut self, out: &mut Emitter) {
        self.emit(out);
    }
}

#[cfg(test)]
mod tests;
